"""Property tests of the infraspec parser and validator (hypothesis).

Whatever the text, bytes or document, `infraspec.parse` answers with a
LoadResult: no exception of any other kind, bounded time and error text,
and a valid result that fits the database columns and round-trips through
Spec. Over 2,000 generated inputs per run (the max_examples below), in well
under a minute.
"""

import json
import string
import time
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps_registry import fieldchecks, infraspec, yamlsafe
from apps_registry.spec import Spec

FILE = "apps/web/infraspec.yaml"
SECRET = "s3cr3tPW"
# Generous: a document takes milliseconds; this only catches a blow-up.
PER_DOCUMENT_SECONDS = 1.0
# 21 lines (MAX_ERRORS and the "more" line) of at most ~430 characters each.
MAX_ERROR_TEXT = 10_000

FAST = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELDS = list(infraspec.SCHEMA.fields)
SUB_KEYS = ["url", "branch", "autoDeploy", "dockerfile", "test", "postgres", "database", "command", "retain"]
# Plain scalars that YAML 1.1 reads as something other than a string, or
# that look like numbers and are not (they crashed PyYAML's constructor).
TRICKY_SCALARS = [
    "0b_", "0x_", "._", "-._", "=", "<<", "~", "2024-01-01", "2001-12-14t21:59:43.10-05:00",
    "yes", "No", "on", "OFF", "0o17", "017", "1_000", "190:20:30", "1:2.5", ".inf", "-.Inf", ".nan",
    "0x1F", "1e3", "1.0e+3", "+12", "-0", "null", "Null", "", "''", "\"\"", "1" * 5000,
]
TAGS = [
    "!!timestamp", "!!binary", "!!set", "!!omap", "!!pairs", "!!python/object:os.system",
    "!!python/name:os.system", "!!python/object/apply:os.system", "!!int", "!!float", "!!bool",
    "!!null", "!!str", "!!seq", "!!map", "!!merge", "!!value", "!!yaml", "!custom", "!",
    "!<tag:yaml.org,2002:str>", "!<tag:example.com,2000:app>", "!!", "!e!foo",
]
YAML_ALPHABET = string.ascii_letters[:6] + string.digits[:3] + " \n\t-:?,[]{}&*!|>'\"%@`#.<=~\\"


def checked(text, directory="web"):
    """Parse `text` (str or bytes) and check what holds for every input."""
    start = time.perf_counter()
    if isinstance(text, bytes):
        result = infraspec.parse_bytes(text, FILE, directory)
    else:
        result = infraspec.parse(text, FILE, directory)
    assert time.perf_counter() - start < PER_DOCUMENT_SECONDS
    assert isinstance(result, infraspec.LoadResult)
    if result.ok:
        assert result.data is not None
        json.dumps(result.data)  # what App.spec (a JSONField) stores
        assert Spec.from_dict(result.data).to_dict() == result.data
        spec = result.spec
        assert len(spec.app) <= fieldchecks.MAX_APP_NAME
        if spec.repo:
            assert len(spec.repo.url) <= fieldchecks.MAX_REPO_URL  # App.repo_url
            assert len(spec.repo.branch) <= fieldchecks.MAX_BRANCH  # App.branch, Deployment.ref
        if spec.schedule:
            assert len(spec.schedule) <= fieldchecks.MAX_SCHEDULE  # CronJob.schedule
        if spec.postgres:
            assert len(spec.postgres.database) <= fieldchecks.MAX_DATABASE  # Snapshot.database
        # Host names as the ingress and an Ingress rule take them.
        assert len(spec.domains) <= fieldchecks.MAX_DOMAINS and len(set(spec.domains)) == len(spec.domains)
        assert all(name == name.lower() and fieldchecks.domain_problem(name) is None for name in spec.domains)
        assert spec.https in fieldchecks.HTTPS_MODES
    else:
        assert result.data is None and result.errors
        assert all(isinstance(error, infraspec.SpecError) for error in result.errors)
        assert all(error.line is None or error.line >= 1 for error in result.errors)
        assert len(result.errors) <= infraspec.MAX_ERRORS + 1
        shown = "\n".join(str(error) for error in result.errors)
        assert len(shown) < MAX_ERROR_TEXT
        assert SECRET not in shown
    return result


