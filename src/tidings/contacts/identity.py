"""Recognising contacts from the identifiers events carry, and merging the duplicates.

A contact is known by its `external_id` (the site's `userId`), by any number of anonymous
ids (`anonymousId`, a device or browser) and by its email. `Identities` resolves those for
one batch of events: it looks each identifier up once (one statement per kind for the
batch), keeps new contacts, profile changes and merges in memory and writes them with a
few set-based statements in `flush`. Merging itself is `tidings.contacts.merge`. The rules
are in docs/identity.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Row,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable, TextualSelect
from sqlalchemy.types import NullType

from tidings.clock import Clock
from tidings.contacts import fields, merge
from tidings.db import tables, types

log = logging.getLogger(__name__)

contacts = tables.contacts
_COLUMNS = merge.PROFILE_COLUMNS
_IDENTIFIERS = ("external_id", "email", "traits_at")  # enough to tell who is who
#: Kept here for the callers that merge two contacts by hand.
merge_contacts = merge.merge_contacts
combined_status = merge.combined_status


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
    """Fold `source`'s profile into `target` (`merge.folded`): the target's values win, its
    empty fields are filled from the source, attributes merge key by key, scores add up."""
    values = merge.folded(_state(target), _state(source))
    target.profile.update({name: values[name] for name in fields.PROFILE_FIELDS})
    target.attributes, target.score = values["attributes"], values["score"]
    target.traits_at, target.created_at = values["traits_at"], values["created_at"]
    target.dirty = True


def mergeable(source: Contact, target: Contact) -> bool:
    """Two known users (different external ids) are never merged."""
    return merge.mergeable(source.external_id, target.external_id)


@dataclass(frozen=True)
class Resolution:
    """Who an event belongs to; whether its email may be written to that contact; whether
    the event is older than the contact's newest applied traits (then it only fills)."""

    contact: Contact
    email_ok: bool
    stale: bool


#: A contact in the batch's index: the object, or only the id of a stored contact whose
#: identifiers were read and which nothing in the batch has needed more of yet.
Found = Contact | int


