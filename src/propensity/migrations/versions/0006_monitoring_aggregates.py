"""Served scores aggregated per day for monitoring, and the index its queries use.

`served_score_days`: per model, as_of day, score and probability to 0.1 point, how many
deduplicated scores and the sum of their probabilities; `monitoring_folds`: how far into the
score log (by id) the aggregates reach. The index on (model, coalesce(as_of, scored_at)) is
the time a logged score describes, which every monitoring query filters on.

Revision ID: 0006
Revises: 0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_score_days",
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("leads", sa.BigInteger, nullable=False),
        sa.Column("probability_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "day", "score", "bucket"),
    )
    folds = op.create_table(
        "monitoring_folds",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("seen_id", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    # one row from the start: workers never race to insert it
    op.bulk_insert(folds, [{"name": "served_scores", "last_id": 0, "seen_id": 0,
                            "seen_at": datetime(1970, 1, 1, tzinfo=UTC)}])
    op.create_index("ix_score_log_model_as_of", "score_log",
                    ["model_name", sa.text("coalesce(as_of, scored_at)")])


def downgrade() -> None:
    op.drop_index("ix_score_log_model_as_of", "score_log")
    op.drop_table("monitoring_folds")
    op.drop_table("served_score_days")
