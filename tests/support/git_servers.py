"""Real git servers for Norn's tests.

Norn clones application repositories over HTTPS (with a token) and over SSH
(with a deploy key).  Mocking git would hide exactly the bugs we care about —
a token leaking into a URL, a known_hosts file that does not match, a shallow
fetch of an older commit that the server refuses — so these helpers run the
real thing on 127.0.0.1:

* :func:`make_repo` builds a bare repository from a dict of files and lets a
  test add further commits (:class:`GitRepo`).
* :class:`GitHttpServer` serves a directory of bare repositories through the
  stock ``git http-backend`` CGI behind HTTP Basic auth, over plain HTTP or
  (``tls=True``) HTTPS with a certificate from a throwaway test CA
  (:func:`make_test_ca`), and records every request so tests can assert the
  token never appeared in a URL and which requests carried credentials.  It
  can also answer everything with a redirect (``redirect_to``).
* :class:`SshGitServer` runs a private OpenSSH ``sshd`` (Debian package
  ``openssh-server``) with its own host key, config and authorized_keys.
* :func:`generate_ssh_keypair` makes an ed25519 deploy key.

Everything here isolates git from the machine's global and system git config
(``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_CONFIG_NOSYSTEM=1``) and sets the
author/committer identity through the environment, so it behaves the same on a
fresh CI machine as on a developer's.

Nothing here depends on Django.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Iterator, Mapping

__all__ = [
    "GIT_HTTP_BACKEND",
    "SSHD",
    "GitError",
    "GitRepo",
    "GitHttpServer",
    "RecordedRequest",
    "SshGitServer",
    "TestCA",
    "generate_ssh_keypair",
    "git_env",
    "git_ssh_command",
    "make_repo",
    "make_test_ca",
    "run_git",
    "write_askpass_script",
]

GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SSHD = "/usr/sbin/sshd"

# Fixed identity for every commit these helpers make.  Passed through the
# environment rather than `git config --global` so nothing depends on (or
# modifies) the machine's configuration.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Norn Test",
    "GIT_AUTHOR_EMAIL": "norn-test@example.invalid",
    "GIT_COMMITTER_NAME": "Norn Test",
    "GIT_COMMITTER_EMAIL": "norn-test@example.invalid",
}

# Keeps git away from ~/.gitconfig and /etc/gitconfig: a developer's
# credential helper, url.insteadOf rewrite or commit.gpgsign would otherwise
# change what the tests observe.
_ISOLATION = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    # Never fall back to prompting on a terminal: a failed auth must fail.
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(RuntimeError):
    """A git (or ssh-keygen) command exited non-zero; carries its output."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str):
        self.args_list = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{shlex.join(args)} exited {returncode}\n"
            f"stdout: {stdout.strip()}\nstderr: {stderr.strip()}"
        )


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment plus isolation from git config and a fixed identity."""
    env = dict(os.environ)
    # An inherited GIT_DIR/GIT_WORK_TREE (e.g. from a git hook running the
    # tests) would silently redirect every command to the wrong repository.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_ASKPASS", "SSH_ASKPASS"):
        env.pop(var, None)
    env.update(_ISOLATION)
    env.update(_IDENTITY)
    if extra:
        env.update(extra)
    return env


def run_git(
    *args: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``git *args`` with :func:`git_env` (plus ``env``); raise GitError on failure if ``check``."""
    cmd = ["git", *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=git_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise GitError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


# ---------------------------------------------------------------------------
# Repositories
# ---------------------------------------------------------------------------


def _checked_relpath(name: str) -> Path:
    """Reject file names that would escape the scratch work tree or touch .git."""
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts or ".git" in rel.parts:
        raise ValueError(f"invalid repository file path: {name!r}")
    return rel


@dataclass
class GitRepo:
    """A bare repository on disk that tests can serve and keep committing to."""

    bare_path: Path
    default_branch: str = "main"

    @property
    def name(self) -> str:
        return self.bare_path.name.removesuffix(".git")

    @property
    def file_url(self) -> str:
        return self.bare_path.resolve().as_uri()

    def head(self, branch: str | None = None) -> str:
        """Commit sha at the tip of ``branch`` (default: the repo's default branch)."""
        branch = branch or self.default_branch
        return run_git(
            "--git-dir", str(self.bare_path), "rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"
        ).stdout.strip()

    def branches(self) -> list[str]:
        out = run_git(
            "--git-dir", str(self.bare_path), "for-each-ref", "--format=%(refname:short)", "refs/heads/"
        ).stdout
        return out.split()

    def commit(
        self,
        files: Mapping[str, str | bytes],
        message: str = "update",
        branch: str | None = None,
        delete: Iterable[str] = (),
    ) -> str:
        """Commit ``files`` (and remove ``delete``) on ``branch``; return the new sha.

        A branch that does not exist yet is forked from the default branch (or
        started as an orphan in an empty repository).  The work happens in a
        throwaway clone that is pushed back, so the bare repository only ever
        changes the way a real remote would.
        """
        branch = branch or self.default_branch
        existing = set(self.branches())
        with tempfile.TemporaryDirectory(prefix="norn-git-work-") as tmp:
            work = Path(tmp) / "work"
            run_git("clone", "--quiet", str(self.bare_path), str(work))
            if branch in existing:
                run_git("checkout", "--quiet", "-B", branch, f"origin/{branch}", cwd=work)
            elif self.default_branch in existing:
                run_git("checkout", "--quiet", "-B", branch, f"origin/{self.default_branch}", cwd=work)
            else:
                run_git("checkout", "--quiet", "--orphan", branch, cwd=work)

            for name in delete:
                _checked_relpath(name)
                # git rm fails on a path that is not tracked, which is what a
                # test asking to delete a missing file should see.
                run_git("rm", "--quiet", "-r", "--", name, cwd=work)
            for name, content in files.items():
                target = work / _checked_relpath(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = content.encode() if isinstance(content, str) else content
                target.write_bytes(data)

            run_git("add", "--all", cwd=work)
            # --allow-empty: a "bump" commit with no changes is a legitimate
            # way for a test to get a new sha.
            run_git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
            run_git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            return run_git("rev-parse", "HEAD", cwd=work).stdout.strip()


def make_repo(
    root: Path,
    name: str,
    files: Mapping[str, str | bytes],
    branch: str = "main",
    message: str = "initial",
) -> GitRepo:
    """Create ``<root>/<name>.git`` as a bare repo whose ``branch`` holds one commit of ``files``."""
    root = Path(root)
    bare = root / f"{name.removesuffix('.git')}.git"
    if bare.exists():
        raise FileExistsError(bare)
    root.mkdir(parents=True, exist_ok=True)
    run_git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
    for key, value in (
        # Norn pins deployments to a sha and fetches it with --depth 1; by
        # default upload-pack only honours wants that are ref tips.
        ("uploadpack.allowReachableSHA1InWant", "true"),
        ("uploadpack.allowAnySHA1InWant", "true"),
        ("uploadpack.allowTipSHA1InWant", "true"),
        # Lets tests exercise partial clones (--filter=blob:none) too.
        ("uploadpack.allowFilter", "true"),
    ):
        run_git("--git-dir", str(bare), "config", key, value)
    repo = GitRepo(bare_path=bare, default_branch=branch)
    repo.commit(files, message=message, branch=branch)
    return repo


# ---------------------------------------------------------------------------
# HTTP (git http-backend behind Basic auth)
# ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request seen by :class:`GitHttpServer` (never includes the password)."""

    method: str
    path: str  # raw request target, query string included, exactly as sent
    authorized: bool
    username: str | None = None
    git_protocol: str | None = None  # the Git-Protocol header, e.g. "version=2"
    chunked_body: bool = False  # request body sent with Transfer-Encoding: chunked
    # Any Authorization header at all, right or wrong: what a test checks to
    # prove a credential never reached this server.
    authorization_sent: bool = False
    status: int | None = None
    backend_stderr: str = ""


def _parse_basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header:
        return None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return user, None
    return user, password


class _GitHttpHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so responses can be streamed chunked and curl can reuse the
    # connection between the ref advertisement and the fetch POSTs.
    protocol_version = "HTTP/1.1"
    server_version = "NornTestGitHttp/1.0"
    # Idle keep-alive connections end on their own instead of pinning a
    # handler thread forever.
    timeout = 30

    server: "_GitThreadingServer"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        # Requests are recorded in GitHttpServer.requests; stderr noise would
        # only clutter pytest output.
        return

    def setup(self) -> None:
        super().setup()  # sets the socket timeout first: a stalled handshake ends
        self.tls_failed = False
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                # A client that does not trust the test CA hangs up here;
                # that is its answer, not a server error.
                self.tls_failed = True

    def handle(self) -> None:
        if not self.tls_failed:
            super().handle()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # -- request body -----------------------------------------------------

    def _iter_fixed(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("client closed connection mid-body")
            remaining -= len(data)
            yield data

    def _iter_chunked(self) -> Iterator[bytes]:
        # git switches to chunked uploads once a POST exceeds http.postBuffer.
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed connection mid-chunk")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # discard trailers
                return
            yield from self._iter_fixed(size)
            self.rfile.readline(65537)  # CRLF closing the chunk

    # -- main -------------------------------------------------------------

    def _reject(self, record: RecordedRequest) -> None:
        body = b"Authentication required\n"
        self.send_response(401, "Unauthorized")
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        # Any request body is left unread, so the connection can't be reused.
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
        record.status = 401

    def _redirect(self, record: RecordedRequest, location: str) -> None:
        self.send_response(302, "Found")
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        record.status = 302

    def _handle(self) -> None:
        owner = self.server.owner
        username, password = _parse_basic_auth(self.headers.get("Authorization"))
        authorized = password is not None and hmac.compare_digest(
            password.encode("utf-8"), owner.token.encode("utf-8")
        )
        if owner.require_username and username != owner.username:
            authorized = False
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            authorized=authorized,
            username=username,
            git_protocol=self.headers.get("Git-Protocol"),
            chunked_body="chunked" in self.headers.get("Transfer-Encoding", "").lower(),
        )
        record.authorization_sent = self.headers.get("Authorization") is not None
        owner._record(record)
        if owner.redirect_to:
            # Before any challenge, as a host that moved a repository does:
            # the client, if it follows, asks for credentials at the new place.
            self._redirect(record, owner.redirect_to.rstrip("/") + self.path)
            return
        if not authorized:
            self._reject(record)
            return
        self._run_backend(record, username or owner.username)

    def _cgi_env(self, remote_user: str) -> dict[str, str]:
        owner = self.server.owner
        split = urllib.parse.urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(owner.repos_root),
            # Serve every repo under the root without git-daemon-export-ok files.
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": self.server_version,
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(owner.port),
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(split.path),
            "QUERY_STRING": split.query,
            "REMOTE_ADDR": self.client_address[0],
            # http-backend enables receive-pack (push) for authenticated users.
            "REMOTE_USER": remote_user,
            "AUTH_TYPE": "Basic",
            **_ISOLATION,
        }
        content_type = self.headers.get("Content-Type")
        if content_type:
            env["CONTENT_TYPE"] = content_type
        for key, value in self.headers.items():
            lower = key.lower()
            # CGI never passes credentials to the script, and the body framing
            # headers are translated into CONTENT_LENGTH / EOF instead.
            if lower in ("authorization", "content-type", "content-length", "transfer-encoding"):
                continue
            # Includes HTTP_GIT_PROTOCOL (protocol v2 negotiation) and
            # HTTP_CONTENT_ENCODING (gzip-compressed request bodies).
            env["HTTP_" + key.upper().replace("-", "_")] = value
        return env

    def _run_backend(self, record: RecordedRequest, remote_user: str) -> None:
        owner = self.server.owner
        env = self._cgi_env(remote_user)

        body: Iterator[bytes] | None = None
        if record.chunked_body:
            # No CONTENT_LENGTH: http-backend then reads its stdin to EOF.
            body = self._iter_chunked()
        elif self.headers.get("Content-Length") is not None:
            length = int(self.headers["Content-Length"])
            env["CONTENT_LENGTH"] = str(length)
            body = self._iter_fixed(length)
        elif self.command == "POST":
            env["CONTENT_LENGTH"] = "0"

        proc = subprocess.Popen(
            [owner.backend],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        owner._track(proc)
        try:
            self._pump(proc, body, record)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            owner._untrack(proc)

    def _pump(self, proc: subprocess.Popen[bytes], body: Iterator[bytes] | None, record: RecordedRequest) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        stderr_chunks: list[bytes] = []
        body_error: list[BaseException] = []

        def feed_stdin() -> None:
            # Separate thread: upload-pack may start writing before it has read
            # the whole request, and a full pipe either way would deadlock.
            broken = False
            try:
                for chunk in body or ():
                    if broken:
                        continue  # keep draining the socket so keep-alive stays in sync
                    try:
                        proc.stdin.write(chunk)
                    except BrokenPipeError:
                        broken = True
            except BaseException as exc:  # socket error mid-body
                body_error.append(exc)
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass

        def drain_stderr() -> None:
            stderr_chunks.append(proc.stderr.read())

        feeder = threading.Thread(target=feed_stdin, daemon=True)
        errs = threading.Thread(target=drain_stderr, daemon=True)
        feeder.start()
        errs.start()

        # CGI response: header lines, blank line, body.
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            key, _, value = text.partition(":")
            value = value.strip()
            if key.lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
            else:
                headers.append((key, value))

        if not headers and status == 200:
            # The backend died before producing a response.
            feeder.join()
            errs.join()
            proc.wait()
            record.backend_stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
            self.send_error(502, "git http-backend produced no response")
            record.status = 502
            return

        has_length = any(k.lower() == "content-length" for k, _ in headers)
        chunked = not has_length and self.request_version == "HTTP/1.1"
        self.send_response(status, reason or None)
        for key, value in headers:
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not has_length:
            # HTTP/1.0 client and no length: the end of the body is the close.
            self.close_connection = True
        self.end_headers()
        record.status = status

        # Stream as the backend produces output; packfiles can be large and
        # the client starts indexing while they arrive.
        while True:
            data = proc.stdout.read1(65536)
            if not data:
                break
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        feeder.join()
        errs.join()
        proc.wait()
        record.backend_stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
        if body_error:
            self.close_connection = True


class _GitThreadingServer(ThreadingHTTPServer):
    # Handler threads may sit in an idle keep-alive read; don't let them keep
    # the test process alive after stop().
    daemon_threads = True
    owner: "GitHttpServer"


class GitHttpServer:
    """Serve every bare repo under ``repos_root`` over HTTP with Basic auth.

    Any request whose Basic-auth password is not ``token`` gets
    ``401`` + ``WWW-Authenticate: Basic realm="git"``, which makes git ask its
    credential helper / GIT_ASKPASS — the same dance as against GitHub.  The
    username is recorded but only checked when ``require_username`` is set
    (GitHub ignores it for tokens; ``username`` documents what clients should
    send and becomes REMOTE_USER for the backend).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        repos_root: Path | str,
        token: str,
        username: str = "x-access-token",
        *,
        require_username: bool = False,
        backend: str = GIT_HTTP_BACKEND,
        tls: bool = False,
        ca: "TestCA | None" = None,
        redirect_to: str | None = None,
    ):
        if not token:
            raise ValueError("token must be a non-empty string")
        self.repos_root = Path(repos_root).resolve()
        self.token = token
        self.username = username
        self.require_username = require_username
        self.backend = backend
        # With tls=True the server speaks HTTPS with a certificate for
        # 127.0.0.1 and localhost from `ca` (a new test CA unless given);
        # clients trust it through GIT_SSL_CAINFO=ca_file.
        self.tls = tls
        self.ca = ca if ca is not None or not tls else make_test_ca()
        # Set to a base URL to answer every request with a 302 there.
        self.redirect_to = redirect_to
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._server: _GitThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "GitHttpServer":
        if self._server is not None:
            raise RuntimeError("server already started")
        if not os.access(self.backend, os.X_OK):
            raise RuntimeError(f"{self.backend} not found; is git installed?")
        server = _GitThreadingServer(("127.0.0.1", 0), _GitHttpHandler)
        server.owner = self
        if self.tls:
            assert self.ca is not None
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca.cert_file, self.ca.key_file)
            # The handshake happens in the handler's thread, not in accept():
            # a client that stalls must not block the whole server.
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="git-http-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        # A backend still running means a client went away mid-request.
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def __enter__(self) -> "GitHttpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- info ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, as NORN_GIT_CREDENTIALS names this server."""
        return f"127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The PEM file of the CA that signed this server's certificate."""
        if self.ca is None:
            raise RuntimeError("not a TLS server")
        return self.ca.ca_file

    def url_for(self, repo_name: str, host: str = "127.0.0.1") -> str:
        """``http(s)://127.0.0.1:PORT/<name>.git`` — no credentials in it, ever.

        ``host="localhost"`` names the same server by another host name (its
        certificate covers both).
        """
        return f"{self.base_url.replace('127.0.0.1', host)}/{repo_name.removesuffix('.git')}.git"

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- used by the handler ------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _track(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)

    def _untrack(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)


@dataclass
class TestCA:
    """A throwaway certificate authority and one server certificate it signed."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_test_ca(directory: Path | str | None = None) -> TestCA:
    """A CA and a certificate for 127.0.0.1 and localhost, as PEM files.

    Made with ``cryptography`` (what Python's own TLS tests would use; the
    ``trustme`` library is not installed).  ``directory`` defaults to a new
    temporary one; the files are small and left for the OS to clean.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="norn-test-ca-"))
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(days=7)}

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Norn test CA")])
    ca_cert = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
            issuer_name=ca_name, public_key=key.public_key(), serial_number=x509.random_serial_number(), **valid,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return TestCA(directory=directory, ca_file=ca_file, cert_file=cert_file, key_file=key_file)


