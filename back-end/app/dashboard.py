"""rq-dashboard at `/rq`, behind the admin key, with its known weaknesses neutralised.

rq-dashboard 0.9 is a Flask blueprint with no auth, no CSRF protection, a
mutating route that accepts GET, and client-side templates that insert job
fields as raw HTML. We run it in its own Flask app, wrapped in `_Guard` (a WSGI
middleware) and served through a2wsgi, so that:

- every request needs the admin key (HTTP Basic password, Bearer or X-API-Key);
- a route that changes state answers only POST/DELETE, and only same-origin;
- every client-side `<%= %>` insertion is rewritten to the escaping `<%- %>`,
  and a nonce-based Content-Security-Policy keeps injected markup inert;
- nothing may frame it, and deleting jobs is off (see docs/dashboard.md);
- it reads and requeues jobs as `KitJob`s (JSON): out of the box it would
  unpickle job metadata from Redis in the API process.

API only: workers and tasks never import this module; the API imports it on the first request to `/rq`
(`app.dashboard_mount`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import redis
import rq_dashboard
from fastapi import HTTPException
from flask import Flask, abort, current_app, make_response, request
from flask import jsonify as flask_jsonify
from flask.typing import ResponseReturnValue
from jinja2 import BaseLoader, Environment
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker
from rq_dashboard import web
from werkzeug.exceptions import HTTPException as RoutingHTTPException
from werkzeug.routing import Map

from core.settings import QUEUES_BY_PRIORITY, Settings
from jobs.web.auth import BASIC_CHALLENGE, check_admin
from redis_client import KitJob, KitQueue

_NONCE_ENVIRON_KEY = "audiokit.csp_nonce"
_STATE_CHANGING_METHODS = frozenset({"POST", "DELETE"})
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})  # "none": the user typed the URL or used a bookmark
# Underscore's `_.template` compiles templates with `new Function`, hence 'unsafe-eval'; the template
# sources are the dashboard's own, and injected data is never evaluated. Inline styles are in its markup.
_CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Any `<%= expr %>` inserts raw HTML; `<%- expr %>` escapes it. The ones starting with `$(` escape already.
_RAW_INTERPOLATION = re.compile(r"<%=(?!\s*\$\()")
_INLINE_SCRIPT_TAG = '<script type="text/javascript">'
# rq-dashboard opens a new Redis client per request from the URL alone: give it the API's timeouts there,
# so a hung Redis cannot hold a dashboard thread forever.
_URL_DEFAULTS = {"socket_connect_timeout": "2", "socket_timeout": "5"}


class _HardenedTemplates(BaseLoader):
    """rq-dashboard's templates with every client-side interpolation escaping and a nonce on the inline script."""

    def __init__(self, inner: BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        source = _RAW_INTERPOLATION.sub("<%-", source)
        source = source.replace(_INLINE_SCRIPT_TAG, '<script nonce="{{ csp_nonce }}" type="text/javascript">')
        return source, filename, uptodate


class _Guard:
    """WSGI middleware: admin key, POST/DELETE-only and same-origin-only state changes, security headers."""

    def __init__(self, app: WSGIApplication, admin_key: str | None, url_map: Map) -> None:
        self.app = app
        self.admin_key = admin_key
        self.url_map = url_map

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        nonce = secrets.token_urlsafe(18)
        environ[_NONCE_ENVIRON_KEY] = nonce
        security_headers = [
            ("Content-Security-Policy", _CSP.format(nonce=nonce)),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"),
        ]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *security_headers], exc_info)

        refusal = self._refusal(environ)
        if refusal is None:
            return self.app(environ, start)
        status, headers, text = refusal
        start(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"), *headers])
        return [text.encode()]

    def _refusal(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], str] | None:
        try:
            check_admin(
                self.admin_key, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"), BASIC_CHALLENGE
            )
        except HTTPException as exc:
            reason = "Unauthorized" if exc.status_code == 401 else "Service Unavailable"
            return f"{exc.status_code} {reason}", list((exc.headers or {}).items()), f"{exc.detail}\n"
        method = environ["REQUEST_METHOD"].upper()
        if method not in _STATE_CHANGING_METHODS and self._changes_state(environ):
            # e.g. `/requeue/<queue>` accepts GET: a link or an <img> on any page would requeue jobs.
            return "405 Method Not Allowed", [("Allow", "POST")], "state changes need POST\n"
        if method not in ("GET", "HEAD", "OPTIONS") and _cross_site(environ):
            # Browsers replay cached Basic credentials on cross-site form posts: refuse them (CSRF).
            return "403 Forbidden", [], "cross-site request refused\n"
        return None

    def _changes_state(self, environ: WSGIEnvironment) -> bool:
        """True when the path is one of rq-dashboard's routes that accept POST (all of them change state)."""
        try:
            self.url_map.bind_to_environ(environ).match(method="POST")
        except RoutingHTTPException:  # not found, read-only (405) or a redirect
            return False
        return True


