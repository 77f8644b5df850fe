"""Tasks for chains: a step that waits for a gate file, one that always fails (after a retry), and one
that combines its parents' results (`parent_results`).

Workers and the API register them when `TASK_MODULES` names this module (`CHAIN_TASK_MODULES`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobs import current_job_id, parent_results, progress, task
from tests.support.sample_tasks import SAMPLE_QUEUE, SAMPLE_TASK_MODULES

CHAIN_TASK_MODULES = (*SAMPLE_TASK_MODULES, __name__)
GATE_WAIT_S = 60.0  # a gated step gives up (and fails) if its gate never opens
_GATE_POLL_S = 0.05


@task(name="chains.step", queue=SAMPLE_QUEUE, retry=0)
def step(value: int, gate: str = "") -> dict[str, Any]:
    """Returns `value` (once the file `gate` exists, when one is named; a cancel stops it while it waits)."""
    deadline = time.monotonic() + GATE_WAIT_S
    while gate and not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        progress(10)  # where a cancel stops it, in both modes
        time.sleep(_GATE_POLL_S)
    return {"value": value}


@task(name="chains.broken", queue=SAMPLE_QUEUE, retry=1, retry_intervals=[0])
def broken() -> None:
    """Fails on every attempt (one retry: its dependents wait through the retry, then give up)."""
    raise RuntimeError("broken on purpose")


@task(name="chains.total", queue=SAMPLE_QUEUE, retry=0)
def total() -> dict[str, Any]:
    """Sums the `value` of every parent's result, read with `parent_results()`."""
    parents = parent_results()
    return {
        "total": sum(result["value"] for result in parents.values()),
        "parents": list(parents),
        "job": current_job_id(),
    }
