"""The `duration` filter: the one place a length of time becomes text, and
the running clocks' texts built from it."""

from datetime import timedelta

from django.template import Context, Template

from deployments.templatetags.norn import TICKS, duration, duration_ticks


def test_duration_shows_tenths_under_ten_seconds():
    assert duration(0) == "0.0 s"
    assert duration(1.46) == "1.5 s"
    assert duration(9.94) == "9.9 s"


def test_duration_rounds_to_seconds_then_minutes_then_hours():
    assert duration(12.3) == "12 s"
    assert duration(59.4) == "59 s"
    assert duration(59.6) == "1 min 00 s"
    assert duration(185) == "3 min 05 s"
    assert duration(3599) == "59 min 59 s"
    assert duration(3600) == "1 h 00 min"
    assert duration(2 * 3600 + 7 * 60 + 59) == "2 h 07 min"


def test_duration_of_a_timedelta_and_of_nothing():
    assert duration(timedelta(minutes=1, seconds=5)) == "1 min 05 s"
    assert duration(None) == "—"
    assert duration("") == ""  # a variable missing from the context


def test_duration_ticks_are_the_texts_of_the_following_seconds():
    ticks = duration_ticks(57.2, count=5).split("|")
    assert ticks == ["57 s", "58 s", "59 s", "1 min 00 s", "1 min 01 s"]
    assert duration_ticks(timedelta(seconds=3), count=2) == "3.0 s|4.0 s"
    assert len(duration_ticks(0).split("|")) == TICKS
    assert duration_ticks(None) == ""


def test_templates_load_the_filters_with_load_norn():
    template = Template("{% load norn %}{{ took|duration }} [{{ clock|duration_ticks:3 }}] {{ missing|duration }}.")
    assert template.render(Context({"took": 185, "clock": 8.9})) == "3 min 05 s [8.9 s|9.9 s|11 s] ."
