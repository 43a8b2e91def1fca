"""Who starts, who leaves and what counts, as written: a flow's `trigger`, `entry`,
`exit_when` and `goal` read into `graph` types, every problem named by its path."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

from tidings import errors
from tidings.conditions import behaviour, durations, model, values
from tidings.conditions.nodes import Property
from tidings.conditions.values import Problems, Test, at
from tidings.flows import definition, graph, written_parts, written_timing
from tidings.flows.written_parts import Part

#: Triggers whose runs start from an event, so `entry.key` can name a path in it.
EVENT_LIKE = (
    graph.EventTrigger,
    graph.SegmentTrigger,
    graph.ListJoined,
    graph.FormSubmitted,
    graph.ApiTrigger,
)
KEY_ROOTS = ("properties", "context")
UNSUBSCRIBED = "Unsubscribed"
SEGMENT_LEFT = "Segment Left"
MIN_EVERY = timedelta(hours=1)
P = TypeVar("P", bound=Part)


def one_of(
    data: Any, forms: Mapping[str, type[P]], path: str, problems: Problems
) -> tuple[str, P] | None:
    """The form of `data` (an object with exactly one of the `forms` keys) and its model."""
    kinds = [key for key in data if key in forms] if isinstance(data, Mapping) else []
    if len(kinds) != 1:
        problems.add(path, f"must be an object with exactly one of: {', '.join(forms)}")
        return None
    part = written_parts.check(forms[kinds[0]], data, path, problems)
    return (kinds[0], part) if part is not None else None


def where(value: Any, path: str, problems: Problems) -> tuple[Property, ...]:
    """Event property filters (`where`); none when left out."""
    if value is None:
        return ()
    return problems.check(behaviour.where, value, path) or ()


def event_name(value: Any, path: str, problems: Problems) -> str | None:
    """An event name (1 to 255 characters), or None once the problem is recorded."""
    name: str | None = problems.check(values.name, value, path)
    return name


# -- trigger ----------------------------------------------------------------------------


def trigger(data: Any, path: str, problems: Problems) -> graph.Trigger | None:
    """The `trigger`: one of its forms (DESIGN.md §4), or the word `api`."""
    if data == "api":
        return graph.ApiTrigger()
    found = one_of(data, definition.TRIGGERS, path, problems)
    if found is None:
        return None
    kind, part = found
    if kind in _KEYED:
        key = problems.check(written_parts.slug, getattr(part, kind), at(path, kind))
        return _KEYED[kind](key) if key is not None else None
    return _TRIGGERS[kind](part, path, problems)


_KEYED: dict[str, Any] = {
    "segment_entered": graph.SegmentTrigger,
    "segment_left": lambda key: graph.SegmentTrigger(key, entered=False),
    "list_joined": graph.ListJoined,
    "form_submitted": graph.FormSubmitted,
}


def _event(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    name = event_name(part.event, at(path, "event"), problems)
    filters = where(part.where, at(path, "where"), problems)
    return graph.EventTrigger(name, filters) if name else None


def _date(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    name = date_attribute(part.date_attribute, at(path, "date_attribute"), problems)
    shift = problems.check(written_timing.day_offset, part.offset, at(path, "offset"))
    when = problems.check(written_timing.time_of_day, part.at, at(path, "at"))
    if name is None or shift is None or when is None:
        return None
    return graph.DateTrigger(name, shift, when)


def date_attribute(value: Any, path: str, problems: Problems) -> str | None:
    """A date attribute: a custom attribute (`birthday`, `attributes.birthday`) or one of
    the profile's own dates (`created_at`)."""
    name = problems.check(values.name, value, path)
    if name is None:
        return None
    if name.startswith("attributes.") and len(name) > len("attributes."):
        return str(name.removeprefix("attributes."))
    if model.PROFILE_COLUMNS.get(name, "date") != "date":
        problems.add(path, "is a profile field that holds no date")
        return None
    return str(name)


