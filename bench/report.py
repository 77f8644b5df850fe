"""Where results go: machine facts, and the JSON files under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.stats import Row

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_COMMAND_TIMEOUT_S = 10.0
_PACKAGES = ("rq", "redis", "fastapi", "uvicorn", "sqlalchemy", "numpy", "soundfile")


def _command_output(*argv: str) -> str | None:
    """The first line of a read-only command's output, or None when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True, cwd=RESULTS_DIR.parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0] if lines else None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "git_commit": _command_output("git", "rev-parse", "HEAD"),
        "redis_server": _command_output("redis-server", "--version"),
        "packages": versions,
    }


def write_results(started_at: datetime, document: dict[str, Any], rows: list[Row]) -> Path:
    """Writes `bench/results/<UTC timestamp>.json` and `latest.json`; returns the first."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {**document, "rows": [row.as_json() for row in rows]}
    text = json.dumps(payload, indent=2, allow_nan=True) + "\n"
    path = RESULTS_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    return path
