"""Each threshold version names the version it replaced; a version has one successor at most.

The unique (model, base_version) pair is what makes concurrent changes safe on every
database: two admins who both read version 5 and both write, each naming 5, cannot both
succeed, so the later one is told (409) instead of silently undoing the other.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("thresholds") as batch:
        batch.add_column(sa.Column("base_version", sa.Integer, nullable=True))
        batch.create_unique_constraint("uq_thresholds_successor", ["model", "base_version"])


def downgrade() -> None:
    with op.batch_alter_table("thresholds") as batch:
        batch.drop_constraint("uq_thresholds_successor", type_="unique")
        batch.drop_column("base_version")
