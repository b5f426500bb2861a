"""What FakeKubernetes knows of the shapes of the objects it serves, and the apiserver's
generic metadata checks.

``SCHEMA`` is a compact table of the v1 types (k8s.io/api, 1.32): for each type, its JSON field
names and their types.  A type is a name in the table; ``"[T]"`` a list of T; ``"{T}"`` a map of
string to T; or a leaf: ``"s"`` string, ``"i"`` integer, ``"b"`` boolean, ``"io"`` int-or-string,
``"q"`` quantity, ``"t"`` timestamp, ``"*"`` anything (free-form, or a type this fake does not
model field by field: its insides are neither checked nor pruned).  Every field Norn writes is
here, plus the common ones around them, so that ``prune_unknown`` can do what the apiserver's
decoder does with ``fieldValidation``: report the path of each unknown field
(``spec.template.spec.containers[0].imagePullPolcy``) and drop it, and so that ``type_error`` can
refuse what encoding/json cannot store (a string where an integer, boolean, list or object
belongs), as the real decoder does; quantities are parsed (an unparseable one fails the whole
request); timestamps and free-form fields are not checked.

``label_errors``/``annotation_errors`` are apimachinery's ValidateLabels/ValidateAnnotations and
``container_errors`` the part of ValidateContainers beyond names and images (ports, env names,
pull policy, probes, resources) and ``ingress_errors`` ValidateIngress, with the real messages, as
(field, reason, message) triples for fake_kubernetes._invalid.
"""
from __future__ import annotations

import ipaddress
import json
import re

_KEY_REF = {"name": "s", "key": "s", "optional": "b"}
_HANDLER = {"exec": "ExecAction", "httpGet": "HTTPGetAction", "tcpSocket": "TCPSocketAction",
            "sleep": {"seconds": "i"}}
_CONTAINER = {
    "name": "s", "image": "s", "command": "[s]", "args": "[s]", "workingDir": "s", "ports": "[ContainerPort]",
    "envFrom": "[EnvFromSource]", "env": "[EnvVar]", "resources": "ResourceRequirements",
    "resizePolicy": "[ContainerResizePolicy]", "restartPolicy": "s", "volumeMounts": "[VolumeMount]",
    "volumeDevices": "[VolumeDevice]", "livenessProbe": "Probe", "readinessProbe": "Probe", "startupProbe": "Probe",
    "lifecycle": "Lifecycle", "terminationMessagePath": "s", "terminationMessagePolicy": "s",
    "imagePullPolicy": "s", "securityContext": "SecurityContext", "stdin": "b", "stdinOnce": "b", "tty": "b"}
_SE_LINUX = {"user": "s", "role": "s", "type": "s", "level": "s"}
_WINDOWS = {"gmsaCredentialSpecName": "s", "gmsaCredentialSpec": "s", "runAsUserName": "s", "hostProcess": "b"}
_PROFILE = {"type": "s", "localhostProfile": "s"}
_CONDITION = {"type": "s", "status": "s", "lastProbeTime": "t", "lastTransitionTime": "t", "reason": "s",
              "message": "s"}

