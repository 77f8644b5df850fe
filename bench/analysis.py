"""The local analyzer alone on 10 s stereo, 60 s and 10 min mono: time per analysis and peak memory growth.

`bench/run.py --analysis-only` runs only this (about a minute); the full run includes it. Each analyzer
runs in a process of its own that serves analyses on request, so `--analysis-baseline REV` can run the
analyzer of another commit (`git archive REV core tasks`) in the same run, interleaved with this one,
for before/after figures. Times are the min/median/max of repeated runs, interleaved across files and
analyzers so a burst of load on the shared machine hits them all. Peak memory growth is measured in
a fresh process per file, warmed up on a 0.1 s file: the growth of its RSS high-water mark during one
analysis (Linux; the mark is reset through /proc/self/clear_refs, and it counts everything, libsndfile's
buffers too), and the peak tracemalloc sees (Python and numpy allocations) during one more, kept apart
because tracing slows allocations down.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import soundfile as sf

from bench.report import RESULTS_DIR, load_average, machine_info
from tests.support.audio import tone

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE_HZ = 44_100
TONE_HZ = 440.0
TONE_LEVEL_DBFS = -6.0
WARMUP_RUNS = 1  # the first run pays for imports, FFT plans and a cold page cache
PROBE_TIMEOUT_S = 120.0
# The goals (issue 12): median time per file, and peak memory growth whatever the length.
GOAL_MS = {"10 s stereo": 25.0, "10 min mono": 250.0}
GOAL_PEAK_MB = 30.0
CURRENT = "this tree"

# The analyzer's server, run as `python -c PROBE ROOT` with ROOT first on sys.path: one command a line
# on stdin ("time PATH" or "memory PATH"), one JSON answer a line on stdout.
PROBE = """
import json, re, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tasks.analyzers.local import LocalAnalyzer

def status_kb(field):
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

analyzer = LocalAnalyzer()
quiet = lambda percent, message: None
for line in sys.stdin:
    command, path = line.rstrip("\\n").split(" ", 1)
    if command == "time":
        wall, cpu = time.perf_counter(), time.process_time()
        analyzer.analyze(Path(path), quiet)
        answer = {"wall_ms": (time.perf_counter() - wall) * 1e3, "cpu_ms": (time.process_time() - cpu) * 1e3}
    else:
        resident = status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current RSS
        analyzer.analyze(Path(path), quiet)
        rss_kb = status_kb("VmHWM") - resident
        tracemalloc.start()
        analyzer.analyze(Path(path), quiet)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        answer = {"rss_mb": rss_kb / 1024, "traced_mb": traced / 2**20}
    print(json.dumps(answer), flush=True)
"""


class Probe:
    """A process running the analyzer found under `root`, answering one request at a time."""

    def __init__(self, root: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", PROBE, str(root)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str, path: Path) -> dict[str, float]:
        stdin, stdout = self._pipes()
        stdin.write(f"{command} {path}\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the analyzer probe exited with {self._process.wait(PROBE_TIMEOUT_S)}")
        answer: dict[str, float] = json.loads(line)
        return answer

    def close(self) -> None:
        stdin, _ = self._pipes()
        stdin.close()
        self._process.wait(PROBE_TIMEOUT_S)

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        return self._process.stdin, self._process.stdout


def checkout(revision: str, directory: Path) -> Path:
    """The analyzer (`core` and `tasks`) of `revision` extracted under `directory`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "core", "tasks"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=PROBE_TIMEOUT_S,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


@dataclass(frozen=True)
class AudioCase:
    """One file to analyze: its label in the table, duration and channel count."""

    label: str
    seconds: float
    channels: int


CASES = (AudioCase("10 s stereo", 10, 2), AudioCase("60 s mono", 60, 1), AudioCase("10 min mono", 600, 1))
WARMUP_CASE = AudioCase("0.1 s stereo", 0.1, 2)


