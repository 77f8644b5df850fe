"""One TLS context for every outgoing HTTP request of a process (callbacks, the analysis server).

httpx builds a new context, loading the whole CA bundle, for every client or transport made without
one: about 0.3 s of CPU each time, which was most of a short job's cost (10 analyses through the
HTTP analyzer spent 2.8 s there, and each callback delivery as much again). The context is built
once per process, on first use: a process that sends nothing (the API in RQ mode, the scheduler)
never loads the bundle, and workers build it before they fork (`workers.preload`), so every
work-horse shares it. An `SSLContext` holds configuration only, so sharing it across threads and
forks is safe.
"""

from __future__ import annotations

import ssl
from functools import cache


@cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS context for outgoing requests (built on the first call)."""
    import httpx  # here: a process that sends nothing need not import it

    return httpx.create_ssl_context()