SCHEMA = {
    # ---------------------------------------------------------------- meta/v1
    "ObjectMeta": {"name": "s", "generateName": "s", "namespace": "s", "selfLink": "s", "uid": "s",
                   "resourceVersion": "s", "generation": "i", "creationTimestamp": "t", "deletionTimestamp": "t",
                   "deletionGracePeriodSeconds": "i", "labels": "{s}", "annotations": "{s}",
                   "ownerReferences": "[OwnerReference]", "finalizers": "[s]", "managedFields": "[*]"},
    "OwnerReference": {"apiVersion": "s", "kind": "s", "name": "s", "uid": "s", "controller": "b",
                       "blockOwnerDeletion": "b"},
    "LabelSelector": {"matchLabels": "{s}", "matchExpressions": "[LabelSelectorRequirement]"},
    "LabelSelectorRequirement": {"key": "s", "operator": "s", "values": "[s]"},
    # ---------------------------------------------------------------- pods
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {
        "volumes": "[Volume]", "initContainers": "[Container]", "containers": "[Container]",
        "ephemeralContainers": "[EphemeralContainer]", "restartPolicy": "s", "terminationGracePeriodSeconds": "i",
        "activeDeadlineSeconds": "i", "dnsPolicy": "s", "nodeSelector": "{s}", "serviceAccountName": "s",
        "serviceAccount": "s", "automountServiceAccountToken": "b", "nodeName": "s", "hostNetwork": "b",
        "hostPID": "b", "hostIPC": "b", "shareProcessNamespace": "b", "securityContext": "PodSecurityContext",
        "imagePullSecrets": "[LocalObjectReference]", "hostname": "s", "subdomain": "s", "affinity": "*",
        "schedulerName": "s", "tolerations": "[Toleration]", "hostAliases": "[HostAlias]",
        "priorityClassName": "s", "priority": "i", "dnsConfig": "PodDNSConfig",
        "readinessGates": "[PodReadinessGate]", "runtimeClassName": "s", "enableServiceLinks": "b",
        "preemptionPolicy": "s", "overhead": "{q}", "topologySpreadConstraints": "[*]", "setHostnameAsFQDN": "b",
        "os": {"name": "s"}, "hostUsers": "b", "schedulingGates": "[PodSchedulingGate]", "resourceClaims": "[*]",
        "resources": "ResourceRequirements"},
    "Container": _CONTAINER,
    "EphemeralContainer": {**_CONTAINER, "targetContainerName": "s"},
    "ContainerPort": {"name": "s", "hostPort": "i", "containerPort": "i", "protocol": "s", "hostIP": "s"},
    "EnvVar": {"name": "s", "value": "s", "valueFrom": "EnvVarSource"},
    "EnvVarSource": {"fieldRef": {"apiVersion": "s", "fieldPath": "s"},
                     "resourceFieldRef": {"containerName": "s", "resource": "s", "divisor": "q"},
                     "configMapKeyRef": _KEY_REF, "secretKeyRef": _KEY_REF},
    "EnvFromSource": {"prefix": "s", "configMapRef": {"name": "s", "optional": "b"},
                      "secretRef": {"name": "s", "optional": "b"}},
    "ResourceRequirements": {"limits": "{q}", "requests": "{q}", "claims": "[ResourceClaim]"},
    "ResourceClaim": {"name": "s", "request": "s"},
    "ContainerResizePolicy": {"resourceName": "s", "restartPolicy": "s"},
    "VolumeMount": {"name": "s", "readOnly": "b", "recursiveReadOnly": "s", "mountPath": "s", "subPath": "s",
                    "mountPropagation": "s", "subPathExpr": "s"},
    "VolumeDevice": {"name": "s", "devicePath": "s"},
    "Probe": {"exec": "ExecAction", "httpGet": "HTTPGetAction", "tcpSocket": "TCPSocketAction",
              "grpc": {"port": "i", "service": "s"}, "initialDelaySeconds": "i", "timeoutSeconds": "i",
              "periodSeconds": "i", "successThreshold": "i", "failureThreshold": "i",
              "terminationGracePeriodSeconds": "i"},
    "ExecAction": {"command": "[s]"},
    "HTTPGetAction": {"path": "s", "port": "io", "host": "s", "scheme": "s", "httpHeaders": "[HTTPHeader]"},
    "HTTPHeader": {"name": "s", "value": "s"},
    "TCPSocketAction": {"port": "io", "host": "s"},
    "Lifecycle": {"postStart": _HANDLER, "preStop": _HANDLER},
    "SecurityContext": {"capabilities": {"add": "[s]", "drop": "[s]"}, "privileged": "b",
                        "seLinuxOptions": _SE_LINUX, "windowsOptions": _WINDOWS, "runAsUser": "i", "runAsGroup": "i",
                        "runAsNonRoot": "b", "readOnlyRootFilesystem": "b", "allowPrivilegeEscalation": "b",
                        "procMount": "s", "seccompProfile": _PROFILE, "appArmorProfile": _PROFILE},
    "PodSecurityContext": {"seLinuxOptions": _SE_LINUX, "windowsOptions": _WINDOWS, "runAsUser": "i",
                           "runAsGroup": "i", "runAsNonRoot": "b", "supplementalGroups": "[i]",
                           "supplementalGroupsPolicy": "s", "fsGroup": "i", "sysctls": "[HTTPHeader]",
                           "fsGroupChangePolicy": "s", "seccompProfile": _PROFILE, "appArmorProfile": _PROFILE,
                           "seLinuxChangePolicy": "s"},
    "LocalObjectReference": {"name": "s"},
    "Toleration": {"key": "s", "operator": "s", "value": "s", "effect": "s", "tolerationSeconds": "i"},
    "HostAlias": {"ip": "s", "hostnames": "[s]"},
    "PodDNSConfig": {"nameservers": "[s]", "searches": "[s]", "options": "[HTTPHeader]"},
    "PodReadinessGate": {"conditionType": "s"},
    "PodSchedulingGate": {"name": "s"},
    "Volume": {"name": "s", "hostPath": {"path": "s", "type": "s"}, "emptyDir": {"medium": "s", "sizeLimit": "q"},
               "secret": {"secretName": "s", "items": "[KeyToPath]", "defaultMode": "i", "optional": "b"},
               "configMap": {"name": "s", "items": "[KeyToPath]", "defaultMode": "i", "optional": "b"},
               "persistentVolumeClaim": {"claimName": "s", "readOnly": "b"},
               "projected": {"sources": "[*]", "defaultMode": "i"},
               "downwardAPI": {"items": "[*]", "defaultMode": "i"},
               "nfs": {"server": "s", "path": "s", "readOnly": "b"}, "image": {"reference": "s", "pullPolicy": "s"},
               # Volume sources this fake does not model field by field.
               **{source: "*" for source in (
                   "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "iscsi", "glusterfs", "rbd", "flexVolume",
                   "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
                   "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral")}},
    "KeyToPath": {"key": "s", "path": "s", "mode": "i"},
    "PodStatus": {"observedGeneration": "i", "phase": "s", "conditions": "[Condition]", "message": "s",
                  "reason": "s", "nominatedNodeName": "s", "hostIP": "s", "hostIPs": "[PodIP]", "podIP": "s",
                  "podIPs": "[PodIP]", "startTime": "t", "initContainerStatuses": "[ContainerStatus]",
                  "containerStatuses": "[ContainerStatus]", "qosClass": "s",
                  "ephemeralContainerStatuses": "[ContainerStatus]", "resize": "s", "resourceClaimStatuses": "[*]"},
    "PodIP": {"ip": "s"},
    "Condition": _CONDITION,
    "ContainerStatus": {"name": "s", "state": "ContainerState", "lastState": "ContainerState", "ready": "b",
                        "restartCount": "i", "image": "s", "imageID": "s", "containerID": "s", "started": "b",
                        "allocatedResources": "{q}", "resources": "ResourceRequirements", "volumeMounts": "[*]",
                        "user": "*", "allocatedResourcesStatus": "[*]"},
    "ContainerState": {"waiting": {"reason": "s", "message": "s"}, "running": {"startedAt": "t"},
                       "terminated": {"exitCode": "i", "signal": "i", "reason": "s", "message": "s",
                                      "startedAt": "t", "finishedAt": "t", "containerID": "s"}},
    # ---------------------------------------------------------------- apps/v1 Deployment
    "DeploymentSpec": {"replicas": "i", "selector": "LabelSelector", "template": "PodTemplateSpec",
                       "strategy": {"type": "s", "rollingUpdate": {"maxUnavailable": "io", "maxSurge": "io"}},
                       "minReadySeconds": "i", "revisionHistoryLimit": "i", "paused": "b",
                       "progressDeadlineSeconds": "i"},
    "DeploymentStatus": {"observedGeneration": "i", "replicas": "i", "updatedReplicas": "i", "readyReplicas": "i",
                         "availableReplicas": "i", "unavailableReplicas": "i", "terminatingReplicas": "i",
                         "conditions": "[DeploymentCondition]", "collisionCount": "i"},
    "DeploymentCondition": {"type": "s", "status": "s", "lastUpdateTime": "t", "lastTransitionTime": "t",
                            "reason": "s", "message": "s"},
    # ---------------------------------------------------------------- core/v1 Service, Namespace, Event
    "ServiceSpec": {"ports": "[ServicePort]", "selector": "{s}", "clusterIP": "s", "clusterIPs": "[s]", "type": "s",
                    "externalIPs": "[s]", "sessionAffinity": "s", "loadBalancerIP": "s",
                    "loadBalancerSourceRanges": "[s]", "externalName": "s", "externalTrafficPolicy": "s",
                    "healthCheckNodePort": "i", "publishNotReadyAddresses": "b",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "i"}}, "ipFamilies": "[s]",
                    "ipFamilyPolicy": "s", "allocateLoadBalancerNodePorts": "b", "loadBalancerClass": "s",
                    "internalTrafficPolicy": "s", "trafficDistribution": "s"},
    "ServicePort": {"name": "s", "protocol": "s", "appProtocol": "s", "port": "i", "targetPort": "io",
                    "nodePort": "i"},
    "ServiceStatus": {"loadBalancer": {"ingress": "[*]"}, "conditions": "[*]"},
    "ObjectReference": {"kind": "s", "namespace": "s", "name": "s", "uid": "s", "apiVersion": "s",
                        "resourceVersion": "s", "fieldPath": "s"},
    # ---------------------------------------------------------------- batch/v1 Job
    "JobSpec": {"parallelism": "i", "completions": "i", "activeDeadlineSeconds": "i", "podFailurePolicy": "*",
                "successPolicy": "*", "backoffLimit": "i", "backoffLimitPerIndex": "i", "maxFailedIndexes": "i",
                "selector": "LabelSelector", "manualSelector": "b", "template": "PodTemplateSpec",
                "ttlSecondsAfterFinished": "i", "completionMode": "s", "suspend": "b", "podReplacementPolicy": "s",
                "managedBy": "s"},
    "JobStatus": {"conditions": "[Condition]", "startTime": "t", "completionTime": "t", "active": "i",
                  "succeeded": "i", "failed": "i", "terminating": "i", "completedIndexes": "s", "failedIndexes": "s",
                  "uncountedTerminatedPods": {"succeeded": "[s]", "failed": "[s]"}, "ready": "i"},
    # ---------------------------------------------------------------- networking.k8s.io/v1 Ingress
    "IngressSpec": {"ingressClassName": "s", "defaultBackend": "IngressBackend", "tls": "[IngressTLS]",
                    "rules": "[IngressRule]"},
    "IngressBackend": {"service": "IngressServiceBackend", "resource": "TypedLocalObjectReference"},
    "IngressServiceBackend": {"name": "s", "port": "ServiceBackendPort"},
    "ServiceBackendPort": {"name": "s", "number": "i"},
    "TypedLocalObjectReference": {"apiGroup": "s", "kind": "s", "name": "s"},
    "IngressTLS": {"hosts": "[s]", "secretName": "s"},
    "IngressRule": {"host": "s", "http": "HTTPIngressRuleValue"},
    "HTTPIngressRuleValue": {"paths": "[HTTPIngressPath]"},
    "HTTPIngressPath": {"path": "s", "pathType": "s", "backend": "IngressBackend"},
    "IngressStatus": {"loadBalancer": {"ingress": "[IngressLoadBalancerIngress]"}},
    "IngressLoadBalancerIngress": {"ip": "s", "hostname": "s", "ports": "[*]"},
}
_TYPE_META = {"apiVersion": "s", "kind": "s", "metadata": "ObjectMeta"}
# The top-level fields of each served kind, by plural.
KINDS = {
    "deployments": {**_TYPE_META, "spec": "DeploymentSpec", "status": "DeploymentStatus"},
    "services": {**_TYPE_META, "spec": "ServiceSpec", "status": "ServiceStatus"},
    "namespaces": {**_TYPE_META, "spec": {"finalizers": "[s]"}, "status": {"phase": "s", "conditions": "[*]"}},
    "secrets": {**_TYPE_META, "data": "{s}", "stringData": "{s}", "type": "s", "immutable": "b"},
    "jobs": {**_TYPE_META, "spec": "JobSpec", "status": "JobStatus"},
    "ingresses": {**_TYPE_META, "spec": "IngressSpec", "status": "IngressStatus"},
    "pods": {**_TYPE_META, "spec": "PodSpec", "status": "PodStatus"},
    "events": {**_TYPE_META, "involvedObject": "ObjectReference", "reason": "s", "message": "s",
               "source": {"component": "s", "host": "s"}, "firstTimestamp": "t", "lastTimestamp": "t", "count": "i",
               "type": "s", "eventTime": "t", "series": {"count": "i", "lastObservedTime": "t"}, "action": "s",
               "related": "ObjectReference", "reportingComponent": "s", "reportingInstance": "s"},
}
FIELD_VALIDATION = ("", "Ignore", "Strict", "Warn")  # sorted, as the apiserver lists them


