"""Phases 2-4 on a running stack: sequential uploads (POST time, latency) and a burst (throughput)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.client import JOB_TIMEOUT_S, Outcome, Upload, make_client, submit_burst, upload_and_wait, wait_all
from bench.stack import Stack
from bench.stats import Row, single, summarize

WARMUP_UPLOADS = 2  # first jobs pay for imports in the work-horse / thread pool and a cold page cache
BURST_SUBMITTERS = 4  # concurrent client connections posting the burst


@dataclass(frozen=True)
class Burst:
    """A burst of uploads and how it ended."""

    uploads: list[Upload]
    outcomes: list[Outcome]

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
    uploads = submit_burst(stack.api.url, data, count, BURST_SUBMITTERS)
    with make_client(stack.api.url) as client:
        outcomes = wait_all(client, uploads, JOB_TIMEOUT_S + count * 10.0)
    return Burst(uploads, outcomes)


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


def burst_rows(label: str, burst: Burst) -> dict[str, Row]:
    count = len(burst.outcomes)
    lost = count - burst.finished
    check = f"finished {burst.finished}/{count}, attempts==1 {burst.attempted_once}/{count}, lost {lost}"
    return {
        "post_burst": summarize(
            f"POST /audio in burst, {label}",
            [upload.post_ms for upload in burst.uploads],
            "ms",
            f"{BURST_SUBMITTERS} concurrent clients while jobs run",
        ),
        "burst_run": summarize(
            f"started→finished in burst, {label}",
            _values(burst.outcomes, "run_ms"),
            "ms",
            "per-job run time under load",
        ),
        "throughput": single(
            f"throughput, {label}",
            count,
            count / burst.makespan_s,
            "jobs/s",
            f"{count} in {burst.makespan_s:.1f} s (first send→last finished_at); {check}",
        ),
    }
