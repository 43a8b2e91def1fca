"""Reading the event log in commit order, from a durable cursor, one worker at a time.

A cursor is a row of `worker_cursors` holding the (tx, id) of the last event a consumer
has handled. The consumer claims it, reads the next events after it and advances it, all
in the transaction that applies those events: a crash re-applies nothing and loses nothing.

Ordering. SQLite has one writer at a time and never reuses an id (AUTOINCREMENT), so ids
grow in commit order and `id > position` is enough. On PostgreSQL a transaction that took
a lower id can commit after one with a higher id; reading by id alone would skip it. There
each event carries the id of the transaction that wrote it (`tx`), and we only read events
of transactions older than the snapshot's `xmin`: every one of those has finished, so no
event committed later can sort before the cursor. Reading in (tx, id) order from there is
gap-free. The price: one long-running *writing* transaction anywhere holds back the log
until it ends (read-only transactions do not, as they have no transaction id).

Locking. Claiming takes the cursor row with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so a
second worker gets `None` at once instead of waiting; on SQLite the engine's
`BEGIN IMMEDIATE` already lets only one writer in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Select,
    and_,
    exists,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from tidings.clock import Clock
from tidings.db import tables

#: A row of the log as `read` returns it.
EventRow = Row[*tuple[Any, ...]]

#: The cursor of the worker that applies events to contacts (identity, profiles).
EVENTS = "events"

#: Columns a consumer usually needs; pass your own to `read` for others.
EVENT_COLUMNS = (
    tables.events.c.id,
    tables.events.c.tx,
    tables.events.c.type,
    tables.events.c.user_id,
    tables.events.c.anonymous_id,
    tables.events.c.properties,
    tables.events.c.context,
    tables.events.c.timestamp,
)


@dataclass(frozen=True, order=True)
class Position:
    """A place in the log: after the event `id` written by transaction `tx` (0 on SQLite)."""

    tx: int = 0
    id: int = 0

    @classmethod
    def of(cls, row: EventRow) -> Position:
        """The position just after an event row read with `read` (which includes tx, id)."""
        tx = row._mapping["tx"]
        return cls(int(tx) if tx is not None else 0, int(row._mapping["id"]))


def claim(conn: Connection, clock: Clock, name: str = EVENTS) -> Position | None:
    """Lock the cursor `name` for this transaction and return where it stands, creating it
    at the start of the log the first time; `None` when another worker holds it."""
    is_pg = conn.dialect.name == "postgresql"
    cursors = tables.worker_cursors
    query = select(cursors.c.tx, cursors.c.position).where(cursors.c.name == name)
    if is_pg:
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is not None:
        return Position(int(row.tx), int(row.position))
    if is_pg:
        if conn.execute(select(exists().where(cursors.c.name == name))).scalar():
            return None  # it exists, so it is locked: another worker has it
        # Two workers creating it at once: the second must not wait on the first's insert.
        creating = func.pg_try_advisory_xact_lock(func.hashtextextended(f"cursor:{name}", 0))
        if not conn.execute(select(creating)).scalar():
            return None
    insert = (postgresql.insert if is_pg else sqlite.insert)(cursors)
    created = conn.execute(
        insert.values(name=name, tx=0, position=0, updated_at=clock.now())
        .on_conflict_do_nothing(index_elements=[cursors.c.name])
        .returning(cursors.c.name)
    ).first()
    # Lost a race to create it: the winner holds it now.
    return Position() if created is not None else None


def read(
    conn: Connection,
    after: Position,
    limit: int,
    *,
    until: Position | None = None,
    columns: Sequence[ColumnElement[Any]] = EVENT_COLUMNS,
) -> Sequence[EventRow]:
    """Up to `limit` events after `after` in commit order (tx, id). Rows always include
    `tx` and `id`. `until` stops at a position (inclusive), so a consumer can follow
    behind another one, e.g. only read events the identity worker has already applied."""
    events = tables.events
    wanted = list(columns) + [c for c in (events.c.tx, events.c.id) if c not in columns]
    query = select(*wanted).limit(limit)
    if conn.dialect.name == "postgresql":
        key = tuple_(events.c.tx, events.c.id)
        query = query.where(
            events.c.tx < _snapshot_xmin(),
            key > tuple_(literal(after.tx), literal(after.id)),
        ).order_by(events.c.tx, events.c.id)
        if until is not None:
            query = query.where(key <= tuple_(literal(until.tx), literal(until.id)))
        return _walking_the_index(conn, query)
    query = query.where(events.c.id > after.id).order_by(events.c.id)
    if until is not None:
        query = query.where(events.c.id <= until.id)
    return conn.execute(query).all()


def _walking_the_index(conn: Connection, query: Select[Any]) -> Sequence[EventRow]:
    """PostgreSQL: run `query` as an ordered scan of the (tx, id) index that stops at its
    LIMIT. The planner cannot know how many events lie beyond the cursor (it compares
    with the snapshot's xmin, known only at run time); when its statistics are older
    than the tail (after a burst of ingest, before autovacuum analyses the table), it
    picks a bitmap scan of the *whole* tail and a sort: 20x slower at 100,000 events
    behind, and worse the further behind the worker is, just when it must catch up."""
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")  # ends with the transaction
    rows = conn.execute(query).all()
    conn.exec_driver_sql("RESET enable_bitmapscan")  # the rest of it plans as usual
    return rows


def wait_for_writers(conn: Connection, timeout: float) -> bool:
    """PostgreSQL: wait up to `timeout` seconds until the transactions that hold back
    committed events (older writers still running, anywhere on the server) have ended, so
    the next `read` sees every event committed so far. Call it before anything that takes
    a transaction id (like `claim`). True when nothing is held back any more."""
    if conn.dialect.name != "postgresql":
        return True
    events = tables.events
    newest = conn.execute(
        select(func.max(events.c.tx)).where(events.c.tx >= _snapshot_xmin())
    ).scalar()
    deadline = time.monotonic() + timeout
    while newest is not None:
        if conn.execute(select(_snapshot_xmin())).scalar_one() > newest:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _snapshot_xmin() -> ColumnElement[int]:
    """Oldest transaction still running when this statement's snapshot was taken."""
    return literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint", BigInteger())


def advance(conn: Connection, clock: Clock, to: Position, name: str = EVENTS) -> None:
    """Move the claimed cursor `name` to `to` (in the transaction that claimed it)."""
    cursors = tables.worker_cursors
    conn.execute(
        update(cursors)
        .where(cursors.c.name == name)
        .values(tx=to.tx, position=to.id, updated_at=clock.now())
    )


def position(conn: Connection, name: str = EVENTS) -> Position:
    """Where the cursor `name` stands, without locking it (the start if it does not exist)."""
    cursors = tables.worker_cursors
    row = conn.execute(
        select(cursors.c.tx, cursors.c.position).where(cursors.c.name == name)
    ).first()
    return Position(int(row.tx), int(row.position)) if row is not None else Position()


def pending(conn: Connection, name: str = EVENTS) -> int:
    """How many committed events the cursor `name` has not reached yet (for metrics)."""
    at = position(conn, name)
    events = tables.events
    if conn.dialect.name == "postgresql":
        behind = and_(
            events.c.tx < _snapshot_xmin(),
            tuple_(events.c.tx, events.c.id) > tuple_(literal(at.tx), literal(at.id)),
        )
    else:
        behind = events.c.id > at.id
    return int(conn.execute(select(func.count()).where(behind)).scalar_one())
