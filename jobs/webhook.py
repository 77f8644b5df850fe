"""One attempt to tell a client's `callback_url` that its job ended.

Signed with Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`; `webhook-id` and `Idempotency-Key` are the job id, so
receivers de-duplicate repeats). The URL is checked again here (a row written
before validation existed may hold anything), the host is resolved and checked
by the SSRF guard, and the request goes to the checked address with the
original `Host` (and SNI for https). Redirects are not followed. Nothing here
raises: every failure is a `Delivery` that says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from standardwebhooks import Webhook

from core.errors import CallbackRefused
from core.models import Job
from core.settings import Settings
from core.tls import tls_context
from jobs.callback_target import TargetPolicy, parse_callback_url

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

USER_AGENT = "audiokit-callbacks/1"


@dataclass(frozen=True)
class Delivery:
    """How one attempt went."""

    delivered: bool
    error: str | None = None
    permanent: bool = False  # another attempt cannot help (bad URL, refused target)


def payload(job: Job, base_url: str) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "status": job.status.value,
        "result": job.result,
        "error": job.error,
        "status_url": f"{base_url}/jobs/{job.id}",
    }


def signed_headers(secret: str, message_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed now (receivers refuse signatures over 5 minutes old)."""
    timestamp = now or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, timestamp, body),
    }


def deliver(job: Job, settings: Settings, transport: httpx.BaseTransport | None = None) -> Delivery:
    """POSTs the outcome to the job's `callback_url`: delivered on a 2xx answer."""
    import httpx  # here: importing this module (the API, the scheduler) need not load it

    if not job.callback_url:
        return Delivery(False, "no callback_url", permanent=True)
    secret = settings.callback_signing_secret
    if secret is None:
        return Delivery(False, "CALLBACK_SIGNING_SECRET is not set: callbacks are not sent unsigned")
    try:
        url = parse_callback_url(job.callback_url)
        address = TargetPolicy.from_entries(settings.callback_allowed_networks).resolve(url)
        return _send(job, url, address, secret.get_secret_value(), settings, transport)
    except CallbackRefused as exc:
        return Delivery(False, str(exc), permanent=True)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as exc:
        return Delivery(False, _describe(exc))
    except Exception as exc:
        # A failed attempt, whatever happened: it must never escape into the job that asked for it.
        log.exception("callback for %s: unexpected error", job.id)
        return Delivery(False, _describe(exc))


def _send(
    job: Job,
    url: httpx.URL,
    address: Any,
    secret: str,
    settings: Settings,
    transport: httpx.BaseTransport | None,
) -> Delivery:
    import httpx

    body = json.dumps(payload(job, settings.base_url), separators=(",", ":"))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": job.id,
        # The name the receiver expects, while the connection goes to the address that was checked.
        "Host": url.netloc.decode("ascii"),
        **signed_headers(secret, job.id, body),
    }
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    target = url.copy_with(host=str(address))
    with (
        httpx.Client(
            timeout=settings.callback_timeout_s,
            transport=transport,
            verify=tls_context(),
            trust_env=False,
            follow_redirects=False,
        ) as client,
        client.stream("POST", target, content=body.encode(), headers=headers, extensions=extensions) as response,
    ):
        # The status is all we need: the body is never read, so a slow one cannot hold us.
        status = response.status_code
    if 200 <= status < 300:
        return Delivery(True)
    return Delivery(False, f"the receiver answered {status}")


def _describe(exc: BaseException) -> str:
    text = str(exc) or "no details"
    return f"{type(exc).__name__}: {text}"
