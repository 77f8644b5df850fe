"""Uploads in an S3-compatible bucket (moto on loopback), against the real API and real workers.

The API streams each upload into the bucket; workers read it from there (they share no disk with the
API); the waveform image is stored and served from the bucket; refused uploads leave no object and no
multipart upload; retention deletes the objects of old jobs. In both modes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.models import Analysis
from core.db import get_database
from core.models import Job, utcnow
from core.settings import QUEUE_HIGH, Settings
from jobs.maintenance import RETENTION_TASK
from redis_client import RETENTION, KitQueue, make_redis
from tests.conftest import SettingsFactory
from tests.integration.test_upload_limits import (
    _chunked_stopped_at_40_percent,
    _cut_at_half,
    _exchange,
    _head,
    _multipart,
    _status_and_detail,
)
from tests.support.audio import wav_bytes
from tests.support.object_store import ObjectStoreServer
from tests.support.processes import ApiServer, ManagedProcess, wait_for, wait_until_ended

pytestmark = pytest.mark.slow

PREFIX = "uploads/"
BIG_AUDIO_S = 150.0  # ~13 MB of 16-bit mono at 44.1 kHz: three 5 MB parts
EXPIRED = timedelta(days=40)  # older than RETENTION_FINISHED_DAYS (30)


def _bucket_of(settings: Settings) -> str:
    assert settings.storage_url is not None
    return settings.storage_url.removeprefix("s3://").split("/", 1)[0]


def _local_files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def _rows(settings: Settings) -> int:
    """Jobs and analyses left, not counting retention's own runs (in-process, each is a job: jobs.retention)."""
    with get_database(settings.database_url).session() as session:
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.task != RETENTION_TASK)) or 0
        return jobs + (session.scalar(select(func.count()).select_from(Analysis)) or 0)


def _upload_and_draw(api: ApiServer, audio: bytes) -> tuple[str, bytes]:
    """Uploads `audio`, waits for its analysis and its waveform; returns the id and the image."""
    with api.client() as client:
        upload = client.post("/audio", files={"file": ("long.wav", audio)})
        assert upload.status_code == 202, upload.text
        analysis_id: str = upload.json()["id"]
        body = wait_until_ended(client, analysis_id, 120)
        assert body["status"] == "finished", body
        assert body["result"]["duration_s"] == pytest.approx(BIG_AUDIO_S, abs=0.1)

        def drawn() -> httpx.Response | None:
            answer = client.get(f"/audio/{analysis_id}/waveform.png")
            assert answer.status_code in (200, 202), answer.text
            return answer if answer.status_code == 200 else None

        image = wait_for(drawn, 120, "the waveform image")
    assert image.headers["content-type"] == "image/png"
    return analysis_id, image.content


def _expire_all_jobs(settings: Settings) -> None:
    """Moves every job's end 40 days back: the data's clock, not the test's, says they are old."""
    with get_database(settings.database_url).session() as session:
        session.execute(update(Job).values(finished_at=utcnow() - EXPIRED))


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode", offset=1)
def test_upload_analysis_and_waveform_run_on_object_storage_and_retention_deletes_the_objects(
    mode: str,
    make_settings: SettingsFactory,
    s3_settings: dict[str, Any],
    object_store: ObjectStoreServer,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> None:
    # No shared disk: the API and the workers each get a local directory of their own.
    api_dir, worker_dir = tmp_path / "api-host", tmp_path / "worker-host"
    common: dict[str, Any] = {"use_rq_queue": mode == "rq", "retention_interval_s": 1, **s3_settings}
    settings = make_settings(storage_dir=api_dir, **common)
    bucket = _bucket_of(settings)
    api = api_server(settings)
    if mode == "rq":
        workers(make_settings(storage_dir=worker_dir, **common))

    analysis_id, image = _upload_and_draw(api, wav_bytes(BIG_AUDIO_S))

    assert image.startswith(b"\x89PNG")
    assert object_store.object_names(bucket) == [f"{PREFIX}{analysis_id}.png", f"{PREFIX}{analysis_id}.wav"]
    assert object_store.pending_uploads(bucket) == []
    assert _local_files(api_dir) == [], "the API kept a local copy of an upload"
    if mode == "rq":
        assert _local_files(worker_dir) == [], "a worker kept its temporary download"

    _expire_all_jobs(settings)
    if mode == "rq":
        # The scheduler's tick (workers.scheduler enqueues this every RETENTION_INTERVAL_S).
        with make_redis(settings) as connection:
            KitQueue(QUEUE_HIGH, connection=connection).enqueue_call(func=RETENTION)
    # In-process mode, the API fires retention every RETENTION_INTERVAL_S (1 s here), a job per tick.
    wait_for(lambda: object_store.object_names(bucket) == [], 60, "retention to delete the objects")
    assert _rows(settings) == 0
    with api.client(headers={"X-API-Key": settings.admin_api_key.get_secret_value()}) as client:  # type: ignore[union-attr]
        metrics = client.get("/metrics").text
    deleted_jobs = re.search(r'audiokit_retention_deleted_total\{kind="job"\} ([0-9.]+)', metrics)
    assert deleted_jobs is not None
    # In-process, retention's own earlier runs (jobs too, expired with the rest above) go as well.
    assert float(deleted_jobs.group(1)) == 2.0 if mode == "rq" else float(deleted_jobs.group(1)) >= 2.0
    assert 'audiokit_retention_deleted_total{kind="file"} 2.0' in metrics


def _refused(api: ApiServer, request: bytes) -> tuple[int, str]:
    return _status_and_detail(_exchange(api, request))


def test_a_truncated_or_over_the_limit_upload_leaves_no_object_and_no_multipart_upload(
    make_settings: SettingsFactory,
    s3_settings: dict[str, Any],
    object_store: ObjectStoreServer,
    api_server: Callable[[Settings], ApiServer],
) -> None:
    settings = make_settings(max_upload_mb=12, **s3_settings)
    bucket = _bucket_of(settings)
    api = api_server(settings)
    big = _multipart(wav_bytes(BIG_AUDIO_S))  # ~13 MB: parts go to the bucket before the refusal

    for make_request in (_cut_at_half, _chunked_stopped_at_40_percent):
        status, detail = _refused(api, make_request(big))
        assert (status, "incomplete" in detail) == (422, True), detail
    status, detail = _refused(api, _head(length=len(big)) + big)
    assert status == 413, detail

    # A client that disconnects in the middle of a part.
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(_head(length=len(big)) + big[: len(big) * 7 // 10])
        wait_for(lambda: object_store.pending_uploads(bucket), 60, "the multipart upload to begin")

    wait_for(lambda: object_store.pending_uploads(bucket) == [], 60, "the multipart upload to be aborted")
    assert object_store.object_names(bucket) == []
    assert _rows(settings) == 0
    assert api.alive
