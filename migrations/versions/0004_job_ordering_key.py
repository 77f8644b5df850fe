"""jobs may carry an ordering key

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Jobs with the same `ordering_key` run one at a time, in the order they were accepted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('ordering_key', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('ordering_key')
