"""A spare work-horse runs a job's writes on no row, and analyzes a short tone, only while it waits: one handed
its job at once (a burst) goes straight to it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from sqlalchemy import event

import tasks.analyzers.local
from jobs.runtime import Runtime
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database


@pytest.mark.parametrize(("order_waiting", "writes", "analyses"), [(True, 0, 0), (False, 4, 1)])
def test_the_warm_up_runs_only_while_no_order_has_come(
    make_runtime: Callable[..., Runtime],
    monkeypatch: pytest.MonkeyPatch,
    order_waiting: bool,
    writes: int,
    analyses: int,
) -> None:
    runtime = make_runtime()
    analyzed: list[str] = []
    real_analyze = tasks.analyzers.local.LocalAnalyzer.analyze

    def counted_analyze(self: Any, *args: Any, **kwargs: Any) -> Any:
        analyzed.append("tone")
        return real_analyze(self, *args, **kwargs)

    monkeypatch.setattr(tasks.analyzers.local.LocalAnalyzer, "analyze", counted_analyze)
    worker = KitWorker(["audio_analysis"], connection=fakeredis.FakeRedis())
    begun: list[str] = []

    def on_begin(connection: Any) -> None:
        begun.append("begin")

    read_end, write_end = os.pipe()
    event.listen(runtime.database.engine, "begin", on_begin)
    try:
        if order_waiting:
            os.write(write_end, b"{}\n")
        worker._warm_up(read_end)
    finally:
        event.remove(runtime.database.engine, "begin", on_begin)
        os.close(read_end)
        os.close(write_end)

    assert len(begun) == writes  # get; begin_attempt (its write, then a read: no row); finish
    assert len(analyzed) == analyses
