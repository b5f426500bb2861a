"""batch/v1 Jobs for the fake Kubernetes API server (tests/support/fake_kubernetes.py): the
Jobs' defaults and validation, a job controller that creates their Pods, and a kubelet that
runs each Pod's container for real on the local Docker engine, with its log and events.

Like a real cluster: a Pod's image must be present locally or pullable from a registry on
127.0.0.1/localhost (never Docker Hub), else it waits in ErrImagePull/ImagePullBackOff; its
env is resolved from Secrets at start (a missing one is CreateContainerConfigError); it runs
on Docker's default bridge network, never the host's; the exit code lands in the Pod's
terminated state and the Job's conditions (Complete, Failed with BackoffLimitExceeded or
DeadlineExceeded); deleting a Pod kills its container; deleting a Job with propagationPolicy
Background or Foreground deletes its Pods, while batch/v1's default (Orphan) leaves them.
Not modelled: restartPolicy OnFailure restarts (a failed container fails its Pod, as with
Never), indexed completions, pod failure policies, hostNetwork and volumes.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

from tests.support import fake_kubernetes as fk

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
NODE = "fake-node"
# Registries a pod may pull from: the local one Norn pushes to. Anything else would mean Docker
# Hub, which tests cannot reach, so those images fail to pull at once.
PULLABLE_REGISTRIES = ("127.0.0.1:", "localhost:")
_WAITING_LOG = {"ErrImagePull": "trying and failing to pull image", "ImagePullBackOff": "trying and failing to "
                "pull image", "InvalidImageName": "trying and failing to pull image"}


def _stamp(moment=None):
    return (moment or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


# --------------------------------------------------------------------------- defaults and validation
def default_job(obj, old):
    """SetDefaults_Job plus the job strategy's PrepareForCreate (the generated selector and labels)."""
    spec = obj.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    fk._default_pod_spec(template.setdefault("spec", {}))
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    meta = obj["metadata"]
    if old is None and not spec.get("manualSelector") and not spec.get("selector"):
        uid, name = meta["uid"], meta.get("name", "")
        spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: uid}}
        template["metadata"].setdefault("labels", {}).update(
            {CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name, "controller-uid": uid, "job-name": name})
    obj.setdefault("status", {})


