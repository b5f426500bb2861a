"""`manage.py qcluster`: django-q2's cluster, with Norn's clean stop (deployments/workerstop.py).

SIGTERM to the cluster's parent or to its whole process group (systemctl stop,
docker stop) stops every process: idle workers at once, a deployment in flight
within NORN_STOP_GRACE seconds (finished, or failed with its processes and
containers stopped). Ctrl-C does the same.
"""

from django_q.management.commands.qcluster import Command as QclusterCommand

from deployments import workerstop


class Command(QclusterCommand):
    help = (
        "Start the task queue's workers (django-q2) that run deployments. SIGTERM or Ctrl-C "
        "stops them; a deployment in flight gets NORN_STOP_GRACE seconds to finish, then is failed."
    )

    def handle(self, *args, **options):
        workerstop.use_in_this_process()
        super().handle(*args, **options)
