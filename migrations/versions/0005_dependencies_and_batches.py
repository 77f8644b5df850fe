"""job dependencies and batches

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

A job may wait for others (`jobs.depends_on`, the ids it waits for, and
`jobs.on_dependency_failure`, what a failed one does to it); existing jobs
depend on nothing. `batches` records the jobs submitted together by
`POST /audio/batch`, per item, so a batch's progress survives a restart.
The new status `deferred` fits the status column as it is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ON_FAILURE = sa.Enum('cancel', 'fail', name='ondependencyfailure', native_enum=False, length=16)


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('depends_on', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('on_dependency_failure', _ON_FAILURE, server_default='cancel', nullable=False))
    op.create_table('batches',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=255), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('batches')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('on_dependency_failure')
        batch_op.drop_column('depends_on')
