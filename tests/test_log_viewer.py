"""The log viewer without a browser: a step's output as numbered lines with the
times they were stored, ANSI colours, the builder notice collapsed, only the
tail of a long output; the raw download and the range ("Load earlier")
endpoint, with their permissions and bad input (deployments/logview.py)."""

import html
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments import logview, transitions
from deployments.models import Event, Step, StepStatus
from tests.support.dashboard import make_deployment, operator, page, user_with, viewer, web  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

BANNER = (
    "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.\n"
    "            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0\n"
    "            environment-variable.\n"
    "\n"
)


def lines_of(rendered_html):
    """(number, time, text) of each rendered line, the text as a browser reads it."""
    found = re.findall(r'<span class="ln[^"]*" data-n="(\d+)"><span class="lt"(?: data-t="([^"]*)")?[^>]*></span>(.*?)</span>(?=<span class="ln|$)',
                       rendered_html, re.S)
    return [(int(n), t, html.unescape(re.sub(r"<[^>]+>", "", body))) for n, t, body in found]


# --- rendering (deployments/logview.py) --------------------------------------------


def test_lines_are_numbered_and_line_breaks_read_as_the_html_parser_reads_them():
    rendered = logview.tail("one\r\ntwo\rthree\nfour")
    assert [(n, text) for n, _, text in lines_of(rendered.html)] == [
        (1, "one\n"), (2, "two\n"), (3, "three\n"), (4, "four"),
    ]
    assert (rendered.first_line, rendered.last_line, rendered.next_line, rendered.start) == (1, 4, 4, 0)


def test_sgr_colours_and_bold_become_classes_and_other_escapes_are_dropped():
    text = "\x1b[1;31mred bold\x1b[0m plain \x1b[92;44mbright on blue\x1b[39m bg only\x1b[49m\n" \
           "\x1b]0;a window title\x07\x1b[2Kcleared \x1b[38;5;208m256\x1b[m \x1b(Bdone\x07\n"
    rendered = logview.tail(text)
    assert '<span class="a-b a-f1">red bold</span> plain ' in rendered.html
    assert '<span class="a-f10 a-g4">bright on blue</span>' in rendered.html
    assert '<span class="a-g4"> bg only</span>' in rendered.html
    assert [text for _, _, text in lines_of(rendered.html)] == [
        "red bold plain bright on blue bg only\n", "cleared 256 done\n",
    ]
    assert "\x1b" not in rendered.html and "\x07" not in rendered.html


def test_a_colour_set_before_the_shown_part_still_applies_in_it():
    text = "\x1b[33m" + "".join(f"yellow {i}\n" for i in range(3000))
    rendered = logview.tail(text)
    assert rendered.first_line == 1001
    assert rendered.html.count('<span class="a-f3">') == 2000
    assert rendered.style.encode() == "0,3,"


def test_output_is_escaped():
    rendered = logview.tail('<script>alert(1)</script> & "quotes"\n')
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in rendered.html


def test_an_escape_sequence_cut_off_at_the_end_is_carried_to_the_next_piece():
    rendered = logview.tail("building \x1b[3")
    assert rendered.carry == "\x1b[3"
    assert lines_of(rendered.html) == [(1, "", "building ")]


def test_the_legacy_builder_banner_is_marked_as_one_notice():
    rendered = logview.tail(BANNER + "Sending build context to Docker daemon  3.072kB\nStep 1/2 : FROM x\n")
    classes = re.findall(r'<span class="(ln[^"]*)" data-n', rendered.html)
    assert classes == ["ln noise noise-head", "ln noise", "ln noise", "ln noise", "ln", "ln"]
    assert rendered.noise
    assert not logview.tail("Step 1/2 : FROM x\n   indented\n").noise


def test_only_the_tail_of_a_long_output_is_rendered():
    text = "".join(f"line {i}\n" for i in range(1, 100_001))
    rendered = logview.tail(text)
    assert (rendered.first_line, rendered.last_line, rendered.lines) == (98_001, 100_000, 2000)
    assert text[rendered.start:].startswith("line 98001\n")
    earlier = logview.before(text, rendered.start)
    assert (earlier.first_line, earlier.last_line) == (96_001, 98_000)
    assert earlier.end == rendered.start


