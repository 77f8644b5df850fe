"""The burst's figures that separate the API's upload phase from the workers' drain, and the ceiling the machine's
cores put on the ratios (bench/scenarios.py, bench/service_rows.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import psutil
import pytest

from bench import scenarios
from bench import service_rows as service_rows_module
from bench.client import Outcome, Upload
from bench.scenarios import Burst, ScenarioRuns, _tree_cpu_s
from bench.service_rows import service_rows
from bench.stack import StackConfig

pytestmark = pytest.mark.one_database  # arithmetic on recorded times: no database


def _outcome(upload: Upload, finished_at_s: float | None) -> Outcome:
    return Outcome(upload, "finished", 1, upload.sent_at_s, upload.sent_at_s, finished_at_s)


def test_upload_phase_and_drain_after_the_last_answer() -> None:
    uploads = [Upload("a", 100.0, 200.0), Upload("b", 100.1, 400.0), Upload("c", 100.3, 100.0)]
    # The last 202 is at 100.5 s (b: sent at 100.1, answered 400 ms later).
    outcomes = [_outcome(uploads[0], 100.4), _outcome(uploads[1], 101.0), _outcome(uploads[2], 101.5)]
    burst = Burst(uploads, outcomes)

    assert burst.upload_phase_s == pytest.approx(0.5)
    assert burst.makespan_s == pytest.approx(1.5)
    # Two jobs finished after 100.5 s, the last at 101.5 s.
    assert burst.drain_after_uploads == pytest.approx(2.0)


def test_no_drain_when_every_job_ended_during_the_uploads() -> None:
    uploads = [Upload("a", 100.0, 500.0), Upload("b", 100.0, 500.0)]
    burst = Burst(uploads, [_outcome(uploads[0], 100.2), _outcome(uploads[1], 100.3)])

    assert math.isnan(burst.drain_after_uploads)


def test_the_cpu_of_a_process_tree_counts_the_children_it_reaped() -> None:
    before = _tree_cpu_s(psutil.Process())
    burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # waited for: reaped by this process
    after = _tree_cpu_s(psutil.Process())

    assert sum(after) - sum(before) >= 0.3  # the child's CPU time, however long it took on the clock


def test_the_workers_cpu_rows_are_the_rq_scenarios_only() -> None:
    uploads = [Upload("a", 100.0, 200.0), Upload("b", 100.1, 400.0)]
    outcomes = [_outcome(uploads[0], 100.4), _outcome(uploads[1], 101.0)]
    rq, background = ScenarioRuns(StackConfig("rq", True, workers=1)), ScenarioRuns(StackConfig("bg", False))
    rq.bursts.append(Burst(uploads, outcomes, 15.0, 14.0, 80.0, 30.0))
    background.bursts.append(Burst(uploads, outcomes, 20.0, 14.0))

    names = [row.name for row in service_rows([rq, background], 1.8)]

    assert "workers' CPU per job in burst, rq 1w" in names
    assert "workers' kernel CPU per job in burst, rq 1w" in names
    assert not [name for name in names if name.startswith("workers'") and "bg" in name]


def test_the_ceiling_of_a_ratio_is_the_makespan_of_the_other_over_the_cpu_spread_on_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_rows_module, "CORES", 2)
    monkeypatch.setattr(scenarios, "CORES", 2)
    uploads = [Upload("a", 100.0, 100.0), Upload("b", 100.0, 100.0)]
    one, two = ScenarioRuns(StackConfig("rq", True, workers=1)), ScenarioRuns(StackConfig("rq", True, workers=2))
    # One worker: 2 jobs in 1.0 s. Two workers: 0.8 s, with 600 ms of the machine's CPU per job: 1.2 s of
    # CPU, which 2 cores could have done in 0.6 s.
    one.bursts.append(Burst(uploads, [_outcome(uploads[0], 100.5), _outcome(uploads[1], 101.0)]))
    two.bursts.append(Burst(uploads, [_outcome(uploads[0], 100.4), _outcome(uploads[1], 100.8)], machine_cpu_ms=600.0))

    rows = {row.name: row for row in service_rows([one, two], 1.8)}

    assert two.bursts[0].floor_s == pytest.approx(0.6)
    assert rows["ratio throughput rq 2w/1w"].median == pytest.approx(1.0 / 0.8)
    assert rows["ceiling of ratio throughput rq 2w/1w"].median == pytest.approx(1.0 / 0.6)
    assert rows["cores busy in burst, rq 2w"].median == pytest.approx(1.2 / 0.8)
