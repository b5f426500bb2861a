"""A contract-faithful fake Kubernetes API server for Norn's tests.

Norn drives clusters through the official ``kubernetes`` Python client and the
``kubectl`` binary.  Mocking either of them would test our assumptions about
the API rather than the API, so this module serves the real HTTP contract on
127.0.0.1 instead: discovery (plus the sliver of OpenAPI v3 kubectl insists
on), apps/v1 Deployments with their status and scale subresources, core/v1
Services, Namespaces and Secrets, networking.k8s.io/v1 Ingresses (stored and
validated; nothing routes by them), batch/v1 Jobs whose Pods really run on the local
Docker engine (tests/support/fake_jobs.py), the three PATCH flavours and server-side
apply with managedFields (tests/support/fake_kube_apply.py), watches, real
``Status`` errors, and a simulated deployment controller that rolls pods out (or
fails to) over time.  Both clients therefore run their real code paths against it.

    with FakeKubernetes(time_scale=0.01) as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        kube.load_image("registry.local/web:v1")  # else its pods fail to pull it, as on a real cluster
        ...  # kubectl --kubeconfig / kubernetes.config.load_kube_config(config_file=...)
        kube.fail_next("PATCH", r"/deployments/web$", status_code=500)
        assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"

It listens with TLS by default, because kubectl only sends kubeconfig
credentials over TLS; the kubeconfig embeds the throwaway CA.  Behaviour was
written from the real apiserver (messages, reasons, defaults and ``omitempty``
fields mirror it).  Like the real one it says no: unknown fields are dropped and,
per ``fieldValidation``, refused (Strict, kubectl's default), warned about in
``Warning`` headers (Warn, the default without the parameter) or ignored, against
the schema table in tests/support/fake_kube_schema.py, and a value of the wrong JSON type
(a string for an integer) is a 400 as encoding/json words it; names (DNS-1123 subdomain,
DNS-1035 label for Services, DNS-1123 label for Namespaces), label keys and values
and annotation keys, container ports, env names, pull policies, probes, resource
requests/limits and Ingress rules, paths and backends get 422s with ``details.causes``;
probes, pod specs, strategies and Services are defaulted; ``generation`` follows the spec (pod template included);
a paused Deployment's Progressing condition says DeploymentPaused.  By default (``pods=True``),
Deployments get ReplicaSets and simulated pods that can fail to pull (any image neither
``load_image``-ed nor in the registry at ``registry_url``), crash-loop, fail readiness or be
refused by PodSecurity, and `kubectl get` of Deployments, ReplicaSets, Pods and Ingresses receives
Table output (tests/support/fake_kube_controller.py; ``time_scale`` shortens minReadySeconds, probe
periods and back-offs).  So a test passes against it only if what it deploys could run.
``pods=False`` is kept for the tests of the older pod-count simulation alone
(tests/test_fake_kubernetes.py): Deployments roll out by counts, steered by
``set_rollout_mode(name, "stuck"|"manual")``, ``advance()`` and ``failing_images``.
Server-side apply with field ownership is in tests/support/fake_kube_apply.py.
Not covered: no duplicate-field detection, no checks inside timestamps or free-form
(``*``) fields, and no Table rendering of other kinds (kubectl falls back to NAME/AGE
columns).
"""
from __future__ import annotations

import base64
import copy
import datetime
import functools
import hashlib
import http.server
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import uuid
import yaml
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from tests.support import fake_jobs
from tests.support import fake_kube_apply
from tests.support import fake_kube_controller
from tests.support import fake_kube_schema as schema

SERVER_VERSION = "v1.32.4"
ROLLOUT_MODES = ("complete", "stuck", "manual")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}
_TRUE = {"1", "t", "true"}  # Go's strconv.ParseBool, which the apiserver uses for ?watch=


@dataclass(frozen=True)
class _Kind:
    plural: str
    kind: str
    group: str
    namespaced: bool
    short_names: tuple
    has_generation: bool  # Services, Namespaces and Secrets carry no metadata.generation
    has_status: bool = True  # Secrets have neither a status stanza nor a /status subresource
    categories: tuple = ()   # discovery categories: "all" is what `kubectl get all` lists

    @property
    def api_version(self):
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self):  # the "deployments.apps" spelling used in error messages
        return f"{self.plural}.{self.group}" if self.group else self.plural


_KINDS = {k.plural: k for k in (
    _Kind("deployments", "Deployment", "apps", True, ("deploy",), True, categories=("all",)),
    _Kind("services", "Service", "", True, ("svc",), False, categories=("all",)),
    _Kind("namespaces", "Namespace", "", False, ("ns",), False),
    _Kind("secrets", "Secret", "", True, (), False, has_status=False),  # no shortName, not in "all"
    # Jobs, the pods they create and the kubelet's events: tests/support/fake_jobs.py.
    _Kind("jobs", "Job", "batch", True, (), True, categories=("all",)),
    _Kind("pods", "Pod", "", True, ("po",), False, categories=("all",)),
    _Kind("events", "Event", "", True, ("ev",), False, has_status=False),
    # ReplicaSets and the Deployments' pods: tests/support/fake_kube_controller.py (pods=True).
    _Kind("replicasets", "ReplicaSet", "apps", True, ("rs",), True, categories=("all",)),
    # Compute quotas the pod controller enforces: tests/support/fake_kube_controller.py.
    _Kind("resourcequotas", "ResourceQuota", "", True, ("quota",), False),
    # Validated as ValidateIngress does (fake_kube_schema.ingress_errors); nothing routes traffic by them.
    _Kind("ingresses", "Ingress", "networking.k8s.io", True, ("ing",), True),
)}
# The API groups served besides the core group, in discovery order.
_GROUPS = ("apps", "batch", "networking.k8s.io")

# Strategic merge patch merge keys (the Go structs' patchMergeKey tags), by
# path of dict keys with list levels left out.  Lists not named here are
# atomic and replaced wholesale, as the real patch strategy does.
_POD = "spec.template.spec"
_MERGE_KEYS = {"metadata.ownerReferences": "uid", "status.conditions": "type", "spec.ports": "port"}
for _c in ("containers", "initContainers"):
    _MERGE_KEYS.update({f"{_POD}.{_c}": "name", f"{_POD}.{_c}.env": "name",
                        f"{_POD}.{_c}.ports": "containerPort", f"{_POD}.{_c}.volumeMounts": "mountPath"})
_MERGE_KEYS.update({f"{_POD}.volumes": "name", f"{_POD}.imagePullSecrets": "name"})
_PRIMITIVE_MERGE_LISTS = {"metadata.finalizers"}  # patchStrategy=merge on a list of strings

_RFC1123_SUBDOMAIN = (r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", 253,
                      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                      "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                      "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_RFC1123_LABEL = (r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", 63,
                  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                  "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_RFC1035_LABEL = (r"[a-z]([-a-z0-9]*[a-z0-9])?", 63,
                  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                  "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                  "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
_NAME_RULES = {"deployments": _RFC1123_SUBDOMAIN, "services": _RFC1035_LABEL, "namespaces": _RFC1123_LABEL,
               "secrets": _RFC1123_SUBDOMAIN, "pods": _RFC1123_SUBDOMAIN, "events": _RFC1123_SUBDOMAIN,
               "replicasets": _RFC1123_SUBDOMAIN, "ingresses": _RFC1123_SUBDOMAIN,
               # A Job's name becomes the value of its pods' job-name label, so it is held to 63 bytes.
               "jobs": (_RFC1123_SUBDOMAIN[0], 63, _RFC1123_SUBDOMAIN[2])}


class KubeApiError(Exception):
    """An API failure; ``status`` is the ``Status`` object sent to the client."""

    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason or _REASONS.get(code, "Unknown")}
        if details is not None:  # e.g. a bare 401 carries no details on the real apiserver
            self.status["details"] = details
        self.status["code"] = code

    @property
    def code(self):
        return self.status["code"]


def _details(kind, name, **extra):
    details = {"name": name, "kind": kind.plural, **extra}
    if kind.group:
        details["group"] = kind.group
    return details


def _not_found(kind, name):
    return KubeApiError(404, f'{kind.qualified} "{name}" not found', details=_details(kind, name))


def _no_route():
    return KubeApiError(404, "the server could not find the requested resource", details={})


def _bad_request(message):
    return KubeApiError(400, message)


def _invalid(kind, name, errors):
    """422 in the apiserver's field.ErrorList format; ``errors`` holds (field, reason, message) triples."""
    causes = [{"reason": r, "message": m, "field": f} for f, r, m in errors]
    summary = [f"{f}: {m}" for f, _, m in errors]
    text = summary[0] if len(summary) == 1 else "[" + ", ".join(summary) + "]"
    # Unlike NotFound and friends, an Invalid status names the Kind (kubectl prints 'The Service "x" is invalid').
    details = {**_details(kind, name, causes=causes), "kind": kind.kind}
    return KubeApiError(422, f'{kind.kind}{"." + kind.group if kind.group else ""} "{name}" is invalid: {text}',
                        details=details)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_bool(value):
    return str(value).lower() in _TRUE


def _number(query, name, default=0):
    try:
        return float(query.get(name) or default)
    except ValueError:
        raise _bad_request(f"invalid value for {name}: {query[name]!r}") from None


# --------------------------------------------------------------------------- selectors
def _split_requirements(text):
    parts, depth, current = [], 0, ""
    for ch in text:  # commas inside "in (a,b)" do not separate requirements
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in parts + [current] if p.strip()]


