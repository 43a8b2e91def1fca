"""What a flow did, per step and in total (`GET /v1/flows/{key}/stats`, `flows stats`).

Everything is counted in the database by step id, in three grouped queries: the journey
history (`flow_run_steps`) gives entries, exits and failures at each step; the runs give
who waits where now, conversions and revenue. Step ids are stable across versions, so a
step's figures include every version that had it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, case, func, select

from tidings.db import tables
from tidings.flows import graph, history, store

_r = tables.flow_runs
_h = tables.flow_run_steps


def flow_stats(conn: Connection, key: str) -> dict[str, Any]:
    """Per step of the current version (then any other step id seen in its history):
    entered, waiting now, completed, exited, failed, converted and revenue; and the
    flow's totals with its first and last activity."""
    row = store.find(conn, key)
    flow = store.graph(conn, row.id, row.version)
    seen = _history_by_step(conn, row.id)
    waiting = _count_by(conn, _r.c.step_id, (_r.c.flow_id == row.id) & _r.c.status.in_(store.LIVE))
    converted = _conversions_by_step(conn, row.id)
    totals = _totals(conn, row.id)
    ids = list(flow.steps) + sorted(
        {s for s in [*seen, *waiting, *converted] if s is not None} - set(flow.steps)
    )
    steps = [
        _step(step_id, flow, seen.get(step_id), waiting.get(step_id, 0), converted.get(step_id))
        for step_id in ids
    ]
    activity = [*seen.values(), totals]
    firsts = [r.first_at for r in activity if r.first_at is not None]
    lasts = [r.last_at for r in activity if r.last_at is not None]
    return {
        "key": row.key,
        "version": row.version,
        "runs": {
            "entered": totals.entered,
            "live": totals.live or 0,
            "completed": totals.completed or 0,
            "exited": totals.exited or 0,
            "failed": totals.failed or 0,
            "converted": totals.converted,
            "revenue": float(totals.revenue or 0),
            "first_activity_at": min(firsts, default=None),
            "last_activity_at": max(lasts, default=None),
        },
        "steps": steps,
    }


def _step(
    step_id: str,
    flow: graph.Flow,
    seen: Row[Any] | None,
    waiting: int,
    converted: Row[Any] | None,
) -> dict[str, Any]:
    entered = int(seen.entered or 0) if seen else 0
    exited = int(seen.exited or 0) if seen else 0
    failed = int(seen.failed or 0) if seen else 0
    return {
        "step_id": step_id,
        "type": step_type(flow.steps[step_id]) if step_id in flow.steps else None,
        "in_current_version": step_id in flow.steps,
        "entered": entered,
        "waiting": waiting,
        "completed": max(entered - waiting - exited - failed, 0),
        "exited": exited,
        "failed": failed,
        "converted": int(converted.runs) if converted else 0,
        "revenue": float(converted.revenue or 0) if converted else 0.0,
    }


def step_type(step: graph.Step) -> str:
    """The step's kind as written in a definition (`send_email`, `wait`, `if`...)."""
    match step:
        case graph.Send(channel="email" | "sms" as channel):
            return f"send_{channel}"
        case graph.Send(channel=channel):
            return channel
        case graph.Branch():
            return "if"
        case graph.Goto():
            return "goto"
    names = {
        graph.Wait: "wait",
        graph.WaitUntil: "wait_until",
        graph.Split: "split",
        graph.UpdateContact: "update_contact",
        graph.Score: "score",
        graph.Exit: "exit",
    }
    return names.get(type(step), type(step).__name__.lower())


def _count_by(conn: Connection, column: Any, where: Any) -> dict[str | None, int]:
    query = select(column, func.count()).where(where).group_by(column)
    return {value: int(n) for value, n in conn.execute(query)}


def _history_by_step(conn: Connection, flow_id: int) -> dict[str | None, Row[Any]]:
    """Visits (first records), exits and failures per step, with the first and last
    record's time (step None: records of no step, such as the run's start)."""

    def counted(when: Any) -> Any:
        return func.sum(case((when, 1), else_=0))

    query = (
        select(
            _h.c.step_id,
            counted(_h.c.first).label("entered"),
            counted(_h.c.action == history.EXITED).label("exited"),
            counted(_h.c.action == history.FAILED).label("failed"),
            func.min(_h.c.at).label("first_at"),
            func.max(_h.c.at).label("last_at"),
        )
        .where(_h.c.flow_id == flow_id)
        .group_by(_h.c.step_id)
    )
    rows: list[Row[Any]] = list(conn.execute(query))
    return {r.step_id: r for r in rows}


def _conversions_by_step(conn: Connection, flow_id: int) -> dict[str | None, Row[Any]]:
    """Converted runs and their revenue, credited to the step the goal names."""
    query = (
        select(
            _r.c.converted_step,
            func.count().label("runs"),
            func.sum(_r.c.revenue).label("revenue"),
        )
        .where(_r.c.flow_id == flow_id, _r.c.converted_at.is_not(None))
        .group_by(_r.c.converted_step)
    )
    return {r.converted_step: r for r in conn.execute(query)}


def _totals(conn: Connection, flow_id: int) -> Row[Any]:
    def status_is(*statuses: str) -> Any:
        return func.sum(case((_r.c.status.in_(statuses), 1), else_=0))

    query = select(
        func.count().label("entered"),
        status_is(*store.LIVE).label("live"),
        status_is("completed").label("completed"),
        status_is("exited").label("exited"),
        status_is("failed").label("failed"),
        func.count(_r.c.converted_at).label("converted"),
        func.sum(_r.c.revenue).label("revenue"),
        func.min(_r.c.entered_at).label("first_at"),
        func.max(_r.c.updated_at).label("last_at"),
    ).where(_r.c.flow_id == flow_id)
    return conn.execute(query).one()
