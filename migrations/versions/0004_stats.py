"""stats: electronic-exchange rate aggregates and paper register columns (issue 6)

Revision ID: 0004_stats
Revises: 0001_core
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import eoffice.models

revision: str = "0004_stats"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = ("stats",)
depends_on: str | Sequence[str] | None = None



def upgrade() -> None:
    op.create_table(
        "stats_cells",
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column('electronic', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('recalled', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('also_on_paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('signed_ok', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('acknowledged', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_on_time', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('completed', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('with_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_by_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h0', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h1', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h2', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h3', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h4', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h5', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h6', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h7', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h8', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h9', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h10', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h11', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h12', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h13', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h14', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h0', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h1', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h2', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h3', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h4', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h5', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h6', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h7', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h8', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h9', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h10', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h11', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h12', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h13', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h14', sa.Integer(), nullable=False, server_default='0'),
        sa.PrimaryKeyConstraint("agency_id", "day", "direction"),
    )
    op.create_index("ix_stats_cells_day", "stats_cells", ["day"])
    op.create_table(
        "stats_months",
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column('electronic', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('recalled', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('also_on_paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('signed_ok', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('acknowledged', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_on_time', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('completed', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('with_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_by_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h0', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h1', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h2', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h3', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h4', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h5', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h6', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h7', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h8', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h9', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h10', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h11', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h12', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h13', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_h14', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h0', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h1', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h2', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h3', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h4', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h5', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h6', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h7', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h8', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h9', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h10', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h11', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h12', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h13', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_h14', sa.Integer(), nullable=False, server_default='0'),
        sa.PrimaryKeyConstraint("agency_id", "month", "direction"),
    )
    op.create_table(
        "stats_items",
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column('electronic', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('recalled', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('also_on_paper', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('signed_ok', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('acknowledged', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('ack_on_time', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('completed', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('with_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done_by_due', sa.Integer(), nullable=False, server_default='0'),
        sa.Column("ack_bucket", sa.Integer(), nullable=True),
        sa.Column("done_bucket", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("kind", "ref_id"),
    )
    op.create_table(
        "stats_reconcile_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", eoffice.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", eoffice.models.UTCDateTime(), nullable=True),
        sa.Column("cells_checked", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cells_fixed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("items_fixed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("drift", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column("documents", sa.Column("counterpart_code", sa.String(length=35), nullable=True))
    op.add_column("documents", sa.Column("counterpart_name", sa.String(length=200), nullable=True))
    op.add_column("documents", sa.Column("original_ref", sa.String(length=64), nullable=True))
    op.add_column("documents", sa.Column("registered_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        for name in ("registered_on", "original_ref", "counterpart_name", "counterpart_code"):
            batch.drop_column(name)
    op.drop_table("stats_reconcile_runs")
    op.drop_table("stats_items")
    op.drop_table("stats_months")
    op.drop_index("ix_stats_cells_day", table_name="stats_cells")
    op.drop_table("stats_cells")