def _label_selector(text):
    """Compile a labelSelector query string into a predicate over a labels dict."""
    checks = []
    for req in _split_requirements(text or ""):
        if m := re.fullmatch(r"(!?)\s*([\w./-]+)", req):
            checks.append(lambda l, neg=m[1], k=m[2]: (k in l) != bool(neg))
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", req):
            checks.append(lambda l, k=m[1], op=m[2], v=m[3]: (l.get(k) == v) != (op == "!="))
        elif m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)", req, re.I):
            values = {v.strip() for v in m[3].split(",")}
            checks.append(lambda l, k=m[1], op=m[2].lower(), vs=values: (l.get(k) in vs) == (op == "in")
                          if k in l else op == "notin")
        else:
            raise _bad_request(f"unable to parse requirement: {req!r}")
    return lambda labels: all(check(labels or {}) for check in checks)


def _field_selector(text):
    checks = []
    for req in _split_requirements(text or ""):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{req}'")
        if m[1] not in ("metadata.name", "metadata.namespace") and not m[1].startswith("involvedObject."):
            raise _bad_request(f'field label not supported: {m[1]}')
        section, attr = m[1].split(".", 1)  # involvedObject.* is served for events (kubectl describe)
        checks.append(lambda o, s=section, a=attr, op=m[2], v=m[3]: (str((o.get(s) or {}).get(a, "")) == v)
                      != (op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def _selector_matches(selector, labels):
    """Match a Deployment's LabelSelector object (matchLabels/matchExpressions)."""
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------- patches
def _strategic_merge(original, patch, path=""):
    """Apply a strategic merge patch (k8s.io/apimachinery strategicpatch) to a dict."""
    if not isinstance(patch, dict):
        raise _bad_request("strategic merge patch must be a JSON object")
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = _strategic_merge(result.get(key), value, sub)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        name = key.partition("/")[2]
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(result.get(name), list):
            result[name] = [v for v in result[name] if v not in value]
        elif key.startswith("$setElementOrder/") and isinstance(result.get(name), list):
            merge_key = _MERGE_KEYS.get(f"{path}.{name}" if path else name)
            ident = (lambda i: i.get(merge_key) if isinstance(i, dict) else i) if merge_key else (lambda i: i)
            wanted = [ident(i) for i in value]
            # Listed elements take the requested order; unlisted ones keep their relative order after them.
            result[name] = sorted(result[name], key=lambda i: wanted.index(ident(i)) if ident(i) in wanted
                                  else len(wanted))
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_list(original, patch, path):
    directives = [i for i in patch if isinstance(i, dict) and "$patch" in i and len(i) == 1]
    items = [i for i in patch if i not in directives]
    merge_key = _MERGE_KEYS.get(path)
    if any(d["$patch"] == "replace" for d in directives):
        return copy.deepcopy(items)
    if path in _PRIMITIVE_MERGE_LISTS:
        base = list(original or [])
        return base + [i for i in items if i not in base]
    if merge_key is None:
        return copy.deepcopy(items)
    result = copy.deepcopy(original) if isinstance(original, list) else []
    for item in items:
        if not isinstance(item, dict) or merge_key not in item:
            raise _bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next((n for n, cur in enumerate(result) if cur.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strategic_merge({}, item, path))
        else:
            result[index] = _strategic_merge(result[index], item, path)
    return result


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(doc, operations):
    """RFC 6902 JSON patch; failures are 422s, as the apiserver reports them."""
    if not isinstance(operations, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")

    def parse(pointer):
        if pointer is None or (pointer and not pointer.startswith("/")):
            raise _bad_request(f"invalid JSON pointer: {pointer!r}")
        return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]

    def fail(message):
        raise KubeApiError(422, message)

    def locate(root, parts):  # the container holding the last path element
        node = root
        for part in parts[:-1]:
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                fail(f"doc is missing path: \"/{'/'.join(parts)}\": missing value")
        return node, parts[-1]

    def get(root, parts):
        if not parts:
            return root
        node, last = locate(root, parts)
        try:
            return node[int(last)] if isinstance(node, list) else node[last]
        except (KeyError, IndexError, ValueError, TypeError):
            fail(f"doc is missing path: \"/{'/'.join(parts)}\": missing value")

    def remove(root, parts):
        value = get(root, parts)
        node, last = locate(root, parts)
        del node[int(last) if isinstance(node, list) else last]
        return value

    def add(root, parts, value):
        if not parts:
            return value
        node, last = locate(root, parts)
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= index <= len(node):
                fail(f"add operation does not apply: doc is missing path: \"/{'/'.join(parts)}\"")
            node.insert(index, value)
        elif isinstance(node, dict):
            node[last] = value
        else:
            fail(f"add operation does not apply: doc is missing path: \"/{'/'.join(parts)}\"")
        return root

    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _bad_request(f"Unexpected kind: {op.get('op') if isinstance(op, dict) else op}")
        parts = parse(op.get("path"))
        kind = op["op"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _bad_request(f"missing value for {kind} operation")
        if kind == "add":
            doc = add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(doc, parts)
        elif kind == "replace":
            remove(doc, parts) if parts else None
            doc = add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "test":
            if get(doc, parts) != op["value"]:
                fail(f"testing value {op['path']} failed: test failed")
        else:  # move / copy
            source = parse(op.get("from"))
            value = remove(doc, source) if kind == "move" else copy.deepcopy(get(doc, source))
            doc = add(doc, parts, value)
    return doc


# --------------------------------------------------------------------------- protobuf request bodies
# kubectl's typed clients (`kubectl create namespace|deployment|service|secret ...`) POST protobuf,
# which every real apiserver accepts.  This decodes the fields those generators can send; a body
# using anything else is refused with a 415 naming the field rather than being half understood.
# Field number -> (JSON name, type): a message name, "str", "int", "bool", "bytes", "map"
# (string map), "bytesmap" (string -> bytes map, which JSON spells as base64 strings), "intstr"
# or "skip"; a "*" prefix means repeated, "?" a pointer whose zero is kept.
_PROTO = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "bytes")},
    "TypeMeta": {1: ("apiVersion", "str"), 2: ("kind", "str")},
    "MapEntry": {1: ("key", "str"), 2: ("value", "str")},
    "BytesMapEntry": {1: ("key", "str"), 2: ("value", "bytes")},
    "IntOrString": {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "str")},
    "ObjectMeta": {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 11: ("labels", "map"),
                   12: ("annotations", "map"), 14: ("finalizers", "*str")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("status", "skip")},
    "NamespaceSpec": {1: ("finalizers", "*str")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec"), 3: ("status", "skip")},
    "DeploymentSpec": {1: ("replicas", "?int"), 2: ("selector", "LabelSelector"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", "int"),
                       6: ("revisionHistoryLimit", "?int"), 7: ("paused", "bool"),
                       9: ("progressDeadlineSeconds", "?int")},
    "DeploymentStrategy": {1: ("type", "str"), 2: ("rollingUpdate", "RollingUpdate")},
    "RollingUpdate": {1: ("maxUnavailable", "intstr"), 2: ("maxSurge", "intstr")},
    "LabelSelector": {1: ("matchLabels", "map"), 2: ("matchExpressions", "*Requirement")},
    "Requirement": {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "*str")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "*Container"), 3: ("restartPolicy", "str"),
                4: ("terminationGracePeriodSeconds", "?int"), 6: ("dnsPolicy", "str"),
                8: ("serviceAccountName", "str")},
    "Container": {1: ("name", "str"), 2: ("image", "str"), 3: ("command", "*str"), 4: ("args", "*str"),
                  5: ("workingDir", "str"), 6: ("ports", "*ContainerPort"), 7: ("env", "*EnvVar"),
                  14: ("imagePullPolicy", "str")},
    "ContainerPort": {1: ("name", "str"), 2: ("hostPort", "int"), 3: ("containerPort", "int"), 4: ("protocol", "str")},
    "EnvVar": {1: ("name", "str"), 2: ("value", "str")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "skip")},
    "ServiceSpec": {1: ("ports", "*ServicePort"), 2: ("selector", "map"), 3: ("clusterIP", "str"), 4: ("type", "str"),
                    5: ("externalIPs", "*str"), 7: ("sessionAffinity", "str"), 10: ("externalName", "str")},
    "ServicePort": {1: ("name", "str"), 2: ("protocol", "str"), 3: ("port", "int"), 4: ("targetPort", "intstr"),
                    5: ("nodePort", "int")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bytesmap"), 3: ("type", "str"), 4: ("stringData", "map"),
               5: ("immutable", "?bool")},
}


