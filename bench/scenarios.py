"""The service on a running stack: sequential uploads (POST time, latency) and a burst (throughput, and
POST time at c=8 while jobs run), repeated in interleaved rounds, and the rows that summarize them.

A burst is `count` uploads of the same 10 s WAV posted by BURST_CONCURRENCY clients at once; its
throughput is count ÷ (first send → last row's finished_at), so it counts what a client waits for:
receiving, storing, queueing and running. Every mode runs one API process; in-process mode runs
BACKGROUND_CONCURRENCY (2) analyses at once, as RQ mode's two workers do.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from bench.client import JOB_TIMEOUT_S, Outcome, Upload, make_client, submit_burst, upload_and_wait, wait_all
from bench.stack import Stack, StackConfig
from bench.stats import Row, over_runs, spread, summarize

WARMUP_UPLOADS = 2  # first jobs pay for imports in the work-horse / thread pool and a cold page cache
BURST_CONCURRENCY = 8  # client connections posting the burst at once (uploads while jobs run)
POST_P99_GOAL_MS = 150.0


@dataclass(frozen=True)
class Burst:
    """A burst of uploads and how it ended."""

    uploads: list[Upload]
    outcomes: list[Outcome]
    # CPU per upload during the upload phase (first send → last 202), user + system: the API process's
    # (in-process mode: with the analyses it runs meanwhile), and the bench's own clients'.
    api_cpu_ms: float = float("nan")
    client_cpu_ms: float = float("nan")
    # RQ modes: the workers' CPU per job over the whole burst (every process of the pool, the work-horses
    # they reaped included), user + system, and the system (kernel) part of it.
    workers_cpu_ms: float = float("nan")
    workers_system_ms: float = float("nan")

    @property
    def finished(self) -> int:
        return sum(outcome.status == "finished" for outcome in self.outcomes)

    @property
    def attempted_once(self) -> int:
        return sum(outcome.attempts == 1 for outcome in self.outcomes)

    @property
    def makespan_s(self) -> float:
        """First send to the last row's finished_at (one host, one clock: no polling delay)."""
        ends = [outcome.finished_at_s for outcome in self.outcomes if outcome.finished_at_s is not None]
        if not ends:
            return float("nan")
        return max(ends) - self.uploads[0].sent_at_s

    @property
    def upload_phase_s(self) -> float:
        """First send to the last 202: the API's share of the makespan, whatever the number of workers."""
        return max(upload.sent_at_s + upload.post_ms / 1000 for upload in self.uploads) - self.uploads[0].sent_at_s

    @property
    def drain_after_uploads(self) -> float:
        """Jobs finished per second once the last upload was answered (the workers alone on the machine but
        for the polling client); NaN when none was left by then."""
        last_answer = self.uploads[0].sent_at_s + self.upload_phase_s
        ends = sorted(
            o.finished_at_s for o in self.outcomes if o.finished_at_s is not None and o.finished_at_s > last_answer
        )
        if len(ends) < 2:
            return float("nan")
        return len(ends) / (ends[-1] - last_answer)


def warm_up(stack: Stack, data: bytes) -> None:
    with make_client(stack.api.url) as client:
        for index in range(WARMUP_UPLOADS):
            outcome = upload_and_wait(client, data, f"warmup-{index}.wav")
            if outcome.status != "finished":
                raise RuntimeError(f"warm-up upload ended {outcome.status}; see the logs in {stack.log_dir}")


def run_sequential(stack: Stack, data: bytes, count: int) -> list[Outcome]:
    """`count` uploads, one at a time: each is posted once the previous one has finished."""
    with make_client(stack.api.url) as client:
        return [upload_and_wait(client, data, f"sequential-{index}.wav") for index in range(count)]


def run_burst(stack: Stack, data: bytes, count: int) -> Burst:
    """`count` uploads posted as fast as possible, then waited for."""
    api = psutil.Process(stack.api.pid)
    pool = psutil.Process(stack.workers.pid) if stack.workers is not None else None
    workers_before = _tree_cpu_s(pool) if pool is not None else (0.0, 0.0)
    api_before, client_before = _cpu_s(api), time.process_time()
    uploads = submit_burst(stack.api.url, data, count, BURST_CONCURRENCY)
    api_cpu_ms = (_cpu_s(api) - api_before) * 1000 / count
    client_cpu_ms = (time.process_time() - client_before) * 1000 / count
    with make_client(stack.api.url) as client:
        outcomes = wait_all(client, uploads, JOB_TIMEOUT_S + count * 10.0)
    workers_cpu_ms = workers_system_ms = float("nan")
    if pool is not None:
        workers_after = _tree_cpu_s(pool)
        workers_cpu_ms = (sum(workers_after) - sum(workers_before)) * 1000 / count
        workers_system_ms = (workers_after[1] - workers_before[1]) * 1000 / count
    return Burst(uploads, outcomes, api_cpu_ms, client_cpu_ms, workers_cpu_ms, workers_system_ms)


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _tree_cpu_s(root: psutil.Process) -> tuple[float, float]:
    """User and system CPU of `root` and every live descendant, each with the children it has reaped: a
    process is counted by itself while it lives, then by the parent that reaped it."""
    user = system = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # gone between the listing and the read (its parent counts it once reaped)
            continue
        user += times.user + times.children_user
        system += times.system + times.children_system
    return user, system


