"""Suppression: addresses Tidings must not send to, checked again at send time.

An entry is kept by the SHA-256 of the normalised address, so it outlives the contact:
erasing a person empties the address in clear and keeps the hash, and a later import of
the same address stays suppressed. Scope `all` stops every message (hard bounces, an
erased person); scope `marketing` lets transactional mail through (complaints, a global
unsubscribe). A stronger entry replaces a weaker one, never the other way round."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select, update

from tidings import errors
from tidings.clock import Clock
from tidings.db import rows, tables

ALL = "all"
MARKETING = "marketing"
REASONS = (
    "hard_bounce",
    "soft_bounces",
    "complaint",
    "unsubscribed",
    "erased",
    "manual",
)

_s = tables.suppressions


@dataclass(frozen=True)
class Entry:
    channel: str
    address: str | None
    scope: str
    reason: str
    detail: str | None
    message_id: int | None
    created_at: datetime


def normalise(address: str) -> str:
    """The form addresses are compared in: trimmed and lower-cased (mailbox providers
    treat local parts case-insensitively; phone numbers are E.164 already)."""
    return address.strip().lower()


def address_hash(address: str) -> str:
    return hashlib.sha256(normalise(address).encode()).hexdigest()


def add(
    conn: Connection,
    clock: Clock,
    channel: str,
    address: str,
    *,
    scope: str,
    reason: str,
    detail: str | None = None,
    message_id: int | None = None,
) -> bool:
    """Suppress `address` on `channel`; returns False if it already was, at least as
    widely (a `marketing` entry is widened to `all`, keeping its first reason)."""
    if scope not in (ALL, MARKETING):
        raise errors.InvalidInput.field("scope", "must be 'all' or 'marketing'")
    if reason not in REASONS:
        raise errors.InvalidInput.field("reason", f"must be one of {', '.join(REASONS)}")
    digest = address_hash(address)
    found = conn.execute(
        select(_s.c.id, _s.c.scope).where(_s.c.channel == channel, _s.c.address_hash == digest)
    ).first()
    if found is not None:
        if found.scope == ALL or scope == MARKETING:
            return False
        conn.execute(update(_s).where(_s.c.id == found.id).values(scope=ALL))
        return True
    row = (channel, normalise(address), digest, scope, reason, detail, message_id, clock.now())
    rows.insert_many(conn, _s, _COLUMNS, [row], skip_conflicts=True)
    return True


_COLUMNS = (
    "channel",
    "address",
    "address_hash",
    "scope",
    "reason",
    "detail",
    "message_id",
    "created_at",
)


def remove(conn: Connection, channel: str, address: str) -> bool:
    """Lift the suppression of `address`; False if there was none."""
    done = conn.execute(
        delete(_s).where(_s.c.channel == channel, _s.c.address_hash == address_hash(address))
    )
    return bool(done.rowcount)


def blocked(
    conn: Connection, channel: str, addresses: Collection[str], *, marketing: bool
) -> dict[str, str]:
    """Of `addresses`, those suppressed for this kind of message, with the reason."""
    by_hash = {address_hash(a): a for a in addresses}
    if not by_hash:
        return {}
    scopes = (ALL, MARKETING) if marketing else (ALL,)
    query = select(_s.c.address_hash, _s.c.reason).where(
        _s.c.channel == channel,
        _s.c.scope.in_(scopes),
        rows.among_text(conn, _s.c.address_hash, list(by_hash)),
    )
    return {by_hash[digest]: reason for digest, reason in conn.execute(query)}


def find(conn: Connection, channel: str, address: str) -> Entry | None:
    row = conn.execute(
        select(*_ENTRY).where(_s.c.channel == channel, _s.c.address_hash == address_hash(address))
    ).first()
    return _entry(row) if row is not None else None


def page(conn: Connection, channel: str | None, after: int, limit: int) -> list[tuple[int, Entry]]:
    """Entries by id, after id `after` (cursor pagination)."""
    query = select(_s.c.id, *_ENTRY).where(_s.c.id > after).order_by(_s.c.id).limit(limit)
    if channel is not None:
        query = query.where(_s.c.channel == channel)
    return [(row.id, _entry(row)) for row in conn.execute(query)]


def forget_address(conn: Connection, channel: str, address: str) -> None:
    """Erasure: keep the entry (by hash) but not the address in clear."""
    conn.execute(
        update(_s)
        .where(_s.c.channel == channel, _s.c.address_hash == address_hash(address))
        .values(address=None)
    )


_ENTRY = (
    _s.c.channel,
    _s.c.address,
    _s.c.scope,
    _s.c.reason,
    _s.c.detail,
    _s.c.message_id,
    _s.c.created_at,
)


def _entry(row: Row[*tuple[Any, ...]]) -> Entry:
    return Entry(
        row.channel, row.address, row.scope, row.reason, row.detail, row.message_id, row.created_at
    )
