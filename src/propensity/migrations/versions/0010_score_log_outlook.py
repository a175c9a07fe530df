"""The outlook answered with a score (P(converted within 90 days), expected days to convert,
expected amount), so that monitoring can set them beside what happened. Nullable: rows logged
before, and scores asked without the outlook, have none.

Rows spooled by an earlier version go in with these columns null (`serving.scorelog.
ADDED_COLUMNS`). The reverse does not hold: before a downgrade to a version without this
migration, let the scorer drain its spool (`/readyz` ready, nothing pending), or the older
scorer quarantines the spooled rows that carry these keys (kept, not written).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ("p_by_90", "expected_days", "expected_amount")


def upgrade() -> None:
    with op.batch_alter_table("score_log") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score_log") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
