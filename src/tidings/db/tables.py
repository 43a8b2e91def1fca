"""Every table, in SQLAlchemy Core. The Alembic migrations must produce exactly this schema
(a test compares them on both engines)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from tidings.db import tables_delivery as _delivery
from tidings.db.metadata import metadata as metadata
from tidings.db.types import BigId, Json, UTCDateTime, current_tx

# -- contacts ---------------------------------------------------------------------------

contacts = Table(
    "contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("external_id", String(255), doc="The `userId` of the site, shop or CRM."),
    Column("email", String(320), doc="Normalised: domain lower-cased, IDNA decoded."),
    Column("phone", String(20), doc="E.164."),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("locale", String(35), doc="BCP 47 language tag."),
    Column("timezone", String(64), doc="IANA zone name."),
    Column("country", String(2), doc="ISO 3166-1 alpha-2, upper case."),
    Column("lifecycle_stage", String(64)),
    Column("score", Integer, nullable=False, server_default="0"),
    Column("attributes", Json, nullable=False, doc="Custom attributes, any JSON object."),
    Column(
        "traits_at",
        UTCDateTime,
        doc="Timestamp of the newest identify applied to the profile; an older one that "
        "arrives late only fills empty fields.",
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("uq_contacts_external_id", contacts.c.external_id, unique=True)
Index("uq_contacts_email", contacts.c.email, unique=True)
Index("ix_contacts_phone", contacts.c.phone)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
)
Index("ix_contact_tags_tag", contact_tags.c.tag)

contact_anonymous_ids = Table(
    "contact_anonymous_ids",
    metadata,
    Column("anonymous_id", String(255), primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_contact_anonymous_ids_contact_id", contact_anonymous_ids.c.contact_id)

# -- lists and consent ------------------------------------------------------------------

lists = Table(
    "lists",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("double_opt_in", Boolean, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

MEMBERSHIP_STATUSES = ("pending", "subscribed", "unsubscribed")

list_memberships = Table(
    "list_memberships",
    metadata,
    Column("list_id", BigId, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "status IN ('pending', 'subscribed', 'unsubscribed')", name="membership_status"
    ),
)
Index("ix_list_memberships_contact_id", list_memberships.c.contact_id)

consents = Table(
    "consents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("list_id", BigId, ForeignKey("lists.id", ondelete="SET NULL")),
    Column("status", String(16), nullable=False, doc="The list status this record gave."),
    Column("source", String(255), nullable=False, doc="api:<key prefix>, import, form:<key>..."),
    Column("ip", String(45)),
    Column("user_agent", Text),
    Column("text", Text, doc="The consent wording the contact agreed to."),
    Column("text_hash", String(64)),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_consents_contact_id", consents.c.contact_id)

# -- the event log ----------------------------------------------------------------------

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", String(255), doc="Event name (track) or page/screen name."),
    Column("user_id", String(255)),
    Column("anonymous_id", String(255)),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE")),
    Column("properties", Json, nullable=False, doc="Properties, or traits for identify/group."),
    Column("context", Json, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False, doc="When it happened (Segment rules)."),
    Column("received_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("source", String(32), doc="Prefix of the API key that sent it."),
    Column("tx", BigId, server_default=current_tx(), doc="Writing transaction (PostgreSQL)."),
    sqlite_autoincrement=True,  # never reuse an id: the worker tails the log by id
)
Index("uq_events_message_id", events.c.message_id, unique=True)
Index("ix_events_contact_id_timestamp", events.c.contact_id, events.c.timestamp)
Index("ix_events_tx_id", events.c.tx, events.c.id)
# No index on user_id/anonymous_id: the worker resolves ids through contacts, and every
# index here is paid for by each ingested event.

worker_cursors = Table(
    "worker_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tx", BigId, nullable=False, server_default="0"),
    Column("position", BigId, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime, nullable=False),
)

# -- access -----------------------------------------------------------------------------

API_KEY_SCOPES = ("admin", "write", "read")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("prefix", String(32), nullable=False, unique=True, doc="Visible part of the key."),
    Column("secret_hash", String(64), nullable=False, doc="SHA-256 of the whole key."),
    Column("scope", String(16), nullable=False),
    Column("name", String(255), nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    CheckConstraint("scope IN ('admin', 'write', 'read')", name="api_key_scope"),
)

# -- segments ---------------------------------------------------------------------------

segments = Table(
    "segments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("rule", Json, nullable=False, doc="The condition (docs/conditions.md), as written."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("rebuilt_at", UTCDateTime, doc="Last full rebuild of the membership."),
    Column("checked_at", UTCDateTime, doc="Last re-evaluation of changed contacts."),
    Column(
        "evaluations",
        BigId,
        nullable=False,
        server_default="0",
        doc="Membership evaluations so far; part of each Segment Entered/Left message id.",
    ),
    sqlite_autoincrement=True,  # never reuse an id: it is part of event message ids
)

segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("segment_id", BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("entered_at", UTCDateTime, nullable=False),
)
Index("ix_segment_memberships_contact_id", segment_memberships.c.contact_id)
# The segments worker asks each round which contacts changed without an event (profile,
# tags, list status) since its last check: without these it would scan both tables.
Index("ix_contacts_updated_at", contacts.c.updated_at)
Index("ix_list_memberships_updated_at", list_memberships.c.updated_at)

# -- flows ------------------------------------------------------------------------------

FLOW_STATUSES = ("draft", "active", "paused", "archived")

flows = Table(
    "flows",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="draft"),
    Column("version", Integer, nullable=False, doc="The newest version; new runs start on it."),
    Column("trigger_type", String(32), nullable=False, doc="Trigger kind of the newest version."),
    Column(
        "trigger_event",
        String(255),
        doc="The log event that can start a run (event, segment, list and form triggers).",
    ),
    Column("next_check_at", UTCDateTime, doc="When a scheduled trigger looks for contacts next."),
    Column("checked_at", UTCDateTime, doc="The last time a scheduled trigger looked."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("status IN ('draft', 'active', 'paused', 'archived')", name="flow_status"),
    sqlite_autoincrement=True,
)
Index("ix_flows_trigger_event", flows.c.trigger_event)

flow_versions = Table(
    "flow_versions",
    metadata,
    Column("flow_id", BigId, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", Json, nullable=False, doc="The flow as written, with every step id."),
    Column("created_at", UTCDateTime, nullable=False),
)

RUN_STATUSES = ("active", "waiting", "completed", "exited", "failed")

flow_runs = Table(
    "flow_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("flow_id", BigId, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column(
        "entry_key",
        String(255),
        nullable=False,
        server_default="",
        doc="What makes this run one of its own: the `entry.key` value (a cart id), the "
        "year of a birthday... Empty for one run per contact.",
    ),
    Column(
        "entry_seq",
        Integer,
        nullable=False,
        server_default="0",
        doc="How many runs of this flow, contact and key came before this one.",
    ),
    Column("status", String(16), nullable=False),
    Column("step_id", String(100), doc="The step the run is at (None once it has ended)."),
    Column("next_at", UTCDateTime, doc="When the run is due to advance (None: not by time)."),
    Column("wait_event", String(255), doc="The event a `wait_until` step is waiting for."),
    Column("state", Json, nullable=False, doc="Engine state: visits, cohorts, wait, trigger."),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", Text),
    Column("converted_at", UTCDateTime),
    Column("converted_step", String(100), doc="The last message step before the goal."),
    Column("revenue", Float),
    CheckConstraint(
        "status IN ('active', 'waiting', 'completed', 'exited', 'failed')", name="run_status"
    ),
    sqlite_autoincrement=True,  # never reuse an id: ledger rows and message events name it
)
Index(
    "uq_flow_runs_entry",
    flow_runs.c.flow_id,
    flow_runs.c.contact_id,
    flow_runs.c.entry_key,
    flow_runs.c.entry_seq,
    unique=True,
)
# At most one live run per (flow, contact, key), whatever raced to start it.
Index(
    "uq_flow_runs_live",
    flow_runs.c.flow_id,
    flow_runs.c.contact_id,
    flow_runs.c.entry_key,
    unique=True,
    sqlite_where=flow_runs.c.ended_at.is_(None),
    postgresql_where=flow_runs.c.ended_at.is_(None),
)
Index(
    "ix_flow_runs_due",
    flow_runs.c.flow_id,
    flow_runs.c.next_at,
    sqlite_where=flow_runs.c.next_at.is_not(None),
    postgresql_where=flow_runs.c.next_at.is_not(None),
)
Index("ix_flow_runs_contact_id", flow_runs.c.contact_id)

flow_run_steps = Table(
    "flow_run_steps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigId, ForeignKey("flow_runs.id", ondelete="CASCADE"), nullable=False),
    Column("flow_id", BigId, nullable=False),
    Column("step_id", String(100)),
    Column("action", String(32), nullable=False, doc="entered, branched, sent, waited..."),
    Column(
        "first",
        Boolean,
        nullable=False,
        doc="The first record of a visit to the step (what 'entered the step' counts).",
    ),
    Column("detail", Json, nullable=False, doc="Why: the branch, the condition's values..."),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_flow_run_steps_run_id", flow_run_steps.c.run_id)
Index("ix_flow_run_steps_flow_id_step_id", flow_run_steps.c.flow_id, flow_run_steps.c.step_id)

# -- the send ledger --------------------------------------------------------------------

CHANNELS = ("email", "sms", "webhook", "notify")
MESSAGE_STATUSES = ("queued", "sending", "sent", "failed", "suppressed", "unknown")

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE")),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("flow_id", BigId, ForeignKey("flows.id", ondelete="SET NULL")),
    Column("run_id", BigId, ForeignKey("flow_runs.id", ondelete="SET NULL")),
    Column("step_id", String(100)),
    Column("occurrence", Integer, nullable=False, server_default="1"),
    Column("template", String(100)),
    Column("payload", Json, nullable=False, doc="What the channel needs besides the template."),
    Column("due_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("error", Text),
    Column("template_version", Integer, doc="The template version the message was made from."),
    Column("address", String(320), doc="Where it went: the address or number at send time."),
    Column("message_ref", String(255), doc="The Message-ID header, without angle brackets."),
    Column("attempts", Integer, nullable=False, server_default="0", doc="Hand-offs so far."),
    Column(
        "lease_until",
        UTCDateTime,
        doc="A queued row claimed by a sender until then; a `sending` row that is still "
        "sending then was lost mid hand-off and becomes `unknown`.",
    ),
    Column("links", Json, doc="The tracked links' targets that differ per message."),
    CheckConstraint("channel IN ('email', 'sms', 'webhook', 'notify')", name="message_channel"),
    CheckConstraint(
        "status IN ('queued', 'sending', 'sent', 'failed', 'suppressed', 'unknown')",
        name="message_status",
    ),
    sqlite_autoincrement=True,
)
# One send intent per (run, step, occurrence): the engine may be re-run, never re-send.
Index(
    "uq_messages_intent",
    messages.c.run_id,
    messages.c.step_id,
    messages.c.occurrence,
    unique=True,
)
# What a sender claims next: `status = 'queued' AND channel = ? ORDER BY due_at`; also the
# reaper's `status = 'sending'`.
Index(
    "ix_messages_status_channel_due_at",
    messages.c.status,
    messages.c.channel,
    messages.c.due_at,
)
# Asynchronous bounces and complaints name the message by its Message-ID.
Index("ix_messages_message_ref", messages.c.message_ref)
Index(
    "ix_messages_contact_id_channel_created_at",
    messages.c.contact_id,
    messages.c.channel,
    messages.c.created_at,
)

# The delivery tables are defined in their own module, on the same metadata.

message_history: Table = _delivery.message_history
templates: Table = _delivery.templates
template_versions: Table = _delivery.template_versions
suppressions: Table = _delivery.suppressions
bounces: Table = _delivery.bounces
inbound_emails: Table = _delivery.inbound_emails
dkim_keys: Table = _delivery.dkim_keys
caught_emails: Table = _delivery.caught_emails
send_quotas: Table = _delivery.send_quotas
alerts: Table = _delivery.alerts
MESSAGE_EVENTS: tuple[str, ...] = _delivery.MESSAGE_EVENTS
TEMPLATE_KINDS: tuple[str, ...] = _delivery.TEMPLATE_KINDS
SUPPRESSION_SCOPES: tuple[str, ...] = _delivery.SUPPRESSION_SCOPES
BOUNCE_KINDS: tuple[str, ...] = _delivery.BOUNCE_KINDS
