"""The worker task that keeps segment memberships current, without a timer-driven
recompute of everything:

- contacts touched by new events (read from the log behind the identity worker, under the
  cursor `segments`) are re-evaluated for every segment;
- contacts changed without an event (profile, tags, list status through the API) are found
  by `updated_at` since each segment's last check, and re-evaluated;
- a segment whose rule moves with time (event windows, `within_last`, anniversaries) is
  rebuilt in full once `segment_rebuild_seconds` have passed, so "no open in 90 days" takes
  in a contact on the right day though nothing happened.

Segments are handled dependencies first; the contacts that changed in one are re-evaluated
for the segments that refer to it in the same round."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, union

from tidings.clock import Clock
from tidings.conditions import model
from tidings.conditions.nodes import Attribute, Condition, Event, Profile, walk
from tidings.config import Settings
from tidings.db import tables
from tidings.events import cursor
from tidings.segments import dependencies, membership

#: The cursor this task reads the log with.
CURSOR = "segments"
#: Batches per call: a worker asked to stop finishes its round within a few of them.
MAX_BATCHES = 10
_RELATIVE_OPS = ("within_last", "within_next", "anniversary")
_e = tables.events


def refresh(engine: Engine, clock: Clock, settings: Settings) -> int:
    """Catch up with the log and bring every segment up to date; returns the membership
    changes made (events read are not counted, so a worker without segments stays idle).
    Each batch of events is one transaction."""
    changes = 0
    for _ in range(MAX_BATCHES):
        batch, done = _refresh_batch(engine, clock, settings)
        changes += done
        if batch < settings.worker_batch_size:
            return changes
    return max(changes, 1)  # more to read: come back at once


def _refresh_batch(engine: Engine, clock: Clock, settings: Settings) -> tuple[int, int]:
    """One batch: (events read, membership changes)."""
    with engine.begin() as conn:
        at = cursor.claim(conn, clock, CURSOR)
        if at is None:
            return 0, 0  # another worker is refreshing segments
        until = cursor.position(conn, cursor.EVENTS)
        columns = (_e.c.id, _e.c.tx, _e.c.contact_id, _e.c.name, _e.c.source)
        rows = cursor.read(conn, at, settings.worker_batch_size, until=until, columns=columns)
        touched = {r.contact_id for r in rows if r.contact_id is not None and not _own(r)}
        every = timedelta(seconds=settings.segment_rebuild_seconds)
        changes = refresh_segments(conn, clock, touched, every)
        if rows:
            cursor.advance(conn, clock, cursor.Position.of(rows[-1]), CURSOR)
    return len(rows), changes


def _own(row: Row[Any]) -> bool:
    """Segment Entered/Left events: their contacts are handled in the round that wrote them."""
    return row.source == membership.SOURCE and row.name in (membership.ENTERED, membership.LEFT)


def refresh_segments(
    conn: Connection, clock: Clock, touched: Collection[int], rebuild_every: timedelta
) -> int:
    """Bring every segment up to date for `touched` contacts, contacts changed since the
    segment's last check, and moved time windows; returns the membership changes."""
    now = clock.now()
    s = tables.segments
    rows = {r.key: r for r in conn.execute(select(s)).all()}
    graph = {key: dependencies.references(model.parse(r.rule, "rule")) for key, r in rows.items()}
    since = [r.checked_at for r in rows.values() if r.checked_at is not None]
    changed_profiles = _changed_since(conn, min(since)) if since else set()
    rebuilt: set[str] = set()
    changed: dict[str, set[int]] = {}
    total = 0
    for key in dependencies.order(sorted(rows), graph):
        row, refs = rows[key], [ref for ref, _ in graph[key]]
        if _rebuild_due(row, now, rebuild_every) or rebuilt.intersection(refs):
            n = membership.evaluate(conn, clock, row, None)
            total += n
            if n:
                rebuilt.add(key)
            continue
        ids = set(touched) | changed_profiles
        for ref in refs:
            ids |= changed.get(ref, set())
        changed[key] = membership.evaluate_contacts(conn, clock, row, ids)
        total += len(changed[key])
    return total


def _rebuild_due(row: Row[Any], now: datetime, every: timedelta) -> bool:
    """Never built, or built long enough ago that a time window may have moved."""
    if row.rebuilt_at is None:
        return True
    return moves_with_time(model.parse(row.rule, "rule")) and now - row.rebuilt_at >= every


def moves_with_time(condition: Condition) -> bool:
    """Whether the rule's answer can change as time passes with no data changing: events
    (they enter windows as their timestamps pass, leave them as windows move) and relative
    date tests."""
    for node in walk(condition):
        if isinstance(node, Event):
            return True
        if isinstance(node, Profile | Attribute):
            if any(t.op in _RELATIVE_OPS or isinstance(t.value, timedelta) for t in node.tests):
                return True
    return False


def _changed_since(conn: Connection, since: datetime) -> set[int]:
    """Contacts whose profile, tags or list statuses changed at or after `since` (no event
    is written for these). Deleted list memberships are not seen here."""
    c, m = tables.contacts, tables.list_memberships
    query = union(
        select(c.c.id).where(c.c.updated_at >= since),
        select(m.c.contact_id).where(m.c.updated_at >= since),
    )
    return set(conn.execute(query).scalars())
