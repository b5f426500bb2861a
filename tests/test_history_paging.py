"""Pages of a long history read after or before a row (keyset pagination,
paging.LongListPaginator): the app page's Newer/Older links and the admin
deployment list's Previous/Next links show every deployment once, in order,
stay put when newer deployments arrive, take the same queries as numbered
pages, and odd page parameters never fail. Pages by number found by adding
up the deployments per day (DeploymentDay) show the rows OFFSET would, and
the triggers keep those counts. Also: the admin lists' rows, written by
DeploymentAdmin.list_rows and admin_rows.QuickRows, are the admin's own."""

import html
import re
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import items_for_result
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from deployments.models import Deployment, DeploymentDay, DeploymentStatus
from deployments.paging import LongListPaginator
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import make_deployment, page

pytestmark = pytest.mark.django_db

ADMIN = "/admin/deployments/deployment/"


def history(client, url):
    """(short ids listed, {link text: href}) of one history page."""
    body = page(client, url).split('<div id="history">')[1]
    ids = re.findall(r'<th scope="row"><a href="/deployments/[^"]+/"><code>([0-9a-f]{8})</code>', body)
    nav = body.split("</nav>")[0].split("<nav")[-1] if "<nav" in body else ""
    links = {text: html.unescape(href) for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)}
    return ids, links


def walk(client, start, link, base="/apps/web/", read=history):
    """The pages from `start` following the link named `link` to the end."""
    pages, url = [], start
    while True:
        ids, links = read(client, url)
        pages.append(ids)
        if link not in links:
            return pages
        url = base + links[link]


def queries(client, url):
    """The SQL queries of one request (after a first one has warmed up)."""
    client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.fixture
def estimating(monkeypatch):
    """Counts estimated past a handful of rows, as past 10,000 for real
    (call it once the rows are there: the estimate is ANALYZE's)."""
    monkeypatch.setattr(LongListPaginator, "EXACT_UP_TO", 5)

    def analyse():
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE deployments_deployment")

    return analyse


def test_older_and_newer_links_walk_the_whole_history_once_each_way(operator, web):
    made = [make_deployment(web, ref=f"r{i}", ago=70 - i) for i in range(65)]
    newest_first = [d.short_id for d in reversed(made)]
    down = walk(operator, "/apps/web/", "Older ›")
    assert [len(p) for p in down] == [20, 20, 20, 5]
    assert sum(down, []) == newest_first
    _, links = history(operator, "/apps/web/")
    assert links["Older ›"] == f"?page=2&after={made[45].public_id}"
    # From the last page back up, by the rows each page starts at.
    up = walk(operator, "/apps/web/?page=4", "‹ Newer")
    assert list(reversed(up)) == down


def test_a_long_history_is_counted_exactly_by_its_days(operator, web, estimating):
    made = [make_deployment(web, ref=f"r{i}", ago=70 - i) for i in range(47)]
    estimating()
    down = walk(operator, "/apps/web/", "Older ›")
    assert sum(down, []) == [d.short_id for d in reversed(made)]
    # Past the limit of exact counting, but counted from DeploymentDay: no estimate.
    assert "Page 1 of 3<" in page(operator, "/apps/web/")
    assert [history(operator, f"/apps/web/?page={n}")[0] for n in (1, 2, 3)] == down


def test_a_page_after_a_deployment_stays_put_when_newer_ones_arrive(operator, web):
    made = [make_deployment(web, ref=f"r{i}", ago=50 - i) for i in range(45)]
    _, links = history(operator, "/apps/web/")
    bookmark = "/apps/web/" + links["Older ›"]
    before, _ = history(operator, bookmark)
    for i in range(7):
        make_deployment(web, ref=f"new{i}")
    after, _ = history(operator, bookmark)
    assert after == before == [d.short_id for d in reversed(made[5:25])]


def test_keyset_and_numbered_history_pages_take_the_same_queries(operator, web, estimating):
    made = [make_deployment(web, ref=f"r{i}", ago=70 - i) for i in range(65)]
    estimating()
    numbered = queries(operator, "/apps/web/?page=2")
    assert queries(operator, f"/apps/web/?page=2&after={made[45].public_id}") == numbered
    assert queries(operator, f"/apps/web/?page=2&before={made[20].public_id}") == numbered


