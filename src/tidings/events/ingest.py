"""Ingest: a request body becomes rows appended to the event log, all or nothing.

The request path only validates, de-duplicates (`messageId`) and appends; everything that
reacts to events runs in the worker. One request is one multi-row
``INSERT ... ON CONFLICT (message_id) DO NOTHING`` in one transaction, committed before the
caller answers, so an accepted event is durable and a repeated `messageId` is stored once."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.dml import Insert

from tidings import errors
from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import spec

KINDS = (*spec.EVENT_TYPES, "batch")


def ingest(
    engine: Engine, clock: Clock, settings: Settings, kind: str, body: bytes, source: str
) -> int:
    """Validate `body` (one call of type `kind`, or a batch) and append it durably; returns
    how many calls it held. Raises InvalidInput/PayloadTooLarge and stores nothing if any
    call is bad."""
    env = spec.Envelope(clock.now(), source)
    found = rows(parse_json(body), kind, env, settings.max_event_bytes)
    with engine.begin() as conn:
        append(conn, found)
    return len(found)


def parse_json(body: bytes) -> Any:
    """The JSON document in `body`, or InvalidInput naming `body`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput.field("body", f"is not valid JSON ({exc})") from None


def rows(document: Any, kind: str, env: spec.Envelope, max_event_bytes: int) -> list[spec.Row]:
    """Event-log rows for a parsed body, without repeated messageIds (first one wins).

    Every problem in every call is reported together: oversized calls first (413), then
    invalid ones (422)."""
    if kind == "batch":
        calls, where = _batch_calls(document, env), "batch[{}]."
    else:
        calls, where = [document], ""
    problems: spec.Problems = []
    too_large = _measure(calls, where, max_event_bytes, problems)
    if too_large:
        raise errors.PayloadTooLarge(
            f"{too_large[0].field}: {too_large[0].message}", fields=too_large
        )
    found: list[spec.Row] = []
    for index, call in enumerate(calls):
        call_kind = kind if kind != "batch" else _call_type(call, index, problems)
        if call_kind is not None:
            row = spec.to_row(call, call_kind, where.format(index), env, problems)
            if row is not None:
                found.append(row)
    if problems:
        raise errors.InvalidInput(_summary(problems), fields=problems)
    return _first_of_each_message(found)


def append(conn: Connection, found: Sequence[spec.Row]) -> None:
    """One set-based insert of `found` into the log; rows whose messageId is already
    stored are skipped."""
    if not found:
        return
    if conn.dialect.name == "postgresql":
        # One parameter, however many rows: PostgreSQL expands the JSON array itself, so
        # neither SQLAlchemy nor psycopg handles ~1,000 separate bind values per batch.
        conn.execute(_pg_insert(), {"rows": orjson.dumps(found).decode()})
    else:
        conn.execute(_sqlite_insert(), list(found))  # executemany: one prepared statement


COLUMNS = (
    "message_id",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "sent_at",
    "source",
)


@functools.cache
def _pg_insert() -> Insert:
    """INSERT INTO events (...) SELECT ... FROM jsonb_to_recordset(:rows) ON CONFLICT
    (message_id) DO NOTHING."""
    events = tables.events
    recordset = (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
        .table_valued(*(column(name, events.c[name].type) for name in COLUMNS))
        .render_derived(name="call", with_types=True)
    )
    return (
        postgresql.insert(events)
        .from_select(COLUMNS, select(*(recordset.c[name] for name in COLUMNS)))
        .on_conflict_do_nothing(index_elements=[events.c.message_id])
    )


@functools.cache
def _sqlite_insert() -> Insert:
    events = tables.events
    return sqlite.insert(events).on_conflict_do_nothing(index_elements=[events.c.message_id])


def _batch_calls(document: Any, env: spec.Envelope) -> list[Any]:
    if not isinstance(document, dict):
        raise errors.InvalidInput.field("body", "must be a JSON object with a `batch` list")
    calls = document.get("batch")
    if not isinstance(calls, list):
        raise errors.InvalidInput.field("batch", "must be a list of calls")
    problems: spec.Problems = []
    env.sent_at = spec.parse_time(document.get("sentAt"), "sentAt", problems)
    context = document.get("context")
    if context is not None and not isinstance(context, dict):
        problems.append(errors.FieldError("context", "must be a JSON object"))
    if problems:
        raise errors.InvalidInput(_summary(problems), fields=problems)
    env.context = context or None
    return calls


def _call_type(call: Any, index: int, problems: spec.Problems) -> str | None:
    kind = call.get("type") if isinstance(call, dict) else None
    if kind in spec.EVENT_TYPES:
        return str(kind)
    problems.append(
        errors.FieldError(f"batch[{index}].type", f"must be one of {', '.join(spec.EVENT_TYPES)}")
    )
    return None


def _measure(
    calls: list[Any], where: str, limit: int, problems: spec.Problems
) -> list[errors.FieldError]:
    """Calls whose JSON is longer than `limit` bytes (measured compact, as re-serialised);
    calls holding a NUL character, which PostgreSQL cannot store, go to `problems`."""
    too_large = []
    for index, call in enumerate(calls):
        encoded = orjson.dumps(call)
        if len(encoded) > limit:
            name = where.format(index).rstrip(".") or "body"
            too_large.append(
                errors.FieldError(name, f"is {len(encoded)} bytes; the limit is {limit}")
            )
        elif b"\\u0000" in encoded and _holds_nul(call):
            name = where.format(index).rstrip(".") or "body"
            problems.append(errors.FieldError(name, "contains a NUL character (\\u0000)"))
    return too_large


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _first_of_each_message(found: list[spec.Row]) -> list[spec.Row]:
    seen: dict[str, spec.Row] = {}
    for row in found:
        seen.setdefault(row["message_id"], row)
    return found if len(seen) == len(found) else list(seen.values())


def _summary(problems: spec.Problems) -> str:
    shown = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
    more = len(problems) - 5
    return shown + (f" (and {more} more)" if more > 0 else "")
