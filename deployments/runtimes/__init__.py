"""Where the deploy step puts an app: one module per runtime (kubernetes, docker).

Each has `deploy(ctx)`, called by deployments/steps/deploy.py with the step's
Context once the image is built (and pushed, when a registry is configured),
and `status(app_name, ...)` and `remove(app_name, ...)` for `manage.py
app_status` and `manage.py undeploy`, which raise the module's `Error`.
"""

import importlib
from types import ModuleType

RUNTIMES = ("docker", "kubernetes")


def named(runtime: str) -> ModuleType:
    """The runtime module for a runtime name (Deployment.runtime, NORN_RUNTIME).

    Imported on demand: the Kubernetes client is heavy, and a single-host
    Norn never needs it. Cron apps run on the local Docker engine.
    """
    return importlib.import_module(f"deployments.runtimes.{'kubernetes' if runtime == 'kubernetes' else 'docker'}")