def validate_job(obj, old):
    spec = obj.get("spec") or {}
    errors = []
    pod = (spec.get("template") or {}).get("spec") or {}
    policy = pod.get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        errors.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                       f'Unsupported value: {json.dumps(policy)}: supported values: "OnFailure", "Never"'))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            errors.append((f"spec.{key}", "FieldValueInvalid",
                           f"Invalid value: {json.dumps(value)}: must be greater than or equal to 0"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        errors.append(("spec.activeDeadlineSeconds", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(deadline)}: must be greater than 0"))
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    errors += fk.schema.metadata_errors((spec.get("template") or {}).get("metadata") or {}, "spec.template.metadata")
    if spec.get("selector"):
        errors += fk.schema.label_errors(spec["selector"].get("matchLabels"), "spec.selector.matchLabels")
    if not spec.get("selector"):
        errors.append(("spec.selector", "FieldValueRequired", "Required value"))
    elif not fk._selector_matches(spec["selector"], labels):
        errors.append(("spec.template.metadata.labels", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
    errors += _container_errors(pod, "spec.template.spec")
    if old is not None:
        old_spec = old.get("spec") or {}
        for key in ("template", "selector", "completions", "completionMode"):
            if key in ("template", "selector", "completionMode") and spec.get(key) != old_spec.get(key):
                errors.append((f"spec.{key}", "FieldValueInvalid",
                               f"Invalid value: {json.dumps(spec.get(key))}: field is immutable"))
    return errors


def _container_errors(pod, base):
    errors, seen = [], set()
    containers = pod.get("containers")
    if not containers:
        errors.append((f"{base}.containers", "FieldValueRequired", "Required value"))
    for n, container in enumerate(containers or []):
        where = f"{base}.containers[{n}]"
        name = container.get("name") if isinstance(container, dict) else None
        errors += fk._name_errors("containers", name, f"{where}.name", None)
        if name in seen:
            errors.append((f"{where}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}"))
        seen.add(name)
        if not (isinstance(container, dict) and container.get("image")):
            errors.append((f"{where}.image", "FieldValueRequired", "Required value"))
        errors += fk.schema.container_errors(container, where)
    return errors


def default_pod(obj, old):
    fk._default_pod_spec(obj.setdefault("spec", {}))
    obj["spec"].setdefault("serviceAccountName", "default")
    obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})


def validate_pod(obj, old):
    spec = obj.get("spec") or {}
    errors = _container_errors(spec, "spec")
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        errors.append(("spec.restartPolicy", "FieldValueNotSupported", f'Unsupported value: '
                       f'{json.dumps(spec.get("restartPolicy"))}: supported values: "Always", "OnFailure", "Never"'))
    if old is not None:
        strip = lambda s: {**s, "containers": [{**c, "image": None} for c in s.get("containers") or []]}  # noqa: E731
        if strip(spec) != strip(old.get("spec") or {}):
            errors.append(("spec", "FieldValueForbidden", "Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`, `spec.activeDeadlineSeconds` and `spec.tolerations`"))
    return errors


def validate_event(obj, old):
    involved = obj.get("involvedObject") or {}
    if not involved.get("name") or not involved.get("kind"):
        return [("involvedObject", "FieldValueRequired", "Required value")]
    return []


# --------------------------------------------------------------------------- running pods
@dataclass
class _PodRun:
    """What the kubelet knows of one pod: its container and the log lines it printed."""
    namespace: str
    name: str
    uid: str
    killed: threading.Event = field(default_factory=threading.Event)
    container_id: str = ""
    lines: list = field(default_factory=list)  # (datetime, bytes) per line, newline included
    log_done: bool = False


class JobController:
    """The job controller, the kubelet and the garbage collector of FakeKubernetes, for Jobs.

    ``network`` is the Docker network pods run on (the default bridge; never the host's).
    ``pull_backoff`` is how long a pod waits in ErrImagePull before ImagePullBackOff and
    between pulls (seconds; the real kubelet starts at 10 s).
    """

    def __init__(self, kube, network="bridge", pull_backoff=1.0, interval=0.05):
        self.kube = kube
        self.network = network
        self.pull_backoff = pull_backoff
        self.interval = interval
        self.instance = uuid.uuid4().hex[:12]  # labels this fake's containers, so stop() kills only them
        self.runs = {}  # (namespace, pod name) -> _PodRun
        self.docker_runs = []  # argv of every `docker create`, for tests
        self._counted_by_job = {}  # Job uid -> uids of its finished pods already in its status counts
        self._logs_changed = threading.Condition(kube._lock)
        self._thread = None

    # ---------------------------------------------------------------- lifecycle
    def start(self):
        self._thread = threading.Thread(target=self._loop, name="fake-kube-jobs", daemon=True)
        self._thread.start()

    def stop(self):
        with self.kube._lock:
            runs = list(self.runs.values())
            for run in runs:
                run.killed.set()
            self._logs_changed.notify_all()
        if self._thread:
            self._thread.join(timeout=5)
        if shutil.which("docker"):
            listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=norn.fake-kube={self.instance}"],
                                    capture_output=True, text=True, timeout=60)
            ids = listed.stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)

    def _loop(self):
        while not self.kube._stopping.wait(self.interval):
            with self.kube._lock:
                for key in [k for k in self.kube._objects if k[0] == "jobs"]:
                    try:
                        self._sync(key)
                    except Exception:  # keep the controller alive; the test sees the bug via internal_errors
                        self.kube.internal_errors.append(traceback.format_exc())

    # ---------------------------------------------------------------- the job controller
    def _owned_pods(self, job):
        uid = job["metadata"]["uid"]
        return [o for (p, ns, _), o in self.kube._objects.items() if p == "pods"
                and ns == job["metadata"]["namespace"]
                and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def _sync(self, key):
        job = self.kube._objects.get(key)
        if job is None:  # deleted earlier in this pass (a TTL, a cascade)
            return
        spec, status = job["spec"], job.get("status") or {}
        conditions = status.get("conditions") or []
        finished = next((c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"),
                        None)
        if finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            done_at = _parse_stamp(status.get("completionTime") or finished["lastTransitionTime"])
            if ttl is not None and (datetime.datetime.now(datetime.timezone.utc) - done_at).total_seconds() >= ttl:
                self.kube._delete(fk._KINDS["jobs"], key[1], key[2], {"propagationPolicy": "Foreground"}, False)
            return
        if spec.get("suspend"):
            return
        new_status = copy.deepcopy(status)
        new_status.setdefault("startTime", _stamp())
        pods = self._owned_pods(job)
        phases = [p.get("status", {}).get("phase") for p in pods]
        active = [p for p, phase in zip(pods, phases) if phase in ("Pending", "Running")]
        # Counts are kept in the Job's status, so pods deleted later (by a user, by the TTL) still count.
        succeeded = new_status.get("succeeded", 0)
        failed = new_status.get("failed", 0)
        for pod in pods:
            uid, phase = pod["metadata"]["uid"], pod["status"].get("phase")
            if phase in ("Succeeded", "Failed") and uid not in self._counted(job):
                self._counted(job).add(uid)
                succeeded += phase == "Succeeded"
                failed += phase == "Failed"
        started = _parse_stamp(new_status["startTime"])
        elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        outcome = None
        if succeeded >= (spec.get("completions") or 1):
            outcome = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif failed > spec.get("backoffLimit", 6):
            outcome = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif spec.get("activeDeadlineSeconds") is not None and elapsed >= spec["activeDeadlineSeconds"]:
            outcome = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        if outcome and outcome[0] == "Failed":
            for pod in active:  # the controller deletes what still runs; the kubelet kills its container
                self.kube._delete(fk._KINDS["pods"], key[1], pod["metadata"]["name"], None, False)
                failed += 1
                self._counted(job).add(pod["metadata"]["uid"])
            active = []
        elif not outcome and not active:
            active = [self._create_pod(job)]
        ready = sum(1 for p in active if any(c.get("type") == "Ready" and c.get("status") == "True"
                                             for c in p.get("status", {}).get("conditions") or []))
        new_status.update(active=len(active), ready=ready, terminating=0, uncountedTerminatedPods={},
                          succeeded=succeeded, failed=failed)
        for counter in ("active", "succeeded", "failed"):  # omitempty
            if not new_status[counter]:
                del new_status[counter]
        if outcome:
            kind, reason, message = outcome
            now = _stamp()
            target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
            new_status["conditions"] = conditions + [
                {"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason,
                 "message": message} for t in (target, kind)]
            if kind == "Complete":
                new_status["completionTime"] = now
            self.record_event(job, "Normal" if kind == "Complete" else "Warning",
                              "Completed" if kind == "Complete" else reason,
                              "Job completed" if kind == "Complete" else message, component="job-controller")
        if new_status != status:
            updated = copy.deepcopy(job)
            updated["status"] = new_status
            self.kube._commit(fk._KINDS["jobs"], updated, "MODIFIED", copy.deepcopy(job))

    def _counted(self, job):
        # Finished pods already added to the Job's counts (the real controller uses a finalizer for this).
        return self._counted_by_job.setdefault(job["metadata"]["uid"], set())

    def _create_pod(self, job):
        meta, template = job["metadata"], job["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": f'{meta["name"]}-', "namespace": meta["namespace"],
                            "labels": copy.deepcopy(template["metadata"].get("labels") or {}),
                            "annotations": copy.deepcopy(template["metadata"].get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": {**copy.deepcopy(template["spec"]), "nodeName": NODE}}
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        created = self.kube._create(fk._KINDS["pods"], meta["namespace"], pod, False)
        name = created["metadata"]["name"]
        run = _PodRun(meta["namespace"], name, created["metadata"]["uid"])
        self.runs[(meta["namespace"], name)] = run
        self.record_event(job, "Normal", "SuccessfulCreate", f"Created pod: {name}", component="job-controller")
        threading.Thread(target=self._kubelet, args=(run,), name=f"fake-kubelet-{name}", daemon=True).start()
        return created

    # ---------------------------------------------------------------- deletion (the garbage collector)
    def job_deleted(self, job, options):
        """After a Job's DELETE: its pods go (Background/Foreground) or lose their owner (Orphan,
        batch/v1's default when the client names no policy)."""
        policy = (options or {}).get("propagationPolicy")
        if policy is None and (options or {}).get("orphanDependents") is False:
            policy = "Background"
        for pod in self._owned_pods(job):
            if policy in ("Background", "Foreground"):
                self.kube._delete(fk._KINDS["pods"], pod["metadata"]["namespace"], pod["metadata"]["name"], None,
                                  False)
            else:
                updated = copy.deepcopy(pod)
                updated["metadata"]["ownerReferences"] = [r for r in pod["metadata"]["ownerReferences"]
                                                          if r.get("uid") != job["metadata"]["uid"]]
                if not updated["metadata"]["ownerReferences"]:
                    del updated["metadata"]["ownerReferences"]
                self.kube._commit(fk._KINDS["pods"], updated, "MODIFIED", copy.deepcopy(pod))

    def pod_gone(self, pod):
        """Called (under the lock) whenever a pod leaves storage: the kubelet kills its container."""
        run = self.runs.get((pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))
        if run is not None and run.uid == pod["metadata"]["uid"]:
            run.killed.set()
            self._logs_changed.notify_all()
            if run.container_id:
                threading.Thread(target=_docker, args=(["rm", "-f", run.container_id],), daemon=True).start()

    # ---------------------------------------------------------------- events
    def record_event(self, obj, event_type, reason, message, component="kubelet", field_path=None):
        meta = obj["metadata"]
        now = _stamp()
        involved = {"kind": obj["kind"], "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
                    "apiVersion": obj["apiVersion"], "resourceVersion": meta.get("resourceVersion", "")}
        if field_path:
            involved["fieldPath"] = field_path
        event = {"metadata": {"name": f'{meta["name"]}.{secrets.token_hex(8)}', "namespace": meta["namespace"]},
                 "involvedObject": involved, "reason": reason, "message": message, "type": event_type,
                 "source": {"component": component, **({"host": NODE} if component == "kubelet" else {})},
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": component,
                 "reportingInstance": NODE if component == "kubelet" else ""}
        with contextlib.suppress(fk.KubeApiError):  # the namespace may be going away
            self.kube._create(fk._KINDS["events"], meta["namespace"], event, False)

    # ---------------------------------------------------------------- the kubelet
    def _update_pod(self, run, mutate):
        """Apply mutate(pod) to the stored pod; False when the pod is gone (deleted or replaced)."""
        with self.kube._lock:
            pod = self.kube._objects.get(("pods", run.namespace, run.name))
            if pod is None or pod["metadata"]["uid"] != run.uid or run.killed.is_set():
                return False
            updated = copy.deepcopy(pod)
            mutate(updated)
            if updated != pod:
                self.kube._commit(fk._KINDS["pods"], updated, "MODIFIED", copy.deepcopy(pod))
            return True

    def _set_container(self, run, container, state, phase=None, ready=False, **extra):
        def mutate(pod):
            status = pod["status"]
            if phase:
                status["phase"] = phase
            status.setdefault("hostIP", "10.0.0.1")
            status.setdefault("startTime", _stamp())
            status.update({k: v for k, v in extra.items() if v})
            status["containerStatuses"] = [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": ready,
                "restartCount": 0, "started": "running" in state, "state": state,
                **({"containerID": f"docker://{run.container_id}"} if run.container_id else {})}]
            now = _stamp()
            status["conditions"] = [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now}
                                    for t, s in (("PodScheduled", "True"), ("Initialized", "True"),
                                                 ("ContainersReady", str(ready)), ("Ready", str(ready)))]
        return self._update_pod(run, mutate)

    def _kubelet(self, run):
        try:
            self._run_pod(run)
        except Exception:
            self.kube.internal_errors.append(traceback.format_exc())
        finally:
            with self.kube._lock:
                run.log_done = True
                self._logs_changed.notify_all()
            if run.container_id:
                _docker(["rm", "-f", run.container_id])

    def _pod_and_container(self, run):
        with self.kube._lock:
            pod = copy.deepcopy(self.kube._objects.get(("pods", run.namespace, run.name)))
        return pod, (pod["spec"]["containers"][0] if pod else None)

    def _run_pod(self, run):
        pod, container = self._pod_and_container(run)
        if pod is None:
            return
        field_path = f'spec.containers{{{container["name"]}}}'
        image = container["image"]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        if not self._set_container(run, container, waiting, phase="Pending"):
            return
        # The image: present, or pulled from a local registry, or the pod waits in (back-off of) ErrImagePull.
        while not self._image_ready(image, container.get("imagePullPolicy")):
            problem = self._last_pull_error
            message = f'Failed to pull image "{image}": {problem}'
            self.record_event(pod, "Warning", "Failed", message, field_path=field_path)
            if not self._set_container(run, container, {"waiting": {"reason": "ErrImagePull", "message": message}}):
                return
            if run.killed.wait(self.pull_backoff):
                return
            backoff = f'Back-off pulling image "{image}"'
            self.record_event(pod, "Normal", "BackOff", backoff, field_path=field_path)
            if not self._set_container(run, container, {"waiting": {"reason": "ImagePullBackOff",
                                                                     "message": backoff}}):
                return
            if run.killed.wait(self.pull_backoff):
                return
        try:
            env = self._resolve_env(run.namespace, container)
        except ValueError as exc:
            self.record_event(pod, "Warning", "Failed", f"Error: {exc}", field_path=field_path)
            self._set_container(run, container, {"waiting": {"reason": "CreateContainerConfigError",
                                                             "message": str(exc)}})
            return
        with tempfile.TemporaryDirectory(prefix="fake-kubelet-") as tmp:
            env_file = os.path.join(tmp, "env")
            with open(os.open(env_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
                fh.writelines(f"{k}={v}\n" for k, v in env.items())
            argv = self._docker_create_argv(run, pod, container, env_file)
            self.docker_runs.append(argv)
            created = _docker(argv)
            if created.returncode != 0:
                self._set_container(run, container, {"waiting": {"reason": "CreateContainerError",
                                                                 "message": created.stderr.strip()}})
                return
        run.container_id = created.stdout.strip()
        if run.killed.is_set():
            return
        self.record_event(pod, "Normal", "Created", f"Created container {container['name']}", field_path=field_path)
        started = _docker(["start", run.container_id])
        state = _inspect_state(run.container_id)
        if started.returncode != 0:
            message = (state.get("Error") or started.stderr).strip()
            self.record_event(pod, "Warning", "Failed", f"Error: {message}", field_path=field_path)
            now = _stamp()
            self._set_container(run, container, {"terminated": {
                "exitCode": 128, "reason": "StartError", "message": message, "startedAt": "1970-01-01T00:00:00Z",
                "finishedAt": now, "containerID": f"docker://{run.container_id}"}}, phase="Failed")
            return
        started_at = _stamp()
        self.record_event(pod, "Normal", "Started", f"Started container {container['name']}", field_path=field_path)
        pod_ip = _docker(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          run.container_id]).stdout.strip()
        if not self._set_container(run, container, {"running": {"startedAt": started_at}}, phase="Running",
                                   ready=True, podIP=pod_ip, podIPs=[{"ip": pod_ip}] if pod_ip else None):
            return
        reader = threading.Thread(target=self._read_log, args=(run,), daemon=True)
        reader.start()
        waited = _docker(["wait", run.container_id], timeout=None)
        reader.join(timeout=10)
        if run.killed.is_set():
            return
        state = _inspect_state(run.container_id)
        code = int(state.get("ExitCode", waited.stdout.strip() or 1) or 0)
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        self._set_container(run, container, {"terminated": {
            "exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": _stamp(),
            "containerID": f"docker://{run.container_id}"}}, phase="Succeeded" if code == 0 else "Failed")

    _last_pull_error = ""

    def _image_ready(self, image, policy):
        if policy != "Always" and _docker(["image", "inspect", image]).returncode == 0:
            return True
        if not image.startswith(PULLABLE_REGISTRIES):
            if policy == "Never":
                self._last_pull_error = "image is not present and imagePullPolicy is Never"
            else:
                self._last_pull_error = ("failed to resolve reference: the fake cluster pulls only from registries "
                                         "on 127.0.0.1 or localhost")
            return False
        pulled = _docker(["pull", "--quiet", image], timeout=120)
        self._last_pull_error = " ".join((pulled.stderr or pulled.stdout).split())
        return pulled.returncode == 0

    def _resolve_env(self, namespace, container):
        """The container's environment, from envFrom then env, like the kubelet (ValueError: why not)."""
        def secret(name, optional):
            with self.kube._lock:
                obj = self.kube._objects.get(("secrets", namespace, name))
            if obj is None:
                if optional:
                    return None
                raise ValueError(f'secret "{name}" not found')
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}

        env = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source and not source["configMapRef"].get("optional"):
                raise ValueError(f'configmap "{source["configMapRef"].get("name")}" not found')
            ref = source.get("secretRef")
            if ref:
                data = secret(ref.get("name"), ref.get("optional")) or {}
                env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for entry in container.get("env") or []:
            if "value" in entry or "valueFrom" not in entry:
                env[entry["name"]] = entry.get("value", "")
                continue
            ref = entry["valueFrom"].get("secretKeyRef")
            if ref is None:
                raise ValueError(f'env {entry["name"]}: only value and secretKeyRef are supported by this fake')
            data = secret(ref.get("name"), ref.get("optional"))
            if data is None:
                continue
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ValueError(f'couldn\'t find key {ref.get("key")} in Secret {namespace}/{ref.get("name")}')
            env[entry["name"]] = data[ref["key"]]
        for name, value in env.items():
            if any(c in value for c in "\n\r\0"):
                raise ValueError(f"env {name}: this fake passes env through a file and cannot hold line breaks")
        return env

    def _docker_create_argv(self, run, pod, container, env_file):
        context = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        argv = ["create", "--label", f"norn.fake-kube={self.instance}", "--label",
                f"io.kubernetes.pod.name={run.name}", "--label", f"io.kubernetes.pod.namespace={run.namespace}",
                "--name", f"k8s_{container['name']}_{run.name}_{run.namespace}_{run.uid[:8]}",
                "--network", self.network, "--add-host", "host.docker.internal:host-gateway",
                "--hostname", run.name, "--env-file", env_file]
        if context.get("runAsUser") is not None:
            argv += ["--user", f'{context["runAsUser"]}' + (f':{context["runAsGroup"]}'
                                                             if context.get("runAsGroup") is not None else "")]
        if context.get("readOnlyRootFilesystem"):
            argv.append("--read-only")
        if context.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        for cap in (context.get("capabilities") or {}).get("drop") or []:
            argv += ["--cap-drop", cap]
        limits = (container.get("resources") or {}).get("limits") or {}
        if limits.get("memory"):
            argv += ["--memory", _docker_memory(limits["memory"])]
        if limits.get("cpu"):
            cpu = str(limits["cpu"])
            argv += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
        if container.get("workingDir"):
            argv += ["--workdir", container["workingDir"]]
        command, args = container.get("command"), container.get("args")
        if command:
            argv += ["--entrypoint", command[0], container["image"], *command[1:], *(args or [])]
        else:
            argv += [container["image"], *(args or [])]
        return argv

    def _read_log(self, run):
        proc = subprocess.Popen(["docker", "logs", "--follow", run.container_id], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            for line in proc.stdout:
                with self.kube._lock:
                    run.lines.append((datetime.datetime.now(datetime.timezone.utc), line))
                    self._logs_changed.notify_all()
        finally:
            proc.stdout.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is None:
                proc.kill()

    # ---------------------------------------------------------------- GET pods/{name}/log
    def serve_log(self, handler, namespace, name, query):
        """Answer a pod log request (the text, or a chunked stream with follow=true); None when streamed."""
        with self.kube._lock:
            pod = self.kube._objects.get(("pods", namespace, name))
            if pod is None:
                raise fk._not_found(fk._KINDS["pods"], name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            wanted = query.get("container") or (names[0] if len(names) == 1 else None)
            if wanted is None:
                raise fk._bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(names)}]")
            if wanted not in names:
                raise fk._bad_request(f"container {wanted} is not valid for pod {name}")
            statuses = pod.get("status", {}).get("containerStatuses") or []
            state = next((s["state"] for s in statuses if s["name"] == wanted), {"waiting": {}})
            if "waiting" in state:
                reason = state["waiting"].get("reason") or "ContainerCreating"
                raise fk._bad_request(f'container "{wanted}" in pod "{name}" is waiting to start: '
                                      f"{_WAITING_LOG.get(reason, reason)}")
            run = self.runs.get((namespace, name))
        follow = fk._as_bool(query.get("follow", "false"))
        timestamps = fk._as_bool(query.get("timestamps", "false"))
        since = None
        if query.get("sinceSeconds"):
            since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
                seconds=fk._number(query, "sinceSeconds"))
        elif query.get("sinceTime"):
            since = datetime.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
        tail = int(fk._number(query, "tailLines", -1))
        limit = int(fk._number(query, "limitBytes", 0))

        def render(lines):
            out = b""
            for moment, line in lines:
                if since is None or moment >= since:
                    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode() if timestamps else b""
                    out += stamp + line
            return out

        with self.kube._lock:
            lines = list(run.lines) if run else []
        if tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        if not follow:
            data = render(lines)[:limit or None]
            handler.send_response(200)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return None
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent_bytes, position = 0, len(run.lines) if run else 0
        pending = render(lines)
        try:
            while True:
                if limit:
                    pending = pending[:max(0, limit - sent_bytes)]
                if pending:
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(pending), pending))
                    handler.wfile.flush()
                    sent_bytes += len(pending)
                if run is None or (limit and sent_bytes >= limit):
                    break
                with self._logs_changed:
                    while (len(run.lines) == position and not run.log_done and not run.killed.is_set()
                           and not self.kube._stopping.is_set()):
                        self._logs_changed.wait(1.0)
                    fresh, position = run.lines[position:], len(run.lines)
                    over = run.log_done or run.killed.is_set() or self.kube._stopping.is_set()
                pending = render(fresh)
                if over and not pending:
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True
        return None


def _docker(args, timeout=60):
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")


def _inspect_state(container_id):
    out = _docker(["inspect", "-f", "{{json .State}}", container_id])
    try:
        return json.loads(out.stdout) if out.returncode == 0 else {}
    except ValueError:
        return {}


def _docker_memory(quantity):
    """A Kubernetes memory quantity (512Mi, 1G, 1000000) as a docker --memory value in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = str(quantity)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return str(int(float(text[:-len(suffix)]) * factor))
    return str(int(float(text)))


def wait_until(predicate, timeout=30.0, interval=0.05):
    """Poll predicate() until it returns something truthy; that value, or AssertionError at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
