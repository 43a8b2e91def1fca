"""What the engine may ask about contacts, read from the database for a batch of runs.

`BatchFacts` loads each contact's zone and attributes once per batch and the recent sends
of every capped channel in one query; conditions (`if`, exit conditions) load a snapshot of
only what they mention. Sends decided earlier in the same batch count towards frequency
caps too, so two flows advancing one contact in one batch cannot both pass a cap."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tidings.conditions import evaluate, snapshot
from tidings.conditions.evaluate import Explanation
from tidings.conditions.nodes import Condition
from tidings.db import tables
from tidings.segments import membership

#: Whether a template exists, by (channel, key). Until templates exist, every one does.
TemplateCheck = Callable[[str, str], bool]


def any_template(channel: str, key: str) -> bool:
    return True


class BatchFacts:
    """Facts for the contacts of one batch, at `now`."""

    def __init__(
        self,
        conn: Connection,
        now: datetime,
        contact_ids: Collection[int],
        *,
        sends_since: datetime | None = None,
        templates: TemplateCheck = any_template,
    ) -> None:
        self.conn, self.now, self.templates = conn, now, templates
        self.profiles = _profiles(conn, contact_ids)
        self.sends: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        if sends_since is not None and contact_ids:
            self.sends.update(_recent_sends(conn, contact_ids, sends_since))

    def for_contact(self, contact_id: int) -> ContactFacts:
        return ContactFacts(self, contact_id)

    def sent(self, contact_id: int, channel: str, at: datetime) -> None:
        """A send decided in this batch (not yet in the ledger)."""
        self.sends[(contact_id, channel)].append(at)


class ContactFacts:
    """`engine.Facts` for one contact of a batch."""

    def __init__(self, batch: BatchFacts, contact_id: int) -> None:
        self.batch, self.contact_id = batch, contact_id
        self.profile = batch.profiles.get(contact_id, {})

    def explain(self, condition: Condition) -> Explanation:
        conn, now = self.batch.conn, self.batch.now
        snap = snapshot.load(conn, self.contact_id, condition, now)

        def in_segment(key: str, contact_id: int) -> bool:
            return membership.is_member(conn, key, contact_id)

        return evaluate.explain(condition, snap, now=now, segments=in_segment)

    def recent_sends(self, channel: str, since: datetime) -> Sequence[datetime]:
        return [t for t in self.batch.sends.get((self.contact_id, channel), []) if t >= since]

    def timezone(self) -> str | None:
        zone = self.profile.get("timezone")
        return zone if isinstance(zone, str) else None

    def attribute(self, name: str) -> Any:
        if name in self.profile:
            return self.profile[name]
        attributes = self.profile.get("attributes") or {}
        return attributes.get(name) if isinstance(attributes, dict) else None

    def template_exists(self, channel: str, key: str) -> bool:
        return self.batch.templates(channel, key)


def _profiles(conn: Connection, contact_ids: Collection[int]) -> dict[int, dict[str, Any]]:
    c = tables.contacts
    out: dict[int, dict[str, Any]] = {}
    ids = sorted(contact_ids)
    for start in range(0, len(ids), 5000):
        query = select(c.c.id, c.c.timezone, c.c.attributes, c.c.created_at).where(
            c.c.id.in_(ids[start : start + 5000])
        )
        for row in conn.execute(query):
            out[row.id] = {
                "timezone": row.timezone,
                "attributes": row.attributes or {},
                "created_at": row.created_at,
            }
    return out


def _recent_sends(
    conn: Connection, contact_ids: Collection[int], since: datetime
) -> dict[tuple[int, str], list[datetime]]:
    m = tables.messages
    out: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    ids = sorted(contact_ids)
    for start in range(0, len(ids), 5000):
        query = select(m.c.contact_id, m.c.channel, m.c.created_at).where(
            m.c.contact_id.in_(ids[start : start + 5000]),
            m.c.created_at >= since,
            m.c.status.not_in(("failed", "suppressed")),
        )
        for row in conn.execute(query):
            out[(row.contact_id, row.channel)].append(row.created_at)
    return out
