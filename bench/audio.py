"""The audio the benchmarks use: 44.1 kHz stereo tones, written once per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.audio import encode, tone

SAMPLE_RATE_HZ = 44_100
CHANNELS = 2
TONE_HZ = 440.0
TONE_LEVEL_DBFS = -6.0
SHORT_AUDIO_S = 10.0
LONG_AUDIO_S = 60.0


@dataclass(frozen=True)
class AudioFile:
    """A file on disk and the words the table uses for it."""

    label: str
    path: Path

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def write_audio(directory: Path, seconds: float, fmt: str, subtype: str | None = None) -> AudioFile:
    """Writes a stereo -6 dBFS 440 Hz tone of `seconds` in `fmt` ("WAV" 16-bit, "MP3") under `directory`."""
    data = encode(tone(TONE_HZ, TONE_LEVEL_DBFS, seconds, SAMPLE_RATE_HZ, CHANNELS), SAMPLE_RATE_HZ, fmt, subtype)
    extension = fmt.lower()
    path = directory / f"tone-{seconds:g}s.{extension}"
    path.write_bytes(data)
    return AudioFile(f"{seconds:g} s {fmt}", path)


def benchmark_files(directory: Path) -> list[AudioFile]:
    """The analyzer's inputs: a 10 s and a 60 s WAV (PCM 16-bit) and a 10 s MP3, all 44.1 kHz stereo."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_audio(directory, SHORT_AUDIO_S, "WAV", "PCM_16"),
        write_audio(directory, LONG_AUDIO_S, "WAV", "PCM_16"),
        write_audio(directory, SHORT_AUDIO_S, "MP3"),
    ]
