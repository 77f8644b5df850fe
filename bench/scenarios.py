"""The service on a running stack: sequential uploads (POST time, latency) and a burst (throughput, and
POST time at c=8 while jobs run), repeated in interleaved rounds (`bench.service_rows` summarizes them).

A burst is `count` uploads of the same 10 s WAV posted by BURST_CONCURRENCY clients at once; its
throughput is count ÷ (first send → last row's finished_at), so it counts what a client waits for:
receiving, storing, queueing and running. Every mode runs one API process; in-process mode runs
BACKGROUND_CONCURRENCY (2) analyses at once, as RQ mode's two workers do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil

from bench.client import (
    JOB_TIMEOUT_S,
    Outcome,
    Upload,
    make_client,
    read_all,
    submit_burst,
    upload_and_wait,
    wait_ended,
)
from bench.stack import Stack, StackConfig

WARMUP_UPLOADS = 2  # first jobs pay for imports in the work-horse / thread pool and a cold page cache
BURST_CONCURRENCY = 8  # client connections posting the burst at once (uploads while jobs run)
CORES = psutil.cpu_count() or 1


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
    # The whole machine's busy CPU per job from the first send until every job had ended: every process (the
    # API, workers, Redis, the bench) and the kernel's own work (writeback, softirqs), all cores together.
    machine_cpu_ms: float = float("nan")

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
    def machine_cpu_s(self) -> float:
        """The whole machine's busy CPU over the burst, every job together."""
        return self.machine_cpu_ms * len(self.outcomes) / 1000

    @property
    def floor_s(self) -> float:
        """The shortest makespan the burst's CPU allows: its machine CPU spread over every core at once."""
        return self.machine_cpu_s / CORES

    @property
    def cores_busy(self) -> float:
        """Cores kept busy on average over the makespan (below CORES: the makespan had idle time)."""
        return self.machine_cpu_s / self.makespan_s

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
    machine_before = _machine_busy_s()
    api_before, client_before = _cpu_s(api), time.process_time()
    uploads = submit_burst(stack.api.url, data, count, BURST_CONCURRENCY)
    api_cpu_ms = (_cpu_s(api) - api_before) * 1000 / count
    client_cpu_ms = (time.process_time() - client_before) * 1000 / count
    with make_client(stack.api.url) as client:
        wait_ended(client, uploads, JOB_TIMEOUT_S + count * 10.0)
        machine_cpu_ms = (_machine_busy_s() - machine_before) * 1000 / count
        outcomes = read_all(client, uploads)
    workers_cpu_ms = workers_system_ms = float("nan")
    if pool is not None:
        workers_after = _tree_cpu_s(pool)
        workers_cpu_ms = (sum(workers_after) - sum(workers_before)) * 1000 / count
        workers_system_ms = (workers_after[1] - workers_before[1]) * 1000 / count
    return Burst(uploads, outcomes, api_cpu_ms, client_cpu_ms, workers_cpu_ms, workers_system_ms, machine_cpu_ms)


def _machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (not idle, not waiting for I/O, not stolen by a
    hypervisor)."""
    times = psutil.cpu_times()
    return float(sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq")))


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


def values(outcomes: list[Outcome], attribute: str) -> list[float]:
    found = [getattr(outcome, attribute) for outcome in outcomes]
    return [float(value) for value in found if value is not None]


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
