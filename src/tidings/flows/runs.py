"""Flow runs in the database: reading them into `engine.Run`, and saving what the engine
decided — the run's new state, its history records, its send intents (ledger rows) and its
profile changes — in the caller's transaction, all or nothing.

`advance_due` is the worker task that moves due runs: it claims a batch with
`FOR UPDATE SKIP LOCKED` on PostgreSQL (any number of workers share the work, none waits
on another), advances each with the engine and saves the batch in one transaction. A worker
killed mid-batch rolls the whole batch back: the runs are still due and the next worker
advances them exactly once; no ledger row was written twice (or at all)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import tables
from tidings.flows import effects, engine, graph, history, store
from tidings.flows.facts import BatchFacts
from tidings.messages import ledger

log = logging.getLogger(__name__)

_r, _f = tables.flow_runs, tables.flows

RUN_COLUMNS = (
    _r.c.id,
    _r.c.flow_id,
    _r.c.version,
    _r.c.contact_id,
    _r.c.entry_key,
    _r.c.status,
    _r.c.step_id,
    _r.c.next_at,
    _r.c.wait_event,
    _r.c.state,
    _r.c.entered_at,
    _r.c.end_reason,
    _r.c.converted_at,
    _r.c.converted_step,
    _r.c.revenue,
)


def as_run(row: Row[*tuple[Any, ...]]) -> engine.Run:
    return engine.Run(
        id=row.id,
        contact_id=row.contact_id,
        status=row.status,
        step_id=row.step_id,
        next_at=row.next_at,
        entered_at=row.entered_at,
        entry_key=row.entry_key,
        state=dict(row.state or {}),
        wait_event=row.wait_event,
        end_reason=row.end_reason,
        converted_at=row.converted_at,
        converted_step=row.converted_step,
        revenue=row.revenue,
    )


def advance_due(engine_: Engine, clock: Clock, settings: Settings) -> int:
    """Advance every due run of every active flow, a batch per transaction; returns how
    many runs were advanced."""
    total = 0
    while True:
        with engine_.begin() as conn:
            done = advance_batch(conn, clock, settings)
        total += done
        if done < settings.flow_batch_size:
            return total


def advance_batch(conn: Connection, clock: Clock, settings: Settings) -> int:
    """Claim up to a batch of due runs and advance them (in the caller's transaction)."""
    now = clock.now()
    active = conn.execute(select(_f.c.id, _f.c.key).where(_f.c.status == "active")).all()
    if not active:
        return 0
    keys = {row.id: row.key for row in active}
    query = (
        select(*RUN_COLUMNS)
        .where(_r.c.flow_id.in_(list(keys)), _r.c.next_at <= now, _r.c.ended_at.is_(None))
        .order_by(_r.c.next_at)
        .limit(settings.flow_batch_size)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return 0
    flows = {(r.flow_id, r.version): store.graph(conn, r.flow_id, r.version) for r in rows}
    facts = BatchFacts(
        conn, now, {r.contact_id for r in rows}, sends_since=_cap_horizon(flows.values(), now)
    )
    options = engine.Options(fallback_timezone=settings.fallback_timezone)
    outcomes = []
    for row in rows:
        flow = flows[(row.flow_id, row.version)]
        outcome = advance_one(flow, as_run(row), now, facts, options)
        for effect in outcome.effects:
            if isinstance(effect, engine.SendIntent):
                facts.sent(row.contact_id, effect.channel, now)
        outcomes.append((row.flow_id, keys[row.flow_id], flow, outcome))
    save(conn, clock, outcomes)
    return len(rows)


def advance_one(
    flow: graph.Flow, run: engine.Run, now: datetime, facts: BatchFacts, options: engine.Options
) -> engine.Outcome:
    """`engine.advance`, turning an unexpected error into a failed run (never the batch)."""
    try:
        return engine.advance(flow, run, now, facts.for_contact(run.contact_id), options)
    except Exception as exc:  # a bug or bad data in one run must not stop the others
        log.exception("flow run failed", extra={"run_id": run.id, "flow": flow.key})
        run.status, run.end_reason = "failed", f"{type(exc).__name__}: {exc}"
        run.step_id = run.next_at = run.wait_event = None
        record = history.Record(None, history.FAILED, now, False, {"reason": run.end_reason})
        return engine.Outcome(run, [], [record])


def _cap_horizon(flows: Iterable[graph.Flow], now: datetime) -> datetime | None:
    spans = [cap.per for f in flows for cap in f.settings.frequency_caps.values()]
    return now - max(spans, default=timedelta(0)) if spans else None


Saved = tuple[int, str, graph.Flow, engine.Outcome]


def save(conn: Connection, clock: Clock, outcomes: Sequence[Saved]) -> None:
    """Write the runs' new states, history, ledger rows and profile changes."""
    now = clock.now()
    effects.apply_profile_changes(conn, clock, [(key, o) for _, key, _, o in outcomes])
    _update_runs(conn, [o.run for _, _, _, o in outcomes], now)
    steps, intents = [], []
    for flow_id, key, _, outcome in outcomes:
        run = outcome.run
        steps.extend(_history_rows(flow_id, run.id, outcome.records))
        for effect in outcome.effects:
            if isinstance(effect, engine.SendIntent):
                intents.append(_intent(flow_id, key, run, effect, now))
    if steps:
        conn.execute(insert(tables.flow_run_steps), steps)
    ledger.record(conn, intents)


def _update_runs(conn: Connection, runs: Sequence[engine.Run], now: datetime) -> None:
    if not runs:
        return
    ended = ("completed", "exited", "failed")
    statement = (
        update(_r)
        .where(_r.c.id == bindparam("run_id"))
        .values(
            status=bindparam("status"),
            step_id=bindparam("step_id"),
            next_at=bindparam("next_at"),
            wait_event=bindparam("wait_event"),
            state=bindparam("state"),
            updated_at=bindparam("updated_at"),
            ended_at=bindparam("ended_at"),
            end_reason=bindparam("end_reason"),
            converted_at=bindparam("converted_at"),
            converted_step=bindparam("converted_step"),
            revenue=bindparam("revenue"),
        )
    )
    params = [
        {
            "run_id": r.id,
            "status": r.status,
            "step_id": r.step_id,
            "next_at": r.next_at,
            "wait_event": r.wait_event,
            "state": r.state,
            "updated_at": now,
            "ended_at": now if r.status in ended else None,
            "end_reason": r.end_reason,
            "converted_at": r.converted_at,
            "converted_step": r.converted_step,
            "revenue": r.revenue,
        }
        for r in runs
    ]
    conn.execute(statement, params)


def _history_rows(
    flow_id: int, run_id: int, records: Sequence[history.Record]
) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "flow_id": flow_id,
            "step_id": rec.step_id,
            "action": rec.action,
            "first": rec.first,
            "detail": rec.detail,
            "at": rec.at,
        }
        for rec in records
    ]


def _intent(
    flow_id: int, key: str, run: engine.Run, intent: engine.SendIntent, now: datetime
) -> dict[str, Any]:
    payload = {"flow": key, "run": run.id, "step": intent.step_id, **dict(intent.params)}
    return ledger.intent_row(
        contact_id=run.contact_id,
        channel=intent.channel,
        flow_id=flow_id,
        run_id=run.id,
        step_id=intent.step_id,
        occurrence=intent.occurrence,
        template=intent.template,
        payload=payload,
        due_at=intent.due_at,
        now=now,
    )
