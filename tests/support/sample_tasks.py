"""Tasks that are not audio, for tests of the job layer against real workers and the real API.

Workers and the API register them when `TASK_MODULES` names this module (`SAMPLE_TASK_MODULES`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.settings import DEFAULT_TASK_MODULES
from jobs import current_job_id, log_line, progress, task

SAMPLE_QUEUE = "samples"
SAMPLE_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)
GATE_WAIT_S = 60.0  # a gated task gives up (and fails) if its gate never opens
_GATE_POLL_S = 0.05


@task(name="samples.add", queue=SAMPLE_QUEUE, retry=0)
def add(a: int, b: int) -> dict[str, Any]:
    """A plain `def` task: the sum, and which job computed it."""
    progress(50, "adding")
    return {"sum": a + b, "job": current_job_id()}


@task(name="samples.greet", retry=0)
async def greet(name: str, *, punctuation: str = "!") -> dict[str, Any]:
    """An `async def` task (on the default queue) with a keyword argument."""
    await asyncio.sleep(0)  # a real suspension point: the task must be awaited to get past it
    log_line(f"greeting {name}")
    return {"greeting": f"hello {name}{punctuation}", "job": current_job_id()}


@task(name="samples.gated", queue=SAMPLE_QUEUE, retry=0)
async def gated(gate: str, steps: int) -> dict[str, Any]:
    """Waits until the file `gate` exists, then reports `steps` progress steps and log lines."""
    path = Path(gate)
    deadline = asyncio.get_running_loop().time() + GATE_WAIT_S
    while not path.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        await asyncio.sleep(_GATE_POLL_S)
    for step in range(1, steps + 1):
        progress(step * 90 // steps, f"step {step} of {steps}")
        await asyncio.sleep(0)
    return {"steps": steps}


@task(name="samples.flaky", queue=SAMPLE_QUEUE, retry=0)
def flaky(marker: str) -> dict[str, Any]:
    """Fails on its first run (leaving the file `marker`), succeeds on any later one."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("first run fails")
    return {"runs": "again"}


@task(name="samples.fail", queue=SAMPLE_QUEUE, retry=0)
def fail(reason: str) -> None:
    """Always fails, with `reason`."""
    raise ValueError(reason)