def prune_unknown(plural, obj):
    """Drop the fields of ``obj`` (in place) that its kind does not have.  Returns (unknown, quantities):
    the paths of the dropped fields in document order, spelled as the apiserver's strict decoder
    spells them, and the paths of quantity fields whose value no resource.Quantity parses."""
    unknown, quantities = [], []
    _prune(obj, KINDS[plural], "", unknown, quantities)
    return unknown, quantities


def _prune(value, shape, path, unknown, quantities):
    if isinstance(shape, str):
        if shape.startswith("[") and isinstance(value, list):
            for n, item in enumerate(value):
                _prune(item, shape[1:-1], f"{path}[{n}]", unknown, quantities)
        elif shape.startswith("{") and isinstance(value, dict):
            for key, item in value.items():
                _prune(item, shape[1:-1], f"{path}[{key}]", unknown, quantities)
        elif shape in SCHEMA:
            _prune(value, SCHEMA[shape], path, unknown, quantities)
        elif shape == "q" and value is not None and quantity_value(value) is None:
            quantities.append(path)
        return
    if not isinstance(value, dict):  # a type mismatch; not this function's business
        return
    for key in list(value):
        sub = f"{path}.{key}" if path else key
        if key not in shape:
            unknown.append(sub)
            del value[key]
        else:
            _prune(value[key], shape[key], sub, unknown, quantities)


