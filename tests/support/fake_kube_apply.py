"""Server-side apply and field ownership for the fake Kubernetes API server
(tests/support/fake_kubernetes.py), after k8s.io/apimachinery's fieldmanager and
sigs.k8s.io/structured-merge-diff.

A PATCH with Content-Type application/apply-patch+yaml merges the applied configuration
into the object (creating it when absent), records the manager's fields in
`metadata.managedFields` (fieldsV1, operation Apply), removes fields the manager applied
before and omits now unless another manager owns them, and refuses with a 409 listing the
conflicting fields and managers when another manager owns a field with a different value
(unless force=true, which takes the fields over). Every other write (POST, PUT, merge and
strategic patches, the scale subresource) records an Update entry for the fields it changed,
taking them from whoever owned them, as the real apiserver does.

Lists are associative where the real schema says so (x-kubernetes-list-map-keys): containers,
env, volumes, imagePullSecrets by name, container ports by containerPort+protocol, Service
ports by port+protocol, volumeMounts by mountPath; every other list is atomic, as is a
Deployment's label selector.
"""

import copy
import datetime
import json

# A path is a tuple of steps: ("f", field) for a map member, ("k", key-json) for a list item.
_NAME_KEYED = {"containers", "initContainers", "ephemeralContainers", "env", "volumes", "imagePullSecrets"}
_KEY_DEFAULTS = {"protocol": "TCP"}  # key fields the apiserver defaults, so an item that omits one still matches
_ATOMIC_STRUCTS = {(("f", "spec"), ("f", "selector")): {"deployments", "jobs"}}
_TRACKED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class ApplyError(Exception):
    """(code, message, reason, details): raised to the fake, which turns it into a KubeApiError."""

    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code, self.message, self.reason, self.details = code, message, reason, details


def _list_keys(names):
    """The map keys of the list at the field-name path `names`, or None for an atomic list."""
    field = names[-1]
    if field in _NAME_KEYED:
        return ("name",)
    if field == "volumeMounts":
        return ("mountPath",)
    if field == "ports":
        return ("port", "protocol") if names == ("spec", "ports") else ("containerPort", "protocol")
    return None


def _item_key(item, keys):
    return json.dumps({k: item.get(k, _KEY_DEFAULTS.get(k)) for k in sorted(keys)}, separators=(",", ":"))


def _tracked(obj):
    """The parts of an object that field ownership covers: everything but type, status and
    the metadata the server owns."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status", "metadata")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k in _TRACKED_METADATA}
    if meta:
        out["metadata"] = meta
    return out


def field_set(obj, plural):
    """Every leaf field and list item of `obj` as paths (what fieldsV1 lists)."""
    paths = set()

    def walk(value, path, names):
        if isinstance(value, dict) and value and plural not in _ATOMIC_STRUCTS.get(path, ()):
            for key, child in value.items():
                walk(child, path + (("f", key),), names + (key,))
            return
        keys = _list_keys(names) if isinstance(value, list) and names else None
        if keys and all(isinstance(i, dict) for i in value):
            for item in value:
                item_path = path + (("k", _item_key(item, keys)),)
                paths.add(item_path)
                for key, child in item.items():
                    walk(child, item_path + (("f", key),), names + (key,))
            return
        paths.add(path)

    walk(_tracked(obj), (), ())
    paths.discard(())
    return paths


def get(obj, path, default=None):
    value = obj
    for kind, key in path:
        if kind == "f":
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        else:
            wanted = json.loads(key)
            value = next((i for i in value or [] if isinstance(i, dict)
                          and all(i.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in wanted.items())), None)
            if value is None:
                return default
    return value


def _delete(obj, path):
    parent = get(obj, path[:-1])
    kind, key = path[-1]
    if kind == "f" and isinstance(parent, dict):
        parent.pop(key, None)
    elif kind == "k" and isinstance(parent, list):
        item = get(obj, path)
        if item is not None:
            parent.remove(item)


def to_fields_v1(paths):
    tree = {}
    for path in sorted(paths):
        node = tree
        for kind, key in path:
            node = node.setdefault(f"{kind}:{key}", {})
        if path[-1][0] == "k":
            node["."] = {}
    return tree


def from_fields_v1(tree, prefix=()):
    paths = set()
    for key, child in (tree or {}).items():
        if key == ".":
            paths.add(prefix)
            continue
        path = prefix + ((key[0], key[2:]),)
        if child and set(child) != {"."}:
            paths |= from_fields_v1(child, path)
        if not child or "." in child:
            paths.add(path)
    return paths


def describe(path):
    """The path as the apiserver prints it: .spec.template.spec.containers[name="web"].image"""
    text = ""
    for kind, key in path:
        if kind == "f":
            text += f".{key}"
        else:
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(key).items()) + "]"
    return text


def _merge(current, applied, names=()):
    if isinstance(current, dict) and isinstance(applied, dict):
        merged = copy.deepcopy(current)
        for key, value in applied.items():
            merged[key] = _merge(current.get(key), value, names + (key,))
        return merged
    keys = _list_keys(names) if names and isinstance(applied, list) else None
    if keys and isinstance(current, list) and all(isinstance(i, dict) for i in applied + current):
        merged = copy.deepcopy(current)
        for item in applied:
            key = _item_key(item, keys)
            at = next((n for n, old in enumerate(merged) if _item_key(old, keys) == key), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = _merge(merged[at], item, names)
        return merged
    return copy.deepcopy(applied)


def _entries(obj):
    """[(manager, operation, subresource, paths, apiVersion, time)] from metadata.managedFields."""
    out = []
    for entry in (obj or {}).get("metadata", {}).get("managedFields") or []:
        paths = from_fields_v1(entry.get("fieldsV1"))
        out.append([entry.get("manager", ""), entry.get("operation", "Update"), entry.get("subresource", ""),
                    paths, entry.get("apiVersion"), entry.get("time"), set(paths)])
    return out


def _render(entries):
    """managedFields from entries; an entry's time moves only when its fields did."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rendered = []
    for manager, operation, subresource, paths, api_version, time, before in entries:
        if not paths:
            continue
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
                 "time": now if paths != before or time is None else time,
                 "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
        if subresource:
            entry["subresource"] = subresource
        rendered.append(entry)
    return rendered