class Identities:
    """Finds, creates and merges contacts for one batch of events in one transaction.

    Every identifier is looked up once per batch (`preload` does them all at once); new
    contacts, new anonymous ids, profile changes and merges are written by `flush`."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        self._index: dict[str, dict[str, Found]] = {"external_id": {}, "email": {}, "anon": {}}
        self._looked_up: dict[str, set[str]] = {"external_id": set(), "email": set(), "anon": set()}
        self._stored: dict[int, Contact] = {}
        self._rows: dict[int, tuple[Any, ...]] = {}  # identifiers read, no Contact made yet
        self._new: list[Contact] = []
        self._new_anonymous: dict[str, Contact] = {}
        self._touched: dict[int, Contact] = {}  # stored contacts changed in memory
        self._merged: list[tuple[Contact, Contact]] = []  # stored source, target: in flush

    # -- lookups -------------------------------------------------------------------------

    def preload(
        self, external_ids: Iterable[str], anonymous_ids: Iterable[str], emails: Iterable[str]
    ) -> None:
        """Look up all these identifiers at once: who has them (their identifiers only),
        one statement per kind of identifier."""
        wanted = {
            "external_id": set(external_ids) - self._looked_up["external_id"],
            "email": set(emails) - self._looked_up["email"],
            "anon": set(anonymous_ids) - self._looked_up["anon"],
        }
        owners: dict[str, int] = {}
        if wanted["anon"]:
            found = self.conn.execute(_lookup(self._dialect, "anon"), _json(wanted["anon"]))
            owners = {anonymous_id: int(owner) for anonymous_id, owner in found}
        for kind in ("external_id", "email"):
            if wanted[kind]:
                self._load_identifiers(kind, wanted[kind])
        unknown = {i for i in owners.values() if i not in self._stored and i not in self._rows}
        if unknown:
            self._load_identifiers("id", unknown)
        for anonymous_id, contact_id in owners.items():
            self._index["anon"][anonymous_id] = self._stored.get(contact_id, contact_id)
        for kind, values in wanted.items():
            self._looked_up[kind] |= values

    @property
    def _dialect(self) -> str:
        return self.conn.dialect.name

    def _load_identifiers(self, kind: str, values: Iterable[Any]) -> None:
        """Read who has these values of `kind` (their identifiers only) into the index."""
        index = self._index.get(kind, {})
        rows, stored = self._rows, self._stored
        for row in self.conn.execute(_lookup(self._dialect, kind), _json(values)).all():
            contact_id: int = row[0]
            if contact_id not in stored:
                rows.setdefault(contact_id, row[1:])
            value = row[1 if kind == "external_id" else 2]
            if kind != "id" and not self._still_has(kind, value):
                index[value] = stored.get(contact_id, contact_id)

    def _still_has(self, kind: str, value: str) -> bool:
        """Whether the index already names a contact that has `value` (kept over a row read
        later: the batch's view of a contact is newer than the database's)."""
        current = self._index[kind].get(value)
        if current is None:
            return False
        if isinstance(current, int):
            if current not in self._stored:
                return True
            current = self._stored[current]
        return current.live().profile.get(kind) == value

    def _contact(self, found: Found) -> Contact:
        """The `Contact` of an index entry, made from the identifiers read when needed."""
        if isinstance(found, Contact):
            return found
        contact = self._stored.get(found)
        if contact is None:
            external_id, email, traits_at = self._rows.pop(found)
            profile = {"external_id": external_id, "email": email}
            when = _utc(traits_at, self.conn.dialect)
            contact = Contact(found, profile, traits_at=when, full=False, stored_email=email)
            self._stored[found] = contact
        return contact

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
        if not ids:
            return
        query = select(contacts.c.id, *(contacts.c[n] for n in _COLUMNS)).where(
            contacts.c.id.in_(ids)
        )
        if self._dialect == "postgresql":
            query = query.order_by(contacts.c.id).with_for_update(key_share=True)
        for row in self.conn.execute(query):
            contact = self._stored.get(row.id)
            if contact is None or not contact.full:
                self._rows.pop(row.id, None)
                contact = _from_row(row, contact)
                self._stored[row.id] = contact
            for kind in ("external_id", "email"):
                value = contact.profile.get(kind)
                if value and not self._still_has(kind, value):
                    self._index[kind][value] = contact

    def _find(self, kind: str, value: str) -> Contact | None:
        if value not in self._looked_up[kind]:
            wanted: dict[str, list[str]] = {"external_id": [], "anon": [], "email": []}
            wanted[kind].append(value)
            self.preload(wanted["external_id"], wanted["anon"], wanted["email"])
        found = self._index[kind].get(value)
        if found is None:
            return None
        contact = self._contact(found).live()
        if kind != "anon" and contact.profile.get(kind) != value:
            return None  # its email changed, or it was merged into one with another
        return contact

    def by_external_id(self, external_id: str) -> Contact | None:
        return self._find("external_id", external_id)

    def by_anonymous_id(self, anonymous_id: str) -> Contact | None:
        return self._find("anon", anonymous_id)

    def by_email(self, email: str) -> Contact | None:
        return self._find("email", email)

    def settled(self, user_id: str | None, anonymous_id: str | None) -> Found | None:
        """The contact of an event that only needs linking, at no cost: both its ids (or
        its only one) were looked up and name the same contact. None when `resolve` must
        decide (an unknown id, two contacts to merge)."""
        known = self._peek("external_id", user_id) if user_id else None
        if anonymous_id is None:
            return known
        device = self._peek("anon", anonymous_id)
        if user_id is None or device is None:
            return device
        return known if known == device else None

    def _peek(self, kind: str, value: str) -> Found | None:
        found = self._index[kind].get(value)
        if isinstance(found, int):
            if found not in self._stored:
                return found
            found = self._stored[found]
        if found is None:
            return None
        contact = found.live()
        return contact if kind == "anon" or contact.profile.get(kind) == value else None

    def contact_id(self, found: Found) -> int | None:
        """The id an event's contact has after `flush` (it may have been merged since)."""
        if isinstance(found, int):
            contact = self._stored.get(found)
            return found if contact is None else contact.live().id
        return found.live().id

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
        """Merge `source` into `target` in memory; False (and a log line) when they are two
        known users. A stored source's history is moved (and it is deleted) by `flush`."""
        source, target = source.live(), target.live()
        if source is target:
            return True
        if not mergeable(source, target):
            log.info(
                "not merging two known contacts",
                extra={"contact_ids": [source.id, target.id], "external_id": source.external_id},
            )
            return False
        self._touch(target)
        if source.id is not None:
            self._hold([source])  # all of its profile folds into the target
            self._merged.append((source, target))
        fold(target, source)
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
        """Store new contacts, their anonymous ids, every changed profile and the merges."""
        now = self.clock.now()
        changed = [c for c in self._touched.values() if c.dirty and c.merged_into is None]
        new = [c for c in self._new if c.merged_into is None]
        merged, self._touched, self._new, self._merged = self._merged, {}, [], []
        assert all(c.full for c in changed)  # noqa: S101 - else fields would be wiped
        # emails may move between contacts: free every one that changes hands first
        freed = [c.id for c in changed if c.stored_email not in (None, c.email)]
        freed += [s.id for s, _ in merged if s.stored_email is not None]
        if freed:
            self.conn.execute(update(contacts).where(contacts.c.id.in_(freed)).values(email=None))
        for source, _ in merged:
            source.stored_email = None
        if changed:
            _write(self.conn, changed, now)
        if new:
            for contact, contact_id in zip(new, self._new_ids(len(new)), strict=True):
                contact.id, contact.dirty, contact.stored_email = contact_id, False, contact.email
                self._stored[contact_id] = contact
            _insert(self.conn, new, now)
        # the targets are all stored now: move the merged contacts' history over to them
        moves = [(s.id, (t if t.id is not None else t.live()).id) for s, t in merged]
        merge.move(self.conn, self.clock, moves)  # type: ignore[arg-type]
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
        if self._dialect == "postgresql":
            sequence = func.nextval(func.pg_get_serial_sequence("contacts", "id"))
            taken = select(sequence).select_from(func.generate_series(1, count))
            return [int(i) for i in self.conn.execute(taken).scalars()]
        highest = self.conn.execute(select(func.max(contacts.c.id))).scalar() or 0
        return list(range(highest + 1, highest + 1 + count))


