"""Analyzers: local DSP (default) or an external analysis server (`ANALYSIS_SERVER_URL`)."""

from __future__ import annotations

from core.settings import Settings
from tasks.analyzers.base import Analyzer, ProgressFn

__all__ = ["Analyzer", "ProgressFn", "build_analyzer"]


def build_analyzer(settings: Settings) -> Analyzer:
    if settings.analysis_server_url:
        from tasks.analyzers.http import HttpAnalyzer

        return HttpAnalyzer(settings.analysis_server_url, settings.analysis_server_timeout_s)
    from tasks.analyzers.local import LocalAnalyzer

    return LocalAnalyzer()
