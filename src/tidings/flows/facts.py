"""What the engine may ask about contacts, read from the database for a batch of runs.

`BatchFacts` loads each contact's zone and attributes once per batch (when the engine
first asks for one) and the recent sends of every capped channel in one query; conditions
(`if`, exit conditions) load a snapshot of only what they mention. Sends decided earlier in
the same batch count towards frequency caps too, so two flows advancing one contact in one
batch cannot both pass a cap."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tidings.conditions import evaluate, snapshot
from tidings.conditions.evaluate import Explanation
from tidings.conditions.nodes import Condition
from tidings.db import rows, tables
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
        self.contact_ids = contact_ids
        self.zones: dict[int, str | None] | None = None
        self.profiles: dict[int, dict[str, Any]] | None = None
        self.sends: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        if sends_since is not None and contact_ids:
            self.sends.update(_recent_sends(conn, contact_ids, sends_since))

    def for_contact(self, contact_id: int) -> ContactFacts:
        return ContactFacts(self, contact_id)

    def zone(self, contact_id: int) -> str | None:
        """The contact's time zone as stored; the whole batch's are read at the first ask
        (a batch whose flows never ask reads none)."""
        if self.profiles is not None:
            return self.profiles.get(contact_id, {}).get("timezone")
        if self.zones is None:
            self.zones = _zones(self.conn, self.contact_ids)
        return self.zones.get(contact_id)

    def profile(self, contact_id: int) -> dict[str, Any]:
        """The contact's zone, attributes and signup time, read like `zone`."""
        if self.profiles is None:
            self.profiles = _profiles(self.conn, self.contact_ids)
        return self.profiles.get(contact_id, {})

    def sent(self, contact_id: int, channel: str, at: datetime) -> None:
        """A send decided in this batch (not yet in the ledger)."""
        self.sends[(contact_id, channel)].append(at)


class ContactFacts:
    """`engine.Facts` for one contact of a batch."""

    def __init__(self, batch: BatchFacts, contact_id: int) -> None:
        self.batch, self.contact_id = batch, contact_id

    def explain(self, condition: Condition) -> Explanation:
        conn, now = self.batch.conn, self.batch.now
        snap = snapshot.load(conn, self.contact_id, condition, now)

        def in_segment(key: str, contact_id: int) -> bool:
            return membership.is_member(conn, key, contact_id)

        return evaluate.explain(condition, snap, now=now, segments=in_segment)

    def recent_sends(self, channel: str, since: datetime) -> Sequence[datetime]:
        return [t for t in self.batch.sends.get((self.contact_id, channel), []) if t >= since]

    def timezone(self) -> str | None:
        zone = self.batch.zone(self.contact_id)
        return zone if isinstance(zone, str) else None

    def attribute(self, name: str) -> Any:
        profile = self.batch.profile(self.contact_id)
        if name in profile:
            return profile[name]
        attributes = profile.get("attributes") or {}
        return attributes.get(name) if isinstance(attributes, dict) else None

    def template_exists(self, channel: str, key: str) -> bool:
        return self.batch.templates(channel, key)


def _zones(conn: Connection, contact_ids: Collection[int]) -> dict[int, str | None]:
    c = tables.contacts
    query = select(c.c.id, c.c.timezone).where(rows.among(conn, c.c.id, contact_ids))
    return {contact_id: zone for contact_id, zone in conn.execute(query)}


def _profiles(conn: Connection, contact_ids: Collection[int]) -> dict[int, dict[str, Any]]:
    c = tables.contacts
    query = select(c.c.id, c.c.timezone, c.c.attributes, c.c.created_at).where(
        rows.among(conn, c.c.id, contact_ids)
    )
    return {
        contact_id: {"timezone": zone, "attributes": attributes or {}, "created_at": created}
        for contact_id, zone, attributes, created in conn.execute(query)
    }


def _recent_sends(
    conn: Connection, contact_ids: Collection[int], since: datetime
) -> dict[tuple[int, str], list[datetime]]:
    m = tables.messages
    out: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    query = select(m.c.contact_id, m.c.channel, m.c.created_at).where(
        rows.among(conn, m.c.contact_id, contact_ids),
        m.c.created_at >= since,
        m.c.status.not_in(("failed", "suppressed")),
    )
    for contact_id, channel, created in conn.execute(query):
        out[(contact_id, channel)].append(created)
    return out