def _cross_site(environ: WSGIEnvironment) -> bool:
    """True unless the request comes from a page of this same origin (or carries no browser provenance at all)."""
    if environ.get("HTTP_SEC_FETCH_SITE", "same-origin") not in _SAFE_FETCH_SITES:
        return True
    host = str(environ.get("HTTP_HOST", "")).lower()
    for header in ("HTTP_ORIGIN", "HTTP_REFERER"):
        value = environ.get(header)
        if value:  # Origin when present decides; "null" (sandboxed or privacy-stripped) never matches
            return urlsplit(value).netloc.lower() != host
    return False  # no Origin/Referer: not a browser form post (curl, scripts with Bearer/X-API-Key)


def _dashboard_redis_url(settings: Settings) -> str:
    """The service's Redis URL (password/TLS included) with timeouts, unless the URL sets its own."""
    parts = urlsplit(settings.resolved_redis_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(query=urlencode(_URL_DEFAULTS | query)))


class _JsonWorker(Worker):
    """Workers as the dashboard lists them: a busy worker's current job is fetched as an `KitJob`."""

    @classmethod
    def all(
        cls,
        connection: redis.Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        queue: Queue | None = None,
        serializer: Any = None,
    ) -> list[BaseWorker]:
        return super().all(connection, job_class or KitJob, queue_class, queue, serializer or JSONSerializer)


def _json_error(status: int, detail: str) -> NoReturn:
    """Stops a dashboard request with a JSON answer (its own routes would answer 500 with a traceback)."""
    abort(make_response(flask_jsonify(status="ERROR", detail=detail), status, {"Cache-Control": "no-store"}))


def _requeue_job(job_id: str, connection: redis.Redis) -> Job:
    try:
        return KitJob.fetch(job_id, connection=connection).requeue()
    except NoSuchJobError:
        _json_error(404, f"no job with id {job_id!r}")
    except InvalidJobOperation:
        _json_error(409, f"job {job_id!r} is not in the failed registry; only failed jobs can be requeued")


def _compact_queue(queue_name: str) -> ResponseReturnValue:
    """rq-dashboard's "compact" (drop ids of jobs that no longer exist), without its 500 on an empty queue.

    RQ's `Queue.compact` RENAMEs the queue's list, and Redis keeps no empty list: RENAME fails.
    """
    connection: redis.Redis = current_app.redis_conn  # type: ignore[attr-defined]
    queue = KitQueue(queue_name, connection=connection)
    known = queue_name in QUEUES_BY_PRIORITY or connection.sismember(KitQueue.redis_queues_keys, queue.key)
    if not known:
        _json_error(404, f"no queue named {queue_name!r}")
    try:
        queue.compact()  # type: ignore[no-untyped-call]
    except redis.exceptions.ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
        # Empty (or emptied by a worker meanwhile): nothing to compact.
    return flask_jsonify(status="OK", count=queue.count), {"Cache-Control": "no-store"}


def _read_jobs_as_json() -> None:
    """Makes rq-dashboard deserialize jobs with JSON only (its default, pickle, runs code found in Redis).

    These are rq-dashboard module globals, shared by every app in the process; all of ours want the same.
    """
    web.config.serializer = JSONSerializer
    web.Job = KitJob  # job page, delete
    web.Worker = _JsonWorker  # workers page
    web.requeue_job = _requeue_job  # requeue one, requeue all


def build_dashboard(settings: Settings) -> WSGIApplication:
    """The guarded rq-dashboard WSGI app for `settings` (mount it at `/rq`)."""
    _read_jobs_as_json()
    flask_app = Flask(__name__, static_folder=f"{web.blueprint.root_path}/static", template_folder=None)
    flask_app.config.from_object(rq_dashboard.default_settings)
    flask_app.config["RQ_DASHBOARD_REDIS_URL"] = _dashboard_redis_url(settings)
    # Deleting a job in Redis leaves its analysis row "queued", and the reconciler would enqueue it again:
    # `DELETE /jobs/{id}/cancel` is the way to stop a job.
    flask_app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True
    flask_app.jinja_options = {**flask_app.jinja_options, "loader": _HardenedTemplates(web.blueprint.jinja_loader)}
    flask_app.context_processor(lambda: {"csp_nonce": request.environ.get(_NONCE_ENVIRON_KEY, "")})
    flask_app.register_blueprint(web.blueprint)
    flask_app.view_functions[f"{web.blueprint.name}.compact_queue"] = _compact_queue
    web.setup_rq_connection(flask_app)
    key = settings.admin_api_key
    return _Guard(flask_app, key.get_secret_value() if key else None, flask_app.url_map)
