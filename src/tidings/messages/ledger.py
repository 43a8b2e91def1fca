"""The send ledger: one row per send intent, written in the same transaction as the flow
run that decided it (a transactional outbox). Channels deliver queued rows; a row is keyed
by (run, step, occurrence), so an engine step replayed after a crash writes nothing new.

A row's `payload` says what the channel needs besides the template: the flow and run that
sent it (message events — "Email Opened"... — carry `run` and `step` so flows can wait for
them), the step's parameters (a webhook's url and body, a notification's recipient)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from tidings.db import tables

QUEUED = "queued"


def record(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert send intents (dicts of `messages` columns); an intent already recorded for
    the same (run, step, occurrence) is left as it is."""
    if not rows:
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(tables.messages).on_conflict_do_nothing(), list(rows))


def intent_row(
    *,
    contact_id: int,
    channel: str,
    flow_id: int | None,
    run_id: int | None,
    step_id: str | None,
    occurrence: int,
    template: str | None,
    payload: dict[str, Any],
    due_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """The `messages` row of one queued send intent."""
    return {
        "contact_id": contact_id,
        "channel": channel,
        "status": QUEUED,
        "flow_id": flow_id,
        "run_id": run_id,
        "step_id": step_id,
        "occurrence": occurrence,
        "template": template,
        "payload": payload,
        "due_at": due_at,
        "created_at": now,
        "updated_at": now,
    }