def _state(contact: Contact) -> dict[str, Any]:
    """What `merge.folded` combines of a contact."""
    return {
        **contact.profile,
        "attributes": contact.attributes,
        "score": contact.score,
        "traits_at": contact.traits_at,
        "created_at": contact.created_at,
    }


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
    """Store changed profiles: on PostgreSQL one UPDATE ... FROM the batch as one JSON
    parameter; on SQLite one prepared UPDATE run per contact."""
    if conn.dialect.name == "postgresql":
        rows = [{**_values(c, now), "id": c.id, "created_at": c.created_at} for c in changed]
        conn.execute(_pg_update(), {"rows": orjson.dumps(rows).decode()})
    else:
        conn.execute(
            _WRITE, [{**_values(c, now), "_id": c.id, "_at": c.created_at} for c in changed]
        )
    for contact in changed:
        contact.dirty = False
        contact.stored_email = contact.email


def _insert(conn: Connection, new: Sequence[Contact], now: datetime) -> None:
    """Insert new contacts (ids chosen up front: no RETURNING to read back)."""
    rows = [{**_values(c, now), "id": c.id, "created_at": c.created_at} for c in new]
    if conn.dialect.name == "postgresql":
        # one JSON parameter: PostgreSQL expands it, psycopg converts one value, not 13 per row
        conn.execute(_pg_insert(), {"rows": orjson.dumps(rows).decode()})
    else:
        conn.execute(insert(contacts), rows)


_STORED = (
    "id",
    *fields.PROFILE_FIELDS,
    "attributes",
    "score",
    "traits_at",
    "created_at",
    "updated_at",
)


def _recordset() -> Any:
    """`jsonb_to_recordset(:rows)` with the contact columns `_STORED`."""
    return (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
        .table_valued(*(column(name, contacts.c[name].type) for name in _STORED))
        .render_derived(name="r", with_types=True)
    )


@functools.cache
def _pg_insert() -> Executable:
    r = _recordset()
    return insert(contacts).from_select(_STORED, select(*(r.c[n] for n in _STORED)))


@functools.cache
def _pg_update() -> Executable:
    r = _recordset()
    return (
        update(contacts)
        .where(contacts.c.id == r.c.id)
        .values({n: r.c[n] for n in _STORED if n != "id"})
    )


@functools.cache
def _lookup(dialect: str, kind: str) -> Executable:
    """Who has any of the identifiers of one kind, given as one JSON array `:values`:
    (contact id, external id, email, traits_at as the driver returns it) of contacts, or
    (anonymous id, contact id)."""
    if dialect == "postgresql":
        values = "SELECT jsonb_array_elements_text(CAST(:values AS jsonb))"
        if kind == "id":
            values = f"SELECT CAST(v AS bigint) FROM ({values}) AS j(v)"  # noqa: S608
    else:
        values = "SELECT value FROM json_each(:values)"
    anon = tables.contact_anonymous_ids
    if kind == "anon":
        return select(anon.c.anonymous_id, anon.c.contact_id).where(
            anon.c.anonymous_id.in_(_literal_select(values))
        )
    raw_traits_at = type_coerce(contacts.c.traits_at, NullType())  # converted by `_utc`
    return select(contacts.c.id, contacts.c.external_id, contacts.c.email, raw_traits_at).where(
        contacts.c[kind].in_(_literal_select(values))
    )


def _literal_select(sql: str) -> TextualSelect:
    return text(sql).columns(column("value"))


def _json(values: Iterable[Any]) -> dict[str, str]:
    return {"values": orjson.dumps(sorted(values)).decode()}


def _utc(raw: Any, dialect: Dialect) -> datetime | None:
    """A timestamp read without conversion, as `UTCDateTime` would have returned it."""
    return types.UTCDateTime().process_result_value(raw, dialect)


def _distinct(*found: Contact | None) -> list[Contact]:
    out: list[Contact] = []
    for contact in found:
        if contact is not None and contact.live() not in out:
            out.append(contact.live())
    return out
