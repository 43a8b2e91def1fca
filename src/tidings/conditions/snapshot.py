"""What the Python evaluator knows about one contact: a plain snapshot of its profile,
custom attributes, tags, list statuses and the events a condition can look at.

`load` reads it with a handful of indexed queries and bounds the events it reads: only the
names the condition mentions, no later than `now`, no earlier than the widest window that
needs them, and at most `max_events` (more is an error, never a silently wrong answer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from tidings import errors
from tidings.conditions import model
from tidings.conditions.nodes import Condition, Event, walk
from tidings.db import tables

MAX_EVENTS = 50_000


@dataclass(frozen=True)
class EventFact:
    """One event of the contact's log."""

    id: int
    name: str
    timestamp: datetime
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """One contact as conditions see it. `profile` holds the typed columns
    (`model.PROFILE_COLUMNS`, None when empty); `lists` maps list keys to statuses."""

    contact_id: int
    profile: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    lists: Mapping[str, str] = field(default_factory=dict)
    events: tuple[EventFact, ...] = ()


def load(
    conn: Connection,
    contact_id: int,
    condition: Condition,
    now: datetime,
    *,
    max_events: int = MAX_EVENTS,
) -> Snapshot:
    """The snapshot `condition` needs to be evaluated for `contact_id` at `now`.
    `NotFound` when there is no such contact."""
    c = tables.contacts
    columns = [c.c[name] for name in model.PROFILE_COLUMNS]
    row = conn.execute(select(c.c.attributes, *columns).where(c.c.id == contact_id)).first()
    if row is None:
        raise errors.NotFound(f"There is no contact {contact_id}.")
    t = tables.contact_tags
    tags = conn.scalars(select(t.c.tag).where(t.c.contact_id == contact_id)).all()
    m, lst = tables.list_memberships, tables.lists
    memberships = conn.execute(
        select(lst.c.key, m.c.status)
        .join(lst, lst.c.id == m.c.list_id)
        .where(m.c.contact_id == contact_id)
    ).all()
    return Snapshot(
        contact_id=contact_id,
        profile={name: row._mapping[name] for name in model.PROFILE_COLUMNS},
        attributes=row.attributes or {},
        tags=frozenset(tags),
        lists={key: status for key, status in memberships},
        events=_events(conn, contact_id, condition, now, max_events),
    )


def _events(
    conn: Connection, contact_id: int, condition: Condition, now: datetime, max_events: int
) -> tuple[EventFact, ...]:
    windows = event_windows(condition, now)
    if not windows:
        return ()
    e = tables.events
    by_name: list[ColumnElement[bool]] = []
    for name, since in windows.items():
        by_name.append(
            e.c.name == name if since is None else and_(e.c.name == name, e.c.timestamp >= since)
        )
    query = (
        select(e.c.id, e.c.name, e.c.timestamp, e.c.properties)
        .where(e.c.contact_id == contact_id, e.c.timestamp <= now, or_(*by_name))
        .order_by(e.c.timestamp, e.c.id)
        .limit(max_events + 1)
    )
    rows = conn.execute(query).all()
    if len(rows) > max_events:
        raise errors.TidingsError(
            f"Contact {contact_id} has more than {max_events} events this condition looks at; "
            "narrow it with `within`."
        )
    return tuple(EventFact(r.id, r.name, r.timestamp, r.properties or {}) for r in rows)


def event_windows(condition: Condition, now: datetime) -> dict[str, datetime | None]:
    """Each event name the condition looks at, and the earliest time it needs (None: all
    history, as counts without a window and `first` do)."""
    out: dict[str, datetime | None] = {}
    for node in walk(condition):
        if not isinstance(node, Event):
            continue
        since = None
        if node.within is not None:
            since = now - node.within
        elif node.between is not None:
            since = node.between[0]
        if node.name in out and (out[node.name] is None or since is None):
            out[node.name] = None
        else:
            earlier = out.get(node.name)
            out[node.name] = min(since, earlier) if since and earlier else since
    return out
