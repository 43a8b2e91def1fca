"""What one event of the log does to a live run: reach its goal, exit it, or wake its
`wait_until` (`on_event`). Pure, like the engine; the worker's event task calls it for each
live run of each contact in a batch of events and persists the outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from tidings.conditions.evaluate import dig
from tidings.flows import engine, graph, history
from tidings.flows.matching import EventInfo, event_matches


def on_event(
    flow: graph.Flow, run: engine.Run, event: EventInfo, now: datetime
) -> engine.Outcome | None:
    """What `event` does to the live `run`: reach its goal, exit it, or wake its
    wait_until (in that order); None when it does nothing. Events from before the run's
    trigger, and the trigger itself, never count."""
    if run.status not in engine.LIVE or not _after_trigger(run, event):
        return None
    out = engine.Outcome(replace(run, state=dict(run.state)))
    r = out.run
    if flow.goal is not None and r.converted_at is None and _reaches_goal(flow, r, event, now):
        revenue = _number(dig(event.properties, tuple(flow.goal.revenue.split("."))))
        r.converted_at, r.revenue = event.timestamp, revenue
        r.converted_step = r.state.get("last_sent")
        detail = {"event_id": event.id, "revenue": revenue}
        out.records.append(history.Record(r.converted_step, history.CONVERTED, now, False, detail))
        if flow.goal.exit:
            _end(out, now, "goal reached", {"event_id": event.id})
            return out
    for rule in flow.exit_when:
        if rule.event is not None and event_matches(
            rule.event, event, flow.entry, r.entry_key, now
        ):
            _end(out, now, rule.reason or f"{event.name} arrived", {"event_id": event.id})
            return out
    if _wakes(flow, r, event, now):
        r.state["wake"] = {"event_id": event.id, "event": event.name}
        r.status, r.next_at = "active", now
        return out
    return out if out.records else None


def _after_trigger(run: engine.Run, event: EventInfo) -> bool:
    trigger = run.state.get("trigger") or {}
    trigger_id = trigger.get("event_id")
    if trigger_id == event.id:
        return False
    since = trigger.get("at")
    start = datetime.fromisoformat(since) if since else run.entered_at
    if event.timestamp == start and isinstance(trigger_id, int):
        return event.id > trigger_id  # the same instant: the log's order says which was first
    return event.timestamp >= start


def _reaches_goal(flow: graph.Flow, run: engine.Run, event: EventInfo, now: datetime) -> bool:
    goal = flow.goal
    assert goal is not None  # noqa: S101 - checked by the caller
    if not event_matches(goal.event, event, flow.entry, run.entry_key, now):
        return False
    trigger = run.state.get("trigger") or {}
    start = datetime.fromisoformat(trigger["at"]) if trigger.get("at") else run.entered_at
    return event.timestamp <= start + goal.within


def _wakes(flow: graph.Flow, run: engine.Run, event: EventInfo, now: datetime) -> bool:
    if run.wait_event != event.name or run.step_id is None or "wake" in run.state:
        return False
    step = flow.steps.get(run.step_id)
    pending = run.state.get("pending") or {}
    if not isinstance(step, graph.WaitUntil) or pending.get("step") != step.id:
        return False
    since = datetime.fromisoformat(pending["since"]) if "since" in pending else run.entered_at
    until = datetime.fromisoformat(pending["until"]) if "until" in pending else None
    if event.timestamp < since or (until is not None and event.timestamp > until):
        return False  # before the wait began, or after it timed out: the else branch's
    if step.event is not None:
        return event_matches(step.event, event, flow.entry, run.entry_key, now)
    props = event.properties
    return _same_id(props.get("run"), run.id) and props.get("step") == step.message


def _same_id(value: Any, run_id: int) -> bool:
    try:
        return int(value) == run_id
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _end(out: engine.Outcome, now: datetime, reason: str, detail: dict[str, Any]) -> None:
    r = out.run
    # a run enrolled but not yet advanced has not entered its first step: it ends at none
    at = r.step_id if "pending" in r.state else None
    out.records.append(history.Record(at, history.EXITED, now, False, {"reason": reason, **detail}))
    r.status, r.end_reason = "exited", reason
    r.step_id, r.next_at, r.wait_event = None, None, None
    r.state.pop("pending", None)
    r.state.pop("wake", None)
