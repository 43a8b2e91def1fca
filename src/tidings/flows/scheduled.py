"""Triggers that no single event fires: a date attribute's anniversary (birthday, signup
anniversary), inactivity, a score threshold and a recurring schedule over a segment.

The worker task `check_due` looks at each active flow with such a trigger when its
`next_check_at` comes (every `flow_check_seconds`, or at the next occurrence of a
schedule), finds the contacts that qualify with one query and enrols them. The entry key
makes each qualification count once: the anniversary's year, the spell of inactivity (the
last activity's event id), the schedule's occurrence. Date triggers enrol up to a day ahead
with the run due at the exact local time, so a check every few minutes is on time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    String,
    and_,
    cast,
    exists,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import tables
from tidings.flows import enrolment, graph, local_time, store

_f, _c, _e = tables.flows, tables.contacts, tables.events
CHUNK = 5000
#: Flows checked per call, so a worker asked to stop is not held up for long.
MAX_FLOWS = 10
#: How far ahead a date trigger enrols (the run waits for its exact local time).
LOOK_AHEAD = timedelta(days=1)


def check_due(engine_: Engine, clock: Clock, settings: Settings) -> int:
    """Check the flows whose scheduled trigger is due (up to `MAX_FLOWS` per call; at
    least 1 is returned when more are due); returns the runs started."""
    started = 0
    for _ in range(MAX_FLOWS):
        with engine_.begin() as conn:
            row = _claim_due(conn, clock.now())
            if row is None:
                return started
            started += check_flow(conn, clock, settings, row)
    return max(started, 1)


def _claim_due(conn: Connection, now: datetime) -> Row[*tuple[Any, ...]] | None:
    query = (
        select(_f.c.id, _f.c.key, _f.c.version, _f.c.status, _f.c.checked_at)
        .where(_f.c.status == "active", _f.c.next_check_at <= now)
        .order_by(_f.c.next_check_at)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).first()


def check_flow(
    conn: Connection, clock: Clock, settings: Settings, row: Row[*tuple[Any, ...]]
) -> int:
    """Enrol whoever qualifies for this flow's trigger now and book the next check."""
    now = clock.now()
    flow = store.graph(conn, row.id, row.version)
    trigger = flow.trigger
    every = timedelta(seconds=settings.flow_check_seconds)
    next_check: datetime | None = now + every
    candidates: Iterator[list[enrolment.Candidate]]
    if isinstance(trigger, graph.ScoreReached):
        candidates = _score_reached(conn, trigger, row.checked_at)
    elif isinstance(trigger, graph.DateTrigger):
        candidates = _anniversaries(conn, trigger, now, settings.fallback_timezone)
    elif isinstance(trigger, graph.InactiveTrigger):
        candidates = _inactive(conn, trigger, now)
    elif isinstance(trigger, graph.ScheduleTrigger):
        candidates, next_check = _scheduled(conn, trigger, now, row.checked_at)
    else:
        candidates, next_check = iter(()), None
    started = 0
    for chunk in candidates:
        if not isinstance(trigger, graph.ScoreReached):
            chunk = _not_started(conn, row.id, chunk)
        got, _ = enrolment.enrol(conn, clock, row, flow, chunk)
        started += len(got)
    conn.execute(
        update(_f).where(_f.c.id == row.id).values(checked_at=now, next_check_at=next_check)
    )
    return started


def _not_started(
    conn: Connection, flow_id: int, chunk: list[enrolment.Candidate]
) -> list[enrolment.Candidate]:
    """The candidates whose qualification (the entry key: year, spell, occurrence) has not
    started a run of the flow yet. The entry rules alone would start another for the same
    birthday once the last one ended (`after_exit`), or at every check (`always`, whose
    keys get a `#` suffix)."""
    r = tables.flow_runs
    ids = sorted({cand.contact_id for cand in chunk})
    query = select(r.c.contact_id, r.c.entry_key).where(
        r.c.flow_id == flow_id, r.c.contact_id.in_(ids)
    )
    started = {(cid, key.partition("#")[0]) for cid, key in conn.execute(query)}
    return [cand for cand in chunk if (cand.contact_id, cand.key) not in started]


