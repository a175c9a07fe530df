"""Outcomes reported by the CRM, the served histograms drift is measured on, and the time a
logged score describes.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("lead_id", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opportunity_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("amount", sa.Float, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("lead_id", "stage", "at", "opportunity_id", name="uq_outcome"),
    )
    op.create_index("ix_outcomes_lead_id", "outcomes", ["lead_id"])
    op.create_table(
        "served_histograms",
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("bin", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "day", "feature", "bin"),
    )
    with op.batch_alter_table("score_log") as batch:
        batch.add_column(sa.Column("as_of", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score_log") as batch:
        batch.drop_column("as_of")
    op.drop_table("served_histograms")
    op.drop_table("outcomes")
