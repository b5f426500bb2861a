"""infraspec.yaml validation: every field's good and bad values, and the error texts."""

import os
import textwrap

import pytest
import yaml

from apps_registry import infraspec

BASE = {
    "app": "web",
    "role": "webserver",
}


def parse_dict(data, directory="web"):
    return infraspec.parse(yaml.safe_dump(data, sort_keys=False), "apps/web/infraspec.yaml", directory)


def with_field(**fields):
    data = dict(BASE)
    data.update(fields)
    return data


def only_error(result):
    assert not result.ok, "expected a validation error"
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


def test_minimal_spec_gets_defaults():
    result = parse_dict(BASE)
    assert result.ok, result.errors
    assert result.data == {
        "app": "web",
        "role": "webserver",
        "repo": None,
        "build": None,
        "services": None,
        "migrations": None,
        "port": None,
        "domains": [],
        "https": "redirect",
        "healthcheck": None,
        "replicas": None,  # not declared: Spec.replicas is 1, and Kubernetes leaves the field to an autoscaler
        "namespace": "default",
        "schedule": None,
        "command": None,
        "env": {},
        "autoRollback": True,
        "snapshots": {"retain": 5},
        "resources": None,
        "security": {"runAsUser": None, "runAsNonRoot": True},
    }


def test_full_example_from_the_docs_is_valid():
    text = textwrap.dedent(
        """
        app: shop
        role: webserver
        repo:
          url: https://git.example.com/acme/shop.git
          branch: release/2024
          autoDeploy: true
        build:
          dockerfile: docker/web.Dockerfile
          test: make test
        services:
          postgres:
            database: shop
        migrations:
          command: ./manage.py migrate --noinput
        port: 8000
        healthcheck: /healthz
        replicas: 3
        namespace: shop-prod
        env:
          LOG_LEVEL: info
          WORKERS: 4
          DEBUG: false
        """
    )
    result = infraspec.parse(text, "shop/infraspec.yaml", "shop")
    assert result.ok, [str(e) for e in result.errors]
    spec = result.data
    assert spec["repo"] == {"url": "https://git.example.com/acme/shop.git", "branch": "release/2024", "autoDeploy": True}
    assert spec["build"] == {"dockerfile": "docker/web.Dockerfile", "test": "make test"}
    assert spec["services"] == {"postgres": {"database": "shop"}}
    assert spec["migrations"] == {"command": "./manage.py migrate --noinput"}
    assert (spec["port"], spec["healthcheck"], spec["replicas"], spec["namespace"]) == (8000, "/healthz", 3, "shop-prod")
    # env values are strings, as a process environment needs them.
    assert spec["env"] == {"LOG_LEVEL": "info", "WORKERS": "4", "DEBUG": "false"}


def test_repo_and_build_defaults():
    result = parse_dict(with_field(repo={"url": "git@github.com:acme/web.git"}, build={}))
    assert result.ok, result.errors
    assert result.data["repo"] == {"url": "git@github.com:acme/web.git", "branch": "main", "autoDeploy": False}
    assert result.data["build"] == {"dockerfile": "Dockerfile", "test": None}


@pytest.mark.parametrize("name", ["web", "a", "shop-2", "a0", "a" * 63])
def test_valid_app_names(name):
    assert parse_dict(with_field(app=name), directory=name).ok


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Web", "not a valid app name"),
        ("-web", "not a valid app name"),
        ("web_app", "not a valid app name"),
        ("web.app", "not a valid app name"),
        # The Service named after the app must be an RFC 1035 label.
        ("0web", "starting with a letter"),
        ("web-", "ending with a letter or digit"),
        ("a" * 64, "at most 63"),
        (12, "is not a string"),
    ],
)
def test_invalid_app_names(name, expected):
    result = parse_dict(with_field(app=name), directory=str(name))
    error = only_error(result)
    assert error.field == "app"
    assert expected in error.message
    assert repr(name) in error.message