def _chunks(items: Sequence[enrolment.Candidate]) -> Iterator[list[enrolment.Candidate]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def _score_reached(
    conn: Connection, trigger: graph.ScoreReached, checked: datetime | None
) -> Iterator[list[enrolment.Candidate]]:
    """Contacts at or over the threshold whose profile changed since the last check."""
    query = select(_c.c.id).where(_c.c.score >= trigger.threshold).order_by(_c.c.id)
    if checked is not None:
        query = query.where(_c.c.updated_at >= checked)
    ids = conn.scalars(query)
    return _chunks([enrolment.Candidate(cid, key="", source="score") for cid in ids])


def _anniversaries(
    conn: Connection, trigger: graph.DateTrigger, now: datetime, fallback: str
) -> Iterator[list[enrolment.Candidate]]:
    """Contacts whose anniversary (shifted) falls within the look-ahead, due at its local
    time; the SQL narrows by month and day, Python decides exactly in each contact's zone."""
    days = _month_days(now, trigger.offset_days)
    value = _date_value(conn, trigger.attribute)
    query = select(_c.c.id, _c.c.timezone, value.label("value")).where(
        func.substr(cast(value, String), 6, 5).in_(days)
        if trigger.attribute != "created_at"
        else _month_day(conn, _c.c.created_at).in_(days)
    )
    out = []
    for row in conn.execute(query):
        tz = local_time.zone(row.timezone, fallback)
        due = local_time.anniversary(row.value, trigger.offset_days, trigger.at, tz, now)
        if due is None or due[0] > now + LOOK_AHEAD:
            continue
        instant, year = due
        out.append(enrolment.Candidate(row.id, key=str(year), due=max(instant, now), source="date"))
    return _chunks(out)


def _month_days(now: datetime, offset_days: int) -> list[str]:
    """The attribute's MM-DD that make an anniversary (shifted by the offset) fall within
    two days of now, in any zone; 02-29 goes with 02-28 (and 03-01) in every year."""
    days = {(now + timedelta(days=d - offset_days)).strftime("%m-%d") for d in range(-2, 3)}
    if days & {"02-28", "03-01"}:
        days.add("02-29")
    return sorted(days)


def _date_value(conn: Connection, attribute: str) -> Any:
    if attribute == "created_at":
        return _c.c.created_at
    if conn.dialect.name == "postgresql":
        # the column is generic JSON (JSONB only as a variant): coerce for `->>`
        return type_coerce(_c.c.attributes, JSONB)[attribute].astext
    return func.json_extract(_c.c.attributes, f'$."{attribute}"')


def _month_day(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "MM-DD")
    return func.strftime("%m-%d", column)


def _inactive(
    conn: Connection, trigger: graph.InactiveTrigger, now: datetime
) -> Iterator[list[enrolment.Candidate]]:
    """Contacts with none of the events for `days` (and at least that old); the key is
    the last such event's id, so activity followed by a new spell enrols again."""
    since = now - timedelta(days=trigger.days)
    named = and_(_e.c.contact_id == _c.c.id, _e.c.name.in_(trigger.events))
    last = select(func.coalesce(func.max(_e.c.id), 0)).where(named).scalar_subquery()
    query = (
        select(_c.c.id, last.label("last"))
        .where(_c.c.created_at <= since, ~exists().where(named, _e.c.timestamp > since))
        .order_by(_c.c.id)
    )
    rows = conn.execute(query).all()
    return _chunks(
        [enrolment.Candidate(r.id, key=f"after:{r.last}", source="inactive") for r in rows]
    )


def _scheduled(
    conn: Connection, trigger: graph.ScheduleTrigger, now: datetime, checked: datetime | None
) -> tuple[Iterator[list[enrolment.Candidate]], datetime | None]:
    """At each occurrence, the segment's members (everyone without a segment)."""
    found = local_time.schedule_occurrence(now, trigger.every, trigger.starting)
    if found is None:
        return iter(()), trigger.starting
    latest, following = found
    if checked is not None and latest <= checked:
        return iter(()), following
    if trigger.segment is None:
        ids = conn.scalars(select(_c.c.id).order_by(_c.c.id)).all()
    else:
        s, m = tables.segments, tables.segment_memberships
        ids = conn.scalars(
            select(m.c.contact_id)
            .join(s, s.c.id == m.c.segment_id)
            .where(s.c.key == trigger.segment)
            .order_by(m.c.contact_id)
        ).all()
    key = latest.isoformat()
    return _chunks([enrolment.Candidate(cid, key=key, source="schedule") for cid in ids]), following
