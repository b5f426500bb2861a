"""History pages built for a million deployments (issue 13): the app page's
deep pages read from the oldest end, the success rate over the latest
deploys, and the admin list's paginator (estimated count, pages by ids),
sorting, search and query counts. bench/history_scale.py measures the speed;
these check that the shortcuts show the same rows."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments import views
from deployments.models import Deployment, DeploymentStatus, Snapshot, StepStatus
from deployments.paging import LongListPaginator
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import all_succeeded, make_deployment, page

pytestmark = pytest.mark.django_db

ADMIN = "/admin/deployments/deployment/"


def history_ids(client, url):
    html = page(client, url).split('<div id="history">')[1].split("</nav>")[0]
    return re.findall(r'<th scope="row"><a href="/deployments/[^"]+/"><code>([0-9a-f]{8})</code>', html)


@pytest.mark.parametrize("count", [45, 65])
def test_every_history_page_shows_the_next_deployments_in_order(operator, web, count):
    made = [make_deployment(web, ref=f"r{i}", ago=count - i) for i in range(count)]
    newest_first = [d.short_id for d in reversed(made)]
    pages = -(-count // views.HISTORY_PAGE_SIZE)
    shown = []
    for number in range(1, pages + 1):
        ids = history_ids(operator, f"/apps/web/?page={number}")
        # Pages past the middle are read from the oldest end: same rows, same order.
        assert ids == newest_first[(number - 1) * 20:number * 20], number
        shown += ids
    assert shown == newest_first


def test_deep_and_first_history_pages_take_the_same_queries(operator, web):
    for i in range(65):
        make_deployment(web, ref=f"r{i}", ago=65 - i)

    def queries(url):
        operator.get(url)
        with CaptureQueriesContext(connection) as ctx:
            operator.get(url, headers={"HX-Request": "true"})
        return len(ctx.captured_queries)

    assert queries("/apps/web/") == queries("/apps/web/?page=2") == queries("/apps/web/?page=4")


def test_success_rate_is_over_the_latest_finished_deploys(operator, web, monkeypatch):
    monkeypatch.setattr(views, "SUCCESS_RATE_DEPLOYS", 3)
    failed = {**all_succeeded(), "deploy": (StepStatus.FAILED, 1)}
    for i in range(4):  # older: all failed, outside the window
        make_deployment(web, DeploymentStatus.FAILED, steps=failed, ago=100 - i)
    make_deployment(web, DeploymentStatus.FAILED, steps=failed, ago=10)
    make_deployment(web, steps=all_succeeded(), ago=5)
    make_deployment(web, steps=all_succeeded(), ago=1)
    html = page(operator, "/apps/web/")
    assert "67%" in html and "2 of the latest 3 finished deploys went live" in html
    monkeypatch.setattr(views, "SUCCESS_RATE_DEPLOYS", 100)
    assert "2 of 7 finished deploys went live" in page(operator, "/apps/web/")


class SmallLimit(LongListPaginator):
    EXACT_UP_TO = 10


def newest_first():
    return Deployment.objects.order_by("-queued_at", "-id")


def test_paginator_counts_exactly_up_to_its_limit_and_pages_from_both_ends(web):
    made = [make_deployment(web, ref=f"r{i}", ago=10 - i) for i in range(10)]
    expected = [d.pk for d in reversed(made)]
    paginator = SmallLimit(newest_first(), 3)
    assert (paginator.count, paginator.estimated, paginator.num_pages) == (10, False, 4)
    shown = [d.pk for number in paginator.page_range for d in paginator.page(number).object_list]
    assert shown == expected


def test_paginator_estimates_past_its_limit(web):
    made = [make_deployment(web, ref=f"r{i}", ago=30 - i) for i in range(30)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE deployments_deployment")
    # Filtered by status: not a list DeploymentDay counts.
    paginator = SmallLimit(newest_first().filter(status=DeploymentStatus.DEPLOYED), 4)
    assert paginator.estimated and paginator.count >= 11
    assert [d.pk for d in paginator.page(1).object_list] == [d.pk for d in reversed(made[-4:])]
    # The last page holds the oldest deployments, newest first.
    last = paginator.page(paginator.num_pages).object_list
    assert [d.pk for d in last] == [d.pk for d in reversed(made[:4])]


def test_admin_says_about_when_it_estimates(admin_client, web, monkeypatch):
    for i in range(12):
        make_deployment(web, ref=f"r{i}", ago=i)
    assert re.search(r"\b12 deployments", page(admin_client, ADMIN))
    monkeypatch.setattr(LongListPaginator, "EXACT_UP_TO", 5)
    assert re.search(r"about \d+ deployments", page(admin_client, ADMIN + "?status__exact=deployed"))
    # Every app's deployments, or one's, are counted exactly by their days.
    assert re.search(r"\b12 deployments", page(admin_client, ADMIN))
    assert re.search(r"\b12 deployments", page(admin_client, f"{ADMIN}?app__id__exact={web.pk}"))


def test_admin_sorts_by_status_either_way_and_only_by_indexed_columns(admin_client, web):
    statuses = [DeploymentStatus.FAILED, DeploymentStatus.DEPLOYED, DeploymentStatus.ROLLED_BACK] * 2
    made = [make_deployment(web, status, ref=f"r{i}", ago=10 - i) for i, status in enumerate(statuses)]
    html = page(admin_client, ADMIN)
    headers = re.findall(r'<th scope="col"\s+class="([^"]*)"', html)
    sortable = [h for h in headers if "sortable" in h]
    assert any("column-status" in h for h in sortable) and any("column-queued_at" in h for h in sortable)
    assert not any("column-app" in h or "column-ref" in h for h in sortable)

    def listed(order):
        html = page(admin_client, f"{ADMIN}?o={order}")
        return re.findall(r'name="_selected_action" value="(\d+)"', html)

    position = 1 + ["short_id", "app", "ref", "short_commit", "status"].index("status")
    ascending = sorted(made, key=lambda d: (d.status, d.pk))
    assert listed(position) == [str(d.pk) for d in ascending]
    assert listed(-position) == [str(d.pk) for d in reversed(ascending)]


def test_admin_search_finds_by_id_app_ref_commit_and_image(admin_client, web, make_app):
    make_app("api", "app: api\nrole: worker\n")
    from apps_registry.models import App

    api = App.objects.get(name="api")
    one = make_deployment(web, ref="main", commit="abc123" + "0" * 34, image="reg/web:abc123")
    two = make_deployment(api, ref="v2", commit="def456" + "0" * 34, image="reg/api:def456")

    def found(term):
        html = page(admin_client, f"{ADMIN}?q={term}")
        return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)}

    assert found(one.short_id) == {one.pk}
    assert found(str(two.public_id).upper()) == {two.pk}
    assert found("api") == {two.pk}
    assert found("main") == {one.pk}
    assert found("abc1") == {one.pk}
    assert found("reg/api:def456") == {two.pk}
    assert found("web main") == {one.pk}
    assert found("nothing-like-it") == set()


def test_admin_lists_take_the_same_queries_however_many_rows(admin_client, web):
    def queries(url):
        admin_client.get(url)
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    urls = [ADMIN, f"{ADMIN}?o=5", "/admin/deployments/snapshot/"]
    deployment = make_deployment(web, steps=all_succeeded())
    Snapshot.objects.create(deployment=deployment, app=web, database="d", path="/s/0", size=1, sha256="0")
    few = [queries(url) for url in urls]
    for i in range(60):
        deployment = make_deployment(web, steps=all_succeeded(), ago=i)
        Snapshot.objects.create(deployment=deployment, app=web, database="d", path=f"/s/{i}", size=1, sha256="0")
    # 61 deployments: more than one page of 50, and a second page.
    assert [queries(url) for url in urls] == few
    assert [queries(url) for url in [ADMIN + "?p=2", ADMIN + "?o=5&p=2"]] == few[:2]


def test_app_page_counts_its_history_exactly_past_the_limit(operator, web, monkeypatch):
    for i in range(25):
        make_deployment(web, ref=f"r{i}", ago=i)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE deployments_deployment")
    assert "Page 1 of 2</span>" in page(operator, "/apps/web/")
    monkeypatch.setattr(LongListPaginator, "EXACT_UP_TO", 5)
    # From DeploymentDay, never estimated.
    assert "Page 1 of 2</span>" in page(operator, "/apps/web/")


def test_admin_event_list_shows_the_newest_events_first(admin_client, web):
    from deployments.models import Event

    deployment = make_deployment(web)
    first = Event.objects.create(deployment=deployment, seq=1001, kind="log", payload={})
    last = Event.objects.create(deployment=deployment, seq=1002, kind="log", payload={})
    html = page(admin_client, "/admin/deployments/event/")
    listed = re.findall(r'name="_selected_action" value="(\d+)"', html)
    assert listed.index(str(last.pk)) < listed.index(str(first.pk))
