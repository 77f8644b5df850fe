"""Importing `tasks.analyzers` loads every module an analysis (local or HTTP) uses: a forked job imports nothing.

A worker imports the task modules before it forks; whatever an analysis imports on first use instead
(numpy loads `numpy.fft` and `numpy.ma` lazily, for instance) is paid again by every forked job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.settings import PROJECT_ROOT
from tests.support.audio import corrupt_audio_bytes, encode, flac_bytes, mp3_bytes, ogg_bytes, silence, tone

# Runs in a fresh interpreter: import the package, then analyze every file and list what got imported.
PROBE = """
import json, sys
from pathlib import Path

import tasks.analyzers

before = set(sys.modules)
from tasks.analyzers.http import HttpAnalyzer
from tasks.analyzers.local import LocalAnalyzer

analyzer = LocalAnalyzer()
for name in sys.argv[1:]:
    try:
        analyzer.analyze(Path(name), lambda percent, message: None)
    except Exception as exc:
        if type(exc).__name__ != "CorruptAudio":
            raise
try:
    # A port nothing listens on: the request fails once the client and its transport are built.
    HttpAnalyzer("http://127.0.0.1:9/analyze", 5.0).analyze(Path(sys.argv[1]), lambda percent, message: None)
except Exception as exc:
    if type(exc).__name__ != "AnalysisServerUnavailable":
        raise
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _files(directory: Path) -> list[Path]:
    stereo = tone(440.0, -6.0, 1.0, 44100, 2)
    contents = {
        "pcm16.wav": encode(stereo, 44100, "WAV", "PCM_16"),
        "pcm24.wav": encode(stereo, 48000, "WAV", "PCM_24"),
        "u8.wav": encode(tone(220.0, -6.0, 0.5, 8000), 8000, "WAV", "PCM_U8"),
        "float.wav": encode(stereo, 44100, "WAV", "FLOAT"),
        "silence.wav": encode(silence(0.3), 44100, "WAV", "PCM_16"),
        "short.wav": encode(tone(440.0, -6.0, 0.01), 44100, "WAV", "PCM_16"),
        "tone.flac": flac_bytes(),
        "tone.ogg": ogg_bytes(),
        "tone.mp3": mp3_bytes(),
        "corrupt.wav": corrupt_audio_bytes(),
    }
    paths = []
    for name, data in contents.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_an_analysis_imports_nothing_that_importing_the_package_did_not(tmp_path: Path) -> None:
    files = _files(tmp_path)

    completed = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, files)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )

    assert json.loads(completed.stdout) == []
