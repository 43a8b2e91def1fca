"""API keys: created once and shown once, stored as a SHA-256 hash behind a visible prefix.

Scopes: ``write`` ingests events (the Segment write key), ``read`` reads resources, ``admin``
does everything. Verified keys are remembered briefly in memory so ingest never waits on a
key lookup."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update

from tidings import errors
from tidings.clock import Clock
from tidings.db import tables

SCOPES = tables.API_KEY_SCOPES
_GRANTS = {"admin": {"admin", "write", "read"}, "write": {"write"}, "read": {"read"}}


@dataclass(frozen=True)
class ApiKey:
    id: int
    prefix: str
    scope: str
    name: str

    def allows(self, needed: str) -> bool:
        return needed in _GRANTS[self.scope]


def prefix_of(key: str) -> str:
    """The visible prefix of a full key (`tid_1a2b3c4d`); the secret part may contain `_`."""
    parts = key.split("_", 2)
    return "_".join(parts[:2]) if len(parts) == 3 else ""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(conn: Connection, clock: Clock, scope: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key; returns it with the full secret, which is never stored or shown again."""
    if scope not in SCOPES:
        raise errors.InvalidInput.field("scope", f"must be one of {', '.join(SCOPES)}")
    prefix = "tid_" + secrets.token_hex(4)
    full = f"{prefix}_{secrets.token_urlsafe(24)}"
    row = conn.execute(
        insert(tables.api_keys)
        .values(
            prefix=prefix, secret_hash=_hash(full), scope=scope, name=name, created_at=clock.now()
        )
        .returning(tables.api_keys.c.id)
    ).one()
    return ApiKey(row.id, prefix, scope, name), full


def list_keys(conn: Connection) -> list[dict[str, object]]:
    """Every key that is not revoked, without secrets."""
    k = tables.api_keys
    rows = conn.execute(
        select(k.c.id, k.c.prefix, k.c.scope, k.c.name, k.c.created_at)
        .where(k.c.revoked_at.is_(None))
        .order_by(k.c.id)
    )
    return [dict(r._mapping) for r in rows]


def revoke(conn: Connection, clock: Clock, prefix: str) -> None:
    k = tables.api_keys
    done = conn.execute(
        update(k)
        .where(k.c.prefix == prefix, k.c.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    if done.rowcount == 0:
        raise errors.NotFound(f"No active API key with prefix {prefix}.")


class KeyVerifier:
    """Checks presented keys against the database, remembering good ones for `ttl` seconds."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self._engine = engine
        self._ttl = ttl
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def verify(self, presented: str) -> ApiKey:
        with self._lock:
            hit = self._cache.get(presented)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        key = self._lookup(presented)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[presented] = (key, time.monotonic() + self._ttl)
        return key

    def _lookup(self, presented: str) -> ApiKey:
        prefix = prefix_of(presented)
        k = tables.api_keys
        with self._engine.connect().execution_options(readonly=True) as conn:
            row = conn.execute(
                select(k.c.id, k.c.prefix, k.c.scope, k.c.name, k.c.secret_hash).where(
                    k.c.prefix == prefix, k.c.revoked_at.is_(None)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(presented)):
            raise errors.Unauthorized("The API key is not valid.")
        return ApiKey(row.id, row.prefix, row.scope, row.name)
