"""Durations as people write them in rules and flows: `90m`, `12h`, `30d`, `2w`.

One parser for the whole product, so `within: 30d` in a segment and `wait: 30d` in a flow
mean the same span. A duration is a positive whole number followed by one unit."""

from __future__ import annotations

import re
from datetime import timedelta

from tidings import errors

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"([0-9]{1,7})([smhdw])")

#: The longest span any rule may look back or ahead.
MAX = timedelta(days=3653)


def parse(value: object, field: str = "duration", *, maximum: timedelta = MAX) -> timedelta:
    """`"30d"` -> `timedelta(days=30)`; `InvalidInput` naming `field` when it is not a
    positive whole number of s, m, h, d or w, or is longer than `maximum` (10 years)."""
    text = value.strip() if isinstance(value, str) else None
    match = _PATTERN.fullmatch(text) if text else None
    if not match:
        raise errors.InvalidInput.field(
            field, "must be a duration like 90m, 12h, 30d or 2w (a whole number and a unit)"
        )
    amount, unit = int(match[1]), match[2]
    span = timedelta(**{UNITS[unit]: amount})
    if span <= timedelta(0):
        raise errors.InvalidInput.field(field, "must be longer than zero")
    if span > maximum:
        raise errors.InvalidInput.field(field, f"must be at most {format(maximum)}")
    return span


def format(span: timedelta) -> str:  # noqa: A001 - reads as durations.format
    """The shortest exact spelling: `timedelta(days=14)` -> `"2w"`, `timedelta(hours=36)`
    -> `"36h"`."""
    seconds = int(span.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
