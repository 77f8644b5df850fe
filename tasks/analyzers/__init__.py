"""Analyzers: local DSP (default) or an external analysis server (`ANALYSIS_SERVER_URL`).

Importing this package imports everything an analysis uses, so that a worker, which imports it (`workers.preload`)
before it forks, hands its work-horses a warm interpreter: `tasks.analyzers.local` with
`levels`, `spectrum`, `pitch` and `frames`, and through them numpy (with `numpy.fft`, which numpy
itself loads only on first use), `soundfile` (with libsndfile and cffi) and `statistics`;
`tasks.analyzers.http` with httpx. `tests/unit/tasks/test_analyzer_imports.py` checks that analyzing
files of every supported format afterwards imports nothing more.
"""

from __future__ import annotations

from core.settings import Settings
from tasks.analyzers.base import Analyzer, ProgressFn
from tasks.analyzers.http import HttpAnalyzer
from tasks.analyzers.local import LocalAnalyzer

__all__ = ["Analyzer", "HttpAnalyzer", "LocalAnalyzer", "ProgressFn", "build_analyzer"]


def build_analyzer(settings: Settings) -> Analyzer:
    if settings.analysis_server_url:
        return HttpAnalyzer(settings.analysis_server_url, settings.analysis_server_timeout_s)
    return LocalAnalyzer()
