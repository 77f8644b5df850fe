"""Synthesized files on which the local analyzer is compared with its recorded reference results.

`local_analyzer_reference.json` holds what the analyzer gave on each case before the spectrum and
the pitch were bounded to a fixed number of frames (commit bfb5679: 400 pitch frames, every FFT
frame of the file). Recording it again: `.venv/bin/python -m tests.unit.tasks.reference_cases`
prints the current analyzer's results as that JSON (only ever done with the reference commit
checked out, when cases are added).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks.analyzers.local import LocalAnalyzer
from tests.support.audio import FloatArray, encode, silence, tone

REFERENCE_PATH = Path(__file__).with_name("local_analyzer_reference.json")


def _noise(seconds: float, sample_rate: int, std: float, seed: int) -> FloatArray:
    return np.clip(np.random.default_rng(seed).normal(0.0, std, round(seconds * sample_rate)), -1.0, 1.0)


def _chord(freqs_hz: tuple[float, ...], seconds: float, sample_rate: int) -> FloatArray:
    mixed = sum(tone(freq, -6.0, seconds, sample_rate) for freq in freqs_hz)
    return np.asarray(0.5 * mixed / np.max(np.abs(mixed)), dtype=np.float64)


def _harmonic(seconds: float, sample_rate: int) -> FloatArray:
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    weights = {1: 0.2, 2: 0.5, 3: 1.0, 4: 0.4, 5: 0.3}
    signal = sum(w * np.sin(2 * np.pi * 150.0 * k * t + k) for k, w in weights.items())
    return np.asarray(0.5 * signal / np.max(np.abs(signal)), dtype=np.float64)


def _vibrato(seconds: float, sample_rate: int) -> FloatArray:
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    # 440 Hz +- 6 Hz at 5 Hz: the phase is the integral of the frequency.
    phase = 2 * np.pi * 440.0 * t - (6.0 / 5.0) * np.cos(2 * np.pi * 5.0 * t)
    return 0.5 * np.sin(phase)


def _mixed_stereo() -> FloatArray:
    left = np.concatenate((silence(0.7, 22050), tone(330.0, -12.0, 1.3, 22050), _noise(0.5, 22050, 0.1, 99)))
    return np.stack((left, 0.5 * left), axis=1)


def _long_mixed(sample_rate: int) -> FloatArray:
    """40 s: a 220 Hz tone, silence, noise, a 440 Hz tone twice as long, with a clipped burst."""
    parts = [
        tone(220.0, -12.0, 10.0, sample_rate),
        silence(5.0, sample_rate),
        _noise(5.0, sample_rate, 0.05, 7),
        tone(440.0, -6.0, 18.0, sample_rate),
        np.clip(tone(440.0, 6.0, 2.0, sample_rate), -1.0, 1.0),
    ]
    mono = np.concatenate(parts)
    return np.stack((mono, 0.8 * mono), axis=1)


def _speech_like(sample_rate: int) -> FloatArray:
    """30 s of 200 ms notes (one of three pitches, 2:1:1) between 100 ms pauses, over faint noise."""
    rng = np.random.default_rng(5)
    notes = []
    for index in range(100):
        freq = (180.0, 180.0, 240.0, 300.0)[int(rng.integers(0, 4))]
        notes += [_harmonic(0.2, sample_rate) if index % 10 == 0 else tone(freq, -12.0, 0.2, sample_rate)]
        notes += [silence(0.1, sample_rate)]
    return np.concatenate(notes) + _noise(30.0, sample_rate, 0.001, 11)


# name -> the file's bytes
CASES: dict[str, Callable[[], bytes]] = {
    "sine 440 Hz -6 dBFS 44.1 kHz": lambda: encode(tone(440.0)),
    "sine 100 Hz 8 kHz 2 s": lambda: encode(tone(100.0, seconds=2.0, sample_rate=8000), 8000),
    "sine 1234.5 Hz 48 kHz 24-bit": lambda: encode(tone(1234.5, sample_rate=48000), 48000, subtype="PCM_24"),
    "sine 3000 Hz 22.05 kHz": lambda: encode(tone(3000.0, sample_rate=22050), 22050),
    "sine 440 Hz float 32": lambda: encode(tone(440.0, -3.0, 1.5), subtype="FLOAT"),
    "sine 440 Hz 8-bit": lambda: encode(tone(440.0), subtype="PCM_U8"),
    "sine 440 Hz stereo 10 s": lambda: encode(tone(440.0, seconds=10.0, channels=2)),
    "sine 440 Hz FLAC": lambda: encode(tone(440.0, seconds=2.0), fmt="FLAC"),
    "sine 1000 Hz OGG": lambda: encode(tone(1000.0, seconds=2.0), fmt="OGG"),
    "sine 440 Hz MP3": lambda: encode(tone(440.0, seconds=2.0), fmt="MP3"),
    "A major chord 3 s": lambda: encode(_chord((440.0, 554.37, 659.25), 3.0, 44100)),
    "harmonic tone 150 Hz": lambda: encode(_harmonic(1.0, 44100)),
    "vibrato 440 Hz 12 s": lambda: encode(_vibrato(12.0, 44100)),
    "white noise": lambda: encode(_noise(2.0, 44100, 0.2, 12345)),
    "quiet noise 30 s": lambda: encode(_noise(30.0, 22050, 0.01, 3), 22050),
    "digital silence": lambda: encode(silence(1.0)),
    "tone under the silence threshold": lambda: encode(tone(440.0, -60.0), subtype="PCM_24"),
    "clipped sine": lambda: encode(np.clip(tone(440.0, 6.0), -1.0, 1.0)),
    "clipped sine 8-bit": lambda: encode(np.clip(tone(440.0, 6.0), -1.0, 1.0), subtype="PCM_U8"),
    "silence, tone and noise, stereo 24-bit": lambda: encode(_mixed_stereo(), 22050, subtype="PCM_24"),
    "long mixed stereo 40 s": lambda: encode(_long_mixed(44100)),
    "long mixed stereo 40 s 48 kHz FLAC": lambda: encode(_long_mixed(48000), 48000, "FLAC"),
    "notes and pauses 30 s": lambda: encode(_speech_like(16000), 16000),
    "very short 10 ms": lambda: encode(tone(440.0, seconds=0.01)),
    "short 100 ms at 1 kHz": lambda: encode(tone(1000.0, seconds=0.1)),
}


def analyze_case(name: str, directory: Path) -> dict[str, Any]:
    """The local analyzer's result on the case `name`, its file written under `directory`."""
    path = directory / "case.audio"
    path.write_bytes(CASES[name]())
    return LocalAnalyzer().analyze(path, lambda percent, message: None)


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        results = {name: analyze_case(name, Path(directory)) for name in CASES}
    json.dump(results, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
