"""Every table, in SQLAlchemy Core. The Alembic migrations must produce exactly this schema
(a test compares them on both engines)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from tidings.db.types import BigId, Json, UTCDateTime, current_tx

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

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