def _proto_message(data, message):
    schema, out, pos = _PROTO[message], {}, 0

    def varint():
        nonlocal pos
        result = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            result, shift = result | (byte & 0x7F) << shift, shift + 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ValueError(f"unexpected wire type {wire} in {message}")
        if number not in schema:
            if value in (0, b""):  # gogo-protobuf writes every non-pointer field, even when empty
                continue
            raise ValueError(f"unsupported field {number} of {message}")
        name, kind = schema[number]
        repeated, pointer, kind = kind[:1] == "*", kind[:1] == "?", kind.lstrip("*?")
        if (wire == 0) != (kind in ("int", "bool")):
            raise ValueError(f"field {name} of {message} has wire type {wire}")
        if kind == "skip":
            continue
        if kind == "map":
            entry = _proto_message(value, "MapEntry")
            out.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
            continue
        if kind == "bytesmap":  # e.g. Secret.data: raw bytes on this wire, base64 in the JSON we store
            entry = _proto_message(value, "BytesMapEntry")
            out.setdefault(name, {})[entry.get("key", "")] = base64.b64encode(entry.get("value", b"")).decode()
            continue
        if kind == "int":
            value = value - (1 << 64) if value >= 1 << 63 else value  # negative int32s are 10-byte varints
        elif kind == "bool":
            value = bool(value)
        elif kind == "str":
            value = value.decode()
        elif kind == "intstr":
            parsed = _proto_message(value, "IntOrString")
            value = parsed.get("strVal", "") if parsed.get("type") else parsed.get("intVal", 0)
        elif kind != "bytes":
            value = _proto_message(value, kind)
        if repeated:
            out.setdefault(name, []).append(value)
        elif pointer or value not in ("", 0, {}):  # zero values vanish, as JSON's omitempty does
            out[name] = value
    return out


def _decode_body(raw, content_type):
    """(body, error): the parsed request body, or the KubeApiError the apiserver would send."""
    if not raw:
        return None, None
    if content_type == "application/vnd.kubernetes.protobuf":
        try:
            if raw[:4] != b"k8s\x00":
                raise ValueError("missing k8s protobuf envelope")
            envelope = _proto_message(raw[4:], "Unknown")
            type_meta = envelope.get("typeMeta", {})
            if type_meta.get("kind") not in ("Deployment", "Service", "Namespace", "Secret"):
                raise ValueError(f"kind {type_meta.get('kind')!r}")
            return {**type_meta, **_proto_message(envelope.get("raw", b""), type_meta["kind"])}, None
        except (ValueError, IndexError, KeyError) as exc:
            return raw, KubeApiError(415, f"FakeKubernetes cannot decode this protobuf body ({exc}); send JSON")
    if content_type == fake_kube_apply.APPLY_CONTENT_TYPE:  # server-side apply: YAML (or JSON, which is YAML)
        try:
            return yaml.safe_load(raw), None
        except yaml.YAMLError as exc:
            return raw.decode(errors="replace"), _bad_request(f"error decoding YAML: {exc}")
    if content_type and "json" not in content_type:  # no Content-Type means JSON to the apiserver
        return raw, KubeApiError(415, "the body of the request was in an unknown format - accepted media types "
                                 "include: application/json, application/vnd.kubernetes.protobuf")
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return raw.decode(errors="replace"), _bad_request(f"error decoding request body: {exc}")


# --------------------------------------------------------------------------- defaults & validation
def _int_or_percent(value, total, round_up):
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def _rolling_params(spec, desired):
    """(maxSurge, maxUnavailable) in pods, resolved like deploymentutil.ResolveFenceposts."""
    ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = _int_or_percent(ru.get("maxSurge", "25%"), desired, True)
    unavailable = _int_or_percent(ru.get("maxUnavailable", "25%"), desired, False)
    return (surge, unavailable) if surge or unavailable else (0, 1)


def _default_deployment(obj):
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
        strategy["rollingUpdate"].setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    _default_pod_spec(template.setdefault("spec", {}))


