"""Starting runs. Every way into a flow — a trigger event, a scheduled trigger, the API —
ends here, and the database decides who gets in: `uq_flow_runs_live` allows one live run
per (flow, contact, entry key) and `uq_flow_runs_entry` numbers the runs of each, so two
workers enrolling the same contact at once start exactly one run (the other insert does
nothing).

Entry rules: `once` — one run ever per (contact, key); `after_exit` — again once the last
one ended; `always` — every trigger starts its own run. A new run is `active` and due now
(or at its trigger's time): the next round of the worker takes its first steps."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Row,
    Select,
    String,
    and_,
    false,
    func,
    insert,
    literal,
    null,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from tidings import errors
from tidings.clock import Clock
from tidings.conditions import evaluate, snapshot
from tidings.conditions import sql as conditions_sql
from tidings.db import tables
from tidings.db.types import UTCDateTime
from tidings.flows import graph, history, store
from tidings.flows.matching import EventInfo, entry_key

_r, _c, _s = tables.flow_runs, tables.contacts, tables.flow_run_steps
MAX_API_CONTACTS = 10_000


@dataclass(frozen=True)
class Candidate:
    """A contact that may start a run: from `event`, or with an explicit `key` (a date
    trigger's year...), due at `due` (default now), with `source` data for the history."""

    contact_id: int
    event: EventInfo | None = None
    key: str | None = None
    due: datetime | None = None
    properties: Mapping[str, Any] | None = None
    source: str = "event"


def enrol(
    conn: Connection,
    clock: Clock,
    flow_row: Row[*tuple[Any, ...]],
    flow: graph.Flow,
    candidates: Sequence[Candidate],
) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """Start runs of `flow` (its stored row: id, version) for the candidates that may
    enter; returns (contact id, run id) started and (contact id, reason) skipped."""
    now = clock.now()
    skipped: list[tuple[int, str]] = []
    rows: list[dict[str, Any]] = []
    for cand in candidates:
        reason = _refusal(conn, flow, cand, now)
        key = cand.key if cand.key is not None else entry_key(flow.entry, cand.event)
        if reason is None and key is None:
            reason = f"the event has no {flow.entry.key}"
        if reason is not None:
            skipped.append((cand.contact_id, reason))
            continue
        assert key is not None  # noqa: S101 - refused above
        if flow.entry.reentry == "always":
            key = f"{key}#{cand.event.id if cand.event else secrets.token_hex(6)}"
        rows.append(_run_row(flow_row, flow, cand, key, now))
    _number_entries(conn, flow_row.id, flow.entry.reentry, rows)
    inserted = _insert(conn, rows)
    entered = []
    for row in rows:
        run_id = inserted.pop(_identity(row), None)
        if run_id is None:
            skipped.append((row["contact_id"], "already in the flow"))
        else:
            entered.append((run_id, row))
    _entered(conn, flow_row.id, entered, now)
    return [(row["contact_id"], run_id) for run_id, row in entered], skipped


def _identity(row: Any) -> tuple[int, str, int]:
    """What makes a run one of its own (the entry index's columns, less the flow)."""
    return (int(row["contact_id"]), str(row["entry_key"]), int(row["entry_seq"]))


def _refusal(conn: Connection, flow: graph.Flow, cand: Candidate, now: datetime) -> str | None:
    """Why `cand` may not enter now (None: it may)."""
    settings = flow.settings
    if settings.active_from is not None and now < settings.active_from:
        return "the flow is not active yet"
    if settings.active_until is not None and now >= settings.active_until:
        return "the flow is no longer active"
    if flow.entry.filter is not None:
        snap = snapshot.load(conn, cand.contact_id, flow.entry.filter, now)
        if not evaluate.evaluate(flow.entry.filter, snap, now=now, segments=_segments(conn)):
            return "the entry filter does not hold"
    return None


def _segments(conn: Connection) -> evaluate.SegmentCheck:
    from tidings.segments import membership

    return lambda key, contact_id: membership.is_member(conn, key, contact_id)


def _run_row(
    flow_row: Row[*tuple[Any, ...]], flow: graph.Flow, cand: Candidate, key: str, now: datetime
) -> dict[str, Any]:
    trigger: dict[str, Any] = {"source": cand.source}
    if cand.event is not None:
        e = cand.event
        at = e.timestamp.isoformat()
        trigger |= {"event_id": e.id, "name": e.name, "at": at, "properties": dict(e.properties)}
    elif cand.properties:
        trigger["properties"] = dict(cand.properties)
    return {
        "flow_id": flow_row.id,
        "version": flow_row.version,
        "contact_id": cand.contact_id,
        "entry_key": key,
        "entry_seq": 0,
        "status": "active",
        "step_id": flow.start,
        "next_at": cand.due or now,
        "state": {"trigger": trigger},
        "entered_at": now,
        "updated_at": now,
    }


def _number_entries(
    conn: Connection, flow_id: int, reentry: str, rows: list[dict[str, Any]]
) -> None:
    """`after_exit`: each new run is numbered after the contact's earlier runs (a live
    one still blocks it through the live index). `once` and `always` stay at 0."""
    if reentry != "after_exit" or not rows:
        return
    pairs = sorted({(r["contact_id"], r["entry_key"]) for r in rows})
    counts: dict[tuple[int, str], int] = {}
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        query = (
            select(_r.c.contact_id, _r.c.entry_key, func.max(_r.c.entry_seq))
            .where(_r.c.flow_id == flow_id, tuple_(_r.c.contact_id, _r.c.entry_key).in_(chunk))
            .group_by(_r.c.contact_id, _r.c.entry_key)
        )
        counts |= {(cid, key): int(n) + 1 for cid, key, n in conn.execute(query)}
    for row in rows:
        row["entry_seq"] = counts.get((row["contact_id"], row["entry_key"]), 0)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> dict[tuple[int, str, int], int]:
    """Insert runs, skipping any the unique indexes refuse; the run ids started."""
    if not rows:
        return {}
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    columns = (_r.c.contact_id, _r.c.entry_key, _r.c.entry_seq, _r.c.id)
    statement = dialect_insert(_r).on_conflict_do_nothing().returning(*columns)
    return {_identity(row._mapping): int(row.id) for row in conn.execute(statement, rows)}


def _entered(
    conn: Connection, flow_id: int, runs: Sequence[tuple[int, dict[str, Any]]], now: datetime
) -> None:
    if not runs:
        return
    rows = [
        {
            "run_id": run_id,
            "flow_id": flow_id,
            "step_id": None,
            "action": history.ENTERED,
            "first": False,
            "detail": row["state"]["trigger"] | {"entry_key": row["entry_key"]},
            "at": now,
        }
        for run_id, row in runs
    ]
    conn.execute(insert(tables.flow_run_steps), rows)


def enrol_query(
    conn: Connection,
    clock: Clock,
    flow_row: Row[*tuple[Any, ...]],
    flow: graph.Flow,
    contact_ids: Select[Any],
    *,
    key: str = "",
    source: str = "api",
    properties: Mapping[str, Any] | None = None,
) -> int:
    """Start runs of `flow` for every contact `contact_ids` (a SELECT of contact ids) names
    that may enter, all with entry key `key`, in two set-based statements (the runs, then
    their `entered` history): the way in for a million contacts at once (API bulk,
    a schedule over a segment). Same rules as `enrol`; returns the runs started."""
    now = clock.now()
    settings = flow.settings
    if (settings.active_from is not None and now < settings.active_from) or (
        settings.active_until is not None and now >= settings.active_until
    ):
        return 0
    if flow.entry.reentry == "always":
        key = f"{key}#{secrets.token_hex(6)}"  # the contact's own run, as `enrol` gives it
    trigger: dict[str, Any] = {"source": source}
    if properties:
        trigger["properties"] = dict(properties)
    who: ColumnElement[bool] = _c.c.id.in_(contact_ids)
    if flow.entry.filter is not None:
        from tidings.segments import membership

        dialect = conn.dialect.name
        rule = conditions_sql.compile(
            flow.entry.filter, now=now, dialect=dialect, segments=membership.resolver(conn)
        )
        who = and_(who, rule)
    runs = select(
        literal(flow_row.id, BigInteger()),
        literal(flow_row.version, Integer()),
        _c.c.id,
        literal(key, String()),
        _entry_seq(flow_row.id, flow.entry.reentry, key),
        literal("active", String()),
        literal(flow.start, String()),
        literal(now, UTCDateTime()),
        literal({"trigger": trigger}, _r.c.state.type),
        literal(now, UTCDateTime()),
        literal(now, UTCDateTime()),
    ).where(who)
    columns = ["flow_id", "version", "contact_id", "entry_key", "entry_seq", "status"]
    columns += ["step_id", "next_at", "state", "entered_at", "updated_at"]
    detail = trigger | {"entry_key": key}
    if conn.dialect.name == "postgresql":
        return _insert_pg(conn, flow_row.id, columns, runs, detail, now)
    return _insert_sqlite(conn, flow_row.id, columns, runs, detail, now)


def _entry_seq(flow_id: int, reentry: str, key: str) -> ColumnElement[int]:
    """`after_exit`: after the contact's earlier runs with this key; otherwise 0."""
    if reentry != "after_exit":
        return literal(0, Integer())
    earlier = _r.alias("earlier")
    return (
        select(func.coalesce(func.max(earlier.c.entry_seq) + 1, 0))
        .where(
            earlier.c.flow_id == flow_id,
            earlier.c.contact_id == _c.c.id,
            earlier.c.entry_key == key,
        )
        .scalar_subquery()
    )


def _entered_select(
    source: Any, flow_id: int, detail: dict[str, Any], now: datetime
) -> Select[Any]:
    """The `entered` history row of each run in `source` (a table or CTE with `id`)."""
    return select(
        source.c.id,
        literal(flow_id, BigInteger()),
        null(),
        literal(history.ENTERED, String()),
        false(),
        literal(detail, _s.c.detail.type),
        literal(now, UTCDateTime()),
    )


_HISTORY = ["run_id", "flow_id", "step_id", "action", "first", "detail", "at"]


def _insert_pg(
    conn: Connection,
    flow_id: int,
    columns: list[str],
    runs: Select[Any],
    detail: dict[str, Any],
    now: datetime,
) -> int:
    """One statement: the runs (skipping those the unique indexes refuse) and, from what
    that insert returns, their history."""
    started = (
        postgresql.insert(_r)
        .from_select(columns, runs)
        .on_conflict_do_nothing()
        .returning(_r.c.id)
        .cte("started")
    )
    entered = insert(_s).from_select(_HISTORY, _entered_select(started, flow_id, detail, now))
    return int(conn.execute(entered.execution_options(preserve_rowcount=True)).rowcount)


def _insert_sqlite(
    conn: Connection,
    flow_id: int,
    columns: list[str],
    runs: Select[Any],
    detail: dict[str, Any],
    now: datetime,
) -> int:
    """SQLite has one writer and never reuses a run id: the runs this insert starts are
    exactly those above the highest id before it."""
    before = conn.execute(select(func.coalesce(func.max(_r.c.id), 0))).scalar_one()
    conn.execute(sqlite.insert(_r).from_select(columns, runs).on_conflict_do_nothing())
    new = select(_r.c.id).where(_r.c.id > before).subquery()
    entered = insert(_s).from_select(_HISTORY, _entered_select(new, flow_id, detail, now))
    return int(conn.execute(entered.execution_options(preserve_rowcount=True)).rowcount)


def enrol_api(
    conn: Connection,
    clock: Clock,
    flow_key: str,
    contact_ids: Sequence[int],
    properties: Mapping[str, Any],
) -> dict[str, Any]:
    """`POST /v1/flows/{key}/enrol`: start runs for existing contacts of an active flow."""
    flow_row = store.find(conn, flow_key)
    if flow_row.status != "active":
        raise errors.Conflict(
            f"Flow {flow_key!r} is {flow_row.status}; only an active flow enrols."
        )
    if not 0 < len(contact_ids) <= MAX_API_CONTACTS:
        raise errors.InvalidInput.field("contact_ids", f"must hold 1 to {MAX_API_CONTACTS} ids")
    known = set(conn.scalars(select(_c.c.id).where(_c.c.id.in_(sorted(set(contact_ids))))))
    missing = [
        errors.FieldError(f"contact_ids[{i}]", "no such contact")
        for i, cid in enumerate(contact_ids)
        if cid not in known
    ]
    if missing:
        raise errors.InvalidInput(
            "; ".join(f"{m.field}: {m.message}" for m in missing), fields=missing
        )
    flow = store.graph(conn, flow_row.id, flow_row.version)
    props = dict(properties)
    key = _api_key(props, flow)
    if key is None:
        raise errors.InvalidInput.field(f"properties.{flow.entry.key}", "the flow is keyed by it")
    candidates = [
        Candidate(cid, key=key, properties=props, source="api")
        for cid in dict.fromkeys(contact_ids)
    ]
    started, skipped = enrol(conn, clock, flow_row, flow, candidates)
    return {
        "enrolled": [{"contact_id": cid, "run_id": run_id} for cid, run_id in started],
        "skipped": [{"contact_id": cid, "reason": reason} for cid, reason in skipped],
    }


def _api_key(properties: Mapping[str, Any], flow: graph.Flow) -> str | None:
    """A keyed flow's key from the enrolment's properties (`properties.cart_id`)."""
    event = EventInfo(0, "", datetime.min.replace(tzinfo=UTC), properties, {})
    return entry_key(flow.entry, event)
