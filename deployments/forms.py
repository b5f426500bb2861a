"""The dashboard's forms: which ref to deploy."""

from django import forms

from apps_registry.infraspec import HEX_RE
from deployments.requests import DeployRequestError, validate_ref


class DeployForm(forms.Form):
    """A ref to deploy: HEAD, a branch or a commit SHA. The deploy page posts
    a kind and a ref; retry and rollback buttons post only a ref."""

    KINDS = [("head", "HEAD"), ("branch", "A branch"), ("sha", "A commit SHA")]

    kind = forms.ChoiceField(choices=KINDS, required=False, widget=forms.RadioSelect, initial="head")
    ref = forms.CharField(
        label="Branch or commit SHA", required=False, max_length=255,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"}),
    )

    @staticmethod
    def kind_of(ref: str | None) -> str:
        if not ref or ref == "HEAD":
            return "head"
        return "sha" if HEX_RE.match(ref) else "branch"

    def clean(self) -> dict:
        data = super().clean()
        ref = (data.get("ref") or "").strip()
        # Retry and rollback forms post only a ref; the kind follows from it.
        kind = data.get("kind") or self.kind_of(ref)
        if kind == "head":
            ref = "HEAD"
        elif not ref:
            self.add_error("ref", "Enter a branch name." if kind == "branch" else "Enter a commit SHA.")
            return data
        elif kind == "sha":
            ref = ref.lower()
            if not HEX_RE.match(ref):
                self.add_error("ref", f"{ref!r} is not a commit SHA: use 4 to 40 hexadecimal digits.")
                return data
        try:
            data["ref"] = validate_ref(ref)
        except DeployRequestError as exc:
            self.add_error("ref", str(exc))
        data["kind"] = kind
        return data


class RollbackForm(forms.Form):
    """Which earlier deployment to put back, by public id; none: the one
    before what is live (requests.request_rollback chooses)."""

    to = forms.UUIDField(required=False)
