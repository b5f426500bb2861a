"""Resident threads (deployments/residents.py): the heartbeat and output writer
of one deployment after another run on the same threads and PostgreSQL
sessions, instead of two new sessions per deployment."""

import logging
import os
import threading

import pytest
from django.db import connection

from deployments import residents

pytestmark = pytest.mark.django_db(transaction=True)


def session_of_a_job(name="job"):
    """(backend pid, thread, thread name) a resident job ran with."""
    seen = {}

    def job():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            seen["pid"] = cursor.fetchone()[0]
        seen["thread"] = threading.current_thread()
        seen["name"] = seen["thread"].name

    assert residents.run(job, name).join(5)
    return seen["pid"], seen["thread"], seen["name"]


def backends():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return {pid for (pid,) in cursor.fetchall()}


def test_jobs_in_a_row_share_a_thread_and_its_session():
    first = session_of_a_job("heartbeat-1")
    second = session_of_a_job("output-2")
    assert first[1] is second[1] and first[0] == second[0]
    assert (first[2], second[2]) == ("heartbeat-1", "output-2")
    assert second[1].name == residents.IDLE_NAME and second[1].is_alive()


def test_jobs_at_the_same_time_get_threads_of_their_own():
    release = threading.Event()
    held = []

    def hold():
        held.append(threading.current_thread())
        release.wait()

    running = [residents.run(hold, "held") for _ in range(2)]
    _, thread, _ = session_of_a_job()
    assert all(job.is_alive() for job in running)
    release.set()
    assert all(job.join(5) for job in running)
    assert not any(job.is_alive() for job in running)
    assert len({thread, *held}) == 3


def test_a_job_that_raises_is_logged_and_its_session_closed(caplog):
    pid, thread, _ = session_of_a_job()

    def broken():
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="deployments.residents"):
        assert residents.run(broken, "output-9").join(5)
    assert "output-9 raised" in caplog.text and "RuntimeError: boom" in caplog.text
    again = session_of_a_job()
    assert again[1] is thread and again[0] != pid  # the thread goes on, with a new session


def test_a_session_the_server_ended_is_replaced_before_the_next_job():
    pid, thread, _ = session_of_a_job()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    again = session_of_a_job()
    assert again[1] is thread and again[0] != pid  # Django's health check found it gone


def test_disconnect_lets_go_of_every_idle_session():
    pid, _, _ = session_of_a_job()
    assert pid in backends()
    residents.disconnect()
    assert pid not in backends()


def test_a_forked_process_starts_threads_of_its_own():
    session_of_a_job()  # an idle resident in this process
    child = os.fork()
    if child == 0:  # the parent's threads are not in here: a job must still run
        os._exit(0 if residents.run(lambda: None, "in-child").join(5) else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
