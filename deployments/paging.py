"""Pages of long lists: a year of deployments is a million rows, and
Django's Paginator counts them all and skips them with OFFSET."""

import json

from django.core.paginator import Paginator
from django.utils.functional import cached_property


class LongListPaginator(Paginator):
    """A paginator for lists of a million rows (the admin's deployment list,
    an app's history).

    Counts exactly up to EXACT_UP_TO rows and estimates beyond (PostgreSQL's
    row estimate, shown as "about N"): COUNT(*) reads every row it counts.
    A page's ids come first, from the ordering's index alone, then its rows:
    an OFFSET over whole rows fetches every skipped row. Pages past the middle
    are read from the oldest end, so no scan skips more than half the list.
    With an estimated count those pages are numbered from the end (the last
    page holds the oldest rows), so around the middle a row may show on two
    pages or on none. Every page takes the same three queries.
    """

    EXACT_UP_TO = 10_000

    @cached_property
    def _counts(self):
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
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        size = min(self.per_page, max(self.count - bottom, 0))
        if bottom > self.count // 2:
            if self.estimated:
                after, size = (self.num_pages - number) * self.per_page, self.per_page
            else:
                after = self.count - bottom - size
            ids = self.object_list.reverse().values_list("pk", flat=True)[after:after + size]
        else:
            ids = self.object_list.values_list("pk", flat=True)[bottom:bottom + size]
        # One query: PostgreSQL reads the ids first (the subquery), then their rows.
        return self._get_page(list(self.object_list.filter(pk__in=ids)), number, self)