def _default_pod_spec(pod):
    """SetDefaults_PodSpec and SetDefaults_Container, as far as this fake goes."""
    for key, value in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                       ("dnsPolicy", "ClusterFirst"), ("securityContext", {}),
                       ("schedulerName", "default-scheduler")):
        pod.setdefault(key, value)
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        tag = image.rpartition("/")[2].partition(":")[2]
        # Same rule as the apiserver: untagged or ":latest" images are always pulled.
        container.setdefault("imagePullPolicy", "Always" if "@" not in image and tag in ("", "latest")
                             else "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        schema.default_container(container)
    schema.default_volumes(pod)


def _name_errors(kind, name, path="metadata.name", detail_required="name or generateName is required"):
    if not name:
        return [(path, "FieldValueRequired", f"Required value: {detail_required}" if detail_required
                 else "Required value")]
    pattern, limit, message = _NAME_RULES.get(kind, _RFC1123_LABEL)
    errors = []
    if len(name) > limit:  # IsDNS1123Subdomain & co report length as one more Invalid message
        errors.append((path, "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: must be no more than "
                       f"{limit} characters"))
    if not re.fullmatch(pattern, name):
        errors.append((path, "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: {message}"))
    return errors


def _validate_deployment(obj, old):
    spec = obj.get("spec") or {}
    errors = []
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        errors.append(("spec.replicas", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0"))
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    errors += schema.metadata_errors((spec.get("template") or {}).get("metadata") or {}, "spec.template.metadata")
    if selector:
        errors += schema.label_errors(selector.get("matchLabels"), "spec.selector.matchLabels")
    if not selector:
        errors.append(("spec.selector", "FieldValueRequired", "Required value"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(("spec.selector", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(selector)}: empty selector is invalid for deployment"))
    elif not _selector_matches(selector, labels):
        errors.append(("spec.template.metadata.labels", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        errors.append(("spec.selector", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(selector)}: field is immutable"))
    if (spec.get("strategy") or {}).get("type") not in ("RollingUpdate", "Recreate"):
        errors.append(("spec.strategy.type", "FieldValueNotSupported",
                       f'Unsupported value: {json.dumps(spec["strategy"].get("type"))}: '
                       'supported values: "Recreate", "RollingUpdate"'))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        errors.append((f"{_POD}.containers", "FieldValueRequired", "Required value"))
    seen = set()
    for n, container in enumerate(containers or []):
        base = f"{_POD}.containers[{n}]"
        name = container.get("name") if isinstance(container, dict) else None
        errors += _name_errors("containers", name, f"{base}.name", None)
        if name in seen:
            errors.append((f"{base}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}"))
        seen.add(name)
        if not (isinstance(container, dict) and container.get("image")):
            errors.append((f"{base}.image", "FieldValueRequired", "Required value"))
        errors += schema.container_errors(container, base)
    return errors


def _validate_service(obj, old):
    spec = obj.get("spec") or {}
    errors, ports = schema.label_errors(spec.get("selector"), "spec.selector"), spec.get("ports") or []
    if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(("spec.type", "FieldValueNotSupported", f'Unsupported value: {json.dumps(spec.get("type"))}: '
                       'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'))
    if not ports and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
        errors.append(("spec.ports", "FieldValueRequired", "Required value"))
    for n, port in enumerate(ports):
        if len(ports) > 1 and not port.get("name"):
            errors.append((f"spec.ports[{n}].name", "FieldValueRequired", "Required value"))
        if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
            errors.append((f"spec.ports[{n}].port", "FieldValueInvalid",
                           f'Invalid value: {json.dumps(port.get("port"))}: must be between 1 and 65535, inclusive'))
    return errors


# Secrets: what the v1 -> internal conversion, SetDefaults_Secret and ValidateSecret(Update) do.
_MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize, summed over the decoded data values
_CONFIG_KEY = (r"[-._a-zA-Z0-9]+", "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
               "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
# Keys the built-in Secret types must carry; like the apiserver, only their presence is checked here
# (the real one also parses the two docker configs as JSON, which this fake does not).
_SECRET_REQUIRED_KEYS = {"kubernetes.io/tls": ("tls.crt", "tls.key"),
                         "kubernetes.io/dockercfg": (".dockercfg",),
                         "kubernetes.io/dockerconfigjson": (".dockerconfigjson",)}
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _go_json_type(value):
    """How encoding/json names a JSON value's type in its "cannot unmarshal" errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "array" if isinstance(value, list) else "object"


def _base64_error(text):
    """The byte offset at which Go's base64.StdEncoding (encoding/json's []byte decoder) rejects
    ``text``, or None if it decodes.  Python's decoder either refuses the CR/LF that Go skips
    (validate=True) or silently drops any junk (the default), and names no offset, while the
    offset is part of the message clients see."""
    src, si = text.encode(), 0
    while si < len(src):
        j = 0  # sextets of the current 4-character quantum
        while j < 4:
            if si == len(src):
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _BASE64_ALPHABET:
                j += 1
            elif c not in b"\r\n":
                if c != ord("=") or j < 2:
                    return si - 1
                if j == 2:  # a second "=" must follow
                    while si < len(src) and src[si] in b"\r\n":
                        si += 1
                    if si == len(src):
                        return si
                    if src[si] != ord("="):
                        return si - 1
                    si += 1
                while si < len(src) and src[si] in b"\r\n":
                    si += 1
                return si if si < len(src) else None  # anything after the padding is garbage
    return None


def _convert_secret(obj):
    """Decode a v1 Secret as the apiserver does, before defaulting and validation.

    ``data`` values must be base64 (a 400 otherwise, raised while decoding, so before any other
    check) and are stored re-encoded canonically.  ``stringData`` is a write-only convenience:
    the v1 -> internal conversion folds it into ``data``, winning on shared keys, and the
    internal type has no such field, so it is never stored or returned.
    """
    def undecodable(detail):
        return _bad_request(f'Secret in version "v1" cannot be handled as a Secret: {detail}')

    data, string_data = obj.pop("data", None), obj.pop("stringData", None)
    for name, value, go_type in (("data", data, "map[string][]uint8"), ("stringData", string_data,
                                                                          "map[string]string")):
        if value is not None and not isinstance(value, dict):
            raise undecodable(f"json: cannot unmarshal {_go_json_type(value)} into Go struct field Secret.{name} "
                              f"of type {go_type}")
    decoded = {}
    for key, value in (data or {}).items():
        if value is None:  # null is a nil []byte: the key stays, with no bytes
            value = ""
        if not isinstance(value, str):
            raise undecodable(f"json: cannot unmarshal {_go_json_type(value)} into Go struct field Secret.data of "
                              "type []uint8")
        if (offset := _base64_error(value)) is not None:
            raise undecodable(f"illegal base64 data at input byte {offset}")
        decoded[key] = base64.b64decode(value.replace("\r", "").replace("\n", ""))
    for key, value in (string_data or {}).items():
        if not isinstance(value, str):
            raise undecodable(f"json: cannot unmarshal {_go_json_type(value)} into Go struct field "
                              "Secret.stringData of type string")
        decoded[key] = value.encode()
    if decoded:  # an empty map is omitted from the stored (and returned) object, as omitempty does
        obj["data"] = {key: base64.b64encode(value).decode() for key, value in decoded.items()}


def _validate_secret(obj, old):
    """ValidateSecretUpdate's checks (when ``old``) followed by ValidateSecret's, in their order."""
    errors, data = [], obj.get("data") or {}
    if old is not None:
        if obj.get("type") != old.get("type"):
            errors.append(("type", "FieldValueInvalid",
                           f"Invalid value: {json.dumps(obj.get('type'))}: field is immutable"))
        if old.get("immutable"):
            frozen = "Forbidden: field is immutable when `immutable` is set"
            if not obj.get("immutable"):
                errors.append(("immutable", "FieldValueForbidden", frozen))
            if data != (old.get("data") or {}):
                errors.append(("data", "FieldValueForbidden", frozen))
    size = 0
    for key, value in data.items():  # validation.IsConfigMapKey
        problems = ["must be no more than 253 characters"] if len(key) > 253 else []
        if not re.fullmatch(_CONFIG_KEY[0], key):
            problems.append(_CONFIG_KEY[1])
        if key in (".", ".."):
            problems.append(f"must not be '{key}'")
        elif key.startswith(".."):
            problems.append("must not start with '..'")
        errors += [(f"data[{key}]", "FieldValueInvalid", f"Invalid value: {json.dumps(key)}: {problem}")
                   for problem in problems]
        size += len(base64.b64decode(value))
    if size > _MAX_SECRET_SIZE:
        errors.append(("data", "FieldValueTooLong", f"Too long: may not be more than {_MAX_SECRET_SIZE} bytes"))
    secret_type = obj.get("type")
    annotations = obj["metadata"].get("annotations") or {}
    if secret_type == "kubernetes.io/service-account-token" and not annotations.get(
            "kubernetes.io/service-account.name"):
        errors.append(("metadata.annotations[kubernetes.io/service-account.name]", "FieldValueRequired",
                       "Required value"))
    elif secret_type == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        errors += [(f"data[{key}]", "FieldValueRequired", "Required value") for key in ("username", "password")]
    elif secret_type == "kubernetes.io/ssh-auth" and not data.get("ssh-privatekey"):  # present and non-empty
        errors.append(("data[ssh-privatekey]", "FieldValueRequired", "Required value"))
    errors += [(f"data[{key}]", "FieldValueRequired", "Required value")
               for key in _SECRET_REQUIRED_KEYS.get(secret_type, ()) if key not in data]
    return errors


# --------------------------------------------------------------------------- rollout simulation
@dataclass
class _Rollout:
    """Pod counts of one Deployment's ReplicaSets, which this fake does not serve as objects."""
    uid: str
    template_hash: str
    last_progress: float
    revision: int = 1
    generation: int = 0
    updated: int = 0    # pods of the newest ReplicaSet
    ready_new: int = 0  # ... of which ready
    old: int = 0        # (ready) pods of older ReplicaSets still running


def _template_hash(template):
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join("bcdfghjkmnpqrstvwxz2456789"[b % 25] for b in digest[:10])  # pod-template-hash alphabet


@functools.lru_cache(maxsize=None)
def _tls_material():
    """(ca_pem, cert_pem, key_pem): a throwaway CA plus a 127.0.0.1 serving certificate it signed.

    TLS is not optional for kubectl: clientcmd only attaches kubeconfig credentials to TLS
    transports, so over plain http the fake would never see a token.  Generated once per process;
    ``cryptography`` comes with the project's dependencies (autobahn, via daphne)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "norn-fake-kubernetes-ca")])

    def certificate(subject, public_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca = certificate(ca_name, ca_key.public_key(), [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       encipher_only=False, decipher_only=False), True)])
    cert = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key(), [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                      x509.DNSName("localhost")]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca, cert, key_pem


@dataclass
class RecordedRequest:
    """One request as the fake received it (``body`` is parsed JSON when it was JSON)."""
    method: str
    path: str
    query: dict
    content_type: str
    body: object
    headers: dict = field(repr=False)


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern
    status_code: int
    remaining: int
    message: str


@dataclass
class _Event:
    rv: int
    type: str
    plural: str
    obj: dict
    old: dict | None


class FakeKubernetes:
    """An in-process Kubernetes API server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, token=None, rollout_mode="complete", step_interval=0.05, progress_deadline_scale=0.01,
                 failing_images=(), history_size=1000, require_auth=True, tls=True, pods=True,
                 registry_url=None, time_scale=1.0):
        self.token = token or secrets.token_hex(16)
        self.tls = tls
        self.ca_path = None  # PEM file of the CA that signed the serving certificate (when tls)
        self.require_auth = require_auth
        self.rollout_mode = rollout_mode
        self.rollout_modes = {}  # (namespace, name) -> mode, overriding rollout_mode
        self.step_interval = step_interval
        self.progress_deadline_scale = progress_deadline_scale
        self.failing_images = set(failing_images)
        self.internal_errors = []  # tracebacks of bugs in the fake itself, surfaced as 500s
        self._lock = threading.RLock()
        self._request = threading.local()  # per HTTP request: fieldValidation and the warnings it collects
        self._changed = threading.Condition(self._lock)
        self._objects = {}  # (plural, namespace or "", name) -> object
        self._events = deque(maxlen=history_size)
        self._rv = 0
        self._rollouts = {}
        self._injections = []
        self._requests = []
        self._connections = set()
        self._stopping = threading.Event()
        self._server = None
        self._tmpdir = None
        self._threads = []
        self.jobs = fake_jobs.JobController(self)  # the job controller and kubelet of batch/v1 Jobs
        # pods=True: ReplicaSets and simulated pods that can fail (fake_kube_controller.py); without
        # it, Deployments roll out by the pod counts of _reconcile and serve no ReplicaSets.
        self.controller = fake_kube_controller.DeploymentController(
            self, registry_url if registry_url is not None else os.environ.get("NORN_REGISTRY_URL"),
            time_scale) if pods else None
        for ns in ("default", "kube-system", "kube-public"):
            self.create({"metadata": {"name": ns}}, plural="namespaces")

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.kube = self
        if self.tls:
            ca, cert, key = _tls_material()
            self._tmpdir = tempfile.mkdtemp(prefix="fake-kube-")
            for filename, pem in (("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)):
                with open(os.path.join(self._tmpdir, filename), "wb") as fh:
                    fh.write(pem)
            self.ca_path = os.path.join(self._tmpdir, "ca.crt")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(os.path.join(self._tmpdir, "tls.crt"), os.path.join(self._tmpdir, "tls.key"))
            # Handshakes happen in the per-connection thread, so one stalled client cannot block accept().
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                          name="fake-kube-http", daemon=True),
                         threading.Thread(target=self._controller_loop, name="fake-kube-controller", daemon=True)]
        for thread in self._threads:
            thread.start()
        self.jobs.start()
        return self

    def stop(self):
        """Stop serving: open watches end cleanly, then the listener and idle keep-alive sockets close."""
        if self._server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.jobs.stop()
        self._server = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = self.ca_path = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path, namespace="default", context="norn-fake"):
        """Write a kubeconfig (JSON is valid YAML) for kubectl and kubernetes.config.load_kube_config."""
        cluster = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(_tls_material()[0]).decode()
        config = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
                  "clusters": [{"name": context, "cluster": cluster}],
                  "users": [{"name": context, "user": {"token": self.token}}],
                  "contexts": [{"name": context,
                                "context": {"cluster": context, "user": context, "namespace": namespace}}]}
        with open(path, "w") as fh:
            json.dump(config, fh, indent=2)
        return os.fspath(path)

    # ------------------------------------------------------------------ test controls
    @property
    def requests(self):
        """Snapshot of every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self):
        with self._lock:
            self._requests.clear()

    def fail_next(self, method, path_regex, status_code=500, count=1, message=None):
        """Make the next ``count`` requests whose method matches (``"*"`` = any) and whose
        path-with-query matches ``path_regex`` (re.search) fail with a ``Status`` of ``status_code``."""
        if message is None:
            message = ("Internal error occurred: injected failure" if status_code == 500
                       else f"injected failure ({status_code})")
        with self._lock:
            self._injections.append(_Injection(method.upper(), re.compile(path_regex), status_code, count, message))

    def load_image(self, name):
        """Make ``name`` pullable by the pods of this cluster, as `kind load` does; returns ``name``
        (as RealCluster.load_image does)."""
        if self.controller is None:
            raise RuntimeError("load_image needs the pod controller; this fake was made with pods=False")
        self.controller.load_image(name)
        return name

    def set_rollout_mode(self, name, mode, namespace="default"):
        """Override ``rollout_mode`` for one deployment (``None`` removes the override)."""
        if mode is not None and mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout mode must be one of {ROLLOUT_MODES}")
        if mode == "stuck" and self.controller is not None:
            # The pod controller has no "stuck" mode; a silently ignored one would let a test pass.
            raise ValueError('the "stuck" rollout mode belongs to FakeKubernetes(pods=False); with the pod '
                             "controller make a rollout stick for real (an image nobody loaded, a failing "
                             "readiness probe, a long minReadySeconds)")
        with self._lock:
            if mode is None:
                self.rollout_modes.pop((namespace, name), None)
            else:
                self.rollout_modes[(namespace, name)] = mode

    def advance(self, name, namespace="default", steps=1):
        """Run controller steps for one deployment whatever its mode; ``steps=None`` runs until it
        stops making progress.  Returns the resulting status."""
        with self._lock:
            if ("deployments", namespace, name) not in self._objects:
                raise _not_found(_KINDS["deployments"], name)
            for _ in range(steps if steps is not None else 10_000):
                if not self._reconcile(("deployments", namespace, name), 1) and steps is None:
                    break
            return copy.deepcopy(self._objects[("deployments", namespace, name)].get("status", {}))

    def get_object(self, plural, name, namespace="default"):
        """The stored object (a copy), or None; bypasses HTTP for assertions."""
        with self._lock:
            obj = self._objects.get((plural, namespace if _KINDS[plural].namespaced else "", name))
            return copy.deepcopy(obj)

    def create(self, obj, plural=None, namespace="default"):
        """Create an object through the same code path as POST (raises KubeApiError)."""
        plural = plural or next((p for p, k in _KINDS.items() if k.kind == obj.get("kind")), None)
        if plural not in _KINDS:
            raise ValueError("pass plural= or an object with a served kind (Deployment, Service, Namespace, "
                             "Secret, Ingress, ...)")
        return self._create(_KINDS[plural], namespace if _KINDS[plural].namespaced else "", obj, False)

    # ------------------------------------------------------------------ storage core
    def _commit(self, kind, obj, event_type, old=None):
        """Store (or drop) an object under a fresh resourceVersion and wake watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (kind.plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            self._objects.pop(key, None)
            if kind.plural == "pods":
                self.jobs.pod_gone(obj)
        else:
            self._objects[key] = obj
        self._events.append(_Event(self._rv, event_type, kind.plural, copy.deepcopy(obj), old))
        self._changed.notify_all()
        return copy.deepcopy(obj)

    def _decode_object(self, kind, body, patched=False):
        """A private copy of a request object, refusing shapes the apiserver's decoder would reject.

        Unknown fields are dropped, and what else happens follows the request's fieldValidation:
        Strict refuses the request naming every one of them, Warn (the default over HTTP) adds a
        Warning header per field, Ignore says nothing.  The fake's own writes are Strict."""
        if not isinstance(body, dict):
            raise _bad_request("Object 'Kind' is missing in request body")
        for part in ("metadata", "spec", "status"):
            if not isinstance(body.get(part, {}), dict):
                raise _bad_request(f"json: cannot unmarshal {type(body[part]).__name__} into Go struct field "
                                   f"{kind.kind}.{part}")
        obj = copy.deepcopy(body)
        mismatch = schema.type_error(kind.plural, kind.kind, obj)
        if mismatch:  # encoding/json cannot store the value, so the body cannot be decoded
            raise _bad_request(mismatch if patched else
                               f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: {mismatch}')
        unknown, quantities = schema.prune_unknown(kind.plural, obj)
        if quantities:  # resource.Quantity's UnmarshalJSON fails, so the whole body cannot be decoded
            message = schema.QUANTITY_ERROR
            raise _bad_request(message if patched else
                               f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: {message}')
        if unknown:
            directive = getattr(self._request, "validation", "Strict")
            if directive == "Strict":
                if patched:  # the patched object is walked in key order rather than read as a document
                    unknown = sorted(unknown)
                message = "strict decoding error: " + ", ".join(f'unknown field "{path}"' for path in unknown)
                if not patched:  # a decoded body names its type; a patched object is converted in place
                    message = f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: {message}'
                raise _bad_request(message)
            if directive == "Warn":
                self._request.warnings += [f'unknown field "{path}"' for path in unknown]
        if not kind.namespaced:  # cluster-scoped objects never carry a namespace
            obj.get("metadata", {}).pop("namespace", None)
        if kind.plural == "secrets":
            _convert_secret(obj)
        return obj

    def _require_namespace(self, namespace):
        if namespace and ("namespaces", "", namespace) not in self._objects:
            raise _not_found(_KINDS["namespaces"], namespace)

    def _prepare(self, kind, obj, old):
        """Defaults, server-populated fields and validation shared by create and update."""
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.plural == "deployments":
            obj.setdefault("status", {})
            _default_deployment(obj)
            errors = _validate_deployment(obj, old)
        elif kind.plural == "services":
            spec = obj.setdefault("spec", {})
            previous = (old or {}).get("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec["type"] != "ExternalName":
                # Like the registry's patchAllocatedValues: updates that omit the IP keep it.
                spec.setdefault("clusterIP", previous.get("clusterIP") or
                                f"10.96.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}")
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("sessionAffinity", "None")
            for n, port in enumerate(spec.get("ports") or []):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer"):
                    old_ports = previous.get("ports") or []
                    port.setdefault("nodePort", old_ports[n].get("nodePort") if n < len(old_ports)
                                    else 30000 + secrets.randbelow(2768))
            obj.setdefault("status", {"loadBalancer": {}})
            errors = _validate_service(obj, old)
        elif kind.plural in ("jobs", "pods", "events"):
            default, validate = {"jobs": (fake_jobs.default_job, fake_jobs.validate_job),
                                 "pods": (fake_jobs.default_pod, fake_jobs.validate_pod),
                                 "events": (None, fake_jobs.validate_event)}[kind.plural]
            if default:
                default(obj, old)
            errors = validate(obj, old)
        elif kind.plural == "replicasets":
            errors = fake_kube_controller.prepare_replicaset(obj, old)
        elif kind.plural == "resourcequotas":
            errors = fake_kube_controller.prepare_quota(obj, old)
        elif kind.plural == "ingresses":
            obj.setdefault("status", {"loadBalancer": {}})
            errors = schema.ingress_errors(obj)
        elif kind.plural == "secrets":
            if not obj.get("type"):  # SetDefaults_Secret; an update that omits it therefore hits immutability
                obj["type"] = "Opaque"
            errors = _validate_secret(obj, old)
        else:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            errors = []
        return errors

    def _create(self, kind, namespace, body, dry_run):
        obj = self._decode_object(kind, body)
        if obj.get("kind") not in (None, kind.kind):
            raise _bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                               f"expected API version ({kind.api_version})")
        obj.pop("status", None)  # status is the controllers' business, never the creator's
        meta = obj.setdefault("metadata", {})
        if namespace and meta.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the "
                               "request")
        if meta.get("resourceVersion"):  # the real storage layer refuses this with a 500, too
            raise KubeApiError(500, "resourceVersion should not be set on objects to be created")
        with self._lock:
            self._require_namespace(namespace)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            name = meta.get("name") or ""
            # Before defaulting: a Job's generated selector is made of its uid.
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            errors = _name_errors(kind.plural, name) + schema.metadata_errors(meta) + self._prepare(kind, obj, None)
            if errors:
                raise _invalid(kind, name, errors)
            if (kind.plural, namespace, name) in self._objects:
                raise KubeApiError(409, f'{kind.qualified} "{name}" already exists', reason="AlreadyExists",
                                   details=_details(kind, name))
            if namespace:
                meta["namespace"] = namespace
            if kind.has_generation:
                meta["generation"] = 1
            self._track_fields(kind, None, obj, "")
            if dry_run:
                return obj
            return self._commit(kind, obj, "ADDED")

    def _update(self, kind, namespace, name, body, subresource, dry_run, current=None, patched=False):
        obj = self._decode_object(kind, body, patched)
        with self._lock:
            current = current or self._objects.get((kind.plural, namespace, name))
            if current is None:
                raise _not_found(kind, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise _bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL '
                                   f'({name})')
            if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
                raise KubeApiError(409, f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object '
                                   'has been modified; please apply your changes to the latest version and try '
                                   'again', reason="Conflict", details=_details(kind, name))
            if subresource == "status":  # the status endpoint only ever changes status
                obj = {**copy.deepcopy(current), "status": obj.get("status", {})}
            elif "status" in current:  # ... and the main endpoint never does
                obj["status"] = copy.deepcopy(current["status"])
            for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
                if key in current["metadata"]:
                    obj["metadata"][key] = current["metadata"][key]
            errors = schema.metadata_errors(obj["metadata"]) + self._prepare(kind, obj, current)
            if errors:
                raise _invalid(kind, name, errors)
            self._track_fields(kind, current, obj, subresource or "")
            if obj == current:  # no-op writes keep the resourceVersion and emit no event
                return copy.deepcopy(current)
            if kind.has_generation and obj.get("spec") != current.get("spec"):
                obj["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
            if dry_run:
                return obj
            return self._commit(kind, obj, "MODIFIED", copy.deepcopy(current))

    @staticmethod
    def _apply_patch(content_type, target, patch):
        if content_type == "application/strategic-merge-patch+json":
            return _strategic_merge(target, patch)
        if content_type == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise _bad_request("merge patch must be a JSON object")
            return _merge_patch(target, patch)
        if content_type == "application/json-patch+json":
            return _json_patch(target, patch)
        raise KubeApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml, application/strategic-merge-patch+json")

    def _patch(self, kind, namespace, name, content_type, patch, subresource, dry_run):
        with self._lock:
            current = self._objects.get((kind.plural, namespace, name))
            if current is None:
                raise _not_found(kind, name)
            patched = self._apply_patch(content_type, current, patch)
            return self._update(kind, namespace, name, patched, subresource, dry_run, current, patched=True)

    def _track_fields(self, kind, current, obj, subresource):
        """Set obj's metadata.managedFields (fake_kube_apply): the apply's own, or an Update entry."""
        fields = getattr(self._request, "applied_fields", None)
        if fields is None:
            fields = fake_kube_apply.record_update(current, obj, getattr(self._request, "field_manager", None),
                                                   kind.api_version, kind.plural, subresource)
        obj["metadata"].pop("managedFields", None)
        if fields:
            obj["metadata"]["managedFields"] = fields

    def _server_side_apply(self, kind, namespace, name, body, query, dry_run):
        """PATCH application/apply-patch+yaml: create or merge, with field ownership (fake_kube_apply)."""
        try:
            fake_kube_apply.check_request(body, query, kind.kind, kind.api_version, name)
            with self._lock:
                self._require_namespace(namespace)
                current = self._objects.get((kind.plural, namespace, name))
                merged, fields = fake_kube_apply.apply(current, body, query["fieldManager"],
                                                       _as_bool(query.get("force", "false")), kind.api_version,
                                                       kind.plural)
                merged.setdefault("metadata", {})["name"] = name
                self._request.applied_fields = fields
                try:
                    if current is None:
                        merged["metadata"].pop("managedFields", None)
                        return 201, self._create(kind, namespace, merged, dry_run)
                    return 200, self._update(kind, namespace, name, merged, None, dry_run, current, patched=True)
                finally:
                    self._request.applied_fields = None
        except fake_kube_apply.ApplyError as exc:
            raise KubeApiError(exc.code, exc.message, reason=exc.reason, details=exc.details) from None

    @staticmethod
    def _scale_of(deployment):
        meta, spec = deployment["metadata"], deployment["spec"]
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": spec.get("replicas", 1)},
                "status": {"replicas": deployment.get("status", {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}}

    def _write_scale(self, namespace, name, content_type, body, dry_run):
        """PUT or PATCH (content_type set) of deployments/scale: only spec.replicas moves across."""
        kind = _KINDS["deployments"]
        with self._lock:
            current = self._objects.get(("deployments", namespace, name))
            if current is None:
                raise _not_found(kind, name)
            scale = self._apply_patch(content_type, self._scale_of(current), body) if content_type else body
            replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
            if not isinstance(replicas, int) or replicas < 0:
                raise _invalid(_Kind("scale", "Scale", "autoscaling", True, (), False), name, [(
                    "spec.replicas", "FieldValueInvalid",
                    f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0")])
            updated = copy.deepcopy(current)
            updated["spec"]["replicas"] = replicas
            updated["metadata"]["resourceVersion"] = scale.get("metadata", {}).get("resourceVersion")
            return self._scale_of(self._update(kind, namespace, name, updated, None, dry_run, current))

    def _delete(self, kind, namespace, name, options, dry_run):
        with self._lock:
            current = self._objects.get((kind.plural, namespace, name))
            if current is None:
                raise _not_found(kind, name)
            pre = (options or {}).get("preconditions") or {}
            for key in ("uid", "resourceVersion"):
                if pre.get(key) and pre[key] != current["metadata"][key]:
                    raise KubeApiError(409, f"Precondition failed: {key} in precondition: {pre[key]}, {key} in "
                                       f"object meta: {current['metadata'][key]}", details=_details(kind, name))
            if kind.plural == "namespaces" and name in ("default", "kube-system", "kube-public"):
                raise KubeApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                                   details=_details(kind, name))
            if dry_run:
                return copy.deepcopy(current)
            if kind.plural == "namespaces":
                # Namespace finalization is asynchronous on a real cluster; collapsing it keeps tests
                # deterministic while still deleting the contents with DELETED events.
                for key in [k for k in self._objects if k[1] == name]:
                    self._rollouts.pop((name, key[2]), None)
                    self._commit(_KINDS[key[0]], copy.deepcopy(self._objects[key]), "DELETED")
                gone = self._commit(kind, copy.deepcopy(current), "DELETED")
                gone["metadata"]["deletionTimestamp"] = _now()
                gone["status"] = {"phase": "Terminating"}
                return gone
            self._rollouts.pop((namespace, name), None)
            gone = self._commit(kind, copy.deepcopy(current), "DELETED")
            if kind.plural == "jobs":
                self.jobs.job_deleted(current, options)
            if kind.plural in ("services", "pods"):  # the service registry sets ReturnDeletedObject
                return gone
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": _details(kind, name, uid=current["metadata"]["uid"])}

    def _list(self, kind, namespace, query):
        labels, fields = _label_selector(query.get("labelSelector")), _field_selector(query.get("fieldSelector"))
        with self._lock:
            items = [copy.deepcopy(o) for (p, ns, _), o in sorted(self._objects.items())
                     if p == kind.plural and (namespace is None or ns == namespace)
                     and labels(o["metadata"].get("labels")) and fields(o)]
            rv = str(self._rv)
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.b64decode(query["continue"]))
                start, rv = int(token["start"]), token["rv"]
            except (ValueError, KeyError, TypeError):
                raise KubeApiError(400, "continue key is not valid")
        meta = {"resourceVersion": rv}
        limit = int(_number(query, "limit"))
        if limit and len(items) > start + limit:
            token = {"start": start + limit, "rv": rv}
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        items = items[start:start + limit] if limit else items[start:]
        for item in items:  # list items from the real apiserver omit kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": items}

    # ------------------------------------------------------------------ watch
    def _watch(self, handler, kind, namespace, query):
        labels, fields = _label_selector(query.get("labelSelector")), _field_selector(query.get("fieldSelector"))
        deadline = time.monotonic() + _number(query, "timeoutSeconds", 1800)
        rv_param = query.get("resourceVersion") or ""
        initial_events = _as_bool(query.get("sendInitialEvents", "false"))

        def visible(obj):
            meta = obj["metadata"]
            return ((namespace is None or meta.get("namespace", "") == namespace)
                    and labels(meta.get("labels")) and fields(obj))

        with self._lock:
            if rv_param in ("", "0") or initial_events:
                # "Start at most recent/any": the real server first replays current state as ADDED.
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)} for (p, _, _), o in
                           sorted(self._objects.items()) if p == kind.plural and visible(o)]
                cursor = self._rv
            else:
                if not rv_param.isdigit():
                    raise _bad_request(f"invalid resource version: {rv_param}")
                cursor, pending = int(rv_param), []
                if self._events and self._events[0].rv > cursor + 1:  # older than the kept history
                    expired = KubeApiError(410, f"too old resource version: {cursor} ({self._events[0].rv - 1})")
                    pending, deadline = [{"type": "ERROR", "object": expired.status}], 0
            if initial_events:
                pending.append({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                        "resourceVersion": str(cursor), "annotations": {"k8s.io/initial-events-end": "true"}}}})
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            while True:
                for event in pending:
                    data = json.dumps(event).encode() + b"\n"
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
                pending = []
                with self._changed:
                    while not self._stopping.is_set() and time.monotonic() < deadline and self._rv <= cursor:
                        self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    if self._stopping.is_set() or time.monotonic() >= deadline:
                        break
                    if self._events and self._events[0].rv > cursor + 1:  # fell out of the history window
                        expired = KubeApiError(410, f"too old resource version: {cursor} ({self._events[0].rv - 1})")
                        pending, deadline = [{"type": "ERROR", "object": expired.status}], 0
                        continue
                    for event in (e for e in self._events if e.rv > cursor and e.plural == kind.plural):
                        now_in, was_in = visible(event.obj), event.old is not None and visible(event.old)
                        # An object moving out of (into) the selection is DELETED (ADDED) for this watcher.
                        if event.type == "MODIFIED" and was_in != now_in:
                            pending.append({"type": "ADDED" if now_in else "DELETED",
                                            "object": event.obj if now_in else {**event.old, "metadata": {
                                                **event.old["metadata"], "resourceVersion": str(event.rv)}}})
                        elif now_in:
                            pending.append({"type": event.type, "object": event.obj})
                    cursor = self._rv
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    # ------------------------------------------------------------------ controller
    def _controller_loop(self):
        while not self._stopping.wait(self.step_interval):
            with self._lock:
                if self.controller:
                    try:
                        self.controller.collect()
                        self.controller.count_quotas()
                    except Exception:
                        self.internal_errors.append(traceback.format_exc())
                for key in [k for k in self._objects if k[0] == "deployments"]:
                    if self.rollout_modes.get((key[1], key[2]), self.rollout_mode) == "manual":
                        continue
                    try:
                        self.controller.sync(key) if self.controller else self._reconcile(key, 1)
                    except Exception:  # keep the controller alive; the test sees the bug via internal_errors
                        self.internal_errors.append(traceback.format_exc())

    def _reconcile(self, key, steps):
        """One pass of a simplified deployment controller.  Returns True if pods changed."""
        obj = self._objects.get(key)
        if obj is None:
            return False
        _, namespace, name = key
        meta, spec, now = obj["metadata"], obj["spec"], time.monotonic()
        desired = spec.get("replicas", 1)
        mode = self.rollout_modes.get((namespace, name), self.rollout_mode)
        images = [c.get("image", "") for c in spec["template"]["spec"].get("containers", [])]
        markers = tuple(self.failing_images)  # tests mutate the set from other threads
        failing = mode == "stuck" or any(marker in image for marker in markers for image in images)
        template_hash = _template_hash(spec["template"])
        ro = self._rollouts.get((namespace, name))
        if ro is None or ro.uid != meta["uid"]:
            ro = self._rollouts[(namespace, name)] = _Rollout(meta["uid"], template_hash, now)
        elif ro.template_hash != template_hash:
            # A new ReplicaSet: whatever was ready keeps serving as "old" pods until replaced.
            ro.old, ro.updated, ro.ready_new = ro.old + ro.ready_new, 0, 0
            ro.template_hash, ro.revision = template_hash, ro.revision + 1
        if ro.generation != meta["generation"]:
            ro.generation, ro.last_progress = meta["generation"], now  # new spec: deadline restarts
        surge, max_unavailable = _rolling_params(spec, desired)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if spec.get("paused"):
            ro.last_progress = now  # paused deployments never time out
        progressed = False
        for _ in range(0 if spec.get("paused") else steps):
            before = (ro.updated, ro.ready_new, ro.old)
            if recreate and ro.old:
                ro.old = 0         # Recreate stops every old pod before starting new ones
            elif ro.ready_new < ro.updated and not failing:
                ro.ready_new += 1  # a new pod passed its readiness probe
            elif ro.updated < desired and (recreate or ro.updated - ro.ready_new < max(surge, 1)):
                ro.updated += 1    # scale the new ReplicaSet up by one (unready) pod
            if ro.updated > desired:
                ro.updated, ro.ready_new = desired, min(ro.ready_new, desired)
            if ro.old and ro.old + ro.ready_new > desired:
                ro.old -= 1        # an old pod was replaced, so scale the old ReplicaSets down
            if (ro.updated, ro.ready_new, ro.old) == before:
                break
            progressed = True
        if progressed:
            ro.last_progress = now
        available = ro.ready_new + ro.old
        complete = ro.updated == desired and ro.ready_new == desired and not ro.old
        deadline = spec.get("progressDeadlineSeconds", 600) * self.progress_deadline_scale
        rs_name = f"{name}-{ro.template_hash}"
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif now - ro.last_progress > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        # The controller's checkPausedConditions: pausing says so (unless the rollout already timed
        # out), resuming says so until the rollout progresses, completes or times out again.
        was = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Progressing"), {})
        if spec.get("paused"):
            if was.get("reason") == "ProgressDeadlineExceeded":
                progressing = (was["status"], was["reason"], was["message"])
            else:
                progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif was.get("reason") == "DeploymentPaused" or (
                was.get("reason") == "DeploymentResumed" and progressing[1] == "ReplicaSetUpdated" and not progressed):
            progressing = ("Unknown", "DeploymentResumed", "Deployment is resumed")
            if was.get("reason") == "DeploymentPaused":
                ro.last_progress = now  # the progress deadline counts from the resume
        if available >= desired - max_unavailable:
            availability = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            availability = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        previous = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
        conditions, stamp = [], _now()
        for ctype, (cstatus, reason, message), touched in (("Available", availability, False),
                                                           ("Progressing", progressing, progressed)):
            old = previous.get(ctype, {})
            same = (old.get("status"), old.get("reason"), old.get("message")) == (cstatus, reason, message)
            conditions.append({"type": ctype, "status": cstatus,
                               "lastUpdateTime": old["lastUpdateTime"] if same and not touched else stamp,
                               "lastTransitionTime": old["lastTransitionTime"] if old.get("status") == cstatus
                               else stamp, "reason": reason, "message": message})
        status = {"observedGeneration": meta["generation"], "replicas": ro.updated + ro.old,
                  "updatedReplicas": ro.updated, "readyReplicas": available, "availableReplicas": available,
                  "unavailableReplicas": max(0, desired - available)}
        status = {k: v for k, v in status.items() if v}  # omitempty, exactly like the real API's JSON
        status["conditions"] = conditions
        new = copy.deepcopy(obj)
        new["status"] = status
        new["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(ro.revision)
        if new != obj:
            self._commit(_KINDS["deployments"], new, "MODIFIED", copy.deepcopy(obj))
        return progressed

    # ------------------------------------------------------------------ HTTP routing
    def _discovery(self, path):
        path = path.rstrip("/")  # the Python client asks for "/api/v1/", which the apiserver serves too
        if path == "/version":
            major, minor, _ = SERVER_VERSION[1:].split(".")
            return {"major": major, "minor": minor, "gitVersion": SERVER_VERSION, "gitTreeState": "clean",
                    "gitCommit": "0" * 40, "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.8",
                    "compiler": "gc", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        groups = {name: {"name": name, "versions": [{"groupVersion": f"{name}/v1", "version": "v1"}],
                         "preferredVersion": {"groupVersion": f"{name}/v1", "version": "v1"}} for name in _GROUPS}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())}
        if path.startswith("/apis/") and path[6:] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **groups[path[6:]]}
        if path == "/openapi/v3":
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=fake"} for gv in
                              ("api/v1", *(f"apis/{name}/v1" for name in _GROUPS))}}
        for group, prefix in (("", "/api/v1"), *((name, f"/apis/{name}/v1") for name in _GROUPS)):
            if path == f"/openapi/v3{prefix}":
                # Just what kubectl reads: GVK-tagged PATCH operations declaring fieldValidation, so
                # create/apply leave validation to the server instead of fetching /openapi/v2 schemas.
                # Without a requestBody, `kubectl apply` computes patches from its compiled-in types.
                paths = {}
                for kind in (k for k in _KINDS.values() if k.group == group):
                    scope = "namespaces/{namespace}/" if kind.namespaced else ""
                    paths[f"{prefix}/{scope}{kind.plural}/{{name}}"] = {"patch": {
                        "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind.kind},
                        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "OK"}}}}
                return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION},
                        "paths": paths}
            if path == prefix:
                resources = []
                for kind in (k for k in _KINDS.values() if k.group == group):
                    # Real discovery omits empty shortNames/categories, and also lists
                    # deletecollection, which this fake does not serve.
                    resources.append({"name": kind.plural, "singularName": kind.kind.lower(),
                                      "namespaced": kind.namespaced, "kind": kind.kind,
                                      "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                                      **({"shortNames": list(kind.short_names)} if kind.short_names else {}),
                                      **({"categories": list(kind.categories)} if kind.categories else {})})
                    if kind.has_status:
                        resources.append({"name": f"{kind.plural}/status", "singularName": "",
                                          "namespaced": kind.namespaced, "kind": kind.kind,
                                          "verbs": ["get", "patch", "update"]})
                    if kind.plural == "pods":
                        resources.append({"name": "pods/log", "singularName": "", "namespaced": True,
                                          "kind": "Pod", "verbs": ["get"]})
                    if kind.plural == "deployments":  # kubectl scale finds the Scale kind here
                        resources.append({"name": "deployments/scale", "singularName": "", "namespaced": True,
                                          "group": "autoscaling", "version": "v1", "kind": "Scale",
                                          "verbs": ["get", "patch", "update"]})
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": prefix[5:].lstrip("/") or
                        "v1", "resources": resources}
        return None

    def _route(self, handler, method, path, query, content_type, body):
        if method == "GET" and (doc := self._discovery(path)) is not None:
            return 200, doc
        match = re.fullmatch(r"/api/v1/(.+)|/apis/(apps|batch|networking\.k8s\.io)/v1/(.+)", path)
        if not match:
            raise _no_route()
        group = "" if match[1] else match[2]
        segments = (match[1] or match[3]).split("/")
        namespace = None
        if len(segments) >= 3 and segments[0] == "namespaces" and segments[2] in _KINDS \
                and _KINDS[segments[2]].namespaced:
            namespace, segments = segments[1], segments[2:]
        kind = _KINDS.get(segments[0])
        subresources = (("status",) if kind and kind.has_status else ()) + (
            ("scale",) if kind and kind.plural == "deployments" else ()) + (
            ("log",) if kind and kind.plural == "pods" else ())
        if kind is None or kind.group != group or len(segments) > 3 or (len(segments) == 3 and segments[2] not in
                                                                         subresources) or any(not s for s in segments):
            raise _no_route()
        if kind.namespaced and namespace is None and len(segments) > 1:
            raise _no_route()
        name = segments[1] if len(segments) > 1 else None
        subresource = segments[2] if len(segments) > 2 else None
        ns = namespace or ""
        dry_run = query.get("dryRun") == "All"
        if method in ("POST", "PUT", "PATCH"):
            directive = query.get("fieldValidation", "")
            if directive not in schema.FIELD_VALIDATION:
                options = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}[method]
                supported = ", ".join(json.dumps(v) for v in schema.FIELD_VALIDATION)
                raise KubeApiError(422, f'{options}.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
                                   f'{json.dumps(directive)}: supported values: {supported}', details={
                                       "group": "meta.k8s.io", "kind": options, "causes": [{
                                           "reason": "FieldValueNotSupported", "field": "fieldValidation",
                                           "message": f"Unsupported value: {json.dumps(directive)}: supported "
                                                      f"values: {supported}"}]})
            self._request.validation = directive or "Warn"  # the apiserver's default since 1.23
        if name is None:
            if method == "GET" and _as_bool(query.get("watch", "false")):
                self._watch(handler, kind, namespace, query)
                return None, None
            if method == "GET":
                return 200, self._list(kind, namespace, query)
            if method == "POST" and (namespace is not None or not kind.namespaced):
                return 201, self._create(kind, ns, body, dry_run)
        elif method == "GET" and subresource == "log":
            return None, self.jobs.serve_log(handler, ns, name, query)
        elif method == "GET":
            with self._lock:
                obj = self._objects.get((kind.plural, ns, name))
                if obj is None:
                    raise _not_found(kind, name)
                return 200, self._scale_of(obj) if subresource == "scale" else copy.deepcopy(obj)
        elif subresource == "scale" and method in ("PUT", "PATCH"):
            return 200, self._write_scale(ns, name, content_type if method == "PATCH" else None, body, dry_run)
        elif method == "PUT":
            return 200, self._update(kind, ns, name, body, subresource, dry_run)
        elif method == "PATCH" and content_type == fake_kube_apply.APPLY_CONTENT_TYPE and subresource is None:
            return self._server_side_apply(kind, ns, name, body, query, dry_run)
        elif method == "PATCH":
            return 200, self._patch(kind, ns, name, content_type, body, subresource, dry_run)
        elif method == "DELETE" and subresource is None:
            options = dict(body) if isinstance(body, dict) else {}
            if query.get("propagationPolicy"):  # the Python client sends it as a query parameter
                options["propagationPolicy"] = query["propagationPolicy"]
            return 200, self._delete(kind, ns, name, options, dry_run)
        raise KubeApiError(405, "the server does not allow this method on the requested resource")

    def _serve(self, handler):
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body, body_error = _decode_body(handler.read_body(), content_type)
        method = handler.command
        self._request.validation, self._request.warnings = "Strict", []
        # Who an Update is recorded for in managedFields: ?fieldManager, else the User-Agent's program name.
        self._request.field_manager = query.get("fieldManager") or (
            handler.headers.get("User-Agent") or "unknown").split("/")[0]
        self._request.applied_fields = None
        with self._lock:
            self._requests.append(RecordedRequest(method, url.path, query, content_type, body,
                                                  dict(handler.headers.items())))
        try:
            auth = handler.headers.get("Authorization") or ""
            if self.require_auth and not secrets.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
                raise KubeApiError(401, "Unauthorized")
            target = url.path + (f"?{url.query}" if url.query else "")
            with self._lock:
                injection = next((i for i in self._injections if i.remaining > 0 and i.method in ("*", method)
                                  and i.pattern.search(target)), None)
                if injection:
                    injection.remaining -= 1
            if injection:
                raise KubeApiError(injection.status_code, injection.message)
            if body_error is not None:
                raise body_error
            code, payload = self._route(handler, method, url.path, query, content_type, body)
            if method == "GET" and code == 200 and isinstance(payload, dict) and "metadata" in payload \
                    and fake_kube_controller.wants_table(handler.headers.get("Accept"), payload):
                payload = fake_kube_controller.table(payload, query.get("includeObject", "Metadata"))
        except KubeApiError as exc:
            code, payload = exc.code, exc.status
        except Exception:  # a bug in the fake: report it loudly to the client and to the test
            self.internal_errors.append(traceback.format_exc())
            code, payload = 500, KubeApiError(500, "Internal error occurred: fake server bug; see "
                                              "FakeKubernetes.internal_errors").status
        warnings, self._request.warnings = self._request.warnings, []
        self._request.validation, self._request.field_manager = "Strict", None
        if payload is not None:
            handler.send_json(code, payload, warnings)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    kube: FakeKubernetes

    def handle_error(self, request, client_address):
        # Clients hanging up (or failing the TLS handshake) are routine; anything else is a fake bug.
        if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            self.kube.internal_errors.append(traceback.format_exc())


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams, like the real apiserver

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)  # bound the handshake only
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        with self.server.kube._lock:  # tracked so stop() can close idle keep-alive connections
            self.server.kube._connections.add(self.connection)

    def finish(self):
        with self.server.kube._lock:
            self.server.kube._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_json(self, code, payload, warnings=()):
        data = json.dumps(payload).encode()
        self.send_response(code)
        for warning in warnings:  # RFC 7234 warn-code 299, as the apiserver sends them
            self.send_header("Warning", f"299 - {json.dumps(warning)}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self):
        self.server.kube._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format, *args):  # keep pytest output clean; kube.requests is the log
        pass
