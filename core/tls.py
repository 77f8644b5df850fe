"""One TLS context for every outgoing HTTP request of a process (callbacks, the analysis server).

httpx builds a new context, loading the whole CA bundle, for every client or transport made without
one: about 0.3 s of CPU each time, which was most of a short job's cost (10 analyses through the
HTTP analyzer spent 2.8 s there, and each callback delivery as much again). The context is built
once at import; workers import it before they fork, so every work-horse shares it. An `SSLContext`
holds configuration only, so sharing it across threads and forks is safe.
"""

from __future__ import annotations

import ssl

import httpx

TLS_CONTEXT: ssl.SSLContext = httpx.create_ssl_context()