def test_app_must_equal_its_directory():
    error = only_error(parse_dict(BASE, directory="shop"))
    assert error.field == "app"
    assert "'web' does not match its directory 'shop'" in error.message


@pytest.mark.parametrize("role", ["webserver", "worker"])
def test_long_running_roles(role):
    assert parse_dict(with_field(role=role)).ok


def test_unknown_role_lists_the_valid_ones():
    error = only_error(parse_dict(with_field(role="webapp")))
    assert error.field == "role"
    assert error.message == "'webapp' is not a role; use one of webserver, worker, cron"


@pytest.mark.parametrize("missing", ["app", "role"])
def test_required_top_level_fields(missing):
    data = dict(BASE)
    del data[missing]
    errors = [e for e in parse_dict(data).errors if e.field == missing]
    assert errors and errors[0].message == "is required"


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/acme/web.git",
        "http://127.0.0.1:8080/web.git",
        "ssh://git@git.example.com:2222/acme/web.git",
        "git://git.example.com/web.git",
        "file:///srv/git/web.git",
        "/srv/git/web.git",
        "git@github.com:acme/web.git",
    ],
)
def test_valid_repo_urls(url):
    assert parse_dict(with_field(repo={"url": url})).ok


@pytest.mark.parametrize(
    "url, expected",
    [
        ("--upload-pack=touch /tmp/x", "starts with '-'"),
        ("ext::sh -c touch% /tmp/pwned", "ext::"),
        ("fd::17", "remote-helper transport"),
        ("ftp://example.com/web.git", "has scheme 'ftp'"),
        ("relative/path.git", "has scheme '(none)'"),
        ("https://example.com/a repo.git", "white space"),
        ("https:///nohost.git", "has no host"),
    ],
)
def test_invalid_repo_urls(url, expected):
    error = only_error(parse_dict(with_field(repo={"url": url})))
    assert error.field == "repo.url"
    assert expected in error.message


def test_repo_url_with_a_token_is_rejected_without_echoing_it():
    error = only_error(parse_dict(with_field(repo={"url": "https://bot:s3cr3t-token@git.example.com/web.git"})))
    assert error.field == "repo.url"
    assert "NORN_GIT_TOKEN" in error.message
    assert "s3cr3t-token" not in str(error)
    assert "bot:***@git.example.com" in error.message


def test_repo_needs_a_url():
    error = only_error(parse_dict(with_field(repo={"branch": "main"})))
    assert (error.field, error.message) == ("repo.url", "is required")


@pytest.mark.parametrize("branch", ["main", "release/1.2", "feature-x", "v1.0"])
def test_valid_branches(branch):
    assert parse_dict(with_field(repo={"url": "/srv/web.git", "branch": branch})).ok


@pytest.mark.parametrize(
    "branch",
    ["-f", "a..b", "has space", "a~1", "a^", "a:b", "ref.lock", "trailing/", ".hidden", "x@{1}", "a//b", "@"],
)
def test_invalid_branches(branch):
    error = only_error(parse_dict(with_field(repo={"url": "/srv/web.git", "branch": branch})))
    assert error.field == "repo.branch"
    assert "not a valid git branch name" in error.message


def test_auto_deploy_must_be_boolean():
    error = only_error(parse_dict(with_field(repo={"url": "/srv/web.git", "autoDeploy": "sometimes"})))
    assert error.field == "repo.autoDeploy"
    assert error.message == "'sometimes' is not true or false"


@pytest.mark.parametrize("dockerfile", ["../Dockerfile", "/etc/Dockerfile", " "])
def test_dockerfile_must_stay_inside_the_repo(dockerfile):
    error = only_error(parse_dict(with_field(build={"dockerfile": dockerfile})))
    assert error.field == "build.dockerfile"
    assert "path inside the repository" in error.message


def test_blank_test_command_is_an_error():
    error = only_error(parse_dict(with_field(build={"test": "   "})))
    assert error.field == "build.test"


