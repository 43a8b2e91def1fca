"""Plain factories for segment tests: contacts, events and the identity cursor."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from tidings.clock import FakeClock
from tidings.db import tables
from tidings.events import cursor

_seq = itertools.count(1)


def make_contact(conn: Connection, clock: FakeClock, **overrides: Any) -> int:
    n = next(_seq)
    now = clock.now()
    row = {
        "email": f"seg{n}@example.com",
        "external_id": f"user-{n}",
        "attributes": {},
        "created_at": now,
        "updated_at": now,
        **overrides,
    }
    return int(
        conn.execute(
            insert(tables.contacts).values(**row).returning(tables.contacts.c.id)
        ).scalar_one()
    )


def add_event(
    conn: Connection,
    clock: FakeClock,
    contact_id: int,
    name: str,
    at: datetime | None = None,
    **properties: Any,
) -> None:
    now = clock.now()
    conn.execute(
        insert(tables.events).values(
            message_id=f"test-{next(_seq)}",
            type="track",
            name=name,
            contact_id=contact_id,
            properties=properties,
            context={},
            timestamp=at or now,
            received_at=now,
        )
    )


def identity_caught_up(engine: Engine, clock: FakeClock) -> None:
    """Move the identity worker's cursor to the end of the log, as if it had applied it."""
    with engine.begin() as conn:
        at = cursor.claim(conn, clock, cursor.EVENTS)
        assert at is not None
        rows = cursor.read(conn, at, 1_000_000)
        if rows:
            cursor.advance(conn, clock, cursor.Position.of(rows[-1]), cursor.EVENTS)


def segment_events(conn: Connection) -> list[tuple[str, int, str | None, dict[str, Any]]]:
    """(name, contact id, user id, properties) of every Segment Entered/Left event, in order."""
    e = tables.events
    rows = conn.execute(
        select(e.c.name, e.c.contact_id, e.c.user_id, e.c.properties)
        .where(e.c.source == "tidings")
        .order_by(e.c.id)
    )
    return [(r.name, r.contact_id, r.user_id, r.properties) for r in rows]


def members(conn: Connection, key: str) -> set[int]:
    s, m = tables.segments, tables.segment_memberships
    query = select(m.c.contact_id).join(s, s.c.id == m.c.segment_id).where(s.c.key == key)
    return set(conn.execute(query).scalars())
