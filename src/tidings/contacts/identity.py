"""Recognising contacts from the identifiers events carry, and merging the duplicates.

A contact is known by its `external_id` (the site's `userId`), by any number of anonymous
ids (`anonymousId`, a device or browser) and by its email. `Identities` resolves those for
one batch of events: it looks each identifier up once, keeps new contacts and profile
changes in memory and writes them with a few set-based statements in `flush`.
`merge_contacts` folds one stored contact into another. The rules are in docs/identity.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Row,
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.expression import Executable

from tidings.clock import Clock
from tidings.contacts import fields
from tidings.db import tables

log = logging.getLogger(__name__)

contacts = tables.contacts
_CHUNK = 5000  # identifiers per IN (...) list; well under both engines' parameter limits
_COLUMNS = (*fields.PROFILE_FIELDS, "attributes", "score", "traits_at", "created_at")
_IDENTIFIERS = ("external_id", "email", "traits_at")  # enough to tell who is who


@dataclass(eq=False)
class Contact:
    """A contact as the worker sees it while applying one batch (`id` None until stored)."""

    id: int | None
    profile: dict[str, str | None]
    attributes: dict[str, Any] = field(default_factory=dict)
    score: int = 0
    traits_at: datetime | None = None
    created_at: datetime | None = None
    merged_into: Contact | None = None
    dirty: bool = False
    full: bool = True  # False: only its identifiers were read (see `Identities.hold`)
    stored_email: str | None = None  # the email the database has for it now

    @property
    def external_id(self) -> str | None:
        return self.profile.get("external_id")

    @property
    def email(self) -> str | None:
        return self.profile.get("email")

    def live(self) -> Contact:
        """This contact, or the one it has been merged into."""
        contact = self
        while contact.merged_into is not None:
            contact = contact.merged_into
        return contact

    def update(self, changes: fields.ContactChanges, *, fill_only: bool) -> None:
        """Set profile fields and merge attributes key by key (a None value clears one);
        with `fill_only`, only fields and keys the contact has no value for are written."""
        for name, value in changes.profile.items():
            current = self.profile.get(name)
            if name == "external_id" or value == current or (fill_only and current is not None):
                continue
            if value is None and fill_only:
                continue
            self.profile[name] = value
            self.dirty = True
        for key, value in changes.attributes.items():
            if fill_only and key in self.attributes:
                continue
            if value is None:
                self.dirty |= self.attributes.pop(key, None) is not None
            elif self.attributes.get(key) != value or key not in self.attributes:
                self.attributes[key] = value
                self.dirty = True


def fold(target: Contact, source: Contact) -> None:
    """Fold `source`'s profile into `target`: the target's values win, its empty fields are
    filled from the source, attributes merge key by key, scores add up."""
    for name in fields.PROFILE_FIELDS:
        if target.profile.get(name) is None and source.profile.get(name) is not None:
            target.profile[name] = source.profile[name]
    target.attributes = {**source.attributes, **target.attributes}
    target.score += source.score
    stamps = [t for t in (target.traits_at, source.traits_at) if t is not None]
    target.traits_at = max(stamps) if stamps else None
    if source.created_at and (target.created_at is None or source.created_at < target.created_at):
        target.created_at = source.created_at
    target.dirty = True


def mergeable(source: Contact, target: Contact) -> bool:
    """Two known users (different external ids) are never merged."""
    return source.external_id is None or source.external_id == target.external_id


def combined_status(ours: str, theirs: str) -> str:
    """A list status after a merge: an unsubscribe on either side stands (it is never
    overridden by the other contact's subscription); otherwise subscribed beats pending."""
    for status in ("unsubscribed", "subscribed"):
        if status in (ours, theirs):
            return status
    return "pending"


@dataclass(frozen=True)
class Resolution:
    """Who an event belongs to; whether its email may be written to that contact; whether
    the event is older than the contact's newest applied traits (then it only fills)."""

    contact: Contact
    email_ok: bool
    stale: bool


class Identities:
    """Finds, creates and merges contacts for one batch of events in one transaction.

    Every identifier is looked up once per batch (`preload` does them all in two queries);
    new contacts, new anonymous ids and profile changes are written by `flush`."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        self._index: dict[str, dict[str, Contact]] = {"external_id": {}, "email": {}, "anon": {}}
        self._looked_up: dict[str, set[str]] = {"external_id": set(), "email": set(), "anon": set()}
        self._stored: dict[int, Contact] = {}
        self._new: list[Contact] = []
        self._new_anonymous: dict[str, Contact] = {}
        self._touched: dict[int, Contact] = {}  # stored contacts changed in memory

    # -- lookups -------------------------------------------------------------------------

    def preload(
        self, external_ids: Iterable[str], anonymous_ids: Iterable[str], emails: Iterable[str]
    ) -> None:
        """Look up all these identifiers at once: who has them (their identifiers only)."""
        wanted = {
            "external_id": set(external_ids) - self._looked_up["external_id"],
            "email": set(emails) - self._looked_up["email"],
            "anon": set(anonymous_ids) - self._looked_up["anon"],
        }
        anon = tables.contact_anonymous_ids
        owners: dict[str, int] = {}
        for chunk in _chunks(sorted(wanted["anon"])):
            query = select(anon.c.anonymous_id, anon.c.contact_id).where(
                self._among(anon.c.anonymous_id, chunk)
            )
            owners.update({r.anonymous_id: int(r.contact_id) for r in self.conn.execute(query)})
        conditions: list[ColumnElement[bool]] = []
        for name in ("external_id", "email"):
            conditions += [self._among(contacts.c[name], c) for c in _chunks(sorted(wanted[name]))]
        ids = sorted(set(owners.values()) - set(self._stored))
        conditions += [self._among(contacts.c.id, chunk) for chunk in _chunks(ids)]
        if conditions:
            self._load(or_(*conditions), full=False)
        for anonymous_id, contact_id in owners.items():
            self._index["anon"][anonymous_id] = self._stored[contact_id]
        for kind, values in wanted.items():
            self._looked_up[kind] |= values

    def hold(
        self,
        external_ids: Iterable[str] = (),
        anonymous_ids: Iterable[str] = (),
        emails: Iterable[str] = (),
    ) -> None:
        """Read the whole stored profile of the contacts with these identifiers, locking
        them on PostgreSQL, ahead of changing them (one query for the batch instead of one
        per contact; whatever is changed without it is read then)."""
        self._hold(
            [
                *map(self.by_external_id, external_ids),
                *map(self.by_anonymous_id, anonymous_ids),
                *map(self.by_email, emails),
            ]
        )

    def _hold(self, found: Iterable[Contact | None]) -> None:
        ids = sorted({c.id for c in found if c is not None and c.id is not None and not c.full})
        for chunk in _chunks(ids):
            self._load(self._among(contacts.c.id, chunk), full=True)

    def _among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """`column IN (values)`; on PostgreSQL `= ANY(array)`, a few times faster to plan."""
        if self.conn.dialect.name != "postgresql":
            return column.in_(values)
        item = BigInteger() if column.name in ("id", "contact_id") else String()
        return column == any_(literal(list(values), ARRAY(item)))

    def _load(self, condition: ColumnElement[bool], *, full: bool) -> None:
        columns = (contacts.c[n] for n in (_COLUMNS if full else _IDENTIFIERS))
        query = select(contacts.c.id, *columns).where(condition)
        if full and self.conn.dialect.name == "postgresql":
            query = query.order_by(contacts.c.id).with_for_update(key_share=True)
        for row in self.conn.execute(query):
            contact = self._stored.get(row.id)
            if contact is None and not full:  # the common case, kept quick
                profile = {"external_id": row.external_id, "email": row.email}
                contact = Contact(row.id, profile, traits_at=row.traits_at, full=False)
                contact.stored_email = row.email
                self._stored[row.id] = contact
            elif contact is None or (full and not contact.full):
                contact = _from_row(row, contact)
                self._stored[row.id] = contact
            for kind in ("external_id", "email"):
                value = contact.profile.get(kind)
                current = self._index[kind].get(value) if value else None
                if value and (current is None or current.live().profile.get(kind) != value):
                    self._index[kind][value] = contact

    def _find(self, kind: str, value: str) -> Contact | None:
        if value not in self._looked_up[kind]:
            wanted = {"external_id": [], "anon": [], "email": [], kind: [value]}
            self.preload(wanted["external_id"], wanted["anon"], wanted["email"])
        contact = self._index[kind].get(value)
        if contact is None:
            return None
        contact = contact.live()
        if kind != "anon" and contact.profile.get(kind) != value:
            return None  # its email changed, or it was merged into one with another
        return contact

    def by_external_id(self, external_id: str) -> Contact | None:
        return self._find("external_id", external_id)

    def by_anonymous_id(self, anonymous_id: str) -> Contact | None:
        return self._find("anon", anonymous_id)

    def by_email(self, email: str) -> Contact | None:
        return self._find("email", email)

    # -- resolving -----------------------------------------------------------------------

    def resolve(
        self,
        user_id: str | None,
        anonymous_id: str | None,
        *,
        previous_id: str | None = None,
        email: str | None = None,
        claims_email: bool = False,
        at: datetime | None = None,
    ) -> Resolution:
        """The contact an event from these identifiers belongs to, creating, adopting and
        merging as docs/identity.md describes. `claims_email`: the event states the email
        (identify traits) rather than mentions it (`context.traits` of a track)."""
        known = self.by_external_id(user_id) if user_id else None
        device = self.by_anonymous_id(anonymous_id) if anonymous_id else None
        previous = None
        if previous_id:
            previous = self.by_external_id(previous_id) or self.by_anonymous_id(previous_id)
        others = _distinct(device, previous)
        holder = self.by_email(email) if email else None
        target = self._choose(user_id, known, _distinct(*others, holder if claims_email else None))
        if target is None and holder is not None:
            target = self._choose(user_id, None, [holder])
        target = target or self.create(user_id)
        for other in others:
            self.merge(other, target)
        for anon_id, owner in ((anonymous_id, device), (previous_id, previous)):
            if anon_id and owner is None and anon_id != user_id:
                self._attach(anon_id, target)
        target = target.live()
        stale = at is not None and target.traits_at is not None and at < target.traits_at
        email_ok = email is not None and self._claim_email(email, target, claims_email, stale)
        return Resolution(target.live(), email_ok, stale)

    def _choose(
        self, user_id: str | None, known: Contact | None, candidates: Sequence[Contact]
    ) -> Contact | None:
        if user_id:
            if known is not None:
                return known
            anonymous = next((c for c in candidates if c.external_id is None), None)
            if anonymous is not None:
                self._touch(anonymous)
                anonymous.profile["external_id"] = user_id  # adopt: it is this user
                anonymous.dirty = True
                self._index["external_id"][user_id] = anonymous
            return anonymous
        identified = next((c for c in candidates if c.external_id is not None), None)
        return identified or next(iter(candidates), None)

    def _claim_email(self, email: str, target: Contact, claims: bool, stale: bool) -> bool:
        """May `email` be written to `target`? Its anonymous holder is merged in first when
        the event states the email (or the target has none yet)."""
        holder = self.by_email(email)
        if holder is None or holder is target:
            return True
        if target.email is None or (claims and not stale):
            return self.merge(holder, target)
        return False

    def create(self, user_id: str | None) -> Contact:
        """A new contact (stored by `flush`)."""
        contact = Contact(None, {"external_id": user_id}, created_at=self.clock.now(), dirty=True)
        if user_id:
            self._index["external_id"][user_id] = contact
        self._new.append(contact)
        return contact

    def _attach(self, anonymous_id: str, contact: Contact) -> None:
        self._index["anon"][anonymous_id] = contact
        self._looked_up["anon"].add(anonymous_id)
        self._new_anonymous[anonymous_id] = contact

    def update(
        self,
        contact: Contact,
        changes: fields.ContactChanges,
        *,
        fill_only: bool,
        traits_at: datetime | None = None,
    ) -> None:
        """Apply profile changes (already cleared of an email that is not ok to write);
        `traits_at`: the timestamp of the identify they come from."""
        self._touch(contact)
        contact.update(changes, fill_only=fill_only)
        if traits_at is not None and (contact.traits_at is None or traits_at > contact.traits_at):
            contact.traits_at = traits_at
            contact.dirty = True
        if contact.email:
            self._index["email"][contact.email] = contact

    def merge(self, source: Contact, target: Contact) -> bool:
        """Merge `source` into `target`; False (and a log line) when they are two known users."""
        source, target = source.live(), target.live()
        if source is target:
            return True
        if not mergeable(source, target):
            log.info(
                "not merging two known contacts",
                extra={"contact_ids": [source.id, target.id], "external_id": source.external_id},
            )
            return False
        if source.id is None:  # only in memory: fold it there
            self._touch(target)
            fold(target, source)
        else:
            self.flush()
            assert target.id is not None  # noqa: S101 - flush stores every contact
            merged = _merge_stored(self.conn, self.clock, source.id, target.id)
            if merged is None:
                return False
            _copy(merged, into=target)
        source.merged_into = target
        if target.email:
            self._index["email"][target.email] = target
        return True

    def _touch(self, contact: Contact) -> None:
        """About to change `contact` in memory: read all of it first, and flush it later."""
        if contact.id is not None:
            self._hold([contact])
            self._touched[contact.id] = contact

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Store new contacts, their anonymous ids and every changed profile."""
        now = self.clock.now()
        changed = [c for c in self._touched.values() if c.dirty and c.merged_into is None]
        self._touched = {}
        assert all(c.full for c in changed)  # noqa: S101 - else fields would be wiped
        if changed:
            # an email may move from one to another: free every email that changes first
            moving = [c.id for c in changed if c.stored_email not in (None, c.email)]
            if moving:
                self.conn.execute(
                    update(contacts).where(contacts.c.id.in_(moving)).values(email=None)
                )
            _write(self.conn, changed, now)
        new = [c for c in self._new if c.merged_into is None]
        if new:
            for contact, contact_id in zip(new, self._new_ids(len(new)), strict=True):
                contact.id, contact.dirty, contact.stored_email = contact_id, False, contact.email
                self._stored[contact_id] = contact
            # ids chosen up front: a plain executemany is several times faster than RETURNING
            self.conn.execute(
                insert(contacts),
                [{**_values(c, now), "id": c.id, "created_at": c.created_at} for c in new],
            )
        self._new = []
        if self._new_anonymous:
            self.conn.execute(
                insert(tables.contact_anonymous_ids),
                [
                    {"anonymous_id": a, "contact_id": c.live().id, "created_at": now}
                    for a, c in self._new_anonymous.items()
                ],
            )
            self._new_anonymous = {}

    def _new_ids(self, count: int) -> list[int]:
        """Ids for new contacts: from the sequence on PostgreSQL; on SQLite, which has one
        writer (this transaction), after the highest id in use."""
        if self.conn.dialect.name == "postgresql":
            sequence = func.nextval(func.pg_get_serial_sequence("contacts", "id"))
            taken = select(sequence).select_from(func.generate_series(1, count))
            return [int(i) for i in self.conn.execute(taken).scalars()]
        highest = self.conn.execute(select(func.max(contacts.c.id))).scalar() or 0
        return list(range(highest + 1, highest + 1 + count))


def _copy(source: Contact, into: Contact) -> None:
    """Make `into` (the batch's object for a stored contact) what `source` says is stored."""
    into.profile, into.attributes, into.score = source.profile, source.attributes, source.score
    into.traits_at, into.created_at = source.traits_at, source.created_at
    into.stored_email, into.full, into.dirty = source.stored_email, True, False


def _from_row(row: Row[Any], into: Contact | None = None) -> Contact:
    """A contact from a row of `_COLUMNS` or `_IDENTIFIERS`, or `into` refreshed from it."""
    m = row._mapping
    contact = into or Contact(int(m["id"]), {})
    contact.full = "attributes" in m
    contact.profile = {name: m[name] for name in fields.PROFILE_FIELDS if name in m}
    contact.traits_at = m["traits_at"]
    contact.stored_email = m["email"]
    if contact.full:
        contact.attributes = dict(m["attributes"] or {})
        contact.score, contact.created_at = int(m["score"]), m["created_at"]
    contact.dirty = False
    return contact


def _values(contact: Contact, now: datetime) -> dict[str, Any]:
    return {
        **{name: contact.profile.get(name) for name in fields.PROFILE_FIELDS},
        "attributes": contact.attributes,
        "score": contact.score,
        "traits_at": contact.traits_at,
        "updated_at": now,
    }


_WRITE = (
    update(contacts)
    .where(contacts.c.id == bindparam("_id"))
    .values(
        {n: bindparam(n) for n in (*fields.PROFILE_FIELDS, "attributes", "score", "traits_at")}
        | {"updated_at": bindparam("updated_at"), "created_at": bindparam("_at")}
    )
)


def _write(conn: Connection, changed: Sequence[Contact], now: datetime) -> None:
    conn.execute(_WRITE, [{**_values(c, now), "_id": c.id, "_at": c.created_at} for c in changed])
    for contact in changed:
        contact.dirty = False
        contact.stored_email = contact.email


def merge_contacts(conn: Connection, clock: Clock, source_id: int, target_id: int) -> bool:
    """Merge contact `source_id` into `target_id` and delete it: its events, anonymous ids,
    tags, list memberships and consents move over, its profile fills the target's gaps.
    Refused (False, nothing changes) when both have different external ids."""
    return _merge_stored(conn, clock, source_id, target_id) is not None


def _merge_stored(conn: Connection, clock: Clock, source_id: int, target_id: int) -> Contact | None:
    """`merge_contacts`, returning the merged contact as stored (None when refused)."""
    query = select(contacts.c.id, *(contacts.c[n] for n in _COLUMNS)).where(
        contacts.c.id.in_([source_id, target_id])
    )
    if conn.dialect.name == "postgresql":
        query = query.order_by(contacts.c.id).with_for_update()
    found = {int(row.id): _from_row(row) for row in conn.execute(query)}
    source, target = found.get(source_id), found.get(target_id)
    if source is None or target is None or source is target or not mergeable(source, target):
        return None
    ids = {"merged_id": source_id, "kept_id": target_id}
    for statement in _MOVE_HISTORY:
        conn.execute(statement, ids)
    _merge_memberships(conn, clock, source_id, target_id)
    conn.execute(_DELETE, ids)  # frees its email
    fold(target, source)
    _write(conn, [target], clock.now())
    log.info("merged contacts", extra={"contact_id": target_id, "merged_contact_id": source_id})
    return target


def _move_history() -> list[Executable]:
    """Statements moving what belongs to contact :merged_id over to contact :kept_id."""
    source = bindparam("merged_id", type_=BigInteger())
    target = bindparam("kept_id", type_=BigInteger())
    moves: list[Executable] = [
        update(table).where(table.c.contact_id == source).values(contact_id=target)
        for table in (tables.events, tables.contact_anonymous_ids, tables.consents)
    ]
    tags, mine = tables.contact_tags, tables.contact_tags.alias("mine")
    missing = select(target, tags.c.tag).where(
        tags.c.contact_id == source,
        ~exists().where(and_(mine.c.contact_id == target, mine.c.tag == tags.c.tag)),
    )
    return [*moves, insert(tags).from_select(["contact_id", "tag"], missing)]


_MOVE_HISTORY = _move_history()
_DELETE = delete(contacts).where(contacts.c.id == bindparam("merged_id"))


def _merge_memberships(conn: Connection, clock: Clock, source_id: int, target_id: int) -> None:
    m = tables.list_memberships
    rows = conn.execute(select(m).where(m.c.contact_id.in_([source_id, target_id]))).all()
    theirs = {r.list_id: r for r in rows if r.contact_id == source_id}
    ours = {r.list_id: r for r in rows if r.contact_id == target_id and r.list_id in theirs}
    moving = [list_id for list_id in theirs if list_id not in ours]
    if moving:
        conn.execute(
            update(m)
            .where(m.c.contact_id == source_id, m.c.list_id.in_(moving))
            .values(contact_id=target_id)
        )
    for list_id, mine in ours.items():
        other = theirs[list_id]
        status = combined_status(mine.status, other.status)
        if status != mine.status or other.created_at < mine.created_at:
            conn.execute(
                update(m)
                .where(m.c.contact_id == target_id, m.c.list_id == list_id)
                .values(
                    status=status,
                    created_at=min(mine.created_at, other.created_at),
                    updated_at=clock.now() if status != mine.status else mine.updated_at,
                )
            )


def _distinct(*found: Contact | None) -> list[Contact]:
    out: list[Contact] = []
    for contact in found:
        if contact is not None and contact.live() not in out:
            out.append(contact.live())
    return out


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
