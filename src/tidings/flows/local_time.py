"""The time arithmetic of flows, in the contact's local time: send windows, waits until a
time of day or a date attribute, yearly date triggers, frequency caps and schedules.

Pure functions over aware UTC datetimes and `zoneinfo` zones; the caller passes `now`.
Local wall-clock times become instants through `at_local`, which settles daylight-saving
days once for all of them: a time skipped at spring-forward means the first instant after
the gap, a time repeated at fall-back means its first occurrence.

A send window is the run of instants from its opening on each allowed local day to its
closing (the next day's `end` when `end <= start`, which the flow format refuses but
this module still reads sensibly). So in the repeated hour at fall-back it counts once."""

from __future__ import annotations

import calendar
import hashlib
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tidings import errors
from tidings.conditions.dates import DATE_PREFIX
from tidings.flows.graph import FrequencyCap, SendWindow

#: How late a yearly date trigger may still enrol a contact (see `anniversary`).
ANNIVERSARY_GRACE = timedelta(days=1)

DAY = timedelta(days=1)
MIDNIGHT = time(0, 0)
# Two weeks of local days reach every allowed weekday, even past a day a gap empties.
_HORIZON = 16

# -- zones and local times --------------------------------------------------------------


def zone(name: str | None, fallback: str) -> ZoneInfo:
    """The contact's IANA zone, or `fallback` when it is missing or unknown (and UTC when
    the fallback is unknown too, so a bad profile value never stops a run)."""
    for key in (name, fallback):
        if key:
            try:
                return ZoneInfo(key)
            except (ValueError, KeyError, OSError):  # KeyError: ZoneInfoNotFoundError
                continue
    return ZoneInfo("UTC")


def window_zone(window: SendWindow, contact_tz: str | None, fallback: str) -> ZoneInfo:
    """The zone a send window is read in: the contact's for `tz: contact`, else the named
    one (either falling back to `fallback`)."""
    return zone(contact_tz if window.tz == "contact" else window.tz, fallback)


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """Local date `day` at wall-clock time `at` in `tz`, as a UTC instant. A time skipped
    at spring-forward gives the first instant after the gap; a repeated one, its first
    occurrence."""
    wall = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    when = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first occurrence
    if when.astimezone(tz).replace(tzinfo=None) == wall:
        return when
    return _gap_end(wall, tz)


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant the gap containing wall time `wall` ends: the first whole second whose
    wall time is past it (transitions fall on whole seconds)."""
    low = math.floor(wall.replace(tzinfo=tz, fold=1).timestamp())  # offset after: earlier
    high = math.ceil(wall.replace(tzinfo=tz, fold=0).timestamp())  # offset before: later
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _local_day(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


def _no_days(field: str) -> errors.InvalidInput:
    return errors.InvalidInput.field(field, "must name at least one day, 0 (Monday) to 6")


# -- send windows -----------------------------------------------------------------------


def _windows(
    after: datetime, window: SendWindow, tz: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """The window's (opening, closing) instants that close after `after`, in order. They
    never overlap: `at_local` keeps wall-clock order."""
    first = _local_day(after, tz) - DAY
    for n in range(_HORIZON):
        day = first + n * DAY
        if day.weekday() not in window.days:
            continue
        closes_on = day if window.end > window.start else day + DAY
        opens, closes = at_local(day, window.start, tz), at_local(closes_on, window.end, tz)
        if opens < closes and closes > after:  # a window inside a gap is empty
            yield opens, closes
    raise _no_days("send_window.days")


def _window_at(at: datetime, window: SendWindow, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
    """The opening and closing of the window `at` is in, if it is in one."""
    opens, closes = next(_windows(at, window, tz))
    return (opens, closes) if opens <= at else None


def in_window(at: datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    """Whether `at` is inside the window: on an allowed local weekday (0 = Monday), with
    `start <= local time < end`."""
    return _window_at(at, window, tz) is not None


def window_opening(now: datetime, window: SendWindow, tz: ZoneInfo) -> datetime:
    """`now` inside the window, else the next instant the window opens (see `at_local`
    for daylight-saving days). Raises InvalidInput when the window has no days."""
    opens, _ = next(_windows(now, window, tz))
    return max(opens, now)


def spread(opening: datetime, window: SendWindow, tz: ZoneInfo, seed: int) -> datetime:
    """When a run that waited for the window goes: `opening` plus a stable hash of `seed`
    (the run id) over the window's first `spread`, so a backlog does not go in one burst.
    The offset stays before the window closes; an `opening` outside the window is kept."""
    found = _window_at(opening, window, tz)
    if found is None:
        return opening
    room = min(window.spread, found[1] - opening) // timedelta(seconds=1)
    if room <= 0:
        return opening
    # Salted so it is independent of other hashes of the run id (split cohorts).
    digest = hashlib.blake2b(str(seed).encode(), digest_size=8, person=b"tidings-spread")
    return opening + timedelta(seconds=int.from_bytes(digest.digest(), "big") % room)


def send_time(now: datetime, window: SendWindow | None, tz: ZoneInfo, seed: int) -> datetime:
    """When a message due `now` may go: at once without a window or inside it, else at
    the window's next opening, spread by `seed`."""
    if window is None:
        return now
    opening = window_opening(now, window, tz)
    return now if opening == now else spread(opening, window, tz, seed)


