"""A worker analyzes a short tone once before it forks, so that its work-horses inherit what an analysis sets up
on first use instead of each setting it up again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.settings import PROJECT_ROOT
from tests.support.audio import encode, tone

pytestmark = pytest.mark.one_database

# Run in a fresh interpreter: this one may have analyzed already (other tests), which is what is warmed up.
PROBE = """
import json, os, resource, sys
from pathlib import Path
from tasks.analyzers.local import LocalAnalyzer
from tasks.analyzers.scratch import SCRATCH
from workers.preload import warm_up_analysis

def faults_in_a_child(path):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        LocalAnalyzer().analyze(Path(path), lambda percent, message: None)
        os.write(write_end, str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        faults = int(pipe.read())
    os.waitpid(pid, 0)
    return faults

cold = [faults_in_a_child(sys.argv[1]) for _ in range(3)]
warm_up_analysis()
warm = [faults_in_a_child(sys.argv[1]) for _ in range(3)]
print(json.dumps({"cold": cold, "warm": warm, "kept": SCRATCH.nbytes()}))
"""


def test_a_fork_made_after_the_warm_up_analyzes_with_fewer_page_faults_and_inherits_no_working_arrays(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short.wav"
    path.write_bytes(encode(np.tile(tone(440.0, -6.0, 0.1, 44100)[:, None], (1, 2)), 44100, "WAV", "PCM_16"))

    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )

    assert run.returncode == 0, run.stderr

    measured = json.loads(run.stdout)
    assert measured["kept"] == 0  # the warm-up's arrays were its thread's: a work-horse inherits none
    assert max(measured["warm"]) < min(measured["cold"]), measured