def _values(outcomes: list[Outcome], attribute: str) -> list[float]:
    values = [getattr(outcome, attribute) for outcome in outcomes]
    return [float(value) for value in values if value is not None]


def check_outcomes(label: str, outcomes: list[Outcome]) -> str | None:
    """What went wrong with `outcomes` (an upload not finished, or run more than once), or None."""
    bad = [outcome for outcome in outcomes if outcome.status != "finished" or outcome.attempts != 1]
    if not bad:
        return None
    first = bad[0]
    return (
        f"{label}: {len(bad)} of {len(outcomes)} uploads did not finish in one attempt "
        f"(e.g. {first.upload.id}: {first.status}, attempts {first.attempts})"
    )


def sequential_rows(label: str, outcomes: list[Outcome], upload_mb: float) -> dict[str, Row]:
    problem = check_outcomes(label, outcomes)
    checked = f"; {problem}" if problem else "; all finished, attempts==1"
    return {
        "post_idle": summarize(
            f"POST /audio idle, {label}",
            [outcome.upload.post_ms for outcome in outcomes],
            "ms",
            f"until 202, {upload_mb:.2f} MB WAV, nothing else running{checked}",
        ),
        "observed": summarize(
            f"upload→finished observed, {label}",
            _values(outcomes, "observed_ms"),
            "ms",
            "client clock, polling GET /audio/{id} every 20 ms",
        ),
        "send_to_finished": summarize(
            f"send→finished_at, {label}",
            _values(outcomes, "send_to_finished_ms"),
            "ms",
            "client send time to the row's finished_at (same host clock)",
        ),
        "queue_wait": summarize(
            f"created→started, {label}",
            _values(outcomes, "queue_wait_ms"),
            "ms",
            "row commit → job start: dispatch + pickup; RQ adds fork + work-horse set-up",
        ),
        "run": summarize(
            f"started→finished, {label}",
            _values(outcomes, "run_ms"),
            "ms",
            "analysis + progress/result writes",
        ),
    }


@dataclass
class ScenarioRuns:
    """Every run of one scenario (a mode on one checkout's code): one burst per round, sequential uploads
    in the first round only."""

    config: StackConfig
    bursts: list[Burst] = field(default_factory=list)
    sequential: list[Outcome] = field(default_factory=list)

    def throughputs(self) -> list[float]:
        return [len(burst.outcomes) / burst.makespan_s for burst in self.bursts]

    def drains(self) -> list[float]:
        """Per round; NaN where no job was left once the uploads were answered."""
        return [burst.drain_after_uploads for burst in self.bursts]

    def problems(self) -> list[str]:
        label = self.config.label
        found = [check_outcomes(f"{label} sequential", self.sequential)] if self.sequential else []
        found += [
            check_outcomes(f"{label} burst {index + 1}", burst.outcomes) for index, burst in enumerate(self.bursts)
        ]
        return [problem for problem in found if problem]


