"""systemd units (deploy/systemd): the Procfile's processes, restarted on failure, stopped warmly, hardened.

No systemd runs as PID 1 here, so the units are not started: they are read, and `systemd-analyze
verify` / `security --offline` (Debian's systemd) check them, with the install prefix pointed at
this virtualenv so that the commands they name exist.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, Settings
from devserver.run import parse_procfile

UNITS_DIR = PROJECT_ROOT / "deploy" / "systemd"
PREFIX = "/opt/audiokit"
VENV_PYTHON = f"{PREFIX}/venv/bin/python"
LONG_RUNNING = ("api", "worker", "callbacks", "scheduler")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
}
MAX_EXPOSURE = "20"  # systemd-analyze security's 0-100 scale (shown as 0.0-10.0): "OK" or better


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file; every key keeps all its values (systemd allows repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (UNITS_DIR / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def _service(process: str) -> dict[str, list[str]]:
    return _unit(f"audiokit-{process}.service")["Service"]


def _seconds(value: str) -> int:
    number = int("".join(char for char in value if char.isdigit()))
    return number * 60 if value.endswith("min") else number


def test_every_procfile_process_has_a_unit_running_the_same_command() -> None:
    for name, command in parse_procfile((PROJECT_ROOT / "Procfile").read_text()).items():
        expected = shlex.split(command.replace("./start_worker.sh", "python -m workers.main"))
        exec_start = shlex.split(_service(name)["ExecStart"][0])
        assert exec_start[0] == VENV_PYTHON
        assert exec_start[1:] == expected[1:]


def test_long_running_units_restart_on_failure_but_not_on_a_bad_setting() -> None:
    for process in LONG_RUNNING:
        service = _service(process)
        assert service["Restart"] == ["on-failure"], process
        assert service["RestartPreventExitStatus"] == ["2"], process  # core.startup.EXIT_CONFIGURATION
        assert service["EnvironmentFile"] == ["/etc/audiokit/audiokit.env"], process
        assert service["User"] == ["audiokit"], process
        assert _unit(f"audiokit-{process}.service")["Install"]["WantedBy"] == ["audiokit.target"]


def test_stop_sends_sigterm_to_the_main_process_and_waits_for_the_warm_shutdown() -> None:
    for process in LONG_RUNNING:
        service = _service(process)
        assert service["KillSignal"] == ["SIGTERM"], process
        # `mixed`: SIGTERM to the pool only; a work-horse dies of SIGTERM, so it must not get one.
        assert service["KillMode"] == ["mixed"], process
    worker_stop_s = _seconds(_service("worker")["TimeoutStopSec"][0])
    assert worker_stop_s > Settings.model_fields["rq_job_timeout"].default
    assert _seconds(_service("api")["TimeoutStopSec"][0]) > 10  # uvicorn's graceful shutdown (app/__main__.py)


def test_migrations_run_once_before_the_api() -> None:
    migrate = _service("migrate")
    api = _unit("audiokit-api.service")["Unit"]
    assert migrate["Type"] == ["oneshot"]
    assert migrate["ExecStart"] == [f"{PREFIX}/venv/bin/alembic upgrade head"]
    assert "audiokit-migrate.service" in api["Requires"][0].split()
    assert "audiokit-migrate.service" in api["After"][0].split()


def test_every_unit_is_hardened() -> None:
    for process in (*LONG_RUNNING, "migrate"):
        service = _service(process)
        for key, value in HARDENING.items():
            assert service.get(key) == [value], f"{process}: {key}"


def _installed_copy(tmp_path: Path) -> Path:
    """The units with their install prefix pointing at this virtualenv (verify checks that commands exist)."""
    prefix = tmp_path / "prefix"
    (prefix / "venv" / "bin").mkdir(parents=True)
    for program in ("python", "alembic"):
        (prefix / "venv" / "bin" / program).symlink_to(Path(sys.executable).parent / program)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS_DIR.iterdir():
        (units / unit.name).write_text(unit.read_text().replace(PREFIX, str(prefix)))
    return units


def _systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return binary


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    binary = _systemd_analyze()
    units = _installed_copy(tmp_path)
    names = sorted(unit.name for unit in units.iterdir())
    result = subprocess.run(
        [binary, "verify", *names], cwd=units, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_rates_each_service_ok_or_better(tmp_path: Path) -> None:
    binary = _systemd_analyze()
    units = _installed_copy(tmp_path)
    for unit in sorted(units.glob("*.service")):
        result = subprocess.run(
            [binary, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", f"./{unit.name}"],
            cwd=units,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{unit.name}: {result.stdout[-600:]}{result.stderr}"


def test_the_environment_file_example_sets_real_settings_and_the_units_read_no_dotenv() -> None:
    known = {name.upper() for name in Settings.model_fields}
    lines = (PROJECT_ROOT / "deploy" / "audiokit.env.example").read_text().splitlines()
    names = {line.partition("=")[0] for line in lines if line.strip() and not line.startswith("#")}
    assert names <= known, names - known
    assert {"DATABASE_URL", "REDIS_URL", "STORAGE_DIR", "ADMIN_API_KEY"} <= names
    for process in (*LONG_RUNNING, "migrate"):
        environment = _service(process)["Environment"][0].split()
        assert "ENV_FILE=" in environment, process  # a .env left in the checkout must not be read