# Go's types of the table's leaves, for the decoder's "cannot unmarshal" errors; integers are int32
# but for these int64 fields.
_GO_LEAVES = {"s": "string", "i": "int32", "b": "bool"}
_INT64_FIELDS = {"generation", "observedGeneration", "activeDeadlineSeconds", "terminationGracePeriodSeconds",
                 "deletionGracePeriodSeconds", "runAsUser", "runAsGroup", "fsGroup", "seconds", "expirationSeconds"}


def _go_type(shape, name):
    if isinstance(shape, dict):
        return "struct"
    if shape in _GO_LEAVES:
        return "int64" if shape == "i" and name in _INT64_FIELDS else _GO_LEAVES[shape]
    if shape.startswith("["):
        return "[]" + _go_type(shape[1:-1], name)
    if shape.startswith("{"):
        return "map[string]" + _go_type(shape[1:-1], name)
    return f"v1.{shape}"


def _go_value(value):
    """How encoding/json names a JSON value it cannot store ("number 1.5" for a fraction)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float) and not value.is_integer():
        return f"number {value}"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "array" if isinstance(value, list) else "object"


def _fits(value, shape):
    """Whether JSON `value` decodes into a field of `shape` (null decodes into anything)."""
    if value is None or shape in ("*", "t", "q"):  # free-form; Time and Quantity parse their own text
        return True
    if isinstance(shape, dict) or shape in SCHEMA or shape.startswith("{"):
        return isinstance(value, dict)
    if shape.startswith("["):
        return isinstance(value, list)
    if shape in ("i", "io") and isinstance(value, float) and not value.is_integer():
        return False
    if shape == "i":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if shape == "io":
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    return isinstance(value, {"s": str, "b": bool}[shape])


def type_error(plural, kind_name, obj):
    """The decoder's error for the first value (in document order) whose JSON type its field cannot
    hold, as encoding/json words it ("json: cannot unmarshal string into Go struct field
    ServiceBackendPort.spec.rules.http.paths.backend.service.port.number of type int32"), or None."""
    found = []

    def walk(value, shape, struct, path):
        if found or value is None:
            return
        if isinstance(shape, str) and shape.startswith(("[", "{")):
            items = enumerate(value) if shape.startswith("[") else value.items()
            for _, item in items:
                check(item, shape[1:-1], struct, path)
            return
        fields = SCHEMA[shape] if isinstance(shape, str) else shape
        name = shape if isinstance(shape, str) else struct
        for key, item in value.items():
            if key in fields:
                check(item, fields[key], name, f"{path}.{key}" if path else key)

    def check(value, shape, struct, path):
        if found:
            return
        if not _fits(value, shape):
            found.append(f"json: cannot unmarshal {_go_value(value)} into Go struct field {struct}.{path} of type "
                         f"{_go_type(shape, path.rpartition('.')[2])}")
        elif isinstance(shape, dict) or shape in SCHEMA or shape[:1] in ("[", "{"):
            walk(value, shape, struct, path)

    walk(obj, KINDS[plural], kind_name, "")
    return found[0] if found else None


# --------------------------------------------------------------------------- labels and annotations
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_MESSAGE = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                      "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                      f"validation is '{_QUALIFIED_NAME}')")
_LABEL_VALUE_MESSAGE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                        "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                        f"'my_value',  or '12345', regex used for validation is '({_QUALIFIED_NAME})?')")
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                      "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                      f"validation is '{_SUBDOMAIN}')")
_MAX_ANNOTATIONS = 256 * 1024  # TotalAnnotationSizeLimitB


