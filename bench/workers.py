"""The workers' own cost per job: the kit's worker against raw RQ's on a no-op, and where a job's time goes.

One private redis-server and SQLite database; the measuring runs in a process of its own
(`bench.worker_probe`), configured by the environment as a worker is. Raw RQ's `Worker` and
`SimpleWorker` drain a no-op function and the kit's workers (the same classes) a no-op task,
interleaved round by round; Redis commands per job come from `INFO commandstats` deltas around each
drain. `--breakdown` then runs jobs one at a time on running forking workers, interleaved, each after the
workers were idle 0.25 s: a no-op on raw RQ's `Worker` (the floor: enqueue → ended), a no-op task and a
0.1 s WAV's analysis on the kit's,
each from its commit to its row's `finished` and to a client that sees it (a change notification, then
a read of the row, as an event stream does), the analysis phase by phase (wall-clock marks in the
worker, its work-horse and the client; the same clock for all, the machine's).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.audio import write_audio
from bench.stats import FAULTS_SUFFIX, Row, single, summarize
from core.settings import PROJECT_ROOT
from devserver.redis import RedisServer

NOOP_JOBS = 100  # per drain: enough that a burst worker's start and stop cost little per job
ROUNDS = {"quick": 3, "full": 5}
BREAKDOWN_JOBS = {"quick": 10, "full": 30}
SHORT_FILE_S = 0.1
PROBE_TIMEOUT_S = 900
PROBE = Path(__file__).resolve().with_name("worker_probe.py")
NAMES = {
    "raw-fork": "raw RQ Worker",
    "kit-fork": "kit Worker",
    "raw-simple": "raw RQ SimpleWorker",
    "kit-simple": "kit SimpleWorker (--no-fork)",
}


def _spread(values: list[float], digits: int = 1) -> str:
    return f"min {min(values):.{digits}f}, median {statistics.median(values):.{digits}f}, max {max(values):.{digits}f}"


def run_probe(root: Path, profile: str, *, breakdown: bool, code_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Runs `bench.worker_probe` on the code under `code_root` (another checkout: its "before" numbers)."""
    root.mkdir(parents=True, exist_ok=True)
    audio = write_audio(root, SHORT_FILE_S, "WAV", "PCM_16")
    redis_server = RedisServer(root / "redis")
    redis_server.start()
    try:
        env = {
            **os.environ,
            "PYTHONPATH": str(code_root),
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": f"sqlite:///{root / 'audiokit.db'}",
            "STORAGE_DIR": str(root / "uploads"),
            "USE_RQ_QUEUE": "true",
            "LOG_LEVEL": "WARNING",
            "BENCH_SPAN_FILE": str(root / "spans.jsonl"),
        }
        result = root / "probe.json"
        arguments = [str(ROUNDS[profile]), str(NOOP_JOBS), str(BREAKDOWN_JOBS[profile] if breakdown else 0)]
        argv = [str(PROBE), str(result), *arguments, str(audio.path)]
        run = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        subprocess.run(
            [sys.executable, "-c", run],
            env=env,
            cwd=root,
            check=True,
            timeout=PROBE_TIMEOUT_S,
        )
        data: dict[str, Any] = json.loads(result.read_text())
        return data
    finally:
        redis_server.stop()


def worker_rows(probe: dict[str, Any], label: str = "") -> list[Row]:
    """Throughput and Redis commands per no-op job for each worker, the kit ÷ raw ratios, the phases."""
    rows: list[Row] = []
    drains: dict[str, list[list[float]]] = probe["drains"]
    medians: dict[str, float] = {}
    for kind, name in NAMES.items():
        rates = [rate for rate, _ in drains[kind]]
        commands = [per_job for _, per_job in drains[kind]]
        medians[kind] = statistics.median(rates)
        rows.append(
            summarize(f"noop drain, {name}{label}", rates, "jobs/s", f"{NOOP_JOBS} jobs a drain; {_spread(rates)}")
        )
        rows.append(summarize(f"Redis commands/job, {name}{label}", commands, "cmds", _spread(commands)))
    for mode, worker in (("fork", "Worker"), ("simple", "SimpleWorker")):
        value = medians[f"kit-{mode}"] / medians[f"raw-{mode}"]
        rows.append(single(f"ratio kit/raw RQ {worker}{label}", len(drains[f"kit-{mode}"]), value, "x", "goal ≥ 0.5"))
    phases: dict[str, list[float]] = probe["phases"]
    for phase, values in phases.items():  # in the order of a job's life; one value per job
        unit = "faults" if phase.endswith(FAULTS_SUFFIX) else "ms"
        rows.append(summarize(f"{phase}{label}", values, unit, _spread(values)))
    return rows