def dump(data, flow):
    return yaml.safe_dump(data, default_flow_style=flow, sort_keys=False, allow_unicode=True)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
    st.sampled_from(TRICKY_SCALARS),
)
keys = st.one_of(st.sampled_from(FIELDS + SUB_KEYS), st.text(max_size=15), st.integers(), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, **FAST)
@given(
    role=st.sampled_from(["webserver", "worker", "cron", "webapp", ""]),
    fields=st.dictionaries(keys, values, max_size=8),
    flow=st.booleans(),
)
def test_any_document_of_any_keys_and_types(role, fields, flow):
    checked(dump({"app": "web", "role": role, **fields}, flow))


# Values every field accepts, to check that valid documents stay valid.
GOOD = {
    "repo": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://git.example.com/a/b.git", "git@host:a/b.git", "/srv/git/b", "ssh://h:2222/b"])},
        optional={"branch": st.sampled_from(["main", "release/2024", "feature-x"]), "autoDeploy": st.booleans()},
    ),
    "build": st.fixed_dictionaries({}, optional={"dockerfile": st.sampled_from(["Dockerfile", "docker/web.Dockerfile"]), "test": st.just("make test")}),
    "services": st.just({"postgres": {"database": "shop"}}),
    "migrations": st.just({"command": "./manage.py migrate"}),
    "port": st.integers(1, 65535),
    "replicas": st.integers(0, 1000),
    "namespace": st.sampled_from(["default", "shop-prod", "a"]),
    "env": st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z"), st.one_of(st.text(max_size=30), st.integers(), st.booleans()), max_size=5),
    "autoRollback": st.booleans(),
    "snapshots": st.fixed_dictionaries({"retain": st.integers(1, 1000)}),
}


@settings(max_examples=300, **FAST)
@given(fields=st.fixed_dictionaries({}, optional=GOOD), flow=st.booleans(), cron=st.booleans())
def test_valid_documents_are_accepted_with_their_values(fields, flow, cron):
    if cron:
        for name in ("port", "replicas"):
            fields.pop(name, None)
        fields.update(schedule="*/15 * * * *", command=["python", "report.py"])
    result = checked(dump({"app": "web", "role": "cron" if cron else "worker", **fields}, flow))
    assert result.ok, result.errors
    for name in ("port", "replicas", "namespace", "autoRollback"):
        if name in fields:
            assert result.data[name] == fields[name]
    if "env" in fields:
        assert set(result.data["env"]) == set(fields["env"])


@settings(max_examples=200, **FAST)
@given(shared=values, uses=st.lists(st.sampled_from(FIELDS + ["x", "env"]), min_size=1, max_size=6), flow=st.booleans())
def test_documents_with_aliases_and_merge_keys(shared, uses, flow):
    # safe_dump writes an anchor and aliases for an object used twice.
    data = {"app": "web", "role": "worker"}
    for name in uses:
        data[name] = {"A": shared} if name == "env" else shared
    text = dump(data, flow)
    checked(text)
    checked(f"base: &base {{role: worker, port: 80}}\napp: web\n<<: *base\n{text}")


