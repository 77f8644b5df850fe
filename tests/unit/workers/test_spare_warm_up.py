"""A spare work-horse runs a job's writes on no row only while it waits: one handed its job at once (a burst)
goes straight to it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from sqlalchemy import event

from jobs.runtime import Runtime
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database


@pytest.mark.parametrize(("order_waiting", "writes"), [(True, 0), (False, 4)])
def test_the_warm_up_on_no_row_runs_only_while_no_order_has_come(
    make_runtime: Callable[..., Runtime], order_waiting: bool, writes: int
) -> None:
    runtime = make_runtime()
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