def test_services_postgres_database():
    assert parse_dict(with_field(services={"postgres": {"database": "shop_db"}})).ok
    error = only_error(parse_dict(with_field(services={"postgres": {"database": "shop-db; drop"}})))
    assert error.field == "services.postgres.database"
    assert "not a valid database name" in error.message
    error = only_error(parse_dict(with_field(services={"postgres": {}})))
    assert (error.field, error.message) == ("services.postgres.database", "is required")


def test_unknown_service_is_an_error():
    error = only_error(parse_dict(with_field(services={"mysql": {"database": "x"}})))
    assert error.field == "services.mysql"
    assert "valid keys here are postgres" in error.message


def test_migrations_need_a_command():
    assert parse_dict(with_field(migrations={"command": "make migrate"})).ok
    error = only_error(parse_dict(with_field(migrations={})))
    assert (error.field, error.message) == ("migrations.command", "is required")


@pytest.mark.parametrize("port, ok", [(1, True), (8080, True), (65535, True), (0, False), (65536, False), ("80", False), (True, False)])
def test_port(port, ok):
    result = parse_dict(with_field(port=port))
    assert result.ok == ok
    if not ok:
        assert only_error(result).field == "port"


@pytest.mark.parametrize("path, ok", [("/healthz", True), ("/", True), ("healthz", False), ("/a b", False)])
def test_healthcheck(path, ok):
    result = parse_dict(with_field(port=8080, healthcheck=path))
    assert result.ok == ok
    if not ok:
        assert only_error(result).field == "healthcheck"


def test_healthcheck_needs_a_port_or_domains():
    error = only_error(parse_dict(with_field(healthcheck="/healthz")))
    assert error.message == "needs port or domains (the new version is probed on its $PORT); add one"


@pytest.mark.parametrize("replicas, ok", [(0, True), (5, True), (1000, True), (-1, False), (1001, False), ("three", False), (1.5, False)])
def test_replicas(replicas, ok):
    result = parse_dict(with_field(replicas=replicas))
    assert result.ok == ok


@pytest.mark.parametrize("namespace, ok", [("default", True), ("team-a", True), ("Team", False), ("-a", False), ("a-", False), ("a" * 64, False)])
def test_namespace(namespace, ok):
    result = parse_dict(with_field(namespace=namespace))
    assert result.ok == ok
    if not ok:
        assert "not a valid Kubernetes namespace" in only_error(result).message


CRON = {"app": "web", "role": "cron", "schedule": "*/15 * * * *", "command": "echo hi"}


def test_cron_app():
    result = parse_dict(CRON)
    assert result.ok, result.errors
    assert result.data["replicas"] is None
    assert parse_dict({**CRON, "command": ["python", "report.py"]}).ok


@pytest.mark.parametrize("missing", ["schedule", "command"])
def test_cron_app_needs_schedule_and_command(missing):
    data = {k: v for k, v in CRON.items() if k != missing}
    error = only_error(parse_dict(data))
    assert (error.field, error.message) == (missing, "is required for a cron app")


@pytest.mark.parametrize("schedule", ["every day", "* * *", "61 * * * *", "* * * * * *"])
def test_invalid_schedules(schedule):
    error = only_error(parse_dict({**CRON, "schedule": schedule}))
    assert error.field == "schedule"
    assert "not a cron schedule" in error.message


@pytest.mark.parametrize("command", ["", [], ["ok", ""], [1, 2], {"a": 1}])
def test_invalid_commands(command):
    result = parse_dict({**CRON, "command": command})
    assert any(e.field == "command" for e in result.errors)


@pytest.mark.parametrize("field, value", [("port", 80), ("healthcheck", "/"), ("replicas", 2)])
def test_cron_apps_reject_server_fields(field, value):
    errors = parse_dict({**CRON, field: value}).errors
    assert any(e.field == field and "only for webserver and worker" in e.message for e in errors)


