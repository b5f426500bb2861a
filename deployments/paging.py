"""Pages of long lists: a year of deployments is a million rows, and
Django's Paginator counts them all and skips them with OFFSET."""

import json
import uuid

from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import BooleanField, Sum
from django.db.models.expressions import Col, RawSQL
from django.db.models.lookups import Exact
from django.utils.functional import cached_property

from deployments.models import Deployment, DeploymentDay

# The query parameters of a page after or before a row in the list's order,
# named by its public id: ?after=<uuid> lists the rows after it (the older
# ones, in a newest-first list), ?before=<uuid> those before it. With
# ?page=N (the page's number, as a label) they are bookmarkable, and show
# the same rows however many deployments come later.
AFTER, BEFORE = "after", "before"

EVERY_APP = 0  # no app has this id

# The ids of the rows after the first %s of a list of deployments by queue
# time (of one app, or every app's), newest or oldest first: the day that row
# falls on and the count of the rows before that day from the days' counts,
# then the rest skipped within that day, by an index-only range scan
# (deploy_recent or deploy_app_recent) that starts at the day's end.
DAY_SKIP_SQL = """
WITH start AS (
    SELECT day, upto - n AS before FROM (
        SELECT day, sum(count) AS n, sum(sum(count)) OVER (ORDER BY day {order}) AS upto
        FROM {days} {app_days} GROUP BY day
    ) days
    WHERE upto > %s ORDER BY day {order} LIMIT 1
)
SELECT id FROM {table}
WHERE {app_rows} queued_at {compare} (SELECT {boundary}::timestamp AT TIME ZONE 'UTC' FROM start)
ORDER BY queued_at {order}, id {order}
OFFSET (SELECT %s - before FROM start) LIMIT %s
"""


