"""Settings: defaults, parsing, and start-up errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.settings import PROJECT_ROOT, load_settings, parse_duration_s


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "USE_RQ_QUEUE", "RQ_JOB_TIMEOUT", "RQ_RETRY_MAX", "HOST", "PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(env_file="")
    assert settings.use_rq_queue is True
    assert settings.rq_job_timeout == 15 * 60
    assert settings.rq_retry_max == 3
    assert settings.rq_retry_intervals == (10, 30, 60)
    assert settings.max_upload_mb == 50
    assert settings.worker_queues == ("critical", "high_priority", "audio_analysis", "low")  # PRIORITY_QUEUES
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.resolved_redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("var/audiokit.db")


@pytest.mark.parametrize(("text", "seconds"), [("900", 900), ("15m", 900), ("1h", 3600), (" 30s ", 30), ("2d", 172800)])
def test_durations_accept_plain_seconds_and_units(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_RQ_QUEUE", "false")
    monkeypatch.setenv("RQ_JOB_TIMEOUT", "5m")
    monkeypatch.setenv("RQ_RETRY_INTERVALS", "5, 1m ,2m")
    monkeypatch.setenv("WORKER_QUEUES", "audio_analysis")
    settings = load_settings(env_file="")
    assert settings.use_rq_queue is False
    assert settings.rq_job_timeout == 300
    assert settings.rq_retry_intervals == (5, 60, 120)
    assert settings.worker_queues == ("audio_analysis",)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RQ_RETRY_MAX", "three"),
        ("RQ_JOB_TIMEOUT", "15 minutes"),
        ("RQ_RETRY_INTERVALS", "10,-5"),
        ("WORKER_QUEUES", "audio analysis"),
        ("WORKER_QUEUES", " , "),
        ("WORKER_QUEUES", "-leading-dash"),
        ("TASK_MODULES", "tasks/audio_analysis"),
        ("MAX_UPLOAD_MB", "0"),
        ("PORT", "70000"),
        ("USE_RQ_QUEUE", "maybe"),
        ("LOG_LEVEL", "chatty"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("ANALYSIS_SERVER_URL", "ftp://example"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings(env_file="")


def test_any_valid_queue_name_and_task_module_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_QUEUES", " emails, default ,reports.v2:daily ")
    monkeypatch.setenv("TASK_MODULES", "tasks.audio_analysis, myapp.tasks")
    settings = load_settings(env_file="")
    assert settings.worker_queues == ("emails", "default", "reports.v2:daily")
    assert settings.task_modules == ("tasks.audio_analysis", "myapp.tasks")


def test_redis_url_is_built_from_host_port_db_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings(env_file="", redis_host="cache", redis_port=6380, redis_db=2, redis_password="p@ss:w/rd")
    assert settings.resolved_redis_url == "redis://:p%40ss%3Aw%2Frd@cache:6380/2"


def test_redis_url_wins_and_may_use_tls() -> None:
    settings = load_settings(env_file="", redis_url="rediss://:secret@redis.example:6380/0", redis_host="ignored")
    assert settings.resolved_redis_url == "rediss://:secret@redis.example:6380/0"


def test_empty_values_mean_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("RQ_RETRY_MAX", "")
    settings = load_settings(env_file="")
    assert settings.redis_password is None
    assert settings.resolved_redis_url == "redis://127.0.0.1:6379/0"
    assert settings.rq_retry_max == 3


def test_relative_paths_are_relative_to_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env_file="", storage_dir="data/up", database_url="sqlite:///data/x.db")
    assert settings.storage_dir == PROJECT_ROOT / "data/up"
    assert settings.database_url == f"sqlite:///{PROJECT_ROOT}/data/x.db"


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RQ_RETRY_MAX=7\nMAX_UPLOAD_MB=5\n")
    monkeypatch.setenv("MAX_UPLOAD_MB", "9")
    settings = load_settings(env_file=str(env_file))
    assert settings.rq_retry_max == 7
    assert settings.max_upload_mb == 9


@pytest.mark.parametrize(
    ("retry_max", "intervals", "schedule"),
    [
        (5, "10,30,60", (10, 30, 60, 60, 60)),
        (3, "10,30,60", (10, 30, 60)),
        (2, "10,30,60", (10, 30)),
        (4, "5", (5, 5, 5, 5)),
        (0, "10,30,60", ()),
    ],
)
def test_there_is_one_retry_interval_per_retry_and_the_last_one_repeats(
    retry_max: int, intervals: str, schedule: tuple[int, ...]
) -> None:
    settings = load_settings(env_file="", rq_retry_max=retry_max, rq_retry_intervals=intervals)
    assert settings.retry_intervals_s == schedule
