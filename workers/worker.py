"""The RQ worker class: JSON jobs through the allow-list, maintenance tuned for fast recovery."""

from __future__ import annotations

from typing import Any

from rq import Worker
from rq.serializers import JSONSerializer

from core.settings import get_settings
from redis_client import AnalysisJob, AnalysisQueue


class AnalysisWorker(Worker):
    """An RQ `Worker` whose defaults come from the settings.

    RQ's defaults notice a SIGKILLed worker's job only after ~11 minutes
    (600 s maintenance, 90 s lease); with ours a job is retried within about
    `job_monitoring_interval + 60 + maintenance_interval` seconds (~100 s).
    `WorkerPool` builds workers with the class alone, so the defaults live here.
    """

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_class", AnalysisJob)
        kwargs.setdefault("queue_class", AnalysisQueue)
        kwargs.setdefault("maintenance_interval", settings.worker_maintenance_interval_s)
        kwargs.setdefault("job_monitoring_interval", settings.worker_job_monitoring_interval_s)
        kwargs.setdefault("worker_ttl", settings.worker_ttl_s)
        kwargs.setdefault("default_result_ttl", settings.rq_result_ttl)
        # WorkerPool hands over plain Queue objects (pickle serializer): rebuild them as ours.
        names = [getattr(queue, "name", queue) for queue in ([queues] if isinstance(queues, str) else queues)]
        super().__init__(names, *args, **kwargs)
