"""callback delivery state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Callbacks are delivered by their own jobs now; each analysis row records
where its callback stands. Rows that ended before this migration get
`delivered` when `callback_sent_at` is set, else `pending` (the reconciler
then enqueues their delivery).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('callback_status', sa.Enum('pending', 'delivered', 'undeliverable', name='callbackstatus', native_enum=False, length=16), nullable=True))
        batch_op.add_column(sa.Column('callback_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('callback_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('callback_attempted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('callback_checked_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_analyses_callback_status', ['callback_status'], unique=False)

    analyses = sa.table(
        'analyses',
        sa.column('status', sa.String),
        sa.column('callback_url', sa.String),
        sa.column('callback_sent_at', sa.DateTime),
        sa.column('callback_status', sa.String),
    )
    ended = sa.and_(analyses.c.callback_url.is_not(None), analyses.c.status.in_(['finished', 'failed']))
    op.execute(
        analyses.update()
        .where(ended, analyses.c.callback_sent_at.is_not(None))
        .values(callback_status='delivered')
    )
    op.execute(
        analyses.update().where(ended, analyses.c.callback_sent_at.is_(None)).values(callback_status='pending')
    )


def downgrade() -> None:
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_index('ix_analyses_callback_status')
        batch_op.drop_column('callback_checked_at')
        batch_op.drop_column('callback_attempted_at')
        batch_op.drop_column('callback_error')
        batch_op.drop_column('callback_attempts')
        batch_op.drop_column('callback_status')
