"""Regression tests for the infraspec files that used to take Norn down (issue 10):
each is refused with a clear error, in bounded time and memory, and nothing
else is raised."""

import time
import tracemalloc

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from apps_registry import fieldchecks, infraspec, yamlsafe

FILE = "apps/web/infraspec.yaml"
SECRET = "s3cr3tPW"

# The billion laughs: nine levels of nine aliases, 9^9 strings once expanded.
ALIAS_BOMB = """\
app: web
role: worker
a: &a ["lol-lol-lol", "lol-lol-lol", "lol-lol-lol", "lol-lol-lol", "lol-lol-lol", "lol-lol-lol", "lol-lol-lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
env: {LAUGHS: *i}
"""

# Lists small enough to pass the alias bound, used where the validator puts
# the value in its message: every message must stay short.
LIST_BOMB = """\
a: &a [xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, y, z, w]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
app: *c
role: *c
repo: *c
port: *c
env: {A: *b, B: *b}
command: *b
schedule: *b
"""


def measured(text):
    """parse(text) with its time and peak traced memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = infraspec.parse(text, FILE, "web")
        return result, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def errors_of(text, directory="web"):
    result = infraspec.parse(text, FILE, directory)
    assert not result.ok
    return [str(error) for error in result.errors]


def only_error(text):
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_repo_url_with_a_password_and_a_bad_port_is_an_error_not_a_crash(port):
    error = only_error(f"app: web\nrole: worker\nrepo:\n  url: https://deploy:{SECRET}@git.example.com:{port}/x.git\n")
    assert error.startswith(f"{FILE}:4: repo.url: ")
    assert f"'https://deploy:***@git.example.com:{port}/x.git'" in error
    assert "contains a password or token" in error
    assert SECRET not in error


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_repo_url_with_a_bad_port_is_an_error(port):
    error = only_error(f"app: web\nrole: worker\nrepo:\n  url: https://git.example.com:{port}/x.git\n")
    assert "has a port that is not a number from 1 to 65535" in error


def test_redact_url_never_raises():
    assert fieldchecks.redact_url(f"https://u:{SECRET}@h:99999/x") == "https://u:***@h:99999/x"
    assert fieldchecks.redact_url(f"u:{SECRET}@h:path") == "u:***@h:path"
    assert fieldchecks.redact_url(f"https://u:{SECRET}@[bad/x") == "<unparseable URL>"


def test_repo_url_of_2049_characters_is_an_error():
    url = "https://git.example.com/" + "a" * (2049 - 24)
    assert len(url) == 2049
    error = only_error(f"app: web\nrole: worker\nrepo:\n  url: {url}\n")
    assert error == f"{FILE}:4: repo.url: is 2049 characters long; at most 2048 are allowed"
    url = url[:-1]
    assert infraspec.parse(f"app: web\nrole: worker\nrepo:\n  url: {url}\n", FILE, "web").ok


def test_branch_of_256_characters_is_an_error():
    text = "app: web\nrole: worker\nrepo:\n  url: https://h/x.git\n  branch: {}\n"
    error = only_error(text.format("b" * 256))
    assert error == f"{FILE}:5: repo.branch: is 256 characters long; at most 255 are allowed"
    assert infraspec.parse(text.format("b" * 255), FILE, "web").ok
    # Deploy requests share the rule (Deployment.ref is as wide as App.branch).
    assert fieldchecks.branch_name_problem("b" * 256) == "is 256 characters long (at most 255)"


CRON = "app: web\nrole: cron\nschedule: '0 0 * * *'\ncommand: run\n"
WEB = "app: web\nrole: webserver\nport: 80\n"


@pytest.mark.parametrize(
    "base, path, limit, make",
    [
        (WEB, "repo.branch", 255, lambda n: "b" * n),
        (WEB, "build.dockerfile", 1024, lambda n: "d" * n),
        (WEB, "build.test", 16 * 1024, lambda n: "t" * n),
        (WEB, "migrations.command", 16 * 1024, lambda n: "m" * n),
        (WEB, "healthcheck", 2048, lambda n: "/" + "h" * (n - 1)),
        (CRON, "schedule", 255, lambda n: "0" + " " * (n - 8) + "0 * * *"),
        (CRON, "command", 16 * 1024, lambda n: "c" * n),
        (WEB, "env.A", 32 * 1024, lambda n: "v" * n),
    ],
)
def test_every_string_field_has_a_length_limit(base, path, limit, make):
    def text(value):
        data = yaml.safe_load(base)
        if path.startswith("repo."):
            data["repo"] = {"url": "https://h/x.git"}
        parent, _, leaf = path.rpartition(".")
        (data.setdefault(parent, {}) if parent else data)[leaf] = value
        return yaml.safe_dump(data, width=10**6)

    assert len(make(limit)) == limit
    result = infraspec.parse(text(make(limit)), FILE, "web")
    assert result.ok, result.errors
    errors = errors_of(text(make(limit + 1)))
    assert len(errors) == 1 and f": {path}: " in errors[0], errors
    assert f"at most {limit}" in errors[0]


def test_argv_command_limits():
    many = "app: web\nrole: cron\nschedule: '0 0 * * *'\ncommand: [{}]\n"
    assert "has 1001 items; at most 1000" in only_error(many.format(", ".join(["a"] * 1001)))
    assert "at most 16384 are allowed" in only_error(many.format(", ".join(["a" * 1000] * 17)))


def test_env_name_and_app_name_limits():
    error = only_error(WEB + f"env: {{{'A' * 256}: x}}\n")
    assert "not a valid environment variable name" in error and "at most 255 characters" in error
    assert "at most 63" in errors_of(f"app: {'a' * 64}\nrole: worker\n", directory=None)[0]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 3000 + "]" * 3000,
        "{a: " * 3000 + "x" + "}" * 3000,
        "\n" + "\n".join(" " * (level + 1) + f"k{level}:" for level in range(300)) + " x",
        "\n" + "- " * 3000 + "x",
    ],
    ids=["flow-list", "flow-map", "block-map", "block-list"],
)
def test_3000_deep_nesting_is_an_error_not_a_recursion_error(body):
    result, seconds, _ = measured(f"app: web\nrole: worker\nenv: {body}\n")
    assert not result.ok and len(result.errors) == 1
    assert "nest" in result.errors[0].message
    assert result.errors[0].line is not None
    assert seconds < 1


@pytest.mark.parametrize("tag", ["!!timestamp", "!!binary", "!!set", "!!omap", "!!python/object/apply:os.system", "!local"])
def test_tags_other_than_plain_values_are_refused(tag):
    error = only_error(f"app: {tag} x\nrole: worker\n")
    assert error.startswith(f"{FILE}:1: refused, column 6: the tag {tag} is not allowed")


def test_timestamp_tag_on_the_app_name():
    assert "the tag !!timestamp is not allowed" in only_error("app: !!timestamp x\n")


def test_plain_tags_and_dates_give_plain_values():
    result = infraspec.parse(
        "app: !!str web\nrole: worker\nenv: {DAY: 2024-01-01, WHEN: 2001-12-14t21:59:43.10-05:00, EQ: =, N: !!int 5}\n",
        FILE, "web",
    )
    assert result.ok, result.errors
    assert result.data["env"] == {"DAY": "2024-01-01", "WHEN": "2001-12-14t21:59:43.10-05:00", "EQ": "=", "N": "5"}
    assert "'abc' is tagged !!int but is not one" in only_error("app: web\nrole: worker\nport: !!int abc\n")
    assert "'0b_' looks like a number but is not one" in only_error("app: web\nrole: worker\nport: 0b_\n")


def test_merge_keys_still_work():
    result = infraspec.parse("app: web\n<<: &base {role: worker, replicas: 2}\n", FILE, "web")
    assert result.ok, result.errors
    assert result.data["replicas"] == 2


def test_alias_bomb_is_refused_in_milliseconds_with_little_memory():
    assert len(ALIAS_BOMB.encode()) < 700
    result, seconds, peak = measured(ALIAS_BOMB)
    assert [str(e) for e in result.errors] == [
        f"{FILE}:7: refused, column 8: holds more than 10000 values (each use of an alias counts all "
        "of its value again); an infraspec needs a few dozen"
    ]
    assert seconds < 1
    assert peak < 50 * 1024 * 1024


def test_recursive_and_undefined_aliases():
    assert "used inside its own anchor" in only_error("app: &a [*a]\n")
    assert "found undefined alias" in only_error("app: *nowhere\n")


def test_list_bomb_error_text_is_bounded():
    assert len(LIST_BOMB.encode()) < 500
    result, seconds, _ = measured(LIST_BOMB)
    text = "\n".join(str(error) for error in result.errors)
    assert not result.ok and len(text) < 10_000
    assert f"{FILE}:4: app: [[[...], [...]," in text  # the value is shown, cut short
    assert all(len(str(error)) < 300 for error in result.errors)
    assert seconds < 1


def test_thousands_of_errors_are_cut_to_the_first_twenty():
    text = "app: web\nrole: worker\n" + "".join(f"unknown{n}: x\n" for n in range(3000))
    errors = errors_of(text)
    assert len(errors) == infraspec.MAX_ERRORS + 1
    assert errors[-1] == f"{FILE}: and 2980 more problems; fix these first"
    assert len("\n".join(errors)) < 10_000


def test_a_50_mb_file_is_refused_by_its_size_unread(tmp_path):
    path = tmp_path / "infraspec.yaml"
    with open(path, "wb") as f:
        f.write(b"app: web\nrole: worker\n")
        f.truncate(50 * 1024 * 1024)  # sparse: the test writes 50 MB without the disk
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = infraspec.load(path, directory_name="web")
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [str(e) for e in result.errors] == [
        f"{path}: is 50.0 MiB (52428800 bytes); an infraspec may be at most 65536 bytes "
        "(NORN_INFRASPEC_MAX_BYTES), so it was not read"
    ]
    assert seconds < 1
    assert peak < 1024 * 1024


def test_the_size_cap_is_a_setting(tmp_path, settings):
    settings.NORN_INFRASPEC_MAX_BYTES = 2048
    path = tmp_path / "infraspec.yaml"
    path.write_text("app: web\nrole: worker\n" + "# padding\n" * 300)
    assert "at most 2048 bytes" in str(infraspec.load(path, directory_name="web").errors[0])
    assert "at most 2048 bytes" in str(infraspec.parse(path.read_text(), FILE, "web").errors[0])
    path.write_text("app: web\nrole: worker\n" + "# padding\n" * 100)
    assert infraspec.load(path, directory_name="web").ok


def test_the_size_cap_environment_variable_fails_loudly_on_a_bad_value(monkeypatch):
    monkeypatch.setenv("NORN_INFRASPEC_MAX_BYTES", "131072")
    assert yamlsafe._env_max_bytes() == 131072
    monkeypatch.delenv("NORN_INFRASPEC_MAX_BYTES")
    assert yamlsafe._env_max_bytes() == 65536
    for bad in ("abc", "12", "1e6", str(10**9)):
        monkeypatch.setenv("NORN_INFRASPEC_MAX_BYTES", bad)
        with pytest.raises(ImproperlyConfigured, match=f"NORN_INFRASPEC_MAX_BYTES='{bad}' is not a size in bytes"):
            yamlsafe._env_max_bytes()


def test_non_scalar_keys_and_surrogates():
    assert "a mapping key must be a plain value" in only_error("? [a, b]\n: c\n")
    assert "is not valid Unicode text" in only_error("app: \ud800\n")
    assert "is not UTF-8 text" in str(infraspec.parse_bytes(b"app: \xff\n", FILE).errors[0])
