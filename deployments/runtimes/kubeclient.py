"""Talking to the Kubernetes API: where the configuration comes from, a private client
with bounded retries, and ApiExceptions turned into errors that say what to do.

Used by the Kubernetes runtime (deployments/runtimes/kubernetes.py), its rollout gate
(kuberollout.py) and the image loading of the build step (kubeimages.py: which kind of local cluster is this?).
"""

import json
import os

import urllib3
import yaml
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

DEFAULT_KUBECONFIG = "~/.kube/config"

# Transport-level retries, done by urllib3 for every request: refused or reset
# connections, read timeouts, and the statuses an apiserver (or the load
# balancer in front of it) uses for "try again": overload, restarts, rollouts
# of the control plane. Every method is retried: the only non-idempotent
# request here is a create, and a repeated create answers 409 AlreadyExists,
# which the runtime's read-modify-write loop handles like any other conflict.
API_RETRIES = 4
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Sleeps of 0, 0.4, 0.8, 1.6 s between the 5 attempts (urllib3 doubles it).
RETRY_BACKOFF = 0.2
RETRY_BACKOFF_MAX = 10.0
# (connect, read) seconds for one ordinary request; the whole deploy is bounded by ctx.timeout.
REQUEST_TIMEOUT = (10, 30)


class KubernetesError(Exception):
    """A Kubernetes API call failed; the message is meant for users (and holds no credentials)."""


# --- configuration -----------------------------------------------------------------


def kubeconfig_path() -> str:
    """NORN_KUBECONFIG, else $KUBECONFIG as it is now, else ~/.kube/config."""
    explicit = getattr(settings, "NORN_KUBECONFIG", None)
    return os.fspath(explicit or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG)


def current_context_name() -> str | None:
    """The kubeconfig context Norn deploys to, or None without a kubeconfig."""
    explicit = getattr(settings, "NORN_KUBE_CONTEXT", None)
    if explicit:
        return explicit
    try:
        _, current = config.list_kube_config_contexts(config_file=kubeconfig_path())
    except (config.ConfigException, OSError, ValueError, yaml.YAMLError):
        return None
    return (current or {}).get("name")


def load_configuration() -> tuple[client.Configuration, str]:
    """A private client Configuration and a description of where it came from.

    Kubeconfig first: NORN_KUBECONFIG, else $KUBECONFIG (read now, not at import
    time as the client's own default is), else ~/.kube/config; then the pod's
    service account. The result is never installed as the client's global
    default, so concurrent deploys and tests cannot leak settings into each other.
    """
    explicit = getattr(settings, "NORN_KUBECONFIG", None)
    path = kubeconfig_path()
    context = getattr(settings, "NORN_KUBE_CONTEXT", None) or None
    configuration = client.Configuration()
    tried = []
    try:
        # persist_config=False: token refreshes must not rewrite the operator's kubeconfig.
        config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
        source = f"kubeconfig {path}" + (f", context {context}" if context else "")
    except (config.ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        tried.append(f"kubeconfig {path}" + (f" (context {context})" if context else "") + f": {exc}")
        if explicit:
            # An operator who named a kubeconfig wants that one; quietly
            # using the pod's own account instead could deploy elsewhere.
            raise KubernetesError(f"cannot use NORN_KUBECONFIG: {tried[0]}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)
            source = "the pod's service account (in-cluster configuration)"
        except (config.ConfigException, OSError) as exc:
            tried.append(f"in-cluster service account: {exc}")
            raise KubernetesError(
                "no Kubernetes configuration found. Tried " + "; ".join(tried)
                + ". Set NORN_KUBECONFIG (or KUBECONFIG) to a kubeconfig file, "
                "or run Norn in a pod with a service account."
            ) from None
    configuration.retries = urllib3.Retry(
        total=API_RETRIES,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        backoff_factor=RETRY_BACKOFF,
        backoff_max=RETRY_BACKOFF_MAX,
        # Hand back the last error response instead of raising MaxRetryError,
        # so the apiserver's own Status message reaches the user.
        raise_on_status=False,
        # A redirect would carry the bearer token to wherever it points.
        redirect=False,
    )
    return configuration, source


def api_client() -> tuple[client.ApiClient, str, str]:
    """A new ApiClient, the API server's address, and where the configuration came from."""
    configuration, source = load_configuration()
    return client.ApiClient(configuration), configuration.host, source


# --- errors ------------------------------------------------------------------------


def status_of(exc: ApiException) -> tuple[str, str, dict]:
    """(message, reason, details) from the apiserver's Status body, as far as there is one."""
    try:
        body = json.loads(exc.body) if exc.body else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return body.get("message") or "", body.get("reason") or "", body.get("details") or {}
    # Watch ERROR events and transport failures arrive without a Status body;
    # their `reason` then holds "Reason: message" or the client's own text.
    return str(exc.reason or "").strip(), "", {}


def api_error(exc: ApiException, action: str, namespace: str | None = None) -> KubernetesError:
    """Turn an ApiException into a KubernetesError saying what to do about it.

    Only the Status message, reason and code are used: ApiException's own
    text carries response headers, which have no place in a step's error.
    """
    message, reason, details = status_of(exc)
    code = exc.status
    summary = f"{message} ({code} {reason})" if reason else f"{message} ({code})"
    if code == 401:
        return KubernetesError(
            f"the Kubernetes API rejected Norn's credentials while trying to {action}: {summary}. "
            "Check the token or client certificate of the kubeconfig user (NORN_KUBECONFIG, "
            "NORN_KUBE_CONTEXT); it may have expired or been rotated."
        )
    if code == 403:
        return KubernetesError(
            f"Norn's Kubernetes user is not allowed to {action}: {summary}. "
            "Grant it the missing permission (an RBAC Role/RoleBinding in that namespace)."
        )
    if code == 404 and details.get("kind") == "namespaces":
        return KubernetesError(
            f'namespace "{namespace or details.get("name")}" does not exist, so Norn cannot {action}. '
            f'Create it (kubectl create namespace {namespace or details.get("name")}) '
            "or change `namespace` in infraspec.yaml."
        )
    if code == 0:
        # The client reports TLS failures with status 0 and the SSL error as reason.
        return KubernetesError(f"cannot talk to the Kubernetes API to {action}: {' '.join(message.split())}")
    if code and code >= 500:
        return KubernetesError(
            f"the Kubernetes API failed to {action}: {summary}, "
            f"still after {API_RETRIES} retries over a few seconds"
        )
    return KubernetesError(f"could not {action}: {summary}")


def connection_error(exc: Exception, host: str, action: str) -> KubernetesError:
    reason = getattr(exc, "reason", None) or exc
    return KubernetesError(
        f"cannot reach the Kubernetes API at {host} to {action}: {reason} "
        f"(still after {API_RETRIES} retries)"
    )


def is_not_found(exc: ApiException) -> bool:
    """A 404 for the object itself (not for its namespace or the whole resource type)."""
    _, _, details = status_of(exc)
    return exc.status == 404 and details.get("kind") not in ("namespaces", None)
