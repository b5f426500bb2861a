"""A deployment's step output, written to the database behind the step.

Every piece of output is a write (the step's text and a `deploy.log` event,
transitions.append_outputs: one statement, events.append_log), and a
webserver deploy writes 30-40 of them; waited for by the step that produced
each, they added up (issue 13). Here a thread of the worker writes them
instead, with a connection of its own (a resident thread,
deployments/residents.py): the step only hands the text over, and whatever
piled up while one write was under way goes out together in the next.

The deployment's columns that crash recovery reads (the step's process
group, the work directory) go the same way (`set_fields`), with the next
batch: a worker that dies within milliseconds of starting a command may
leave that command's process group unrecorded, but not its containers,
which recovery finds by their labels.

Order is kept: the output of a step is written in the order it came, and
`flush()` waits until all of it is in before the step's end (or any other
state change) is recorded, so the events of a deployment keep their order.
An error in the thread (a DatabaseError) is raised by the next `append` or
`flush`, in the step's own thread, where the pipeline fails the deployment
with it, as it would have failed the write there.
"""

import threading

from django.db import connection

from deployments import residents, transitions


class OutputWriter:
    def __init__(self, deployment_id: int) -> None:
        self.deployment_id = deployment_id
        self._pending: list[tuple[str, str]] = []  # (step, text), in order
        self._fields: dict[str, object] = {}  # deployment columns to set with the next batch
        self._writing = False
        self._closed = False
        self._error: Exception | None = None
        self._changed = threading.Condition()
        # A resident thread of the worker, with its connection (deployments/residents.py).
        self._job = residents.run(self._run, name=f"output-{deployment_id}")

    def append(self, step: str, text: str) -> None:
        """Queue `text` (already redacted) as output of `step`."""
        if not text:
            return
        with self._changed:
            self._raise_error()
            self._pending.append((step, text))
            self._changed.notify_all()

    def set_fields(self, **fields) -> None:
        """Set these columns of the deployment with the next batch."""
        with self._changed:
            self._raise_error()
            self._fields.update(fields)
            self._changed.notify_all()

    def flush(self) -> None:
        """Return once everything appended so far is written; raise the error
        (a DatabaseError, as a rule) that kept it from being written."""
        with self._changed:
            while (self._pending or self._fields or self._writing) and self._error is None and self._job.is_alive():
                self._changed.wait(1.0)
            self._raise_error()

    def close(self, quietly: bool = False) -> None:
        """Flush what can be, then end the thread's job; `quietly` when
        another error is already on its way."""
        try:
            self.flush()
        except Exception:
            if not quietly:
                raise
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            self._job.join(timeout=10)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._pending.clear()  # lost with the transaction that failed
            self._fields.clear()
            raise error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._fields and not self._closed:
                    self._changed.wait()
                if not self._pending and not self._fields:
                    return
                batch, self._pending = self._pending, []
                fields, self._fields = self._fields, {}
                self._writing = True
            try:
                transitions.append_outputs(self.deployment_id, _merged(batch), **fields)
            except Exception as exc:  # DatabaseError above all; raised in the step's thread
                with self._changed:
                    self._error = exc
                connection.close()  # a broken connection is no use for the next batch
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()


def _merged(batch: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive pieces of the same step's output as one."""
    merged: list[tuple[str, str]] = []
    for step, text in batch:
        if merged and merged[-1][0] == step:
            merged[-1] = (step, merged[-1][1] + text)
        else:
            merged.append((step, text))
    return merged
