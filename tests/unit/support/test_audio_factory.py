"""The test-audio factory produces what it promises, including files that must fail in a precise way."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from core.errors import CorruptAudio
from tasks.analyzers.local import LocalAnalyzer
from tests.support.audio import (
    corrupt_audio_bytes,
    encode,
    flac_bytes,
    mp3_bytes,
    not_audio_bytes,
    ogg_bytes,
    silence,
    tone,
    wav_bytes,
)


def info(data: bytes) -> Any:
    return sf.info(io.BytesIO(data))


def test_mono_tone_is_float64_frames_long_with_the_requested_peak() -> None:
    samples = tone(440.0, level_dbfs=-6.0, seconds=0.5, sample_rate=8000)

    assert samples.dtype == np.float64
    assert samples.shape == (4000,)
    assert np.max(np.abs(samples)) == pytest.approx(10 ** (-6 / 20), rel=1e-4)
    assert samples[0] == 0.0


def test_multichannel_tone_repeats_the_signal_on_every_channel() -> None:
    samples = tone(1000.0, seconds=0.25, sample_rate=8000, channels=3)

    assert samples.shape == (2000, 3)
    assert np.array_equal(samples[:, 0], samples[:, 2])
    assert np.array_equal(samples[:, 0], tone(1000.0, seconds=0.25, sample_rate=8000))


def test_silence_is_all_zeros_shaped_like_a_tone() -> None:
    assert silence(0.5, 8000).shape == (4000,)
    assert silence(0.5, 8000, channels=2).shape == (4000, 2)
    assert not silence(0.5, 8000, channels=2).any()


def test_tone_refuses_zero_channels() -> None:
    with pytest.raises(ValueError, match="channels"):
        tone(channels=0)


@pytest.mark.parametrize(
    ("fmt", "subtype", "expected_subtype"),
    [
        ("WAV", None, "PCM_16"),
        ("WAV", "PCM_U8", "PCM_U8"),
        ("WAV", "PCM_24", "PCM_24"),
        ("WAV", "PCM_32", "PCM_32"),
        ("WAV", "FLOAT", "FLOAT"),
        ("FLAC", None, "PCM_16"),
        ("OGG", None, "VORBIS"),
        ("MP3", None, "MPEG_LAYER_III"),
    ],
)
def test_encode_writes_the_requested_format(fmt: str, subtype: str | None, expected_subtype: str) -> None:
    data = encode(tone(seconds=0.5, sample_rate=22050, channels=2), 22050, fmt, subtype)

    described = info(data)
    assert (described.format, described.subtype) == (fmt, expected_subtype)
    assert (described.samplerate, described.channels) == (22050, 2)
    assert described.frames == pytest.approx(11025, abs=1)


def test_wav_bytes_round_trips_the_tone_exactly_up_to_16_bit_quantization() -> None:
    decoded, sample_rate = sf.read(io.BytesIO(wav_bytes(seconds=0.2, sample_rate=8000)))

    assert sample_rate == 8000
    assert np.max(np.abs(decoded - tone(seconds=0.2, sample_rate=8000))) < 1 / 32768


@pytest.mark.parametrize(
    ("make", "fmt"),
    [(flac_bytes, "FLAC"), (mp3_bytes, "MP3"), (ogg_bytes, "OGG")],
    ids=["flac", "mp3", "ogg"],
)
def test_compressed_bytes_are_mono_44100_hz_of_the_requested_duration(make: Callable[..., bytes], fmt: str) -> None:
    described = info(make(seconds=1.5, freq_hz=1000.0))

    assert described.format == fmt
    assert (described.samplerate, described.channels) == (44100, 1)
    assert described.duration == pytest.approx(1.5, abs=0.05)


def test_corrupt_audio_bytes_pass_the_header_check() -> None:
    described = info(corrupt_audio_bytes())

    assert (described.format, described.subtype) == ("FLAC", "PCM_16")
    assert (described.samplerate, described.channels, described.frames) == (44100, 1, 44100)


def test_corrupt_audio_bytes_fail_to_decode_in_soundfile() -> None:
    with (
        sf.SoundFile(io.BytesIO(corrupt_audio_bytes())) as sound,
        pytest.raises(sf.LibsndfileError, match="flac decoder lost sync"),
    ):
        sound.read(1024)
    # `sf.read` seeks to the start first, which already fails on the garbage frames.
    with pytest.raises(sf.LibsndfileError):
        sf.read(io.BytesIO(corrupt_audio_bytes()))


def test_corrupt_audio_bytes_fail_in_the_local_analyzer_with_corrupt_audio(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.flac"
    path.write_bytes(corrupt_audio_bytes())

    with pytest.raises(CorruptAudio, match="could not decode audio"):
        LocalAnalyzer().analyze(path, lambda percent, message: None)


def test_corrupt_audio_bytes_are_the_same_on_every_call_and_sized_like_the_original() -> None:
    assert corrupt_audio_bytes() == corrupt_audio_bytes()
    assert len(corrupt_audio_bytes()) == len(flac_bytes(seconds=1.0))
    assert corrupt_audio_bytes()[:4] == b"fLaC"


def test_not_audio_bytes_are_a_png_that_soundfile_rejects() -> None:
    data = not_audio_bytes()

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(sf.LibsndfileError):
        info(data)


def test_not_audio_bytes_fail_in_the_local_analyzer_with_corrupt_audio(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(not_audio_bytes())

    with pytest.raises(CorruptAudio):
        LocalAnalyzer().analyze(path, lambda percent, message: None)
