"""Discovery: NORN_APPS_DIR/*/infraspec.yaml kept in step with the App table."""

import os

import pytest

from apps_registry import discovery
from apps_registry.models import App

pytestmark = pytest.mark.django_db

GOOD = """
app: {name}
role: worker
repo:
  url: https://git.example.com/{name}.git
"""


def test_new_apps_appear(write_spec, apps_dir):
    write_spec("alpha", GOOD.format(name="alpha"))
    write_spec("beta", GOOD.format(name="beta"))
    report = discovery.sync()
    assert report.added == ["alpha", "beta"]
    alpha = App.objects.get(name="alpha")
    assert alpha.status == App.Status.VALID
    assert alpha.role == "worker"
    assert alpha.repo_url == "https://git.example.com/alpha.git"
    assert alpha.branch == "main"
    assert alpha.directory == str(apps_dir / "alpha")
    assert alpha.spec["namespace"] == "default"


def test_sync_is_idempotent(write_spec):
    write_spec("alpha", GOOD.format(name="alpha"))
    discovery.sync()
    before = App.objects.get(name="alpha").updated_at
    report = discovery.sync()
    assert report.unchanged == ["alpha"] and not report.updated and not report.added
    assert App.objects.get(name="alpha").updated_at == before


def test_changed_spec_updates(write_spec):
    path = write_spec("alpha", GOOD.format(name="alpha"))
    discovery.sync()
    path.write_text(GOOD.format(name="alpha").replace("worker", "webserver") + "port: 8080\n")
    report = discovery.sync()
    assert report.updated == ["alpha"]
    alpha = App.objects.get(name="alpha")
    assert (alpha.role, alpha.spec["port"]) == ("webserver", 8080)


def test_spec_that_breaks_keeps_last_valid_spec_and_shows_errors(write_spec):
    path = write_spec("alpha", GOOD.format(name="alpha"))
    discovery.sync()
    path.write_text(GOOD.format(name="alpha") + "replicas: lots\n")
    discovery.sync()
    alpha = App.objects.get(name="alpha")
    assert alpha.status == App.Status.INVALID
    assert alpha.spec["role"] == "worker"
    assert len(alpha.errors) == 1 and "replicas: 'lots' is not a whole number" in alpha.errors[0]
    path.write_text(GOOD.format(name="alpha"))
    discovery.sync()
    alpha.refresh_from_db()
    assert (alpha.status, alpha.errors) == (App.Status.VALID, [])


def test_removed_apps_are_marked_missing_not_deleted(write_spec, apps_dir):
    path = write_spec("alpha", GOOD.format(name="alpha"))
    discovery.sync()
    path.unlink()
    report = discovery.sync()
    assert report.missing == ["alpha"]
    alpha = App.objects.get(name="alpha")
    assert alpha.status == App.Status.MISSING
    assert alpha.missing_since is not None
    # It comes back when the file does.
    write_spec("alpha", GOOD.format(name="alpha"))
    assert discovery.sync().updated == ["alpha"]
    alpha.refresh_from_db()
    assert (alpha.status, alpha.missing_since) == (App.Status.VALID, None)


def test_one_broken_spec_does_not_hide_the_others(write_spec):
    write_spec("alpha", GOOD.format(name="alpha"))
    write_spec("broken", "app: broken\nrole: [worker\n")
    write_spec("mismatch", GOOD.format(name="other"))
    write_spec("zulu", GOOD.format(name="zulu"))
    report = discovery.sync()
    assert report.added == ["alpha", "broken", "mismatch", "zulu"]
    assert sorted(report.invalid) == ["broken", "mismatch"]
    statuses = dict(App.objects.values_list("name", "status"))
    assert statuses == {"alpha": "valid", "broken": "invalid", "mismatch": "invalid", "zulu": "valid"}
    broken = App.objects.get(name="broken")
    assert "YAML syntax error" in broken.errors[0]
    assert "does not match its directory 'mismatch'" in App.objects.get(name="mismatch").errors[0]


def test_directories_without_infraspec_and_hidden_ones_are_ignored(write_spec, apps_dir):
    (apps_dir / "notes").mkdir()
    (apps_dir / "notes" / "README").write_text("not an app")
    write_spec(".hidden", GOOD.format(name="hidden"))
    (apps_dir / "loose-file.yaml").write_text("app: x")
    assert discovery.sync().added == []


def test_missing_apps_dir_is_not_an_error(settings, tmp_path):
    settings.NORN_APPS_DIR = tmp_path / "nope"
    report = discovery.sync()
    assert report.added == [] and report.missing == []