@settings(max_examples=60, **FAST)
@given(
    width=st.integers(2, 12),
    levels=st.integers(1, 12),
    item=st.sampled_from(['"lol"', "[]", "{a: b}", '"' + "x" * 200 + '"']),
    where=st.sampled_from(["app", "role", "env: {A", "command", "repo: {url", "unknown", "<<"]),
)
def test_alias_bombs_take_little_time_and_memory(width, levels, item, where):
    lines = [f"l0: &l0 [{', '.join([item] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    top = f"*l{levels - 1}"
    closing = "}" if "{" in where else ""
    lines.append(f"{where}: {top}{closing}")
    text = "\n".join(lines) + "\n"
    tracemalloc.start()
    try:
        checked(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


@settings(max_examples=250, **FAST)
@given(
    tag=st.sampled_from(TAGS),
    value=st.one_of(st.sampled_from(["x", "8000", "2024-01-01", "true", "~", "[a, b]", "{a: b}", "AAAA", "1.5", ""]), st.text(max_size=20).map(json.dumps)),
    where=st.sampled_from(["app: {}", "port: {}", "env: {{A: {}}}", "{}", "command: [{}]", "? {}\n: x", "role: worker\nrepo: {}"]),
)
def test_tags_give_plain_values_or_a_clear_error(tag, value, where):
    result = checked("app: web\n" + where.format(f"{tag} {value}") + "\n")
    if tag in ("!!timestamp", "!!binary", "!!set", "!!omap", "!!python/object:os.system", "!custom"):
        assert not result.ok


@settings(max_examples=150, **FAST)
@given(
    depth=st.integers(1, 3000),
    style=st.sampled_from(["[", "{a: ", "- ", "block-map", "mixed"]),
    field=st.sampled_from(["app", "env", "command", "x"]),
)
def test_nesting_of_any_depth(depth, style, field):
    if style == "[":
        body = "[" * depth + "]" * depth
    elif style == "{a: ":
        body = "{a: " * depth + "x" + "}" * depth
    elif style == "- ":
        body = "\n" + "- " * depth + "x"
    elif style == "block-map":
        depth = min(depth, 350)  # one space per level: 350 levels is ~60 KB
        body = "\n" + "\n".join(" " * (level + 1) + f"k{level}:" for level in range(depth)) + " x"
    else:
        body = "[" + "{a: [" * depth + "]}" * depth + "]"
    result = checked(f"role: worker\n{field}: {body}\n")
    assert not result.ok


LIMITED = [
    ("repo.url", fieldchecks.MAX_REPO_URL, "https://h/"),
    ("repo.branch", fieldchecks.MAX_BRANCH, ""),
    ("build.dockerfile", fieldchecks.MAX_PATH, ""),
    ("build.test", fieldchecks.MAX_COMMAND, ""),
    ("migrations.command", fieldchecks.MAX_COMMAND, ""),
    ("healthcheck", fieldchecks.MAX_HTTP_PATH, "/"),
    ("namespace", fieldchecks.MAX_NAMESPACE, ""),
    ("services.postgres.database", fieldchecks.MAX_DATABASE, ""),
    ("app", fieldchecks.MAX_APP_NAME, ""),
    ("env.A", fieldchecks.MAX_ENV_VALUE, ""),
]


def nested(path, value):
    data = value
    for part in reversed(path.split(".")):
        data = {part: data}
    return data


@settings(max_examples=250, **FAST)
@given(
    field=st.sampled_from(LIMITED),
    length=st.one_of(st.integers(0, 70_000), st.sampled_from([-1, 0, 1])),
    char=st.sampled_from(["a", "-", "/", "é", " "]),
    near=st.booleans(),
)
def test_string_lengths_around_every_limit(field, length, char, near):
    path, limit, prefix = field
    if near:
        length = limit + max(-1, min(1, length))
    value = prefix + char * max(0, length - len(prefix))
    data = {"app": "web", "role": "webserver", "port": 80}
    if path == "app":
        data["app"] = value
    else:
        data.update(nested(path, value))
        if path.startswith("repo.") and path != "repo.url":
            data["repo"]["url"] = "https://git.example.com/x.git"
    result = checked(dump(data, False), directory=None)
    if len(value) > limit:
        assert not result.ok
        # Named at its field, unless the whole file is over the size cap.
        assert any(error.field == path or yamlsafe.MAX_BYTES_SETTING in error.message for error in result.errors), result.errors


@settings(max_examples=200, **FAST)
@given(
    scheme=st.sampled_from(["https", "http", "ssh", "git", "file", "ext", ""]),
    password=st.booleans(),
    host=st.sampled_from(["git.example.com", "[::1]", "[bad", "", "h" * 300]),
    port=st.sampled_from(["", ":99999", ":abc", ":0", ":8080", ":-1", ":", ":65536", ":1" + "0" * 30]),
    path=st.text(max_size=30),
)
def test_repository_urls_never_raise_nor_show_a_password(scheme, password, host, port, path):
    userinfo = f"deploy:{SECRET}@" if password else ""
    url = f"{scheme}://{userinfo}{host}{port}/{path}" if scheme else f"{userinfo}{host}{port}/{path}"
    result = checked(dump({"app": "web", "role": "worker", "repo": {"url": url}}, False))
    # An empty port ("host:/") is the scheme's default, to urlsplit and git alike.
    if password or port not in ("", ":", ":8080"):
        assert not result.ok


@settings(max_examples=300, **FAST)
@given(text=st.text(max_size=3000))
def test_any_text(text):
    checked(text)


@settings(max_examples=300, **FAST)
@given(text=st.text(alphabet=YAML_ALPHABET, max_size=2000))
def test_any_text_made_of_yaml_punctuation(text):
    checked(text)


@settings(max_examples=150, **FAST)
@given(raw=st.binary(max_size=3000))
def test_any_bytes(raw):
    checked(raw)


EXAMPLE = """\
app: web
role: webserver
repo:
  url: https://git.example.com/acme/shop.git
  branch: main
build:
  dockerfile: Dockerfile
  test: make test
services:
  postgres:
    database: shop
migrations:
  command: ./manage.py migrate --noinput
port: 8000
domains: [shop.example.com, www.example.com]
https: both
healthcheck: /healthz
replicas: 2
env: {LOG_LEVEL: info, WORKERS: 4}
"""


@settings(max_examples=300, **FAST)
@given(edits=st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.sampled_from(["insert", "delete", "replace"]), st.sampled_from(YAML_ALPHABET)), min_size=1, max_size=8))
def test_edits_of_a_valid_file(edits):
    text = EXAMPLE
    for position, operation, char in edits:
        position = min(position, len(text))
        if operation == "insert":
            text = text[:position] + char + text[position:]
        elif operation == "delete":
            text = text[:position] + text[position + 1:]
        else:
            text = text[:position] + char + text[position + 1:]
    checked(text)


