"""signing: attachment revisions; job status wide enough for "awaiting_signature" (issue 3)

Revision ID: 0002_signing
Revises: 0001_core
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import eoffice.models

revision: str = "0002_signing"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = ("signing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attachment_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attachment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=50), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", eoffice.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["attachment_id"], ["attachments.id"]),
        sa.ForeignKeyConstraint(["blob_sha256"], ["blobs.sha256"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("attachment_id", "number"),
        sa.UniqueConstraint("attachment_id", "job_id", name="uq_attachment_rev_job"),
    )
    op.create_index("ix_attachment_revisions_attachment_id", "attachment_revisions",
                    ["attachment_id"])
    # SQLite ignores VARCHAR lengths, and rebuilding "jobs" there would fight other branches'
    # changes to it for nothing; PostgreSQL enforces them.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "status", type_=sa.String(length=32),
                        existing_type=sa.String(length=16), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "status", type_=sa.String(length=16),
                        existing_type=sa.String(length=32), existing_nullable=False)
    op.drop_index("ix_attachment_revisions_attachment_id", table_name="attachment_revisions")
    op.drop_table("attachment_revisions")
