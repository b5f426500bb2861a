"""The dashboard's URLs. Deployments are addressed by their public UUID."""

from django.urls import path

from deployments import api, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("apps/<str:name>/", views.app_detail, name="app-detail"),
    path("apps/<str:name>/deploy", views.deploy, name="deploy"),
    path("apps/<str:name>/rollback", views.rollback_app, name="rollback"),
    # Snapshots are known by number (the migrate step's error names it).
    path("snapshots/<int:pk>/restore", views.restore_snapshot, name="restore"),
    path("deployments/<uuid:public_id>/", views.deployment_detail, name="deployment-detail"),
    path("deployments/<uuid:public_id>/cancel", views.cancel, name="deployment-cancel"),
    # Pieces of the deployment page, rendered alone for the live script.
    path("deployments/<uuid:public_id>/_header", views.deployment_partial, {"partial": "header"}, name="deployment-header"),
    path("deployments/<uuid:public_id>/_steps", views.deployment_partial, {"partial": "steps"}, name="deployment-steps"),
    path("deployments/<uuid:public_id>/_outcome", views.deployment_partial, {"partial": "outcome"}, name="deployment-outcome"),
    path("deployments/<uuid:public_id>/_status", views.deployment_partial, {"partial": "status"}, name="deployment-status"),
    # A step's output: the raw download, and with ?before=N earlier lines for the log viewer.
    path("deployments/<uuid:public_id>/steps/<str:step>/output", views.step_output, name="deployment-step-output"),
    path("simulator/", views.simulator, name="simulator"),
    # The command line's fast path (deployments/remote.py), by API token.
    path("api/deployments", api.deployments, name="api-deployments"),
    path("api/deployments/<str:text>", api.deployment, name="api-deployment"),
]

# Push webhooks (deployments/hooks.py): signed by the git host, no login.
from deployments import hooks  # noqa: E402

urlpatterns += [
    path(f"hooks/{provider}", hooks.receive, {"provider": provider}, name=f"webhook-{provider}")
    for provider in ("github", "gitlab", "gitea")
]

# Prometheus' scrape (deployments/metrics.py): a bearer token, no login.
from deployments import metrics  # noqa: E402

urlpatterns += [path("metrics", metrics.metrics, name="metrics")]