def qualified_name_problems(key):
    """validation.IsQualifiedName: a label or annotation key, with its optional DNS-subdomain prefix."""
    parts = key.split("/")
    problems = []
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_MESSAGE} with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                problems.append("prefix part must be no more than 253 characters")
            if not re.fullmatch(_SUBDOMAIN, prefix):
                problems.append(f"prefix part {_SUBDOMAIN_MESSAGE}")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QUALIFIED_NAME, name):
        problems.append(f"name part {_QUALIFIED_MESSAGE}")
    return problems


def label_value_problems(value):
    problems = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not re.fullmatch(f"({_QUALIFIED_NAME})?", value):
        problems.append(_LABEL_VALUE_MESSAGE)
    return problems


def label_errors(labels, path):
    """ValidateLabels: every problem is reported on the map's path, naming the key or value."""
    errors = []
    for key, value in (labels or {}).items() if isinstance(labels, dict) else ():
        errors += [(path, "FieldValueInvalid", f"Invalid value: {json.dumps(key)}: {problem}")
                   for problem in qualified_name_problems(key)]
        value = value if isinstance(value, str) else json.dumps(value)
        errors += [(path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {problem}")
                   for problem in label_value_problems(value)]
    return errors


def annotation_errors(annotations, path):
    """ValidateAnnotations: keys are qualified names (checked lowercased); the total size is bounded."""
    errors, size = [], 0
    for key, value in (annotations or {}).items() if isinstance(annotations, dict) else ():
        errors += [(path, "FieldValueInvalid", f"Invalid value: {json.dumps(key)}: {problem}")
                   for problem in qualified_name_problems(key.lower())]
        size += len(key) + len(str(value))
    if size > _MAX_ANNOTATIONS:
        errors.append((path, "FieldValueTooLong", f"Too long: must have at most {_MAX_ANNOTATIONS} bytes"))
    return errors


def metadata_errors(meta, path="metadata"):
    return label_errors(meta.get("labels"), f"{path}.labels") + annotation_errors(meta.get("annotations"),
                                                                                  f"{path}.annotations")


# --------------------------------------------------------------------------- defaulting
def default_probe(probe):
    """SetDefaults_Probe with SetDefaults_HTTPGetAction and SetDefaults_GRPCAction."""
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")
    if isinstance(probe.get("grpc"), dict):
        probe["grpc"].setdefault("service", "")


def default_container(container):
    """The parts of SetDefaults_Container (and of the types inside it) beyond the pull policy."""
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        default_probe(container.get(key))
    for handler in ((container.get("lifecycle") or {}).get(k) for k in ("postStart", "preStop")):
        if isinstance(handler, dict) and isinstance(handler.get("httpGet"), dict):
            handler["httpGet"].setdefault("path", "/")
            handler["httpGet"].setdefault("scheme", "HTTP")
    for entry in container.get("env") or []:
        field_ref = ((entry or {}).get("valueFrom") or {}).get("fieldRef") if isinstance(entry, dict) else None
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")  # SetDefaults_ObjectFieldSelector


def default_volumes(pod):
    """SetDefaults_SecretVolumeSource / ConfigMapVolumeSource: defaultMode 0644."""
    for volume in pod.get("volumes") or []:
        for source in ("secret", "configMap"):
            if isinstance(volume, dict) and isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 0o644)


