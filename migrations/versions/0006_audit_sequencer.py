"""Audit entries are sealed into the chain after commit: nullable hashes and a chain sequence.

Revision ID: 0006_audit_sequencer
Revises: 0001_core
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_audit_sequencer"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = ("audit",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=True)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=True)
        batch.create_unique_constraint("uq_audit_events_seq", ["seq"])
    # Entries chained before this revision keep their order.
    op.execute("UPDATE audit_events SET seq = id WHERE hash IS NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM audit_events WHERE hash IS NULL")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_seq", type_="unique")
        batch.drop_column("seq")
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