# -- waits ------------------------------------------------------------------------------


def next_local_time(now: datetime, at: time, days: frozenset[int], tz: ZoneInfo) -> datetime:
    """The first instant >= `now` at local time `at` on one of `days` (0 = Monday), for
    `wait: {until: "09:00", days: [mon]}`. Raises InvalidInput when `days` is empty."""
    first = _local_day(now, tz) - DAY
    for n in range(_HORIZON):
        day = first + n * DAY
        if day.weekday() in days:
            when = at_local(day, at, tz)
            if when >= now:
                return when
    raise _no_days("wait.days")


def attribute_date(value: object) -> date | None:
    """A stored date attribute as a date; None when missing or unparseable. Text is an ISO
    date or date-time whose date is taken as written (an offset is not applied), as the
    condition language's `anniversary` reads it; a `datetime` gives its own date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not DATE_PREFIX.match(value.strip()):
        return None
    try:
        return datetime.fromisoformat(value.strip()).date()
    except ValueError:
        return None


def wait_until_attribute(
    now: datetime, value: object, offset: timedelta, at: time | None, tz: ZoneInfo
) -> datetime:
    """When `wait: {until_attribute}` ends: the attribute's date at local `at` (midnight
    when None), moved by `offset` on the wall clock (`-3d` keeps the time of day). It may
    be past (the run goes on at once); a missing or unusable value gives `now`, the same."""
    day = attribute_date(value)
    if day is None:
        return now
    try:
        wall = datetime.combine(day, (at or MIDNIGHT).replace(tzinfo=None)) + offset
        return at_local(wall.date(), wall.time(), tz)
    except OverflowError:
        return now


# -- yearly date triggers ---------------------------------------------------------------


def _in_year(day: date, year: int) -> date:
    """`day`'s anniversary in `year`; 29 February falls on the 28th in other years."""
    if day.month == 2 and day.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return day.replace(year=year)


def anniversary(
    value: object, offset_days: int, at: time, tz: ZoneInfo, now: datetime
) -> tuple[datetime, int] | None:
    """The occurrence of a yearly date trigger due next, as (instant, anniversary year).

    Year Y's occurrence is the date's anniversary in Y (29 February: the 28th in other
    years) moved by `offset_days`, at local `at`; Y runs from the first anniversary (a
    date's own day is not one: no signup-day "anniversary"). Returned: the earliest
    occurrence after `now - ANNIVERSARY_GRACE`. A scanner enrols when its instant is <=
    now, keyed by the year: each occurrence once, at its local time, if the scanner runs
    at least once per grace; one missed by more (downtime, a contact added later) is
    skipped, not sent late. None when the value is unusable."""
    born = attribute_date(value)
    if born is None:
        return None
    try:
        shift = timedelta(days=offset_days)
        first = max((_local_day(now, tz) - shift).year - 1, born.year + 1)
        for year in range(first, first + 4):
            when = at_local(_in_year(born, year) + shift, at, tz)
            if when > now - ANNIVERSARY_GRACE:
                return when, year
    except (OverflowError, ValueError):  # beyond the calendar
        return None
    return None


# -- caps and schedules -----------------------------------------------------------------


def cap_release(sent: Sequence[datetime], cap: FrequencyCap, now: datetime) -> datetime | None:
    """None when one more message fits the cap now (fewer than `count` of `sent` in
    `(now - per, now]`), else the instant enough of them have left the window for one
    more. Sends after `now` are not counted. Raises InvalidInput for a count below 1."""
    if cap.count < 1:
        raise errors.InvalidInput.field("frequency_cap", "must allow at least 1 message")
    counted = sorted(when for when in sent if now - cap.per < when <= now)
    if len(counted) < cap.count:
        return None
    return counted[len(counted) - cap.count] + cap.per


def schedule_occurrence(
    now: datetime, every: timedelta, starting: datetime
) -> tuple[datetime, datetime] | None:
    """For a schedule trigger: the latest occurrence `starting + k * every` at or before
    `now`, and the one after it; None before `starting`. Exact, in absolute time."""
    if every <= timedelta(0):
        raise errors.InvalidInput.field("schedule.every", "must be positive")
    if now < starting:
        return None
    latest = starting + (now - starting) // every * every
    return latest, latest + every
