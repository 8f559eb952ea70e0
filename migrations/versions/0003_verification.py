"""verification: trust store, trust events, audit anchors, report delivery link

Revision ID: 0003_verification
Revises: 0001_core
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import eoffice.models

revision: str = "0003_verification"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = ("verification",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trust_anchors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("not_after", eoffice.models.UTCDateTime(), nullable=True),
        sa.Column("added_at", eoffice.models.UTCDateTime(), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("removed_at", eoffice.models.UTCDateTime(), nullable=True),
        sa.Column("removed_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_index("ix_trust_anchors_removed_at", "trust_anchors", ["removed_at"])
    op.create_table(
        "trust_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("at", eoffice.models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("state_after", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trust_events_fingerprint_at", "trust_events", ["fingerprint", "at"])
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("tst", sa.LargeBinary(), nullable=False),
        sa.Column("tsa_url", sa.String(length=500), nullable=False),
        sa.Column("gen_time", eoffice.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", eoffice.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_anchors_last_event_id", "audit_anchors", ["last_event_id"])
    with op.batch_alter_table("verification_reports") as batch:
        batch.add_column(sa.Column("delivery_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("purpose", sa.String(length=16), nullable=False,
                                   server_default="upload"))
        batch.create_index("ix_verification_reports_delivery_id", ["delivery_id"])
        batch.create_foreign_key("fk_verification_reports_delivery_id", "deliveries",
                                 ["delivery_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("verification_reports") as batch:
        batch.drop_constraint("fk_verification_reports_delivery_id", type_="foreignkey")
        batch.drop_index("ix_verification_reports_delivery_id")
        batch.drop_column("purpose")
        batch.drop_column("delivery_id")
    op.drop_index("ix_audit_anchors_last_event_id", table_name="audit_anchors")
    op.drop_table("audit_anchors")
    op.drop_index("ix_trust_events_fingerprint_at", table_name="trust_events")
    op.drop_table("trust_events")
    op.drop_index("ix_trust_anchors_removed_at", table_name="trust_anchors")
    op.drop_table("trust_anchors")
