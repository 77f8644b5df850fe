"""The rows that summarize the service scenarios (`bench.scenarios`): sequential latency, each burst's
POST times, throughput and CPU, and the ratios between the modes, with the ceiling this machine's cores put
on each ratio at the CPU per job measured."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.client import Outcome
from bench.scenarios import BURST_CONCURRENCY, CORES, ScenarioRuns, check_outcomes, values
from bench.stats import Row, over_runs, spread, summarize

POST_P99_GOAL_MS = 150.0


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
            values(outcomes, "observed_ms"),
            "ms",
            "client clock, polling GET /audio/{id} every 20 ms",
        ),
        "send_to_finished": summarize(
            f"send→finished_at, {label}",
            values(outcomes, "send_to_finished_ms"),
            "ms",
            "client send time to the row's finished_at (same host clock)",
        ),
        "queue_wait": summarize(
            f"created→started, {label}",
            values(outcomes, "queue_wait_ms"),
            "ms",
            "row commit → job start: dispatch + pickup; RQ adds fork + work-horse set-up",
        ),
        "run": summarize(
            f"started→finished, {label}",
            values(outcomes, "run_ms"),
            "ms",
            "analysis + progress/result writes",
        ),
    }


def burst_rows(runs: ScenarioRuns) -> list[Row]:
    """POST time at c=8 (all rounds' samples together, and each round's p99) and throughput per round."""
    label, bursts = runs.config.label, runs.bursts
    posts = [upload.post_ms for burst in bursts for upload in burst.uploads]
    p99s = [summarize("p99", [upload.post_ms for upload in burst.uploads], "ms").p99 or 0.0 for burst in bursts]
    goal = f"; goal p99 ≤ {POST_P99_GOAL_MS:g} ms" if runs.config.use_rq_queue else ""
    finished = sum(burst.finished for burst in bursts)
    once = sum(burst.attempted_once for burst in bursts)
    total = sum(len(burst.outcomes) for burst in bursts)
    run_ms = [value for burst in bursts for value in values(burst.outcomes, "run_ms")]
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
            f"machine CPU per job in burst, {label}",
            [burst.machine_cpu_ms for burst in bursts],
            "ms",
            "every process's and the kernel's busy CPU, all cores, first send→every job ended ÷ jobs",
        ),
        over_runs(
            f"cores busy in burst, {label}",
            [burst.cores_busy for burst in bursts],
            "cores",
            f"machine CPU ÷ makespan, of {CORES}: below {CORES} the makespan had idle time",
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


def _ceiling_row(name: str, numerator: ScenarioRuns, denominator: ScenarioRuns) -> Row:
    """The throughput ratio `numerator` would reach, run by run, had its makespan been no longer than its
    machine CPU spread over every core (no idle time at all), against `denominator`'s makespan as measured."""
    pairs = zip(numerator.bursts, denominator.bursts, strict=True)
    return over_runs(
        name,
        [bottom.makespan_s / top.floor_s for top, bottom in pairs],
        "x",
        f"{CORES} cores always busy: the most this machine's CPU allows at the CPU per job measured",
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
            rows.append(_ceiling_row(f"ceiling of ratio throughput rq 2w/1w{suffix}", two, one))
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
            rows.append(_ceiling_row(f"ceiling of ratio throughput rq 2w/bg{suffix}", two, background))
        if two_warm and background:
            rows.append(_ratio_row(f"ratio throughput rq 2w no-fork/bg{suffix}", two_warm, background, "goal ≥ 1.0"))
        if one and background and one.sequential and background.sequential:
            medians = [statistics.median(values(item.sequential, "send_to_finished_ms")) for item in (one, background)]
            rows.append(over_runs(f"ratio send→finished rq 1w/bg{suffix}", [medians[0] / medians[1]], "x"))
    return rows


_SEQUENTIAL_KINDS = ("post_idle", "observed", "send_to_finished", "queue_wait", "run")