def burst_rows(runs: ScenarioRuns) -> list[Row]:
    """POST time at c=8 (all rounds' samples together, and each round's p99) and throughput per round."""
    label, bursts = runs.config.label, runs.bursts
    posts = [upload.post_ms for burst in bursts for upload in burst.uploads]
    p99s = [summarize("p99", [upload.post_ms for upload in burst.uploads], "ms").p99 or 0.0 for burst in bursts]
    goal = f"; goal p99 ≤ {POST_P99_GOAL_MS:g} ms" if runs.config.use_rq_queue else ""
    finished = sum(burst.finished for burst in bursts)
    once = sum(burst.attempted_once for burst in bursts)
    total = sum(len(burst.outcomes) for burst in bursts)
    run_ms = [value for burst in bursts for value in _values(burst.outcomes, "run_ms")]
    return [
        summarize(
            f"POST /audio at c={BURST_CONCURRENCY}, {label}",
            posts,
            "ms",
            f"until 202, while jobs run; p99 per run {spread(p99s)}{goal}",
        ),
        summarize(f"started→finished in burst, {label}", run_ms, "ms", "per-job run time under load"),
        over_runs(
            f"throughput, {label}",
            runs.throughputs(),
            "jobs/s",
            f"{len(bursts[0].outcomes)} uploads a run, first send→last finished_at; "
            f"finished {finished}/{total}, attempts==1 {once}/{total}",
        ),
        over_runs(
            f"burst upload phase, {label}",
            [burst.upload_phase_s for burst in bursts],
            "s",
            "first send→last 202: part of every makespan, however many workers",
        ),
        over_runs(
            f"drain after the last 202, {label}",
            runs.drains(),
            "jobs/s",
            "jobs finished after the last upload was answered ÷ (last finished_at - last 202)",
        ),
        over_runs(
            f"API CPU per upload in burst, {label}",
            [burst.api_cpu_ms for burst in bursts],
            "ms",
            "the API process's user+system CPU over the upload phase ÷ uploads"
            + ("" if runs.config.use_rq_queue else " (with the analyses it runs meanwhile)"),
        ),
        over_runs(
            f"bench clients' CPU per upload in burst, {label}",
            [burst.client_cpu_ms for burst in bursts],
            "ms",
            f"the {BURST_CONCURRENCY} posting clients' user+system CPU ÷ uploads (they share the machine)",
        ),
    ] + (
        [
            over_runs(
                f"workers' CPU per job in burst, {label}",
                [burst.workers_cpu_ms for burst in bursts],
                "ms",
                "the worker pool's user+system CPU over the burst ÷ jobs (work-horses included)",
            ),
            over_runs(
                f"workers' kernel CPU per job in burst, {label}",
                [burst.workers_system_ms for burst in bursts],
                "ms",
                "its system part: forks, exits, page faults (copy-on-write), syscalls",
            ),
        ]
        if runs.config.use_rq_queue
        else []
    )


def _ratio_row(name: str, numerator: ScenarioRuns, denominator: ScenarioRuns, goal: str) -> Row:
    """Throughput ratio of two scenarios, run by run (the runs of one round ran back to back)."""
    pairs = zip(numerator.throughputs(), denominator.throughputs(), strict=True)
    return over_runs(name, [top / bottom for top, bottom in pairs], "x", goal)


def service_rows(runs: Sequence[ScenarioRuns], upload_mb: float) -> list[Row]:
    """Rows of every scenario, grouped by measurement, then the ratios between the modes of each checkout."""
    sequential = [sequential_rows(item.config.label, item.sequential, upload_mb) for item in runs if item.sequential]
    rows = [row for kind in _SEQUENTIAL_KINDS for found in sequential for key, row in found.items() if key == kind]
    bursts = [burst_rows(item) for item in runs]
    longest = max(map(len, bursts), default=0)  # RQ scenarios have rows in-process has not (the workers')
    rows += [group[index] for index in range(longest) for group in bursts if index < len(group)]
    by_mode: dict[tuple[bool, int, bool, bool], ScenarioRuns] = {
        (item.config.use_rq_queue, item.config.workers, item.config.no_fork, item.config.code_root is None): item
        for item in runs
    }
    for current in (False, True):
        one, two, two_warm, background = (
            by_mode.get((*key, current))
            for key in ((True, 1, False), (True, 2, False), (True, 2, True), (False, 0, False))
        )
        suffix = "" if current else " [before]"
        if one and two:
            rows.append(_ratio_row(f"ratio throughput rq 2w/1w{suffix}", two, one, "goal ≥ 1.7"))
            pairs = zip(two.drains(), one.drains(), strict=True)
            rows.append(
                over_runs(
                    f"ratio drain after the last 202, rq 2w/1w{suffix}",
                    [top / bottom for top, bottom in pairs if not math.isnan(top / bottom)],
                    "x",
                    "the workers' own scaling, without the upload phase",
                )
            )
        if two and background:
            rows.append(_ratio_row(f"ratio throughput rq 2w/bg{suffix}", two, background, "goal ≥ 1.0"))
        if two_warm and background:
            rows.append(_ratio_row(f"ratio throughput rq 2w no-fork/bg{suffix}", two_warm, background, "goal ≥ 1.0"))
        if one and background and one.sequential and background.sequential:
            medians = [statistics.median(_values(item.sequential, "send_to_finished_ms")) for item in (one, background)]
            rows.append(over_runs(f"ratio send→finished rq 1w/bg{suffix}", [medians[0] / medians[1]], "x"))
    return rows


_SEQUENTIAL_KINDS = ("post_idle", "observed", "send_to_finished", "queue_wait", "run")
