"""Where a job's callback stands: the attempts to deliver it, as compare-and-set writes on its row.

`jobs.callbacks` (and the in-process deliverer) call these through `Lifecycle`, which includes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from core.db import Database
from core.metrics import CallbackOutcome, JobMetrics
from core.models import CallbackStatus, Job, utcnow

MESSAGE_MAX_CHARS = 500  # log lines and errors are summaries, not dumps
_CALLBACK_PENDING = Job.callback_status == CallbackStatus.PENDING


def clip(text: str) -> str:
    """One printable line of at most MESSAGE_MAX_CHARS characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= MESSAGE_MAX_CHARS else text[: MESSAGE_MAX_CHARS - 1] + "…"


class CallbackRecords:
    """The callback half of a job's records (a part of `Lifecycle`)."""

    database: Database
    metrics: JobMetrics

    def callbacks_owed(self, ended_before: datetime, limit: int) -> list[str]:
        """Ended analyses whose callback is still pending, the ones the reconciler looked at least recently first."""
        with self.database.session() as session:
            query = (
                select(Job.id)
                .where(_CALLBACK_PENDING, Job.finished_at < ended_before)
                .order_by(func.coalesce(Job.callback_checked_at, Job.finished_at), Job.id)
                .limit(limit)
            )
            return list(session.scalars(query))

    def _callback_change(self, job_id: str, values: dict[str, Any]) -> int | None:
        """One compare-and-set on a pending callback; its attempt count, or None when it is not pending."""
        with self.database.session() as session:
            query = (
                update(Job).where(Job.id == job_id, _CALLBACK_PENDING).values(**values).returning(Job.callback_attempts)
            )
            attempts: int | None = session.execute(query).scalar_one_or_none()
        return attempts

    def begin_callback_attempt(self, job_id: str) -> int | None:
        """Counts an attempt to deliver the callback; its number, or None when the callback is not pending."""
        return self._callback_change(
            job_id, {"callback_attempts": Job.callback_attempts + 1, "callback_attempted_at": utcnow()}
        )

    def mark_callback_delivered(self, job_id: str) -> bool:
        changed = self._callback_change(
            job_id,
            {"callback_status": CallbackStatus.DELIVERED, "callback_sent_at": utcnow(), "callback_error": None},
        )
        if changed is None:
            return False
        self.metrics.callback(CallbackOutcome.DELIVERED)
        return True

    def record_callback_failure(self, job_id: str, error: str, *, final: bool) -> bool:
        """Records a failed attempt; `final`: no attempt is left, the callback is undeliverable."""
        values: dict[str, Any] = {"callback_error": clip(error)}
        if final:
            values["callback_status"] = CallbackStatus.UNDELIVERABLE
        if self._callback_change(job_id, values) is None:
            return False
        self.metrics.callback(CallbackOutcome.UNDELIVERABLE if final else CallbackOutcome.RETRIED)
        return True

    def mark_callbacks_checked(self, job_ids: Iterable[str]) -> None:
        """The reconciler looked at these pending callbacks now (it takes the least recent first)."""
        ids = list(job_ids)
        if ids:
            with self.database.session() as session:
                session.execute(update(Job).where(Job.id.in_(ids)).values(callback_checked_at=utcnow()))
