"""Consent records: the audit trail of every list status change, with the proof that goes
with it (who changed it, from where, and the wording the contact agreed to).

A record is written in the same transaction as the change it documents, and only when the
status really changed. Sources: `api:<key prefix>` for the REST API, `import`, `form:<key>`,
`unsubscribe`... Removing a membership writes status `removed`."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, Select, and_, insert, literal, or_, select

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import pagination
from tidings.db import tables

REMOVED = "removed"
MAX_TEXT = 10_000


@dataclass(frozen=True)
class Proof:
    """Where a status change came from: `source` (`api:tid_1a2b3c4d`) and what the contact
    saw or sent: their IP, browser user agent and the consent wording."""

    source: str
    ip: str | None = None
    user_agent: str | None = None
    text: str | None = None

    def checked(self, where: str = "consent.") -> Proof:
        """This proof with a valid IP and bounded texts, or `InvalidInput` naming the field."""
        problems: list[errors.FieldError] = []
        if self.ip is not None:
            try:
                ipaddress.ip_address(self.ip)
            except ValueError:
                problems.append(errors.FieldError(f"{where}ip", "is not an IP address"))
        for name, limit in (("user_agent", 1000), ("text", MAX_TEXT)):
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                problems.append(errors.FieldError(f"{where}{name}", f"longer than {limit}"))
        if problems:
            raise errors.InvalidInput(
                "; ".join(f"{p.field}: {p.message}" for p in problems), fields=problems
            )
        return self


def text_hash(text: str | None) -> str | None:
    """SHA-256 of the consent wording, so identical wordings can be grouped and verified."""
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def _values(proof: Proof, clock: Clock) -> dict[str, Any]:
    return {
        "source": proof.source,
        "ip": proof.ip,
        "user_agent": proof.user_agent,
        "text": proof.text,
        "text_hash": text_hash(proof.text),
        "at": clock.now(),
    }


def record(
    conn: Connection,
    clock: Clock,
    proof: Proof,
    *,
    contact_id: int,
    list_id: int | None,
    status: str,
) -> None:
    """Write one consent record: `contact_id` got `status` on `list_id`."""
    conn.execute(
        insert(tables.consents).values(
            contact_id=contact_id, list_id=list_id, status=status, **_values(proof, clock)
        )
    )


def record_from(
    conn: Connection, clock: Clock, proof: Proof, rows: Select[Any], *, status: str
) -> int:
    """Write one record per row of `rows` (columns `contact_id`, `list_id`) in one
    INSERT ... SELECT; returns how many were written."""
    values = {"status": status, **_values(proof, clock)}
    constants = [literal(v, tables.consents.c[k].type).label(k) for k, v in values.items()]
    stmt: Insert = insert(tables.consents).from_select(
        ["contact_id", "list_id", *values], rows.add_columns(*constants)
    )
    # INSERT row counts are only kept when asked for (psycopg otherwise reports -1).
    return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount


def for_contact(
    conn: Connection, contact_id: int, *, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """A contact's consent records, newest first, one page: `{data, next_cursor}`."""
    c, lists = tables.consents, tables.lists
    query = (
        select(c, lists.c.key.label("list"))
        .outerjoin(lists, lists.c.id == c.c.list_id)
        .where(c.c.contact_id == contact_id)
        .order_by(c.c.at.desc(), c.c.id.desc())
        .limit(pagination.check_limit(limit) + 1)
    )
    if cursor:
        at, last_id = pagination.decode("consents", cursor, (datetime, int))
        query = query.where(or_(c.c.at < at, and_(c.c.at == at, c.c.id < last_id)))
    rows = conn.execute(query).all()
    items, next_cursor = pagination.page(
        rows, limit, lambda r: pagination.encode("consents", r.at, r.id)
    )
    return {"data": [_render(r) for r in items], "next_cursor": next_cursor}


def _render(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "list": row.list,
        "status": row.status,
        "source": row.source,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "text": row.text,
        "text_hash": row.text_hash,
        "at": row.at,
    }
