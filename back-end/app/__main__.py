"""`python -m app`: the API under uvicorn, on `HOST`:`PORT` from the settings."""

from __future__ import annotations

import sys

import uvicorn

from app.server import protocol_with_header_timeout
from core.startup import settings_or_exit

GRACEFUL_SHUTDOWN_S = 10  # in-flight requests get this long; in-process jobs left are re-run by the reconciler


def main() -> int:
    settings = settings_or_exit("api")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Slow clients: headers must arrive in time (here), bodies too (app.upload); idle
        # keep-alive connections close after uvicorn's timeout_keep_alive (5 s).
        http=protocol_with_header_timeout(settings.request_header_timeout_s),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
