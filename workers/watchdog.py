"""What a simple-mode worker tells its pool about the job it runs, in memory the two share.

RQ's `SimpleWorker` enforces a job's timeout with SIGALRM in its own main thread; code that never
returns to the interpreter (C code holding the GIL, a call with SIGALRM blocked) never sees it. The
pool's process does not share that fate: each worker writes its job's deadline (timeout + grace) here,
and the pool kills a worker whose job is still running past it (`workers.pool`). Plain shared memory
(no lock, no Redis): the worker writes, the pool reads once a second, and a torn read costs at most one
more round.
"""

from __future__ import annotations

import math
import time
from multiprocessing.sharedctypes import RawArray, RawValue
from typing import Any

IDLE = 0.0
FIELD_BYTES = 200  # a job id, an execution id or a queue name (RQ's are far shorter)


class JobSlot:
    """The running job of one worker: its deadline (`time.monotonic()`, system-wide on Linux), id,
    RQ execution id and queue. A deadline of 0 means idle; `inf`, a job without timeout."""

    def __init__(self) -> None:
        self._deadline: Any = RawValue("d", IDLE)
        self._fields: list[Any] = [RawArray("c", FIELD_BYTES) for _ in range(3)]

    def start(self, job_id: str, execution_id: str, queue: str, timeout_s: float, grace_s: float) -> None:
        for field, value in zip(self._fields, (job_id, execution_id, queue), strict=True):
            field.value = value.encode()[: FIELD_BYTES - 1]
        self._deadline.value = math.inf if timeout_s < 0 else time.monotonic() + timeout_s + grace_s

    def clear(self) -> None:
        self._deadline.value = IDLE

    @property
    def busy(self) -> bool:
        return bool(self._deadline.value > IDLE)

    def overdue(self, now: float) -> bool:
        return bool(IDLE < self._deadline.value < now)

    @property
    def job(self) -> tuple[str, str, str]:
        """(job id, execution id, queue) of the job last started."""
        job_id, execution_id, queue = (field.value.decode(errors="replace") for field in self._fields)
        return job_id, execution_id, queue


_slot: JobSlot | None = None  # this worker process's slot, installed by the pool before the worker starts


def install_slot(slot: JobSlot | None) -> None:
    global _slot
    _slot = slot


def current_slot() -> JobSlot | None:
    """The slot the pool watches for this process; None for a worker started outside a kit pool."""
    return _slot
