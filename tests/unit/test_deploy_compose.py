"""compose.yaml: the Procfile's processes, wired to Redis, PostgreSQL and each other the way the service needs.

No container daemon runs here: the file is read with a YAML parser, and `docker compose config` (the
compose CLI from PyPI, no daemon needed) checks that Docker reads it the same way.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT_ROOT, Settings, parse_duration_s
from devserver.run import parse_procfile

COMPOSE = PROJECT_ROOT / "compose.yaml"
APP_SERVICES = ("api", "worker", "callbacks", "scheduler", "migrate")
LONG_RUNNING = ("api", "worker", "callbacks", "scheduler", "redis", "postgres", "minio")
# What every process of a multi-container deployment must be told (the defaults are single-host ones).
REQUIRED_SETTINGS = (
    "USE_RQ_QUEUE", "REDIS_URL", "DATABASE_URL", "STORAGE_DIR", "STORAGE_URL", "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "ADMIN_API_KEY",
)  # fmt: skip
SECRETS = {
    "ADMIN_API_KEY": "compose-admin-key-0123456789",
    "POSTGRES_PASSWORD": "composepassword",
    "S3_SECRET_ACCESS_KEY": "compose-s3-secret",
}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _duration_s(text: str) -> int:
    """`16m`, `20s`, `1m30s` (compose durations) in seconds."""
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        else:
            total += parse_duration_s(number + char)
            number = ""
    return total + (int(number) if number else 0)


def test_every_procfile_process_is_a_service_running_the_same_command() -> None:
    services = _services()
    for name, command in parse_procfile((PROJECT_ROOT / "Procfile").read_text()).items():
        expected = _argv(command.replace("./start_worker.sh", "python -m workers.main"))
        assert name in services, f"Procfile process {name} has no service"
        assert _argv(services[name]["command"]) == expected


def test_app_services_get_every_setting_a_deployment_needs_and_only_real_ones() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in APP_SERVICES:
        environment: dict[str, str] = _services()[name]["environment"]
        missing = [setting for setting in REQUIRED_SETTINGS if setting not in environment]
        assert not missing, f"{name} lacks {missing}"
        assert set(environment) <= known, f"{name} sets unknown variables {set(environment) - known}"
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["USE_RQ_QUEUE"] == "true"
        assert environment["STORAGE_URL"].startswith("s3://")
        assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"


def test_uploads_are_in_the_object_store_and_no_app_service_shares_a_disk() -> None:
    services = _services()
    for name in APP_SERVICES:
        assert "volumes" not in services[name], f"{name} mounts a volume: workers on other hosts could not share it"
    bucket = services["bucket"]
    assert bucket["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb --ignore-existing" in " ".join(bucket["command"])
    secret = services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert secret == services["api"]["environment"]["S3_SECRET_ACCESS_KEY"]


def test_app_services_start_after_healthy_redis_and_postgres_and_the_migrations() -> None:
    for name in ("api", "worker", "callbacks", "scheduler"):
        depends_on = _services()[name]["depends_on"]
        assert depends_on["redis"]["condition"] == "service_healthy"
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["bucket"]["condition"] == "service_completed_successfully"
    migrate = _services()["migrate"]
    assert _argv(migrate["command"]) == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"


def test_every_long_running_service_has_a_real_healthcheck() -> None:
    services = _services()
    for name in LONG_RUNNING:
        assert _argv(services[name]["healthcheck"]["test"])[0] == "CMD", name
    assert "/health/live" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("worker", "callbacks"):
        assert services[name]["healthcheck"]["test"][-2:] == ["workers.healthcheck", "worker"]
    assert services["scheduler"]["healthcheck"]["test"][-2:] == ["workers.healthcheck", "scheduler"]


def test_redis_keeps_its_data_with_aof_every_second_and_never_evicts() -> None:
    argv = _argv(_services()["redis"]["command"])
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in _services()["redis"]["volumes"])


def test_workers_scale_by_replicas_and_their_warm_shutdown_outlasts_a_job() -> None:
    worker = _services()["worker"]
    assert str(worker["deploy"]["replicas"]).startswith("${WORKER_REPLICAS:-")
    assert worker["init"] is True  # tini forwards SIGTERM to the pool only, never to a work-horse
    assert _duration_s(worker["stop_grace_period"]) > Settings.model_fields["rq_job_timeout"].default


def test_images_are_pinned_to_exact_versions() -> None:
    for name, service in _services().items():
        image: str = service["image"]
        tag = image.partition(":")[2]
        assert tag not in ("", "latest"), f"{name}: {image}"
        assert any(char.isdigit() for char in tag), f"{name}: {image}"
    assert _services()["postgres"]["image"].startswith("postgres:15.")


def _docker_compose() -> str:
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (the dev extra installs it on Linux x86_64)")
    return binary


def _config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No daemon needed: `config` only reads, interpolates and validates the file.
    return subprocess.run(
        [_docker_compose(), "--file", str(COMPOSE), "--env-file", str(env_file), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
    )


def test_docker_compose_reads_the_file_as_the_tests_above_do(tmp_path: Path) -> None:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()))
    result = _config(env_file)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]

    assert set(services) == set(_services())
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["ADMIN_API_KEY"] == SECRETS["ADMIN_API_KEY"]
    database_url = services["api"]["environment"]["DATABASE_URL"]
    assert database_url.endswith(f":{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/audiokit")
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / "compose.env"
    env_file.write_text("")
    result = _config(env_file)
    assert result.returncode != 0
    assert "ADMIN_API_KEY" in result.stderr
    assert "POSTGRES_PASSWORD" in result.stderr
    assert "S3_SECRET_ACCESS_KEY" in result.stderr
