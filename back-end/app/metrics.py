"""Prometheus metrics at `GET /metrics` (admin key): queues, workers, jobs and request latency.

Two sources, read at different places:

- queue depth, workers and job counters/histograms are read from Redis at
  scrape time, so every API process answers with the same numbers, which
  cover every worker and API process (`core.metrics.RedisJobMetrics`);
- request latency is measured here, per API process, in an ordinary
  prometheus-client histogram.

Each app gets its own `CollectorRegistry`: tests build several apps in one
process, and the global default registry would refuse the second one.
`docs/metrics.md` lists every metric.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics_redis import backlog_families, memory_families
from app.services import Services
from core.metrics import HistogramSnapshot, JobEvent, RedisJobMetrics
from jobs.backlog import read_backlog
from jobs.registry import job_queues
from jobs.rq_state import registry_counts, workers
from jobs.stuck import stuck_jobs
from jobs.web.auth import ADMIN_RESPONSES, AdminDep

log = logging.getLogger(__name__)

# From a few ms (a status read) to tens of seconds (a 50 MB upload over a slow link).
REQUEST_DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
# Requests no route matched share one label: raw paths would make a series per scanner probe.
UNMATCHED_ROUTE = "<unmatched>"
# Any other method string a client invents is labelled OTHER, for the same reason.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- request latency (per API process) -----------------------------------------------------


def _top_level_route(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The app's own Starlette route or mount that matches `scope` (a full match first, like the router)."""
    partial = None
    for route in routes:
        if not isinstance(route, Route | Mount):
            continue  # FastAPI's included routers: their APIRoutes put themselves in the scope
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def _route_label(scope: Scope, entry: Scope, routes: Iterable[BaseRoute]) -> str:
    """The matched route's template (`/audio/{analysis_id}`, `/rq/{path}`), never the raw path.

    Args:
        scope: the request's scope after the app handled it.
        entry: `type`, `method`, `path` and `root_path` as they were before routing.
        routes: the app's top-level routes.
    """
    route = scope.get("route")
    if route is None:
        # FastAPI's router records only its own APIRoutes there; mounts (the dashboard) and plain
        # Starlette routes (/docs, /openapi.json) are found again here, at the cost of a regex each.
        route = _top_level_route(routes, entry)
        template = getattr(route, "path_format", None)
        return template if isinstance(template, str) else UNMATCHED_ROUTE
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    if isinstance(route, Mount):
        return template
    # Inside a mounted sub-app the route is the sub-app's own, relative to the mount point.
    entry_root_path: str = entry["root_path"]
    root_path: str = scope.get("root_path", "")
    mount_prefix = root_path[len(entry_root_path) :] if root_path.startswith(entry_root_path) else ""
    return mount_prefix.rstrip("/") + template or "/"


class _RequestLatency:
    """Pure ASGI middleware: time from request to response headers, by method, route and status.

    The clock stops when the response starts (its status and headers are sent),
    not when its body ends, for two reasons: an SSE stream (`/audio/{id}/events`)
    sends its body for as long as the analysis runs, which is not latency; and
    `BackgroundTasks` run after the body, inside the same ASGI call, so an
    in-process analysis would otherwise count as the upload's latency. For our
    JSON answers the body follows the headers at once.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app = app
        self.histogram = histogram
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        entry = {key: scope.get(key) for key in ("type", "method", "path")} | {"root_path": scope.get("root_path", "")}
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            observed = True
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            route = _route_label(scope, entry, self.routes())
            self.histogram.labels(method, route, str(status)).observe(time.perf_counter() - start)

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not observed:
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not observed:
                observe(500)  # Starlette's outermost error middleware answers 500 after us
            raise


# --- queues, workers, jobs (from Redis, shared by all processes) ---------------------------


def _le(bound: float) -> str:
    """A bucket bound the way prometheus-client writes its own (`1.0`, `+Inf`), so `le` labels look alike."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _histogram_family(name: str, documentation: str, histograms: dict[str, HistogramSnapshot]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["queue"])
    for queue, snapshot in histograms.items():
        buckets = [(_le(bound), float(count)) for bound, count in snapshot.buckets]
        family.add_metric([queue], buckets, snapshot.sum)
    return family


_EVENT_HELP = {
    JobEvent.STARTED: "Runs started (every attempt counts), per queue.",
    JobEvent.FINISHED: "Runs that finished successfully, per queue.",
    JobEvent.FAILED: "Jobs that failed for good (no retry left, or a permanent error), per queue.",
    JobEvent.RETRIED: "Runs that failed and were scheduled for another attempt, per queue.",
    JobEvent.CANCELED: "Jobs canceled while waiting or stopped while running, per queue.",
}


