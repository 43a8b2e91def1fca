"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 06:36:38.045234
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tidings.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("created_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", tidings.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scope IN ('admin', 'write', 'read')", name=op.f("ck_api_keys_api_key_scope")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "contacts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("first_name", sa.String(length=255), nullable=True),
        sa.Column("last_name", sa.String(length=255), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("lifecycle_stage", sa.String(length=64), nullable=True),
        sa.Column("score", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("traits_at", tidings.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_phone", ["phone"], unique=False)
        batch_op.create_index("uq_contacts_email", ["email"], unique=True)
        batch_op.create_index("uq_contacts_external_id", ["external_id"], unique=True)

    op.create_table(
        "lists",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("double_opt_in", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("created_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
        sa.UniqueConstraint("key", name=op.f("uq_lists_key")),
    )
    op.create_table(
        "worker_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "tx",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default="0",
            nullable=False,
        ),
        sa.Column("updated_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_cursors")),
    )
    op.create_table(
        "consents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_hash", sa.String(length=64), nullable=True),
        sa.Column("at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consents_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_consents_list_id_lists"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index("ix_consents_contact_id", ["contact_id"], unique=False)

    op.create_table(
        "contact_anonymous_ids",
        sa.Column("anonymous_id", sa.String(length=255), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_anonymous_ids_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("anonymous_id", name=op.f("pk_contact_anonymous_ids")),
    )
    with op.batch_alter_table("contact_anonymous_ids", schema=None) as batch_op:
        batch_op.create_index("ix_contact_anonymous_ids_contact_id", ["contact_id"], unique=False)

    op.create_table(
        "contact_tags",
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_tags_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "tag", name=op.f("pk_contact_tags")),
    )
    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tags_tag", ["tag"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("anonymous_id", sa.String(length=255), nullable=True),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("timestamp", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", tidings.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column(
            "tx",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            server_default=tidings.db.types.current_tx(),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_events_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_contact_id_timestamp", ["contact_id", "timestamp"], unique=False
        )
        batch_op.create_index("ix_events_tx_id", ["tx", "id"], unique=False)
        batch_op.create_index("uq_events_message_id", ["message_id"], unique=True)

    op.create_table(
        "list_memberships",
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tidings.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'subscribed', 'unsubscribed')",
            name=op.f("ck_list_memberships_membership_status"),
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_list_memberships_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["lists.id"],
            name=op.f("fk_list_memberships_list_id_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", "contact_id", name=op.f("pk_list_memberships")),
    )
    with op.batch_alter_table("list_memberships", schema=None) as batch_op:
        batch_op.create_index("ix_list_memberships_contact_id", ["contact_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("list_memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_list_memberships_contact_id")

    op.drop_table("list_memberships")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("uq_events_message_id")
        batch_op.drop_index("ix_events_tx_id")
        batch_op.drop_index("ix_events_contact_id_timestamp")

    op.drop_table("events")
    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_tags_tag")

    op.drop_table("contact_tags")
    with op.batch_alter_table("contact_anonymous_ids", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_anonymous_ids_contact_id")

    op.drop_table("contact_anonymous_ids")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index("ix_consents_contact_id")

    op.drop_table("consents")
    op.drop_table("worker_cursors")
    op.drop_table("lists")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("uq_contacts_external_id")
        batch_op.drop_index("uq_contacts_email")
        batch_op.drop_index("ix_contacts_phone")

    op.drop_table("contacts")
    op.drop_table("api_keys")
