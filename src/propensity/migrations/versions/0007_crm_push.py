"""`propensity push`: its runs (the resumable cursor), what was last written to each CRM
record, and the records a CRM refused.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_push_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("crm", sa.String(20), nullable=False),
        sa.Column("plan_digest", sa.String(64), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("written", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "crm_push_written",
        sa.Column("crm", sa.String(20), nullable=False),
        sa.Column("record_id", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("crm", "record_id"),
    )
    op.create_table(
        "crm_push_failures",
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("record_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "record_id"),
    )


def downgrade() -> None:
    op.drop_table("crm_push_failures")
    op.drop_table("crm_push_written")
    op.drop_table("crm_push_runs")
