"""The in-process runner's waiting line: the order its jobs wait in for a free thread.

A job joins the line when it is submitted (before the upload is answered), and its position is its
place in that line. The line is ordered as RQ's workers drain the priority queues: by priority level
(critical, high, normal, low), then by arrival; a free thread takes the first job of the line that its
limits let start (`jobs.limits.LocalGate`: a free slot of its task's `concurrency`, first of its
ordering key).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from typing import Protocol

from core.models import Job, Priority
from jobs.limits import LocalGate


class Waiting(Protocol):
    """What the line needs to know of a job held by the runner."""

    task: str
    key: str | None  # its ordering key
    noted: str | None  # what held it back last, as logged on its row


class WaitingLine:
    """Job ids by (priority level, arrival); the head is the next to run. Not thread-safe: the runner
    calls it under its lock."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, int, str]] = []  # (rank, arrival, id), kept sorted
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def join(self, job_id: str, rank: int) -> int:
        """Puts the job in line behind those of its level and above; returns its place."""
        entry = (rank, next(self._arrivals), job_id)
        bisect.insort(self._entries, entry)
        return self._entries.index(entry)

    def place(self, job_id: str) -> int | None:
        """0-based place of the job in line; None when it is not in line."""
        return next((index for index, entry in enumerate(self._entries) if entry[2] == job_id), None)

    def leave(self, job_id: str) -> bool:
        """Takes the job out of line; False when it was not in line."""
        place = self.place(job_id)
        if place is None:
            return False
        del self._entries[place]
        return True

    def move(self, job_id: str, rank: int) -> None:
        """A job in line goes behind the jobs waiting at its new level (as on RQ, where it goes to the
        tail of that level's queue); one not in line stays out."""
        if self.leave(job_id):
            self.join(job_id, rank)

    def take_first(self, jobs: Mapping[str, Waiting], gate: LocalGate) -> tuple[str | None, list[tuple[str, str]]]:
        """Takes the first job of the line that its limits let start (or that `jobs` no longer holds);
        returns its id (None when every job in line is held back) and the jobs before it held back for a
        new reason, with the reason."""
        held_back: list[tuple[str, str]] = []
        for place, (_, _, job_id) in enumerate(self._entries):
            job = jobs.get(job_id)
            reason = gate.why_waiting(job_id, job.task, job.key) if job is not None else None
            if job is None or reason is None:
                del self._entries[place]
                return job_id, held_back
            if reason != job.noted:
                job.noted = reason
                held_back.append((job_id, reason))
        return None, held_back


def rank_of(row: Job) -> int:
    """The job's priority level, 0 the highest; an unknown priority counts as normal."""
    try:
        return Priority(row.priority).rank
    except ValueError:
        return Priority.NORMAL.rank