@pytest.mark.parametrize("field, value", [("schedule", "* * * * *"), ("command", "echo")])
def test_servers_reject_cron_fields(field, value):
    error = only_error(parse_dict(with_field(**{field: value})))
    assert error.message == "is only for cron apps; this app's role is webserver"


def test_env_names_and_values():
    errors = parse_dict(with_field(env={"GOOD": "x", "1BAD": "x", "NESTED": {"a": 1}, "EMPTY": None})).errors
    fields = sorted(e.field for e in errors)
    assert fields == ["env.1BAD", "env.EMPTY", "env.NESTED"]
    error = only_error(parse_dict(with_field(env=["A=1"])))
    assert error.message == "['A=1'] is not a mapping"


def test_unknown_keys_are_errors_at_every_level():
    result = parse_dict(with_field(replica=2, build={"dockerfil": "Dockerfile"}))
    fields = {e.field: e.message for e in result.errors}
    assert "unknown key 'replica'" in fields["replica"]
    assert "valid keys here are app, role, repo" in fields["replica"]
    assert fields["build.dockerfil"] == "unknown key 'dockerfil'; valid keys here are dockerfile, test"


def test_all_errors_of_a_file_are_reported_at_once_with_lines():
    text = "app: Web\nrole: webapp\nport: 99999\nreplicas: three\nextra: 1\n"
    result = infraspec.parse(text, "x/infraspec.yaml", "web")
    assert [(e.line, e.field) for e in result.errors] == [
        (1, "app"),
        (1, "app"),
        (2, "role"),
        (3, "port"),
        (4, "replicas"),
        (5, "extra"),
    ]
    assert str(result.errors[3]) == "x/infraspec.yaml:3: port: 99999 is not a port; use a number from 1 to 65535"


def test_nested_errors_point_at_their_line():
    text = "app: web\nrole: worker\nrepo:\n  url: /srv/web.git\n  branch: -x\n"
    error = only_error(infraspec.parse(text, "f.yaml", "web"))
    assert (error.line, error.field) == (5, "repo.branch")


def test_duplicate_keys_are_errors():
    text = "app: web\nrole: worker\nreplicas: 1\nreplicas: 2\n"
    error = only_error(infraspec.parse(text, "f.yaml", "web"))
    assert (error.line, error.field, error.message) == (4, "replicas", "appears twice; keep one")


def test_yaml_syntax_error_gives_line_and_column():
    text = "app: web\nrole: [worker\nport: 80\n"
    error = only_error(infraspec.parse(text, "apps/web/infraspec.yaml", "web"))
    assert error.line is not None
    assert "YAML syntax error, column" in error.message
    assert str(error).startswith(f"apps/web/infraspec.yaml:{error.line}:")


def test_bad_indentation_is_a_syntax_error():
    error = only_error(infraspec.parse("app: web\n role: worker\n", "f.yaml", "web"))
    assert error.line == 2
    assert "YAML syntax error" in error.message


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(text):
    error = only_error(infraspec.parse(text, "f.yaml", "web"))
    assert "empty" in error.message


@pytest.mark.parametrize("text", ["- app: web\n", "just a string\n"])
def test_top_level_must_be_a_mapping(text):
    error = only_error(infraspec.parse(text, "f.yaml", "web"))
    assert "is not a mapping" in error.message


def test_load_reports_unreadable_files(tmp_path):
    path = tmp_path / "web" / "infraspec.yaml"
    path.parent.mkdir()
    path.write_bytes(b"app: web\nrole: \xff\n")
    error = only_error(infraspec.load(path, "web"))
    assert error.message == "is not UTF-8 text"
    error = only_error(infraspec.load(tmp_path / "nope.yaml"))
    assert "cannot be read" in error.message


