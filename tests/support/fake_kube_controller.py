"""The Deployment controller and a simulated kubelet of FakeKubernetes (on unless pods=False): each pod
template revision gets a ReplicaSet <deployment>-<pod-template-hash> (owner reference,
``deployment.kubernetes.io/revision``, revisionHistoryLimit) and Pods whose status says what a
kubelet would, so `kubectl rollout history/undo`, `kubectl get pods` and Norn's rollout gate see
the failures a real cluster shows.  No container runs: the pods are simulated.

How a pod fares is read from what its writer put in it (the conventions tests rely on):
- image: pulled when ``load_image(name)`` loaded it (or a stand-in ``minikube``/``kind`` listed it
  in one of ``load_logs``, tests/support/kube_target.stand_in_loader), or when it lives in the registry at
  ``registry_url`` (NORN_REGISTRY_URL) and a HEAD of its manifest answers 200; otherwise
  ErrImagePull then ImagePullBackOff, with the kubelet's Failed/BackOff events, retried.
- crash: env ``FAKE_KUBE_EXIT_AFTER=<seconds>``, in the container's env or in the image's config
  (a Dockerfile ``ENV``, read from the registry), makes the container exit 1 that long after it
  starts; it is restarted after a back-off (CrashLoopBackOff, restartCount, BackOff events).
- readiness: a readinessProbe whose httpGet path contains "fail" (or an exec command containing
  "false") always fails: Unhealthy events every periodSeconds, the pod stays NotReady.
- PodSecurity: a namespace labelled ``pod-security.kubernetes.io/enforce=restricted`` refuses
  pods the restricted profile forbids; the ReplicaSet (and Deployment) get ReplicaFailure
  (FailedCreate) and a FailedCreate event.
- ResourceQuota: a pod that would take the namespace past a quota's ``spec.hard`` for pods,
  requests.cpu/memory or limits.cpu/memory (cpu/memory meaning requests) is refused the same way,
  with the admission plugin's "exceeded quota" message; ``status.used`` follows the live pods.
  Not modelled: scopes, object counts other than pods, and the "must specify" refusal of a pod
  without the requests or limits a quota tracks (such a pod counts 0 for them).
- time: probe periods, initialDelaySeconds, minReadySeconds and the 10 s crash back-off are
  multiplied by ``time_scale``; progressDeadlineSeconds by FakeKubernetes.progress_deadline_scale.
``set_rollout_mode(name, "manual")`` still stops the controller for one Deployment; the "stuck"
mode and ``failing_images`` belong to the pod-count simulation of pods=False and do nothing here.
Simplified: the new ReplicaSet is scaled to the full count at once (maxSurge ignored) and the old
ones to 0 once it is available; deletion always cascades (the garbage collector removes RSs and
pods whose owner is gone); one restart back-off per container, no pod termination grace.
"""
from __future__ import annotations

import copy
import datetime
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from tests.support import fake_kube_schema as schema
from tests.support import fake_kubernetes as fk

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
EXIT_AFTER_ENV = "FAKE_KUBE_EXIT_AFTER"
CRASH_BACKOFF = 10.0  # the kubelet's first restart back-off, in seconds (before time_scale)
_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"))

# apps/v1 ReplicaSet, for the fake's schema table (pruning and strict field validation).
schema.SCHEMA.setdefault("ReplicaSetSpec", {"replicas": "i", "minReadySeconds": "i", "selector": "LabelSelector",
                                            "template": "PodTemplateSpec"})
schema.SCHEMA.setdefault("ReplicaSetStatus", {"replicas": "i", "fullyLabeledReplicas": "i", "readyReplicas": "i",
                                              "availableReplicas": "i", "terminatingReplicas": "i",
                                              "observedGeneration": "i", "conditions": "[DeploymentCondition]"})
schema.KINDS.setdefault("replicasets", {"apiVersion": "s", "kind": "s", "metadata": "ObjectMeta",
                                        "spec": "ReplicaSetSpec", "status": "ReplicaSetStatus"})


