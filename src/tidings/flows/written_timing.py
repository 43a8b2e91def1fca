"""When a flow acts: times of day, weekdays, zones, signed offsets and instants as people
write them, and the flow's `settings` (send window, frequency caps, active period).

Each reader raises `InvalidInput` naming its field, so callers collect them with
`Problems.check`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings import errors
from tidings.conditions import dates, durations
from tidings.conditions.values import Problems, at
from tidings.flows import definition, graph, written_parts

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
MAX_OFFSET = timedelta(days=366)


def time_of_day(value: Any, field: str) -> time:
    """`"09:00"` -> `time(9, 0)`."""
    match = _TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        return time(int(match[1]), int(match[2]))
    hint = " (quote it in YAML: unquoted 20:00 reads as a number)" if isinstance(value, int) else ""
    raise errors.InvalidInput.field(field, f'must be a time of day like "09:00"{hint}')


def weekdays(value: Any, field: str) -> frozenset[int]:
    """`mon-fri` (a range, which may wrap: `fri-mon`), `sat` or `[mon, wed]` as weekday
    numbers, 0 = Monday."""
    if isinstance(value, list) and value:
        return frozenset(_day(day, at(field, i)) for i, day in enumerate(value))
    if isinstance(value, str):
        first, dash, last = value.strip().lower().partition("-")
        start = _day(first, field)
        end = _day(last, field) if dash else start
        return frozenset((start + i) % 7 for i in range((end - start) % 7 + 1))
    raise errors.InvalidInput.field(field, "must be days like mon-fri, or a list like [mon, wed]")


def _day(value: Any, field: str) -> int:
    name = value.strip().lower()[:3] if isinstance(value, str) else None
    if name not in DAYS or len(value.strip()) not in (3, len(_FULL[DAYS.index(name)])):
        raise errors.InvalidInput.field(field, f"must be a day: {', '.join(DAYS)}")
    return DAYS.index(name)


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def zone(value: Any, field: str) -> str:
    """`contact` or an IANA zone name that this machine knows."""
    if value == "contact":
        return "contact"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise errors.InvalidInput.field(
            field, "must be contact or a time zone name like Europe/Berlin"
        ) from None
    return str(value)


def offset(value: Any, field: str) -> timedelta:
    """`"-1d"`, `"3d"`, `"+2h"` or 0 as a span, at most a year either way."""
    span = _signed(value)
    if span is None:
        raise errors.InvalidInput.field(field, "must be a duration like -1d or 2h, or 0")
    return span


def day_offset(value: Any, field: str) -> int:
    """`"-7d"`, `"3d"`, `"2w"` or 0 as a whole number of days, at most a year either way."""
    span = _signed(value)
    if span is None or span % timedelta(days=1):
        raise errors.InvalidInput.field(field, "must be whole days like -7d or 3d, or 0")
    return span.days


def _signed(value: Any) -> timedelta | None:
    if value == 0 and not isinstance(value, bool):
        return timedelta(0)
    text = value.strip() if isinstance(value, str) else ""
    sign = -1 if text.startswith("-") else 1
    try:
        return sign * durations.parse(text.removeprefix("-").removeprefix("+"), maximum=MAX_OFFSET)
    except errors.InvalidInput:
        return None


def whole_days(value: Any, field: str) -> int:
    """A positive duration of whole days (`90d`, `2w`) as a number of days."""
    span = durations.parse(value, field)
    if span % timedelta(days=1):
        raise errors.InvalidInput.field(field, "must be whole days, like 90d")
    return span.days


def instant(value: Any, field: str) -> datetime:
    """An ISO date or date-time as aware UTC (a date-time without a zone is UTC)."""
    return dates.parse_instant(value, field)[0]


def zoned_instant(value: Any, field: str) -> datetime:
    """An ISO date-time that names its zone (`2026-01-05T09:00:00+01:00`, `...Z`), as UTC."""
    when = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise errors.InvalidInput.field(
            field, "must be an ISO date-time with a zone, like 2026-01-05T09:00:00+01:00"
        )
    return when.astimezone(UTC)


# -- settings ---------------------------------------------------------------------------


def settings(data: Any, path: str, problems: Problems) -> graph.FlowSettings:
    """The `settings` section (send window, frequency caps, active period); each part is
    checked on its own, so a problem in one hides none in another."""
    if not isinstance(data, Mapping):
        problems.add(path, "must be an object")
        return graph.FlowSettings()
    problems.only(data, set(written_parts.fields(definition.Settings)), path)
    parts = {
        name: written_parts.check(model, data[name], at(path, name), problems)
        for name, model in _SETTINGS.items()
        if data.get(name) is not None
    }
    window = send_window(parts.get("send_window"), at(path, "send_window"), problems)
    caps = frequency_caps(parts.get("frequency_cap"), at(path, "frequency_cap"), problems)
    active = _active(parts.get("active"), at(path, "active"), problems)
    return graph.FlowSettings(window, caps, *active)


_SETTINGS: dict[str, type[written_parts.Part]] = {
    "send_window": definition.SendWindow,
    "frequency_cap": definition.FrequencyCap,
    "active": definition.Active,
}


def send_window(part: Any, path: str, problems: Problems) -> graph.SendWindow | None:
    if not isinstance(part, definition.SendWindow):
        return None
    days = problems.check(weekdays, part.days, at(path, "days"))
    start = problems.check(time_of_day, part.from_, at(path, "from"))
    end = problems.check(time_of_day, part.to, at(path, "to"))
    tz = problems.check(zone, part.tz, at(path, "tz"))
    spread = problems.check(_spread, part.spread, at(path, "spread"))
    if start is not None and end is not None and end <= start:
        problems.add(at(path, "to"), "must be after from (a window cannot cross midnight)")
        return None
    if None in (days, start, end, tz, spread):
        return None
    return graph.SendWindow(days, start, end, tz, spread)


def _spread(value: Any, field: str) -> timedelta:
    if value == 0 and not isinstance(value, bool):
        return timedelta(0)
    return durations.parse(value, field, maximum=timedelta(hours=24))


def frequency_caps(part: Any, path: str, problems: Problems) -> dict[str, graph.FrequencyCap]:
    if not isinstance(part, definition.FrequencyCap):
        return {}
    per = problems.check(durations.parse, part.per, at(path, "per"))
    counts = {"email": part.email, "sms": part.sms}
    noted = any(f.field.startswith(f"{path}.") for f in problems.fields)
    if not part.model_fields_set & {"email", "sms"} and not noted:
        problems.add(path, "needs a cap for email or sms, like {email: 1, per: 16h}")
    if per is None:
        return {}
    return {channel: graph.FrequencyCap(n, per) for channel, n in counts.items() if n}


def _active(part: Any, path: str, problems: Problems) -> tuple[datetime | None, datetime | None]:
    if not isinstance(part, definition.Active):
        return None, None
    start = end = None
    if part.from_ is not None:
        start = problems.check(instant, part.from_, at(path, "from"))
    if part.until is not None:
        end = problems.check(instant, part.until, at(path, "until"))
    if start is not None and end is not None and end <= start:
        problems.add(at(path, "until"), "must be after from")
    return start, end
