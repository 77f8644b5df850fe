"""Synthesized test audio: tones, silence, encoded files, and files that must fail.

Everything is deterministic (fixed phases, seeded RNG) so tests can compare exact values. Levels are
in dBFS with full scale 1.0: `tone(level_dbfs=-6.0)` has peak amplitude 10**(-6/20).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import numpy.typing as npt
import soundfile as sf

FloatArray = npt.NDArray[np.float64]

_GARBAGE_SEED = 20240229


def tone(
    freq_hz: float = 440.0,
    level_dbfs: float = -6.0,
    seconds: float = 1.0,
    sample_rate: int = 44100,
    channels: int = 1,
) -> FloatArray:
    """A sine starting at phase 0, the same on every channel.

    Returns:
        float64 samples of peak amplitude 10**(level_dbfs/20); shape (frames,) when mono,
        (frames, channels) otherwise, with frames = round(seconds * sample_rate).
    """
    frames = round(seconds * sample_rate)
    t = np.arange(frames, dtype=np.float64) / sample_rate
    mono = (10.0 ** (level_dbfs / 20.0)) * np.sin(2.0 * np.pi * freq_hz * t)
    return _with_channels(mono, channels)


def silence(seconds: float, sample_rate: int = 44100, channels: int = 1) -> FloatArray:
    """Digital silence (all zeros), shaped like `tone`."""
    return _with_channels(np.zeros(round(seconds * sample_rate), dtype=np.float64), channels)


def encode(data: FloatArray, sample_rate: int = 44100, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    """Encode samples into a file held in memory.

    Args:
        data: Samples shaped like `tone` returns them. libsndfile clips values outside [-1, 1] when
            writing integer subtypes; float subtypes keep them.
        sample_rate: In Hz.
        fmt: A soundfile format name: "WAV", "FLAC", "OGG" (Vorbis) or "MP3" (MPEG layer III).
        subtype: A soundfile subtype ("PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", ...);
            None for the format's default.

    Returns:
        The encoded file's bytes.
    """
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def wav_bytes(
    seconds: float = 1.0,
    freq_hz: float = 440.0,
    level_dbfs: float = -6.0,
    sample_rate: int = 44100,
    subtype: str = "PCM_16",
) -> bytes:
    """A mono WAV file holding a sine."""
    return encode(tone(freq_hz, level_dbfs, seconds, sample_rate), sample_rate, "WAV", subtype)


def flac_bytes(seconds: float = 1.0, freq_hz: float = 440.0) -> bytes:
    """A mono 44.1 kHz 16-bit FLAC file holding a -6 dBFS sine."""
    return encode(tone(freq_hz, seconds=seconds), 44100, "FLAC")


def mp3_bytes(seconds: float = 1.0, freq_hz: float = 440.0) -> bytes:
    """A mono 44.1 kHz MP3 file holding a -6 dBFS sine."""
    return encode(tone(freq_hz, seconds=seconds), 44100, "MP3")


def ogg_bytes(seconds: float = 1.0, freq_hz: float = 440.0) -> bytes:
    """A mono 44.1 kHz OGG/Vorbis file holding a -6 dBFS sine."""
    return encode(tone(freq_hz, seconds=seconds), 44100, "OGG")


def corrupt_audio_bytes() -> bytes:
    """A FLAC file whose header is intact and whose audio frames are garbage.

    `soundfile.info()` only parses the "fLaC" marker and the metadata blocks (STREAMINFO gives rate,
    channels, length), so it accepts the file; decoding the first frame fails with libsndfile's
    "flac decoder lost sync", which the local analyzer reports as CorruptAudio. The file keeps its
    original length, and the garbage is seeded, so it is the same on every call.
    """
    data = flac_bytes(seconds=1.0)
    audio_start = _flac_audio_offset(data)
    rng = np.random.default_rng(_GARBAGE_SEED)
    garbage = rng.integers(0, 256, size=len(data) - audio_start, dtype=np.uint8).tobytes()
    return data[:audio_start] + garbage


def not_audio_bytes() -> bytes:
    """A valid 1x1 PNG image: well-formed data that `soundfile.info()` rejects."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    pixels = zlib.compress(b"\x00\x80")  # filter type 0, one mid-grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _with_channels(mono: FloatArray, channels: int) -> FloatArray:
    if channels < 1:
        raise ValueError(f"channels must be at least 1, not {channels}")
    if channels == 1:
        return mono
    return np.repeat(mono[:, np.newaxis], channels, axis=1)


def _flac_audio_offset(data: bytes) -> int:
    """Offset of the first audio frame of a FLAC file: just after its last metadata block."""
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC stream")
    offset = 4
    while True:
        block_header = data[offset]
        length = int.from_bytes(data[offset + 1 : offset + 4], "big")
        offset += 4 + length
        if block_header & 0x80:  # "last metadata block" flag
            return offset
