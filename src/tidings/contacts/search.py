"""Paginated, filtered reading: contacts by profile, tag, list and attribute, and one
contact's events, newest first. Every filter is a bound parameter; pages are keyset pages
with opaque cursors (`contacts.pagination`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from tidings import errors
from tidings.contacts import fields, lists, pagination, profiles
from tidings.contacts.profiles import Problems
from tidings.db import tables


@dataclass(frozen=True)
class Search:
    """Filters for `contacts`; all given ones must hold. `attributes` are `name:value`
    strings: the value is read as JSON when it parses (`30`, `true`, `"30"`), else as text."""

    email: str | None = None
    external_id: str | None = None
    phone: str | None = None
    tags: Sequence[str] = ()
    list_key: str | None = None
    list_status: str | None = None
    attributes: Sequence[str] = ()


def contacts(
    conn: Connection,
    filters: Search,
    *,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A page of contacts matching `filters`, by id: `{data, next_cursor}`."""
    c = tables.contacts
    query = select(c).where(*_conditions(conn.dialect.name, filters))
    if cursor:
        (after,) = pagination.decode("contacts", cursor, (int,))
        query = query.where(c.c.id > after)
    rows = conn.execute(query.order_by(c.c.id).limit(pagination.check_limit(limit) + 1)).all()
    items, next_cursor = pagination.page(rows, limit, lambda r: pagination.encode("contacts", r.id))
    return {"data": profiles.render(conn, items), "next_cursor": next_cursor}


def _conditions(dialect: str, f: Search) -> list[ColumnElement[bool]]:
    c, t = tables.contacts, tables.contact_tags
    problems = Problems()
    out: list[ColumnElement[bool]] = []
    if f.email is not None:
        out.append(c.c.email == problems.check(fields.email, f.email, "email"))
    if f.phone is not None:
        out.append(c.c.phone == problems.check(fields.phone, f.phone, None, "phone"))
    if f.external_id is not None:
        out.append(c.c.external_id == f.external_id)
    for tag in f.tags:
        out.append(exists().where(t.c.contact_id == c.c.id, t.c.tag == tag.strip()))
    if f.list_status is not None and f.list_key is None:
        problems.fields.append(errors.FieldError("list_status", "needs a list"))
    if f.list_key is not None:
        status = f.list_status and problems.check(lists.check_status, f.list_status, "list_status")
        out.append(_on_list(f.list_key, status))
    for text in f.attributes:
        parsed = problems.check(parse_attribute_filter, text)
        if parsed:
            out.append(attribute_equals(dialect, *parsed))
    problems.raise_any()
    return out


def _on_list(key: str, status: str | None) -> ColumnElement[bool]:
    m, lst = tables.list_memberships, tables.lists
    query = exists().where(
        m.c.contact_id == tables.contacts.c.id, m.c.list_id == lst.c.id, lst.c.key == key
    )
    return query.where(m.c.status == status) if status else query


def parse_attribute_filter(text: str, where: str = "attribute") -> tuple[str, Any]:
    """`plan:pro` -> ("plan", "pro"); `age:30` -> ("age", 30); `code:"30"` -> ("code", "30")."""
    name, sep, raw = text.partition(":")
    if not sep or not name or '"' in name:
        raise errors.InvalidInput.field(where, "must be name:value (a name without '\"')")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, dict | list):
        raise errors.InvalidInput.field(
            where, "the value must be text, a number, true/false or null"
        )
    return name, value


def attribute_equals(dialect: str, name: str, value: Any) -> ColumnElement[bool]:
    """`attributes[name] == value`, with JSON types respected (`30` is not `"30"`), as
    JSONB equality on PostgreSQL and `json_type`/`json_extract` on SQLite."""
    attrs = tables.contacts.c.attributes
    if dialect == "postgresql":
        return attrs[name] == bindparam(None, value, type_=JSONB)
    path = bindparam(None, f'$."{name}"', type_=String())
    kind = func.json_type(attrs, path)
    if value is None or isinstance(value, bool):
        return kind == json.dumps(value)
    if isinstance(value, int | float):
        return and_(kind.in_(["integer", "real"]), func.json_extract(attrs, path) == value)
    return and_(kind == "text", func.json_extract(attrs, path) == value)


def events(
    conn: Connection,
    contact_id: int,
    *,
    type: str | None = None,
    name: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A page of a contact's events, newest first by (timestamp, id): `{data, next_cursor}`.
    `NotFound` when there is no such contact."""
    profiles.get_row(conn, contact_id)
    e = tables.events
    query = select(*(e.c[col] for col in EVENT_FIELDS)).where(e.c.contact_id == contact_id)
    if type is not None:
        query = query.where(e.c.type == type)
    if name is not None:
        query = query.where(e.c.name == name)
    if cursor:
        at, last = pagination.decode(f"events:{contact_id}", cursor, (datetime, int))
        query = query.where(or_(e.c.timestamp < at, and_(e.c.timestamp == at, e.c.id < last)))
    query = query.order_by(e.c.timestamp.desc(), e.c.id.desc())
    rows = conn.execute(query.limit(pagination.check_limit(limit) + 1)).all()
    items, next_cursor = pagination.page(
        rows, limit, lambda r: pagination.encode(f"events:{contact_id}", r.timestamp, r.id)
    )
    return {"data": [dict(r._mapping) for r in items], "next_cursor": next_cursor}


EVENT_FIELDS = (
    "id",
    "message_id",
    "type",
    "name",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "user_id",
    "anonymous_id",
)