class LongListPaginator(Paginator):
    """A paginator for lists of a million rows (the admin's deployment list,
    an app's history).

    Counts exactly up to EXACT_UP_TO rows and estimates beyond (PostgreSQL's
    row estimate, shown as "about N"): COUNT(*) reads every row it counts.
    A list of deployments by queue time, of every app or of one, is counted
    exactly however long, by adding up its days (DeploymentDay).

    A page next to one already shown is read from where that one ended
    (keyset pagination, `after`/`before`: one index range scan of a page's
    rows, however deep). A page by number skips rows: its ids come first,
    from the ordering's index alone, then its rows (an OFFSET over whole rows
    fetches every skipped row), and pages past the middle are read from the
    oldest end, so no scan skips more than half the list. In a list of
    deployments newest (or oldest) first, of every app or of one, whole days
    are skipped instead (DeploymentDay: the rows up to a day are added up from
    365 counts a year, then at most that day's rows are skipped). With an estimated
    count those pages are numbered from the end (the last page holds the
    oldest rows), so around the middle a row may show on two pages or on
    none; the after/before links never skip or repeat a row. Every page of a
    list takes the same queries: three, or two when it is counted by days.
    """

    EXACT_UP_TO = 10_000

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, after=None, before=None):
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.after, self.before = _public_id(after), _public_id(before)
        # The page page() returned last (the admin's pagination template reads it).
        self.shown = None

    @cached_property
    def _counts(self):
        app_id = self._day_scope()
        if app_id is not None:
            # Exactly, from the days' counts (365 rows a year per app).
            days = DeploymentDay.objects.all() if app_id == EVERY_APP else DeploymentDay.objects.filter(app_id=app_id)
            return days.aggregate(count=Sum("count"))["count"] or 0, False
        # Without joins for related rows: the same rows, and the same estimate
        # whichever columns a list shows.
        unordered = self.object_list.order_by().select_related(None)
        capped = unordered[: self.EXACT_UP_TO + 1].count()
        plan = json.loads(unordered.explain(format="json"))
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if capped <= self.EXACT_UP_TO:
            return capped, False
        return max(estimate, capped), True

    @cached_property
    def count(self):
        return self._counts[0]

    @property
    def estimated(self):
        return self._counts[1]

    def page(self, number):
        """The page after the row `after` or before the row `before` if
        given (numbered `number` as far as that is valid), else page
        `number`. A cursor that names no row, or past which there is none,
        gives the page by number."""
        if (self.after or self.before) and self._keyset_columns():
            page = self._keyset_page(number)
            if page is not None:
                self.shown = page
                return page
        self.shown = self._numbered_page(number)
        return self.shown

    def _numbered_page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        size = min(self.per_page, max(self.count - bottom, 0))
        if bottom > self.count // 2:
            if self.estimated:
                after, size = (self.num_pages - number) * self.per_page, self.per_page
            else:
                after = self.count - bottom - size
            ids = self._ids(after, size, from_the_end=True)
        else:
            ids = self._ids(bottom, size, from_the_end=False)
        # One query: PostgreSQL reads the ids first (the subquery), then their rows.
        return self._get_page(list(self.object_list.filter(pk__in=ids)), number, self)

    def _ids(self, skip, size, from_the_end):
        """The ids of `size` rows after the first `skip` of the list (read
        from its other end if `from_the_end`), as a subquery."""
        app_id = self._day_scope()
        if app_id is None:
            rows = self.object_list.reverse() if from_the_end else self.object_list
            return rows.values_list("pk", flat=True)[skip:skip + size]
        newest_first = self._keyset_columns()[0][1] != from_the_end
        sql = DAY_SKIP_SQL.format(
            days=DeploymentDay._meta.db_table, table=Deployment._meta.db_table,
            order="DESC" if newest_first else "ASC",
            # A day's rows: day <= queued_at < day + 1 (UTC), as the triggers count them.
            compare="<" if newest_first else ">=", boundary="(day + 1)" if newest_first else "day",
            app_days="WHERE app_id = %s" if app_id != EVERY_APP else "",
            app_rows="app_id = %s AND" if app_id != EVERY_APP else "",
        )
        app = [app_id] if app_id != EVERY_APP else []
        return RawSQL(sql, [*app, skip, *app, skip, size])

    def _day_scope(self):
        """The app whose deployments the list is (its id; EVERY_APP for all
        of them) if the days of DeploymentDay can be skipped: a list of
        deployments by queue time and id, unfiltered or filtered by app
        alone. Else None."""
        query = self.object_list.query
        if (self.object_list.model is not Deployment or query.distinct or query.combinator
                or [column for column, _ in self._keyset_columns()] != ["queued_at", "id"]):
            return None
        if not query.where.children:
            return EVERY_APP
        if len(query.where.children) != 1 or query.where.negated:
            return None
        lookup = query.where.children[0]
        if (isinstance(lookup, Exact) and isinstance(lookup.lhs, Col) and lookup.lhs.target.column == "app_id"
                and lookup.lhs.alias == Deployment._meta.db_table and isinstance(lookup.rhs, int)):
            return lookup.rhs
        return None

    def _get_page(self, *args, **kwargs):
        return ListPage(*args, **kwargs)

    def _keyset_columns(self):
        """[(column, descending)] of the list's ordering, if a page can start
        after a row: plain non-null columns sorted the same way (a row
        comparison, which one index range scan serves), in a model whose rows
        have a public id to name them by."""
        model, query = self.object_list.model, self.object_list.query
        if not any(f.name == "public_id" for f in model._meta.concrete_fields):
            return []
        columns = []
        for name in query.order_by or (model._meta.ordering if query.default_ordering else ()):
            if not isinstance(name, str):  # an expression: no column to compare
                return []
            descending = name.startswith("-")
            name = name.lstrip("-")
            field = model._meta.pk if name == "pk" else next(
                (f for f in model._meta.concrete_fields if name in (f.name, f.attname)), None)
            if field is None or field.null:
                return []
            columns.append((field.column, descending))
        if not columns or len({descending for _, descending in columns}) != 1:
            return []
        return columns

    def _keyset_page(self, number):
        columns = self._keyset_columns()
        table = self.object_list.model._meta.db_table
        names = ", ".join(f'"{table}"."{column}"' for column, _ in columns)
        cursor_names = ", ".join(f'"{column}"' for column, _ in columns)
        backwards = self.before is not None
        # Later in the list is smaller when it is sorted descending.
        later = "<" if columns[0][1] else ">"
        sign = {"<": ">", ">": "<"}[later] if backwards else later
        beyond = RawSQL(
            f'({names}) {sign} (SELECT {cursor_names} FROM "{table}" WHERE "public_id" = %s)',
            [self.before if backwards else self.after], output_field=BooleanField(),
        )
        rows = self.object_list.filter(beyond)
        if backwards:
            rows = rows.reverse()
        rows = list(rows[: self.per_page + 1])
        if not rows:
            return None
        more = len(rows) > self.per_page
        rows = rows[: self.per_page]
        if backwards:
            rows.reverse()
        try:
            number = self.validate_number(number)
        except InvalidPage:
            number = 1 if backwards else self.num_pages
        # Numbered as the page it follows or precedes, kept in range: the rows
        # decide what a page shows, the number only labels it.
        low, high = (1, self.num_pages - 1) if backwards else (2, self.num_pages)
        number = min(max(number, low), max(high, 1))
        page = KeysetPage(rows, number, self)
        page.more_before = more if backwards else True
        page.more_after = True if backwards else more
        return page


class ListPage(Page):
    """A page, and the rows its previous and next links start from: those
    links read the next page after a row rather than by number, when the
    list's ordering allows it (LongListPaginator._keyset_columns)."""

    @cached_property
    def keyset(self):
        return bool(self.paginator._keyset_columns())

    @property
    def before_cursor(self):
        # The newest page is linked by number: page 1 is always the newest rows.
        if self.keyset and self.has_previous() and self.previous_page_number() > 1:
            return self.object_list[0].public_id
        return None

    @property
    def after_cursor(self):
        if self.keyset and self.has_next():
            return self.object_list[-1].public_id
        return None


class KeysetPage(ListPage):
    """A page read after or before a row: whether there are rows beyond it
    is known from the rows read, not from the (estimated) count."""

    more_before = more_after = False

    def has_next(self):
        return self.more_after

    def has_previous(self):
        return self.more_before

    def next_page_number(self):
        return min(self.number + 1, self.paginator.num_pages)

    def previous_page_number(self):
        return max(self.number - 1, 1)


def _public_id(value):
    """A cursor from the query string, or None when it is no UUID."""
    if not value:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
