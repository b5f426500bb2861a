"""Step output written behind the step (deployments/outputwriter.py): all of
it, in order, before the state change that follows; a write that fails is
raised in the step's thread."""

import threading

import pytest
from django.db import DatabaseError

from apps_registry.models import App
from deployments import transitions
from deployments.models import Event, Step
from deployments.outputwriter import OutputWriter, _merged

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deployment(make_app):
    make_app("web", "app: web\nrole: worker\n")
    return transitions.create(App.objects.get(name="web"), "HEAD", name="tester")


def test_every_piece_is_written_in_order_before_flush_returns(deployment):
    writer = OutputWriter(deployment.pk)
    try:
        pieces = [f"line {i}\n" for i in range(300)]
        for piece in pieces:
            writer.append("clone", piece)
        writer.append("build", "built\n")
        writer.flush()
        # A state change after the flush comes after all of it.
        transitions.append_output(deployment.pk, "build", "after\n")
    finally:
        writer.close()
    assert Step.objects.get(deployment=deployment, name="clone").output == "".join(pieces)
    assert Step.objects.get(deployment=deployment, name="build").output == "built\nafter\n"
    logs = list(Event.objects.filter(deployment=deployment, kind="deploy.log").order_by("seq"))
    assert "".join(e.payload["text"] for e in logs if e.payload["step"] == "clone") == "".join(pieces)
    assert [e.payload["step"] for e in logs][-2:] == ["build", "build"]
    assert logs[-1].payload["text"] == "after\n"


def test_pieces_that_pile_up_during_a_write_go_out_as_one(deployment, monkeypatch):
    real = transitions.append_outputs
    first_write_started, release = threading.Event(), threading.Event()

    def slow_first(deployment_id, pieces):
        if not first_write_started.is_set():
            first_write_started.set()
            release.wait(10)
        real(deployment_id, pieces)

    monkeypatch.setattr(transitions, "append_outputs", slow_first)
    writer = OutputWriter(deployment.pk)
    try:
        writer.append("clone", "first\n")
        assert first_write_started.wait(10)
        for i in range(100):  # while the first write is under way
            writer.append("clone", f"line {i}\n")
        release.set()
        writer.flush()
    finally:
        writer.close()
    logs = [e.payload["text"] for e in Event.objects.filter(deployment=deployment, kind="deploy.log").order_by("seq")]
    assert logs == ["first\n", "".join(f"line {i}\n" for i in range(100))]


def test_a_nul_in_the_output_is_stored_as_a_replacement_character(deployment):
    writer = OutputWriter(deployment.pk)
    writer.append("clone", "binary \x00 output\n")
    writer.close()
    assert Step.objects.get(deployment=deployment, name="clone").output == "binary \ufffd output\n"


def test_a_failed_write_is_raised_in_the_steps_thread(deployment, monkeypatch):
    real = transitions.append_outputs
    failures = []

    def fail_once(deployment_id, pieces):
        if not failures:
            failures.append(pieces)
            raise DatabaseError("the database went away")
        real(deployment_id, pieces)

    monkeypatch.setattr(transitions, "append_outputs", fail_once)
    writer = OutputWriter(deployment.pk)
    try:
        writer.append("clone", "lost with the failed write\n")
        with pytest.raises(DatabaseError, match="went away"):
            writer.flush()
        writer.append("clone", "the writer goes on\n")
        writer.flush()
    finally:
        writer.close()
    assert Step.objects.get(deployment=deployment, name="clone").output == "the writer goes on\n"


def test_close_quietly_keeps_the_error_on_its_way(deployment, monkeypatch):
    def fail(deployment_id, pieces):
        raise DatabaseError("the database went away")

    monkeypatch.setattr(transitions, "append_outputs", fail)
    writer = OutputWriter(deployment.pk)
    writer.append("clone", "x")
    writer.close(quietly=True)  # no raise: the step's own error is on its way
    with pytest.raises(DatabaseError):
        other = OutputWriter(deployment.pk)
        other.append("clone", "x")
        other.close()


def test_consecutive_pieces_of_a_step_are_merged():
    assert _merged([("a", "1"), ("a", "2"), ("b", "3"), ("a", "4")]) == [("a", "12"), ("b", "3"), ("a", "4")]


def test_fields_for_crash_recovery_go_with_the_next_batch_and_flush_waits_for_them(deployment):
    writer = OutputWriter(deployment.pk)
    try:
        writer.append("clone", "$ git clone\n")
        writer.set_fields(step_pgid=4242, workdir="/tmp/work-of-it")
        writer.flush()
        row = type(deployment).objects.values("step_pgid", "workdir").get(pk=deployment.pk)
        assert row == {"step_pgid": 4242, "workdir": "/tmp/work-of-it"}
        writer.set_fields(step_pgid=None)  # fields alone, no output: written all the same
        writer.flush()
        assert type(deployment).objects.values_list("step_pgid", flat=True).get(pk=deployment.pk) is None
    finally:
        writer.close()
    assert Step.objects.get(deployment=deployment, name="clone").output == "$ git clone\n"
