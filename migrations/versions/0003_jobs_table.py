"""one jobs table for every task

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Everything about running a job moves from `analyses` to a new `jobs` table
(same id), so that any task, not only the audio analysis, has a job record.
`analyses` keeps what is audio-specific. Existing rows become jobs of the task
`tasks.audio_analysis.process_audio_analysis` with their stored file as the
argument, the timeout and retry policy of the settings at migration time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIO_TASK = 'tasks.audio_analysis.process_audio_analysis'
_STATUS = sa.Enum('pending', 'queued', 'scheduled', 'started', 'finished', 'failed', 'canceled', name='jobstatus', native_enum=False, length=16)
_MODE = sa.Enum('rq', 'background', name='dispatchmode', native_enum=False, length=16)
_CALLBACK = sa.Enum('pending', 'delivered', 'undeliverable', name='callbackstatus', native_enum=False, length=16)

# Columns that move from analyses to jobs, unchanged.
MOVED = [
    'status', 'queue', 'mode', 'callback_url', 'scheduled_at', 'attempts', 'progress', 'logs', 'result', 'error',
    'cancel_requested', 'idempotency_key', 'request_hash', 'created_at', 'updated_at', 'started_at',
    'attempt_started_at', 'finished_at', 'callback_sent_at', 'callback_status', 'callback_attempts', 'callback_error',
    'callback_attempted_at', 'callback_checked_at',
]
BATCH = 500


def _policy() -> tuple[int, int, list[int]]:
    from core.settings import get_settings

    try:
        settings = get_settings()
    except Exception:  # a migration must not depend on a complete configuration
        return 15 * 60, 3, [10, 30, 60]
    return settings.rq_job_timeout, settings.rq_retry_max, list(settings.retry_intervals_s)


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=255), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('kwargs', sa.JSON(), nullable=False),
    sa.Column('status', _STATUS, nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('mode', _MODE, nullable=False),
    sa.Column('timeout_s', sa.Integer(), nullable=False),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('retry_intervals', sa.JSON(), nullable=False),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('logs', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('attempt_started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('callback_sent_at', sa.DateTime(), nullable=True),
    sa.Column('callback_status', _CALLBACK, nullable=True),
    sa.Column('callback_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('callback_error', sa.Text(), nullable=True),
    sa.Column('callback_attempted_at', sa.DateTime(), nullable=True),
    sa.Column('callback_checked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_status_updated_at', ['status', 'updated_at'], unique=False)
        batch_op.create_index('ix_jobs_callback_status', ['callback_status'], unique=False)
        batch_op.create_index('ix_jobs_task_status', ['task', 'status'], unique=False)
        batch_op.create_index('ux_jobs_task_idempotency_key', ['task', 'idempotency_key'], unique=True)

    timeout_s, retries, intervals = _policy()
    bind = op.get_bind()
    json_columns = {'logs', 'result', 'args', 'kwargs', 'retry_intervals'}

    def column(name: str) -> sa.ColumnClause:
        return sa.column(name, sa.JSON) if name in json_columns else sa.column(name)

    analyses = sa.table('analyses', sa.column('id', sa.String), sa.column('storage_key', sa.String),
                        sa.column('priority', sa.String), *(column(name) for name in MOVED))
    jobs = sa.table('jobs', *(column(name) for name in [
        'id', 'task', 'args', 'kwargs', 'priority', 'timeout_s', 'retries', 'retry_intervals', *MOVED]))
    last = ''
    while True:
        rows = bind.execute(
            sa.select(analyses).where(analyses.c.id > last).order_by(analyses.c.id).limit(BATCH)
        ).mappings().all()
        if not rows:
            break
        bind.execute(jobs.insert(), [
            {
                **{name: row[name] for name in MOVED}, 'id': row['id'], 'task': AUDIO_TASK,
                'args': [row['storage_key']], 'kwargs': {}, 'priority': row['priority'], 'timeout_s': timeout_s,
                'retries': retries, 'retry_intervals': intervals,
            }
            for row in rows
        ])
        last = rows[-1]['id']

    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_index('ix_analyses_status_updated_at')
        batch_op.drop_index('ix_analyses_callback_status')
        for name in [*MOVED, 'priority']:
            batch_op.drop_column(name)
        batch_op.alter_column('id', existing_type=sa.String(length=36), type_=sa.String(length=64))
        batch_op.create_foreign_key('fk_analyses_job', 'jobs', ['id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_constraint('fk_analyses_job', type_='foreignkey')
        batch_op.alter_column('id', existing_type=sa.String(length=64), type_=sa.String(length=36))
        batch_op.add_column(sa.Column('priority', sa.String(length=16), nullable=True))
        for column in [
            sa.Column('status', sa.String(length=16), nullable=True),
            sa.Column('queue', sa.String(length=32), nullable=True),
            sa.Column('mode', sa.String(length=16), nullable=True),
            sa.Column('callback_url', sa.String(length=2048), nullable=True),
            sa.Column('scheduled_at', sa.DateTime(), nullable=True),
            sa.Column('attempts', sa.Integer(), nullable=True),
            sa.Column('progress', sa.Integer(), nullable=True),
            sa.Column('logs', sa.JSON(), nullable=True),
            sa.Column('result', sa.JSON(), nullable=True),
            sa.Column('error', sa.Text(), nullable=True),
            sa.Column('cancel_requested', sa.Boolean(), nullable=True),
            sa.Column('idempotency_key', sa.String(length=255), nullable=True),
            sa.Column('request_hash', sa.String(length=64), nullable=True),
            sa.Column('created_at', sa.DateTime(), nullable=True),
            sa.Column('updated_at', sa.DateTime(), nullable=True),
            sa.Column('started_at', sa.DateTime(), nullable=True),
            sa.Column('attempt_started_at', sa.DateTime(), nullable=True),
            sa.Column('finished_at', sa.DateTime(), nullable=True),
            sa.Column('callback_sent_at', sa.DateTime(), nullable=True),
            sa.Column('callback_status', sa.String(length=16), nullable=True),
            sa.Column('callback_attempts', sa.Integer(), server_default='0', nullable=True),
            sa.Column('callback_error', sa.Text(), nullable=True),
            sa.Column('callback_attempted_at', sa.DateTime(), nullable=True),
            sa.Column('callback_checked_at', sa.DateTime(), nullable=True),
        ]:
            batch_op.add_column(column)
    for name in [*MOVED, 'priority']:
        op.execute(sa.text(f'UPDATE analyses SET {name} = (SELECT jobs.{name} FROM jobs WHERE jobs.id = analyses.id)'))
    # Jobs of other tasks have no place in the old schema.
    op.execute(sa.text('DELETE FROM analyses WHERE status IS NULL'))
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        for name in ['status', 'queue', 'mode', 'attempts', 'progress', 'logs', 'cancel_requested', 'created_at',
                     'updated_at', 'priority', 'callback_attempts']:
            batch_op.alter_column(name, nullable=False)
        batch_op.create_index('ix_analyses_status_updated_at', ['status', 'updated_at'], unique=False)
        batch_op.create_index('ix_analyses_callback_status', ['callback_status'], unique=False)
        batch_op.create_unique_constraint('uq_analyses_idempotency_key', ['idempotency_key'])
    op.drop_table('jobs')
