"""How events meet flows: does an event start a run (trigger, entry key), does it match an
exit, goal or wait (`event_matches`)? Pure functions over plain data, like the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tidings.conditions import behaviour
from tidings.conditions.evaluate import dig, properties_match
from tidings.conditions.nodes import All, AnyOf, Condition, Event, Not, Property
from tidings.conditions.values import Test
from tidings.flows import graph

#: What a segment, list or form trigger listens to in the log, and the property naming it.
SEGMENT_ENTERED, SEGMENT_LEFT = "Segment Entered", "Segment Left"
LIST_JOINED = "List Joined"
FORM_SUBMITTED = "Form Submitted"


@dataclass(frozen=True)
class EventInfo:
    """One event of the log as flows see it."""

    id: int
    name: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def trigger_event(trigger: graph.Trigger) -> str | None:
    """The log event that can start a run of this trigger (None: not started by events)."""
    if isinstance(trigger, graph.EventTrigger):
        return trigger.name
    if isinstance(trigger, graph.SegmentTrigger):
        return SEGMENT_ENTERED if trigger.entered else SEGMENT_LEFT
    if isinstance(trigger, graph.ListJoined):
        return LIST_JOINED
    if isinstance(trigger, graph.FormSubmitted):
        return FORM_SUBMITTED
    return None


def triggers(trigger: graph.Trigger, event: EventInfo, now: datetime) -> bool:
    """Whether `event` starts a run of a flow with this trigger."""
    if event.name != trigger_event(trigger):
        return False
    props = event.properties
    if isinstance(trigger, graph.EventTrigger):
        return properties_match(trigger.where, props, now)
    if isinstance(trigger, graph.SegmentTrigger):
        return props.get("segment") == trigger.key
    if isinstance(trigger, graph.ListJoined):
        return props.get("list") == trigger.key
    if isinstance(trigger, graph.FormSubmitted):
        return props.get("form") == trigger.key
    return False


def entry_key(entry: graph.Entry, event: EventInfo | None) -> str | None:
    """The run's entry key from the trigger event: "" for one run per contact; None when
    the flow is keyed and the event lacks the key (no run starts)."""
    if entry.key is None:
        return ""
    if event is None:
        return None
    head, _, rest = entry.key.partition(".")
    doc = event.properties if head == "properties" else event.context
    value = dig(doc, tuple(rest.split("."))) if rest else None
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def event_matches(
    m: graph.EventMatch, event: EventInfo, entry: graph.Entry, run_key: str, now: datetime
) -> bool:
    """`event` is the event `m` describes, for the run keyed `run_key`."""
    if event.name != m.name or not properties_match(m.where, event.properties, now):
        return False
    if not m.match_key:
        return True
    if entry.reentry == "always":  # its runs' keys carry a "#..." of their own
        run_key = run_key.rpartition("#")[0]
    return entry_key(entry, event) == run_key


def awaited_event(step: graph.WaitUntil) -> str:
    """The event name a wait_until step listens for (stored on the run, indexed by name)."""
    if step.event is not None:
        return step.event.name
    return behaviour.ENGAGEMENT_EVENTS[step.engagement]


def scoped(condition: Condition, flow: graph.Flow, run_id: int) -> Condition:
    """`condition` with `{opened: STEP}` / `{clicked: STEP}` on this flow's own steps
    narrowed to this run's messages (message events carry the run id as `run`)."""
    if isinstance(condition, All | AnyOf):
        children = tuple(scoped(c, flow, run_id) for c in condition.children)
        return replace(condition, children=children)
    if isinstance(condition, Not):
        return replace(condition, child=scoped(condition.child, flow, run_id))
    if isinstance(condition, Event) and _names_own_step(condition, flow):
        run = Property(("run",), (Test("eq", run_id, condition.path),), condition.path)
        return replace(condition, where=(*condition.where, run))
    return condition


def _names_own_step(node: Event, flow: graph.Flow) -> bool:
    for prop in node.where_any:
        if prop.keys == ("step",) and any(
            t.op == "eq" and t.value in flow.steps for t in prop.tests
        ):
            return True
    return False
