"""The local analyzer alone on 10 s stereo, 60 s and 10 min mono: time per analysis and peak memory growth.

`bench/run.py --analysis-only` runs only this (under a minute); the full run includes it. Times are the
min/median/max of repeated runs, interleaved across the files so a burst of load on the shared machine
hits them all; peak memory is the growth tracemalloc sees (numpy allocations included) during one more
run, kept apart because tracing slows allocations down.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.report import RESULTS_DIR, load_average, machine_info
from tasks.analyzers.local import LocalAnalyzer
from tests.support.audio import tone

SAMPLE_RATE_HZ = 44_100
TONE_HZ = 440.0
TONE_LEVEL_DBFS = -6.0
WARMUP_RUNS = 1  # the first run pays for imports, FFT plans and a cold page cache
# The goals (issue 12): median time per file, and peak memory growth whatever the length.
GOAL_MS = {"10 s stereo": 25.0, "10 min mono": 250.0}
GOAL_PEAK_MB = 30.0


@dataclass(frozen=True)
class AudioCase:
    """One file to analyze: its label in the table, duration and channel count."""

    label: str
    seconds: int
    channels: int


CASES = (AudioCase("10 s stereo", 10, 2), AudioCase("60 s mono", 60, 1), AudioCase("10 min mono", 600, 1))


@dataclass(frozen=True)
class AnalysisRow:
    """Times (ms) of the analyses of one file, and the peak memory growth (MB) of one more.

    `cpu_samples_ms` is the CPU time of this process during each analysis: on a shared machine it is
    less inflated by other people's load than the wall-clock time (`samples_ms`).
    """

    label: str
    file_mb: float
    samples_ms: list[float] = field(repr=False)
    cpu_samples_ms: list[float] = field(repr=False)
    peak_mb: float

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    @property
    def median_cpu_ms(self) -> float:
        return statistics.median(self.cpu_samples_ms)

    def as_json(self) -> dict[str, Any]:
        summary = {"min_ms": self.min_ms, "median_ms": self.median_ms, "max_ms": self.max_ms}
        return {**asdict(self), **summary, "median_cpu_ms": self.median_cpu_ms}


def write_tone(path: Path, case: AudioCase) -> Path:
    """A 16-bit WAV of a -6 dBFS 440 Hz tone (voiced throughout: the pitch estimate's worst case)."""
    second = tone(TONE_HZ, TONE_LEVEL_DBFS, 1.0, SAMPLE_RATE_HZ, case.channels)  # whole periods: seamless
    with sf.SoundFile(path, "w", SAMPLE_RATE_HZ, case.channels, "PCM_16", format="WAV") as sound:
        for _ in range(case.seconds):
            sound.write(second)
    return path


def _ignore_progress(percent: int, message: str) -> None:
    del percent, message


def _time_ms(analyzer: LocalAnalyzer, path: Path) -> tuple[float, float]:
    """Wall-clock and CPU milliseconds of one analysis."""
    started, cpu_started = time.perf_counter(), time.process_time()
    analyzer.analyze(path, _ignore_progress)
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000


def _peak_mb(analyzer: LocalAnalyzer, path: Path) -> float:
    tracemalloc.start()
    try:
        analyzer.analyze(path, _ignore_progress)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak_bytes / 2**20


def run_analysis(directory: Path, runs: int) -> list[AnalysisRow]:
    """Writes the files under `directory`, then times `runs` analyses of each, interleaved."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {case.label: write_tone(directory / f"tone-{case.seconds}s-{case.channels}ch.wav", case) for case in CASES}
    analyzer = LocalAnalyzer()
    for path in paths.values():
        for _ in range(WARMUP_RUNS):
            analyzer.analyze(path, _ignore_progress)
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
    for _ in range(runs):
        for label, path in paths.items():
            samples[label].append(_time_ms(analyzer, path))
    return [
        AnalysisRow(
            label,
            path.stat().st_size / 1e6,
            [wall for wall, _ in samples[label]],
            [cpu for _, cpu in samples[label]],
            _peak_mb(analyzer, path),
        )
        for label, path in paths.items()
    ]


def format_analysis_table(rows: list[AnalysisRow]) -> str:
    """The rows as an aligned table, with the goals next to the measures they concern."""
    header = f"{'analysis (LocalAnalyzer)':<26} {'file':>8} {'n':>3} {'min':>8} {'median':>8} {'max':>8}"
    lines = [f"{header} {'cpu med':>8} {'peak mem':>9}  goal", "-" * 112]
    for row in rows:
        goal = f"median <= {GOAL_MS[row.label]:g} ms, " if row.label in GOAL_MS else ""
        lines.append(
            f"{row.label + ', 44.1 kHz WAV':<26} {row.file_mb:>6.1f}MB {len(row.samples_ms):>3} "
            f"{row.min_ms:>6.1f}ms {row.median_ms:>6.1f}ms {row.max_ms:>6.1f}ms {row.median_cpu_ms:>6.1f}ms "
            f"{row.peak_mb:>7.1f}MB  "
            f"{goal}peak <= {GOAL_PEAK_MB:g} MB"
        )
    return "\n".join(lines)


def write_analysis_results(started_at: datetime, rows: list[AnalysisRow], runs: int) -> Path:
    """Writes `bench/results/analysis-<UTC timestamp>.json` and `analysis-latest.json`; returns the first."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at.isoformat(),
        "runs": runs,
        "machine": machine_info(),
        "load_average": load_average(),
        "rows": [row.as_json() for row in rows],
    }
    text = json.dumps(document, indent=2) + "\n"
    path = RESULTS_DIR / f"analysis-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (RESULTS_DIR / "analysis-latest.json").write_text(text)
    return path


def analysis_main(runs: int) -> int:
    """`bench/run.py --analysis-only`: runs the analysis bench alone, prints its table, writes its JSON."""
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="audiokit-bench-analysis-") as directory:
        rows = run_analysis(Path(directory), runs)
    path = write_analysis_results(started_at, rows, runs)
    print(format_analysis_table(rows))
    print(f"\nload average {load_average()}; JSON: {path}")
    return 0
