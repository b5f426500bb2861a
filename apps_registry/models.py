"""The registry of deployable apps, as discovered from infraspec.yaml files."""

from django.db import models
from django.utils.functional import cached_property

from apps_registry.spec import Spec


class App(models.Model):
    class Status(models.TextChoices):
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid infraspec"
        # The directory or its infraspec.yaml is gone. The row stays, with its
        # deployment history, until an operator deletes it.
        MISSING = "missing", "Missing"

    # The directory name under NORN_APPS_DIR; a valid spec's `app` equals it.
    name = models.CharField(max_length=255, unique=True)
    directory = models.CharField(max_length=4096)
    status = models.CharField(max_length=16, choices=Status.choices)
    role = models.CharField(max_length=16, blank=True)
    repo_url = models.CharField("repository", max_length=2048, blank=True)
    branch = models.CharField(max_length=255, blank=True)
    # The last valid, normalized spec (defaults filled in). An edit that breaks
    # the file keeps it, so the app page still says what was deployed.
    spec = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # sha256 of the file as last read: a changed file is re-validated.
    spec_digest = models.CharField(max_length=64, blank=True)
    discovered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    missing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def is_valid(self):
        return self.status == self.Status.VALID

    @cached_property
    def infraspec(self) -> Spec:
        """The stored spec in its typed form, defaults applied."""
        return Spec.from_dict(self.spec)
