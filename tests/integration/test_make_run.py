"""`make run` as a newcomer uses it: everything comes up, an upload finishes, Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from core.settings import PROJECT_ROOT
from devserver.redis import free_port
from tests.support.audio import wav_bytes
from tests.support.processes import wait_for

pytestmark = pytest.mark.slow


def _processes_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains `marker` (children of children included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_make_run_serves_an_upload_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env_file = tmp_path / "run.env"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RQ_", "REDIS_"))}
    env |= {
        "ENV_FILE": str(env_file),
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",  # nothing there: make run starts a private Redis
        "REDIS_DATA_DIR": str(tmp_path / "redis"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "STORAGE_DIR": str(tmp_path / "uploads"),
        "WORKER_COUNT": "1",
        "SHUTDOWN_GRACE_S": "20",
    }
    log = (tmp_path / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    output = tmp_path / "make-run.log"
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert make.poll() is None, output.read_text()
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, "make run to report healthy")
        text = output.read_text()
        assert "Admin key" in text
        assert f"{base}/rq" in text
        assert "ADMIN_API_KEY=" in env_file.read_text()  # generated on first run

        answer = httpx.post(f"{base}/audio", files={"file": ("tone.wav", wav_bytes(1.0))}, timeout=10)
        assert answer.status_code == 202, answer.text
        status_url = answer.json()["status_url"]
        final = wait_for(
            lambda: (body := httpx.get(status_url, timeout=5).json())["status"] in ("finished", "failed") and body,
            60,
            "the upload to finish",
        )
        assert final["status"] == "finished", final
        # runner, redis-server, API, worker pool + worker + RQ scheduler, rq-scheduler (shells aside)
        assert len(_processes_with_env(str(env_file))) >= 7
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise
        finally:
            log.close()

    wait_for(lambda: not _processes_with_env(str(env_file)), 30, "every process to exit", 0.2)
    for probe in (port, redis_port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{probe}/", timeout=1)
    assert "Ctrl-C stops everything" in output.read_text()
