"""The admin key: `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time.

Browsers get HTTP Basic for the dashboard: any user name, the key as the
password. Mutating endpoints and queue-wide views require the key; reading
one job is open to whoever knows its id.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPBasic, HTTPBearer

from jobs.web.deps import JobServicesDep
from jobs.web.schemas import ErrorOut

BEARER_CHALLENGE = 'Bearer realm="audiokit"'
BASIC_CHALLENGE = 'Basic realm="audiokit admin", charset="UTF-8"'


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: X-API-Key, a Bearer token, or the password of HTTP Basic."""
    if api_key:
        return api_key
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def key_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the key."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


def check_admin(expected: str | None, authorization: str | None, api_key: str | None, challenge: str) -> None:
    """Raises the HTTP error for a missing or wrong admin key.

    Raises:
        HTTPException: 503 when no key is configured, 401 with `WWW-Authenticate` when the key is wrong.
    """
    if not expected:
        raise HTTPException(503, "ADMIN_API_KEY is not configured on the server")
    if not key_matches(expected, presented_key(authorization, api_key)):
        raise HTTPException(401, "admin key missing or wrong", headers={"WWW-Authenticate": challenge})


# The three ways to present the key, declared for the OpenAPI document (any one of them will do);
# `require_admin` reads the headers itself, so a request is judged the same whichever it uses.
BEARER = HTTPBearer(auto_error=False, scheme_name="AdminBearer", description="`Authorization: Bearer <ADMIN_API_KEY>`")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="AdminApiKey", description="The admin key")
BASIC = HTTPBasic(auto_error=False, scheme_name="AdminBasic", description="Any user name, the admin key as password")

# What every admin route may answer besides its own statuses.
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Admin key missing or wrong (`WWW-Authenticate` says how to send it)"},
    503: {"model": ErrorOut, "description": "No ADMIN_API_KEY is configured on the server"},
}


def require_admin(
    request: Request,
    services: JobServicesDep,
    _bearer: Annotated[Any, Security(BEARER)] = None,
    _api_key: Annotated[Any, Security(API_KEY)] = None,
    _basic: Annotated[Any, Security(BASIC)] = None,
) -> None:
    key = services.settings.admin_api_key
    check_admin(
        key.get_secret_value() if key else None,
        request.headers.get("authorization"),
        request.headers.get("x-api-key"),
        BEARER_CHALLENGE,
    )


AdminDep = Annotated[None, Depends(require_admin)]
