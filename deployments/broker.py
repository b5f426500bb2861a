"""django-q2's ORM broker, woken by PostgreSQL instead of polling.

The ORM broker finds new tasks by asking PostgreSQL every `poll` seconds: a
deploy waited half a poll on average before a worker took it (issue 13).
This one sends `NOTIFY norn_tasks` with every task it queues (delivered when
the task's row is committed) and, when it finds nothing to do, waits on
`LISTEN norn_tasks` on a connection of its own: a new deployment is taken at
once. The wait still ends every WAKE_EVERY seconds, for what no notification
announces (a task whose lease ran out is handed out again); if the listening
connection breaks, it is a plain sleep until a new one is open.

Q_CLUSTER["broker_class"] names it (norn_project/settings.py); everything
else, the rows and their leases, is django-q2's ORM broker.
"""

import logging
import time

from django.db import connections, transaction
from django_q.brokers.orm import ORM
from django_q.conf import Conf

log = logging.getLogger(__name__)

CHANNEL = "norn_tasks"
WAKE_EVERY = 1.0


class NotifiedORM(ORM):
    _listener = None  # this process's listening connection, once opened

    def enqueue(self, task):
        # The row and the notification in one commit (within the caller's
        # transaction, if any: both are delivered when it commits).
        with transaction.atomic(using=Conf.ORM, savepoint=False):
            pk = super().enqueue(task)
            with connections[Conf.ORM].cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
        return pk

    def dequeue(self):
        listener = self._listen()  # before looking: a task queued meanwhile still wakes us
        tasks = super().dequeue()  # with Q_CLUSTER["poll"] 0 it does not sleep
        if tasks:
            return tasks
        if listener is None:
            time.sleep(WAKE_EVERY)
            return None
        try:
            for _ in listener.notifies(timeout=WAKE_EVERY, stop_after=1):
                pass
        except Exception as exc:  # psycopg.Error: the connection broke; a new one next time
            log.warning("the task queue's listening connection failed (%s); reconnecting", exc)
            self._drop_listener()
        return None

    def _listen(self):
        if NotifiedORM._listener is None:
            try:
                database = connections[Conf.ORM]
                listener = database.get_new_connection(database.get_connection_params())
                listener.autocommit = True
                listener.execute(f"LISTEN {CHANNEL}")
                NotifiedORM._listener = listener
            except Exception as exc:  # noqa: BLE001 - psycopg's or Django's DatabaseError
                log.warning("cannot listen for new tasks (%s); polling every %.0f s", exc, WAKE_EVERY)
                return None
        return NotifiedORM._listener

    @staticmethod
    def _drop_listener():
        listener, NotifiedORM._listener = NotifiedORM._listener, None
        try:
            listener.close()
        except Exception:  # noqa: BLE001 - already broken
            pass
