"""Each process of the service starts without the heavy modules it does not use.

The API serves uploads and the queue API: the analyzers (numpy, soundfile), rq-dashboard (Flask, Jinja,
Werkzeug) and httpx load on first use. The scheduler only registers periodic jobs. A worker loads what a
job runs with before it forks, and no web framework. Each probe runs in a fresh interpreter and imports
what the process imports at start (its entry module, the app it builds, the task modules).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.settings import PROJECT_ROOT

_TASKS = "from core.settings import get_settings; from jobs.registry import import_task_modules; "
_TASKS += "import_task_modules(get_settings().task_modules); "
PROBES = {
    "api": "import app.__main__, app.main; app.main.create_app(); " + _TASKS,
    "scheduler": "import workers.scheduler; " + _TASKS,
    "worker": "import workers.main, workers.preload; " + _TASKS + "workers.preload.import_lazy_modules(); ",
}
ANALYSIS = ("numpy", "soundfile", "tasks.analyzers", "tasks.waveform_image")
DASHBOARD = ("flask", "werkzeug", "jinja2", "rq_dashboard")
WEB = ("fastapi", "starlette", "uvicorn")
HTTP_CLIENT = ("httpx", "rich", "pygments")
UNUSED = {
    "api": ANALYSIS + DASHBOARD + HTTP_CLIENT,
    "scheduler": ANALYSIS + DASHBOARD + WEB + HTTP_CLIENT,
    "worker": DASHBOARD + WEB,
}
# A work-horse inherits these from its worker instead of importing them for every job.
PRELOADED = {"worker": (*ANALYSIS, "numpy.fft", "httpx", "sqlalchemy.orm")}


def _loaded(code: str) -> set[str]:
    probe = code + "import json, sys; print(json.dumps(sorted(sys.modules)))"
    env = os.environ | {"ENV_FILE": ""}
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout.splitlines()[-1]))


@pytest.mark.parametrize("process", sorted(PROBES))
def test_a_process_starts_without_the_modules_it_does_not_use(process: str) -> None:
    loaded = _loaded(PROBES[process])

    assert sorted(name for name in UNUSED[process] if name in loaded) == []
    assert sorted(name for name in PRELOADED.get(process, ()) if name not in loaded) == []
