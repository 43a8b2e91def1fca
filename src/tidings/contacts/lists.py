"""Lists (subscription topics) and each contact's status on them.

A membership is `subscribed`, `pending` (waiting for a double opt-in confirmation) or
`unsubscribed`. Every status change writes a consent record in the same transaction.
Membership writes lock the list row (PostgreSQL), so two requests changing one list queue
instead of both reading the old status."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import consent, pagination
from tidings.db import tables

STATUSES = tables.MEMBERSHIP_STATUSES
MAX_BULK = 10_000
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_EDITABLE = ("name", "description", "double_opt_in")


# -- lists ------------------------------------------------------------------------------


def check_key(key: Any, where: str = "key") -> str:
    """A list key: a lower-case slug (`a-z`, `0-9`, `-`, `_`), at most 100 characters."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise errors.InvalidInput.field(
            where, "must be a lower-case slug: a-z, 0-9, '-' and '_', at most 100 characters"
        )
    return key


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _EDITABLE:
        if name not in changes:
            continue
        value = changes[name]
        if name == "double_opt_in" and not isinstance(value, bool):
            raise errors.InvalidInput.field(name, "must be true or false")
        if name == "name" and (not isinstance(value, str) or not 0 < len(value.strip()) <= 255):
            raise errors.InvalidInput.field(name, "must be 1 to 255 characters")
        if name == "description" and (not isinstance(value, str) or len(value) > 10_000):
            raise errors.InvalidInput.field(name, "must be a text of at most 10000 characters")
        out[name] = value.strip() if name == "name" else value
    return out


def create(conn: Connection, clock: Clock, values: Mapping[str, Any]) -> dict[str, Any]:
    """A new list from `{key, name, description?, double_opt_in?}`; 409 if the key is taken."""
    key = check_key(values.get("key"))
    row = {"description": "", "double_opt_in": False, **_checked(values)}
    if "name" not in row:
        raise errors.InvalidInput.field("name", "is required")
    if conn.execute(select(tables.lists.c.id).where(tables.lists.c.key == key)).first():
        raise _key_taken(key)
    now = clock.now()
    try:
        conn.execute(insert(tables.lists).values(key=key, created_at=now, updated_at=now, **row))
    except IntegrityError:
        raise _key_taken(key) from None
    return get(conn, key)


def _key_taken(key: str) -> errors.Conflict:
    return errors.Conflict(
        f"key: a list with key {key!r} exists",
        fields=[errors.FieldError("key", "a list with this key exists")],
    )


def find(conn: Connection, key: str, *, lock: bool = False) -> Row[Any]:
    """The list row for `key` (locked against other membership writers when `lock`)."""
    query = select(tables.lists).where(tables.lists.c.key == key)
    if lock:
        query = query.with_for_update(key_share=True)
    row = conn.execute(query).first()
    if row is None:
        raise errors.NotFound(f"No list with key {key!r}.")
    return row


def get(conn: Connection, key: str) -> dict[str, Any]:
    """One list with its member counts by status."""
    row = find(conn, key)
    return _render(row, _counts(conn, [row.id]).get(row.id, {}))


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every list, by key, with member counts."""
    rows = conn.execute(select(tables.lists).order_by(tables.lists.c.key)).all()
    counts = _counts(conn, [r.id for r in rows])
    return [_render(r, counts.get(r.id, {})) for r in rows]


def update_list(
    conn: Connection, clock: Clock, key: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change a list's name, description or double opt-in setting."""
    row = find(conn, key)
    values = _checked(changes)
    if values:
        conn.execute(
            update(tables.lists)
            .where(tables.lists.c.id == row.id)
            .values(updated_at=clock.now(), **values)
        )
    return get(conn, key)


def delete_list(conn: Connection, key: str) -> None:
    """Delete a list and its memberships; its consent records stay, without the list."""
    row = find(conn, key)
    conn.execute(delete(tables.lists).where(tables.lists.c.id == row.id))


def _counts(conn: Connection, list_ids: list[int]) -> dict[int, dict[str, int]]:
    m = tables.list_memberships
    rows = conn.execute(
        select(m.c.list_id, m.c.status, func.count().label("n"))
        .where(m.c.list_id.in_(list_ids))
        .group_by(m.c.list_id, m.c.status)
    )
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.list_id, {})[row.status] = row.n
    return counts


