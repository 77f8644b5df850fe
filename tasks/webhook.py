"""Tells a client's `callback_url` that its analysis ended.

Delivered at least once: sent after the final write, marked sent on a 2xx;
a failed delivery is sent again by the reconciler. Receivers de-duplicate with
the `Idempotency-Key` header (the analysis id).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from core.models import Analysis

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


def payload(analysis: Analysis, base_url: str) -> dict[str, Any]:
    return {
        "id": analysis.id,
        "status": analysis.status.value,
        "result": analysis.result,
        "error": analysis.error,
        "status_url": f"{base_url}/audio/{analysis.id}",
    }


def deliver(analysis: Analysis, base_url: str, transport: httpx.BaseTransport | None = None) -> bool:
    """POSTs the outcome to the analysis' `callback_url`; True on a 2xx answer."""
    if not analysis.callback_url:
        return False
    try:
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_S, transport=transport) as client:
            response = client.post(
                analysis.callback_url,
                json=payload(analysis, base_url),
                headers={"Idempotency-Key": analysis.id},
            )
    except httpx.HTTPError as exc:
        log.warning("callback for %s not delivered: %s", analysis.id, exc)
        return False
    if not response.is_success:
        log.warning("callback for %s answered %s", analysis.id, response.status_code)
    return response.is_success