@dataclass(frozen=True)
class AnalysisRow:
    """Times (ms) of the analyses of one file by one analyzer, and the peak memory growth (MB) of one more.

    `cpu_samples_ms` is the CPU time of the analyzer's process during each analysis: on a shared machine
    it is less inflated by other people's load than the wall-clock time (`samples_ms`). `rss_peak_mb`
    is the growth of the RSS high-water mark, `peak_mb` the peak of tracemalloc's count.
    """

    label: str
    file_mb: float
    samples_ms: list[float] = field(repr=False)
    cpu_samples_ms: list[float] = field(repr=False)
    peak_mb: float
    rss_peak_mb: float = 0.0
    analyzer: str = CURRENT

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
    whole_seconds, rest = divmod(round(case.seconds * SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
    second = tone(TONE_HZ, TONE_LEVEL_DBFS, 1.0, SAMPLE_RATE_HZ, case.channels)  # whole periods: seamless
    with sf.SoundFile(path, "w", SAMPLE_RATE_HZ, case.channels, "PCM_16", format="WAV") as sound:
        for _ in range(whole_seconds):
            sound.write(second)
        sound.write(second[:rest])
    return path


def run_analysis(directory: Path, runs: int, baseline: str | None = None) -> list[AnalysisRow]:
    """Writes the files under `directory`, then times `runs` analyses of each, interleaved.

    With `baseline` (a git revision), its analyzer runs too, interleaved with this tree's; its rows
    come first.
    """
    directory.mkdir(parents=True, exist_ok=True)
    roots = {CURRENT: PROJECT_ROOT}
    if baseline is not None:
        roots = {baseline: checkout(baseline, directory / "baseline"), **roots}
    paths = {case.label: write_tone(directory / f"tone-{case.seconds}s-{case.channels}ch.wav", case) for case in CASES}
    warmup = write_tone(directory / "warm-up.wav", WARMUP_CASE)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {(a, c): [] for a in roots for c in paths}
    probes = {name: Probe(root) for name, root in roots.items()}
    try:
        for probe in probes.values():
            for path in (warmup, *paths.values()):
                for _ in range(WARMUP_RUNS):
                    probe.ask("time", path)
        for _ in range(runs):
            for label, path in paths.items():
                for name, probe in probes.items():
                    samples[name, label].append(probe.ask("time", path))
    finally:
        for probe in probes.values():
            probe.close()
    rows = []
    for name, root in roots.items():
        for label, path in paths.items():
            memory = _memory(root, warmup, path)
            times = samples[name, label]
            wall, cpu = [s["wall_ms"] for s in times], [s["cpu_ms"] for s in times]
            rows.append(
                AnalysisRow(label, path.stat().st_size / 1e6, wall, cpu, memory["traced_mb"], memory["rss_mb"], name)
            )
    return rows


def _memory(root: Path, warmup: Path, path: Path) -> dict[str, float]:
    """Peak memory growth of one analysis of `path` in a fresh process that has analyzed `warmup` only."""
    probe = Probe(root)
    try:
        probe.ask("time", warmup)
        return probe.ask("memory", path)
    finally:
        probe.close()


def format_analysis_table(rows: list[AnalysisRow]) -> str:
    """The rows as an aligned table, the goals next to the measures they concern, before/after ratios."""
    header = f"{'analysis (LocalAnalyzer)':<34} {'file':>8} {'n':>3} {'min':>8} {'median':>8} {'max':>8}"
    lines = [f"{header} {'cpu med':>8} {'peak RSS':>9} {'traced':>8}  goal", "-" * 140]
    for row in rows:
        name = f"{row.label}" if row.analyzer == CURRENT else f"{row.label} ({row.analyzer})"
        goal = f"median <= {GOAL_MS[row.label]:g} ms, " if row.label in GOAL_MS else ""
        met = row.label not in GOAL_MS or row.median_ms <= GOAL_MS[row.label]
        met = met and max(row.peak_mb, row.rss_peak_mb) <= GOAL_PEAK_MB
        lines.append(
            f"{name:<34} {row.file_mb:>6.1f}MB {len(row.samples_ms):>3} "
            f"{row.min_ms:>6.1f}ms {row.median_ms:>6.1f}ms {row.max_ms:>6.1f}ms {row.median_cpu_ms:>6.1f}ms "
            f"{row.rss_peak_mb:>7.1f}MB {row.peak_mb:>6.1f}MB  "
            f"{goal}peak <= {GOAL_PEAK_MB:g} MB: {'met' if met else 'MISSED'}"
        )
    current = {row.label: row for row in rows if row.analyzer == CURRENT}
    for row in rows:
        if row.analyzer != CURRENT and row.label in current:
            after = current[row.label]
            lines.append(
                f"{row.label}: {row.analyzer} -> {CURRENT}: median {row.median_ms:.1f} -> {after.median_ms:.1f} ms "
                f"({row.median_ms / after.median_ms:.2f}x), "
                f"CPU {row.median_cpu_ms:.1f} -> {after.median_cpu_ms:.1f} ms "
                f"({row.median_cpu_ms / after.median_cpu_ms:.2f}x)"
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


def analysis_main(runs: int, baseline: str | None = None) -> int:
    """`bench/run.py --analysis-only`: runs the analysis bench alone, prints its table, writes its JSON."""
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="audiokit-bench-analysis-") as directory:
        rows = run_analysis(Path(directory), runs, baseline)
    path = write_analysis_results(started_at, rows, runs)
    print(format_analysis_table(rows))
    print(f"\nload average {load_average()}; JSON: {path}")
    return 0
