"""Types shared by every analyzer: the progress callback and the `Analyzer` protocol.

An analyzer turns one stored audio file into a JSON-serializable dict. It reports progress through
a callback so the job system can show it and cancel the job: when the callback raises, the analyzer
lets the exception propagate and stops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ProgressFn = Callable[[int, str], None]
"""Called as `progress(percent, message)`: percent in 0-100, message a short human log line."""


class Analyzer(Protocol):
    """Anything that can analyze a stored audio file."""

    def analyze(self, path: Path, progress: ProgressFn) -> dict[str, Any]:
        """Analyze the audio file at `path` and return a JSON-serializable result.

        Args:
            path: The stored audio file.
            progress: Called with (percent, message) as the work advances; never with 100,
                the caller reports that once the result is saved. Exceptions it raises propagate.

        Returns:
            The analysis result, made of plain JSON types.

        Raises:
            core.errors.JobError: A subclass saying whether running the job again can help.
        """
        ...
