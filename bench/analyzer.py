"""Phase 1: the local analyzer alone, in this process (no API, no queue, no database)."""

from __future__ import annotations

import time

from bench.audio import AudioFile
from bench.stats import Row, summarize
from tasks.analyzers.local import LocalAnalyzer

WARMUP_RUNS = 1  # the first run pays for imports, libsndfile's codec set-up and cold page cache


def _ignore_progress(percent: int, message: str) -> None:
    del percent, message


def time_analysis(audio: AudioFile, runs: int) -> list[float]:
    """Milliseconds of `LocalAnalyzer().analyze` over `runs` runs (after the warm-up)."""
    analyzer = LocalAnalyzer()
    samples_ms = []
    for index in range(WARMUP_RUNS + runs):
        started = time.perf_counter()
        analyzer.analyze(audio.path, _ignore_progress)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if index >= WARMUP_RUNS:
            samples_ms.append(elapsed_ms)
    return samples_ms


def analyzer_rows(files: list[AudioFile], runs: int) -> list[Row]:
    """One row per file: median and p90 analysis time."""
    rows = []
    for audio in files:
        notes = f"in-process LocalAnalyzer, 44.1 kHz stereo, {audio.size_bytes / 1e6:.2f} MB, no-op progress"
        rows.append(summarize(f"analyze {audio.label}", time_analysis(audio, runs), "ms", notes))
    return rows
