"""Leaf tests (`gte: 50`, `within_last: 30d`...): which operators each kind of value
takes, checking their values, and the stable random bucket. Shared by the parser, the
SQL compiler and the Python evaluator.

Kinds: `text`, `number` and `date` are typed profile columns; `json` is a custom attribute
or an event property, whose value can be any JSON (see docs/conditions.md, "Values")."""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tidings import errors
from tidings.conditions import dates, durations

COMPARE = ("eq", "ne", "gt", "gte", "lt", "lte")
TEXT_MATCH = ("contains", "starts_with", "ends_with")
SETS = ("in", "not_in")
DATE_OPS = ("before", "after", "within_last", "within_next", "anniversary")
OPS: dict[str, tuple[str, ...]] = {
    "text": (*COMPARE, *SETS, *TEXT_MATCH, "exists"),
    "number": (*COMPARE, *SETS, "exists"),
    "date": ("before", "after", "gt", "gte", "lt", "lte", *DATE_OPS[2:], "exists"),
    "json": (*COMPARE, *SETS, *TEXT_MATCH, "exists", *DATE_OPS),
}
#: The comparison operators, usable on Python values and SQLAlchemy expressions alike.
COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
#: Largest whole number a rule may compare with (exact in JSON, SQLite and PostgreSQL).
MAX_INT = 2**53
MAX_SET = 1000


@dataclass(frozen=True)
class Test:
    """One operator and its checked value: a datetime for before/after (and for
    gt..lte on a date column), a timedelta for within_last/next, a tuple for in/not_in."""

    op: str
    value: Any
    path: str


def at(path: str, key: str | int) -> str:
    """`all[2]` + `event` -> `all[2].event`; `all` + 2 -> `all[2]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


Check = Callable[..., Any]


def tests(
    ops: Mapping[str, Any], kind: str, path: str, check: Check, *, upper: bool = False
) -> tuple[Test, ...] | None:
    """The tests written as `{op: value, ...}` at `path` for a value of `kind`, or None
    once `check` (which records problems) has seen each bad one. `upper` upper-cases text
    values (country codes)."""
    out: list[Test] = []
    ok = True
    for op, raw in ops.items():
        where = at(path, str(op))
        if op not in OPS[kind]:
            message = "unknown operator" if op not in OPS["json"] else f"not for {kind} values"
            check(_fail, where, message)
            ok = False
            continue
        value = check(checked_value, op, raw, kind, where)
        if value is None:
            ok = False
            continue
        if upper:
            value = tuple(v.upper() for v in value) if op in SETS else value
            value = value.upper() if isinstance(value, str) else value
        out.append(Test(op, value, where))
    return tuple(out) if ok else None


def _fail(field: str, message: str) -> None:
    raise errors.InvalidInput.field(field, message)


def checked_value(op: str, value: Any, kind: str, field: str) -> Any:
    """`value` checked (and normalised) for `op` on a value of `kind`."""
    if op == "exists":
        return _need(value, isinstance(value, bool), "true or false", field)
    if op in ("within_last", "within_next"):
        return durations.parse(value, field)
    if op == "anniversary":
        return _need(value, value in dates.ANNIVERSARIES, "today or this_week", field)
    if op in ("before", "after") or (kind == "date" and op in COMPARE):
        return dates.parse_instant(value, field)[0]
    if op in SETS:
        if not isinstance(value, list | tuple) or not 0 < len(value) <= MAX_SET:
            _fail(field, f"must be a list of 1 to {MAX_SET} values")
        eq = "text" if kind == "text" else kind
        return tuple(checked_value("eq", item, eq, at(field, i)) for i, item in enumerate(value))
    if op in TEXT_MATCH and (kind == "text" or op != "contains" or isinstance(value, str)):
        return _need(value, isinstance(value, str) and value != "", "non-empty text", field)
    if kind == "text":
        return _need(value, isinstance(value, str), "text", field)
    if kind == "number" or (op in COMPARE[2:] and not isinstance(value, str)):
        return _need(value, is_number(value), "a number" if kind == "number" else "", field)
    return _scalar(value, field)


def _need(value: Any, ok: bool, what: str, field: str) -> Any:
    if not ok:
        _fail(field, f"must be {what or 'a number or text'}")
    return value


def _scalar(value: Any, field: str) -> Any:
    if isinstance(value, str | bool) or is_number(value):
        return value
    if value is None:
        _fail(field, "must be a value; to match a missing attribute use exists: false")
    return _fail(field, "must be text, a number or true/false")


def is_number(value: Any) -> bool:
    """A JSON number a rule can compare with: finite, within +-2**53 when whole."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_INT <= value <= MAX_INT
    return isinstance(value, float) and math.isfinite(value)


# -- random buckets ---------------------------------------------------------------------
# Plain integer arithmetic that stays below 2**63, so SQLite, PostgreSQL and Python compute
# the same bucket for a contact id. The seed picks the multiplier and offsets; squaring
# makes the map non-linear, so two seeds give unrelated splits.

PRIME = 2_147_483_647
BUCKETS = 10_000


def seed_numbers(seed: str) -> tuple[int, int, int]:
    """Multiplier and two offsets for `seed`, each below `PRIME`."""
    digest = hashlib.sha256(seed.encode()).digest()
    a, b, c = (int.from_bytes(digest[i : i + 8], "big") for i in (0, 8, 16))
    return a % (PRIME - 1) + 1, b % PRIME, c % PRIME


def bucket(contact_id: int, seed: str) -> int:
    """The contact's bucket, 0 to 9,999, for `seed`."""
    a, b, c = seed_numbers(seed)
    h = ((contact_id % PRIME) * a + b) % PRIME
    return ((h * h + c) % PRIME) % BUCKETS


# -- parsing helpers ----------------------------------------------------------------------

MAX_NAME = 255


class Problems:
    """Collects every problem in a condition, so one error names them all."""

    def __init__(self) -> None:
        self.fields: list[errors.FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.fields.append(errors.FieldError(path or "condition", message))

    def check(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None after recording the `InvalidInput` it raised."""
        try:
            return fn(*args)
        except errors.InvalidInput as exc:
            self.fields.extend(exc.fields or [errors.FieldError("condition", exc.message)])
            return None

    def only(self, data: Mapping[str, Any], allowed: set[str], path: str) -> bool:
        """Record each key of `data` not in `allowed` (under `path`); whether all were."""
        extra = [key for key in data if key not in allowed]
        for key in extra:
            self.add(at(path, str(key)), "unknown key")
        return not extra

    def raise_any(self) -> None:
        if self.fields:
            summary = "; ".join(f"{p.field}: {p.message}" for p in self.fields)
            raise errors.InvalidInput(summary, fields=self.fields)


def name(value: Any, field: str) -> str:
    """A key, tag, event or attribute name: 1 to 255 characters, no `"` or backslash
    (they would need escaping in SQLite JSON paths)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise errors.InvalidInput.field(field, f"must be a name of 1 to {MAX_NAME} characters")
    if '"' in value or "\\" in value:
        raise errors.InvalidInput.field(field, 'must not contain " or \\')
    return value.strip()
