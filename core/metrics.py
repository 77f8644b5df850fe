"""Job metrics recorded where job state changes (`core.lifecycle`), shared by every process.

`JobMetrics` is what the lifecycle calls; `NullMetrics` records nothing.
"""

from __future__ import annotations

from typing import Protocol


class JobMetrics(Protocol):
    """Counts and times job transitions, per queue."""

    def started(self, queue: str, attempt: int, wait_s: float | None) -> None:
        """A run began; `wait_s` is upload-to-start latency, given for the first attempt only."""

    def finished(self, queue: str, duration_s: float | None) -> None:
        """A run succeeded; `duration_s` is the duration of that run."""

    def failed(self, queue: str) -> None:
        """A job failed for good."""

    def retried(self, queue: str) -> None:
        """A run failed and the job will be tried again."""

    def canceled(self, queue: str) -> None:
        """A job was canceled or stopped."""


class NullMetrics:
    """Records nothing."""

    def started(self, queue: str, attempt: int, wait_s: float | None) -> None:
        return None

    def finished(self, queue: str, duration_s: float | None) -> None:
        return None

    def failed(self, queue: str) -> None:
        return None

    def retried(self, queue: str) -> None:
        return None

    def canceled(self, queue: str) -> None:
        return None
