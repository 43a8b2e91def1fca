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
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    Text,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from tidings import errors
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


@dataclass
class _Row:
    index: int
    profile: dict[str, str]
    attributes: dict[str, Any]
    tags: list[str]
    contact_id: int | None = None

    @property
    def email(self) -> str | None:
        return self.profile.get("email")

    @property
    def external_id(self) -> str | None:
        return self.profile.get("external_id")


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
    unknown = item.keys() - ITEM_KEYS
    if unknown:
        raise errors.InvalidInput.field(min(unknown), "is not a contact field")
    given = {name: item[name] for name in fields.PROFILE_FIELDS if name in item}
    profile = {k: v for k, v in fields.normalise_profile(given).items() if v is not None}
    if "email" not in profile and "external_id" not in profile:
        raise errors.InvalidInput.field("email", "an email or an external_id is needed")
    return _Row(index, profile, _attributes(item.get("attributes")), _tags(item.get("tags")))


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
    rows = _match(rows, found_email, found_xid, result.rejected)
    now = clock.now()
    known = [r for r in rows if r.contact_id is not None]
    new = [r for r in rows if r.contact_id is None]
    _update_known(conn, known, now)
    _create_new(conn, new, now)
    result.created, result.updated = len(new), len(known)
    _add_tags(conn, rows)
    if list_id is not None:
        result.subscribed = _join_list(conn, rows, list_id, status, source, now)
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
                kept.pop(earlier.index, None)
            by_key[key] = row
        kept[row.index] = row
    return list(kept.values())


# -- set-based SQL ----------------------------------------------------------------------
# Each statement reads the whole chunk from ONE bound JSON document, unpacked in SQL
# (PostgreSQL `jsonb_to_recordset`, SQLite `json_each`). The SQL text is the same for every
# chunk (cached by SQLAlchemy and the driver) and binding costs one parameter, not one per
# cell, which is what made multi-row VALUES slow.

_TYPES: dict[str, Any] = {
    **dict.fromkeys(fields.PROFILE_FIELDS, Text()),
    "id": BigInteger(),
    "contact_id": BigInteger(),
    "tag": Text(),
    "attributes": postgresql.JSONB(),
}


def _json_doc(values: list[Any]) -> str:
    try:
        return orjson.dumps(values).decode()
    except TypeError:  # e.g. an integer beyond 64 bits: the slower encoder copes
        return json.dumps(values)


def _json_rows(conn: Connection, rows: list[dict[str, Any]], names: Sequence[str]) -> Any:
    """A FROM-able of `rows` (JSON objects) with a column per name, and those columns."""
    doc = literal(_json_doc(rows), Text())
    if conn.dialect.name == "postgresql":
        columns = [column(name, _TYPES[name]) for name in names]
        recordset = func.jsonb_to_recordset(cast(doc, postgresql.JSONB))
        table = recordset.table_valued(*columns).render_derived(name="r", with_types=True)
        return table, {name: table.c[name] for name in names}
    each = func.json_each(doc).table_valued("value").alias("r")
    return each, {name: func.json_extract(each.c.value, f"$.{name}") for name in names}


def _json_values(conn: Connection, values: list[Any]) -> Any:
    """SELECT of the elements of a JSON array (as text)."""
    doc = literal(_json_doc(values), Text())
    if conn.dialect.name == "postgresql":
        return select(func.jsonb_array_elements_text(cast(doc, postgresql.JSONB)))
    return select(func.json_each(doc).table_valued("value").c.value)


def _existing(
    conn: Connection, rows: list[_Row]
) -> tuple[dict[str, tuple[int, str | None]], dict[str, tuple[int, str | None]]]:
    """Which of these emails / external ids are stored already, and as which contact."""
    c = contacts.c
    emails = [r.email for r in rows if r.email is not None]
    xids = [r.external_id for r in rows if r.external_id is not None]
    by_email: dict[str, tuple[int, str | None]] = {}
    by_xid: dict[str, tuple[int, str | None]] = {}
    if emails:
        query = select(c.id, c.email, c.external_id).where(c.email.in_(_json_values(conn, emails)))
        by_email = {e: (i, x) for i, e, x in conn.execute(query)}
    if xids:
        found = c.external_id.in_(_json_values(conn, xids))
        by_xid = {
            x: (i, e) for i, e, x in conn.execute(select(c.id, c.email, c.external_id).where(found))
        }
    return by_email, by_xid


