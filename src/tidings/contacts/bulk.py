"""Many contacts at once (CSV import, `POST /v1/contacts/bulk`) in a handful of set-based
statements per chunk, never one statement per contact.

A row is matched by `external_id` when it has one, else by email. Given profile fields
overwrite, missing or empty ones keep what is stored (bulk never clears a field),
attributes are merged key by key, tags are added. Inside one call the last row for an
email or external_id wins. A row whose external_id and email point at two different
contacts is rejected; the others go ahead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    Text,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from tidings import errors, nul
from tidings.clock import Clock
from tidings.contacts import fields
from tidings.db import tables
from tidings.db.types import UTCDateTime

contacts = tables.contacts
ITEM_KEYS = frozenset({*fields.PROFILE_FIELDS, "attributes", "tags"})
MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class Rejected:
    """One input row that was not stored, and why (`field` names the culprit)."""

    index: int
    field: str
    message: str

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class UpsertResult:
    """What one `upsert` did. Rows repeated in the same call count once (the last)."""

    created: int = 0
    updated: int = 0
    subscribed: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class _Row(NamedTuple):
    """One good item, normalised. `doc` is its contact columns as a JSON array (the profile
    fields in `PROFILE_FIELDS` order, then the attributes), ready to splice into a
    statement's JSON document: a tuple of plain values ships cheaply from the importer's
    reader process, and the writer never touches the attributes again."""

    position: int  # the item's index in the input
    email: str | None
    external_id: str | None
    phone: str | None
    doc: bytes
    tags: tuple[str, ...]


class _Stored(NamedTuple):
    """A stored contact an item matches: its id and the columns with a unique index or
    an index (see `_update_known`)."""

    id: int
    email: str | None
    external_id: str | None
    phone: str | None


def find_list(conn: Connection, key: str) -> int:
    """The id of the list with `key`, or NotFound."""
    found = conn.execute(select(tables.lists.c.id).where(tables.lists.c.key == key)).scalar()
    if found is None:
        raise errors.NotFound(f"No list with key {key!r}.")
    return int(found)


@dataclass
class Prepared:
    """Items checked and normalised, ready for `upsert` (which needs no more validation).
    Preparing is pure CPU work, so the importer does it for the next chunk while the
    database writes this one."""

    rows: list[_Row]
    rejected: list[Rejected]


def prepare(items: Sequence[Mapping[str, Any]]) -> Prepared:
    """Normalise every item; the good ones as rows, the bad ones as rejects (all problems)."""
    rows: list[_Row] = []
    rejected: list[Rejected] = []
    for index, item in enumerate(items):
        try:
            rows.append(_prepare_one(index, item))
        except errors.InvalidInput as exc:
            rejected.extend(Rejected(index, f.field, f.message) for f in exc.fields)
    return Prepared(rows, rejected)


def _prepare_one(index: int, item: Mapping[str, Any]) -> _Row:
    if not ITEM_KEYS.issuperset(item):
        unknown = item.keys() - ITEM_KEYS
        raise errors.InvalidInput.field(min(unknown), "is not a contact field")
    profile = fields.normalise_profile(item)  # reads the profile fields only
    email, external_id = profile.get("email"), profile.get("external_id")
    if email is None and external_id is None:
        raise errors.InvalidInput.field("email", "an email or an external_id is needed")
    values = list(map(profile.get, fields.PROFILE_FIELDS))
    doc = _json_doc([*values, _attributes(item.get("attributes"))])
    tags = tuple(_tags(item.get("tags")))
    if b"\\u0000" in doc or any("\x00" in tag for tag in tags):  # cheap test first
        where = nul.find(dict(item), "")
        if where:
            raise errors.InvalidInput.field(where, nul.MESSAGE)
    return _Row(index, email, external_id, profile.get("phone"), doc, tags)


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict | Mapping) or not all(type(k) is str for k in value):
        raise errors.InvalidInput.field("attributes", "must be an object")
    # None means "not given" in bulk, as for profile fields: nothing is ever cleared.
    if None in value.values():
        return {k: v for k, v in value.items() if v is not None}
    return dict(value)


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(type(t) is str for t in value):
        raise errors.InvalidInput.field("tags", "must be a list of strings")
    tags = [s for s in (t.strip() for t in value) if s]
    if any(len(t) > MAX_TAG_LENGTH for t in tags):
        raise errors.InvalidInput.field("tags", f"a tag is longer than {MAX_TAG_LENGTH}")
    return list(dict.fromkeys(tags))


def upsert(
    conn: Connection,
    clock: Clock,
    items: Sequence[Mapping[str, Any]] | Prepared,
    *,
    list_id: int | None = None,
    status: str = "subscribed",
    source: str = "import",
) -> UpsertResult:
    """Create or update every good item in the caller's transaction; report the bad ones.

    With `list_id`, contacts not yet on the list join it with `status`, and each newly
    subscribed one gets a consent record from `source`. An existing membership is never
    changed: an import does not re-subscribe someone who unsubscribed."""
    prepared = items if isinstance(items, Prepared) else prepare(items)
    rows = _last_wins(prepared.rows)
    result = UpsertResult(rejected=list(prepared.rejected))
    found_email, found_xid = _existing(conn, rows)
    known, new = _match(rows, found_email, found_xid, result.rejected)
    now = clock.now()
    _update_known(conn, known, now)
    created = _create_new(conn, new, now)
    result.created, result.updated = len(new), len(known)
    stored = [(row, contact.id) for row, contact in known] + created
    _add_tags(conn, stored)
    if list_id is not None:
        result.subscribed = _join_list(conn, stored, list_id, status, source, now)
    result.rejected.sort(key=lambda r: r.index)
    return result


def _last_wins(rows: list[_Row]) -> list[_Row]:
    """Drop every row that a later row with the same email or external_id repeats."""
    kept: dict[int, _Row] = {}
    by_key: dict[str, _Row] = {}
    for row in rows:
        keys = [f"e:{row.email}"] if row.email is not None else []
        keys += [f"x:{row.external_id}"] if row.external_id is not None else []
        for key in keys:
            earlier = by_key.get(key)
            if earlier is not None:
                kept.pop(earlier.position, None)
            by_key[key] = row
        kept[row.position] = row
    return list(kept.values())


# -- set-based SQL ----------------------------------------------------------------------
# Each statement reads the whole chunk from ONE bound JSON document, unpacked in SQL
# (PostgreSQL `jsonb_array_elements`, SQLite `json_each`). The SQL text is the same for
# every chunk (cached by SQLAlchemy and the driver) and binding costs one parameter, not
# one per cell, which is what made multi-row VALUES slow. Each element is a JSON *array*
# read by position: picking fields out of JSON objects by name cost SQLite 3.40 about
# 2.5x more per row (it re-parses the object for every field), PostgreSQL ~25 % more.

_TYPES: dict[str, Any] = {
    **dict.fromkeys(fields.PROFILE_FIELDS, Text()),
    "id": BigInteger(),
    "contact_id": BigInteger(),
    "tag": Text(),
    "attributes": postgresql.JSONB(),
}


def _json_doc(values: Any) -> bytes:
    try:
        return orjson.dumps(values)
    except TypeError:  # e.g. an integer beyond 64 bits: the slower encoder copes
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()


def _json_array(elements: Sequence[bytes]) -> str:
    """Elements already encoded as JSON, as one JSON array (the statement's document)."""
    return (b"[%b]" % b",".join(elements)).decode()


def _json_rows(conn: Connection, doc: str, names: Sequence[str]) -> Any:
    """A FROM-able of the JSON arrays in `doc` and, by name, a column for each position."""
    bound = literal(doc, Text())
    if conn.dialect.name == "postgresql":
        each = func.jsonb_array_elements(cast(bound, postgresql.JSONB)).table_valued("value")
        r = each.render_derived(name="r")
        return r, {name: _pg_element(r.c.value, i, name) for i, name in enumerate(names)}
    r = func.json_each(bound).table_valued("value").alias("r")
    return r, {name: func.json_extract(r.c.value, f"$[{i}]") for i, name in enumerate(names)}


def _pg_element(array: Any, position: int, name: str) -> Any:
    """`array -> position` as the column's type (`->>` for text, `->` for JSONB)."""
    kind = _TYPES[name]
    if isinstance(kind, postgresql.JSONB):
        return array.op("->", return_type=kind)(literal_column(str(position)))
    text = array.op("->>", return_type=Text())(literal_column(str(position)))
    return text if isinstance(kind, Text) else cast(text, kind)


def _json_values(conn: Connection, values: list[Any]) -> Any:
    """SELECT of the elements of a JSON array (as text)."""
    doc = literal(_json_doc(values).decode(), Text())
    if conn.dialect.name == "postgresql":
        return select(func.jsonb_array_elements_text(cast(doc, postgresql.JSONB)))
    return select(func.json_each(doc).table_valued("value").c.value)


#: Stored contacts by email or by external id (never NULL: they were found by it).
_ByKey = dict[str | None, _Stored]


def _existing(conn: Connection, rows: list[_Row]) -> tuple[_ByKey, _ByKey]:
    """Which of these emails / external ids are stored already, and as which contact."""
    c = contacts.c
    stored = select(c.id, c.email, c.external_id, c.phone)
    emails = [r.email for r in rows if r.email is not None]
    xids = [r.external_id for r in rows if r.external_id is not None]
    by_email: _ByKey = {}
    by_xid: _ByKey = {}
    if emails:
        found = conn.execute(stored.where(c.email.in_(_json_values(conn, emails))))
        by_email = {s.email: s for s in map(_Stored._make, found)}
    if xids:
        found = conn.execute(stored.where(c.external_id.in_(_json_values(conn, xids))))
        by_xid = {s.external_id: s for s in map(_Stored._make, found)}
    return by_email, by_xid


def _match(
    rows: list[_Row],
    by_email: _ByKey,
    by_xid: _ByKey,
    rejected: list[Rejected],
) -> tuple[list[tuple[_Row, _Stored]], list[_Row]]:
    """Point each row at its stored contact (known) or none (new); reject rows whose keys
    disagree."""
    known: list[tuple[_Row, _Stored]] = []
    new: list[_Row] = []
    for row in rows:
        email_hit = by_email.get(row.email) if row.email else None
        xid_hit = by_xid.get(row.external_id) if row.external_id else None
        if row.external_id and email_hit:
            same = xid_hit is not None and xid_hit.id == email_hit.id
            if not same and (xid_hit is not None or email_hit.external_id is not None):
                message = f"{row.email} belongs to another contact than this external_id"
                rejected.append(Rejected(row.position, "external_id", message))
                continue
        hit = xid_hit or email_hit
        if hit:
            known.append((row, hit))
        else:
            new.append(row)
    return known, new


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _merged_attributes(conn: Connection, new: Any) -> ColumnElement[Any]:
    """Stored attributes with the new keys laid over them (PostgreSQL `||`, SQLite
    `json_patch`; both keep keys the row does not mention)."""
    if conn.dialect.name == "postgresql":
        return contacts.c.attributes.op("||")(new)
    return func.json_patch(contacts.c.attributes, new)


def _changes(
    conn: Connection, new: Mapping[str, Any], now: Any, names: Sequence[str] = fields.PROFILE_FIELDS
) -> dict[str, Any]:
    """SET clause: given fields (of `names`) win, missing ones stay, attributes merge."""
    c = contacts.c
    changes: dict[str, Any] = {name: func.coalesce(new[name], c[name]) for name in names}
    changes["attributes"] = _merged_attributes(conn, new["attributes"])
    changes["updated_at"] = now
    return changes


_CONTACT_COLUMNS = (*fields.PROFILE_FIELDS, "attributes")  # the order of `_Row.doc`


#: The profile fields without an index: setting an indexed column, even to its own value,
#: costs SQLite an index update (~10 µs a row on a million contacts).
_UNINDEXED_FIELDS = tuple(f for f in fields.PROFILE_FIELDS if f not in _Stored._fields)


def _update_known(conn: Connection, known: list[tuple[_Row, _Stored]], now: datetime) -> None:
    """UPDATE ... FROM the chunk: the matched contacts in one statement, or two when some
    change an indexed column (email, external id, phone) and others do not."""
    keep = [(row, stored) for row, stored in known if _keeps_indexed(row, stored)]
    change = [(row, stored) for row, stored in known if not _keeps_indexed(row, stored)]
    for group, names in ((keep, _UNINDEXED_FIELDS), (change, fields.PROFILE_FIELDS)):
        if not group:
            continue
        doc = _json_array([b"[%d,%b" % (stored.id, row.doc[1:]) for row, stored in group])
        _, r = _json_rows(conn, doc, ("id", *_CONTACT_COLUMNS))
        changes = _changes(conn, r, literal(now, UTCDateTime()), names)
        conn.execute(update(contacts).where(contacts.c.id == r["id"]).values(changes))


def _keeps_indexed(row: _Row, stored: _Stored) -> bool:
    """Whether the row leaves the stored email, external id and phone as they are (each is
    either not given or the same), so the UPDATE need not set them."""
    return (
        (row.email is None or row.email == stored.email)
        and (row.external_id is None or row.external_id == stored.external_id)
        and (row.phone is None or row.phone == stored.phone)
    )


def _create_new(conn: Connection, rows: list[_Row], now: datetime) -> list[tuple[_Row, int]]:
    """INSERT ... SELECT the new contacts; returns them with their ids. ON CONFLICT covers
    a concurrent writer creating the same email first (PostgreSQL; SQLite has one writer)."""
    c = contacts.c
    stamp = literal(now, UTCDateTime())
    created: list[tuple[_Row, int]] = []
    for key, group in (
        (c.email, [r for r in rows if r.email is not None]),
        (c.external_id, [r for r in rows if r.email is None]),
    ):
        if not group:
            continue
        source, r = _json_rows(conn, _json_array([row.doc for row in group]), _CONTACT_COLUMNS)
        chosen = select(*(r[n] for n in _CONTACT_COLUMNS), stamp, stamp).select_from(source)
        stmt = _insert(conn, contacts).from_select(
            [*_CONTACT_COLUMNS, "created_at", "updated_at"], chosen.where(true())
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_=_changes(conn, stmt.excluded, stmt.excluded.updated_at)
        ).returning(c.id, key)
        ids = {k: i for i, k in conn.execute(stmt)}
        by_email = key is c.email
        created += [(row, ids[row.email if by_email else row.external_id]) for row in group]
    return created


def _add_tags(conn: Connection, stored: list[tuple[_Row, int]]) -> None:
    pairs = [(contact_id, tag) for row, contact_id in stored for tag in row.tags]
    if pairs:
        source, r = _json_rows(conn, _json_doc(pairs).decode(), ("contact_id", "tag"))
        chosen = select(r["contact_id"], r["tag"]).select_from(source).where(true())
        stmt = _insert(conn, tables.contact_tags).from_select(["contact_id", "tag"], chosen)
        conn.execute(stmt.on_conflict_do_nothing())


def _join_list(
    conn: Connection,
    stored: list[tuple[_Row, int]],
    list_id: int,
    status: str,
    source: str,
    now: datetime,
) -> int:
    """Add the contacts not yet on the list; a consent record for each one subscribed."""
    if status not in tables.MEMBERSHIP_STATUSES:
        raise errors.InvalidInput.field("status", f"must be one of {tables.MEMBERSHIP_STATUSES}")
    if not stored:
        return 0
    m = tables.list_memberships
    stamp = literal(now, UTCDateTime())
    ids, r = _id_rows(conn, [contact_id for _, contact_id in stored])
    chosen = select(literal(list_id), r["contact_id"], literal(status), stamp, stamp)
    stmt = _insert(conn, m).from_select(
        ["list_id", "contact_id", "status", "created_at", "updated_at"],
        chosen.select_from(ids).where(true()),
    )
    joined = [
        int(cid)
        for cid in conn.execute(stmt.on_conflict_do_nothing().returning(m.c.contact_id)).scalars()
    ]
    if status == "subscribed" and joined:
        ids, r = _id_rows(conn, joined)
        chosen = select(r["contact_id"], literal(list_id), literal(status), literal(source), stamp)
        conn.execute(
            insert(tables.consents).from_select(
                ["contact_id", "list_id", "status", "source", "at"], chosen.select_from(ids)
            )
        )
    return len(joined)


def _id_rows(conn: Connection, contact_ids: list[int]) -> Any:
    """`_json_rows` of one `contact_id` column."""
    return _json_rows(conn, _json_doc([[i] for i in contact_ids]).decode(), ("contact_id",))
