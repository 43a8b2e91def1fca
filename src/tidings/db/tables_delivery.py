"""The delivery tables: message history, templates, suppressions, bounces, inbound mail,
DKIM keys, the mail catcher, send quotas and operator alerts. Part of `tables` (which
re-exports them); kept apart to keep each module readable."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from tidings.db.metadata import metadata
from tidings.db.types import BigId, Json, UTCDateTime

MESSAGE_EVENTS = (
    "deferred",
    "failed",
    "suppressed",
    "unknown",
    "bounced",
    "complained",
    "requeued",
)

message_history = Table(
    "message_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(16), nullable=False, doc="What happened: deferred, failed, bounced..."),
    Column("detail", Json, nullable=False, doc="The server's reply, the reason, the status code."),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_message_history_message_id", message_history.c.message_id)

# -- templates --------------------------------------------------------------------------

TEMPLATE_KINDS = ("marketing", "transactional", "layout")

templates = Table(
    "templates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False, unique=True),
    Column("channel", String(16), nullable=False, server_default="email"),
    Column(
        "kind",
        String(16),
        nullable=False,
        doc="marketing (needs an unsubscribe link and a postal address), transactional, "
        "or layout (wraps other templates).",
    ),
    Column("name", String(255), nullable=False),
    Column("version", Integer, nullable=False, doc="The newest version; sends use it."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('marketing', 'transactional', 'layout')", name="template_kind"),
    CheckConstraint("channel IN ('email', 'sms')", name="template_channel"),
    sqlite_autoincrement=True,
)

template_versions = Table(
    "template_versions",
    metadata,
    Column("template_id", BigId, ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content", Json, nullable=False, doc="The template as written: subject, body..."),
    Column("created_at", UTCDateTime, nullable=False),
)

# -- deliverability: suppressions, bounces, inbound mail, DKIM ---------------------------

SUPPRESSION_SCOPES = ("all", "marketing")

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(16), nullable=False),
    Column("address", String(320), doc="In clear; emptied when the person is erased."),
    Column("address_hash", String(64), nullable=False, doc="SHA-256 of the normalised address."),
    Column(
        "scope",
        String(16),
        nullable=False,
        doc="all: nothing is sent; marketing: transactional mail still goes.",
    ),
    Column("reason", String(32), nullable=False, doc="hard_bounce, complaint, unsubscribed..."),
    Column("detail", Text),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="SET NULL")),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("scope IN ('all', 'marketing')", name="suppression_scope"),
)
Index(
    "uq_suppressions_channel_address_hash",
    suppressions.c.channel,
    suppressions.c.address_hash,
    unique=True,
)

BOUNCE_KINDS = ("hard", "soft", "policy", "complaint")

bounces = Table(
    "bounces",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="SET NULL")),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("address_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), doc="RFC 3463 enhanced status code, e.g. 5.1.1."),
    Column("diagnostic", Text, doc="What the receiving server said."),
    Column("source", String(16), nullable=False, doc="smtp (while sending), dsn or arf."),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('hard', 'soft', 'policy', 'complaint')", name="bounce_kind"),
)
Index("ix_bounces_address_hash_at", bounces.c.address_hash, bounces.c.at)
Index("ix_bounces_message_id", bounces.c.message_id)

inbound_emails = Table(
    "inbound_emails",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False, doc="http (an MTA pipe) or imap."),
    Column("raw", LargeBinary, nullable=False, doc="The message as received, for inspection."),
    Column("kind", String(16), nullable=False, doc="dsn, arf, other or malformed."),
    Column("outcome", String(16), nullable=False, doc="What it led to: bounce, complaint..."),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="SET NULL")),
    Column("detail", Json, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)
Index("ix_inbound_emails_received_at", inbound_emails.c.received_at)

dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("selector", String(63), primary_key=True),
    Column("algorithm", String(16), nullable=False, doc="rsa-sha256 or ed25519-sha256."),
    Column("private_key", Text, nullable=False, doc="PEM (PKCS #8)."),
    Column("public_key", Text, nullable=False, doc="Base64, as published in DNS (p=)."),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
)

# -- the built-in mail catcher, send quotas, operator alerts ----------------------------

caught_emails = Table(
    "caught_emails",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="SET NULL")),
    Column("mail_from", String(320), nullable=False),
    Column("recipients", Json, nullable=False),
    Column("subject", Text),
    Column("message_ref", String(255)),
    Column("raw", LargeBinary, nullable=False),
    Column("caught_at", UTCDateTime, nullable=False),
)

send_quotas = Table(
    "send_quotas",
    metadata,
    Column("name", String(64), primary_key=True, doc="What is limited: `email`, a route..."),
    Column("second_start", UTCDateTime),
    Column("second_used", Integer, nullable=False, server_default="0"),
    Column("hour_start", UTCDateTime),
    Column("hour_used", Integer, nullable=False, server_default="0"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False, doc="dkim_failed, webhook_disabled..."),
    Column("message", Text, nullable=False),
    Column("detail", Json, nullable=False),
    Column("count", Integer, nullable=False, server_default="1"),
    Column("first_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
)
Index("ix_alerts_kind", alerts.c.kind)
