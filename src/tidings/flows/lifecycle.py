"""A flow's life: draft -> active <-> paused -> archived, and moving its runs between
versions.

Pausing touches no run: the engine only advances runs of active flows, so a paused flow's
runs hold where they are (nothing is sent) and continue on resume. Archiving is final: the
runs still in progress end (`exited`, "flow archived")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, literal, select, update

from tidings import errors
from tidings.clock import Clock
from tidings.db import tables
from tidings.flows import history, store

ARCHIVED_REASON = "flow archived"

_r = tables.flow_runs
_h = tables.flow_run_steps


def activate(conn: Connection, clock: Clock, key: str) -> dict[str, Any]:
    """A draft or paused flow starts taking contacts and advancing runs."""
    store.transition(conn, clock, key, "activate")
    return store.get(conn, key)


def pause(conn: Connection, clock: Clock, key: str) -> dict[str, Any]:
    """An active flow stops: no new runs, and its runs hold where they are."""
    store.transition(conn, clock, key, "pause")
    return store.get(conn, key)


def resume(conn: Connection, clock: Clock, key: str) -> dict[str, Any]:
    """A paused flow continues; runs whose time came while paused advance at once."""
    store.transition(conn, clock, key, "resume")
    return store.get(conn, key)


def archive(conn: Connection, clock: Clock, key: str) -> dict[str, Any]:
    """End a flow for good: every run in progress exits with reason "flow archived" (with a
    history record at the step it was on) and its queued messages are suppressed.
    `exited_runs` says how many runs ended."""
    row = store.transition(conn, clock, key, "archive")
    now = clock.now()
    live = (_r.c.flow_id == row.id) & _r.c.ended_at.is_(None)
    _record(conn, live, history.EXITED, {"reason": ARCHIVED_REASON}, now)
    ended = conn.execute(
        update(_r)
        .where(live)
        .values(
            status="exited",
            ended_at=now,
            end_reason=ARCHIVED_REASON,
            step_id=None,
            next_at=None,
            wait_event=None,
            updated_at=now,
        )
    )
    m = tables.messages
    conn.execute(  # what its runs queued and no channel has taken yet is not sent
        update(m)
        .where(m.c.flow_id == row.id, m.c.status == "queued")
        .values(status="suppressed", error=ARCHIVED_REASON, updated_at=now)
    )
    return {**store.get(conn, key), "exited_runs": ended.rowcount}


def move_runs(
    conn: Connection,
    clock: Clock,
    key: str,
    *,
    from_version: int | None = None,
    to_version: int | None = None,
) -> dict[str, Any]:
    """Move the live runs of flow `key` (those on `from_version`, or on any older version)
    to `to_version` (default: the newest). A run moves only if the step it is at exists
    in the target version; it then continues there (a wait keeps its due time). Others
    stay where they are and are counted as `kept`, by version and step."""
    row = store.find(conn, key, lock=True)
    target = row.version if to_version is None else to_version
    for field, value in (("to_version", target), ("from_version", from_version)):
        if value is not None and not 1 <= value <= row.version:
            raise errors.InvalidInput.field(field, f"flow {key!r} has versions 1 to {row.version}")
    steps = list(store.graph(conn, row.id, target).steps)
    candidates = (_r.c.flow_id == row.id) & _r.c.ended_at.is_(None) & (_r.c.version != target)
    if from_version is not None:
        candidates &= _r.c.version == from_version
    # Lock the candidates first: a worker holding one finishes before we look at its step.
    conn.execute(
        select(func.count()).select_from(
            select(_r.c.id).where(candidates).with_for_update().subquery()
        )
    )
    moved, kept = _move(conn, clock, candidates, steps, target)
    return {"key": key, "to_version": target, "moved": moved, "kept": kept}


def _move(
    conn: Connection,
    clock: Clock,
    candidates: ColumnElement[bool],
    steps: list[str],
    target: int,
) -> tuple[int, list[dict[str, Any]]]:
    """Move the runs among `candidates` whose step is in `steps`, one version at a time
    (the history record names the version each run came from)."""
    now = clock.now()
    groups = conn.execute(
        select(_r.c.version, _r.c.step_id, func.count().label("runs"))
        .where(candidates)
        .group_by(_r.c.version, _r.c.step_id)
        .order_by(_r.c.version, _r.c.step_id)
    ).all()
    movable = _r.c.step_id.in_(steps)
    moved = 0
    for version in sorted({g.version for g in groups}):
        these = candidates & (_r.c.version == version) & movable
        _record(conn, these, history.MOVED, {"from": version, "to": target}, now)
        done = conn.execute(update(_r).where(these).values(version=target, updated_at=now))
        moved += done.rowcount
    kept = [
        {"version": g.version, "step_id": g.step_id, "runs": g.runs}
        for g in groups
        if g.step_id not in steps
    ]
    return moved, kept


def _record(
    conn: Connection, runs: ColumnElement[bool], action: str, detail: dict[str, Any], at: Any
) -> None:
    """One history record (`first` unset) for each run matching `runs`, at its step."""
    source = select(
        _r.c.id,
        _r.c.flow_id,
        _r.c.step_id,
        literal(action),
        literal(False),
        literal(detail, tables.flow_run_steps.c.detail.type),
        literal(at, _r.c.updated_at.type),
    ).where(runs)
    columns = ["run_id", "flow_id", "step_id", "action", "first", "detail", "at"]
    conn.execute(insert(_h).from_select(columns, source))