def test_ensure_fresh_picks_up_new_and_changed_specs_without_restart(write_spec):
    write_spec("alpha", GOOD.format(name="alpha"))
    assert discovery.ensure_fresh().added == ["alpha"]
    # Nothing changed: no sync at all.
    assert discovery.ensure_fresh() is None
    write_spec("beta", GOOD.format(name="beta"))
    assert discovery.ensure_fresh().added == ["beta"]
    path = write_spec("alpha", GOOD.format(name="alpha") + "replicas: 2\n")
    os.utime(path, ns=(1, 1))  # even an edit that keeps an old mtime is seen (size changed)
    assert discovery.ensure_fresh().updated == ["alpha"]


def test_app_list_page_shows_new_directory_and_errors(write_spec, admin_client):
    write_spec("alpha", GOOD.format(name="alpha"))
    response = admin_client.get("/")
    assert b"alpha" in response.content
    write_spec("broken", "app: broken\nrole: webapp\n")
    response = admin_client.get("/")
    assert b"broken" in response.content
    assert b"&#x27;webapp&#x27; is not a role" in response.content


def test_admin_lists_apps_with_role_repo_validity_and_errors(write_spec, admin_client):
    write_spec("alpha", GOOD.format(name="alpha"))
    write_spec("broken", "app: broken\nrole: webapp\nport: 0\n")
    response = admin_client.get("/admin/apps_registry/app/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "https://git.example.com/alpha.git" in html
    assert "Invalid infraspec" in html and "Valid" in html
    assert "&#x27;webapp&#x27; is not a role; use one of webserver, worker, cron" in html
    assert "0 is not a port" in html
    response = admin_client.get("/admin/apps_registry/app/?q=alpha")
    assert "alpha" in response.content.decode() and "webapp" not in response.content.decode()
    detail = admin_client.get(f"/admin/apps_registry/app/{App.objects.get(name='broken').pk}/change/")
    assert detail.status_code == 200 and "0 is not a port" in detail.content.decode()


def test_admin_cannot_add_or_edit_registry_rows(write_spec, admin_client):
    write_spec("alpha", GOOD.format(name="alpha"))
    discovery.sync()
    assert admin_client.get("/admin/apps_registry/app/add/").status_code == 403
    pk = App.objects.get(name="alpha").pk
    response = admin_client.post(f"/admin/apps_registry/app/{pk}/change/", {"name": "evil"})
    assert response.status_code == 403
    assert App.objects.get(pk=pk).name == "alpha"


MARKER = "NORN-SECRET-MARKER-51c9"


@pytest.fixture
def secret_outside(tmp_path):
    """A file outside NORN_APPS_DIR whose content, were it read, would be
    echoed in a validation error (its app name is invalid)."""
    directory = tmp_path / "outside"
    directory.mkdir()
    path = directory / "infraspec.yaml"
    path.write_text(f"app: {MARKER}\nrole: {MARKER}\n")
    return path


def test_infraspec_symlinked_out_of_the_apps_dir_is_listed_invalid_and_never_read(
    write_spec, apps_dir, secret_outside, admin_client
):
    write_spec("alpha", GOOD.format(name="alpha"))
    (apps_dir / "evil").mkdir()
    (apps_dir / "evil" / "infraspec.yaml").symlink_to(secret_outside)
    (apps_dir / "evil-dir").symlink_to(secret_outside.parent)
    report = discovery.sync()
    assert report.added == ["alpha", "evil", "evil-dir"] and sorted(report.invalid) == ["evil", "evil-dir"]
    for name in ("evil", "evil-dir"):
        app = App.objects.get(name=name)
        assert app.status == App.Status.INVALID
        assert app.errors == [
            f"{apps_dir / name / 'infraspec.yaml'}: cannot be read: resolves to {secret_outside}, outside "
            f"NORN_APPS_DIR ({apps_dir}); Norn reads only files inside it, so it was not read"
        ]
        assert MARKER not in str(app.errors) + str(app.spec)
    # Synced again, nothing changed: the refusal is stable, not re-reported.
    assert sorted(discovery.sync().unchanged) == ["alpha", "evil", "evil-dir"]
    for url in ("/", "/apps/evil/", "/apps/evil-dir/", "/admin/apps_registry/app/"):
        html = admin_client.get(url).content.decode()
        assert MARKER not in html, url
    assert "outside NORN_APPS_DIR" in admin_client.get("/apps/evil/").content.decode()


def test_validate_infraspec_refuses_the_symlink_without_showing_its_target(write_spec, apps_dir, secret_outside):
    from io import StringIO

    from django.core.management import call_command

    (apps_dir / "evil").mkdir()
    (apps_dir / "evil" / "infraspec.yaml").symlink_to(secret_outside)
    for args in ((), ("evil",), (str(apps_dir / "evil"),)):
        out, err = StringIO(), StringIO()
        with pytest.raises(SystemExit):
            call_command("validate_infraspec", *args, stdout=out, stderr=err)
        assert "outside NORN_APPS_DIR" in err.getvalue(), args
        assert MARKER not in out.getvalue() + err.getvalue()
