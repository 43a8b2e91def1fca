"""Engines for the two supported databases, with the settings each needs to be fast and safe.

SQLite: WAL journal, foreign keys on, a busy timeout, and write transactions that take the
write lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of failing on upgrade.
Read-only work can ask for a plain deferred ``BEGIN`` with ``execution_options(readonly=True)``.
PostgreSQL: psycopg 3 with a pool. Both read and write JSON columns with orjson (several
times faster than the standard library on the ingest path).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

from tidings.config import Settings


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def json_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON; the standard library takes what orjson refuses
    (integers beyond 64 bits, for one)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_text(value: Any) -> str:
    """`value` as compact JSON text (SQLite stores JSON columns as text)."""
    return json_bytes(value).decode()


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    """The engine for `url` (default: the settings' database), configured for its dialect."""
    url = normalise_url(url or settings.database_url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, settings)
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        json_serializer=json_bytes,  # psycopg takes bytes as they are
        json_deserializer=orjson.loads,
    )


def _sqlite_engine(url: str, settings: Settings) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        json_serializer=json_text,
        json_deserializer=orjson.loads,
    )
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous}",
            "foreign_keys=ON",
            "busy_timeout=30000",
            "cache_size=-65536",
            "temp_store=MEMORY",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine
