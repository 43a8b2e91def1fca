"""The worker task that reads the event log for flows: each event can start runs (event,
segment, list and form triggers) and can wake, exit or convert the contact's live runs.

It follows the identity worker (only events already attributed to a contact), reads from
its own durable cursor and saves everything a batch of events caused in the transaction
that advances the cursor: a crash replays the batch or none of it. Only one worker reads
the log for flows at a time (the cursor is claimed with SKIP LOCKED); the runs it touches
are locked, so a worker advancing them either finished first or waits its turn."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import cursor
from tidings.flows import engine, enrolment, graph, history, reactions, runs, store
from tidings.flows.matching import EventInfo, triggers

#: The cursor this task reads the log with.
CURSOR = "flows"
#: Batches per call: a worker asked to stop finishes its round within a few of them.
MAX_BATCHES = 10
_e, _f, _r = tables.events, tables.flows, tables.flow_runs
_COLUMNS = (_e.c.id, _e.c.tx, _e.c.contact_id, _e.c.name, _e.c.properties, _e.c.context)


def process_events(engine_: Engine, clock: Clock, settings: Settings) -> int:
    """Catch up with the log, up to `MAX_BATCHES` batches; returns the runs started
    or changed (not events read, so a worker without flows stays idle), at least 1 when
    there is more to read (so the worker comes back at once)."""
    changed = 0
    for _ in range(MAX_BATCHES):
        with engine_.begin() as conn:
            read, done = process_batch(conn, clock, settings)
        changed += done
        if read < settings.worker_batch_size:
            return changed
    return max(changed, 1)


def process_batch(conn: Connection, clock: Clock, settings: Settings) -> tuple[int, int]:
    """One batch of events: (events read, runs started or changed)."""
    at = cursor.claim(conn, clock, CURSOR)
    if at is None:
        return 0, 0  # another worker has it
    until = cursor.position(conn, cursor.EVENTS)
    rows = cursor.read(
        conn, at, settings.worker_batch_size, until=until, columns=(*_COLUMNS, _e.c.timestamp)
    )
    events = [(row.contact_id, _info(row)) for row in rows if row.contact_id and row.name]
    done = 0
    if events:
        done = start_runs(conn, clock, events)
        done += react(conn, clock, events)
    if rows:
        cursor.advance(conn, clock, cursor.Position.of(rows[-1]), CURSOR)
    return len(rows), done


def _info(row: Any) -> EventInfo:
    return EventInfo(row.id, row.name, row.timestamp, row.properties or {}, row.context or {})


def start_runs(conn: Connection, clock: Clock, events: Sequence[tuple[int, EventInfo]]) -> int:
    """Enrol contacts into active flows whose trigger these events are."""
    names = sorted({e.name for _, e in events})
    flows = conn.execute(
        select(_f.c.id, _f.c.key, _f.c.version, _f.c.status, _f.c.trigger_event).where(
            _f.c.status == "active", _f.c.trigger_event.in_(names)
        )
    ).all()
    now, started = clock.now(), 0
    for flow_row in flows:
        flow = store.graph(conn, flow_row.id, flow_row.version)
        candidates = [
            enrolment.Candidate(cid, event=e, due=None)
            for cid, e in events
            if triggers(flow.trigger, e, now)
        ]
        if candidates:
            got, _ = enrolment.enrol(conn, clock, flow_row, flow, candidates)
            started += len(got)
    return started


def react(conn: Connection, clock: Clock, events: Sequence[tuple[int, EventInfo]]) -> int:
    """Let each event wake, exit or convert the live runs of its contact."""
    by_contact: dict[int, list[EventInfo]] = defaultdict(list)
    for cid, e in events:
        by_contact[cid].append(e)
    live = _live_runs(conn, sorted(by_contact), {e.name for _, e in events})
    if not live:
        return 0
    now = clock.now()
    outcomes: list[runs.Saved] = []
    for row, flow_key, flow in live:
        run, records = runs.as_run(row), list[history.Record]()
        for e in by_contact[row.contact_id]:
            outcome = reactions.on_event(flow, run, e, now)
            if outcome is not None:
                run, records = outcome.run, records + outcome.records
        if run != runs.as_run(row):
            outcomes.append((row.flow_id, flow_key, flow, engine.Outcome(run, [], records)))
    runs.save(conn, clock, outcomes)
    return len(outcomes)


def _live_runs(
    conn: Connection, contact_ids: list[int], names: set[str]
) -> list[tuple[Any, str, graph.Flow]]:
    """Live runs of these contacts, locked, in flows that listen to any of `names`."""
    out = []
    for start in range(0, len(contact_ids), 1000):
        query = (
            select(*runs.RUN_COLUMNS, _f.c.key)
            .join(_f, _f.c.id == _r.c.flow_id)
            .where(
                _r.c.contact_id.in_(contact_ids[start : start + 1000]),
                _r.c.ended_at.is_(None),
                _f.c.status.in_(("active", "paused")),
            )
            .order_by(_r.c.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=_r)
        for row in conn.execute(query):
            flow = store.graph(conn, row.flow_id, row.version)
            if names & listened(flow) or row.wait_event in names:
                out.append((row, row.key, flow))
    return out


def listened(flow: graph.Flow) -> set[str]:
    """The event names that can change a live run of `flow` (besides its waits)."""
    names = {rule.event.name for rule in flow.exit_when if rule.event is not None}
    if flow.goal is not None:
        names.add(flow.goal.event.name)
    return names
