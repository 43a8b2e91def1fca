"""Parsing behaviour and engagement conditions into `nodes.Event`.

`{event: X, where, count, within | between}` counts events; `first` and `last` look at the
earliest and the latest one instead. Engagement (`opened`, `clicked`, `engagement`) is the
same thing over the message events the pipeline logs ("Email Opened"...), so it compiles
and evaluates through the same code."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tidings.conditions import dates, durations, values
from tidings.conditions.nodes import Event, Property
from tidings.conditions.values import Problems, Test, at

#: Engagement names and the events the message pipeline logs for them.
ENGAGEMENT_EVENTS = {
    "sent": "Email Sent",
    "delivered": "Email Delivered",
    "opened": "Email Opened",
    "clicked": "Email Clicked",
    "bounced": "Email Bounced",
    "complained": "Email Complained",
    "unsubscribed": "Unsubscribed",
}
#: Properties `{opened: X}` looks for X in: a flow step id, a template key, a campaign key.
MESSAGE_KEYS = ("step", "template", "campaign")
ENGAGEMENT_FILTERS = ("template", "flow", "step", "campaign")
COUNT_OPS = ("eq", "ne", "gt", "gte", "lt", "lte")
FIRST_OPS = ("before", "after", "within_last")
MAX_COUNT = 1_000_000_000
MAX_WHERE = 50
_FRAME = {"count", "within", "between"}
_AT_LEAST_ONCE = (("gte", 1),)


def event(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Event | None:
    """`{event: NAME, where?, count? | first? | last?, within? | between?}`."""
    ok = problems.only(data, {"event", "where", "first", "last", *_FRAME}, kpath)
    name = problems.check(values.name, data["event"], kpath)
    where = _where(data.get("where", {}), at(kpath, "where"), problems)
    frame = _frame(data, kpath, problems)
    first = last = None
    if "first" in data:
        first = _first(data["first"], at(kpath, "first"), problems)
        ok = _alone(data, "first", {"count", "within", "between", "last"}, kpath, problems) and ok
    if "last" in data:
        last = _last(data["last"], at(kpath, "last"), problems)
        ok = _alone(data, "last", {"count"}, kpath, problems) and ok
    parts_ok = None not in (name, where, frame) and ("first" not in data or first)
    if not ok or not parts_ok or ("last" in data and not last):
        return None
    assert where is not None and frame is not None  # noqa: S101 - checked just above
    within, between, count = frame
    if first or last:
        count = ()
    return Event(name, path, where, (), within, between, count, first, last, data)


def engagement(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Event | None:
    """`{opened: X}`, `{clicked: X}` (X a step, template or campaign; `true` for any) and
    `{engagement: KIND, template?, flow?, step?, campaign?}`, each with count/within/between."""
    kind = kpath.rpartition(".")[2]
    target = data[kind]
    where: list[Property] = []
    where_any: tuple[Property, ...] = ()
    if kind == "engagement":
        ok = problems.only(data, {kind, *ENGAGEMENT_FILTERS, *_FRAME}, kpath)
        if not isinstance(target, str) or target not in ENGAGEMENT_EVENTS:
            problems.add(kpath, f"must be one of: {', '.join(ENGAGEMENT_EVENTS)}")
            ok = False
        for key in ENGAGEMENT_FILTERS:
            if key in data:
                where.append(_equals(key, data[key], at(kpath, key), problems))
    else:
        ok = problems.only(data, {kind, *_FRAME}, kpath)
        if target is not True:
            where_any = tuple(_equals(key, target, kpath, problems) for key in MESSAGE_KEYS)
    frame = _frame(data, kpath, problems)
    if not ok or frame is None or any(p.tests == () for p in (*where, *where_any)):
        return None
    name = ENGAGEMENT_EVENTS[kind if kind != "engagement" else target]
    within, between, count = frame
    return Event(name, path, tuple(where), where_any, within, between, count, rule=data)


def _equals(key: str, value: Any, field: str, problems: Problems) -> Property:
    """Property `key` equals the name `value` (an empty test list when it is not a name)."""
    text = problems.check(values.name, value, field)
    tests = (Test("eq", text, field),) if text is not None else ()
    return Property((key,), tests, field)


def _alone(
    data: Mapping[str, Any], key: str, excluded: set[str], kpath: str, problems: Problems
) -> bool:
    clash = sorted(excluded & set(data))
    for other in clash:
        problems.add(at(kpath, other), f"cannot be used with {key}")
    return not clash


Frame = tuple[timedelta | None, tuple[datetime, datetime] | None, tuple[Test, ...]]


def _frame(data: Mapping[str, Any], kpath: str, problems: Problems) -> Frame | None:
    """`within`, `between` (as inclusive start, exclusive end) and the count tests."""
    within = between = None
    ok = True
    if "within" in data:
        within = problems.check(durations.parse, data["within"], at(kpath, "within"))
        ok = within is not None
    if "between" in data:
        between = _between(data["between"], at(kpath, "between"), problems)
        ok = ok and between is not None
        if "within" in data:
            problems.add(at(kpath, "between"), "cannot be used with within")
            ok = False
    count = _count(data.get("count"), at(kpath, "count"), problems)
    return (within, between, count) if ok and count is not None else None


def _between(value: Any, field: str, problems: Problems) -> tuple[datetime, datetime] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        problems.add(field, "must be [from, to]: two dates or date-times")
        return None
    start = problems.check(dates.parse_instant, value[0], at(field, 0))
    end = problems.check(dates.parse_instant, value[1], at(field, 1))
    if start is None or end is None:
        return None
    # A bare `to` date includes that whole day; a date-time is included itself.
    stop = end[0] + (timedelta(days=1) if end[1] else timedelta(microseconds=1))
    if stop <= start[0]:
        problems.add(field, "must end after it starts")
        return None
    return start[0], stop


def _count(value: Any, field: str, problems: Problems) -> tuple[Test, ...] | None:
    if value is None:
        return tuple(Test(op, n, field) for op, n in _AT_LEAST_ONCE)
    if not isinstance(value, Mapping) or not value:
        problems.add(field, "must be an object like {gte: 2}")
        return None
    out: list[Test] = []
    for op, n in value.items():
        where = at(field, str(op))
        if op not in COUNT_OPS:
            problems.add(where, "unknown operator")
        elif isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            problems.add(where, "must be a whole number, 0 or more")
        else:
            out.append(Test(op, n, where))
    return tuple(out) if len(out) == len(value) else None


def where(value: Any, field: str) -> tuple[Property, ...]:
    """A `where` object (`{currency: EUR, total: {gte: 100}}`) as property tests, or
    `InvalidInput` naming each bad entry under `field`. Flows filter trigger events with it."""
    problems = Problems()
    props = _where(value, field, problems)
    problems.raise_any()
    assert props is not None  # noqa: S101 - no problems means every entry parsed
    return props


def _where(value: Any, field: str, problems: Problems) -> tuple[Property, ...] | None:
    if not isinstance(value, Mapping) or len(value) > MAX_WHERE:
        problems.add(field, f"must be an object of at most {MAX_WHERE} property filters")
        return None
    out = [_property(key, spec, at(field, str(key)), problems) for key, spec in value.items()]
    props = tuple(p for p in out if p is not None)
    return props if len(props) == len(out) else None


def _property(key: Any, spec: Any, field: str, problems: Problems) -> Property | None:
    """One `where` entry: `currency: EUR` (equals) or `total: {gte: 100, lt: 500}`."""
    name = problems.check(values.name, key, field)
    keys = tuple(name.split(".")) if name else ()
    if name is not None and not all(keys):
        problems.add(field, "must not have an empty part between dots")
        return None
    if isinstance(spec, Mapping):
        if not spec:
            problems.add(field, "needs an operator, like eq or gte")
            return None
        tests = values.tests(spec, "json", field, problems.check)
    else:
        value = problems.check(values.checked_value, "eq", spec, "json", field)
        tests = (Test("eq", value, field),) if value is not None else None
    return Property(keys, tests, field) if name and tests else None


def _first(value: Any, field: str, problems: Problems) -> Test | None:
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in FIRST_OPS:
        problems.add(field, f"must be an object with one of: {', '.join(FIRST_OPS)}")
        return None
    tests = values.tests(value, "date", field, problems.check)
    return tests[0] if tests else None


def _last(value: Any, field: str, problems: Problems) -> Property | None:
    if not isinstance(value, Mapping) or "property" not in value or len(value) < 2:
        problems.add(field, "must be an object like {property: plan, eq: pro}")
        return None
    ops = {key: spec for key, spec in value.items() if key != "property"}
    return _property(value["property"], ops, field, problems)