# --------------------------------------------------------------------------- containers (ValidateContainers)
QUANTITY = re.compile(r"([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)")
QUANTITY_ERROR = ("quantities must match the regular expression "
                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
_SUFFIXES = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
             "E": 1e18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def quantity_value(text):
    """The number a resource.Quantity string stands for, or None when the apiserver could not parse it."""
    match = QUANTITY.fullmatch(str(text)) if isinstance(text, (str, int, float)) else None
    if not match or match[1].count(".") > 1 or match[1] in (".", "+", "-"):
        return None
    number, suffix = float(match[1]), match[2]
    if suffix in _SUFFIXES:
        return number * _SUFFIXES[suffix]
    if exponent := re.fullmatch(r"[eE]([-+]?[0-9]+)", suffix):
        return number * 10 ** int(exponent[1])
    return None


_PORT_NAME = re.compile(r"[-a-z0-9]+")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _supported(path, value, allowed):
    listed = ", ".join(json.dumps(v) for v in allowed)
    return (path, "FieldValueNotSupported", f"Unsupported value: {json.dumps(value)}: supported values: {listed}")


def port_name_problems(name):
    """validation.IsValidPortName (an IANA_SVC_NAME)."""
    problems = ["must be no more than 15 characters"] if len(name) > 15 else []
    if not _PORT_NAME.fullmatch(name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if not re.search("[a-z]", name):
        problems.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def _port_number_errors(path, port, allow_name):
    if isinstance(port, str) and allow_name:
        return [(path, "FieldValueInvalid", f"Invalid value: {json.dumps(port)}: {problem}")
                for problem in port_name_problems(port)]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return [(path, "FieldValueInvalid", f"Invalid value: {json.dumps(port)}: must be between 1 and 65535, "
                 "inclusive")]
    return []


def probe_errors(probe, path, kind):
    """validateProbe with validateHandler: one handler, non-negative timings, valid ports."""
    if not isinstance(probe, dict):
        return []
    handlers = [h for h in _HANDLERS if probe.get(h) is not None]
    errors = []
    if not handlers:
        errors.append((path, "FieldValueRequired", "Required value: must specify a handler type"))
    for extra in handlers[1:]:
        errors.append((f"{path}.{extra}", "FieldValueForbidden", "Forbidden: may not specify more than 1 handler "
                       "type"))
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        value = probe.get(key)
        if isinstance(value, int) and value < 0:
            errors.append((f"{path}.{key}", "FieldValueInvalid",
                           f"Invalid value: {value}: must be greater than or equal to 0"))
    if kind in ("livenessProbe", "startupProbe") and probe.get("successThreshold", 1) != 1:
        errors.append((f"{path}.successThreshold", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(probe['successThreshold'])}: must be 1"))
    http = probe.get("httpGet")
    if isinstance(http, dict):
        errors += _port_number_errors(f"{path}.httpGet.port", http.get("port"), True)
        if http.get("scheme") not in ("HTTP", "HTTPS"):
            errors.append(_supported(f"{path}.httpGet.scheme", http.get("scheme"), ("HTTP", "HTTPS")))
    if isinstance(probe.get("tcpSocket"), dict):
        errors += _port_number_errors(f"{path}.tcpSocket.port", probe["tcpSocket"].get("port"), True)
    if isinstance(probe.get("grpc"), dict):
        errors += _port_number_errors(f"{path}.grpc.port", probe["grpc"].get("port"), False)
    return errors


def container_errors(container, path):
    """The checks of ValidateContainers beyond name and image, for one (defaulted) container."""
    if not isinstance(container, dict):
        return []
    errors = []
    for n, port in enumerate(container.get("ports") or []):
        where = f"{path}.ports[{n}]"
        if not port.get("containerPort"):
            errors.append((f"{where}.containerPort", "FieldValueRequired", "Required value"))
        else:
            errors += _port_number_errors(f"{where}.containerPort", port["containerPort"], False)
        if port.get("hostPort"):
            errors += _port_number_errors(f"{where}.hostPort", port["hostPort"], False)
        if port.get("protocol") not in _PROTOCOLS:
            errors.append(_supported(f"{where}.protocol", port.get("protocol"), _PROTOCOLS))
        if port.get("name"):
            errors += [(f"{where}.name", "FieldValueInvalid", f"Invalid value: {json.dumps(port['name'])}: {p}")
                       for p in port_name_problems(port["name"])]
    for n, entry in enumerate(container.get("env") or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}.env[{n}].name"
        if not name:
            errors.append((where, "FieldValueRequired", "Required value"))
        elif any(ord(ch) > 126 or ord(ch) < 32 or ch == "=" for ch in name):
            # IsRelaxedEnvVarName: RelaxedEnvironmentVariableValidation is on by default in 1.32.
            errors.append((where, "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: a valid environment "
                           "variable name must consist only of printable ASCII characters other than '='"))
        if isinstance(entry, dict) and entry.get("value") and entry.get("valueFrom"):
            errors.append((f"{path}.env[{n}].valueFrom", "FieldValueInvalid", "Invalid value: \"\": may not be "
                           "specified when `value` is not empty"))
    if container.get("imagePullPolicy") not in _PULL_POLICIES:
        errors.append(_supported(f"{path}.imagePullPolicy", container.get("imagePullPolicy"), _PULL_POLICIES))
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        errors += probe_errors(container.get(kind), f"{path}.{kind}", kind)
    resources = container.get("resources") if isinstance(container.get("resources"), dict) else {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for part, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            amount = quantity_value(value)
            if amount is not None and amount < 0:
                errors.append((f"{path}.resources.{part}[{name}]", "FieldValueInvalid",
                               f"Invalid value: {json.dumps(str(value))}: must be greater than or equal to 0"))
    for name, value in requests.items():
        limit = limits.get(name)
        if limit is not None and (quantity_value(value) or 0) > (quantity_value(limit) or 0):
            errors.append((f"{path}.resources.requests", "FieldValueInvalid", f"Invalid value: "
                           f"{json.dumps(str(value))}: must be less than or equal to {name} limit of {limit}"))
    return errors


# --------------------------------------------------------------------------- networking/v1 Ingress (ValidateIngress)
_WILDCARD = r"\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_WILDCARD_MESSAGE = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which "
                     "must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric "
                     f"character (e.g. '*.example.com', regex used for validation is '{_WILDCARD}')")
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_MESSAGE = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                    f"regex used for validation is '{_DNS1035}')")
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")


def _invalid(path, value, message):
    return (path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {message}")


def _subdomain_problems(name, wildcard=False):
    """IsDNS1123Subdomain, or IsWildcardDNS1123Subdomain for a name with a '*'."""
    pattern, message = (_WILDCARD, _WILDCARD_MESSAGE) if wildcard else (_SUBDOMAIN, _SUBDOMAIN_MESSAGE)
    problems = ["must be no more than 253 characters"] if len(name) > 253 else []
    if not re.fullmatch(pattern, name):
        problems.append(message)
    return problems


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _backend_errors(backend, path):
    """validateIngressBackend: a service (named, with a port name or number) or a resource."""
    backend = backend if isinstance(backend, dict) else {}
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [_invalid(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        errors = []
        if not resource.get("kind"):
            errors.append((f"{path}.resource.kind", "FieldValueRequired", "Required value"))
        if not resource.get("name"):
            errors.append((f"{path}.resource.name", "FieldValueRequired", "Required value"))
        return errors
    if service is None:
        return [_invalid(path, "", "resource or service backend is required")]
    errors, name = [], service.get("name") or ""
    if not name:
        errors.append((f"{path}.service.name", "FieldValueRequired", "Required value"))
    else:
        if len(name) > 63:
            errors.append(_invalid(f"{path}.service.name", name, "must be no more than 63 characters"))
        if not re.fullmatch(_DNS1035, name):
            errors.append(_invalid(f"{path}.service.name", name, _DNS1035_MESSAGE))
    port = service.get("port") or {}
    port_name, number = port.get("name") or "", port.get("number") or 0
    if port_name and number:
        errors.append(_invalid(path, "", "cannot set both port name & port number"))
    elif port_name:
        errors += [_invalid(f"{path}.service.port.name", port_name, p) for p in port_name_problems(port_name)]
    elif number:
        if not 1 <= number <= 65535:
            errors.append(_invalid(f"{path}.service.port.number", number, "must be between 1 and 65535, inclusive"))
    else:
        errors.append((path, "FieldValueRequired", "Required value: port name or number is required"))
    return errors


def _path_errors(item, path):
    """validateHTTPIngressPath: a supported pathType, an absolute and clean path, a backend."""
    item = item if isinstance(item, dict) else {}
    path_type, text = item.get("pathType"), item.get("path") or ""
    if path_type is None:
        return [(f"{path}.pathType", "FieldValueRequired", "Required value: pathType must be specified")]
    errors = []
    if path_type in ("Exact", "Prefix"):
        if not text.startswith("/"):
            errors.append(_invalid(f"{path}.path", text, "must be an absolute path"))
        errors += [_invalid(f"{path}.path", text, f"must not contain '{seq}'")
                   for seq in _INVALID_PATH_SEQUENCES if seq in text]
        errors += [_invalid(f"{path}.path", text, f"cannot end with '{suffix}'")
                   for suffix in _INVALID_PATH_SUFFIXES if text.endswith(suffix)]
    elif path_type == "ImplementationSpecific":
        if text and not text.startswith("/"):
            errors.append(_invalid(f"{path}.path", text, "must be an absolute path"))
    else:
        errors.append(_supported(f"{path}.pathType", path_type, PATH_TYPES))
    return errors + _backend_errors(item.get("backend"), f"{path}.backend")


def ingress_errors(obj):
    """ValidateIngress (networking/v1): rules or a default backend; hosts that are DNS names, not
    addresses; paths with a pathType; service backends with a port; TLS hosts and Secret names."""
    spec = obj.get("spec") or {}
    rules, errors = spec.get("rules") or [], []
    if not rules and spec.get("defaultBackend") is None:
        errors.append(_invalid("spec", None, "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend") is not None:
        errors += _backend_errors(spec["defaultBackend"], "spec.defaultBackend")
    for n, rule in enumerate(rules):
        rule = rule if isinstance(rule, dict) else {}
        host, where = rule.get("host") or "", f"spec.rules[{n}]"
        if host:
            if _is_ip(host):
                errors.append(_invalid(f"{where}.host", host, "must be a DNS name, not an IP address"))
            errors += [_invalid(f"{where}.host", host, p) for p in _subdomain_problems(host, "*" in host)]
        http = rule.get("http")
        if http is not None:
            paths = http.get("paths") or []
            if not paths:
                errors.append((f"{where}.http.paths", "FieldValueRequired", "Required value"))
            for i, item in enumerate(paths):
                errors += _path_errors(item, f"{where}.http.paths[{i}]")
    for n, tls in enumerate(spec.get("tls") or []):
        tls = tls if isinstance(tls, dict) else {}
        for i, host in enumerate(tls.get("hosts") or []):
            errors += [_invalid(f"spec.tls[{n}].hosts[{i}]", host, p) for p in _subdomain_problems(host, "*" in host)]
        secret = tls.get("secretName") or ""
        if secret:
            errors += [_invalid(f"spec.tls[{n}].secretName", secret, p) for p in _subdomain_problems(secret)]
    if spec.get("ingressClassName") is not None:
        errors += [_invalid("spec.ingressClassName", spec["ingressClassName"], p)
                   for p in _subdomain_problems(spec["ingressClassName"])]
    return errors