def _render(row: Row[Any], counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "double_opt_in": row.double_opt_in,
        "member_counts": {status: counts.get(status, 0) for status in STATUSES},
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# -- memberships ------------------------------------------------------------------------


def check_status(status: Any, where: str = "status") -> str:
    if status not in STATUSES:
        raise errors.InvalidInput.field(where, f"must be one of {', '.join(STATUSES)}")
    return str(status)


def effective_status(double_opt_in: bool, requested: str, confirmed: bool) -> str:
    """What a request for `requested` records: on a double opt-in list, `subscribed` is
    `pending` until the contact confirms (or the caller says they already did)."""
    if requested == "subscribed" and double_opt_in and not confirmed:
        return "pending"
    return requested


def _unchanged_by(target: str, requested: str) -> set[str]:
    # A `pending` that stands for a not yet confirmed `subscribed` never demotes a
    # contact who is subscribed already.
    return {target, "subscribed"} if target != requested else {target}


def set_status(
    conn: Connection,
    clock: Clock,
    key: str,
    contact_id: int,
    requested: str,
    proof: consent.Proof,
    *,
    confirmed: bool = False,
) -> dict[str, Any]:
    """Put `contact_id` on list `key` with `requested` status (see `effective_status`);
    returns `{list, contact_id, status, changed}`."""
    lst = find(conn, key, lock=True)
    _require_contacts(conn, [contact_id], where="contact_id")
    target = effective_status(lst.double_opt_in, check_status(requested), confirmed)
    m, now = tables.list_memberships, clock.now()
    current = conn.execute(
        select(m.c.status).where(m.c.list_id == lst.id, m.c.contact_id == contact_id)
    ).scalar()
    if current in _unchanged_by(target, requested):
        return {"list": key, "contact_id": contact_id, "status": current, "changed": False}
    if current is None:
        conn.execute(
            insert(m).values(
                list_id=lst.id, contact_id=contact_id, status=target, created_at=now, updated_at=now
            )
        )
    else:
        conn.execute(
            update(m)
            .where(m.c.list_id == lst.id, m.c.contact_id == contact_id)
            .values(status=target, updated_at=now)
        )
    consent.record(conn, clock, proof, contact_id=contact_id, list_id=lst.id, status=target)
    if target == "subscribed":
        log_joined(conn, clock, lst, [contact_id])
    return {"list": key, "contact_id": contact_id, "status": target, "changed": True}


def remove(conn: Connection, clock: Clock, key: str, contact_id: int, proof: consent.Proof) -> None:
    """Take `contact_id` off list `key` (a consent record with status `removed` says so)."""
    lst = find(conn, key, lock=True)
    m = tables.list_memberships
    gone = conn.execute(delete(m).where(m.c.list_id == lst.id, m.c.contact_id == contact_id))
    if gone.rowcount == 0:
        raise errors.NotFound(f"Contact {contact_id} is not on list {key!r}.")
    consent.record(
        conn, clock, proof, contact_id=contact_id, list_id=lst.id, status=consent.REMOVED
    )


def set_status_many(
    conn: Connection,
    clock: Clock,
    key: str,
    contact_ids: Iterable[int],
    requested: str,
    proof: consent.Proof,
    *,
    confirmed: bool = False,
) -> dict[str, Any]:
    """`set_status` for many contacts in three set-based statements (consent records, then
    updates, then inserts); returns `{list, status, changed, unchanged}`."""
    lst = find(conn, key, lock=True)
    ids = sorted(set(contact_ids))
    if not 0 < len(ids) <= MAX_BULK:
        raise errors.InvalidInput.field("contact_ids", f"must hold 1 to {MAX_BULK} ids")
    _require_contacts(conn, ids, where="contact_ids")
    target = effective_status(lst.double_opt_in, check_status(requested), confirmed)
    keep, now = _unchanged_by(target, requested), clock.now()
    c, m = tables.contacts, tables.list_memberships
    changing = (
        select(c.c.id.label("contact_id"), literal(lst.id, tables.lists.c.id.type).label("list_id"))
        .outerjoin(m, and_(m.c.contact_id == c.c.id, m.c.list_id == lst.id))
        .where(c.c.id.in_(ids), m.c.status.is_(None) | m.c.status.not_in(sorted(keep)))
    )
    joining = (
        conn.scalars(changing.with_only_columns(c.c.id)).all() if target == "subscribed" else []
    )
    changed = consent.record_from(conn, clock, proof, changing, status=target)
    log_joined(conn, clock, lst, joining)
    conn.execute(
        update(m)
        .where(m.c.list_id == lst.id, m.c.contact_id.in_(ids), m.c.status.not_in(sorted(keep)))
        .values(status=target, updated_at=now)
    )
    already = select(m.c.contact_id).where(m.c.list_id == lst.id, m.c.contact_id == c.c.id)
    new_rows = select(
        c.c.id, *(literal(v, m.c[k].type) for k, v in _new_row(lst.id, target, now).items())
    ).where(c.c.id.in_(ids), ~already.exists())
    conn.execute(insert(m).from_select(["contact_id", *_new_row(lst.id, target, now)], new_rows))
    return {"list": key, "status": target, "changed": changed, "unchanged": len(ids) - changed}


#: The event a contact's joining a list (becoming subscribed) appends to the log.
JOINED = "List Joined"


def log_joined(conn: Connection, clock: Clock, lst: Row[Any], contact_ids: Iterable[int]) -> None:
    """Append a "List Joined" event per contact (flows trigger on it: `list_joined`)."""
    now = clock.now()
    rows = [
        {
            "message_id": f"list:{lst.id}:{cid}:joined:{now.isoformat()}",
            "type": "track",
            "name": JOINED,
            "contact_id": cid,
            "properties": {"list": lst.key, "list_id": lst.id},
            "context": {},
            "timestamp": now,
            "received_at": now,
            "source": "tidings",
        }
        for cid in contact_ids
    ]
    if rows:
        conn.execute(insert(tables.events), rows)


def _new_row(list_id: int, status: str, now: Any) -> dict[str, Any]:
    return {"list_id": list_id, "status": status, "created_at": now, "updated_at": now}


def _require_contacts(conn: Connection, ids: list[int], *, where: str) -> None:
    c = tables.contacts
    found = set(conn.execute(select(c.c.id).where(c.c.id.in_(ids))).scalars())
    missing = [i for i in ids if i not in found]
    if missing and where == "contact_id":
        raise errors.NotFound(f"No contact with id {missing[0]}.")
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise errors.InvalidInput.field(where, f"no contact with id {shown}")


def members(
    conn: Connection,
    key: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A page of a list's members by contact id: `{data, next_cursor}`."""
    lst = find(conn, key)
    c, m = tables.contacts, tables.list_memberships
    query = (
        select(
            m.c.contact_id, c.c.email, c.c.external_id, m.c.status, m.c.created_at, m.c.updated_at
        )
        .join(c, c.c.id == m.c.contact_id)
        .where(m.c.list_id == lst.id)
        .order_by(m.c.contact_id)
        .limit(pagination.check_limit(limit) + 1)
    )
    if status is not None:
        query = query.where(m.c.status == check_status(status))
    if cursor:
        (after,) = pagination.decode(f"members:{key}", cursor, (int,))
        query = query.where(m.c.contact_id > after)
    rows = conn.execute(query).all()
    items, next_cursor = pagination.page(
        rows, limit, lambda r: pagination.encode(f"members:{key}", r.contact_id)
    )
    return {"data": [dict(r._mapping) for r in items], "next_cursor": next_cursor}


def for_contacts(conn: Connection, contact_ids: list[int]) -> dict[int, list[dict[str, str]]]:
    """Each contact's `[{key, status}]`, sorted by key, in one query."""
    m, lists = tables.list_memberships, tables.lists
    rows = conn.execute(
        select(m.c.contact_id, lists.c.key, m.c.status)
        .join(lists, lists.c.id == m.c.list_id)
        .where(m.c.contact_id.in_(contact_ids))
        .order_by(m.c.contact_id, lists.c.key)
    )
    out: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        out.setdefault(row.contact_id, []).append({"key": row.key, "status": row.status})
    return out