class _JobCollector:
    """Reads queue registries, workers and job metrics from Redis at scrape time."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def collect(self) -> Iterable[Metric]:
        services = self._services()
        if services is None:  # scraped before the app's start-up finished
            return
        in_process = GaugeMetricFamily(
            "audiokit_inprocess_jobs",
            "Jobs of this API process's in-process runner (USE_RQ_QUEUE=false path), by state.",
            labels=["state"],
        )
        in_process.add_metric(["running"], services.runner.running_count)
        in_process.add_metric(["waiting"], services.runner.waiting_count)
        yield in_process
        yield GaugeMetricFamily(
            "audiokit_use_rq_queue",
            "1 when this API process enqueues jobs on RQ (USE_RQ_QUEUE=true), 0 when it runs them itself.",
            value=int(services.settings.use_rq_queue),
        )
        try:
            stuck = len(stuck_jobs(services.database, services.settings.stuck_margin_s))
        except Exception as exc:  # the database is down: readiness says so; the rest of the scrape goes on
            log.warning("metrics scrape without the database: %s", exc)
        else:
            yield GaugeMetricFamily(
                "audiokit_jobs_stuck", "Jobs running past their timeout + STUCK_MARGIN_S (both modes).", value=stuck
            )
        try:
            queues = job_queues(services.settings)
            counts = {name: registry_counts(services.redis, name) for name in queues}
            backlog = read_backlog(services.redis, queues)
            found = workers(services.redis, services.settings.worker_ttl_s)
            snapshot = RedisJobMetrics(services.redis).read(queues)
            retained = RedisJobMetrics(services.redis).read_retention()
        except redis.exceptions.RedisError as exc:
            log.warning("metrics scrape without Redis: %s", exc)
            yield GaugeMetricFamily("audiokit_redis_up", "1 when this scrape could read Redis, else 0.", value=0)
            return
        yield GaugeMetricFamily("audiokit_redis_up", "1 when this scrape could read Redis, else 0.", value=1)

        depth = GaugeMetricFamily(
            "audiokit_queue_jobs",
            "Jobs in each RQ queue and registry (what GET /queue/status shows).",
            labels=["queue", "registry"],
        )
        for queue, registries in counts.items():
            for registry, count in registries.items():
                depth.add_metric([queue, registry], count)
        yield depth
        yield from backlog_families(backlog)
        yield from memory_families(services.redis)

        alive = [worker for worker in found if worker.alive]
        per_queue = GaugeMetricFamily(
            "audiokit_workers",
            "Live RQ workers listening on each queue (a worker may serve several).",
            labels=["queue"],
        )
        for queue in job_queues(services.settings):
            per_queue.add_metric([queue], sum(1 for worker in alive if queue in worker.queues))
        yield per_queue
        yield GaugeMetricFamily(
            "audiokit_workers_alive", "Live RQ workers (heartbeat within WORKER_TTL_S).", value=len(alive)
        )

        for event, by_queue in snapshot.events.items():
            counter = CounterMetricFamily(f"audiokit_jobs_{event.value}", _EVENT_HELP[event], labels=["queue"])
            for queue, count in by_queue.items():
                counter.add_metric([queue], count)
            yield counter
        callbacks = CounterMetricFamily(
            "audiokit_callbacks",
            "Callback attempts by outcome: delivered, retried (failed, another follows), undeliverable (gave up).",
            labels=["outcome"],
        )
        for outcome, count in snapshot.callbacks.items():
            callbacks.add_metric([outcome.value], count)
        yield callbacks
        retention = CounterMetricFamily(
            "audiokit_retention_deleted",
            "Ended jobs (with their domain rows) and stored files deleted by retention (RETENTION_*_DAYS).",
            labels=["kind"],
        )
        for kind, count in retained.items():
            retention.add_metric([kind], count)
        yield retention
        yield _histogram_family(
            "audiokit_job_duration_seconds",
            "Duration of successful runs, from attempt start to the final write, per queue.",
            snapshot.job_duration_s,
        )
        yield _histogram_family(
            "audiokit_upload_to_start_seconds",
            "Time from upload (acknowledgment) to the start of the first attempt, per queue.",
            snapshot.upload_to_start_s,
        )


# --- installation --------------------------------------------------------------------------


def install_metrics(app: FastAPI) -> None:
    """Adds the request-latency middleware and the `/metrics` route."""
    registry = CollectorRegistry()
    requests = Histogram(
        "audiokit_http_request_duration_seconds",
        "Time from request to response headers in this API process, by method, route template and status.",
        ["method", "route", "status"],
        buckets=REQUEST_DURATION_BUCKETS_S,
        registry=registry,
    )
    registry.register(_JobCollector(lambda: getattr(app.state, "services", None)))
    app.add_middleware(_RequestLatency, histogram=requests, routes=lambda: app.router.routes)

    responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "Prometheus text format"},
        **ADMIN_RESPONSES,
    }

    # A sync route on purpose: the collector reads Redis with blocking calls, so it runs in the threadpool.
    @app.get("/metrics", tags=["operations"], response_class=Response, responses=responses)
    def metrics(_admin: AdminDep) -> Response:
        """Prometheus metrics: queue depth, workers, job counts and durations, request latency."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