def prepare_replicaset(obj, old):
    """Defaults and the validation a ReplicaSet write gets (the fake's _prepare hook)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    fk._default_pod_spec(template.setdefault("spec", {}))
    obj.setdefault("status", {"replicas": 0})
    errors = []
    if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
        errors.append(("spec.replicas", "FieldValueInvalid", "Invalid value: must be greater than or equal to 0"))
    if not fk._selector_matches(spec.get("selector") or {}, template["metadata"].get("labels")):
        errors.append(("spec.template.metadata.labels", "FieldValueInvalid",
                       "Invalid value: `selector` does not match template `labels`"))
    return errors


# v1 ResourceQuota, with the compute resources the controller enforces (object counts other than
# pods, scopes and scopeSelector are not modelled: the schema keeps them, the controller ignores them).
QUOTA_RESOURCES = ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")
schema.SCHEMA.setdefault("ResourceQuotaSpec", {"hard": "{q}", "scopes": "[s]", "scopeSelector": "*"})
schema.SCHEMA.setdefault("ResourceQuotaStatus", {"hard": "{q}", "used": "{q}"})
schema.KINDS.setdefault("resourcequotas", {"apiVersion": "s", "kind": "s", "metadata": "ObjectMeta",
                                           "spec": "ResourceQuotaSpec", "status": "ResourceQuotaStatus"})


def prepare_quota(obj, old):
    """Validation of a ResourceQuota write (ValidateResourceQuota's hard-quantity checks; a value no
    resource.Quantity parses was already refused by the decoder, fake_kube_schema)."""
    errors = []
    hard = (obj.setdefault("spec", {}).get("hard") or {})
    for name, value in hard.items():
        field = f"spec.hard[{name}]"
        amount = schema.quantity_value(value)
        if amount < 0:
            errors.append((field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: must be greater "
                           "than or equal to 0"))
        elif name in ("pods",) and amount != int(amount):
            errors.append((field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: must be an integer"))
    # The quota controller fills status in; until it has, hard is copied and nothing is used.
    obj["status"] = {"hard": dict(hard), "used": (old or {}).get("status", {}).get("used") or
                     {name: "0" for name in hard}}
    return errors


def _pod_usage(pod_spec):
    """What one pod counts against a quota, by resource name (as numbers)."""
    usage = {"pods": 1.0}
    for c in pod_spec.get("containers") or []:
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                value = (resources.get(part) or {}).get(res)
                if value is None and part == "requests":  # requests default to the limits
                    value = (resources.get("limits") or {}).get(res)
                amount = schema.quantity_value(value) if value is not None else 0.0
                usage[f"{part}.{res}"] = usage.get(f"{part}.{res}", 0.0) + (amount or 0.0)
    usage["cpu"], usage["memory"] = usage.get("requests.cpu", 0.0), usage.get("requests.memory", 0.0)
    return usage


def quantity_text(resource, amount):
    """``amount`` as resource.Quantity prints it: cores as "2" or "500m", bytes as "256Mi"/"1Gi" (or plain)."""
    if resource.endswith("cpu"):
        millis = round(amount * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    if resource.endswith("memory"):
        whole = round(amount)
        for suffix, size in (("Ei", 2 ** 60), ("Pi", 2 ** 50), ("Ti", 2 ** 40), ("Gi", 2 ** 30), ("Mi", 2 ** 20),
                             ("Ki", 2 ** 10)):
            if whole and whole % size == 0:
                return f"{whole // size}{suffix}"
        return str(whole)
    return str(round(amount))


def restricted_violations(pod_spec):
    """What the "restricted" Pod Security Standard says about a pod spec, in its wording."""
    pod_ctx = pod_spec.get("securityContext") or {}
    problems = {}
    for c in pod_spec.get("containers") or []:
        ctx, name = c.get("securityContext") or {}, c.get("name")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.setdefault("allowPrivilegeEscalation != false", []).append(name)
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            problems.setdefault("unrestricted capabilities", []).append(name)
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            problems.setdefault("runAsNonRoot != true", []).append(name)
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.setdefault("seccompProfile", []).append(name)
    fixes = {"allowPrivilegeEscalation != false": "must set securityContext.allowPrivilegeEscalation=false",
             "unrestricted capabilities": 'must set securityContext.capabilities.drop=["ALL"]',
             "runAsNonRoot != true": "must set securityContext.runAsNonRoot=true",
             "seccompProfile": 'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'}
    out = []
    for check, names in problems.items():
        who = ("pod or " if check in ("runAsNonRoot != true", "seccompProfile") else "") + (
            f'container "{names[0]}"' if len(names) == 1 else "containers " + ", ".join(f'"{n}"' for n in names))
        out.append(f"{check} ({who} {fixes[check]})")
    return out


def probe_fails(probe):
    if not probe:
        return False
    if "fail" in str((probe.get("httpGet") or {}).get("path", "")):
        return True
    return "false" in " ".join((probe.get("exec") or {}).get("command") or [])


@dataclass
class _Box:
    """The kubelet's memory of one container."""
    pulled: bool = False
    pull_failed_at: float | None = None
    running_since: float | None = None
    started_at: str = ""
    restarts: int = 0
    last_state: dict = field(default_factory=dict)
    waiting: dict | None = None
    restart_at: float = 0.0
    ready: bool = False
    next_probe: float | None = None
    probe_failures: int = 0


