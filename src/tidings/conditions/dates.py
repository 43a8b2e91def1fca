"""Dates in rules: reading the instants people write, and the text form that date
operators compare on custom attributes and event properties (JSON has no date type).

A JSON date is a string starting `YYYY-MM-DD`, in UTC: `2026-01-05`, `2026-01-05T09:30:00Z`
or `2026-01-05 09:30:00`. It is compared on its *key*: its first 19 characters once a bare
date is read as midnight and a space separator as `T` (so to the second, offsets ignored).
SQL computes the same key with `substr`/`replace`, which is why it is defined on text."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tidings import errors

#: What a JSON string must start with for date operators to look at it.
DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: The same test as an SQLite GLOB pattern and a PostgreSQL regular expression.
DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
DATE_REGEX = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
#: What is appended before taking the first 19 characters (a bare date means midnight).
MIDNIGHT = "T00:00:00"
KEY_LENGTH = 19

ANNIVERSARIES = ("today", "this_week")


def parse_instant(value: object, field: str) -> tuple[datetime, bool]:
    """An ISO date or date-time (or a `date`/`datetime`, as YAML gives) as an aware UTC
    datetime, and whether it was a bare date. Naive date-times are read as UTC."""
    if isinstance(value, datetime):
        when, bare = value, False
    elif isinstance(value, date):
        when, bare = datetime(value.year, value.month, value.day, tzinfo=UTC), True
    elif isinstance(value, str) and DATE_PREFIX.match(value.strip()):
        text = value.strip()
        bare = len(text) == 10
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise errors.InvalidInput.field(field, "is not a valid date or date-time") from None
    else:
        raise errors.InvalidInput.field(
            field, "must be an ISO date or date-time, like 2026-01-31 or 2026-01-31T09:00:00Z"
        )
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when, bare


def text_key(text: str) -> str:
    """The comparable key of a JSON date string (see the module docstring)."""
    return (text + MIDNIGHT)[:KEY_LENGTH].replace(" ", "T")


def instant_key(when: datetime) -> str:
    """The key of an instant, to compare JSON date strings against."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def is_date_text(value: object) -> bool:
    """Whether date operators look at this JSON value at all."""
    return isinstance(value, str) and DATE_PREFIX.match(value) is not None


def anniversary_days(now: datetime, which: str) -> tuple[str, ...]:
    """The `MM-DD` days an anniversary falls on: today, or this week (Monday to Sunday),
    by the UTC date of `now`. A 29 February date has its anniversary on 28 February in
    other years."""
    today = now.astimezone(UTC).date()
    if which == "today":
        days = [today]
    else:
        monday = today - timedelta(days=today.weekday())
        days = [monday + timedelta(days=i) for i in range(7)]
    out = {d.strftime("%m-%d") for d in days}
    if any(d.month == 2 and d.day == 28 and not _leap(d.year) for d in days):
        out.add("02-29")
    return tuple(sorted(out))


def _same(when: datetime) -> Any:
    return when


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def comparisons(
    op: str, subject: Any, x: Any, now: datetime, convert: Callable[[datetime], Any] = _same
) -> list[Any]:
    """The comparisons `subject` must all pass for `before`/`after` X (strict) or
    `within_last`/`within_next` X (both ends inclusive) at `now`, each bound passed through
    `convert`. `subject` may be a Python value or an SQL expression: both read the same."""
    if op == "before":
        return [subject < convert(x)]
    if op == "after":
        return [subject > convert(x)]
    low, high = (now - x, now) if op == "within_last" else (now, now + x)
    return [subject >= convert(low), subject <= convert(high)]