def record_update(old, new, manager, api_version, plural, subresource=""):
    """new's managedFields after an Update by `manager` that turned `old` into `new`
    (old is None for a create): the changed fields become the manager's, taken from others."""
    entries = _entries(old)
    if manager is None:  # the fake's own writes (controllers, test set-up) change no ownership
        return copy.deepcopy((old or {}).get("metadata", {}).get("managedFields") or []) or None
    before, after = (field_set(old, plural) if old else set()), field_set(new, plural)
    changed = {p for p in after if old is None or p not in before or get(old, p) != get(new, p)}
    gone = before - after
    for entry in entries:
        entry[3] -= gone
        if entry[0] != manager or entry[1] != "Update":
            entry[3] -= changed
    own = next((e for e in entries if e[0] == manager and e[1] == "Update" and e[2] == subresource), None)
    if own is None and changed:
        own = [manager, "Update", subresource, set(), api_version, None, set()]
        entries.append(own)
    if own is not None:
        own[3] |= changed
        own[4] = api_version
    return _render(entries) or None


def _bound(path, owned_elsewhere):
    """The highest ancestor of a removed field that nobody owns anything under (stopping at a
    list item or a top-level part): removing a probe's last owned field removes the probe with
    its defaulted fields, as structured-merge-diff prunes emptied maps."""
    top = path
    for cut in range(len(path) - 1, 1, -1):
        ancestor = path[:cut]
        if ancestor[-1][0] == "k" or any(p[:cut] == ancestor for p in owned_elsewhere):
            break
        top = ancestor
    return top


def apply(current, applied, manager, force, api_version, plural):
    """(object to store, managedFields) for an apply of `applied` by `manager` onto `current`
    (None when absent). Raises ApplyError for conflicts."""
    applied = {k: v for k, v in applied.items() if k != "status"}
    entries = _entries(current)
    wanted = field_set(applied, plural)
    conflicts = {}
    for entry in entries:
        if entry[0] == manager and entry[1] == "Apply":
            continue
        for path in wanted & entry[3]:
            if current is not None and get(current, path) != get(applied, path) and path[-1][0] == "f":
                conflicts.setdefault(path, []).append(entry)
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry in entries:
        if not (entry[0] == manager and entry[1] == "Apply"):
            entry[3] -= set(conflicts)
    own = next((e for e in entries if e[0] == manager and e[1] == "Apply"), None)
    previous = own[3] if own else set()
    if own is None:
        own = [manager, "Apply", "", set(), api_version, None, set()]
        entries.append(own)
    own[3], own[4] = set(wanted), api_version
    result = _merge(copy.deepcopy(current) if current else {}, applied)
    others = set().union(*[e[3] for e in entries if e is not own] or [set()])
    owned = others | wanted
    # Shortest first: a removed list item goes whole, before its fields would stop it matching its key.
    for path in sorted(previous - wanted, key=len):
        if path in others or any(p[:len(path)] == path for p in owned):
            continue
        _delete(result, _bound(path, owned))
    return result, _render(entries)


def _conflict_error(conflicts):
    by_manager = {}
    for path, entries in sorted(conflicts.items()):
        for manager, _, subresource, _, api_version, _, _ in entries:
            label = f'"{manager}"' + (f' with subresource "{subresource}"' if subresource else "") + \
                f" using {api_version}"
            by_manager.setdefault(label, []).append(describe(path))
    count = sum(len(v) for v in by_manager.values())
    parts = []
    for label, paths in by_manager.items():
        if len(paths) == 1:
            parts.append(f"conflict with {label}: {paths[0]}")
        else:
            parts.append(f"conflicts with {label}:\n" + "\n".join(f"- {p}" for p in paths))
    message = f"Apply failed with {count} conflict{'s' if count != 1 else ''}: " + "\n".join(parts)
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {label}", "field": path}
              for label, paths in by_manager.items() for path in paths]
    return ApplyError(409, message, "Conflict", {"causes": causes})


def check_request(body, query, kind_name, api_version, name):
    """The apply request's own errors: fieldManager, force, type and name of the body."""
    if not query.get("fieldManager"):
        raise ApplyError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                              "for apply patch", "Invalid", {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                  {"reason": "FieldValueRequired", "message": "Required value: is required for apply "
                                   "patch", "field": "fieldManager"}]})
    if not isinstance(body, dict):
        raise ApplyError(400, "error decoding YAML: the applied configuration must be an object", "BadRequest")
    for field in ("apiVersion", "kind"):
        if not body.get(field):
            raise ApplyError(400, f"{field} must be set", "BadRequest")
    if body["kind"] != kind_name or body["apiVersion"] != api_version:
        raise ApplyError(400, f"the API version in the data ({body['apiVersion']}) does not match the expected "
                              f"API version ({api_version})", "BadRequest")
    meta = body.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise ApplyError(400, f"the name of the object ({meta['name']}) does not match the name on the URL "
                              f"({name})", "BadRequest")