ODD = [
    "page=abc", "page=-1", "page=0", "page=1.5", "page=99999999999999999999", "page=",
    "after=not-a-uuid", "before=zzz", f"after={uuid.uuid4()}", f"before={uuid.uuid4()}",
    "page=3&after=", "page=x&after={last}", "page=999&before={first}", "after={first}&before={last}",
    "page=2&after={last}", "page=2&before={first}", "after={other}", "page=%00", "after=%00",
]


@pytest.mark.parametrize("query", ODD)
def test_odd_history_page_parameters_show_a_page(operator, web, make_app, query):
    made = [make_deployment(web, ref=f"r{i}", ago=30 - i) for i in range(25)]
    make_app("api", "app: api\nrole: worker\n")
    from apps_registry.models import App

    other = make_deployment(App.objects.get(name="api"), ago=3)
    query = query.format(first=made[-1].public_id, last=made[0].public_id, other=other.public_id)
    response = operator.get(f"/apps/web/?{query}")
    # The NUL guard answers 400 before the view; everything else is a page.
    assert response.status_code in ((400,) if "%00" in query else (200,))
    if response.status_code == 200:
        ids, _ = history(operator, f"/apps/web/?{query}")
        assert ids and set(ids) <= {d.short_id for d in made}


# --- the admin list ----------------------------------------------------------


