"""Evaluating a condition in Python for one contact (flow branches, exits, waits), with
an explanation of which parts held and the values seen (`GET /v1/segments/{id}/explain`).

This is the reference the SQL compiler is proven against (tests/conditions/
test_sql_vs_python.py): every rule here is the documented semantics, written plainly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tidings import errors
from tidings.conditions import dates, values
from tidings.conditions.nodes import (
    All,
    AnyOf,
    Attribute,
    Condition,
    EmailDomain,
    Event,
    ListMember,
    Not,
    Profile,
    Property,
    Random,
    Segment,
    Tag,
)
from tidings.conditions.snapshot import EventFact, Snapshot
from tidings.conditions.values import Test

#: Whether contact `id` is in segment `key`, supplied by the caller.
SegmentCheck = Callable[[str, int], bool]


@dataclass(frozen=True)
class Explanation:
    """Whether the condition at `path` held, the `rule` it was written as, what was
    `seen` (the attribute's value, the event count...) and the same for each part."""

    path: str
    holds: bool
    rule: Any
    seen: Any = None
    children: tuple[Explanation, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (datetimes as ISO text)."""
        out: dict[str, Any] = {"path": self.path, "holds": self.holds, "rule": _plain(self.rule)}
        if self.seen is not None:
            out["seen"] = _plain(self.seen)
        if self.children:
            out["children"] = [child.as_dict() for child in self.children]
        return out


def evaluate(
    condition: Condition,
    snapshot: Snapshot,
    *,
    now: datetime,
    segments: SegmentCheck | None = None,
) -> bool:
    """Whether `condition` holds for the contact in `snapshot` at `now`."""
    return explain(condition, snapshot, now=now, segments=segments).holds


def explain(
    condition: Condition,
    snapshot: Snapshot,
    *,
    now: datetime,
    segments: SegmentCheck | None = None,
) -> Explanation:
    """`evaluate`, with every part evaluated and explained (no short cuts)."""
    return _Evaluator(snapshot, now, segments).node(condition)


class _Evaluator:
    def __init__(self, snapshot: Snapshot, now: datetime, segments: SegmentCheck | None):
        self.snap = snapshot
        self.now = now
        self.segments = segments

    def node(self, node: Condition) -> Explanation:
        if isinstance(node, All | AnyOf):
            children = tuple(self.node(child) for child in node.children)
            combine = all if isinstance(node, All) else any
            return Explanation(
                node.path, combine(c.holds for c in children), node.rule, None, children
            )
        if isinstance(node, Not):
            child = self.node(node.child)
            return Explanation(node.path, not child.holds, node.rule, None, (child,))
        holds, seen = self.leaf(node)
        return Explanation(node.path, holds, node.rule, seen)

    def leaf(self, node: Condition) -> tuple[bool, Any]:
        snap = self.snap
        if isinstance(node, Profile):
            value = snap.profile.get(node.column)
            return all(column_test(t, value, self.now) for t in node.tests), value
        if isinstance(node, Attribute):
            value = snap.attributes.get(node.name)
            return all(json_test(t, value, self.now) for t in node.tests), value
        if isinstance(node, Tag):
            return node.tag in snap.tags, sorted(snap.tags)
        if isinstance(node, ListMember):
            status = snap.lists.get(node.key)
            return status == node.status, status
        if isinstance(node, EmailDomain):
            email = snap.profile.get("email")
            return email is not None and email.endswith("@" + node.domain), email
        if isinstance(node, Event):
            return self.event(node)
        if isinstance(node, Random):
            bucket = values.bucket(snap.contact_id, node.seed)
            return bucket < node.threshold, {"bucket": bucket, "threshold": node.threshold}
        assert isinstance(node, Segment)  # noqa: S101 - the last kind of node
        if self.segments is None:
            raise errors.InvalidInput.field(
                node.path or "segment", "segments are not available here"
            )
        member = self.segments(node.key, snap.contact_id)
        return member, member

    def event(self, node: Event) -> tuple[bool, Any]:
        found = [e for e in self.snap.events if matches(node, e, self.now)]
        seen: dict[str, Any] = {"count": len(found)}
        if found:
            seen["first"], seen["last"] = found[0].timestamp, found[-1].timestamp
        if node.first is not None:
            first = min((e.timestamp for e in found), default=None)
            test = node.first
            return first is not None and all(
                dates.comparisons(test.op, first, test.value, self.now)
            ), seen
        if node.last is not None:
            if not found:
                return False, seen
            latest = max(found, key=lambda e: (e.timestamp, e.id))
            value = dig(latest.properties, node.last.keys)
            seen["value"] = value
            return all(json_test(t, value, self.now) for t in node.last.tests), seen
        return all(values.COMPARATORS[t.op](len(found), t.value) for t in node.count), seen


def matches(node: Event, event: EventFact, now: datetime) -> bool:
    """Whether `node` looks at `event` at all (name, time, `where`, `where_any`)."""
    at = event.timestamp
    if event.name != node.name or at > now:
        return False
    if node.within is not None and at < now - node.within:
        return False
    if node.between is not None and not node.between[0] <= at < node.between[1]:
        return False
    if not all(_property(p, event.properties, now) for p in node.where):
        return False
    return not node.where_any or any(_property(p, event.properties, now) for p in node.where_any)


def properties_match(
    where: tuple[Property, ...], properties: Mapping[str, Any], now: datetime
) -> bool:
    """Whether event `properties` pass every property test (`behaviour.where`)."""
    return all(_property(p, properties, now) for p in where)


def _property(prop: Property, properties: Mapping[str, Any], now: datetime) -> bool:
    value = dig(properties, prop.keys)
    return all(json_test(t, value, now) for t in prop.tests)


def dig(doc: Any, keys: tuple[str, ...]) -> Any:
    """The value at `keys` in nested objects; None (missing) when any step is not there."""
    for key in keys:
        if not isinstance(doc, Mapping) or key not in doc:
            return None
        doc = doc[key]
    return doc


# -- leaf tests -------------------------------------------------------------------------


def column_test(test: Test, value: Any, now: datetime) -> bool:
    """A test on a typed profile column; None is missing."""
    op, x = test.op, test.value
    if op in ("ne", "not_in"):
        return not column_test(Test("eq" if op == "ne" else "in", x, test.path), value, now)
    if op == "exists":
        return bool((value is not None) == x)
    if value is None:
        return False
    if op == "in":
        return value in x
    if op in values.COMPARATORS:
        return bool(values.COMPARATORS[op](value, x))
    if op == "contains":
        return x in value
    if op == "starts_with":
        return bool(value.startswith(x))
    if op == "ends_with":
        return bool(value.endswith(x))
    if op == "anniversary":
        return value.strftime("%m-%d") in dates.anniversary_days(now, x)
    return all(dates.comparisons(op, value, x, now))


def json_kind(value: Any) -> str:
    """The JSON type of a value: null (also for missing), boolean, number, string, array,
    object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def json_equal(value: Any, x: Any) -> bool:
    """Same JSON type and equal (numbers numerically)."""
    if isinstance(x, bool) or isinstance(value, bool):
        return isinstance(x, bool) and isinstance(value, bool) and value == x
    return json_kind(value) == json_kind(x) and value == x


def json_test(test: Test, value: Any, now: datetime) -> bool:
    """A test on an untyped JSON value (custom attribute or event property)."""
    op, x = test.op, test.value
    kind = json_kind(value)
    if op in ("ne", "not_in"):
        return not json_test(Test("eq" if op == "ne" else "in", x, test.path), value, now)
    if op == "exists":
        return bool((kind != "null") == x)
    if op == "eq":
        return json_equal(value, x)
    if op == "in":
        return any(json_equal(value, item) for item in x)
    if op in values.COMPARATORS:
        return json_kind(x) == kind and bool(values.COMPARATORS[op](value, x))
    if op == "contains":
        if kind == "string" and isinstance(x, str):
            return x in value
        return kind == "array" and any(json_equal(item, x) for item in value)
    return kind == "string" and _text_test(op, value, x, now)


def _text_test(op: str, value: str, x: Any, now: datetime) -> bool:
    """starts_with, ends_with and the date operators, on a JSON string."""
    if op == "starts_with":
        return value.startswith(x)
    if op == "ends_with":
        return value.endswith(x)
    if not dates.is_date_text(value):
        return False
    if op == "anniversary":
        return value[5:10] in dates.anniversary_days(now, x)
    return all(dates.comparisons(op, dates.text_key(value), x, now, dates.instant_key))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value
