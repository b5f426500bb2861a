"""`manage.py tokens create|list|revoke`: the API tokens of the CLI and scripts.

`create` prints the token once, alone on stdout, so that
`TOKEN=$(manage.py tokens create --user alice --name laptop)` works; Norn keeps
only its digest (deployments.models.ApiToken). `list` never shows a token or
its digest, only its prefix.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from deployments.cli import BAD_REQUEST, iso, listed
from deployments.cli import Command as NornCommand
from deployments.models import ApiToken

NAME_MAX = ApiToken._meta.get_field("name").max_length
PREFIX_LENGTH = ApiToken._meta.get_field("prefix").max_length
# What a token's user needs for the CLI to follow and queue over the API.
NEEDED = {"deployments.view_deployment": "follow deployments", "deployments.start_deployment": "deploy"}


def as_record(row: ApiToken) -> dict:
    """A token as `list --json` prints it: never the token or its digest."""
    return {"id": row.pk, "prefix": row.prefix, "user": row.user.get_username(), "name": row.name,
            "created_at": iso(row.created_at), "last_used_at": iso(row.last_used_at)}


def find_user(username: str):
    try:
        return get_user_model()._default_manager.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"--user: no user {username!r}", returncode=BAD_REQUEST) from None


def find_token(text: str) -> ApiToken:
    """The token named by its id, its prefix (as `list` shows it) or the whole token."""
    text = text.strip().rstrip("…")
    tokens = ApiToken.objects.select_related("user")
    if text.isdigit():
        row, missing = tokens.filter(pk=int(text)).first(), f"no token with id {text}"
    elif len(text) > PREFIX_LENGTH:
        # A whole token: only the one it is, not another with its prefix. The
        # message does not repeat it (it may be a secret).
        row = tokens.filter(prefix=text[:PREFIX_LENGTH], digest=ApiToken.hash(text)).first()
        missing = "no such token: it was revoked, or this Norn never issued it"
    else:
        row = tokens.filter(prefix=text).first()
        missing = (f"no token with prefix {text!r}; give its id or its whole prefix ({PREFIX_LENGTH} characters, "
                   "as manage.py tokens list shows it)")
    if row is None:
        raise CommandError(missing, returncode=BAD_REQUEST)
    return row


class Command(NornCommand):
    help = (
        "Create, list and revoke API tokens (NORN_API_TOKEN) for the CLI and scripts. "
        "Exits 2 for an unknown user or token."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", metavar="create|list|revoke", required=True)
        create = actions.add_parser(
            "create", help="Issue a token; it is printed once, alone on stdout.",
            description="Issue a token for a user and print it once, alone on stdout "
                        "(TOKEN=$(manage.py tokens create --user alice --name laptop)). "
                        "Norn keeps only its digest: it cannot be shown again.",
        )
        create.add_argument("--user", required=True, help="Whose token it is (a username).")
        create.add_argument("--name", required=True, help=f"What it is for, e.g. 'laptop' (up to {NAME_MAX} characters).")
        listing = actions.add_parser("list", help="List tokens: prefix, user, name, created, last used.",
                                     description="List tokens, never a token itself or its digest.")
        listing.add_argument("--user", help="Only this user's tokens.")
        listing.add_argument("--json", action="store_true", help="One JSON object per line.")
        revoke = actions.add_parser("revoke", help="Revoke a token by its prefix or id.",
                                    description="Revoke (delete) a token: requests with it are refused from then on.")
        revoke.add_argument("token", help="The token's prefix (as list shows it), its id, or the token itself.")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _create(self, *, user, name, **options):
        owner = find_user(user)
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise CommandError(f"--name: give what the token is for, 1 to {NAME_MAX} characters", returncode=BAD_REQUEST)
        if not owner.is_active:
            raise CommandError(f"--user: {user} is inactive: Norn would refuse a token of theirs",
                               returncode=BAD_REQUEST)
        row, token = ApiToken.issue(owner, name)
        self.stdout.write(token)
        self.stderr.write(
            f"Created token {row.prefix}… (id {row.pk}) for {owner.get_username()} ({name}). "
            "It is shown only now: Norn keeps only its digest."
        )
        missing = [what for perm, what in NEEDED.items() if not owner.has_perm(perm)]
        if missing:
            self.stderr.write(self.style.WARNING(
                f"Note: {owner.get_username()} may not {' or '.join(missing)}, so the Norn server will refuse "
                "this token for that (give the permissions in the admin)."
            ))

    def _list(self, *, user=None, json=False, **options):
        tokens = ApiToken.objects.select_related("user").order_by("created_at", "pk")
        if user is not None:
            tokens = tokens.filter(user=find_user(user))
        empty = "No API tokens." if user is None else f"No API tokens for {user}."
        rows = list(tokens)
        if listed(self, rows, as_json=json, record=as_record, empty=empty):
            return
        self.stdout.write(f"{'ID':>4}  {'PREFIX':<13} {'USER':<16} {'CREATED':<16}  {'LAST USED':<16}  NAME")
        for row in rows:
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            self.stdout.write(
                f"{row.pk:>4}  {row.prefix + '…':<13} {row.user.get_username():<16} "
                f"{row.created_at:%Y-%m-%d %H:%M}  {used:<16}  {row.name}"
            )

    def _revoke(self, *, token, **options):
        row = find_token(token)
        label = f"{row.prefix}… (id {row.pk}) of {row.user.get_username()} ({row.name})"
        row.delete()
        self.stdout.write(f"Revoked token {label}")
