"""Memory soak: resident memory of the API (and the RQ workers) before and after many short jobs, and idle.

`.venv/bin/python bench/run.py soak [--jobs N] [--idle-s S]` (or `make bench BENCH_ARGS="soak --jobs 200"`).
For each mode it starts a fresh service (the API, plus a worker pool in RQ mode); concurrent clients
each upload a short WAV file and poll it until it ends, then upload the next, N uploads in all (the
polling is what makes the API use many request threads); then it idles. RSS and thread counts are
sampled at start, after the jobs and after idling. Prints a table; the JSON goes to `bench/results/soak-*.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.audio import SHORT_AUDIO_S, write_audio
from bench.client import Outcome, make_client, upload_and_wait
from bench.report import RESULTS_DIR, load_average, machine_info
from bench.scenarios import check_outcomes
from bench.stack import Stack, StackConfig, running_stack
from devserver.redis import RedisServer

DEFAULT_JOBS = 200
MAX_JOBS = 2000  # bounded: the run must end in minutes, not hours
DEFAULT_IDLE_S = 5.0
DEFAULT_CLIENTS = 16  # concurrent users, each uploading and polling its job until it ends
MODES = (
    StackConfig("soak-rq", use_rq_queue=True, workers=2),
    StackConfig("soak-background", use_rq_queue=False),
)
_MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """Memory of one stack at one moment. Workers: the pool and its children, RSS summed."""

    mode: str
    phase: str
    api_rss_mb: float
    api_threads: int
    workers_rss_mb: float | None
    worker_processes: int | None


def _tree(pid: int) -> Iterator[psutil.Process]:
    """The process and its descendants that still exist."""
    try:
        root = psutil.Process(pid)
        yield root
        yield from root.children(recursive=True)
    except psutil.NoSuchProcess:
        return


def _rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue  # a work-horse that ended between listing and reading
    return round(total / _MB, 1)


def sample(stack: Stack, phase: str) -> Sample:
    api = psutil.Process(stack.api.pid)
    worker_tree = list(_tree(stack.workers.pid)) if stack.workers is not None else None
    return Sample(
        mode=stack.config.label,
        phase=phase,
        api_rss_mb=_rss_mb([api]),
        api_threads=api.num_threads(),
        workers_rss_mb=_rss_mb(worker_tree) if worker_tree is not None else None,
        worker_processes=len(worker_tree) if worker_tree is not None else None,
    )


def _client(base_url: str, data: bytes, indices: range) -> list[Outcome]:
    with make_client(base_url) as client:
        return [upload_and_wait(client, data, f"soak-{index}.wav") for index in indices]


def run_clients(base_url: str, data: bytes, jobs: int, clients: int) -> list[Outcome]:
    """`jobs` uploads by `clients` concurrent users, each waiting for its job before the next upload."""
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="soak-client") as pool:
        lanes = pool.map(lambda lane: _client(base_url, data, range(lane, jobs, clients)), range(clients))
        return [outcome for lane in lanes for outcome in lane]


def soak(
    config: StackConfig, redis_server: RedisServer, root: Path, data: bytes, jobs: int, clients: int, idle_s: float
) -> tuple[list[Sample], str | None]:
    """Samples at start, after `jobs` uploads have ended, and after `idle_s` of nothing; and any problem."""
    with running_stack(config, redis_server, root) as stack:
        samples = [sample(stack, "start")]
        print(f"soak: {config.label}: {jobs} uploads by {clients} clients ...", file=sys.stderr, flush=True)
        outcomes = run_clients(stack.api.url, data, jobs, clients)
        samples.append(sample(stack, f"after {jobs} jobs"))
        time.sleep(idle_s)  # the measurement is what an idle process gives back, so nothing to poll for
        samples.append(sample(stack, f"idle {idle_s:g} s"))
    return samples, check_outcomes(f"soak {config.label}", outcomes)


def format_samples(samples: list[Sample]) -> str:
    headers = ("mode", "phase", "API RSS MB", "API threads", "workers RSS MB", "worker procs")
    cells = [list(headers)] + [
        [
            item.mode,
            item.phase,
            f"{item.api_rss_mb:.1f}",
            str(item.api_threads),
            "-" if item.workers_rss_mb is None else f"{item.workers_rss_mb:.1f}",
            "-" if item.worker_processes is None else str(item.worker_processes),
        ]
        for item in samples
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_soak_results(started_at: datetime, document: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"soak-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _positive_jobs(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"--jobs must be between 1 and {MAX_JOBS}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py soak", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=_positive_jobs, default=DEFAULT_JOBS, help=f"uploads per mode (default {DEFAULT_JOBS})"
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent users")
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S, help="idle time before the last sample")
    parser.add_argument("--mode", choices=("both", "rq", "background"), default="both")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop every process the run started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    modes = [config for config in MODES if args.mode == "both" or config.use_rq_queue == (args.mode == "rq")]
    started_at = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="audiokit-soak-"))
    samples: list[Sample] = []
    problems: list[str] = []
    load_start = load_average()
    succeeded = False
    try:
        (root / "audio").mkdir()
        data = write_audio(root / "audio", SHORT_AUDIO_S, "WAV", "PCM_16").path.read_bytes()
        redis_server = RedisServer(root / "redis")
        redis_server.start()
        try:
            for config in modes:
                mode_samples, problem = soak(config, redis_server, root, data, args.jobs, args.clients, args.idle_s)
                samples += mode_samples
                problems += filter(None, [problem])
        finally:
            redis_server.stop()
        succeeded = True
    finally:
        if succeeded:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"soak: failed; logs and data kept in {root}", file=sys.stderr)
    document = {
        "started_at": started_at.isoformat(),
        "jobs": args.jobs,
        "idle_s": args.idle_s,
        "clients": args.clients,
        "audio": f"{SHORT_AUDIO_S:g} s WAV",
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": load_average()},
        "samples": [asdict(item) for item in samples],
        "problems": problems,
    }
    path = write_soak_results(started_at, document)
    print(format_samples(samples))
    print(f"\n{args.jobs} jobs per mode, {args.clients} concurrent clients; JSON: {path}")
    for problem in problems:
        print(f"LOST OR REPEATED WORK: {problem}")
    return 1 if problems else 0