def test_the_tail_is_bounded_in_characters_too_even_for_one_endless_line():
    text = "x" * (10 * 1024 * 1024)
    rendered = logview.tail(text)
    assert rendered.start == len(text) - logview.WINDOW_CHARS
    assert len(rendered.html) < logview.WINDOW_CHARS + 200
    wide = "".join(f"{i} " + "y" * 1000 + "\n" for i in range(1000))
    rendered = logview.tail(wide)
    assert rendered.lines < 300 and wide[rendered.start - 1] == "\n"


def test_each_line_shows_when_the_piece_it_starts_in_was_stored(web):
    deployment = make_deployment(web)
    transitions.append_output(deployment.pk, "build", "first\nsecond ")
    transitions.append_output(deployment.pk, "build", "continued\nthird\n")
    stored = list(Event.objects.filter(deployment=deployment, kind="deploy.log").order_by("seq"))
    earlier = timezone.now() - timedelta(hours=3, minutes=2)
    Event.objects.filter(pk=stored[0].pk).update(created_at=earlier)
    later = stored[1].created_at
    marks = logview.stored_marks(deployment.pk)["build"]
    assert [(start, end) for start, end, _ in marks] == [(0, 13), (13, 29)]
    output = Step.objects.get(deployment=deployment, name="build").output
    shown = lines_of(logview.tail(output, marks).html)
    assert shown == [
        (1, f"{earlier:%H:%M:%S}", "first\n"),
        (2, f"{earlier:%H:%M:%S}", "second continued\n"),  # it began in the first piece
        (3, f"{later:%H:%M:%S}", "third\n"),
    ]


def test_output_without_stored_events_shows_no_time_rather_than_a_made_up_one(web):
    deployment = make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 1, {"output": "seeded\n"})})
    transitions.append_output(deployment.pk, "clone", "appended\n")
    marks = logview.stored_marks(deployment.pk)["clone"]
    assert [(start, end) for start, end, _ in marks] == [(0, 9)]  # only the appended text has an event
    output = Step.objects.get(deployment=deployment, name="clone").output
    assert [t for _, t, _ in lines_of(logview.tail(output, marks).html)] == ["", ""]


# --- the deployment page -------------------------------------------------------------


def test_the_page_renders_numbered_coloured_lines_and_the_tools(operator, web):
    deployment = make_deployment(web, steps={"build": (StepStatus.SUCCEEDED, 3)})
    transitions.append_output(deployment.pk, "build", BANNER + "\x1b[32mok\x1b[0m <done>\n")
    body = page(operator, f"/deployments/{deployment.public_id}/")
    pre = body.split('id="output-build"')[1].split("</pre>")[0]
    assert '<span class="a-f2">ok</span> &lt;done&gt;' in pre
    assert re.search(r'<span class="ln" data-n="5"><span class="lt" data-t="\d\d:\d\d:\d\d"', pre)
    assert 'data-log-noise' in body and "Show the builder notice" in body
    assert f'href="/deployments/{deployment.public_id}/steps/build/output" download>Download raw</a>' in body
    assert '<label for="log-search-build" class="visually-hidden">Search the output of build</label>' in body
    assert 'tabindex="0"' in pre.split(">")[0]  # still reachable by keyboard, to scroll it


def test_the_page_shows_the_tail_and_says_where_earlier_lines_are(operator, web):
    output = "".join(f"line {i}\n" for i in range(1, 5001))
    deployment = make_deployment(web, steps={"test": (StepStatus.SUCCEEDED, 3, {"output": output})})
    body = page(operator, f"/deployments/{deployment.public_id}/")
    assert "Showing lines 3001–5000." in body
    assert "line 3001\n" in body and "line 3000\n" not in body
    assert f'data-log-earlier="/deployments/{deployment.public_id}/steps/test/output"' in body


def test_the_page_reads_the_times_in_one_query_however_many_steps_have_output(operator, web):
    deployment = make_deployment(web)
    for name in ("clone", "build", "test"):
        transitions.append_output(deployment.pk, name, f"{name} output\n")
    url = f"/deployments/{deployment.public_id}/_steps"
    operator.get(url)  # warm: session, permissions
    with CaptureQueriesContext(connection) as queries:
        operator.get(url)
    assert sum("deployments_event" in q["sql"] for q in queries.captured_queries) == 1


# --- the raw download ---------------------------------------------------------------------


