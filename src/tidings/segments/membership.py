"""Materialised membership: a full rebuild of a segment, or a re-evaluation of some
contacts, as a handful of set-based statements.

One evaluation is one `INSERT INTO events ... SELECT` that writes a "Segment Entered" event
for each contact the rule now holds for that is not a member, and a "Segment Left" event
for each member it no longer holds for. The rule is evaluated once, in that statement;
the memberships are then brought in line from those very events (`DELETE ... WHERE
contact_id IN (left)`, `INSERT ... SELECT (entered)`), so the log and the stored set always
agree, in one transaction. Message ids are `segment:<id>:<contact>:<entered|left>:<n>`,
where `n` counts the segment's evaluations: deterministic and never reused.

`{segment: KEY}` in a rule reads the stored membership of KEY, so dependencies are
evaluated first (`dependencies.order`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    not_,
    null,
    select,
    union_all,
    update,
)

from tidings import errors
from tidings.clock import Clock
from tidings.conditions import model, sql
from tidings.db import tables
from tidings.db.types import Json, UTCDateTime
from tidings.segments import dependencies

ENTERED = "Segment Entered"
LEFT = "Segment Left"
#: The `source` of the events segments write.
SOURCE = "tidings"
#: Contact ids per statement when re-evaluating some contacts (bound parameters).
CHUNK = 500

_s, _m, _c, _e = tables.segments, tables.segment_memberships, tables.contacts, tables.events
_EVENT_COLUMNS = (
    "message_id",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "contact_id",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "source",
)


def resolver(conn: Connection) -> sql.SegmentResolver:
    """`{segment: KEY}` as the stored membership of KEY (NotFound when there is none)."""

    def members(key: str) -> Select[Any]:
        segment_id = conn.execute(select(_s.c.id).where(_s.c.key == key)).scalar()
        if segment_id is None:
            raise errors.NotFound(f"No segment with key {key!r}.")
        return select(_m.c.contact_id).where(_m.c.segment_id == segment_id)

    return members


def compile_rule(conn: Connection, rule: Any, now: datetime) -> ColumnElement[bool]:
    """A stored rule as a WHERE clause over contacts at `now`."""
    condition = model.parse(rule, "rule")
    return sql.compile(condition, now=now, dialect=conn.dialect.name, segments=resolver(conn))


def rebuild(conn: Connection, clock: Clock, key: str) -> int:
    """Rebuild segment `key` over every contact: first the segments it refers to, then it,
    then the segments that refer to it. Returns the membership changes of `key` itself."""
    graph = dependencies.load(conn)
    changes: dict[str, int] = {}
    for name in dependencies.order(dependencies.affected(key, graph), graph):
        changes[name] = evaluate(conn, clock, _row(conn, name), None)
    return changes[key]


def reevaluate(conn: Connection, clock: Clock, key: str, contact_ids: Collection[int]) -> set[int]:
    """Re-evaluate only `contact_ids` for segment `key` (and first for the segments it refers
    to); returns the contacts whose membership of `key` changed."""
    changed: set[int] = set()
    for name in dependencies.order([key], dependencies.load(conn)):
        changed = evaluate_contacts(conn, clock, _row(conn, name), contact_ids)
    return changed


def evaluate_contacts(
    conn: Connection, clock: Clock, segment: Row[Any], contact_ids: Collection[int]
) -> set[int]:
    """`evaluate` limited to `contact_ids`; the ids whose membership changed."""
    if not contact_ids:
        return set()
    ordered = sorted(contact_ids)
    scopes = [_c.c.id.in_(ordered[i : i + CHUNK]) for i in range(0, len(ordered), CHUNK)]
    before = _last_event_id(conn)
    if not evaluate(conn, clock, segment, scopes):
        return set()
    written = conn.execute(select(_e.c.contact_id).where(_written(segment.id, before)))
    return set(written.scalars())


def evaluate(
    conn: Connection,
    clock: Clock,
    segment: Row[Any],
    scopes: Iterable[ColumnElement[bool]] | None,
) -> int:
    """Evaluate `segment` over the contacts in each of `scopes` (all contacts when None):
    write the Entered/Left events, then bring the memberships in line with them. Marks the
    segment rebuilt (all contacts) or checked. Returns the membership changes."""
    now = clock.now()
    count = _next_evaluation(conn, segment.id, now, full=scopes is None)
    before = _last_event_id(conn)
    for scope in [None] if scopes is None else scopes:
        selects = [_changes(conn, segment, now, count, scope, entered) for entered in (True, False)]
        conn.execute(insert(_e).from_select(_EVENT_COLUMNS, union_all(*selects)))
    # rowcount of INSERT ... SELECT is not reliable on every driver: count what was written
    written = select(func.count()).where(_written(segment.id, before, "%", count))
    changes = int(conn.execute(written).scalar_one())
    if changes:
        left = select(_e.c.contact_id).where(_written(segment.id, before, "left", count))
        conn.execute(delete(_m).where(_m.c.segment_id == segment.id, _m.c.contact_id.in_(left)))
        entered = select(literal(segment.id), _e.c.contact_id, literal(now, UTCDateTime)).where(
            _written(segment.id, before, "entered", count)
        )
        conn.execute(insert(_m).from_select(["segment_id", "contact_id", "entered_at"], entered))
    return changes


def _changes(
    conn: Connection,
    segment: Row[Any],
    now: datetime,
    count: int,
    scope: ColumnElement[bool] | None,
    entered: bool,
) -> Select[Any]:
    """The Entered (or Left) events for contacts in `scope` whose membership is wrong."""
    holds = compile_rule(conn, segment.rule, now)
    member = exists().where(_m.c.segment_id == segment.id, _m.c.contact_id == _c.c.id)
    wrong = and_(holds, ~member) if entered else and_(not_(holds), member)
    word = "entered" if entered else "left"
    message_id = (
        literal(f"segment:{segment.id}:") + cast(_c.c.id, String) + literal(f":{word}:{count}")
    )
    properties = {"segment": segment.key, "segment_id": segment.id}
    return select(
        message_id,
        literal("track"),
        literal(ENTERED if entered else LEFT),
        _c.c.external_id,
        cast(null(), String),
        _c.c.id,
        literal(properties, Json),
        literal({}, Json),
        literal(now, UTCDateTime),
        literal(now, UTCDateTime),
        literal(SOURCE),
    ).where(wrong if scope is None else and_(scope, wrong))


def _written(
    segment_id: int, before: int, word: str = "%", count: int | None = None
) -> ColumnElement[bool]:
    """The events this segment's evaluation `count` (default: any) wrote after `before`."""
    pattern = f"segment:{segment_id}:%:{word}:{'%' if count is None else count}"
    return and_(_e.c.id > before, _e.c.message_id.like(pattern), _e.c.source == SOURCE)


def _last_event_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(_e.c.id), 0))).scalar_one())


def _next_evaluation(conn: Connection, segment_id: int, now: datetime, *, full: bool) -> int:
    """Count one more evaluation (locking the segment row on PostgreSQL, so two workers
    never evaluate one segment at once) and stamp it."""
    stamps: dict[str, Any] = {"checked_at": now}
    if full:
        stamps["rebuilt_at"] = now
    query = (
        update(_s)
        .where(_s.c.id == segment_id)
        .values(evaluations=_s.c.evaluations + 1, **stamps)
        .returning(_s.c.evaluations)
    )
    return int(conn.execute(query).scalar_one())


def _row(conn: Connection, key: str) -> Row[Any]:
    row = conn.execute(select(_s).where(_s.c.key == key)).first()
    if row is None:
        raise errors.NotFound(f"No segment with key {key!r}.")
    return row


def is_member(conn: Connection, key: str, contact_id: int) -> bool:
    """Whether `contact_id` is a stored member of segment `key`."""
    query = select(_m.c.contact_id).join(_s, _s.c.id == _m.c.segment_id)
    found = conn.execute(query.where(_s.c.key == key, _m.c.contact_id == contact_id)).first()
    return found is not None
