"""What happens to a message, appended to the event log ("Email Sent", "Email Bounced"...)
so flows can wait for it and segments can count it, like any event a shop sends.

Each event's `messageId` is `message:<ledger id>:<what>`, so writing one twice (a retried
batch, a bounce reported twice) stores it once. Properties always name the ledger row
(`message`), the channel and template, and for flow messages the flow, run and step:
`wait_until: {opened: STEP}` matches on `run` and `step`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tidings.db import rows, tables

EMAIL_SENT = "Email Sent"
EMAIL_DELIVERED = "Email Delivered"
EMAIL_BOUNCED = "Email Bounced"
EMAIL_COMPLAINED = "Email Complained"
EMAIL_FAILED = "Email Failed"
EMAIL_OPENED = "Email Opened"
EMAIL_CLICKED = "Email Clicked"
EMAIL_UNSUBSCRIBED = "Email Unsubscribed"
#: The `source` of the events Tidings writes about its own messages.
SOURCE = "tidings"

_COLUMNS = (
    "message_id",
    "type",
    "name",
    "contact_id",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "source",
)


@dataclass(frozen=True)
class MessageEvent:
    """One thing that happened to ledger row `message_id`; `what` makes it unique among
    that message's events (`sent`, `bounce:17`, `open:3`...)."""

    message_id: int
    contact_id: int | None
    name: str
    what: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


def message_properties(row: Mapping[str, Any]) -> dict[str, Any]:
    """The properties every event about a ledger row carries, from the row's columns
    (`id`, `channel`, `template`, `step_id`, `run_id`, `payload`)."""
    payload = row.get("payload") or {}
    found = {
        "message": row["id"],
        "channel": row.get("channel"),
        "template": row.get("template"),
        "flow": payload.get("flow"),
        "run": row.get("run_id"),
        "step": row.get("step_id"),
    }
    return {name: value for name, value in found.items() if value is not None}


def append(conn: Connection, now: datetime, events: Sequence[MessageEvent]) -> None:
    """Append `events` to the log in one statement (ones already there are skipped)."""
    batch: list[tuple[Any, ...]] = [
        (
            f"message:{e.message_id}:{e.what}",
            "track",
            e.name,
            e.contact_id,
            dict(e.properties),
            {},
            e.at,
            now,
            SOURCE,
        )
        for e in events
        if e.contact_id is not None  # a contact erased since has no log to write to
    ]
    rows.insert_many(conn, tables.events, _COLUMNS, batch, skip_conflicts=True)
