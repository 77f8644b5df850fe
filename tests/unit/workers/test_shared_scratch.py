"""A forking worker's work-horses take the analyzer's working arrays from one shared mapping of the worker's,
whose pages stay resident from one job to the next, instead of faulting in fresh pages and freeing them per job."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest

from redis_client import RUN_JOB, KitJob
from tasks.analyzers import scratch
from tasks.analyzers.local import LocalAnalyzer
from tasks.analyzers.scratch import SCRATCH
from tests.support.audio import encode, tone
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database


class _AnalyzingWorker(KitWorker):
    """Its work-horse analyzes `audio` instead of running the job, and writes where its arrays are."""

    report_to: int = -1
    audio: Path

    def main_work_horse(self, job: Any, queue: Any) -> None:
        LocalAnalyzer().analyze(self.audio, lambda percent, message: None)
        arrays = [(kept.ctypes.data, kept.nbytes) for kept in SCRATCH._arrays.values()]
        os.write(self.report_to, json.dumps(arrays).encode())
        os._exit(0)

    def run_one(self) -> list[tuple[int, int]]:
        read_end, self.report_to = os.pipe()
        try:
            self.fork_work_horse(KitJob.create(RUN_JOB, args=["abc"], connection=self.connection), self.queues[0])
            os.close(self.report_to)
            with os.fdopen(read_end, "rb") as pipe:
                report = pipe.read()
        finally:
            os.waitpid(self.horse_pid, 0)
        return [(address, size) for address, size in json.loads(report)]


def test_a_work_horse_analyzes_in_its_workers_shared_arrays_and_the_next_one_reuses_their_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "_arena", None)  # this process's own, dropped after the test
    audio = tmp_path / "tone.wav"
    audio.write_bytes(encode(np.tile(tone(440.0, -6.0, 2.0, 44100)[:, None], (1, 2)), 44100, "WAV", "PCM_16"))
    worker = _AnalyzingWorker(["audio_analysis"], connection=fakeredis.FakeRedis())
    worker.audio = audio
    LocalAnalyzer().analyze(audio, lambda percent, message: None)  # arrays of this process: not inherited

    first = worker.run_one()
    arena = scratch.shared_arena() or scratch._arena
    assert arena is not None
    assert arena.owner == os.getpid()
    used = arena.high_water()
    second = worker.run_one()

    start, end = arena.bytes.ctypes.data, arena.bytes.ctypes.data + arena.size
    assert first
    assert all(start <= address and address + size <= end for address, size in first + second)
    assert second == first  # the same pages, job after job
    assert used >= sum(size for _, size in first)  # written by the work-horse, seen by the worker
    assert arena.high_water() == used


def test_the_worker_itself_and_threads_of_a_process_without_an_arena_keep_their_own_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scratch, "_arena", None)
    arena = scratch.share_with_work_horses(2**20)
    assert arena is not None
    assert scratch.share_with_work_horses(2**20) is arena  # made once per worker process

    mine = scratch.Scratch().array("test.owner", (16,), np.float64)  # the worker's own: not the shared pages
    assert not np.shares_memory(mine, arena.bytes)


def test_arrays_that_do_not_fit_in_the_arena_are_the_work_horses_own(monkeypatch: pytest.MonkeyPatch) -> None:
    arena = scratch.SharedArena(4096)
    monkeypatch.setattr(scratch, "_arena", arena)
    monkeypatch.setattr(arena, "owner", os.getppid())  # as if this process were its work-horse
    kept = scratch.Scratch()

    small = kept.array("small", (100,), np.float64)
    large = kept.array("large", (1000,), np.float64)
    threads: list[Any] = []
    other = threading.Thread(target=lambda: threads.append(scratch.Scratch().array("small", (100,), np.float64)))
    other.start()
    other.join()

    assert np.shares_memory(small, arena.bytes)
    assert not np.shares_memory(large, arena.bytes)
    assert np.shares_memory(threads[0], arena.bytes)
    assert not np.shares_memory(threads[0], small)
    # The header, "small" (800 bytes), "small" of the other thread from the next cache line (896).
    assert arena.high_water() == 896 + 800
