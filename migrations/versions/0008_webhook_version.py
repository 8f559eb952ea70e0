"""webhook version: moved by every write to webhook endpoints, so processes can cache them

Revision ID: 0008_webhook_version
Revises: 0005_platform
"""
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_webhook_version"
down_revision: str | Sequence[str] | None = "0005_platform"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "webhook_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Random, as every later value (eoffice.webhooks.service._bump_webhook_version).
    op.bulk_insert(table, [{"id": 1, "version": secrets.randbits(62)}])


def downgrade() -> None:
    op.drop_table("webhook_version")
