"""What every entry point does first: read the settings (or stop, naming the bad variable) and set up logging."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from core.errors import ConfigurationError
from core.settings import Settings, get_settings

LOG_FORMAT = "%(asctime)s %(name)s %(message)s"
EXIT_CONFIGURATION = 2  # a bad setting: restarting will not help


def settings_or_exit(program: str) -> Settings:
    """The settings; on a bad value prints `<program>: invalid configuration: VAR: why` and exits 2."""
    try:
        return get_settings()
    except ConfigurationError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIGURATION) from None


def configure_logging(settings: Settings, stream: TextIO = sys.stdout) -> None:
    """Log lines to stdout (stderr for commands whose stdout is their result), at `LOG_LEVEL`."""
    logging.basicConfig(level=settings.log_level, stream=stream, format=LOG_FORMAT)