def test_shipped_examples(settings):
    from tests.conftest import REPO_ROOT

    examples = REPO_ROOT / "examples"
    assert infraspec.load(examples / "hello-web/infraspec.yaml", "hello-web").ok
    assert infraspec.load(examples / "nightly-report/infraspec.yaml", "nightly-report").ok
    broken = infraspec.load(examples / "broken-spec/infraspec.yaml", "broken-spec")
    assert {e.field for e in broken.errors} == {"app", "role", "repo.url", "repo.branhc", "port", "replicas"}


def test_auto_rollback_defaults_on_for_webservers_only():
    assert parse_dict(BASE).data["autoRollback"] is True
    assert parse_dict(with_field(role="worker")).data["autoRollback"] is False
    assert parse_dict(with_field(autoRollback=False)).data["autoRollback"] is False
    assert parse_dict(with_field(role="worker", autoRollback=True)).data["autoRollback"] is True
    error = only_error(parse_dict(with_field(autoRollback="yes please")))
    assert error.field == "autoRollback"


@pytest.mark.parametrize("retain, ok", [(1, True), (30, True), (0, False), (1001, False), ("all", False)])
def test_snapshot_retention(retain, ok):
    result = parse_dict(with_field(snapshots={"retain": retain}))
    assert result.ok == ok
    if ok:
        assert result.data["snapshots"] == {"retain": retain}
    else:
        assert only_error(result).field == "snapshots.retain"


# --- files that resolve outside NORN_APPS_DIR ----------------------------------

MARKER = "NORN-SECRET-MARKER-7f3a"
# Read and validated, this content would be echoed back: its app name is invalid.
SECRET = f"app: {MARKER}\nrole: worker\n"


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "infraspec.yaml").write_text(SECRET)
    return directory


def test_the_secret_file_would_show_if_it_were_read(outside):
    # Named where it is (validate_infraspec given a path), a file is read:
    # which is also what proves the tests below would catch a leak.
    assert MARKER in str(infraspec.load(outside / "infraspec.yaml", "outside").errors)


@pytest.mark.parametrize("link", ["file", "app directory"])
def test_infraspec_resolving_outside_the_apps_dir_is_refused_unread(tmp_path, settings, outside, link):
    apps = tmp_path / "apps"
    apps.mkdir()
    settings.NORN_APPS_DIR = apps
    if link == "file":
        (apps / "web").mkdir()
        (apps / "web" / "infraspec.yaml").symlink_to(outside / "infraspec.yaml")
    else:
        (apps / "web").symlink_to(outside)
    path = apps / "web" / "infraspec.yaml"
    result = infraspec.load(path, "web")
    error = only_error(result)
    assert error.file == str(path)
    assert error.message == (
        f"cannot be read: resolves to {outside / 'infraspec.yaml'}, outside NORN_APPS_DIR ({apps}); "
        "Norn reads only files inside it, so it was not read"
    )
    assert MARKER not in str(result.errors)


def test_symlinks_that_stay_inside_the_apps_dir_are_followed(tmp_path, settings):
    apps = tmp_path / "apps"
    (apps / "shared").mkdir(parents=True)
    (apps / "shared" / "web.yaml").write_text("app: web\nrole: worker\n")
    (apps / "web").mkdir()
    (apps / "web" / "infraspec.yaml").symlink_to("../shared/web.yaml")
    # NORN_APPS_DIR may itself be reached through a symlink.
    (tmp_path / "link-to-apps").symlink_to(apps)
    settings.NORN_APPS_DIR = tmp_path / "link-to-apps"
    assert infraspec.load(settings.NORN_APPS_DIR / "web" / "infraspec.yaml", "web").ok
    assert infraspec.load(apps / "web" / "infraspec.yaml", "web").ok


def test_a_fifo_in_the_apps_dir_is_refused_not_waited_on(tmp_path, settings):
    settings.NORN_APPS_DIR = tmp_path
    (tmp_path / "web").mkdir()
    os.mkfifo(tmp_path / "web" / "infraspec.yaml")
    error = only_error(infraspec.load(tmp_path / "web" / "infraspec.yaml", "web"))
    assert error.message == "cannot be read: is not a regular file"