def _inactive(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    days = problems.check(written_timing.whole_days, part.inactive, at(path, "inactive"))
    events = _names(part.events, at(path, "events"), problems) if part.events is not None else ()
    if days is None or events is None:
        return None
    return graph.InactiveTrigger(days, events) if events else graph.InactiveTrigger(days)


def _names(items: list[Any], path: str, problems: Problems) -> tuple[str, ...] | None:
    if not items:
        problems.add(path, "must name at least one event")
        return None
    names = [event_name(item, at(path, i), problems) for i, item in enumerate(items)]
    return tuple(n for n in names if n) if all(names) else None


def _score(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    return graph.ScoreReached(part.score_reached)


def _api(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    return graph.ApiTrigger()


def _schedule(part: Any, path: str, problems: Problems) -> graph.Trigger | None:
    spec: definition.ScheduleSpec = part.schedule
    path = at(path, "schedule")
    every = problems.check(durations.parse, spec.every, at(path, "every"))
    if every is not None and every < MIN_EVERY:
        problems.add(at(path, "every"), f"must be at least {durations.format(MIN_EVERY)}")
        every = None
    starting = problems.check(written_timing.zoned_instant, spec.starting, at(path, "starting"))
    segment = None
    if spec.segment is not None:
        segment = problems.check(written_parts.slug, spec.segment, at(path, "segment"))
    if every is None or starting is None or (spec.segment is not None and segment is None):
        return None
    return graph.ScheduleTrigger(every, starting, segment)


_TRIGGERS = {
    "event": _event,
    "date_attribute": _date,
    "inactive": _inactive,
    "score_reached": _score,
    "api": _api,
    "schedule": _schedule,
}


# -- entry ------------------------------------------------------------------------------


def entry(data: Any, trigger: graph.Trigger | None, path: str, problems: Problems) -> graph.Entry:
    """The `entry` rules; defaults (once, no key, no filter) when left out."""
    part = written_parts.check(definition.Entry, data, path, problems) if data is not None else None
    if part is None:
        return graph.Entry()
    key = condition = None
    if part.key is not None:
        key = problems.check(entry_key, part.key, at(path, "key"))
        if key and trigger is not None and not isinstance(trigger, EVENT_LIKE):
            problems.add(
                at(path, "key"),
                "needs a trigger that starts runs from an event: event, segment_entered, "
                "segment_left, list_joined, form_submitted or api",
            )
    if part.filter is not None:
        condition = problems.check(model.parse, part.filter, at(path, "filter"))
    return graph.Entry(part.reentry, key, condition)


def entry_key(value: Any, field: str) -> str:
    """A dotted path into the trigger event: `properties.cart_id`, `context.page.url`."""
    text = values.name(value, field)
    parts = text.split(".")
    if len(parts) < 2 or parts[0] not in KEY_ROOTS or not all(parts):
        raise errors.InvalidInput.field(
            field, "must be a path into the trigger event, like properties.cart_id"
        )
    return text


def dotted(value: Any, field: str) -> str:
    """A dotted path into an event's properties (`revenue`, `order.total`)."""
    text = values.name(value, field)
    if not all(text.split(".")):
        raise errors.InvalidInput.field(field, "must not have an empty part between dots")
    return text


# -- leaving and converting ---------------------------------------------------------------


def event_match(part: Any, keyed: bool, path: str, problems: Problems) -> graph.EventMatch | None:
    """`{event, where?, match_key?}` (in exit_when, goal and wait_until). `keyed`: the flow
    has an entry key, which `match_key` compares."""
    name = event_name(part.event, at(path, "event"), problems)
    filters = where(part.where, at(path, "where"), problems)
    if part.match_key and not keyed:
        problems.add(at(path, "match_key"), "needs entry.key: runs have no key to match")
        return None
    return graph.EventMatch(name, filters, part.match_key) if name else None


def exits(data: Any, keyed: bool, path: str, problems: Problems) -> tuple[graph.ExitRule, ...]:
    """The `exit_when` rules, in order."""
    if data is None:
        return ()
    if not isinstance(data, list):
        problems.add(path, "must be a list of exit rules")
        return ()
    rules = [_exit(item, keyed, at(path, i), problems) for i, item in enumerate(data)]
    return tuple(rule for rule in rules if rule is not None)


def _exit(data: Any, keyed: bool, path: str, problems: Problems) -> graph.ExitRule | None:
    found = one_of(data, definition.EXITS, path, problems)
    if found is None:
        return None
    kind, part = found
    reason: str = getattr(part, "reason", "")
    if kind == "condition":
        condition = problems.check(model.parse, getattr(part, kind), at(path, kind))
        return graph.ExitRule(condition=condition, reason=reason) if condition else None
    if kind == "event":
        match = event_match(part, keyed, path, problems)
    elif kind == "unsubscribed":
        match = graph.EventMatch(UNSUBSCRIBED)
    else:
        match = segment_left(getattr(part, kind), at(path, kind), problems)
    return graph.ExitRule(event=match, reason=reason) if match else None


def segment_left(value: Any, path: str, problems: Problems) -> graph.EventMatch | None:
    """The "Segment Left" event for segment `value`."""
    key = problems.check(written_parts.slug, value, path)
    if key is None:
        return None
    test = Property(("segment",), (Test("eq", key, path),), path)
    return graph.EventMatch(SEGMENT_LEFT, (test,))


def goal(data: Any, keyed: bool, path: str, problems: Problems) -> graph.Goal | None:
    """The conversion `goal`, if any."""
    part = written_parts.check(definition.Goal, data, path, problems) if data is not None else None
    if part is None:
        return None
    match = event_match(part, keyed, path, problems)
    within = problems.check(durations.parse, part.within, at(path, "within"))
    revenue = problems.check(dotted, part.revenue, at(path, "revenue"))
    if match is None or within is None or revenue is None:
        return None
    return graph.Goal(match, within, revenue, part.exit)
