"""Stored flows and their versions: apply a definition, read flows back, and hand the
engine the compiled graph of a version.

A definition is checked in full (`build.load`) before anything is stored, and stored
normalised (`build.normalise`: every step id explicit). Applying the same definition again
changes nothing; any change becomes a new, immutable version, which new runs start on.
Runs in progress keep the version they started on until moved (`lifecycle.move_runs`)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.db import tables
from tidings.flows import build
from tidings.flows import graph as flowgraph
from tidings.flows.step_actions import KnownTemplates

Outcome = Literal["created", "updated", "unchanged"]

#: Triggers the worker checks on a timer (`flows.next_check_at`) rather than from the log.
SCHEDULED = frozenset({"date_attribute", "inactive", "score_reached", "schedule"})
#: Keys a flow cannot have: `GET /v1/flows/schema` is the format's JSON Schema.
RESERVED_KEYS = frozenset({"schema"})
#: Runs that have not ended.
LIVE = ("active", "waiting")

_f = tables.flows
_v = tables.flow_versions
_r = tables.flow_runs


def trigger_columns(trigger: flowgraph.Trigger) -> tuple[str, str | None]:
    """`(trigger_type, trigger_event)` for a trigger: the kind, and the log event that can
    start a run (None for triggers the worker checks on a timer, and for API enrolment)."""
    match trigger:
        case flowgraph.EventTrigger(name=name):
            return "event", name
        case flowgraph.SegmentTrigger(entered=True):
            return "segment_entered", "Segment Entered"
        case flowgraph.SegmentTrigger():
            return "segment_left", "Segment Left"
        case flowgraph.ListJoined():
            return "list_joined", "List Joined"
        case flowgraph.FormSubmitted():
            return "form_submitted", "Form Submitted"
        case flowgraph.DateTrigger():
            return "date_attribute", None
        case flowgraph.InactiveTrigger():
            return "inactive", None
        case flowgraph.ScoreReached():
            return "score_reached", None
        case flowgraph.ApiTrigger():
            return "api", None
        case flowgraph.ScheduleTrigger():
            return "schedule", None
    raise TypeError(f"unknown trigger {trigger!r}")  # pragma: no cover - exhaustive above


def canonical(definition: Any) -> str:
    """A definition as canonical JSON text: equal definitions give equal texts, whatever
    the key order the database hands back (PostgreSQL's JSONB reorders keys)."""
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- writing ----------------------------------------------------------------------------


def apply(
    conn: Connection,
    clock: Clock,
    data: Any,
    *,
    activate: bool = False,
    known_templates: KnownTemplates | None = None,
) -> dict[str, Any]:
    """Create or update the flow `data` defines; idempotent. A changed definition becomes a
    new version. With `activate`, a draft or paused flow becomes active too;
    `known_templates(channel, key)` refuses unknown templates. The flow comes back with
    `outcome`: created, updated or unchanged."""
    flow = build.load(data, known_templates=known_templates)
    if flow.key in RESERVED_KEYS:
        raise errors.InvalidInput.field("key", f"{flow.key!r} is reserved; choose another key")
    definition = build.normalise(data)
    row = conn.execute(select(_f).where(_f.c.key == flow.key).with_for_update()).first()
    if row is None:
        outcome: Outcome = "created"
        _create(conn, clock, flow, definition, activate)
    else:
        outcome = _update(conn, clock, row, flow, definition)
        if activate and row.status != "active":
            transition(conn, clock, flow.key, "activate")
    return {**get(conn, flow.key), "outcome": outcome}


def _create(
    conn: Connection, clock: Clock, flow: flowgraph.Flow, definition: dict[str, Any], active: bool
) -> None:
    now = clock.now()
    trigger_type, trigger_event = trigger_columns(flow.trigger)
    values = {
        "key": flow.key,
        "name": flow.name,
        "description": flow.description,
        "status": "active" if active else "draft",
        "version": 1,
        "trigger_type": trigger_type,
        "trigger_event": trigger_event,
        "next_check_at": now if active and trigger_type in SCHEDULED else None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        with conn.begin_nested():
            flow_id = int(conn.execute(insert(_f).values(values).returning(_f.c.id)).scalar_one())
    except IntegrityError:  # another apply of the same key won the race
        raise errors.Conflict(
            f"Flow {flow.key!r} was created at the same time by someone else; apply again."
        ) from None
    first = {"flow_id": flow_id, "version": 1, "definition": definition, "created_at": now}
    conn.execute(insert(_v).values(first))


def _update(
    conn: Connection, clock: Clock, row: Row[Any], flow: flowgraph.Flow, definition: dict[str, Any]
) -> Outcome:
    current = conn.execute(
        select(_v.c.definition).where(_v.c.flow_id == row.id, _v.c.version == row.version)
    ).scalar_one()
    if canonical(current) == canonical(definition):
        return "unchanged"
    if row.status == "archived":
        raise errors.Conflict(
            f"Flow {row.key!r} is archived, which is final; give the new flow another key."
        )
    now = clock.now()
    version = row.version + 1
    conn.execute(
        insert(_v).values(flow_id=row.id, version=version, definition=definition, created_at=now)
    )
    trigger_type, trigger_event = trigger_columns(flow.trigger)
    conn.execute(
        update(_f)
        .where(_f.c.id == row.id)
        .values(
            name=flow.name,
            description=flow.description,
            version=version,
            trigger_type=trigger_type,
            trigger_event=trigger_event,
            next_check_at=_next_check(row.status, trigger_type, now),
            updated_at=now,
        )
    )
    return "updated"


def _next_check(status: str, trigger_type: str, now: datetime) -> datetime | None:
    """A scheduled trigger of an active flow looks for contacts now (a new version's rule
    may pick others); other triggers, and flows that are not active, never look."""
    return now if status == "active" and trigger_type in SCHEDULED else None


#: Lifecycle actions: the statuses each may start from, and the status it leads to.
TRANSITIONS: Mapping[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"draft", "paused"}), "active"),
    "pause": (frozenset({"active"}), "paused"),
    "resume": (frozenset({"paused"}), "active"),
    "archive": (frozenset({"draft", "active", "paused"}), "archived"),
}


