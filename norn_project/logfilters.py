"""Logging filters (settings.LOGGING): a refused request is one line, not a traceback.

Django logs a 403 from PermissionDenied, a 404 from Http404 and a 400 from a
SuspiciousOperation with the exception attached; those are expected answers
to bad requests, and their tracebacks only buried the real errors.
"""

import logging


class OneLineRefusals(logging.Filter):
    """Drops the traceback of records about responses below 500."""

    def filter(self, record):
        status = getattr(record, "status_code", None)
        refused = (status is not None and status < 500) or record.name.startswith("django.security")
        if refused and record.exc_info:
            record.exc_info = None
            record.exc_text = None
        return True