def test_download_raw_is_the_whole_output_as_plain_text(operator, web):
    output = "\x1b[31mred\x1b[0m\r\nübung <b>\n" + "x" * 3_000_000 + "\n"
    deployment = make_deployment(web, steps={"build": (StepStatus.SUCCEEDED, 3, {"output": output})})
    response = operator.get(f"/deployments/{deployment.public_id}/steps/build/output")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="web-{deployment.short_id}-build.log"'
    assert response.content.decode("utf-8") == output


def test_download_and_range_need_the_permission_to_view_the_deployment(client, web):
    deployment = make_deployment(web, steps={"build": (StepStatus.SUCCEEDED, 3, {"output": "secret-ish\n"})})
    url = f"/deployments/{deployment.public_id}/steps/build/output"
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    client.force_login(user_with(username="nobody"))
    assert client.get(url).status_code == 403
    assert client.get(url + "?before=0").status_code == 403
    client.force_login(user_with("view_deployment", username="looker"))
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("path", [
    "/deployments/00000000-0000-0000-0000-000000000000/steps/build/output",
    "/deployments/{id}/steps/nosuchstep/output",
    "/deployments/{id}/steps/" + "b" * 5000 + "/output",
    "/deployments/{id}/steps/%ff%E2%80%AE/output",
    "/deployments/not-a-uuid/steps/build/output",
])
def test_unknown_deployments_and_steps_are_404(operator, web, path):
    deployment = make_deployment(web)
    response = operator.get(path.replace("{id}", str(deployment.public_id)))
    assert response.status_code == 404


def test_a_nul_anywhere_in_the_request_is_refused_before_the_view(operator, web):
    deployment = make_deployment(web)
    url = f"/deployments/{deployment.public_id}/steps/build/output"
    for response in (operator.get(url.replace("build", "bu%00ild")), operator.get(url, {"before": "10\x00"})):
        assert response.status_code == 400 and b"NUL" in response.content


def test_the_output_is_only_for_get(operator, web):
    deployment = make_deployment(web)
    assert operator.post(f"/deployments/{deployment.public_id}/steps/build/output").status_code == 405


# --- the range endpoint ("Load earlier") ----------------------------------------------------


def test_before_returns_the_lines_before_an_offset(operator, web):
    output = "".join(f"line {i}\n" for i in range(1, 5001))
    deployment = make_deployment(web, steps={"test": (StepStatus.SUCCEEDED, 3, {"output": output})})
    url = f"/deployments/{deployment.public_id}/steps/test/output"
    start = output.index("line 3001\n")
    response = operator.get(url, {"before": start})
    assert response.status_code == 200 and response["Content-Type"] == "text/html; charset=utf-8"
    body = response.content.decode()
    first = output.index("line 1001\n")
    assert body.startswith(f'<pre data-start="{first}" data-first-line="1001" data-last-line="3000">')
    assert [n for n, _, _ in lines_of(body.split(">", 1)[1].rsplit("</pre>", 1)[0])] == list(range(1001, 3001))
    again = operator.get(url, {"before": first}).content.decode()
    assert again.startswith('<pre data-start="0" data-first-line="1" data-last-line="1000">')
    assert operator.get(url, {"before": 0}).content.decode() == (
        '<pre data-start="0" data-first-line="1" data-last-line="1"></pre>'
    )


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "1e3", "٣", " 12", "9" * 400, "9" * 5000, "0" * 30 + "1", "x" * 10_000, "7", "\u202e1"])
def test_a_bad_before_is_a_clear_400(operator, web, value):
    deployment = make_deployment(web, steps={"test": (StepStatus.SUCCEEDED, 3, {"output": "short\n"})})
    response = operator.get(f"/deployments/{deployment.public_id}/steps/test/output", {"before": value})
    assert response.status_code == 400
    text = response.content.decode()
    assert text.startswith("before: expected a whole number from 0 to 6 (the length of the test output), got ")
    assert len(text) < 200


def test_a_huge_output_is_served_in_windows(operator, web):
    output = "".join(f"{i:07d} " + "z" * 90 + "\n" for i in range(110_000))  # ~10.9 MB
    deployment = make_deployment(web, steps={"build": (StepStatus.SUCCEEDED, 3, {"output": output})})
    body = page(operator, f"/deployments/{deployment.public_id}/")
    assert len(body) < 1_000_000
    url = f"/deployments/{deployment.public_id}/steps/build/output"
    fragment = operator.get(url, {"before": len(output)}).content.decode()
    assert len(fragment) < 600_000
    assert operator.get(url).content.decode() == output
