"""`manage.py tokens create|list|revoke` as real processes: the token printed
once and alone on stdout (and accepted by the server's check), listed by
prefix only, revoked by prefix, id or the token itself; unknown users and
tokens exit 2."""

import json

import pytest
from django.contrib.auth.models import Permission, User

from deployments.models import ApiToken
from norn_project import cli
from tests.support.commands import manage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice():
    user = User.objects.create_user("alice")
    for codename in ("view_deployment", "start_deployment"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def create(user="alice", name="laptop"):
    result = manage("tokens", "create", "--user", user, "--name", name)
    assert result.returncode == 0, result.stderr
    return result


def test_create_prints_the_token_alone_on_stdout_and_it_works(alice):
    result = create()
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # `TOKEN=$(manage.py tokens create ...)` gets it and nothing else
    assert ApiToken.authenticate(token) == alice
    row = ApiToken.objects.get()
    assert (row.user, row.name, row.prefix) == (alice, "laptop", token[:12])
    assert row.digest == ApiToken.hash(token) and token not in (row.prefix + row.digest)
    assert f"Created token {token[:12]}… (id {row.pk}) for alice (laptop)" in result.stderr
    assert token not in result.stderr
    assert "Note:" not in result.stderr  # alice may do both


def test_create_warns_when_the_user_may_not_use_it_for_the_cli():
    User.objects.create_user("viewer")
    result = create("viewer")
    assert "Note: viewer may not follow deployments or deploy" in result.stderr
    assert ApiToken.authenticate(result.stdout.strip()).username == "viewer"


def test_list_shows_prefix_user_name_created_and_last_used_never_the_token(alice):
    bob = User.objects.create_user("bob")
    first = create().stdout.strip()
    second = create("bob", "ci runner").stdout.strip()
    ApiToken.authenticate(first)  # used once: it has a last-used time
    result = manage("tokens", "list")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["ID", "PREFIX", "USER", "CREATED", "LAST", "USED", "NAME"]
    assert len(lines) == 2
    assert lines[0].split()[1:3] == [first[:12] + "…", "alice"] and lines[0].split()[-1] == "laptop"
    assert lines[0].split()[5] != "never"
    assert lines[1].split()[1:3] == [second[:12] + "…", "bob"] and lines[1].split()[5:] == ["never", "ci", "runner"]
    for row in ApiToken.objects.all():
        assert row.digest not in result.stdout
    assert first not in result.stdout and second not in result.stdout

    only_bob = manage("tokens", "list", "--user", "bob", "--json")
    records = [json.loads(line) for line in only_bob.stdout.splitlines()]
    assert [(r["prefix"], r["user"], r["name"], r["last_used_at"]) for r in records] == \
        [(second[:12], "bob", "ci runner", None)]
    assert set(records[0]) == {"id", "prefix", "user", "name", "created_at", "last_used_at"}
    every = [json.loads(line) for line in manage("tokens", "list", "--json").stdout.splitlines()]
    assert every[0]["last_used_at"] is not None and every[0]["user"] == "alice"
    assert bob.api_tokens.count() == 1


def test_list_of_nothing_says_so(alice):
    assert manage("tokens", "list").stdout == "No API tokens.\n"
    assert manage("tokens", "list", "--user", "alice").stdout == "No API tokens for alice.\n"
    assert manage("tokens", "list", "--json").stdout == ""


@pytest.mark.parametrize("by", ["prefix", "prefix as listed", "id", "token"])
def test_revoke_by_prefix_id_or_the_token_itself(alice, by):
    keep = create(name="keep").stdout.strip()
    token = create().stdout.strip()
    row = ApiToken.objects.get(name="laptop")
    named = {"prefix": row.prefix, "prefix as listed": row.prefix + "…", "id": str(row.pk), "token": token}[by]
    result = manage("tokens", "revoke", named)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Revoked token {row.prefix}… (id {row.pk}) of alice (laptop)\n"
    assert ApiToken.authenticate(token) is None
    assert ApiToken.authenticate(keep) == alice
    again = manage("tokens", "revoke", named)
    assert again.returncode == cli.BAD_REQUEST
    assert token not in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("create", "--user", "nobody", "--name", "x"), "--user: no user 'nobody'"),
        (("create", "--user", "alice", "--name", "  "), "--name: give what the token is for, 1 to 100 characters"),
        (("create", "--user", "alice", "--name", "n" * 101), "--name: give what the token is for, 1 to 100 characters"),
        (("create", "--user", "gone", "--name", "x"), "--user: gone is inactive: Norn would refuse a token of theirs"),
        (("list", "--user", "nobody"), "--user: no user 'nobody'"),
        (("revoke", "norn_abcdefg"), "no token with prefix 'norn_abcdefg'"),
        (("revoke", "norn_"), "give its id or its whole prefix (12 characters"),
        (("revoke", "4242"), "no token with id 4242"),
        (("revoke", "norn_" + "Q" * 43), "no such token: it was revoked, or this Norn never issued it"),
    ],
    ids=["unknown user", "blank name", "long name", "inactive user", "list unknown user", "unknown prefix",
         "short prefix", "unknown id", "unknown token"],
)
def test_unknown_users_and_tokens_exit_2(alice, args, message):
    User.objects.create_user("gone", is_active=False)
    create()
    result = manage("tokens", *args)
    assert result.returncode == cli.BAD_REQUEST, result.stdout + result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: ") and message in last, last
    assert "Traceback" not in result.stderr
    assert ApiToken.objects.count() == 1
    assert "Q" * 43 not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [((), "the following arguments are required: create|list|revoke"),
     (("make",), "invalid choice: 'make'"),
     (("create", "--user", "alice"), "the following arguments are required: --name")],
    ids=["no action", "unknown action", "missing name"],
)
def test_usage_errors_exit_2(alice, args, message):
    result = manage("tokens", *args)
    assert result.returncode == cli.BAD_REQUEST, result.stdout + result.stderr
    assert message in result.stderr
    assert not ApiToken.objects.exists()
