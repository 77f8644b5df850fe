"""What importing the job's modules costs a fresh process: the cost an RQ work-horse would pay on every job
if the worker did not import them before forking (`workers.main` does; a fork inherits what its parent
has imported, nothing more)."""

from __future__ import annotations

import subprocess
import sys

from bench.stats import Row, summarize
from core.settings import PROJECT_ROOT

PROBE_TIMEOUT_S = 60.0
# Imports what a bare RQ worker has imported, then times the job's own modules.
_PROBE = """
import time
import rq.worker_pool, redis_client
started = time.perf_counter()
import tasks.audio_analysis
import tasks.analyzers.local
print((time.perf_counter() - started) * 1000)
"""


def time_job_imports(runs: int) -> list[float]:
    """Milliseconds to import the job modules in a fresh interpreter that has the worker's modules."""
    samples_ms = []
    for _ in range(runs):
        completed = subprocess.run(
            [sys.executable, "-c", _PROBE],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=PROBE_TIMEOUT_S,
        )
        samples_ms.append(float(completed.stdout.strip().splitlines()[-1]))
    return samples_ms


def import_row(runs: int) -> Row:
    return summarize(
        "import job modules, fresh process",
        time_job_imports(runs),
        "ms",
        "tasks.audio_analysis + analyzers.local after rq: saved per job by workers.main's pre-fork import",
    )
