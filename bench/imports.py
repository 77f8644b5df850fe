"""What importing the job's modules costs a fresh process: an RQ work-horse pays it on every job unless the
worker imported them before forking (a fork inherits what its parent has imported, nothing more)."""

from __future__ import annotations

import subprocess
import sys

from bench.stats import Row, summarize
from core.settings import PROJECT_ROOT

PROBE_TIMEOUT_S = 60.0
# Imports what `python -m workers.main` has imported when it forks, then times the job's own modules.
_PROBE = """
import time
import workers.main
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
        "tasks.audio_analysis + analyzers.local after workers.main: per job in RQ unless preloaded pre-fork",
    )
