"""Analysis delegated to an external HTTP analysis server.

The stored file is POSTed as the multipart field `file`; the server answers with a JSON object,
which becomes the analysis result as is. Failures map onto the job outcomes of `core.errors`:

- timeouts, connection failures, 5xx and malformed answers -> AnalysisServerUnavailable (retried);
- 4xx -> AnalysisRejected (the server refused this file; retrying cannot help).

A 2xx answer that is not a JSON object counts as the server's fault, not the file's: such answers
come from server bugs, proxies answering with an HTML page, or cut-off responses, all of which a
later attempt may not hit. So the job is retried (with backoff, a bounded number of times) rather
than failing the upload for good.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (httpx loads these on its first request: loaded here, before a worker forks)
import re
from pathlib import Path
from typing import Any

import certifi  # noqa: F401
import httpcore  # noqa: F401
import httpx

from core.errors import AnalysisRejected, AnalysisServerUnavailable
from core.tls import tls_context
from tasks.analyzers.base import ProgressFn

# Longest excerpt of a refusal's body kept in the error message: enough for a one-line reason,
# short enough to show to a user.
MAX_REASON_CHARS = 200
# Connection attempts retried by the transport when the connection cannot be established: cheap
# (nothing was sent), and it absorbs a server that is restarting.
CONNECT_RETRIES = 1

UPLOAD_PROGRESS = 10
ANSWER_PROGRESS = 90

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class HttpAnalyzer:
    """Sends the file to an external analysis server and returns its JSON answer."""

    def __init__(self, url: str, timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        """Configure the analyzer.

        Args:
            url: The endpoint the file is POSTed to.
            timeout_s: Limit for each phase of the request (connect, write, each read, pool).
            transport: An httpx transport to use instead of the network (tests use `httpx.MockTransport`).
        """
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport

    def analyze(self, path: Path, progress: ProgressFn) -> dict[str, Any]:
        """Upload the file at `path` and return the server's result.

        Args:
            path: The stored audio file.
            progress: Called with (percent, message); exceptions it raises propagate.

        Returns:
            The JSON object the server answered with.

        Raises:
            AnalysisServerUnavailable: Timeout, connection failure, 5xx or a malformed answer.
            AnalysisRejected: The server refused the file (4xx).
            OSError: The stored file cannot be read.
        """
        progress(UPLOAD_PROGRESS, "uploading to analysis server")
        response = self._post(path)
        progress(ANSWER_PROGRESS, "analysis server answered")
        return self._result(response, path)

    def _post(self, path: Path) -> httpx.Response:
        transport = self.transport or httpx.HTTPTransport(retries=CONNECT_RETRIES, verify=tls_context())
        timeout = httpx.Timeout(self.timeout_s)
        with path.open("rb") as stream, httpx.Client(transport=transport, timeout=timeout) as client:
            # httpx streams the file object in chunks, so large uploads are not loaded in memory.
            files = {"file": (path.name, stream, "application/octet-stream")}
            try:
                return client.post(self.url, files=files)
            except httpx.TimeoutException as exc:
                raise AnalysisServerUnavailable(f"analysis server did not answer within {self.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise AnalysisServerUnavailable(f"analysis server unreachable ({type(exc).__name__})") from exc

    def _result(self, response: httpx.Response, path: Path) -> dict[str, Any]:
        status = response.status_code
        if 400 <= status < 500:
            reason = _excerpt(response.text, path)
            suffix = f": {reason}" if reason else ""
            raise AnalysisRejected(f"analysis server rejected the file (HTTP {status}){suffix}")
        if status >= 500:
            raise AnalysisServerUnavailable(f"analysis server failed (HTTP {status})")
        if not 200 <= status < 300:
            # Redirects are not followed: the configured URL is wrong or the server is misconfigured.
            raise AnalysisServerUnavailable(f"analysis server answered with unexpected HTTP {status}")
        try:
            result = response.json()
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for undecodable bytes
            raise AnalysisServerUnavailable("analysis server answered with invalid JSON") from exc
        if not isinstance(result, dict):
            raise AnalysisServerUnavailable("analysis server answered with JSON that is not an object")
        return result


def _excerpt(text: str, path: Path) -> str:
    """A short, single-line excerpt of a server's text, without control characters or the file's name."""
    text = _CONTROL_CHARS.sub(" ", text)
    for secret in (str(path), path.name):
        if secret:
            text = text.replace(secret, "<file>")
    text = " ".join(text.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text
