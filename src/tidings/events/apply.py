"""The worker task that applies the event log to contacts: who each event belongs to
(creating and merging contacts), and what identify traits say about them.

Each call claims the `events` cursor, reads the next batch in commit order, applies it and
advances the cursor in one transaction, so every event is applied exactly once. An event
that cannot be applied in full (bad traits, two known users) is applied as far as it can
be and logged, never left stuck. The rules are in docs/identity.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, case, text, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import NullType

from tidings import errors
from tidings.clock import Clock
from tidings.config import Settings
from tidings.contacts import fields, identity
from tidings.db import tables
from tidings.db.types import UTCDateTime
from tidings.events import cursor

log = logging.getLogger(__name__)

#: PostgreSQL: how long a round waits for older writers still running, so that events
#: committed before it started are applied by it rather than by the next round.
_WAIT_FOR_WRITERS_SECONDS = 1.0

_events = tables.events
#: What the rules read of each event: not the (large) properties of a track, and of its
#: context only `context.traits`; the timestamp as the driver returns it (converted only
#: for the events whose time matters, see `parse`).
EVENT_COLUMNS = (
    _events.c.id,
    _events.c.tx,
    _events.c.type,
    _events.c.user_id,
    _events.c.anonymous_id,
    type_coerce(_events.c.timestamp, NullType()).label("timestamp"),
    case((_events.c.type.in_(("identify", "alias")), _events.c.properties), else_=None).label(
        "properties"
    ),
    _events.c.context["traits"].label("context_traits"),
    _events.c.contact_id,
)


def process_pending(engine: Engine, clock: Clock, settings: Settings) -> int:
    """Apply events appended since the last call; returns how many were applied."""
    with engine.begin() as conn:
        cursor.wait_for_writers(conn, _WAIT_FOR_WRITERS_SECONDS)
        at = cursor.claim(conn, clock, cursor.EVENTS)
        if at is None:
            return 0  # another worker is applying events
        rows = cursor.read(conn, at, settings.worker_batch_size, columns=EVENT_COLUMNS)
        if not rows:
            return 0
        # Events Tidings writes itself (Segment Entered/Left) carry their contact already.
        apply_events(conn, clock, [row for row in rows if row.contact_id is None])
        cursor.advance(conn, clock, cursor.Position.of(rows[-1]), cursor.EVENTS)
    return len(rows)


@dataclass
class Event:
    """What the identity rules need from one event row."""

    id: int
    type: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    previous_id: str | None = None
    email: str | None = None
    changes: fields.ContactChanges = field(default_factory=fields.ContactChanges)

    def may_change_contacts(self) -> bool:
        """Whether applying it may write to a stored contact, not only point at one."""
        linking = self.user_id is not None and self.anonymous_id is not None
        return self.type in ("identify", "alias") or linking or self.email is not None


def apply_events(conn: Connection, clock: Clock, rows: Sequence[cursor.EventRow]) -> None:
    """Resolve (and update) the contact of each event row, in order, then record it as
    `events.contact_id`. Rows are read with `EVENT_COLUMNS` (or `cursor.EVENT_COLUMNS`).

    Most events only need linking (a track from a known user): those stay rows, and once
    their ids are looked up they cost two dict look-ups (`Identities.settled`). Events that
    may change contacts are parsed and go through `apply_one`."""
    if not rows:
        return
    names = rows[0]._fields
    at_id, at_type, at_user, at_anon = map(names.index, ("id", "type", "user_id", "anonymous_id"))
    at_traits = names.index("context_traits") if "context_traits" in names else None
    items = [
        row if _only_links(row, at_type, at_traits) else parse(row, conn.dialect) for row in rows
    ]
    parsed = [e for e in items if isinstance(e, Event)]
    people = identity.Identities(conn, clock)
    people.preload(
        {i for row in rows if (i := row[at_user])}
        | {e.previous_id for e in parsed if e.previous_id},
        {i for row in rows if (i := row[at_anon])}
        | {e.previous_id for e in parsed if e.previous_id},
        {e.email for e in parsed if e.email},
    )
    changing = [e for e in parsed if e.may_change_contacts()]
    linking = [  # both ids, not (yet) of one contact: a merge, or a new anonymous id
        (row[at_user], row[at_anon])
        for row in rows
        if row[at_user] and row[at_anon] and people.settled(row[at_user], row[at_anon]) is None
    ]
    people.hold(
        {i for e in changing for i in (e.user_id, e.previous_id) if i} | {u for u, _ in linking},
        {i for e in changing for i in (e.anonymous_id, e.previous_id) if i}
        | {a for _, a in linking},
        {e.email for e in changing if e.email},
    )
    owners: list[tuple[int, identity.Found]] = []
    for item in items:
        if not isinstance(item, Event):
            found = people.settled(item[at_user], item[at_anon])
            if found is not None:
                owners.append((item[at_id], found))
                continue
            item = parse(item, conn.dialect)
        try:
            contact = apply_one(people, item)
        except SQLAlchemyError:
            raise  # the transaction is lost: the whole batch is retried
        except Exception:
            log.exception("event not applied", extra={"event_id": item.id})
            continue
        if contact is not None:
            owners.append((item.id, contact))
    people.flush()
    assign(conn, [(event_id, people.contact_id(found)) for event_id, found in owners])


def _only_links(row: cursor.EventRow, at_type: int, at_traits: int | None) -> bool:
    """Whether the event says nothing about its contact (a track, page, screen or group
    without an email in `context.traits`): it only needs its contact found. `at_*`: the
    positions of `type` and `context_traits` (None: the row has the whole `context`)."""
    if row[at_type] in ("identify", "alias"):
        return False
    if at_traits is not None:
        traits = row[at_traits]
    else:
        traits = _mapping(row._mapping["context"]).get("traits")
    return traits is None or not isinstance(_mapping(traits).get("email"), str)


def apply_one(people: identity.Identities, event: Event) -> identity.Contact | None:
    """Find the event's contact and apply what it says about them; None when it names no
    one (ingest refuses those, so only hand-written rows get here)."""
    if not (event.user_id or event.anonymous_id):
        log.warning("event names no user; skipped", extra={"event_id": event.id})
        return None
    found = people.resolve(
        event.user_id,
        event.anonymous_id,
        previous_id=event.previous_id,
        email=event.email,
        claims_email=event.type == "identify",
        at=event.timestamp,
    )
    changes = event.changes
    if changes.profile.get("email") is not None and not found.email_ok:
        log.info("email belongs to another known contact; not set", extra={"event_id": event.id})
        changes = fields.ContactChanges(
            {k: v for k, v in changes.profile.items() if k != "email"}, changes.attributes
        )
    if event.type == "identify":
        stamp = None if found.stale else event.timestamp
        people.update(found.contact, changes, fill_only=found.stale, traits_at=stamp)
    elif not changes.is_empty():
        people.update(found.contact, changes, fill_only=True)
    return found.contact


def parse(row: cursor.EventRow, dialect: Dialect) -> Event:
    """An `Event` from a row: identify traits (with `context.traits` under them) as profile
    changes; for other events only an email in `context.traits`, which fills an empty one."""
    m = row._mapping
    properties = _mapping(m["properties"])
    if "context_traits" in m:
        context_traits = _mapping(m["context_traits"])
    else:
        context_traits = _mapping(_mapping(m["context"]).get("traits"))
    timestamp = _TIMESTAMP.process_result_value(m["timestamp"], dialect)  # read unconverted
    assert timestamp is not None  # noqa: S101 - the column is NOT NULL
    event = Event(int(m["id"]), str(m["type"]), m["user_id"], m["anonymous_id"], timestamp)
    if event.type == "identify":
        event.changes = traits_to_changes({**context_traits, **properties}, event.id)
        event.email = event.changes.profile.get("email")
    elif event.type == "alias" and isinstance(properties.get("previousId"), str | int):
        event.previous_id = str(properties["previousId"]) or None
    if event.type != "identify" and isinstance(context_traits.get("email"), str):
        try:
            event.email = fields.email(context_traits["email"], "context.traits.email")
        except errors.InvalidInput:
            log.info("invalid email in context.traits ignored", extra={"event_id": event.id})
        else:
            event.changes = fields.ContactChanges({"email": event.email})
    return event


def traits_to_changes(traits: Mapping[str, Any], event_id: int = 0) -> fields.ContactChanges:
    """`fields.from_traits`, except that traits failing validation are skipped (and logged)
    rather than failing the event: ingest validates them too, this is the safety net."""
    try:
        return fields.from_traits(traits, where="")
    except errors.InvalidInput as exc:
        bad = {problem.field for problem in exc.fields}
        log.warning("invalid traits skipped", extra={"event_id": event_id, "problems": exc.message})
    dropped = {key for key in traits if fields.TRAIT_ALIASES.get(fields.alias_key(key)) in bad}
    if bad & {"first_name", "last_name"}:
        dropped.add("name")
    if "country" in bad:
        dropped.add("address")
    kept = {k: v for k, v in traits.items() if k not in dropped}
    try:
        changes = fields.from_traits(kept, where="")
    except errors.InvalidInput:  # a field that depends on another (phone on country)
        changes = fields.ContactChanges(attributes=dict(kept))
        for key in list(changes.attributes):
            if fields.TRAIT_ALIASES.get(fields.alias_key(key)) is not None:
                del changes.attributes[key]
    # `name` and `address` are attributes too; keep them as such
    changes.attributes.update({k: traits[k] for k in dropped & {"name", "address"} if k in traits})
    return changes


def assign(conn: Connection, owners: Sequence[tuple[int, int | None]]) -> None:
    """Record each event's contact: one UPDATE for the whole batch, joined to the
    (event id, contact id) pairs passed as arrays (PostgreSQL) or a JSON object (SQLite)."""
    if not owners:
        return
    if conn.dialect.name == "postgresql":
        # array literals: psycopg adapts one string rather than thousands of numbers
        event_ids, contact_ids = zip(*owners, strict=True)
        conn.execute(
            _ASSIGN_PG, {"event_ids": _array(event_ids), "contact_ids": _array(contact_ids)}
        )
    else:
        pairs = {str(event_id): contact_id for event_id, contact_id in owners}
        conn.execute(_ASSIGN_SQLITE, {"owners": orjson.dumps(pairs).decode()})


def _array(numbers: Sequence[int | None]) -> str:
    """A PostgreSQL array literal of integers (None is NULL)."""
    return "{" + ",".join("NULL" if n is None else str(int(n)) for n in numbers) + "}"


_ASSIGN_PG = text(
    "UPDATE events SET contact_id = o.contact_id"
    " FROM unnest(CAST(:event_ids AS bigint[]), CAST(:contact_ids AS bigint[]))"
    " AS o(event_id, contact_id)"
    " WHERE events.id = o.event_id"
)
_ASSIGN_SQLITE = text(
    "UPDATE events SET contact_id = o.value"
    " FROM json_each(:owners) AS o"
    " WHERE events.id = CAST(o.key AS INTEGER)"
)


_TIMESTAMP = UTCDateTime()


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