@dataclass
class _PodSim:
    created: float
    boxes: dict = field(default_factory=dict)
    ready_since: float | None = None
    ready_stamp: str = ""


class DeploymentController:
    """Runs inside FakeKubernetes' controller loop, under its lock (see the module docstring)."""

    def __init__(self, kube, registry_url=None, time_scale=1.0, pull_backoff=1.0):
        self.kube = kube
        self.registry_url = registry_url
        self.time_scale = time_scale
        self.pull_backoff = pull_backoff
        self.loaded = set()
        # Files a stand-in `minikube`/`kind` appends the images it was asked to load to, one a line
        # (kube_target.stand_in_loader): an image reaches the pods only if Norn ran the load for it.
        self.load_logs = []
        self._pods = {}  # (namespace, pod name, uid) -> _PodSim
        self._progress = {}  # deployment uid -> (signature, monotonic time of the last change)
        self._pull_cache = {}  # image -> (pullable, error, checked at)
        self._image_env = {}  # image -> the Env of its config in the registry

    def load_image(self, name):
        """Make an image pullable without a registry, as `kind load` / `minikube image load` do."""
        with self.kube._lock:
            self.loaded.add(name)
            self._pull_cache.pop(name, None)

    # ---------------------------------------------------------------- helpers
    def _objects(self, plural, namespace):
        return [o for (p, ns, _), o in list(self.kube._objects.items()) if p == plural and ns == namespace]

    @staticmethod
    def _owned(objs, uid):
        return [o for o in objs if any(r.get("uid") == uid and r.get("controller")
                                       for r in o["metadata"].get("ownerReferences") or [])]

    def _event(self, obj, event_type, reason, message, component="kubelet", field_path=None):
        """Record an Event, or bump the count of the same one, like the client-go event recorder."""
        meta = obj["metadata"]
        for ev in self._objects("events", meta["namespace"]):
            inv = ev.get("involvedObject") or {}
            if inv.get("uid") == meta["uid"] and ev.get("reason") == reason and ev.get("message") == message:
                updated = copy.deepcopy(ev)
                updated["count"] = ev.get("count", 1) + 1
                updated["lastTimestamp"] = fk._now()
                self.kube._commit(fk._KINDS["events"], updated, "MODIFIED", copy.deepcopy(ev))
                return
        self.kube.jobs.record_event(obj, event_type, reason, message, component=component, field_path=field_path)

    def _write_status(self, plural, obj, status):
        if obj.get("status") != status:
            updated = copy.deepcopy(obj)
            updated["status"] = status
            self.kube._commit(fk._KINDS[plural], updated, "MODIFIED", copy.deepcopy(obj))

    def _pull(self, image):
        """(pullable, error text). Registry answers are cached for a second: the fake's lock is held."""
        if image in self.loaded or self._logged(image):
            return True, ""
        cached = self._pull_cache.get(image)
        if cached and (cached[0] or time.monotonic() - cached[2] < 1.0):
            return cached[:2]
        result = self._check_registry(image)
        self._pull_cache[image] = (*result, time.monotonic())
        return result

    def _logged(self, image):
        for path in self.load_logs:
            try:
                with open(path) as fh:
                    if image in fh.read().split():
                        return True
            except FileNotFoundError:
                continue
        return False

    def _check_registry(self, image):
        not_found = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                     f'failed to resolve reference "{image}": {image}: not found')
        host, _, rest = image.partition("/")
        registry = re.sub(r"^\w+://", "", self.registry_url or "").rstrip("/")
        if not registry or host != registry.split("/")[0] or not rest:
            return False, not_found
        if "@" in rest:
            repo, _, ref = rest.partition("@")
        else:
            repo, _, ref = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
        request = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}", method="HEAD",
                                         headers={"Accept": _MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=2):
                pass
            self._image_env[image] = self._registry_env(host, repo, ref)
            return True, ""
        except urllib.error.HTTPError as exc:
            return False, not_found if exc.code == 404 else f"unexpected status from HEAD request: {exc.code}"
        except OSError as exc:
            return False, f'failed to do request: Head "http://{host}/v2/{repo}/manifests/{ref}": {exc}'

    @staticmethod
    def _registry_env(host, repo, ref):
        """The image config's Env ({name: value}), following an index to its linux/amd64 manifest."""
        def get(path, accept=_MANIFEST_TYPES):
            request = urllib.request.Request(f"http://{host}/v2/{repo}/{path}", headers={"Accept": accept})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        manifest = get(f"manifests/{ref}")
        if "manifests" in manifest:  # an index: pick the platform this fake node runs
            chosen = next((m for m in manifest["manifests"] if (m.get("platform") or {}).get("os") == "linux"
                           and (m.get("platform") or {}).get("architecture") == "amd64"), manifest["manifests"][0])
            manifest = get(f'manifests/{chosen["digest"]}')
        config = get(f'blobs/{manifest["config"]["digest"]}', accept="*/*")
        return dict(item.partition("=")[::2] for item in (config.get("config") or {}).get("Env") or [])

    # ---------------------------------------------------------------- resource quotas
    def _quota_used(self, namespace):
        used = {}
        for pod in self._objects("pods", namespace):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue  # terminated pods no longer count, as in the real quota evaluator
            for res, amount in _pod_usage(pod["spec"]).items():
                used[res] = used.get(res, 0.0) + amount
        return used

    def quota_refusal(self, namespace, pod_name, pod_spec):
        """The admission error creating this pod gets from the namespace's quotas, or None."""
        used = self._quota_used(namespace)
        requested = _pod_usage(pod_spec)
        for quota in sorted(self._objects("resourcequotas", namespace), key=lambda q: q["metadata"]["name"]):
            hard = {k: schema.quantity_value(v) for k, v in (quota["spec"].get("hard") or {}).items()
                    if k in QUOTA_RESOURCES}
            over = sorted(r for r, limit in hard.items()
                          if requested.get(r, 0.0) and used.get(r, 0.0) + requested[r] > limit)
            if over:
                def listing(values):
                    return ",".join(f"{r}={quantity_text(r, values.get(r, 0.0))}" for r in over)
                return (f'pods "{pod_name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                        f"requested: {listing(requested)}, used: {listing(used)}, "
                        f"limited: {listing(hard)}")
        return None

    def count_quotas(self):
        """The quota controller: status.hard follows spec.hard, status.used what the pods take."""
        for quota in [o for (p, _, _), o in self.kube._objects.items() if p == "resourcequotas"]:
            hard = dict(quota["spec"].get("hard") or {})
            used = self._quota_used(quota["metadata"]["namespace"])
            status = {"hard": hard, "used": {r: quantity_text(r, used.get(r, 0.0)) if r in QUOTA_RESOURCES
                                             else (quota.get("status") or {}).get("used", {}).get(r, "0")
                                             for r in hard}}
            if quota.get("status") != status:
                self._write_status("resourcequotas", quota, status)

    # ---------------------------------------------------------------- the garbage collector
    def collect(self):
        live = {o["metadata"]["uid"] for (p, _, _), o in self.kube._objects.items() if p in ("deployments",
                                                                                            "replicasets")}
        for (plural, ns, name), obj in list(self.kube._objects.items()):
            refs = [r for r in obj["metadata"].get("ownerReferences") or []
                    if r.get("kind") in ("Deployment", "ReplicaSet")]
            if plural in ("replicasets", "pods") and refs and not any(r["uid"] in live for r in refs):
                self.kube._delete(fk._KINDS[plural], ns, name, None, False)
        for key in [k for k in self._pods if ("pods", k[0], k[1]) not in self.kube._objects]:
            del self._pods[key]

    # ---------------------------------------------------------------- the deployment controller
    def sync(self, key):
        dep = self.kube._objects.get(key)
        if dep is None:
            return
        _, ns, name = key
        meta, spec, now = dep["metadata"], dep["spec"], time.monotonic()
        template = copy.deepcopy(spec["template"])
        template_hash = fk._template_hash(template)
        rss = self._owned(self._objects("replicasets", ns), meta["uid"])
        revisions = [int((r["metadata"].get("annotations") or {}).get(REVISION, "0")) for r in rss]
        top = max(revisions, default=0)
        new = next((r for r in rss if (r["metadata"].get("labels") or {}).get(HASH_LABEL) == template_hash), None)
        if spec.get("paused"):
            self._finish(dep, new, rss, now, paused=True)
            return
        desired = spec.get("replicas", 1)
        if new is None:
            new = self._create_rs(dep, template, template_hash, top + 1)
            self._event(dep, "Normal", "ScalingReplicaSet",
                        f'Scaled up replica set {new["metadata"]["name"]} from 0 to {desired}',
                        component="deployment-controller")
            rss.append(new)
        elif int(new["metadata"]["annotations"].get(REVISION, "0")) < top:  # an older template is back (undo)
            new = self._update_rs(new, revision=top + 1)
        olds = [r for r in rss if r is not new and r["metadata"]["uid"] != new["metadata"]["uid"]]
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        old_pods = sum(r.get("status", {}).get("replicas", 0) for r in olds)
        new = self._update_rs(new, replicas=0 if recreate and old_pods else desired,
                              min_ready=spec.get("minReadySeconds", 0))
        new_available = new.get("status", {}).get("availableReplicas", 0)
        for old in olds:
            if recreate or new_available >= desired:
                self._update_rs(old, replicas=0)
        self._history_limit(olds, spec.get("revisionHistoryLimit", 10))
        for rs in self._owned(self._objects("replicasets", ns), meta["uid"]):
            self._sync_rs(rs, now)
        rss = self._owned(self._objects("replicasets", ns), meta["uid"])
        new = next((r for r in rss if r["metadata"]["uid"] == new["metadata"]["uid"]), new)
        self._finish(dep, new, rss, now)

    def _create_rs(self, dep, template, template_hash, revision):
        meta, spec = dep["metadata"], dep["spec"]
        template["metadata"].setdefault("labels", {})[HASH_LABEL] = template_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = template_hash
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": f'{meta["name"]}-{template_hash}', "namespace": meta["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {"deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                            "deployment.kubernetes.io/max-replicas": str(spec.get("replicas", 1)),
                            REVISION: str(revision)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0), "selector": selector,
                     "template": template}}
        return self.kube._create(fk._KINDS["replicasets"], meta["namespace"], rs, False)

    def _update_rs(self, rs, replicas=None, revision=None, min_ready=None):
        updated = copy.deepcopy(rs)
        if replicas is not None:
            updated["spec"]["replicas"] = replicas
            updated["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(replicas) \
                if replicas else updated["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"]
        if revision is not None:
            updated["metadata"]["annotations"][REVISION] = str(revision)
        if min_ready is not None:
            updated["spec"]["minReadySeconds"] = min_ready
        if updated == rs:
            return rs
        if updated["spec"] != rs["spec"]:
            updated["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
        return self.kube._commit(fk._KINDS["replicasets"], updated, "MODIFIED", copy.deepcopy(rs))

    def _history_limit(self, olds, limit):
        idle = [r for r in olds if not r["spec"].get("replicas") and not r.get("status", {}).get("replicas")]
        idle.sort(key=lambda r: int(r["metadata"]["annotations"].get(REVISION, "0")))
        for rs in idle[:max(0, len(idle) - limit)]:
            self.kube._delete(fk._KINDS["replicasets"], rs["metadata"]["namespace"], rs["metadata"]["name"],
                              None, False)

    # ---------------------------------------------------------------- the replicaset controller
    def _sync_rs(self, rs, now):
        ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        pods = self._owned(self._objects("pods", ns), uid)
        wanted = rs["spec"].get("replicas", 0)
        failure = None
        namespace = self.kube._objects.get(("namespaces", "", ns)) or {}
        enforce = (namespace.get("metadata", {}).get("labels") or {}).get(ENFORCE_LABEL)
        while len(pods) < wanted:
            pod_name = f'{rs["metadata"]["name"]}-' + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789")
                                                            for _ in range(5))
            violations = restricted_violations(rs["spec"]["template"]["spec"]) if enforce == "restricted" else []
            if violations:
                failure = (f'pods "{pod_name}" is forbidden: violates PodSecurity "restricted:latest": '
                           + ", ".join(violations))
            else:
                failure = self.quota_refusal(ns, pod_name, rs["spec"]["template"]["spec"])
            if failure:
                self._event(rs, "Warning", "FailedCreate", f"Error creating: {failure}",
                            component="replicaset-controller")
                break
            pods.append(self._create_pod(rs, pod_name))
            self._event(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod_name}",
                        component="replicaset-controller")
        # Scale down the least useful pods first: not ready before ready, newest first.
        pods.sort(key=lambda p: (self._sim(p).ready_since is not None, -self._sim(p).created))
        while len(pods) > wanted:
            victim = pods.pop(0)
            self.kube._delete(fk._KINDS["pods"], ns, victim["metadata"]["name"], None, False)
            self._event(rs, "Normal", "SuccessfulDelete", f'Deleted pod: {victim["metadata"]["name"]}',
                        component="replicaset-controller")
        ready = available = 0
        min_ready = rs["spec"].get("minReadySeconds", 0) * self.time_scale
        for pod in pods:
            sim = self._kubelet(pod, now)
            ready += sim.ready_since is not None
            available += sim.ready_since is not None and now - sim.ready_since >= min_ready
        old = rs.get("status") or {}
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": available, "observedGeneration": rs["metadata"].get("generation", 1)}
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        was = next((c for c in old.get("conditions") or [] if c["type"] == "ReplicaFailure"), None)
        if failure:
            stamp = was["lastTransitionTime"] if was and was["message"] == failure else fk._now()
            status["conditions"] = [{"type": "ReplicaFailure", "status": "True", "lastTransitionTime": stamp,
                                     "reason": "FailedCreate", "message": failure}]
        elif was and len(pods) < wanted:
            status["conditions"] = [was]
        self._write_status("replicasets", rs, status)

    def _create_pod(self, rs, name):
        template = rs["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": rs["metadata"]["namespace"],
            "labels": copy.deepcopy(template["metadata"].get("labels") or {}),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                                 "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": {**copy.deepcopy(template["spec"]), "nodeName": "fake-node"}}
        if template["metadata"].get("annotations"):
            pod["metadata"]["annotations"] = copy.deepcopy(template["metadata"]["annotations"])
        created = self.kube._create(fk._KINDS["pods"], rs["metadata"]["namespace"], pod, False)
        self._sim(created)
        return created

    def _sim(self, pod):
        meta = pod["metadata"]
        return self._pods.setdefault((meta["namespace"], meta["name"], meta["uid"]), _PodSim(time.monotonic()))

    # ---------------------------------------------------------------- the kubelet
    def _kubelet(self, pod, now):
        sim = self._sim(pod)
        statuses, all_ready, all_started = [], True, True
        for c in pod["spec"].get("containers") or []:
            box = sim.boxes.setdefault(c["name"], _Box())
            self._step_container(pod, c, box, now)
            state = ({"waiting": box.waiting} if box.waiting else
                     {"running": {"startedAt": box.started_at}} if box.running_since is not None else
                     {"waiting": {"reason": "ContainerCreating"}})
            statuses.append({"name": c["name"], "state": state, "lastState": copy.deepcopy(box.last_state),
                             "ready": box.ready, "restartCount": box.restarts, "image": c["image"],
                             "imageID": "", "started": box.running_since is not None,
                             **({"containerID": f"containerd://{pod['metadata']['uid'][:12]}"} if box.pulled
                                else {})})
            all_ready &= box.ready
            all_started &= box.pulled and (box.running_since is not None or box.restarts > 0)
        if all_ready and sim.ready_since is None:
            sim.ready_since, sim.ready_stamp = now, fk._now()
        elif not all_ready:
            sim.ready_since = None
        status = copy.deepcopy(pod.get("status") or {})
        status.update(phase="Running" if all_started else "Pending", hostIP="10.0.0.1", podIP="10.244.0.%d" % (
            int(pod["metadata"]["uid"][:2], 16) % 250 + 2), containerStatuses=statuses)
        status["podIPs"] = [{"ip": status["podIP"]}]
        status.setdefault("startTime", fk._now())
        previous = {c["type"]: c for c in status.get("conditions") or []}
        conditions = []
        for ctype, value in (("PodScheduled", True), ("Initialized", True), ("ContainersReady", all_ready),
                             ("Ready", all_ready)):
            text = "True" if value else "False"
            old = previous.get(ctype)
            conditions.append(old if old and old["status"] == text else {
                "type": ctype, "status": text, "lastProbeTime": None, "lastTransitionTime": fk._now(),
                **({} if value else {"reason": "ContainersNotReady",
                                     "message": "containers with unready status: [" + " ".join(
                                         s["name"] for s in statuses if not s["ready"]) + "]"})})
        status["conditions"] = conditions
        self._write_status("pods", pod, status)
        return sim

    def _step_container(self, pod, c, box, now):
        image, path = c["image"], f'spec.containers{{{c["name"]}}}'
        if not box.pulled:
            if box.pull_failed_at is not None and now - box.pull_failed_at < self.pull_backoff:
                if now - box.pull_failed_at >= self.pull_backoff / 2 and box.waiting["reason"] == "ErrImagePull":
                    box.waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
                    self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', field_path=path)
                    self._event(pod, "Warning", "Failed", "Error: ImagePullBackOff", field_path=path)
                return
            ok, error = self._pull(image)
            if not ok:
                box.pull_failed_at = now
                message = f'Failed to pull image "{image}": {error}'
                box.waiting = {"reason": "ErrImagePull", "message": message}
                self._event(pod, "Normal", "Pulling", f'Pulling image "{image}"', field_path=path)
                self._event(pod, "Warning", "Failed", message, field_path=path)
                self._event(pod, "Warning", "Failed", "Error: ErrImagePull", field_path=path)
                return
            box.pulled, box.waiting = True, None
            self._event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine'
                        if image in self.loaded else f'Successfully pulled image "{image}"', field_path=path)
        if box.running_since is None:
            if now < box.restart_at:
                return
            box.running_since, box.started_at, box.waiting = now, fk._now(), None
            box.ready, box.probe_failures = False, 0
            probe = c.get("readinessProbe")
            box.next_probe = now + (probe.get("initialDelaySeconds", 0) * self.time_scale) if probe else None
            self._event(pod, "Normal", "Created", f'Created container: {c["name"]}', field_path=path)
            self._event(pod, "Normal", "Started", f'Started container {c["name"]}', field_path=path)
        exit_after = next((e.get("value") for e in c.get("env") or [] if e.get("name") == EXIT_AFTER_ENV),
                          self._image_env.get(image, {}).get(EXIT_AFTER_ENV))
        if exit_after is not None and now - box.running_since >= float(exit_after):
            box.restarts += 1
            backoff = min(300.0, CRASH_BACKOFF * 2 ** (box.restarts - 1))
            box.last_state = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": box.started_at,
                                             "finishedAt": fk._now(),
                                             "containerID": f"containerd://{pod['metadata']['uid'][:12]}"}}
            box.running_since, box.ready, box.restart_at = None, False, now + backoff * self.time_scale
            pod_id = f'{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}({pod["metadata"]["uid"]})'
            box.waiting = {"reason": "CrashLoopBackOff",
                           "message": f'back-off {int(backoff)}s restarting failed container={c["name"]} pod={pod_id}'}
            self._event(pod, "Warning", "BackOff", f'Back-off restarting failed container {c["name"]} in pod '
                        f'{pod_id}', field_path=path)
            return
        probe = c.get("readinessProbe")
        if not probe:
            box.ready = True
            return
        if now < box.next_probe:
            return
        box.next_probe = now + probe.get("periodSeconds", 10) * self.time_scale
        if probe_fails(probe):
            box.probe_failures += 1
            if box.probe_failures >= probe.get("failureThreshold", 3):
                box.ready = False
            self._event(pod, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503"
                        if probe.get("httpGet") else "Readiness probe failed: ", field_path=path)
        else:
            box.probe_failures, box.ready = 0, True

    # ---------------------------------------------------------------- the deployment's status
    def _finish(self, dep, new, rss, now, paused=False):
        meta, spec = dep["metadata"], dep["spec"]
        desired = spec.get("replicas", 1)
        total = sum(r.get("status", {}).get("replicas", 0) for r in rss)
        ready = sum(r.get("status", {}).get("readyReplicas", 0) for r in rss)
        available = sum(r.get("status", {}).get("availableReplicas", 0) for r in rss)
        new_status = (new or {}).get("status", {})
        updated = new_status.get("replicas", 0)
        complete = new is not None and updated == desired and total == desired and \
            new_status.get("availableReplicas", 0) == desired
        signature = (updated, new_status.get("readyReplicas", 0), new_status.get("availableReplicas", 0), total,
                     meta["generation"])
        last = self._progress.get(meta["uid"])
        if last is None or last[0] != signature or paused:
            last = self._progress[meta["uid"]] = (signature, now)
        rs_name = new["metadata"]["name"] if new else meta["name"]
        deadline = spec.get("progressDeadlineSeconds", 600) * self.kube.progress_deadline_scale
        previous = {c["type"]: c for c in dep.get("status", {}).get("conditions") or []}
        was = previous.get("Progressing", {})
        if paused:
            progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif was.get("reason") == "ProgressDeadlineExceeded" or now - last[1] > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        max_unavailable = fk._rolling_params(spec, desired)[1]
        availability = (("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                        if available >= desired - max_unavailable else
                        ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."))
        wanted = [("Available", availability), ("Progressing", progressing)]
        failure = next((c for c in new_status.get("conditions") or [] if c["type"] == "ReplicaFailure"), None)
        if failure:
            wanted.append(("ReplicaFailure", (failure["status"], failure["reason"], failure["message"])))
        conditions, stamp = [], fk._now()
        for ctype, (cstatus, reason, message) in wanted:
            old = previous.get(ctype, {})
            same = (old.get("status"), old.get("reason"), old.get("message")) == (cstatus, reason, message)
            conditions.append({"type": ctype, "status": cstatus,
                               "lastUpdateTime": old["lastUpdateTime"] if same else stamp,
                               "lastTransitionTime": old["lastTransitionTime"] if old.get("status") == cstatus
                               else stamp, "reason": reason, "message": message})
        status = {"observedGeneration": meta["generation"], "replicas": total, "updatedReplicas": updated,
                  "readyReplicas": ready, "availableReplicas": available,
                  "unavailableReplicas": max(0, total - available) if total > desired else max(0, desired - available)}
        status = {k: v for k, v in status.items() if v}
        status["conditions"] = conditions
        result = copy.deepcopy(dep)
        result["status"] = status
        if new is not None:
            result["metadata"].setdefault("annotations", {})[REVISION] = new["metadata"]["annotations"][REVISION]
        if result != dep:
            self.kube._commit(fk._KINDS["deployments"], result, "MODIFIED", copy.deepcopy(dep))


# --------------------------------------------------------------------------- Table output (kubectl get)
def _age(stamp):
    if not stamp:
        return "<unknown>"
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    s = max(0, int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 8 * 3600:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _pod_status(pod):
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _selector(spec):
    return ",".join(f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()))


def _containers(spec):
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _col(name, kind="string", priority=0, fmt="", description=""):
    return {"name": name, "type": kind, "format": fmt, "description": description or name, "priority": priority}


_NAME = _col("Name", fmt="name", description="Name must be unique within a namespace.")
_AGE = _col("Age", description="CreationTimestamp is a timestamp representing the server time when this object "
                                "was created.")
_COLUMNS = {
    "Deployment": [_NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _AGE,
                   _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
    "ReplicaSet": [_NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _AGE,
                   _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
    "Pod": [_NAME, _col("Ready"), _col("Status"), _col("Restarts"), _AGE, _col("IP", priority=1),
            _col("Node", priority=1), _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
    "Ingress": [_NAME, _col("Class", description="The name of the IngressClass resource that should be used for "
                                                 "additional configuration"),
                _col("Hosts", description="Hosts that incoming requests are matched against before the ingress "
                                          "rule"),
                _col("Address", description="Address is a list containing ingress points for the load-balancer"),
                _col("Ports", description="Ports of TLS configurations that open"), _AGE],
}


def _ingress_hosts(rules):
    """formatHosts of the apiserver's printers: the first three hosts, then "+ N more..."; "*" for none."""
    hosts, more = [], False
    for rule in rules:
        more = more or len(hosts) == 3
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - 3} more..." if more else "")


def _ingress_cells(obj, age):
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    balancers = (status.get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(b.get("ip") or b.get("hostname") or "" for b in balancers)
    return [obj["metadata"]["name"], spec.get("ingressClassName") or "<none>", _ingress_hosts(spec.get("rules") or []),
            address, "80, 443" if spec.get("tls") else "80", age]


def _cells(kind, obj):
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    age = _age(meta.get("creationTimestamp"))
    if kind == "Ingress":
        return _ingress_cells(obj, age)
    if kind == "Deployment":
        return [meta["name"], f'{status.get("readyReplicas", 0)}/{spec.get("replicas", 1)}',
                status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age, *_containers(spec),
                _selector(spec)]
    if kind == "ReplicaSet":
        return [meta["name"], spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0),
                age, *_containers(spec), _selector(spec)]
    statuses = status.get("containerStatuses") or []  # a Pod
    return [meta["name"], f'{sum(bool(s.get("ready")) for s in statuses)}/{len(spec.get("containers") or [])}',
            _pod_status(obj), str(sum(s.get("restartCount", 0) for s in statuses)), age,
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>", "<none>", "<none>"]


def wants_table(accept, payload):
    """Whether to answer with a Table: asked for, and of a kind whose columns this fake knows.
    Other kinds are sent as they are, and kubectl falls back to NAME and AGE for them."""
    kind = str(payload.get("kind", ""))
    return "as=Table" in (accept or "") and "g=meta.k8s.io" in (accept or "") and (
        kind in _COLUMNS or (kind.endswith("List") and kind[:-4] in _COLUMNS and "items" in payload))


def table(payload, include_object="Metadata"):
    """A meta.k8s.io/v1 Table of a Deployment, ReplicaSet, Pod or Ingress (or a list of them), with the
    columns the real apiserver's printers send."""
    listed = payload.get("kind", "").endswith("List") and "items" in payload
    kind = payload["kind"][:-4] if listed else payload.get("kind")
    items = payload["items"] if listed else [payload]
    columns = _COLUMNS[kind]
    rows = []
    for item in items:
        row = {"cells": _cells(kind, item)}
        if include_object == "Object":
            row["object"] = {"kind": kind, "apiVersion": payload.get("apiVersion", "v1"), **item}
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": (payload.get("metadata") or {}).get("resourceVersion", "")},
            "columnDefinitions": columns, "rows": rows}
