"""What a worker loads once, before it forks a work-horse per job.

A work-horse is a fork of its worker: whatever the worker has imported, built and compiled, every
job gets for free; whatever it has not, every job pays for again (the fork is thrown away after the
job). So before the first fork a worker imports the task modules and the modules they import lazily
on first use, builds the TLS context of outgoing requests and the job runtime (engine, Redis client,
storage), runs each statement of a
job's life once against an id that matches no row, which fills the engine's compiled-statement cache
and loads the database dialect, and analyzes a short tone once. Its connections are closed again: a
child never uses the parent's.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import tempfile
import threading
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from core.errors import JobCanceled
from core.tls import tls_context
from jobs.runtime import get_runtime

log = logging.getLogger(__name__)

# Modules loaded on first use, by package (or task module) already imported: each work-horse would import
# them again. The service's tasks import what they run with when they run (the API and the scheduler
# import the task modules only to know the tasks); numpy's submodules load on first use (`np.median` →
# numpy.ma, spectra → numpy.fft): ~20 ms per job.
LAZY_MODULES = {
    "tasks.audio_analysis": ("tasks.analyzers",),
    "tasks.waveform": ("tasks.waveform_image",),
    "numpy": ("numpy.ma", "numpy.fft", "numpy.linalg"),
}
WARM_UP_JOB_ID = "00000000-warm-up-no-such-job"
WARM_UP_SAMPLE_RATE = 44100  # the most common rate of uploads: the FFT sizes it needs are set up before the fork


def import_lazy_modules() -> None:
    """Imports the submodules of the packages already loaded (by the task modules) that load lazily."""
    for package, modules in LAZY_MODULES.items():
        if package in sys.modules:
            for name in modules:
                importlib.import_module(name)


def warm_up_database() -> None:
    """Runs a job's statements once on no row, then closes the connection they used.

    Each form a job's writes take is a statement of its own for the engine's cache: a progress report with
    and without log lines, the final write with and without its cancel check (a job whose reports were
    held back until the end, as a short one's are, finishes with it)."""
    lifecycle = get_runtime().lifecycle
    try:
        lifecycle.begin_attempt(WARM_UP_JOB_ID)
        for line in (None, "warm-up"):
            with contextlib.suppress(JobCanceled):  # no such job, as intended
                lifecycle.report_progress(WARM_UP_JOB_ID, 0, line)
        for unless_canceled in (False, True):
            lifecycle.finish(WARM_UP_JOB_ID, {}, lines=["warm-up"], unless_canceled=unless_canceled)
        lifecycle.get(WARM_UP_JOB_ID)
    except SQLAlchemyError as exc:  # the database is down: each job connects and compiles on its own
        log.warning("database warm-up skipped: %s", exc)
    finally:
        get_runtime().database.dispose()


def analyze_tone() -> None:
    """When the task modules use the local analyzer: analyzes a 0.1 s tone in this thread."""
    if "tasks.analyzers.local" not in sys.modules:
        return
    import numpy as np  # loaded with the analyzer already
    import soundfile as sf

    from tasks.analyzers.local import LocalAnalyzer

    with tempfile.TemporaryDirectory(prefix="audiokit-warm-up-") as directory:
        path = Path(directory) / "tone.wav"
        seconds = np.arange(WARM_UP_SAMPLE_RATE // 10) / WARM_UP_SAMPLE_RATE
        samples = 0.5 * np.sin(2 * np.pi * 440.0 * seconds)
        sf.write(path, np.column_stack([samples, samples]), WARM_UP_SAMPLE_RATE, subtype="PCM_16")
        LocalAnalyzer().analyze(path, lambda percent, message: None)


def warm_up_analysis() -> None:
    """Analyzes a short tone once (`analyze_tone`), in a thread of its own.

    What an analysis sets up on first use in a process (numpy's FFT plans for the frame sizes of 44.1 kHz,
    libsndfile's and cffi's first calls) is then inherited by every work-horse instead of being redone in
    each one: ~2 ms and ~150 page faults of a short file's analysis. The thread's working arrays go with
    it, so the work-horses inherit none of them."""

    def run() -> None:
        try:
            analyze_tone()
        except Exception as exc:  # e.g. no writable temporary directory: each work-horse sets up on its own
            log.warning("analysis warm-up skipped: %s", exc)

    thread = threading.Thread(target=run, name="analysis-warm-up")
    thread.start()
    thread.join()


def preload() -> None:
    """Everything above, in the worker's parent process (after the task modules are imported)."""
    tls_context()  # callbacks and the HTTP analyzer: the CA bundle is loaded once, not by each work-horse
    import_lazy_modules()
    warm_up_database()
    warm_up_analysis()