LABEL = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?\Z")
GOOD_DOMAIN = st.builds(lambda labels, tld: ".".join(labels + [tld]), st.lists(LABEL, min_size=1, max_size=4),
                        st.sampled_from(["com", "example", "localhost", "xn--p1ai", "io"]))
ANY_DOMAIN = st.one_of(
    GOOD_DOMAIN, st.text(max_size=300), st.integers(), st.none(), st.sampled_from(TRICKY_SCALARS),
    GOOD_DOMAIN.map(lambda name: f"*.{name}"), GOOD_DOMAIN.map(lambda name: f"https://{name}/"),
    st.ip_addresses().map(str), GOOD_DOMAIN.map(lambda name: name + "."),
)


@settings(max_examples=300, **FAST)
@given(names=st.lists(ANY_DOMAIN, max_size=120), https=st.sampled_from([None, "redirect", "both", "off", "on", False, True]),
       flow=st.booleans())
def test_any_list_of_domains(names, https, flow):
    data = {"app": "web", "role": "webserver", "domains": names}
    if https is not None:
        data["https"] = https
    result = checked(dump(data, flow))
    if result.ok:
        assert list(result.spec.domains) == list(dict.fromkeys(name.lower() for name in names))
        assert result.spec.https == {None: "redirect", False: "off"}.get(https, https)


@settings(max_examples=200, **FAST)
@given(names=st.lists(GOOD_DOMAIN, min_size=1, max_size=100, unique_by=str.lower))
def test_good_domains_are_accepted_lower_cased(names):
    result = checked(dump({"app": "web", "role": "webserver", "domains": names}, False))
    assert result.ok, result.errors
    assert result.spec.domains == tuple(name.lower() for name in names)


def test_the_example_itself_is_valid():
    assert checked(EXAMPLE).ok


@pytest.mark.parametrize("value", TRICKY_SCALARS)
def test_tricky_plain_scalars_unquoted(value):
    checked(f"app: web\nrole: worker\nport: {value}\nenv: {{A: {value}}}\n")


def test_yamlsafe_raises_only_its_own_errors_or_yamls():
    for text in ("a: !!timestamp x", "[" * 40 + "]" * 40, "a: *nope", "a: [", "\x00"):
        with pytest.raises((yamlsafe.Refused, yaml.YAMLError)):
            yamlsafe.load(text)
