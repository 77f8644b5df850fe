"""The benchmark run: analyzer alone, then the service in RQ mode (1 and 2 workers) and background mode,
then the workers' own cost against raw RQ's (`bench.workers`; alone with `--workers-only`).

Each service scenario gets fresh processes, database and storage on one private redis-server (emptied in
between). Numbers come from one run on one machine: compare rows with each other (the ratios), not with
another machine's results.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from bench.analysis import AnalysisRow, analysis_main, format_analysis_table, run_analysis
from bench.analyzer import analyzer_rows
from bench.audio import SHORT_AUDIO_S, benchmark_files
from bench.imports import import_row
from bench.report import load_average, machine_info, write_results
from bench.scenarios import ScenarioRuns, run_burst, run_sequential, warm_up
from bench.service_rows import service_rows
from bench.stack import StackConfig, running_stack
from bench.stats import Row, format_table
from bench.workers import run_probe, worker_rows
from devserver.redis import RedisServer

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """How many samples each phase takes."""

    name: str
    analyzer_runs: int
    sequential_uploads: int
    throughput_uploads: int
    rounds: int = 3  # interleaved runs of every service scenario


QUICK = Profile("quick", analyzer_runs=5, sequential_uploads=5, throughput_uploads=16)  # a minute or so
# Five rounds: the 2w/1w ratio of single rounds spread over 1.3-1.8 here (a 1-worker round is one process's
# luck on a shared machine), and a median of three moved by 0.3 between quiet runs.
FULL = Profile("full", analyzer_runs=20, sequential_uploads=20, throughput_uploads=40, rounds=5)  # ~3 minutes

IMPORT_PROBE_RUNS = 5  # each run starts an interpreter (about half a second)

RQ_ONE = StackConfig("rq-1-worker", use_rq_queue=True, workers=1)
RQ_TWO = StackConfig("rq-2-workers", use_rq_queue=True, workers=2)
RQ_TWO_NO_FORK = StackConfig("rq-2-workers-no-fork", use_rq_queue=True, workers=2, no_fork=True)
BACKGROUND = StackConfig("background", use_rq_queue=False)
SCENARIOS = (RQ_ONE, RQ_TWO, RQ_TWO_NO_FORK, BACKGROUND)


def _step(what: str, action: Callable[[], T]) -> T:
    """Runs `action`, telling the operator what and how long (on stderr, the table goes to stdout)."""
    print(f"bench: {what} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    value = action()
    print(f"bench: {what} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return value


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop every process the run started."""
    del frame
    raise SystemExit(128 + signum)


def _service_rows(
    profile: Profile, redis_server: RedisServer, root: Path, data: bytes, problems: list[str], baseline: Path | None
) -> list[Row]:
    """Runs every service scenario `profile.rounds` times, interleaved (each round in another order), on this
    checkout and on `baseline`'s; adds to `problems` any upload that did not finish in one attempt."""
    configs = [
        config.of(code)
        for code in ([baseline] if baseline else []) + [None]
        for config in SCENARIOS
        if code is None or not config.no_fork  # a baseline may predate the no-fork mode
    ]
    runs = {config.name: ScenarioRuns(config) for config in configs}
    for index in range(profile.rounds):
        shift = index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            with running_stack(config, redis_server, root / f"round-{index + 1}") as stack:
                label = f"{config.label}, round {index + 1}"
                _step(f"{label}: warm-up", lambda: warm_up(stack, data))
                if index == 0 and config.workers != 2:
                    runs[config.name].sequential = _step(
                        f"{label}: {profile.sequential_uploads} sequential uploads",
                        lambda: run_sequential(stack, data, profile.sequential_uploads),
                    )
                burst = _step(
                    f"{label}: burst of {profile.throughput_uploads}",
                    lambda: run_burst(stack, data, profile.throughput_uploads),
                )
                runs[config.name].bursts.append(burst)
    for item in runs.values():
        problems += item.problems()
    return service_rows(list(runs.values()), len(data) / 1e6)


def _new_document(profile: Profile, **extra: Any) -> dict[str, Any]:
    """A run's JSON document as it starts: the time, the profile, the machine and its load."""
    return {
        "started_at": datetime.now(UTC).isoformat(),
        "profile": asdict(profile),
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        **extra,
    }