def admin_ids(client, url):
    body = page(client, url)
    ids = [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', body)]
    pager = body.split('<p class="paginator">')[1].split("</p>")[0]
    links = {text.strip(): html.unescape(href) for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', pager)}
    return ids, links


def admin_walk(client, url, link):
    return walk(client, url, link, base=ADMIN, read=admin_ids)


@pytest.mark.parametrize("order", ["", "o=7", "o=-5", "o=5"])
def test_admin_next_and_previous_links_walk_every_deployment_once(admin_client, web, estimating, order):
    statuses = [DeploymentStatus.FAILED, DeploymentStatus.DEPLOYED, DeploymentStatus.ROLLED_BACK]
    made = [make_deployment(web, statuses[i % 3], ref=f"r{i}", ago=200 - i) for i in range(120)]
    estimating()
    start = f"{ADMIN}?{order}"
    down = admin_walk(admin_client, start, "Next ›")
    assert [len(p) for p in down] == [50, 50, 20]
    every = sum(down, [])
    assert sorted(every) == sorted(d.pk for d in made)
    key = {"": lambda d: (d.queued_at, d.pk), "o=7": lambda d: (d.queued_at, d.pk),
           "o=-5": lambda d: (d.status, d.pk), "o=5": lambda d: (d.status, d.pk)}[order]
    expected = [d.pk for d in sorted(made, key=key, reverse=order in ("", "o=-5"))]
    assert every == expected
    # Back from the last page by the rows each page starts at.
    _, links = admin_ids(admin_client, start)
    last = admin_ids(admin_client, ADMIN + links["Next ›"])[1]["Next ›"]
    assert list(reversed(admin_walk(admin_client, ADMIN + last, "‹ Previous"))) == down


def test_admin_links_to_sorts_and_filters_start_afresh(admin_client, web):
    made = [make_deployment(web, ref=f"r{i}", ago=60 - i) for i in range(55)]
    body = page(admin_client, f"{ADMIN}?p=2&after={made[5].public_id}")
    sort_links = re.findall(r'<a href="(\?[^"]*o=[^"]*)"', body)
    assert sort_links and not any("after=" in html.unescape(link) for link in sort_links)
    assert "after=" not in html.unescape(body.split('id="changelist-filter"')[1])


def test_admin_shows_page_numbers_only_near_the_ends_when_estimated(admin_client, web, estimating):
    for i in range(260):
        make_deployment(web, ref=f"r{i}", ago=300 - i)
    estimating()
    # Filtered by status: estimated (every app's deployments, or one's, are counted by their days).
    _, links = admin_ids(admin_client, f"{ADMIN}?status__exact=deployed&p=3")
    numbers = sorted(int(text) for text in links if text.isdigit())
    # Six pages: 1, 2, this one (3, not a link), … and the last two.
    assert numbers == [1, 2, 5, 6]
    assert set(links) >= {"‹ Previous", "Next ›"}


@pytest.mark.parametrize("query", ODD)
def test_odd_admin_page_parameters_never_fail(admin_client, web, query):
    made = [make_deployment(web, ref=f"r{i}", ago=60 - i) for i in range(55)]
    query = query.replace("page=", "p=").format(first=made[-1].public_id, last=made[0].public_id,
                                                other=made[10].public_id)
    response = admin_client.get(f"{ADMIN}?{query}")
    # An out-of-range page number is the admin's own "?e=1" redirect; a NUL
    # is refused (400) before any view.
    assert response.status_code in (200, 302, 400), response.status_code
    assert response.status_code != 302 or "e=1" in response["Location"]
    assert response.status_code != 400 or "%00" in query


def test_admin_keyset_and_numbered_pages_take_the_same_queries(admin_client, web, estimating):
    made = [make_deployment(web, ref=f"r{i}", ago=200 - i) for i in range(120)]
    estimating()
    numbered = queries(admin_client, f"{ADMIN}?p=2")
    assert queries(admin_client, f"{ADMIN}?p=2&after={made[70].public_id}") == numbered
    assert queries(admin_client, f"{ADMIN}?p=2&before={made[19].public_id}") == numbered


def test_admin_rows_are_the_admins_own(admin_user, web, make_app):
    from django.contrib.auth.models import User

    make_app("a&b", "app: a&b\nrole: worker\n")
    alice = User.objects.create_user("alice<script>")
    make_deployment(web, ref="feature/<b>", commit="c" * 40)
    make_deployment(web, DeploymentStatus.QUEUED, ref=" ")
    last = make_deployment(web, DeploymentStatus.FAILED, ref="main")
    Deployment.objects.filter(pk=last.pk).update(requested_by=alice)
    admin.autodiscover()
    model_admin = admin.site._registry[Deployment]
    request = RequestFactory().get(ADMIN, {"status__exact": "failed", "q": "main"})
    request.user = admin_user
    for query in ({}, {"app__id__exact": str(web.pk), "o": "5"}):
        request = RequestFactory().get(ADMIN, query)
        request.user = admin_user
        cl = model_admin.get_changelist_instance(request)
        cl.formset = None
        assert cl.result_list
        assert model_admin.list_rows(cl) == [list(items_for_result(cl, obj, None)) for obj in cl.result_list]


def test_quick_rows_are_the_admins_own(admin_user, web, make_app):
    """QuickRows (the snapshot list's rows) writes what items_for_result
    does, for the snapshot list and, to cover its other kinds of column, for
    the app, event and cron job lists written by it."""
    from apps_registry.models import App
    from deployments.admin_rows import QuickRows
    from deployments.models import CronJob, Event, Snapshot

    make_app("a&b", "app: a&b\nrole: worker\n")
    make_app("broken", "app: [\n")
    other = App.objects.get(name="a&b")
    one = make_deployment(web, ref="feature/<b>", commit="c" * 40)
    two = make_deployment(other, DeploymentStatus.FAILED, ref=" ")
    Snapshot.objects.create(deployment=one, app=web, database="web<db>", path="/s/\"x\"&y.dump", size=12345678,
                            sha256="ab" * 32)
    Snapshot.objects.create(deployment=two, app=other, database="a_b", path="/s/a b.dump", size=0, sha256="0" * 64,
                            kind="pre-restore")
    CronJob.objects.create(app=other, deployment=two, image="reg/a:1", schedule="* * * * *", command=["true"])
    assert Event.objects.exists()
    admin.autodiscover()
    for model, query in ((Snapshot, {}), (Snapshot, {"app__id__exact": str(web.pk)}), (App, {}), (Event, {"o": "2"}),
                         (CronJob, {})):
        registered = admin.site._registry[model]
        model_admin = registered if isinstance(registered, QuickRows) else \
            type("Quick", (QuickRows, type(registered)), {})(model, admin.site)
        request = RequestFactory().get(f"/admin/{model._meta.app_label}/{model._meta.model_name}/", query)
        request.user = admin_user
        cl = model_admin.get_changelist_instance(request)
        cl.formset = None
        assert cl.result_list, model
        assert model_admin.list_rows(cl) == [list(items_for_result(cl, obj, None)) for obj in cl.result_list], model


def test_the_app_filter_offers_what_the_admins_does(admin_user, web, make_app):
    from django.contrib.admin.filters import RelatedFieldListFilter

    from deployments.admin import AppFilter
    from deployments.models import Snapshot

    for name in ("zeta", "a&b", "mid"):
        make_app(name, f"app: {name}\nrole: worker\n")
    admin.autodiscover()
    for model in (Deployment, Snapshot):
        model_admin = admin.site._registry[model]
        request = RequestFactory().get("/admin/")
        request.user = admin_user
        field = model._meta.get_field("app")
        ours = AppFilter(field, request, {}, model, model_admin, "app")
        theirs = RelatedFieldListFilter(field, request, {}, model, model_admin, "app")
        assert len(ours.lookup_choices) == 4
        assert ours.lookup_choices == theirs.lookup_choices


# --- rows written by tags (deployments/templatetags/norn.py) ---------------------

# The template markup the tags replace, kept here to compare with.
OLD_HISTORY_ROWS = """{% load norn ids %}{% for deployment in history %}
<tr{% if deployment.pk == live.pk %} class="live"{% endif %}>
<th scope="row"><a href="{% url 'deployment-detail' deployment.public_id %}"><code>{{ deployment.short_id }}</code></a>{% if deployment.pk == live.pk %} <span class="live-marker" title="Its image serves the traffic now">● Live</span>{% endif %}</th>
<td data-label="Status">{% include "deployments/_status.html" with status=deployment.status label=deployment.get_status_display %}</td>
<td data-label="What">{% if deployment.kind == "deploy" %}<code>{{ deployment.ref }}</code>{% else %}<span class="kind kind-{{ deployment.kind }}">{{ deployment.kind_label }}</span>{% endif %}</td>
<td data-label="Commit">{% if deployment.commit_sha %}{% short_id deployment.commit_sha 12 %}{% else %}—{% endif %}{% if deployment.commit_subject %}<br><span class="subject">{% if deployment.commit_subject|length > 60 %}<span title="{{ deployment.commit_subject }}">{{ deployment.commit_subject|slice:":59" }}…</span>{% else %}{{ deployment.commit_subject }}{% endif %}</span>{% endif %}{% if deployment.commit_author %} <span class="muted"{% if deployment.commit_time %} title="committed {{ deployment.commit_time|date:'Y-m-d H:i' }}"{% endif %}>by {{ deployment.commit_author }}</span>{% endif %}</td>
<td data-label="Why">{% with reason=deployment.failure_reason %}{% if reason %}<span class="why why-{{ deployment.status }}">{% if reason|length > 90 %}<span title="{{ reason }}">{{ reason|slice:":89" }}…</span>{% else %}{{ reason }}{% endif %}</span>{% endif %}{% endwith %}</td>
<td data-label="Queued"><time datetime="{{ deployment.queued_at|date:'c' }}">{{ deployment.queued_at|date:"Y-m-d H:i" }}</time></td>
<td data-label="Took">{{ deployment.took|duration }}</td>
<td data-label="By">{{ deployment.requested_by_label }}</td>
</tr>
{% endfor %}"""

OLD_CHART = """{% load l10n norn %}{% localize off %}{% for bar in chart.bars %}{% with d=bar.deployment %}
<a href="{% url 'deployment-detail' d.public_id %}" class="bar bar-{{ d.status }}">
<title>{{ d.short_id }} · {{ d.ref }} · {{ d.get_status_display }} · {{ bar.total|duration }}{% for s in bar.segments %}; {{ s.step }} {{ s.seconds|duration }}{% endfor %}</title>
{% for s in bar.segments %}<rect class="seg seg-{{ s.step }}" x="{{ s.x }}" y="{{ s.y }}" width="{{ s.w }}" height="{{ s.h }}" data-step="{{ s.step }}"/>{% endfor %}
{% if bar.mark %}<text class="bar-mark" x="{{ bar.cx }}" y="{{ bar.top }}" dy="-0.3em" text-anchor="middle" aria-hidden="true">{{ bar.mark }}</text>{% endif %}
</a>
{% endwith %}{% endfor %}|{% for bar in chart.bars %}
<tr>
<th scope="row"><a href="{% url 'deployment-detail' bar.deployment.public_id %}"><code>{{ bar.deployment.short_id }}</code></a> <span class="muted">{{ bar.deployment.queued_at|date:"M j H:i" }}</span></th>
<td>{% include "deployments/_status.html" with status=bar.deployment.status label=bar.deployment.get_status_display %}</td>
{% for seconds in bar.durations %}<td class="num">{{ seconds|duration }}</td>{% endfor %}
<td class="num">{{ bar.total|duration }}</td>
</tr>
{% endfor %}{% endlocalize %}"""

NEW_CHART = "{% load norn %}{% chart_bars chart %}|{% chart_table_rows chart %}"


def squeeze(markup):
    return [re.sub(r">\s+<", "><", part.strip()) for part in markup.split("|")]


def test_history_and_chart_tags_write_what_the_templates_did(web):
    from django.contrib.auth.models import User
    from django.template import engines

    from deployments import views
    from deployments.charts import duration_chart
    from tests.support.dashboard import all_succeeded

    alice = User.objects.create_user("al'ice<")
    one = make_deployment(web, ref="feat/<x>&'\"", commit="f" * 40, image="web:f", steps=all_succeeded(3), ago=30)
    Deployment.objects.filter(pk=one.pk).update(requested_by=alice, commit_subject="Fix <b>bold</b> & 'quotes' " * 5,
        commit_author="O'Brien <ob@example.com> & co", commit_time=timezone.now())
    make_deployment(web, DeploymentStatus.FAILED, kind="rollback", ago=20, steps=all_succeeded(700),
                    rollback_to=one, error="deploy failed: the new container <x> died\nits log", failed_step="deploy")
    make_deployment(web, DeploymentStatus.CANCELLED, ref="main", ago=15, error="cancelled by bob <b>")
    make_deployment(web, kind="restore", ago=10)
    make_deployment(web, DeploymentStatus.FAILED, ago=5, failed_step="test",
                    error="test failed: " + "sh exited with status 1: a very long line " * 5)
    make_deployment(web, DeploymentStatus.BUILDING, ref="main", ago=1, steps=all_succeeded(12))
    now = timezone.now()
    rows = list(views._history_page(Deployment.objects.filter(app=web).select_related("requested_by"), {}))
    for deployment in rows:
        deployment.took = views._took(deployment, now)
    live = Deployment.objects.live_for(web)
    assert live.pk == one.pk
    engine = engines["django"]
    ours = squeeze(engine.from_string("{% load norn %}{% history_rows history live %}").render(
        {"history": rows, "live": live}))
    assert ours == squeeze(engine.from_string(OLD_HISTORY_ROWS).render({"history": rows, "live": live}))
    assert "rollback to " + one.short_id in ours[0] and "restore" in ours[0] and "● Live" in ours[0]
    assert "deploy: the new container &lt;x&gt; died" in ours[0] and "cancelled by bob &lt;b&gt;" in ours[0]
    chart = duration_chart(reversed(rows))
    assert chart["bars"][0]["segments"] and any(bar["mark"] for bar in chart["bars"])
    assert squeeze(engine.from_string(NEW_CHART).render({"chart": chart})) == \
        squeeze(engine.from_string(OLD_CHART).render({"chart": chart}))


# --- pages by number through the deployments per day (paging.DAY_SKIP_SQL) ------

MIDNIGHT = datetime(2026, 3, 1, tzinfo=dt_timezone.utc)
# Where in its day a deployment is queued: at midnight UTC exactly, a
# microsecond either side of it, at the same instant as others, at noon.
IN_THE_DAY = [timedelta(0), timedelta(microseconds=-1), timedelta(microseconds=1), timedelta(0), timedelta(hours=12)]


def spread(apps, count):
    """`count` deployments of `apps` over four days (ties, rows on the days'
    edges), one in seven deleted again (gaps in the ids)."""
    made = []
    for i in range(count):
        deployment = make_deployment(apps[i % len(apps)], ref=f"r{i}")
        queued = MIDNIGHT + timedelta(days=i % 4) + IN_THE_DAY[i % len(IN_THE_DAY)]
        Deployment.objects.filter(pk=deployment.pk).update(queued_at=queued)
        made.append(deployment.pk)
    Deployment.objects.filter(pk__in=made[::7]).delete()


def recounted():
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_id, (queued_at AT TIME ZONE 'UTC')::date, count(*) "
                       "FROM deployments_deployment GROUP BY 1, 2")
        return {(app, day): n for app, day, n in cursor.fetchall()}


def day_counts():
    return {(d.app_id, d.day): d.count for d in DeploymentDay.objects.all() if d.count}


def test_pages_by_number_skipping_days_show_the_rows_skipping_rows_does(web, make_app):
    from apps_registry.models import App

    make_app("api", "app: api\nrole: worker\n")
    api = App.objects.get(name="api")
    spread([web, api, web], 40)
    lists = [
        Deployment.objects.order_by("-queued_at", "-id"),
        Deployment.objects.filter(app=web).order_by("-queued_at", "-id"),
        Deployment.objects.filter(app_id=api.pk).order_by("queued_at", "id"),
        Deployment.objects.order_by("queued_at", "id"),
    ]
    for rows in lists:
        paginator = LongListPaginator(rows, 3)
        assert paginator._day_scope() is not None
        total = rows.count()
        for skip in range(total + 2):
            for from_the_end in (False, True):
                ids = paginator._ids(skip, 3, from_the_end)
                shown = list(rows.filter(pk__in=ids).values_list("pk", flat=True))
                skipped = list((rows.reverse() if from_the_end else rows).values_list("pk", flat=True)[skip:skip + 3])
                assert shown == (skipped[::-1] if from_the_end else skipped), (rows.query, skip, from_the_end)
    # Other filters and orders skip rows, as before.
    assert LongListPaginator(Deployment.objects.filter(status="failed"), 3)._day_scope() is None
    assert LongListPaginator(Deployment.objects.order_by("status", "id"), 3)._day_scope() is None
    assert LongListPaginator(Deployment.objects.exclude(app=web), 3)._day_scope() is None


def test_the_admin_lists_and_the_app_page_skip_days(admin_user, web, make_app):
    from deployments import views

    make_app("api", "app: api\nrole: worker\n")  # the admin offers no filter by app with one app
    admin.autodiscover()
    model_admin = admin.site._registry[Deployment]
    for query, scope in (({}, 0), ({"app__id__exact": str(web.pk)}, web.pk), ({"o": "7"}, 0), ({"o": "-7"}, 0),
                         ({"status__exact": "failed"}, None), ({"q": "main"}, None)):
        request = RequestFactory().get(ADMIN, query)
        request.user = admin_user
        assert model_admin.get_changelist_instance(request).paginator._day_scope() == scope, query
    assert views._history_page(Deployment.objects.filter(app=web), {}).paginator._day_scope() == web.pk


def test_the_days_count_every_deployment_added_moved_or_removed(web, make_app):
    from apps_registry.models import App

    make_app("api", "app: api\nrole: worker\n")
    api = App.objects.get(name="api")
    spread([web, api], 12)
    assert day_counts() == recounted() and sum(recounted().values()) == 10
    first, second = Deployment.objects.order_by("id")[1:3]
    Deployment.objects.filter(pk=first.pk).update(queued_at=MIDNIGHT - timedelta(days=30))
    Deployment.objects.filter(pk=second.pk).update(app=api)
    second.refresh_from_db()
    second.status = DeploymentStatus.FAILED
    second.save()  # every column written, none moved
    assert day_counts() == recounted()
    Deployment.objects.filter(app=web).delete()
    assert day_counts() == recounted() and set(day_counts()) == {k for k in recounted() if k[0] == api.pk}
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no foreign key checks pending
        cursor.execute("TRUNCATE deployments_deployment CASCADE")
    assert not DeploymentDay.objects.exists()
