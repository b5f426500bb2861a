"""The duration chart's geometry (deployments/charts.py), without a request."""

import pytest

from deployments import charts, states
from deployments.models import DeploymentStatus, StepStatus
from tests.support.dashboard import all_succeeded, make_deployment, web  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def test_axis_picks_a_readable_step_and_labels():
    assert charts.axis(7) == (8, [(0, "0"), (2, "2 s"), (4, "4 s"), (6, "6 s"), (8, "8 s")])
    top, ticks = charts.axis(1000)  # 16 min 40 s: five-minute steps
    assert top == 1200 and [label for _, label in ticks] == ["0", "5 min", "10 min", "15 min", "20 min"]
    top, ticks = charts.axis(150)  # over two minutes, steps of 60 s
    assert top == 180 and [label for _, label in ticks] == ["0", "1 min", "2 min", "3 min"]
    assert charts.axis(4 * 3600)[1][-1] == (14400, "4 h")


def test_no_deployments_no_chart():
    assert charts.duration_chart([]) is None


def test_bars_stack_the_steps_bottom_up_and_mark_the_outcome(web):
    slow_build = {**all_succeeded(2), "build": (StepStatus.SUCCEEDED, 30)}
    ok = make_deployment(web, steps=slow_build)
    failed = make_deployment(web, DeploymentStatus.FAILED, steps={"clone": (StepStatus.SUCCEEDED, 4),
                                                                 "build": (StepStatus.FAILED, 6)})
    running = make_deployment(web, DeploymentStatus.BUILDING, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    chart = charts.duration_chart([ok, failed, running])

    assert [bar["mark"] for bar in chart["bars"]] == ["", "✗", "▶"]
    first = chart["bars"][0]
    assert first["total"] == 42 and first["durations"] == [2, 30, 2, 2, 2, 2, 2]
    assert [s["step"] for s in first["segments"]] == list(states.STEPS)
    # Each segment sits on the one below it, the first on the x axis.
    bottom = charts.HEIGHT - charts.BOTTOM
    assert first["segments"][0]["y"] + first["segments"][0]["h"] == pytest.approx(bottom, abs=0.02)
    for lower, upper in zip(first["segments"], first["segments"][1:]):
        assert upper["y"] + upper["h"] == pytest.approx(lower["y"], abs=0.02)
    assert first["segments"][1]["h"] == pytest.approx(15 * first["segments"][0]["h"], abs=0.2)
    # Steps that did not run have no segment, and None in the table.
    assert chart["bars"][1]["durations"][2:] == [None] * 5 and len(chart["bars"][1]["segments"]) == 2
    # The tallest bar (42 s) fits under the top of the axis: 45 s, in steps of 15 s.
    assert chart["ticks"][-1]["label"] == "45 s" and first["top"] >= charts.TOP
    assert (chart["first"], chart["last"]) == (ok, running)


def test_a_one_second_step_of_a_long_bar_is_still_visible(web):
    steps = {**all_succeeded(1), "build": (StepStatus.SUCCEEDED, 3 * 3600)}
    chart = charts.duration_chart([make_deployment(web, steps=steps)])
    assert min(segment["h"] for segment in chart["bars"][0]["segments"]) == 0.5