def write_askpass_script(
    directory: Path | str,
    token_env: str = "NORN_TEST_GIT_TOKEN",
    username: str = "x-access-token",
) -> Path:
    """Write a GIT_ASKPASS script that answers git's prompts without secrets on disk or argv.

    git calls it with the prompt as its only argument ("Username for ...",
    "Password for ..."); it prints ``username`` for the first and the value of
    the environment variable ``token_env`` for the second.
    """
    path = Path(directory) / "git-askpass.sh"
    path.write_text(
        "#!/bin/sh\n"
        "# Answers git's credential prompts; the secret only ever lives in the environment.\n"
        'case "$1" in\n'
        f"    Username*) printf '%s\\n' {shlex.quote(username)} ;;\n"
        f'    *) printf \'%s\\n\' "${{{token_env}}}" ;;\n'
        "esac\n"
    )
    path.chmod(0o700)
    return path


# ---------------------------------------------------------------------------
# SSH (a private OpenSSH sshd)
# ---------------------------------------------------------------------------


def generate_ssh_keypair(directory: Path | str, name: str = "id_ed25519", comment: str = "norn-test") -> tuple[Path, str]:
    """Create an unencrypted ed25519 key in ``directory``; return (private key path, public key line)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    cmd = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitError(cmd, proc.returncode, proc.stdout, proc.stderr)
    # ssh refuses private keys other users can read.
    private.chmod(0o600)
    return private, Path(f"{private}.pub").read_text().strip()


def git_ssh_command(private_key: Path | str, known_hosts: Path | str) -> str:
    """A GIT_SSH_COMMAND that uses only ``private_key`` and trusts only ``known_hosts``."""
    return shlex.join(
        [
            "ssh",
            "-i", str(private_key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            # Fail instead of prompting for a password or passphrase.
            "-o", "BatchMode=yes",
        ]
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat_line = fh.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the ")" that closes the command name.
        ppid = int(stat_line.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    result: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            result.append(child)
            queue.append(child)
    return result


class SshGitServer:
    """A private ``sshd`` on 127.0.0.1 that lets one public key in, as the current user.

    Git runs ``git-upload-pack '<path>'`` through the user's login shell, so
    :meth:`url_for` gives absolute paths to the bare repos under
    ``repos_root``.  Everything (host key, config, authorized_keys, pid file,
    log) lives in a temporary directory removed by :meth:`stop`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        repos_root: Path | str,
        authorized_public_key: str,
        *,
        user: str | None = None,
        sshd: str = SSHD,
        start_timeout: float = 15.0,
    ):
        self.repos_root = Path(repos_root).resolve()
        self.authorized_public_key = authorized_public_key.strip()
        self.user = user or pwd.getpwuid(os.getuid()).pw_name
        self.sshd = sshd
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.host_public_key: str | None = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "SshGitServer":
        if self._proc is not None:
            raise RuntimeError("sshd already started")
        if not os.access(self.sshd, os.X_OK):
            raise RuntimeError(
                f"{self.sshd} not found: install the Debian package openssh-server "
                "(apt-get install -y openssh-server)"
            )
        if os.geteuid() == 0:
            # sshd as root chroots its pre-auth child into this directory and
            # refuses to start without it; containers often lack it.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

        self._tmp = Path(tempfile.mkdtemp(prefix="norn-sshd-"))
        try:
            host_key = self._tmp / "ssh_host_ed25519_key"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "norn-test-host", "-f", str(host_key)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            host_key.chmod(0o600)  # sshd ignores host keys others can read
            self.host_public_key = Path(f"{host_key}.pub").read_text().strip()
            authorized = self._tmp / "authorized_keys"
            authorized.write_text(self.authorized_public_key + "\n")
            authorized.chmod(0o600)

            # The free port can be taken between probing and sshd binding it;
            # retry with a fresh one in that case.
            last_error = ""
            for _attempt in range(5):
                port = _free_port()
                if self._launch(port, host_key, authorized):
                    self.port = port
                    return self
                last_error = self.log_text()
                if "Address already in use" not in last_error:
                    break
            raise RuntimeError(f"sshd failed to start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, port: int, host_key: Path, authorized: Path) -> bool:
        assert self._tmp is not None
        config = self._tmp / "sshd_config"
        pid_file = self._tmp / "sshd.pid"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {host_key}",
                    f"PidFile {pid_file}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "HostbasedAuthentication no",
                    # PAM would consult the machine's login policy; not needed.
                    "UsePAM no",
                    # The temp dir and repos belong to whoever runs the tests.
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    # git sends GIT_PROTOCOL=version=2 via SendEnv; without this
                    # the session silently falls back to protocol v0.
                    "AcceptEnv GIT_PROTOCOL",
                    # Server-side git must not read the machine's git config either.
                    f"SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL={os.devnull}",
                    "AllowTcpForwarding no",
                    "AllowAgentForwarding no",
                    "X11Forwarding no",
                    "PermitTunnel no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self._log_path = self._tmp / "sshd.log"
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                # Absolute path is required: sshd re-executes itself per connection.
                [self.sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session so a terminal's Ctrl-C does not reach it
                # before the test's cleanup does.
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self._banner_ok(port):
                return True
            time.sleep(0.05)
        self._terminate()
        raise RuntimeError(f"sshd did not accept connections within {self.start_timeout}s:\n{self.log_text()}")

    def _banner_ok(self, port: int) -> bool:
        # Reading the banner (not just connecting) proves it is our sshd
        # answering, not a half-started process or another listener.
        try:
            with socket.create_connection((self.host, port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Per-connection sshd children call setsid(), so they are not in the
        # listener's process group; find them before the listener goes and
        # they are re-parented away.
        doomed = _descendants(proc.pid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in reversed(doomed):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self._terminate()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.port = None

    def __enter__(self) -> "SshGitServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- info ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def state_dir(self) -> Path | None:
        """Temp dir holding the host key, sshd_config, authorized_keys, pid file and log."""
        return self._tmp

    def url_for(self, name: str) -> str:
        """``ssh://USER@127.0.0.1:PORT/<abs path to name.git>``."""
        if self.port is None:
            raise RuntimeError("sshd not started")
        path = self.repos_root / f"{name.removesuffix('.git')}.git"
        return f"ssh://{self.user}@{self.host}:{self.port}{path}"

    @property
    def known_hosts_line(self) -> str:
        """The known_hosts entry for this server (``[127.0.0.1]:PORT ssh-ed25519 ...``)."""
        if self.port is None or self.host_public_key is None:
            raise RuntimeError("sshd not started")
        key_type, key_data = self.host_public_key.split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key_data}"

    def write_known_hosts(self, path: Path | str) -> Path:
        """Write a known_hosts file trusting exactly this server; return its path."""
        path = Path(path)
        path.write_text(self.known_hosts_line + "\n")
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return path

    def log_text(self) -> str:
        """sshd's own log so far (useful in assertion messages)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")
