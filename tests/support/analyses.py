"""Stored uploads made directly (no HTTP), run in-process or failed, for tests of jobs, workers and the reconciler."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import redis
from rq import SimpleWorker
from rq.job import JobStatus as RQJobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from sqlalchemy import update

from app.models import Analysis
from core.models import DispatchMode, Job, Priority, utcnow
from core.settings import QUEUE_CALLBACKS, QUEUES_BY_PRIORITY
from jobs.dispatch import Dispatcher
from jobs.runtime import Runtime
from jobs.submit import Submitter
from redis_client import KitJob, KitQueue, fetch_job, get_queue
from tasks.audio_analysis import process_audio_analysis


def submitter(runtime: Runtime, mode: DispatchMode = DispatchMode.RQ) -> Submitter:
    """A submitter that dispatches onto RQ (`mode` rq) from this process, as the API's does."""
    settings = runtime.settings.model_copy(update={"use_rq_queue": mode is DispatchMode.RQ})
    return Submitter(settings, runtime.lifecycle, Dispatcher(settings, runtime.redis, None, runtime.lifecycle))


def store_upload(
    runtime: Runtime,
    data: bytes,
    *,
    extension: str = "wav",
    queue: str = "audio_analysis",
    mode: DispatchMode = DispatchMode.RQ,
    callback_url: str | None = None,
) -> Job:
    """Writes `data` to storage and commits a `pending` analysis job for it, as an upload would (no dispatch)."""
    analysis_id = uuid.uuid4().hex
    key = runtime.storage.key_for(analysis_id, extension)
    runtime.storage.ensure()
    runtime.storage.put_bytes(key, data)
    job = submitter(runtime, mode).build(
        process_audio_analysis,
        [key],
        queue=queue,
        priority=Priority.HIGH if queue == "high_priority" else Priority.NORMAL,
        job_id=analysis_id,
    )
    job.callback_url = callback_url  # tests choose receivers the upload check would refuse
    analysis = Analysis(
        id=analysis_id,
        filename=f"test.{extension}",
        size_bytes=len(data),
        content_type=None,
        audio_format=extension,
        sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key,
    )
    return runtime.lifecycle.accept(job, analysis, log="upload stored")


def enqueue_upload(runtime: Runtime, data: bytes, extension: str = "wav") -> str:
    """Stores an upload and puts its job on RQ, as `POST /audio` does; returns its id."""
    job = store_upload(runtime, data, extension=extension)
    Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle).dispatch(None, job)
    return job.id


def drain(connection: redis.Redis) -> None:
    """Runs every queued job (callback deliveries last) in this process with RQ's `SimpleWorker`."""
    queues = [get_queue(name, connection) for name in (*QUEUES_BY_PRIORITY, QUEUE_CALLBACKS)]
    worker = SimpleWorker(
        queues, connection=connection, serializer=JSONSerializer, job_class=KitJob, queue_class=KitQueue
    )
    worker.work(burst=True)


def fail_queued_job(job_id: str, connection: redis.Redis) -> KitJob:
    """Moves a queued job to its queue's failed registry, as a worker would after its last attempt."""
    job = fetch_job(job_id, connection)
    assert job is not None
    queue = get_queue(job.origin, connection)
    queue.remove(job)
    with connection.pipeline() as pipeline:
        job.set_status(RQJobStatus.FAILED, pipeline=pipeline)
        queue.failed_job_registry.add(job, pipeline=pipeline)
        Result.create_failure(job, ttl=60, exc_string="CorruptAudio: could not decode audio", pipeline=pipeline)
        pipeline.execute()
    return job


def age_row(runtime: Runtime, analysis_id: str, seconds: int = 600) -> None:
    """Makes a row look untouched for a while (past the grace period)."""
    with runtime.database.session() as session:
        session.execute(
            update(Job).where(Job.id == analysis_id).values(updated_at=utcnow() - timedelta(seconds=seconds))
        )
