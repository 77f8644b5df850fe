"""The one settings object, read from the environment and `.env`.

API, workers, scheduler and scripts all read `get_settings()`, so they cannot
drift apart. A bad value stops start-up with a message that names the variable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigurationError
from core.storage import S3Location

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"

QUEUE_CRITICAL = "critical"
QUEUE_HIGH = "high_priority"
QUEUE_NORMAL = "audio_analysis"
QUEUE_LOW = "low"
# The priority levels, highest first (`core.models.Priority`), and the queue each goes to by default
# (`PRIORITY_QUEUES`). Workers drain the queues in this order: RQ takes from the first non-empty one.
PRIORITY_LEVELS = ("critical", "high", "normal", "low")
DEFAULT_PRIORITY_QUEUES = (
    f"critical:{QUEUE_CRITICAL}",
    f"high:{QUEUE_HIGH}",
    f"normal:{QUEUE_NORMAL}",
    f"low:{QUEUE_LOW}",
)
# The card's two queues (`high` and `normal`), highest first.
QUEUES_BY_PRIORITY = (QUEUE_HIGH, QUEUE_NORMAL)
# Callback deliveries have a queue of their own, served by their own workers (`-q callbacks`).
QUEUE_CALLBACKS = "callbacks"

# The service's own tasks; a team adds its modules (`TASK_MODULES`).
DEFAULT_TASK_MODULES = ("tasks.audio_analysis", "tasks.waveform")

# Between the end of an upload and its row: sniffing the file, a busy database. Bounds the sweep's age.
ORPHAN_MARGIN_S = 60

_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(value: Any, *, allow_zero: bool = False) -> int:
    """Parses `900`, `"900"`, `"15m"`, `"1h"` into whole seconds.

    Raises:
        ValueError: when the text is not a whole number with an optional s/m/h/d unit.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 900, 15m or 1h")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION_RE.match(str(value).lower())
        if not match:
            raise ValueError("expected a duration such as 900, 15m or 1h")
        seconds = int(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError("must be greater than zero")
    return seconds


def check_signing_secret(secret: str) -> str:
    """Checks a Standard Webhooks secret: `whsec_` and 24-64 random bytes in base64.

    Raises:
        ValueError: the text is not such a secret.
    """
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ValueError("expected whsec_ followed by 24-64 bytes in base64 (`make run` writes one)")
    return secret


def check_network_or_host(item: str) -> str:
    """Checks one entry of CALLBACK_ALLOWED_NETWORKS: a CIDR or address, or a host name.

    Raises:
        ValueError: neither a network nor a host name.
    """
    try:
        return str(ipaddress.ip_network(item, strict=False))
    except ValueError:
        pass
    labels = item.rstrip(".").split(".")
    if len(item) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(f"{item!r} is neither a network (10.0.0.0/8) nor a host name")
    return item.lower().rstrip(".")


_QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_queue_names(value: Any) -> tuple[str, ...]:
    """Parses `"high_priority,audio_analysis"` into queue names, highest priority first.

    Raises:
        ValueError: a name is not a queue name (letters, digits, `_.:-`, at most 64), or none is given.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    bad = [name for name in names if not _QUEUE_NAME_RE.fullmatch(name)]
    if not names or bad:
        raise ValueError(f"expected comma-separated queue names such as {','.join(QUEUES_BY_PRIORITY)}")
    return names


def parse_priority_queues(value: Any) -> tuple[str, ...]:
    """Parses `"critical:critical,high:high_priority,normal:audio_analysis,low:low"`: each level's queue,
    as `level:queue` items, highest level first.

    Every level is named once; two neighbouring levels may share a queue, but a queue cannot serve two
    levels with another queue between them (workers drain queues in one order).

    Raises:
        ValueError: a level is missing, repeated or unknown, or a queue name is bad or out of order.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    pairs = []
    for item in (str(item).strip() for item in items if str(item).strip()):
        level, sep, queue = (part.strip() for part in item.partition(":"))
        if not sep or level.lower() not in PRIORITY_LEVELS or not _QUEUE_NAME_RE.fullmatch(queue):
            raise ValueError(f"{item!r}: expected level:queue, a level being one of {', '.join(PRIORITY_LEVELS)}")
        pairs.append((level.lower(), queue))
    mapping = dict(pairs)
    if len(mapping) != len(pairs) or set(mapping) != set(PRIORITY_LEVELS):
        raise ValueError(f"name each level once: {', '.join(PRIORITY_LEVELS)}")
    queues = [mapping[level] for level in PRIORITY_LEVELS]
    if any(queues.index(queue) != index and queues[index - 1] != queue for index, queue in enumerate(queues)):
        raise ValueError("a queue can serve two levels only when they are next to each other")
    return tuple(f"{level}:{mapping[level]}" for level in PRIORITY_LEVELS)


def parse_module_names(value: Any) -> tuple[str, ...]:
    """Parses `"tasks.audio_analysis,myapp.tasks"` into dotted module names.

    Raises:
        ValueError: an item is not a dotted Python module name.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    bad = [name for name in names if not _MODULE_RE.fullmatch(name)]
    if bad:
        raise ValueError(f"not a module name: {', '.join(bad)} (expected e.g. tasks.audio_analysis,myapp.tasks)")
    return names


def intervals_for(retries: int, intervals: Sequence[int]) -> tuple[int, ...]:
    """One backoff per retry: `intervals` cut to length, or padded with its last value.

    RQ repeats the *first* value when the list is shorter than `max`, and takes the list's tail when
    it is longer; given exactly one per retry, retry n waits intervals[n-1].
    """
    values = tuple(intervals[:retries]) or (0,)
    return values + values[-1:] * (retries - len(values)) if retries > 0 else ()


class Settings(BaseSettings):
    """Every knob of the service; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        # `REDIS_PASSWORD=` (as in .env.example) means "not set", not "the empty password".
        env_ignore_empty=True,
    )

    # --- the flag ---------------------------------------------------------------
    use_rq_queue: bool = True

    # --- Redis --------------------------------------------------------------------
    redis_url: str | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0)
    redis_password: SecretStr | None = None
    # Short, so an upload answers 202 "pending" at once when Redis is down instead of hanging.
    redis_connect_timeout_s: float = Field(1.0, gt=0)
    redis_socket_timeout_s: float = Field(5.0, gt=0)
    # Where `make run` keeps the private redis-server's AOF when REDIS_URL is not reachable.
    redis_data_dir: Path = VAR_DIR / "redis"

    # --- storage ------------------------------------------------------------------
    database_url: str = f"sqlite:///{VAR_DIR / 'audiokit.db'}"
    storage_dir: Path = VAR_DIR / "uploads"
    # Where uploads live: unset = the directory STORAGE_DIR; `s3://bucket/prefix` = an S3-compatible bucket
    # (STORAGE_DIR then only holds workers' temporary downloads, under .scratch).
    storage_url: str | None = None
    s3_endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO); unset = AWS
    s3_access_key_id: str | None = None  # unset: boto3's own chain (environment, ~/.aws, instance role)
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    # Uploads stream to the bucket in parts of this size (S3's minimum is 5); one part per upload in memory.
    s3_part_size_mb: int = Field(8, ge=5, le=512)
    max_upload_mb: int = Field(50, ge=1, le=4096)
    # `POST /audio/batch` takes at most this many files (each within MAX_UPLOAD_MB).
    batch_max_files: int = Field(20, ge=1, le=1000)

    # --- uploads: slow clients and what interrupted uploads leave behind ----------------
    # Request line and headers must arrive within this (`python -m app`; slow-header clients are cut off).
    request_header_timeout_s: float = Field(10.0, gt=0)
    # An upload with no data for this long is answered 408 and dropped.
    upload_idle_timeout_s: float = Field(30.0, gt=0)
    # A whole upload must arrive within this, so a client dripping bytes cannot hold a connection.
    upload_timeout_s: int = Field(900, ge=1)
    # `.part` files and stored files no row refers to are deleted once this old (> UPLOAD_TIMEOUT_S + 60).
    upload_orphan_age_s: int = Field(3600, ge=1)
    # Each API process sweeps at start-up and then this often.
    upload_sweep_interval_s: int = Field(600, ge=1)

    # --- jobs ---------------------------------------------------------------------
    rq_job_timeout: Annotated[int, NoDecode] = 15 * 60
    rq_retry_max: int = Field(3, ge=0, le=25)
    rq_retry_intervals: Annotated[tuple[int, ...], NoDecode] = (10, 30, 60)
    # Default backoff of tasks that declare none: `fixed` (RQ_RETRY_INTERVALS) or `exponential` (below).
    rq_retry_backoff: Literal["fixed", "exponential"] = "fixed"
    # Exponential backoff: BASE, 2 x BASE, 4 x BASE... at most MAX; JITTER draws each between half and all.
    rq_retry_backoff_base: Annotated[int, NoDecode] = 10
    rq_retry_backoff_max: Annotated[int, NoDecode] = 600
    rq_retry_jitter: bool = True
    rq_result_ttl: Annotated[int, NoDecode] = 24 * 3600
    rq_failure_ttl: Annotated[int, NoDecode] = 7 * 24 * 3600

    # Which queue each priority level goes to; workers take from the levels in this order.
    priority_queues: Annotated[tuple[str, ...], NoDecode] = DEFAULT_PRIORITY_QUEUES

    # Modules that declare tasks (`@task`): workers, the scheduler and the API import them at start-up.
    task_modules: Annotated[tuple[str, ...], NoDecode] = DEFAULT_TASK_MODULES

    # --- workers ------------------------------------------------------------------
    worker_count: int = Field(2, ge=1, le=64)
    # Empty: the priority queues, highest level first (PRIORITY_QUEUES).
    worker_queues: Annotated[tuple[str, ...], NoDecode] = ()
    # RQ's default maintenance runs every 600 s; a SIGKILLed worker's job must be retried within ~2 min.
    worker_maintenance_interval_s: int = Field(30, ge=5)
    # Heartbeat of a running job; its lease lasts this + WORKER_LEASE_MARGIN_S after each beat.
    worker_job_monitoring_interval_s: int = Field(10, ge=1)
    # Slack for late heartbeats (RQ's own is 60 s): a SIGKILLed worker's job is retried after
    # monitoring interval + margin + up to one maintenance interval. A job a worker took off a queue and
    # never registered as started (Redis crashed under it) is retried once seen there this long.
    worker_lease_margin_s: int = Field(60, ge=5)
    # A worker's registration lives this long without heartbeat; also bounds BLPOP waits (ttl - 15 s).
    worker_ttl_s: int = Field(35, ge=20)
    # A forking worker keeps a work-horse forked and connected ahead of its next job (workers/forking.py).
    worker_spare_work_horse: bool = True
    # A forking worker's work-horses take the analyzer's working arrays from one shared mapping of this size
    # that the worker keeps (tasks/analyzers/scratch.py; resident: what a job uses, ~6-11 MB). 0: their own.
    worker_shared_scratch_mb: int = Field(32, ge=0)
    # fork: a fresh work-horse per job (RQ's Worker); simple: jobs run in the warm worker (`--no-fork`).
    worker_mode: Literal["fork", "simple"] = "fork"
    # Simple mode: the pool kills a worker whose job runs this long past its timeout (C code, blocked alarm).
    worker_watchdog_grace_s: int = Field(30, ge=1)
    # Simple mode: a worker exits after this many jobs, or past this RSS between jobs; the pool starts a new
    # one. 0: never.
    worker_max_jobs: int = Field(0, ge=0)
    worker_max_memory_mb: int = Field(1024, ge=0)
    background_concurrency: int = Field(2, ge=1, le=64)
    # A running job's progress reports are written at most this often (both modes); reports in between are
    # kept and written with the next one or the job's final write, every log line included. 0: each one.
    job_progress_interval_ms: int = Field(100, ge=0, le=60_000)

    # --- reconciler ---------------------------------------------------------------
    reconcile_interval_s: int = Field(30, ge=1)
    reconcile_grace_s: int = Field(60, ge=1)
    # A job still running this long past its timeout is stuck: reported, then stopped by the reconciler.
    stuck_margin_s: int = Field(60, ge=1)

    # --- retention (jobs.retention) ------------------------------------------------
    # Ended jobs (any task), their domain rows and stored files are deleted this many days after they
    # ended, per status; 0 keeps them forever.
    retention_finished_days: int = Field(30, ge=0, le=36500)
    retention_failed_days: int = Field(30, ge=0, le=36500)
    retention_canceled_days: int = Field(30, ge=0, le=36500)
    # Jobs deleted per pass (one transaction); a run repeats passes until one comes back short.
    retention_batch: int = Field(500, ge=1, le=10000)
    # How often retention runs (the scheduler with USE_RQ_QUEUE=true, else each API process).
    retention_interval_s: int = Field(3600, ge=1)

    # --- security -----------------------------------------------------------------
    admin_api_key: SecretStr | None = None

    # --- callbacks (jobs.callbacks) ------------------------------------------------
    # Standard Webhooks secret (`whsec_` + base64); empty: uploads with a callback_url are refused.
    callback_signing_secret: SecretStr | None = None
    # Exceptions to the SSRF guard: CIDRs (10.0.0.0/8) and/or host names (hooks.internal).
    callback_allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # Connecting, sending and each wait for the receiver; RQ also kills an attempt after 2x this + 10 s.
    callback_timeout_s: float = Field(5.0, gt=0, le=120)
    callback_max_attempts: int = Field(8, ge=1, le=25)
    # Backoff before retry 1 (then doubling, jittered, at most CALLBACK_BACKOFF_MAX_S).
    callback_backoff_s: Annotated[int, NoDecode] = 10
    callback_backoff_max_s: Annotated[int, NoDecode] = 3600
    # In-process mode only: deliveries at once in the API (their own threads, never analysis slots).
    callback_concurrency: int = Field(4, ge=1, le=64)

    # --- analysis -----------------------------------------------------------------
    analysis_server_url: str | None = None
    analysis_server_timeout_s: float = Field(30.0, gt=0)

    # --- API ----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = None
    sse_poll_interval_s: float = Field(2.0, gt=0)
    # `make run`: how long processes get to stop on Ctrl-C before they are killed (jobs left are retried);
    # the API gives running in-process jobs half of it to reach a checkpoint.
    shutdown_grace_s: int = Field(30, ge=1)
    log_level: str = "INFO"

    @field_validator("storage_dir", "redis_data_dir")
    @classmethod
    def _project_relative(cls, value: Path) -> Path:
        # Relative to the project, not to wherever a worker happens to be started from.
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @field_validator("database_url")
    @classmethod
    def _sqlite_project_relative(cls, value: str) -> str:
        prefix = "sqlite:///"
        path = value[len(prefix) :]
        if value.startswith(prefix) and path and path != ":memory:" and not path.startswith("/"):
            return f"{prefix}{(PROJECT_ROOT / path).resolve()}"
        return value

    @field_validator("callback_signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            check_signing_secret(value.get_secret_value().strip())
            return SecretStr(value.get_secret_value().strip())
        return None

    @field_validator("callback_allowed_networks", mode="before")
    @classmethod
    def _allowed_networks(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(check_network_or_host(str(item).strip()) for item in items if str(item).strip())

    @field_validator("callback_backoff_s", "callback_backoff_max_s", mode="before")
    @classmethod
    def _backoff(cls, value: Any) -> int:
        return parse_duration_s(value)

    @field_validator("rq_job_timeout", "rq_result_ttl", "rq_failure_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration_s(value)

    @field_validator("rq_retry_backoff_base", "rq_retry_backoff_max", mode="before")
    @classmethod
    def _backoff_duration(cls, value: Any) -> int:
        return parse_duration_s(value)

    @field_validator("rq_retry_intervals", mode="before")
    @classmethod
    def _intervals(cls, value: Any) -> tuple[int, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        # 0 is allowed here: retry at once.
        intervals = tuple(parse_duration_s(item, allow_zero=True) for item in items if str(item).strip())
        if not intervals:
            raise ValueError("expected at least one interval, e.g. 10,30,60")
        return intervals

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _queues(cls, value: Any) -> tuple[str, ...]:
        return () if value == () else parse_queue_names(value)

    @field_validator("priority_queues", mode="before")
    @classmethod
    def _priority_queues(cls, value: Any) -> tuple[str, ...]:
        return parse_priority_queues(value)

    @model_validator(mode="after")
    def _workers_serve_the_levels(self) -> Settings:
        if not self.worker_queues:
            self.worker_queues = self.queues_by_priority
        return self

    @field_validator("task_modules", mode="before")
    @classmethod
    def _task_modules(cls, value: Any) -> tuple[str, ...]:
        return parse_module_names(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        if not value:
            return None
        S3Location.parse(value)
        return value

    @field_validator("redis_url", "analysis_server_url", "public_url", "s3_endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.analysis_server_url and not self.analysis_server_url.startswith(("http://", "https://")):
            raise ValueError("ANALYSIS_SERVER_URL must start with http:// or https://")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("PUBLIC_URL must start with http:// or https://")
        return self

    @model_validator(mode="after")
    def _orphans_outlive_uploads(self) -> Settings:
        # A `.part` younger than the longest upload (plus time to check and store it) may still be written.
        if self.upload_orphan_age_s < self.upload_timeout_s + ORPHAN_MARGIN_S:
            raise ValueError(
                f"UPLOAD_ORPHAN_AGE_S must be at least UPLOAD_TIMEOUT_S + {ORPHAN_MARGIN_S}, "
                "or uploads still arriving would be deleted"
            )
        return self

    @property
    def resolved_redis_url(self) -> str:
        """`REDIS_URL` when set, else the URL built from the host/port/db/password variables."""
        if self.redis_url:
            return self.redis_url
        auth = ""
        if self.redis_password is not None:
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def level_queues(self) -> dict[str, str]:
        """Each priority level's queue, highest level first (`PRIORITY_QUEUES`)."""
        return dict(item.split(":", 1) for item in self.priority_queues)

    @property
    def queues_by_priority(self) -> tuple[str, ...]:
        """The priority queues, highest level first, each once."""
        return tuple(dict.fromkeys(self.level_queues.values()))

    def queue_for(self, level: str) -> str:
        """The queue of a priority level (`critical`, `high`, `normal`, `low`)."""
        return self.level_queues[level]

    def level_of(self, queue: str) -> str | None:
        """The highest priority level whose queue is `queue`; None for any other queue."""
        return next((level for level, name in self.level_queues.items() if name == queue), None)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def retry_intervals_s(self) -> tuple[int, ...]:
        """One backoff per retry (`RQ_RETRY_MAX` of them), see `intervals_for`."""
        return intervals_for(self.rq_retry_max, self.rq_retry_intervals)

    @property
    def base_url(self) -> str:
        """Where clients reach the API; used for absolute links such as `status_url`."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def load_settings(env_file: str | None = None, **overrides: Any) -> Settings:
    """Builds settings, turning a validation error into one readable `ConfigurationError`.

    Args:
        env_file: the dotenv file to read; defaults to `$ENV_FILE` or `.env`. An empty string reads none.
        **overrides: values that win over the environment (tests use this).

    Raises:
        ConfigurationError: naming each bad variable and why.
    """
    path = env_file if env_file is not None else os.environ.get("ENV_FILE", ".env")
    try:
        return Settings(_env_file=path or None, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            names = ".".join(str(part).upper() for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{names}: {message}" if names else message)
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
