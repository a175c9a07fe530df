"""What the CRMs calling the scorer were answered: HubSpot callbacks and Salesforce
notifications, so a retry is answered alike and stores nothing twice.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_actions",
        sa.Column("callback_id", sa.String(200), primary_key=True),
        sa.Column("portal_id", sa.String(40), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "crm_notifications",
        sa.Column("notification_id", sa.String(40), primary_key=True),
        sa.Column("organization_id", sa.String(18), nullable=False),
        sa.Column("object_type", sa.String(100), nullable=False),
        sa.Column("record_id", sa.String(40), nullable=False),
        sa.Column("result", sa.String(1000), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("crm_notifications")
    op.drop_table("crm_actions")
