"""`python -m app`: the API under uvicorn, on `HOST`:`PORT` from the settings."""

from __future__ import annotations

import socket
import sys

import uvicorn

from app.server import protocol_with_header_timeout
from core.startup import configure_logging, settings_or_exit
from jobs.inprocess import stop_waiting_everywhere

GRACEFUL_SHUTDOWN_S = 10  # in-flight requests get this long (in-process jobs do not hold them: see `Server`)


class Server(uvicorn.Server):
    """uvicorn's server; when it starts to stop, requests stop waiting for their in-process jobs at once
    (the jobs are then stopped deliberately by the app's shutdown, `jobs.inprocess.InProcessRunner.aclose`),
    instead of holding the server until its graceful timeout and being cancelled."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_waiting_everywhere()
        await super().shutdown(sockets)


def main() -> int:
    settings = settings_or_exit("api")
    configure_logging(settings)  # the app's own lines (uvicorn configures only its loggers)
    config = uvicorn.Config(
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
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
