"""Which Procfile processes `make run` starts, in each mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.settings import load_settings
from devserver.run import PROCFILE, parse_procfile, procfile_commands

PROCFILE_WITH_CALLBACKS = """\
# comment
api: python -m app

worker: ./start_worker.sh
scheduler: python -m workers.scheduler
callbacks: ./start_worker.sh -q callbacks
"""


def test_the_projects_procfile_runs_the_api_workers_scheduler_and_callback_worker() -> None:
    assert list(parse_procfile(PROCFILE.read_text())) == ["api", "worker", "scheduler", "callbacks"]


def test_rq_mode_runs_every_procfile_line_with_this_virtualenvs_python(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE_WITH_CALLBACKS)

    commands = procfile_commands(load_settings(env_file="", use_rq_queue=True), procfile)

    assert commands == {
        "api": f"{sys.executable} -m app",
        "worker": "./start_worker.sh",
        "scheduler": f"{sys.executable} -m workers.scheduler",
        "callbacks": "./start_worker.sh -q callbacks",
    }


def test_in_process_mode_runs_only_the_api(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE_WITH_CALLBACKS)

    commands = procfile_commands(load_settings(env_file="", use_rq_queue=False), procfile)

    assert commands == {"api": f"{sys.executable} -m app"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api python -m app\n", "Procfile line 1: expected `name: command`"),
        ("api:\n", "Procfile line 1: expected `name: command`"),
        ("api: a\napi: b\n", "Procfile line 2: 'api' is defined twice"),
    ],
)
def test_a_malformed_procfile_line_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_procfile(text)