def _match(
    rows: list[_Row],
    by_email: dict[str, tuple[int, str | None]],
    by_xid: dict[str, tuple[int, str | None]],
    rejected: list[Rejected],
) -> list[_Row]:
    """Point each row at its stored contact; reject rows whose keys disagree."""
    matched: list[_Row] = []
    for row in rows:
        email_hit = by_email.get(row.email) if row.email else None
        xid_hit = by_xid.get(row.external_id) if row.external_id else None
        if row.external_id and email_hit:
            same = xid_hit is not None and xid_hit[0] == email_hit[0]
            if not same and (xid_hit is not None or email_hit[1] is not None):
                message = f"{row.email} belongs to another contact than this external_id"
                rejected.append(Rejected(row.index, "external_id", message))
                continue
        hit = xid_hit or email_hit
        row.contact_id = hit[0] if hit else None
        matched.append(row)
    return matched


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _merged_attributes(conn: Connection, new: Any) -> ColumnElement[Any]:
    """Stored attributes with the new keys laid over them (PostgreSQL `||`, SQLite
    `json_patch`; both keep keys the row does not mention)."""
    if conn.dialect.name == "postgresql":
        return contacts.c.attributes.op("||")(new)
    return func.json_patch(contacts.c.attributes, new)


def _changes(conn: Connection, new: Mapping[str, Any], now: Any) -> dict[str, Any]:
    """SET clause: given fields win, missing ones stay, attributes merge."""
    c = contacts.c
    changes: dict[str, Any] = {
        name: func.coalesce(new[name], c[name]) for name in fields.PROFILE_FIELDS
    }
    changes["attributes"] = _merged_attributes(conn, new["attributes"])
    changes["updated_at"] = now
    return changes


def _row_doc(row: _Row) -> dict[str, Any]:
    return {**row.profile, "attributes": row.attributes, "id": row.contact_id}


_CONTACT_COLUMNS = (*fields.PROFILE_FIELDS, "attributes")


def _update_known(conn: Connection, rows: list[_Row], now: datetime) -> None:
    """UPDATE ... FROM the chunk: every matched contact in one statement."""
    if not rows:
        return
    _, r = _json_rows(conn, [_row_doc(row) for row in rows], ("id", *_CONTACT_COLUMNS))
    changes = _changes(conn, r, literal(now, UTCDateTime()))
    conn.execute(update(contacts).where(contacts.c.id == r["id"]).values(changes))


def _create_new(conn: Connection, rows: list[_Row], now: datetime) -> None:
    """INSERT ... SELECT the new contacts and learn their ids. ON CONFLICT covers a
    concurrent writer creating the same email first (PostgreSQL; SQLite has one writer)."""
    c = contacts.c
    stamp = literal(now, UTCDateTime())
    for key, group in (
        (c.email, [r for r in rows if r.email is not None]),
        (c.external_id, [r for r in rows if r.email is None]),
    ):
        if not group:
            continue
        source, r = _json_rows(conn, [_row_doc(row) for row in group], _CONTACT_COLUMNS)
        chosen = select(*(r[n] for n in _CONTACT_COLUMNS), stamp, stamp).select_from(source)
        stmt = _insert(conn, contacts).from_select(
            [*_CONTACT_COLUMNS, "created_at", "updated_at"], chosen.where(true())
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_=_changes(conn, stmt.excluded, stmt.excluded.updated_at)
        ).returning(c.id, key)
        ids = {k: i for i, k in conn.execute(stmt)}
        for row in group:
            row.contact_id = ids[row.profile[key.name]]


def _add_tags(conn: Connection, rows: list[_Row]) -> None:
    pairs = [{"contact_id": r.contact_id, "tag": t} for r in rows for t in r.tags]
    if pairs:
        source, r = _json_rows(conn, pairs, ("contact_id", "tag"))
        chosen = select(r["contact_id"], r["tag"]).select_from(source).where(true())
        stmt = _insert(conn, tables.contact_tags).from_select(["contact_id", "tag"], chosen)
        conn.execute(stmt.on_conflict_do_nothing())


def _join_list(
    conn: Connection, rows: list[_Row], list_id: int, status: str, source: str, now: datetime
) -> int:
    """Add the contacts not yet on the list; a consent record for each one subscribed."""
    if status not in tables.MEMBERSHIP_STATUSES:
        raise errors.InvalidInput.field("status", f"must be one of {tables.MEMBERSHIP_STATUSES}")
    if not rows:
        return 0
    m = tables.list_memberships
    stamp = literal(now, UTCDateTime())
    ids, r = _json_rows(conn, [{"contact_id": row.contact_id} for row in rows], ("contact_id",))
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
        ids, r = _json_rows(conn, [{"contact_id": cid} for cid in joined], ("contact_id",))
        chosen = select(r["contact_id"], literal(list_id), literal(status), literal(source), stamp)
        conn.execute(
            insert(tables.consents).from_select(
                ["contact_id", "list_id", "status", "source", "at"], chosen.select_from(ids)
            )
        )
    return len(joined)
