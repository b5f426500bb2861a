"""Unix manners for every `manage.py` command of Norn's (docs/cli.md): one exit
code per situation, a quiet exit when stdout is closed early (`| head`), and
one line, not a traceback, on Ctrl-C.

Both apps' commands subclass `Command`; it lives here because apps_registry
may not import deployments.
"""

import atexit
import os
import sys
import threading

from django.core import checks
from django.core.management.base import BaseCommand, SystemCheckError
from django.db import InterfaceError, OperationalError

# The exit codes (docs/cli.md), re-exported for the commands.
from norn_project.exitcodes import BAD_REQUEST, BROKEN_PIPE, FAILED, INTERRUPTED, OK, UNAVAILABLE

__all__ = ["BAD_REQUEST", "BROKEN_PIPE", "FAILED", "INTERRUPTED", "OK", "UNAVAILABLE", "Command"]

# The system checks that say a service is unreachable (norn_project/checks.py):
# PostgreSQL, Redis.
UNREACHABLE_CHECKS = {"norn.E001", "norn.E002"}


class Command(BaseCommand):
    """A management command with Norn's exit codes and manners.

    `interrupted` is the line printed on Ctrl-C; commands that leave
    something going on say what (follow: the deployment goes on).
    """

    interrupted = "interrupted"
    # Before each command only Norn's own checks (norn_project/checks.py: the
    # services it needs, its settings), a few ms. Django's checks of the code
    # itself (models, URLs, admin: ~0.3 s, most of it importing every view)
    # give the same answer every time; `manage.py check`, `migrate` and
    # `runserver` run them.
    requires_system_checks = ["norn"]

    def run_from_argv(self, argv):
        try:
            try:
                super().run_from_argv(argv)
                code = OK
            except SystemExit as exc:  # a CommandError's code, or the command's own
                code = exc.code
            # Output to a pipe is buffered: flush here, where a closed pipe
            # is still ours to handle, not at interpreter exit.
            sys.stdout.flush()
        except BrokenPipeError:
            self._leave(BROKEN_PIPE)
        except KeyboardInterrupt:
            self._say(f"\n{self.interrupted}")
            self._leave(INTERRUPTED)
        except EOFError:
            # input() found stdin closed: a question nobody can answer is a no.
            self._say("CommandError: no answer on stdin, so nothing was changed; --yes skips the question")
            self._leave(FAILED)
        except (OperationalError, InterfaceError) as exc:
            self._say(f"CommandError: cannot reach Norn's database (DATABASE_URL): {_first_line(exc)}")
            self._leave(UNAVAILABLE)
        self._exit(code)

    def check(self, *args, **kwargs):
        try:
            super().check(*args, **kwargs)
        except SystemCheckError as exc:
            # The same situation as a query that cannot reach the database.
            errors = [m for m in checks.run_checks(tags=["norn"]) if m.level >= checks.ERROR]
            if errors and {m.id for m in errors} <= UNREACHABLE_CHECKS:
                exc.returncode = UNAVAILABLE
            raise

    def _say(self, text):
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except OSError:
            pass

    def _exit(self, code):
        """Exit with `code` as the interpreter would, without its teardown.

        Tearing down every module Django loaded takes ~0.3 s after the work
        is done; the user waits for it (issue 13). What an exit must do still
        happens: other threads that are not daemons are waited for, and the
        exit handlers run (logging's flush among them); Django's
        run_from_argv has closed the database connections.
        """
        if code is None:
            code = OK
        elif not isinstance(code, int):  # sys.exit("message")
            self._say(str(code))
            code = FAILED
        if sys.getprofile() is not None or sys.gettrace() is not None:
            # A profiler (python -m cProfile) or a debugger writes its
            # results after the program returns: let it.
            raise SystemExit(code)
        # In the interpreter's own order (Py_FinalizeEx): threading's exit
        # callbacks (concurrent.futures' among them) and the wait for
        # non-daemon threads, then the atexit handlers.
        threading._shutdown()
        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            code = BROKEN_PIPE
        except (OSError, ValueError):
            pass
        os._exit(code)

    def _leave(self, code):
        """Exit at once with `code`, saying nothing more.

        os._exit: a closed stdout would make the interpreter's own flush at
        exit print a traceback, and a background thread (a WebSocket reader,
        a heartbeat) must not keep a command alive that has nothing more to do.
        """
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        # The exit handlers still run: events this command recorded (a
        # deploy queued before `| head` closed the pipe) reach the live
        # stream before the process goes (deployments/events.py).
        try:
            atexit._run_exitfuncs()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass
        os._exit(code)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