def transition(conn: Connection, clock: Clock, key: str, action: str) -> Row[Any]:
    """Take lifecycle `action` on flow `key` (row locked); `Conflict` when its status does
    not allow it. Returns the row as it was before."""
    row = find(conn, key, lock=True)
    allowed, status = TRANSITIONS[action]
    if row.status not in allowed:
        raise _refused(key, row.status, action, allowed)
    now = clock.now()
    conn.execute(
        update(_f)
        .where(_f.c.id == row.id)
        .values(
            status=status,
            next_check_at=_next_check(status, row.trigger_type, now),
            updated_at=now,
        )
    )
    return row


def _refused(key: str, status: str, action: str, allowed: frozenset[str]) -> errors.Conflict:
    done = {"activate": "activated", "pause": "paused", "resume": "resumed"}.get(action, "archived")
    if status == "archived":
        return errors.Conflict(f"Flow {key!r} is archived, which is final; it cannot be {done}.")
    starts = " or ".join(sorted(allowed))
    article = "an" if starts[0] in "aeiou" else "a"
    return errors.Conflict(f"Flow {key!r} is {status}; only {article} {starts} flow can be {done}.")


# -- reading ----------------------------------------------------------------------------


def find(conn: Connection, key: str, *, lock: bool = False) -> Row[Any]:
    """The flows row for `key` (locked for update when `lock`); `NotFound` if none."""
    query = select(_f).where(_f.c.key == key)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise errors.NotFound(f"No flow with key {key!r}.")
    return row


def get(conn: Connection, key: str, version: int | None = None) -> dict[str, Any]:
    """One flow: its status, the definition of its newest version (or of `version`), and
    every version with the number of live runs on it."""
    row = find(conn, key)
    shown = row.version if version is None else version
    live = _live_by_version(conn, row.id)
    versions = [
        {"version": v.version, "created_at": v.created_at, "live_runs": live.get(v.version, 0)}
        for v in conn.execute(
            select(_v.c.version, _v.c.created_at)
            .where(_v.c.flow_id == row.id)
            .order_by(_v.c.version)
        )
    ]
    return {
        **_render(row, sum(live.values())),
        "shown_version": shown,
        "definition": _definition(conn, row, shown),
        "versions": versions,
    }


def list_all(conn: Connection, status: str | None = None) -> list[dict[str, Any]]:
    """Every flow (with `status`, only those), by key, with its number of live runs."""
    query = select(_f).order_by(_f.c.key)
    if status is not None and status not in tables.FLOW_STATUSES:
        raise errors.InvalidInput.field(
            "status", f"must be one of {', '.join(tables.FLOW_STATUSES)}"
        )
    if status is not None:
        query = query.where(_f.c.status == status)
    rows = conn.execute(query).all()
    counted = (
        select(_r.c.flow_id, func.count())
        .where(_r.c.flow_id.in_([r.id for r in rows]), _r.c.status.in_(LIVE))
        .group_by(_r.c.flow_id)
    )
    counts = {int(flow_id): int(n) for flow_id, n in conn.execute(counted)}
    return [_render(r, counts.get(r.id, 0)) for r in rows]


def definition(conn: Connection, key: str, version: int | None = None) -> dict[str, Any]:
    """The stored definition of flow `key`'s newest version (or of `version`)."""
    row = find(conn, key)
    return _definition(conn, row, row.version if version is None else version)


def _definition(conn: Connection, row: Row[Any], version: int) -> dict[str, Any]:
    stored = conn.execute(
        select(_v.c.definition).where(_v.c.flow_id == row.id, _v.c.version == version)
    ).scalar_one_or_none()
    if stored is None:
        raise errors.NotFound(f"Flow {row.key!r} has no version {version} (newest: {row.version}).")
    result: dict[str, Any] = stored
    return result


def _live_by_version(conn: Connection, flow_id: int) -> dict[int, int]:
    query = (
        select(_r.c.version, func.count())
        .where(_r.c.flow_id == flow_id, _r.c.status.in_(LIVE))
        .group_by(_r.c.version)
    )
    return {int(v): int(n) for v, n in conn.execute(query)}


def _render(row: Row[Any], live_runs: int) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "status": row.status,
        "version": row.version,
        "trigger_type": row.trigger_type,
        "trigger_event": row.trigger_event,
        "live_runs": live_runs,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# -- the compiled graph -----------------------------------------------------------------


def graph(conn: Connection, flow_id: int, version: int) -> flowgraph.Flow:
    """Version `version` of flow `flow_id`, compiled for the engine. Versions never change,
    so compiled graphs are cached by their definition's text."""
    stored = conn.execute(
        select(_v.c.definition).where(_v.c.flow_id == flow_id, _v.c.version == version)
    ).scalar_one_or_none()
    if stored is None:
        raise errors.NotFound(f"Flow {flow_id} has no version {version}.")
    return _compiled(canonical(stored), version)


@functools.lru_cache(maxsize=256)
def _compiled(definition_text: str, version: int) -> flowgraph.Flow:
    flow: flowgraph.Flow = build.load(json.loads(definition_text))
    return dataclasses.replace(flow, version=version)
