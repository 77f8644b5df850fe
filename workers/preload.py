"""What a worker loads once, before it forks a work-horse per job.

A work-horse is a fork of its worker: whatever the worker has imported, built and compiled, every
job gets for free; whatever it has not, every job pays for again (the fork is thrown away after the
job). So before the first fork a worker imports the task modules and the modules they import lazily
on first use, builds the job runtime (engine, Redis client, storage) and runs each statement of a
job's life once against an id that matches no row, which fills the engine's compiled-statement cache
and loads the database dialect. Its connections are closed again: a child never uses the parent's.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys

from sqlalchemy.exc import SQLAlchemyError

from core.errors import JobCanceled
from jobs.runtime import get_runtime

log = logging.getLogger(__name__)

# Submodules numpy loads on first use (`np.median` → numpy.ma, spectra → numpy.fft): ~20 ms per job
# when each work-horse imports them again.
LAZY_MODULES = {"numpy": ("numpy.ma", "numpy.fft", "numpy.linalg")}
WARM_UP_JOB_ID = "00000000-warm-up-no-such-job"


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


def preload() -> None:
    """Everything above, in the worker's parent process (after the task modules are imported)."""
    import_lazy_modules()
    warm_up_database()
