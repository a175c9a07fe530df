"""HubSpot actions answered BLOCK, kept until their completion is sent through HubSpot's
callbacks API (`propensity.crm_inbound.callbacks`).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_pending",
        sa.Column("callback_id", sa.String(200), primary_key=True),
        sa.Column("portal_id", sa.String(40), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
    )
    op.create_index("ix_crm_pending_due", "crm_pending", ["state", "next_try_at"])


def downgrade() -> None:
    op.drop_index("ix_crm_pending_due", "crm_pending")
    op.drop_table("crm_pending")
