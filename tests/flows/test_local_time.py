"""Flow time arithmetic (`flows.local_time`): examples on the daylight-saving days of 2026
(Berlin, New York, Lord Howe's half-hour shift) and properties checked against plain
wall-clock oracles."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import errors
from tidings.flows.graph import FrequencyCap, SendWindow
from tidings.flows.local_time import (
    ANNIVERSARY_GRACE,
    anniversary,
    at_local,
    attribute_date,
    cap_release,
    in_window,
    next_local_time,
    schedule_occurrence,
    send_time,
    spread,
    wait_until_attribute,
    window_opening,
    window_zone,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
ZONES = [BERLIN, NEW_YORK, TOKYO, LORD_HOWE, ZoneInfo("Asia/Kathmandu"), ZoneInfo("UTC")]
WEEKDAYS = frozenset(range(5))
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)
# The 2026 transitions of the zones above, in UTC.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Berlin 02:00 CET -> 03:00 CEST
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Berlin 03:00 CEST -> 02:00 CET
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York 02:00 EST -> 03:00 EDT
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York 02:00 EDT -> 01:00 EST
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe 02:00 -> 01:30
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe 02:00 -> 02:30
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    tz: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """A local wall-clock time as UTC (fold=1: the second of a repeated time)."""
    wall = datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold)
    return wall.astimezone(UTC)


def make_window(**overrides: object) -> SendWindow:
    return SendWindow(**overrides)  # type: ignore[arg-type]


# -- oracles ----------------------------------------------------------------------------


def wall_in_window(at: datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    """The window read off the wall clock alone (a window with end <= start runs past
    midnight into the next day)."""
    wall = at.astimezone(tz)
    today, clock = wall.weekday() in window.days, wall.time().replace(tzinfo=None)
    if window.start < window.end:
        return today and window.start <= clock < window.end
    yesterday = (wall.weekday() - 1) % 7 in window.days
    return (today and clock >= window.start) or (yesterday and clock < window.end)


def repeated(at: datetime, tz: ZoneInfo) -> bool:
    """Whether the wall time of `at` happens twice (the fall-back hour)."""
    wall = at.astimezone(tz)
    return wall.replace(fold=1 - wall.fold).astimezone(UTC) != at


def exists(day: date, at: time, tz: ZoneInfo) -> bool:
    """Whether wall time `at` happens at all on `day` (not in a spring-forward gap)."""
    wall = datetime.combine(day, at, tzinfo=tz)
    return wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None)


# -- strategies -------------------------------------------------------------------------

zones = st.sampled_from(ZONES)
quarter_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
instants = st.one_of(
    st.integers(0, 365 * 86400 * 10**6).map(lambda us: utc(2026, 1, 1) + us * MICROSECOND),
    st.builds(
        lambda edge, seconds: edge + timedelta(seconds=seconds),
        st.sampled_from(TRANSITIONS),
        st.integers(-30 * 3600, 30 * 3600),
    ),
)
windows = st.builds(
    SendWindow,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=quarter_hours,
    end=quarter_hours,
    spread=st.sampled_from([timedelta(0), 10 * MINUTE, HOUR, 3 * HOUR]),
)

# -- zones ------------------------------------------------------------------------------


def test_zone_falls_back_when_missing_or_unknown() -> None:
    assert zone("Asia/Tokyo", "Europe/Berlin") == TOKYO
    for name in (None, "", "Mars/Olympus", "America", "../etc/passwd", "utc"):
        assert zone(name, "Europe/Berlin") == BERLIN
    assert zone(None, "Nowhere/Else") == ZoneInfo("UTC")


def test_window_zone_is_the_contacts_or_the_named_one() -> None:
    assert window_zone(make_window(tz="contact"), "Asia/Tokyo", "UTC") == TOKYO
    assert window_zone(make_window(tz="contact"), None, "Europe/Berlin") == BERLIN
    assert window_zone(make_window(tz="America/New_York"), "Asia/Tokyo", "UTC") == NEW_YORK


# -- local times ------------------------------------------------------------------------


def test_at_local_on_ordinary_days() -> None:
    assert at_local(date(2026, 1, 5), time(9), BERLIN) == utc(2026, 1, 5, 8)
    assert at_local(date(2026, 7, 6), time(9), BERLIN) == utc(2026, 7, 6, 7)
    assert at_local(date(2026, 7, 6), time(9), TOKYO) == utc(2026, 7, 6, 0)


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected"),
    [
        # skipped at spring-forward: the first instant after the gap
        (BERLIN, date(2026, 3, 29), time(2, 30), utc(2026, 3, 29, 1)),
        (NEW_YORK, date(2026, 3, 8), time(2, 0), utc(2026, 3, 8, 7)),
        (LORD_HOWE, date(2026, 10, 4), time(2, 10), utc(2026, 10, 3, 15, 30)),
        # repeated at fall-back: the first occurrence
        (BERLIN, date(2026, 10, 25), time(2, 30), utc(2026, 10, 25, 0, 30)),
        (NEW_YORK, date(2026, 11, 1), time(1, 30), utc(2026, 11, 1, 5, 30)),
        (LORD_HOWE, date(2026, 4, 5), time(1, 45), utc(2026, 4, 4, 14, 45)),
        # just around them
        (BERLIN, date(2026, 3, 29), time(3, 0), utc(2026, 3, 29, 1)),
        (BERLIN, date(2026, 3, 29), time(1, 59), utc(2026, 3, 29, 0, 59)),
        (NEW_YORK, date(2026, 11, 1), time(2, 0), utc(2026, 11, 1, 7)),
    ],
)
def test_at_local_on_daylight_saving_days(
    tz: ZoneInfo, day: date, at: time, expected: datetime
) -> None:
    assert at_local(day, at, tz) == expected


# -- send windows -----------------------------------------------------------------------


def test_in_window_is_half_open_on_allowed_days() -> None:
    window = make_window(days=WEEKDAYS)
    monday = (2026, 1, 5)
    assert not in_window(local(BERLIN, *monday, 8, 59, 59), window, BERLIN)
    assert in_window(local(BERLIN, *monday, 9), window, BERLIN)
    assert in_window(local(BERLIN, *monday, 19, 59, 59), window, BERLIN)
    assert not in_window(local(BERLIN, *monday, 20), window, BERLIN)
    assert not in_window(local(BERLIN, 2026, 1, 10, 12), window, BERLIN)  # Saturday
    # 12:30 in Berlin is 20:30 in Tokyo
    assert not in_window(local(BERLIN, *monday, 12, 30), window, TOKYO)


def test_window_opening_from_friday_night_is_monday_morning() -> None:
    window = make_window(days=WEEKDAYS)
    friday_night = local(NEW_YORK, 2026, 1, 9, 21)
    assert window_opening(friday_night, window, NEW_YORK) == local(NEW_YORK, 2026, 1, 12, 9)
    inside = local(NEW_YORK, 2026, 1, 9, 12, 34)
    assert window_opening(inside, window, NEW_YORK) == inside
    before = local(TOKYO, 2026, 1, 9, 3)
    assert window_opening(before, window, TOKYO) == local(TOKYO, 2026, 1, 9, 9)


def test_window_opening_on_daylight_saving_days() -> None:
    night = make_window(start=time(2, 30), end=time(4, 0))
    # Berlin skips 02:00-03:00 on 29 March: the window opens when the clocks read 03:00
    assert window_opening(utc(2026, 3, 28, 23), night, BERLIN) == utc(2026, 3, 29, 1)
    # and repeats 02:00-03:00 on 25 October: the first 02:30 (CEST)
    assert window_opening(utc(2026, 10, 24, 23), night, BERLIN) == utc(2026, 10, 25, 0, 30)
    # a window entirely inside the gap is empty that day
    gap = make_window(start=time(2, 10), end=time(2, 50))
    assert window_opening(utc(2026, 3, 28, 23), gap, BERLIN) == local(BERLIN, 2026, 3, 30, 2, 10)
    # Lord Howe moves half an hour: 02:00 -> 02:30 on 4 October
    howe = make_window(start=time(2, 15), end=time(6, 0))
    assert window_opening(utc(2026, 10, 3, 12), howe, LORD_HOWE) == utc(2026, 10, 3, 15, 30)
    # a morning window is not disturbed: 09:00 local on both sides of the change
    morning = make_window()
    assert window_opening(utc(2026, 3, 8, 5), morning, NEW_YORK) == utc(2026, 3, 8, 13)
    assert window_opening(utc(2026, 3, 7, 5), morning, NEW_YORK) == utc(2026, 3, 7, 14)


def test_the_repeated_hour_counts_once() -> None:
    window = make_window(start=time(1, 30), end=time(3, 0))
    first = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=0)  # EDT
    second = local(NEW_YORK, 2026, 11, 1, 1, 45, fold=1)  # EST, an hour later
    assert not in_window(first, window, NEW_YORK)
    assert window_opening(first, window, NEW_YORK) == local(NEW_YORK, 2026, 11, 1, 1, 30)
    assert in_window(second, window, NEW_YORK)
    assert in_window(local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1), window, NEW_YORK)


def test_a_window_across_midnight() -> None:
    late = make_window(days=frozenset({4}), start=time(22), end=time(2))  # Friday night
    assert in_window(local(BERLIN, 2026, 1, 9, 23), late, BERLIN)
    assert in_window(local(BERLIN, 2026, 1, 10, 1, 59), late, BERLIN)  # Saturday
    assert not in_window(local(BERLIN, 2026, 1, 10, 2), late, BERLIN)
    assert not in_window(local(BERLIN, 2026, 1, 10, 23), late, BERLIN)
    saturday = local(BERLIN, 2026, 1, 10, 12)
    assert window_opening(saturday, late, BERLIN) == local(BERLIN, 2026, 1, 16, 22)
    whole_day = make_window(days=frozenset({0}), start=time(6), end=time(6))
    assert in_window(local(BERLIN, 2026, 1, 6, 5, 59), whole_day, BERLIN)


def test_a_window_without_days_is_refused() -> None:
    with pytest.raises(errors.InvalidInput):
        window_opening(utc(2026, 1, 5), make_window(days=frozenset()), BERLIN)


def test_spread_is_stable_and_stays_in_the_first_part_of_the_window() -> None:
    window = make_window(spread=HOUR)
    opening = local(BERLIN, 2026, 1, 5, 9)
    offsets = [spread(opening, window, BERLIN, run_id) - opening for run_id in range(2000)]
    assert offsets == [spread(opening, window, BERLIN, run) - opening for run in range(2000)]
    assert all(timedelta(0) <= offset < HOUR for offset in offsets)
    # a backlog spreads over the whole hour, not a burst at 09:00
    per_quarter = [
        sum(q * 15 * MINUTE <= o < (q + 1) * 15 * MINUTE for o in offsets) for q in range(4)
    ]
    assert all(400 < count < 600 for count in per_quarter)
    assert spread(opening, window, BERLIN, 7) - opening == timedelta(seconds=3542)  # stable


def test_spread_stops_before_the_window_closes() -> None:
    short = make_window(start=time(9), end=time(9, 10), spread=HOUR)
    opening = local(BERLIN, 2026, 1, 5, 9)
    assert all(spread(opening, short, BERLIN, run) < opening + 10 * MINUTE for run in range(500))
    none = make_window(spread=timedelta(0))
    assert spread(opening, none, BERLIN, 7) == opening
    outside = local(BERLIN, 2026, 1, 5, 21)
    assert spread(outside, make_window(), BERLIN, 7) == outside


def test_send_time() -> None:
    window = make_window(days=WEEKDAYS)
    inside = local(BERLIN, 2026, 1, 5, 12)
    assert send_time(inside, None, BERLIN, 1) == inside
    assert send_time(inside, window, BERLIN, 1) == inside
    night = local(BERLIN, 2026, 1, 5, 22)
    at = send_time(night, window, BERLIN, 1)
    assert local(BERLIN, 2026, 1, 6, 9) <= at < local(BERLIN, 2026, 1, 6, 10)
    assert at == spread(local(BERLIN, 2026, 1, 6, 9), window, BERLIN, 1)


@settings(max_examples=150, deadline=None)
@given(at=instants, window=windows, tz=zones)
def test_in_window_reads_the_wall_clock(at: datetime, window: SendWindow, tz: ZoneInfo) -> None:
    if not repeated(at, tz):
        assert in_window(at, window, tz) == wall_in_window(at, window, tz)


@settings(max_examples=60, deadline=None)
@given(now=instants, window=windows, tz=zones)
def test_window_opening_is_the_first_instant_in_the_window(
    now: datetime, window: SendWindow, tz: ZoneInfo
) -> None:
    opening = window_opening(now, window, tz)
    assert now <= opening < now + timedelta(days=8)
    assert in_window(opening, window, tz)
    # Offsets and window edges are on quarter hours, so whether an instant is in the
    # window changes only on UTC quarter hours: checking those (and now) checks them all.
    assert opening == now or not in_window(now, window, tz)
    step = 15 * MINUTE
    probe = datetime(now.year, now.month, now.day, tzinfo=UTC)
    probe += (now - probe) // step * step + step
    while probe < opening:
        assert not in_window(probe, window, tz), probe
        probe += step


@settings(max_examples=100, deadline=None)
@given(now=instants, window=windows, tz=zones, seed=st.integers(0, 2**63))
def test_send_time_goes_in_the_window_within_its_spread(
    now: datetime, window: SendWindow, tz: ZoneInfo, seed: int
) -> None:
    opening = window_opening(now, window, tz)
    at = send_time(now, window, tz, seed)
    assert at == send_time(now, window, tz, seed)
    if opening == now:
        assert at == now
    elif window.spread:
        assert opening <= at < opening + window.spread
    else:
        assert at == opening
    assert in_window(at, window, tz)


# -- waits ------------------------------------------------------------------------------


def test_next_local_time() -> None:
    mondays = frozenset({0})
    monday = (2026, 1, 5)
    nine = time(9)
    assert next_local_time(local(BERLIN, *monday, 8), nine, mondays, BERLIN) == local(
        BERLIN, *monday, 9
    )
    assert next_local_time(local(BERLIN, *monday, 9), nine, mondays, BERLIN) == local(
        BERLIN, *monday, 9
    )
    assert next_local_time(local(BERLIN, *monday, 10), nine, mondays, BERLIN) == local(
        BERLIN, 2026, 1, 12, 9
    )
    # across the change of clocks in New York, still 09:00 local
    assert next_local_time(utc(2026, 3, 7, 20), nine, frozenset(range(7)), NEW_YORK) == utc(
        2026, 3, 8, 13
    )
    # 02:30 does not happen in Berlin on 29 March: the clocks jump to 03:00
    sunday = frozenset({6})
    assert next_local_time(utc(2026, 3, 28), time(2, 30), sunday, BERLIN) == utc(2026, 3, 29, 1)
    with pytest.raises(errors.InvalidInput):
        next_local_time(utc(2026, 3, 28), nine, frozenset(), BERLIN)


@settings(max_examples=150, deadline=None)
@given(
    now=instants,
    at=st.one_of(quarter_hours, st.times()),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    tz=zones,
)
def test_next_local_time_is_the_next_matching_wall_clock(
    now: datetime, at: time, days: frozenset[int], tz: ZoneInfo
) -> None:
    when = next_local_time(now, at, days, tz)
    wall = when.astimezone(tz)
    assert now <= when < now + timedelta(days=8)
    assert wall.weekday() in days
    if exists(wall.date(), at, tz):
        assert wall.time() == at
    else:  # in a gap: the instant the clocks jump over it
        assert wall.time() > at and (when - timedelta(seconds=1)).astimezone(tz).time() < at
    day = now.astimezone(tz).date() - timedelta(days=1)
    while day < wall.date():
        assert day.weekday() not in days or at_local(day, at, tz) < now
        day += timedelta(days=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1990-04-17", date(1990, 4, 17)),
        (" 1990-04-17 ", date(1990, 4, 17)),
        ("2026-01-05T23:30:00Z", date(2026, 1, 5)),
        ("2026-01-05T23:30:00-05:00", date(2026, 1, 5)),  # as written, like `anniversary`
        ("2026-01-05 08:00:00", date(2026, 1, 5)),
        ("2024-02-29", date(2024, 2, 29)),
        (datetime(2026, 1, 5, 23, 30, tzinfo=UTC), date(2026, 1, 5)),
        (datetime(2026, 1, 5, 23, 30), date(2026, 1, 5)),  # noqa: DTZ001
        (date(1990, 4, 17), date(1990, 4, 17)),
        (None, None),
        ("", None),
        ("soon", None),
        ("2026-02-30", None),
        ("2025-02-29", None),
        ("2026-01-05Tnoon", None),
        ("20260105", None),
        (19900417, None),
        (True, None),
        (["1990-04-17"], None),
    ],
)
def test_attribute_date(value: object, expected: date | None) -> None:
    assert attribute_date(value) == expected


def test_wait_until_attribute() -> None:
    now = utc(2026, 1, 5, 12)
    # three days before the renewal, at 10:00 in Tokyo
    renewal = wait_until_attribute(now, "2026-02-01", -timedelta(days=3), time(10), TOKYO)
    assert renewal == local(TOKYO, 2026, 1, 29, 10)
    # no time: local midnight; in the past is returned as is (the run goes on at once)
    assert wait_until_attribute(now, "2025-06-01", timedelta(0), None, BERLIN) == local(
        BERLIN, 2025, 6, 1
    )
    # days move on the wall clock: the day before 30 March, across the change, still 09:00
    assert wait_until_attribute(now, "2026-03-30", -timedelta(days=1), time(9), BERLIN) == local(
        BERLIN, 2026, 3, 29, 9
    )
    assert wait_until_attribute(now, "2026-03-30", -HOUR, None, BERLIN) == local(
        BERLIN, 2026, 3, 29, 23
    )
    for unusable in (None, "", "someday", "2026-13-01", 42):
        assert wait_until_attribute(now, unusable, timedelta(0), time(9), BERLIN) == now
    assert wait_until_attribute(now, "9999-12-31", timedelta(days=2), None, BERLIN) == now


# -- yearly date triggers ---------------------------------------------------------------


def test_birthday_is_due_this_year_at_local_time() -> None:
    now = utc(2026, 1, 5, 12)
    assert anniversary("1990-04-17", 0, time(9), BERLIN, now) == (
        local(BERLIN, 2026, 4, 17, 9),
        2026,
    )
    assert anniversary("1990-04-17", 0, time(9), TOKYO, now) == (local(TOKYO, 2026, 4, 17, 9), 2026)
    # a week before, from a datetime value
    week_before = anniversary(datetime(1990, 4, 17, tzinfo=UTC), -7, time(9), BERLIN, now)
    assert week_before == (local(BERLIN, 2026, 4, 10, 9), 2026)


def test_a_missed_occurrence_is_due_for_a_day_then_next_year() -> None:
    at_nine = local(BERLIN, 2026, 4, 17, 9)
    due = (at_nine, 2026)
    assert anniversary("1990-04-17", 0, time(9), BERLIN, at_nine - MINUTE) == due
    assert anniversary("1990-04-17", 0, time(9), BERLIN, at_nine) == due
    assert (
        anniversary("1990-04-17", 0, time(9), BERLIN, at_nine + ANNIVERSARY_GRACE - MINUTE) == due
    )
    assert anniversary("1990-04-17", 0, time(9), BERLIN, at_nine + ANNIVERSARY_GRACE) == (
        local(BERLIN, 2027, 4, 17, 9),
        2027,
    )


def test_february_29_falls_on_the_28th_in_other_years() -> None:
    now = utc(2026, 1, 5)
    assert anniversary("2000-02-29", 0, time(9), BERLIN, now) == (
        local(BERLIN, 2026, 2, 28, 9),
        2026,
    )
    assert anniversary("2000-02-29", 0, time(9), BERLIN, utc(2028, 1, 5)) == (
        local(BERLIN, 2028, 2, 29, 9),
        2028,
    )
    # the offset counts from that day: the day after is 1 March either way
    assert anniversary("2000-02-29", 1, time(9), BERLIN, now) == (
        local(BERLIN, 2026, 3, 1, 9),
        2026,
    )


def test_the_year_is_the_anniversarys_even_when_the_offset_crosses_new_year() -> None:
    now = utc(2026, 12, 1)
    three_before = anniversary("1990-01-02", -3, time(9), BERLIN, now)
    assert three_before == (local(BERLIN, 2026, 12, 30, 9), 2027)


def test_a_dates_own_day_is_not_an_anniversary() -> None:
    signup = utc(2026, 1, 5, 15)
    first = (local(BERLIN, 2027, 1, 5, 9), 2027)
    assert anniversary("2026-01-05T14:59:00Z", 0, time(9), BERLIN, signup) == first
    assert anniversary("2030-06-01", 0, time(9), BERLIN, signup) == (
        local(BERLIN, 2031, 6, 1, 9),
        2031,
    )


def test_anniversary_on_a_daylight_saving_day_and_unusable_values() -> None:
    now = utc(2026, 1, 5)
    assert anniversary("1990-03-29", 0, time(2, 30), BERLIN, now) == (utc(2026, 3, 29, 1), 2026)
    for unusable in (None, "", "someday", "1990-02-30", 7):
        assert anniversary(unusable, 0, time(9), BERLIN, now) is None
    assert anniversary("1990-04-17", 10**9, time(9), BERLIN, now) is None
    assert anniversary("9999-04-17", 0, time(9), BERLIN, now) is None


@settings(max_examples=25, deadline=None)
@given(
    born=st.one_of(st.dates(date(1930, 1, 1), date(2027, 6, 1)), st.just(date(2000, 2, 29))),
    offset_days=st.integers(-40, 40),
    at=quarter_hours,
    tz=zones,
    seed=st.integers(0, 2**32),
)
def test_a_scanner_enrols_each_contact_once_a_year(
    born: date, offset_days: int, at: time, tz: ZoneInfo, seed: int
) -> None:
    """A scanner waking at random times, never more than the grace apart, for three years:
    every occurrence in that span is enrolled once, soon after its local time."""
    rng = random.Random(seed)
    longest = ANNIVERSARY_GRACE - MINUTE
    now, end = utc(2025, 12, 1) + rng.random() * HOUR, utc(2029, 1, 1)
    enrolled: dict[int, datetime] = {}  # year -> when the scanner enrolled
    instants: dict[int, datetime] = {}
    while now < end:
        due = anniversary(born.isoformat(), offset_days, at, tz, now)
        assert due is not None
        when, year = due
        assert year > born.year and when > now - ANNIVERSARY_GRACE
        assert instants.setdefault(year, when) == when
        if when <= now:
            enrolled.setdefault(year, now)
        now += rng.choice([rng.random() * HOUR, rng.random() * longest, 5 * MINUTE])
    expected = [y for y, when in instants.items() if utc(2025, 12, 2) < when < end - longest]
    assert set(expected) <= set(enrolled)
    for year, at_time in enrolled.items():
        assert instants[year] <= at_time < instants[year] + ANNIVERSARY_GRACE
        if year - 1 in instants:
            assert instants[year] - instants[year - 1] > timedelta(days=360)
        wall = instants[year].astimezone(tz)
        if exists(wall.date(), at, tz):
            assert wall.time() == at


# -- caps and schedules -----------------------------------------------------------------


def test_cap_release() -> None:
    cap = FrequencyCap(count=2, per=timedelta(hours=16))
    now = utc(2026, 1, 5, 12)
    assert cap_release([], cap, now) is None
    assert cap_release([now - HOUR], cap, now) is None
    assert cap_release([now - 20 * HOUR, now - 17 * HOUR, now - HOUR], cap, now) is None
    sent = [now - 3 * HOUR, now - HOUR, now - 20 * HOUR]
    assert cap_release(sent, cap, now) == now + 13 * HOUR
    assert cap_release(sent, cap, now + 13 * HOUR) is None
    # exactly `per` ago has left the window
    assert cap_release([now - 16 * HOUR, now], cap, now) is None
    # sends after now are not counted
    assert cap_release([now + HOUR, now + 2 * HOUR], cap, now) is None
    with pytest.raises(errors.InvalidInput):
        cap_release([], FrequencyCap(count=0, per=HOUR), now)


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(1, 4),
    per_minutes=st.integers(1, 24 * 60),
    gaps=st.lists(st.integers(0, 12 * 3600), min_size=1, max_size=40),
)
def test_deferring_by_cap_release_never_breaks_the_cap(
    count: int, per_minutes: int, gaps: list[int]
) -> None:
    cap = FrequencyCap(count=count, per=timedelta(minutes=per_minutes))
    sent: list[datetime] = []
    now = utc(2026, 1, 5)
    for gap in gaps:
        now += timedelta(seconds=gap)  # the next message is due, after any deferred one
        release = cap_release(sent, cap, now)
        while release is not None:
            assert release > now
            assert cap_release(sent, cap, release - timedelta(microseconds=1)) is not None
            now = release
            release = cap_release(sent, cap, now)
        sent.append(now)
    for at in sent:
        assert sum(at - cap.per < other <= at for other in sent) <= count


def test_schedule_occurrence() -> None:
    starting = utc(2026, 1, 5, 9)
    week = timedelta(days=7)
    assert schedule_occurrence(starting - MINUTE, week, starting) is None
    assert schedule_occurrence(starting, week, starting) == (starting, starting + week)
    assert schedule_occurrence(starting + week - MINUTE, week, starting) == (
        starting,
        starting + week,
    )
    later = starting + 10 * week + HOUR
    assert schedule_occurrence(later, week, starting) == (
        starting + 10 * week,
        starting + 11 * week,
    )
    with pytest.raises(errors.InvalidInput):
        schedule_occurrence(later, timedelta(0), starting)