def _save(document: dict[str, Any], rows: list[Row]) -> str:
    """Ends the document (load, duration), writes it with `rows`; the line that says where it went."""
    started_at = datetime.fromisoformat(document["started_at"])
    load = document["load_average"]
    load["end"] = load_average()
    document["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    path = write_results(started_at, document, rows)
    return (
        f"{document['profile']['name']} run, {document['duration_s']} s; load average {load['start']} → "
        f"{load['end']} on {document['machine']['cpu_count']} CPUs; JSON: {path}"
    )


def _workers_main(profile: Profile, breakdown: bool, baseline: Path | None) -> int:
    """`--workers-only`: the kit's workers against raw RQ's (and the phases with `--breakdown`), printed and
    written as JSON; with `baseline`, the same for another checkout's code first, its rows marked "before"."""
    document = _new_document(profile, baseline=str(baseline) if baseline is not None else None)
    root = Path(tempfile.mkdtemp(prefix="audiokit-bench-"))
    rows: list[Row] = []
    try:
        if baseline is not None:
            before = _step(
                f"workers: {baseline}",
                lambda: run_probe(root / "before", profile.name, breakdown=breakdown, code_root=baseline.resolve()),
            )
            rows += worker_rows(before, " [before]")
        probe = _step("workers: kit vs raw RQ", lambda: run_probe(root / "now", profile.name, breakdown=breakdown))
        rows += worker_rows(probe)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    saved = _save(document, rows)
    print(format_table(rows))
    print(f"\nworkers only, {saved}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, under a minute")
    parser.add_argument("--analysis-only", action="store_true", help="only the local analyzer: time and memory")
    parser.add_argument("--analysis-baseline", metavar="REV", help="also run the analyzer of git revision REV")
    parser.add_argument("--workers-only", action="store_true", help="only the workers: kit vs raw RQ on a no-op")
    parser.add_argument(
        "--uploads-only", action="store_true", help="only the service: POST /audio at c=8 and burst throughput"
    )
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="interleaved runs of each service scenario (5; --quick: 3)"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each phase of a 0.1 s file's job in the forking worker"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="measure this checkout's code too, its rows marked [before] (e.g. `git worktree add /tmp/before main`):"
        " the workers with --workers-only, else the service",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.rounds is not None:
        profile = replace(profile, rounds=max(1, args.rounds))
    if args.analysis_only:
        return analysis_main(profile.analyzer_runs, args.analysis_baseline)
    if args.workers_only:
        return _workers_main(profile, args.breakdown, args.baseline)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    document = _new_document(profile)
    root = Path(tempfile.mkdtemp(prefix="audiokit-bench-"))
    problems: list[str] = []
    analysis: list[AnalysisRow] = []
    succeeded = False
    try:
        files = benchmark_files(root / "audio")
        rows: list[Row] = []
        if not args.uploads_only:
            rows += _step("analyzer in-process", lambda: analyzer_rows(files, profile.analyzer_runs))
            analysis = _step(
                "analysis 10 s-10 min",
                lambda: run_analysis(root / "analysis", profile.analyzer_runs, args.analysis_baseline),
            )
            document["analysis"] = [row.as_json() for row in analysis]
            rows.append(_step("job-module imports", lambda: import_row(min(profile.analyzer_runs, IMPORT_PROBE_RUNS))))
        data = files[0].path.read_bytes()
        assert files[0].label == f"{SHORT_AUDIO_S:g} s WAV"
        redis_server = RedisServer(root / "redis")
        redis_server.start()
        try:
            rows += _service_rows(profile, redis_server, root, data, problems, args.baseline)
        finally:
            redis_server.stop()
        if not args.uploads_only:
            probe = _step(
                "workers: kit vs raw RQ", lambda: run_probe(root / "workers", profile.name, breakdown=args.breakdown)
            )
            rows += worker_rows(probe)
        succeeded = True
    finally:
        if succeeded:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"bench: failed; logs and data kept in {root}", file=sys.stderr)
    document["problems"] = problems
    saved = _save(document, rows)
    print(format_table(rows))
    if analysis:
        print("\n" + format_analysis_table(analysis))
    print(f"\n{saved}")
    for problem in problems:
        print(f"LOST OR REPEATED WORK: {problem}")
    return 1 if problems else 0
