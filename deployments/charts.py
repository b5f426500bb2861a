"""The app page's chart of deployment durations: stacked bars, one per
deployment, one segment per step. Pure geometry: the template only places
rectangles and formats the seconds with the `duration` filter.
"""

import math
from collections.abc import Iterable

from deployments import states
from deployments.models import Deployment, Step

WIDTH, HEIGHT = 800, 260
LEFT, RIGHT, TOP, BOTTOM = 76, 8, 24, 30  # margins: the axis labels sit left

# Axis steps people read easily: seconds, then whole minutes, then hours.
AXIS_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 18000, 36000)
AXIS_TICKS = 4


def axis(longest: float) -> tuple[int, list[tuple[int, str]]]:
    """The y axis for a longest bar of `longest` seconds: (top value, ticks)."""
    step = next((s for s in AXIS_STEPS if s * AXIS_TICKS >= longest), AXIS_STEPS[-1])
    count = max(1, math.ceil(longest / step))
    top = step * count
    values = [step * i for i in range(count + 1)]
    if top <= 120:
        labels = [f"{v} s" for v in values]
    elif step % 3600 == 0:
        labels = [f"{v // 3600} h" for v in values]
    elif step % 60 == 0:
        labels = [f"{v // 60} min" for v in values]
    else:
        labels = [f"{v // 60}:{v % 60:02d}" for v in values]
    labels[0] = "0"
    return top, list(zip(values, labels))


def bar_of(deployment: Deployment, steps=None) -> dict:
    """One deployment's seconds per step (None: the step did not run), their
    total, and whether it went live. Reads `steps` (anything with a name,
    status and duration), else `deployment.steps.all()`."""
    steps = list(deployment.steps.all()) if steps is None else steps
    durations = {step.name: step.duration.total_seconds() for step in steps if step.duration is not None}
    return {
        "deployment": deployment,
        "durations": [durations.get(name) for name in states.STEPS],
        "total": sum(durations.values()),
        "went_live": any(s.name == "deploy" and s.status == Step.Status.SUCCEEDED for s in steps),
    }


def chart_steps(deployments: Iterable[Deployment]) -> dict:
    """{deployment id: its steps in order} for bar_of, in one query, as rows
    of the three columns it reads: 200 model instances were a fifth of the
    app page's time."""
    steps = {}
    rows = (Step.objects.filter(deployment__in=[d.pk for d in deployments]).order_by("deployment", "position")
            .values_list("deployment", "name", "status", "duration", named=True))
    for row in rows:
        steps.setdefault(row.deployment, []).append(row)
    return steps


def duration_chart(deployments: Iterable[Deployment], steps: dict | None = None) -> dict | None:
    """Geometry of the stacked-bar chart of these deployments (oldest first),
    or None when there are none. `steps`: each deployment's steps by its id
    (chart_steps), else read from each deployment.

    Computed here so the template only places rectangles; the same numbers
    fill the table that stands in for the chart for screen readers and
    narrow screens.
    """
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bars = [bar_of(deployment, None if steps is None else steps.get(deployment.pk, [])) for deployment in deployments]
    if not bars:
        return None
    scale_max, ticks = axis(max(bar["total"] for bar in bars))
    slot = plot_w / max(len(bars), 10)  # a few deployments still get slim bars
    bar_w = max(slot * 0.7, 2)
    for i, bar in enumerate(bars):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = TOP + plot_h
        segments = []
        for name, seconds in zip(states.STEPS, bar["durations"]):
            if not seconds:
                continue
            h = seconds / scale_max * plot_h
            y -= h
            segments.append({
                "step": name, "x": round(x, 2), "y": round(y, 2), "w": round(bar_w, 2),
                # A one-second step in a one-hour bar still shows as a line.
                "h": round(max(h, 0.5), 2), "seconds": seconds,
            })
        if not bar["deployment"].is_terminal:
            mark = "▶"
        else:
            mark = "" if bar["went_live"] else "✗"
        # Outcome by symbol, not by colour: the same marks as the legend.
        bar.update(cx=round(x + bar_w / 2, 2), top=round(y, 2), segments=segments, mark=mark)
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
        "label_x": LEFT - 6, "bars": bars,
        "ticks": [
            {"y": round(TOP + plot_h - value / scale_max * plot_h, 2), "label": label}
            for value, label in ticks
        ],
        "first": bars[0]["deployment"], "last": bars[-1]["deployment"],
    }
