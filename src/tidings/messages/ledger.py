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

from tidings.db import rows as db_rows
from tidings.db import tables

QUEUED = "queued"


#: The columns of a send intent's row, in the order `intent_row` gives them.
INTENT_COLUMNS = (
    "contact_id",
    "channel",
    "status",
    "flow_id",
    "run_id",
    "step_id",
    "occurrence",
    "template",
    "payload",
    "due_at",
    "created_at",
    "updated_at",
)


def record(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert send intents (`intent_row`s) in one statement; an intent already recorded
    for the same (run, step, occurrence) is left as it is."""
    db_rows.insert_many(conn, tables.messages, INTENT_COLUMNS, rows, skip_conflicts=True)


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
) -> tuple[Any, ...]:
    """The `messages` row of one queued send intent (values of `INTENT_COLUMNS`)."""
    return (
        contact_id,
        channel,
        QUEUED,
        flow_id,
        run_id,
        step_id,
        occurrence,
        template,
        payload,
        due_at,
        now,
        now,
    )
