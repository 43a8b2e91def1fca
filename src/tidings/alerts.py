"""Operator alerts: problems that are ours to fix, not the recipient's (a receiving server
refusing our mail on policy or authentication grounds, a webhook endpoint disabled after
failing again and again). Each is logged as a warning and kept until resolved; the same
kind and subject raised again counts up on the open alert instead of adding another.
`GET /v1/alerts` lists them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from tidings import errors
from tidings.clock import Clock
from tidings.db import tables

log = logging.getLogger(__name__)
_a = tables.alerts


@dataclass(frozen=True)
class Alert:
    id: int
    kind: str
    message: str
    detail: dict[str, Any]
    count: int
    first_at: datetime
    last_at: datetime
    resolved_at: datetime | None


def raise_alert(
    conn: Connection,
    clock: Clock,
    kind: str,
    message: str,
    detail: dict[str, Any] | None = None,
    *,
    subject: str = "",
) -> int:
    """Record (or count again) the open alert of `kind` about `subject` (a domain, an
    endpoint...); returns its id."""
    now = clock.now()
    detail = {**(detail or {}), "subject": subject}
    log.warning("alert: %s", message, extra={"alert": kind, "subject": subject})
    found = conn.execute(
        select(_a.c.id).where(
            _a.c.kind == kind,
            _a.c.resolved_at.is_(None),
            _a.c.detail["subject"].as_string() == subject,
        )
    ).first()
    if found is not None:
        conn.execute(
            update(_a)
            .where(_a.c.id == found.id)
            .values(count=_a.c.count + 1, last_at=now, message=message, detail=detail)
        )
        return int(found.id)
    values = {"kind": kind, "message": message, "detail": detail, "first_at": now, "last_at": now}
    return int(conn.execute(insert(_a).values(values).returning(_a.c.id)).scalar_one())


def listing(conn: Connection, *, include_resolved: bool = False, limit: int = 100) -> list[Alert]:
    """The newest alerts first (open ones only, unless `include_resolved`)."""
    query = select(_a).order_by(_a.c.last_at.desc(), _a.c.id.desc()).limit(limit)
    if not include_resolved:
        query = query.where(_a.c.resolved_at.is_(None))
    return [Alert(**row._mapping) for row in conn.execute(query)]


def resolve(conn: Connection, clock: Clock, alert_id: int) -> None:
    """Mark an alert dealt with; raising the same problem again opens a new one."""
    done = conn.execute(
        update(_a)
        .where(_a.c.id == alert_id, _a.c.resolved_at.is_(None))
        .values(resolved_at=clock.now())
    )
    if not done.rowcount:
        raise errors.NotFound(f"No open alert {alert_id}.")
