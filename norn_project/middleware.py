"""Turns away malformed input that would otherwise reach a query and make a 500.

- NUL characters anywhere in the path, a query parameter, a cookie or a form field:
  PostgreSQL text cannot hold one, so the database driver raised. Nothing
  legitimate sends one.
- Object ids of an admin action (`_selected_action`) that are no ids of that
  model: Django's admin filters by them unchecked, and `abc` for an integer
  key raised ValueError.
"""

from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.utils.deprecation import MiddlewareMixin

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _has_nul(values):
    return any("\x00" in key or any("\x00" in v for v in vs if isinstance(v, str)) for key, vs in values.lists())


def _bad_request(message):
    return HttpResponseBadRequest(f"Bad request: {message}", content_type="text/plain; charset=utf-8")


class BadInputMiddleware(MiddlewareMixin):
    def process_request(self, request):
        if "\x00" in request.path_info:
            return _bad_request("the path contains a NUL character.")
        if _has_nul(request.GET):
            return _bad_request("a query parameter contains a NUL character.")
        if any("\x00" in value for value in request.COOKIES.values()):
            # A session cookie is looked up in the database.
            return _bad_request("a cookie contains a NUL character.")
        if request.method == "POST" and request.content_type in FORM_TYPES and _has_nul(request.POST):
            return _bad_request("a form field contains a NUL character.")
        return None

    def process_view(self, request, view_func, view_args, view_kwargs):
        # Django's admin marks its views with the ModelAdmin they serve.
        model_admin = getattr(view_func, "model_admin", None)
        if model_admin is None or request.method != "POST" or request.content_type not in FORM_TYPES:
            return None
        pk = model_admin.model._meta.pk
        for value in request.POST.getlist("_selected_action"):
            try:
                pk.to_python(value)
            except ValidationError:
                return _bad_request(f"{value[:40]!r} is not an id of a {model_admin.model._meta.verbose_name}.")
        return None
