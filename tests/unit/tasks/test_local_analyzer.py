"""LocalAnalyzer: accuracy on synthesized audio, every supported encoding, failures, progress, streaming."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from core.errors import CorruptAudio
from tasks.analyzers import local, pitch
from tasks.analyzers.base import Analyzer
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

# A sine's RMS is its peak / sqrt(2), i.e. 3.0103 dB below it.
SINE_CREST_DB = 20.0 * math.log10(math.sqrt(2.0))

Progress = list[tuple[int, str]]


class StopRequested(Exception):
    """Raised by a progress callback, the way the job system cancels a running job."""


def analyze(tmp_path: Path, data: bytes, name: str = "upload.bin") -> tuple[dict[str, Any], Progress]:
    path = tmp_path / name
    path.write_bytes(data)
    calls: Progress = []
    result = LocalAnalyzer().analyze(path, lambda percent, message: calls.append((percent, message)))
    return result, calls


def test_local_analyzer_satisfies_the_analyzer_protocol() -> None:
    analyzer: Analyzer = LocalAnalyzer()
    assert callable(analyzer.analyze)


# --- accuracy ---------------------------------------------------------------------------------------


def test_sine_at_440_hz_is_found_within_2_hz(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(freq_hz=440.0))

    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)
    assert result["spectral_centroid_hz"] == pytest.approx(440.0, abs=5.0)


def test_sine_at_minus_6_dbfs_has_peak_minus_6_and_rms_minus_9(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(level_dbfs=-6.0))

    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    assert result["rms_dbfs"] == pytest.approx(-9.0, abs=0.2)
    assert result["rms_dbfs"] == pytest.approx(-6.0 - SINE_CREST_DB, abs=0.02)


def test_sine_at_minus_20_dbfs_has_peak_minus_20_and_rms_minus_23(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(level_dbfs=-20.0))

    assert result["peak_dbfs"] == pytest.approx(-20.0, abs=0.1)
    assert result["rms_dbfs"] == pytest.approx(-20.0 - SINE_CREST_DB, abs=0.2)
    assert result["silence_ratio"] == 0.0


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("freq_hz", [100.0, 440.0, 1000.0, 1234.5])
def test_sine_frequency_and_pitch_are_found_within_2_hz_at_every_sample_rate(
    tmp_path: Path, freq_hz: float, sample_rate: int
) -> None:
    result, _ = analyze(tmp_path, wav_bytes(freq_hz=freq_hz, sample_rate=sample_rate))

    assert result["sample_rate"] == sample_rate
    assert result["dominant_frequency_hz"] == pytest.approx(freq_hz, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(freq_hz, abs=2.0)


@pytest.mark.parametrize("sample_rate", [22050, 44100, 48000])
def test_sine_at_3000_hz_is_dominant_but_above_the_pitch_range(tmp_path: Path, sample_rate: int) -> None:
    result, _ = analyze(tmp_path, wav_bytes(freq_hz=3000.0, sample_rate=sample_rate))

    assert result["dominant_frequency_hz"] == pytest.approx(3000.0, abs=2.0)
    # Not its subharmonic at 1500 Hz: a pitch above pitch.F0_MAX_HZ is simply not reported.
    assert result["f0_median_hz"] is None


def test_sine_below_the_pitch_range_has_no_f0_but_a_dominant_frequency(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(freq_hz=35.0))

    assert result["dominant_frequency_hz"] == pytest.approx(35.0, abs=2.0)
    assert result["f0_median_hz"] is None


def test_harmonic_tone_reports_its_fundamental_not_its_strongest_partial(tmp_path: Path) -> None:
    sample_rate = 44100
    t = np.arange(sample_rate, dtype=np.float64) / sample_rate
    # The fundamental (150 Hz) is weaker than its 3rd harmonic (450 Hz).
    weights = {1: 0.2, 2: 0.5, 3: 1.0, 4: 0.4, 5: 0.3}
    signal = sum(w * np.sin(2 * np.pi * 150.0 * k * t + k) for k, w in weights.items())
    signal = 0.5 * signal / np.max(np.abs(signal))

    result, _ = analyze(tmp_path, encode(np.asarray(signal, dtype=np.float64), sample_rate))

    assert result["dominant_frequency_hz"] == pytest.approx(450.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(150.0, abs=2.0)


def test_zero_crossing_rate_is_counted_per_second(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(freq_hz=440.0, seconds=2.0))

    # Two crossings per period.
    assert result["zero_crossing_rate"] == pytest.approx(880.0, abs=2.0)


def test_duration_and_file_description_are_reported(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(seconds=1.5, sample_rate=22050, subtype="PCM_24"))

    assert result["duration_s"] == pytest.approx(1.5, abs=1e-4)
    assert result["sample_rate"] == 22050
    assert result["channels"] == 1
    assert result["format"] == "WAV"
    assert result["subtype"] == "PCM_24"


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
def test_one_second_of_silence_then_one_second_of_tone_is_half_silent(tmp_path: Path, sample_rate: int) -> None:
    data = np.concatenate((silence(1.0, sample_rate), tone(440.0, seconds=1.0, sample_rate=sample_rate)))

    result, _ = analyze(tmp_path, encode(data, sample_rate))

    assert result["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    # Half the samples are zero: the mean power halves, -3 dB.
    assert result["rms_dbfs"] == pytest.approx(-6.0 - SINE_CREST_DB - 3.0103, abs=0.2)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)


def test_tone_quieter_than_the_silence_threshold_counts_as_silent(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(level_dbfs=-60.0, subtype="PCM_24"))

    assert result["silence_ratio"] == 1.0
    assert result["f0_median_hz"] is None
    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)


def test_digital_silence_reports_the_dbfs_floor_and_no_frequencies(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, encode(silence(1.0)))

    assert result["rms_dbfs"] == local.DBFS_FLOOR == -120.0
    assert result["peak_dbfs"] == local.DBFS_FLOOR
    assert result["silence_ratio"] == 1.0
    assert result["clipping_ratio"] == 0.0
    assert result["zero_crossing_rate"] == 0.0
    assert result["spectral_centroid_hz"] is None
    assert result["dominant_frequency_hz"] is None
    assert result["f0_median_hz"] is None


def test_white_noise_has_no_pitch_and_a_mid_band_centroid(tmp_path: Path) -> None:
    rng = np.random.default_rng(12345)
    noise = np.clip(rng.normal(0.0, 0.2, 44100), -1.0, 1.0)

    result, _ = analyze(tmp_path, encode(noise))

    assert result["f0_median_hz"] is None
    # A flat spectrum from 0 to Nyquist (22050 Hz) has its centroid in the middle.
    assert result["spectral_centroid_hz"] == pytest.approx(44100 / 4, rel=0.1)
    # Independent samples change sign every other sample on average.
    assert result["zero_crossing_rate"] == pytest.approx(44100 / 2, rel=0.05)
    assert result["silence_ratio"] == 0.0


def test_sine_driven_past_full_scale_and_clipped_has_a_clipping_ratio(tmp_path: Path) -> None:
    overdriven = np.clip(tone(440.0, level_dbfs=6.0), -1.0, 1.0)

    result, _ = analyze(tmp_path, encode(overdriven))

    # |2 sin x| >= 1 for 2/3 of the period.
    assert result["clipping_ratio"] == pytest.approx(2 / 3, abs=0.02)
    assert result["peak_dbfs"] == pytest.approx(0.0, abs=0.01)
    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)


def test_clean_sine_has_no_clipping(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(level_dbfs=-0.1))

    assert result["clipping_ratio"] == 0.0


def test_clipping_in_8_bit_audio_counts_both_half_waves(tmp_path: Path) -> None:
    # 8-bit PCM tops out at +127/128, short of the usual threshold: the 8-bit threshold still
    # sees the positive half-waves.
    overdriven = np.clip(tone(440.0, level_dbfs=6.0), -1.0, 1.0)

    result, _ = analyze(tmp_path, encode(overdriven, subtype="PCM_U8"))

    assert result["clipping_ratio"] == pytest.approx(2 / 3, abs=0.03)


# --- channels and encodings --------------------------------------------------------------------------


def test_stereo_tone_reports_two_channels_and_the_same_values(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, encode(tone(440.0, channels=2)))

    assert result["channels"] == 2
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    assert result["rms_dbfs"] == pytest.approx(-9.0, abs=0.2)
    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)


def test_stereo_levels_use_every_channel(tmp_path: Path) -> None:
    left_only = np.stack((tone(440.0), silence(1.0)), axis=1)

    result, _ = analyze(tmp_path, encode(left_only))

    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    # One silent channel of two halves the mean power.
    assert result["rms_dbfs"] == pytest.approx(-6.0 - SINE_CREST_DB - 3.0103, abs=0.2)
    # A frame is silent only when all channels together are: here none is.
    assert result["silence_ratio"] == 0.0


@pytest.mark.parametrize(
    ("subtype", "level_tolerance_db"),
    [
        ("PCM_U8", 0.25),  # 8 bits: 1/128 steps move a -6 dBFS peak by up to 0.14 dB
        ("PCM_16", 0.1),
        ("PCM_24", 0.1),
        ("PCM_32", 0.1),
        ("FLOAT", 0.1),
        ("DOUBLE", 0.1),
    ],
)
def test_every_wav_sample_format_is_decoded(tmp_path: Path, subtype: str, level_tolerance_db: float) -> None:
    result, _ = analyze(tmp_path, wav_bytes(subtype=subtype))

    assert result["format"] == "WAV"
    assert result["subtype"] == subtype
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=level_tolerance_db)
    assert result["rms_dbfs"] == pytest.approx(-9.0, abs=0.2)
    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)


def test_flac_is_decoded_losslessly(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, flac_bytes(freq_hz=440.0), "a.flac")

    assert (result["format"], result["subtype"]) == ("FLAC", "PCM_16")
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    assert result["rms_dbfs"] == pytest.approx(-9.0, abs=0.2)
    assert result["dominant_frequency_hz"] == pytest.approx(440.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)


@pytest.mark.parametrize(
    ("make", "fmt", "subtype"),
    [(ogg_bytes, "OGG", "VORBIS"), (mp3_bytes, "MP3", "MPEG_LAYER_III")],
)
@pytest.mark.parametrize("freq_hz", [440.0, 1000.0])
def test_lossy_formats_keep_frequency_within_2_hz_and_level_within_1_db(
    tmp_path: Path, make: Any, fmt: str, subtype: str, freq_hz: float
) -> None:
    result, _ = analyze(tmp_path, make(seconds=2.0, freq_hz=freq_hz))

    assert (result["format"], result["subtype"]) == (fmt, subtype)
    assert result["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=1.0)
    assert result["rms_dbfs"] == pytest.approx(-9.0, abs=1.0)
    assert result["dominant_frequency_hz"] == pytest.approx(freq_hz, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(freq_hz, abs=2.0)


def test_file_shorter_than_one_fft_frame_is_still_analyzed(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(seconds=0.1, freq_hz=1000.0))

    assert result["duration_s"] == pytest.approx(0.1, abs=1e-4)
    assert result["dominant_frequency_hz"] == pytest.approx(1000.0, abs=2.0)
    assert result["f0_median_hz"] == pytest.approx(1000.0, abs=2.0)


def test_file_shorter_than_one_silence_frame_is_still_measured(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes(seconds=0.01))

    assert result["duration_s"] == pytest.approx(0.01, abs=1e-4)
    assert result["silence_ratio"] == 0.0
    assert result["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    # Too short for a pitch frame (50 ms).
    assert result["f0_median_hz"] is None


def test_result_holds_only_plain_json_types(tmp_path: Path) -> None:
    result, _ = analyze(tmp_path, wav_bytes())

    assert set(result) == {
        "duration_s",
        "sample_rate",
        "channels",
        "format",
        "subtype",
        "rms_dbfs",
        "peak_dbfs",
        "silence_ratio",
        "clipping_ratio",
        "zero_crossing_rate",
        "spectral_centroid_hz",
        "dominant_frequency_hz",
        "f0_median_hz",
    }
    assert all(type(value) in (int, float, str, type(None)) for value in result.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result


# --- failures ---------------------------------------------------------------------------------------


def test_file_with_zero_frames_is_corrupt_audio(tmp_path: Path) -> None:
    with pytest.raises(CorruptAudio, match="no samples"):
        analyze(tmp_path, encode(np.zeros(0, dtype=np.float64)))


def test_non_audio_file_is_corrupt_audio(tmp_path: Path) -> None:
    with pytest.raises(CorruptAudio, match=r"^could not decode audio: "):
        analyze(tmp_path, not_audio_bytes())


def test_random_bytes_are_corrupt_audio(tmp_path: Path) -> None:
    garbage = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    with pytest.raises(CorruptAudio):
        analyze(tmp_path, garbage)


def test_file_with_intact_header_and_garbage_body_is_corrupt_audio(tmp_path: Path) -> None:
    with pytest.raises(CorruptAudio, match="could not decode audio: flac decoder lost sync"):
        analyze(tmp_path, corrupt_audio_bytes())


def test_float_wav_holding_nan_samples_is_corrupt_audio(tmp_path: Path) -> None:
    data = tone(440.0)
    data[1000] = np.nan

    with pytest.raises(CorruptAudio, match="NaN or infinite"):
        analyze(tmp_path, encode(data, subtype="FLOAT"))


@pytest.mark.parametrize("data", [corrupt_audio_bytes(), not_audio_bytes(), b""], ids=["corrupt", "png", "empty"])
def test_corrupt_audio_message_is_a_short_sentence_without_the_path(tmp_path: Path, data: bytes) -> None:
    name = "Client Supplied Name.flac"

    with pytest.raises(CorruptAudio) as caught:
        analyze(tmp_path, data, name)

    message = str(caught.value)
    assert message.startswith("could not decode audio")
    assert "Client Supplied Name" not in message
    assert str(tmp_path) not in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert len(message) < 200


def test_missing_file_is_an_os_error_not_corrupt_audio(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalAnalyzer().analyze(tmp_path / "missing.wav", lambda percent, message: None)


# --- progress ---------------------------------------------------------------------------------------


def test_progress_starts_at_0_ends_at_95_and_never_reports_100(tmp_path: Path) -> None:
    _, calls = analyze(tmp_path, wav_bytes())

    percents = [percent for percent, _ in calls]
    assert percents[0] == 0
    assert percents[-1] == 95
    assert calls[-1][1] == "computing spectral features"
    assert 100 not in percents
    assert all(message for _, message in calls)


def test_progress_is_monotonic_and_bounded_for_a_file_of_many_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "BLOCK_SAMPLES", 500)  # 10 s at 8 kHz: 160 blocks

    _, calls = analyze(tmp_path, wav_bytes(seconds=10.0, sample_rate=8000))

    percents = [percent for percent, _ in calls]
    assert percents == sorted(percents)
    assert len(percents) <= 25
    assert len(set(percents)) >= 10  # it did report while reading
    assert all(0 <= percent < 100 for percent in percents)


def test_exception_from_progress_at_start_propagates_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes())

    def progress(percent: int, message: str) -> None:
        raise StopRequested

    with pytest.raises(StopRequested):
        LocalAnalyzer().analyze(path, progress)


def test_exception_from_progress_while_reading_propagates_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "BLOCK_SAMPLES", 4000)
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(seconds=3.0, sample_rate=8000))
    seen: list[int] = []

    def progress(percent: int, message: str) -> None:
        seen.append(percent)
        if 0 < percent < 95:
            raise StopRequested

    with pytest.raises(StopRequested):
        LocalAnalyzer().analyze(path, progress)
    assert seen[-1] not in (0, 95)


# --- streaming --------------------------------------------------------------------------------------


def test_results_do_not_depend_on_the_block_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Silence, a tone and noise in stereo: every statistic crosses block boundaries when blocks
    # are small and odd-sized.
    rng = np.random.default_rng(99)
    left = np.concatenate((silence(0.7, 22050), tone(330.0, -12.0, 1.3, 22050), rng.normal(0, 0.1, 11025)))
    stereo = np.stack((left, 0.5 * left), axis=1)
    data = encode(stereo, 22050, subtype="PCM_24")

    whole, _ = analyze(tmp_path, data)
    monkeypatch.setattr(local, "BLOCK_SAMPLES", 2 * 777)
    streamed, _ = analyze(tmp_path, data)

    assert streamed.keys() == whole.keys()
    for key, value in whole.items():
        if isinstance(value, float):
            assert streamed[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
        else:
            assert streamed[key] == value, key


def test_memory_stays_bounded_by_the_block_size_not_the_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60 s at 8 kHz decodes to 3.8 MB of float64; with small blocks the analysis must need far less.
    decoded_bytes = 60 * 8000 * 8
    monkeypatch.setattr(local, "BLOCK_SAMPLES", 8192)
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(seconds=60.0, sample_rate=8000))
    # numpy's FFT keeps plan caches after its first use at a given size: fill them first.
    analyze(tmp_path, wav_bytes(seconds=1.0, sample_rate=8000))

    tracemalloc.start()
    try:
        result = LocalAnalyzer().analyze(path, lambda percent, message: None)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result["duration_s"] == pytest.approx(60.0)
    assert peak_bytes < decoded_bytes / 3


# --- bounded cost ------------------------------------------------------------------------------------

# The goals for any length of file: memory growth and the number of frames the pitch estimate looks at.
MAX_MEMORY_GROWTH_BYTES = 30 * 2**20
MAX_PITCH_FRAMES = 100


def write_long_tone(path: Path, seconds: int, sample_rate: int = 44100, channels: int = 1) -> Path:
    """A 440 Hz -6 dBFS tone written one second at a time, so the test itself stays small in memory."""
    second = tone(440.0, -6.0, 1.0, sample_rate, channels)  # a whole number of periods: seamless
    with sf.SoundFile(path, "w", sample_rate, channels, "PCM_16", format="WAV") as sound:
        for _ in range(seconds):
            sound.write(second)
    return path


@pytest.mark.parametrize(
    ("seconds", "channels"), [(10, 1), (10, 2), (180, 2)], ids=["10s-mono", "10s-stereo", "3min-stereo"]
)
def test_peak_memory_growth_stays_under_30_mb_whatever_the_length(tmp_path: Path, seconds: int, channels: int) -> None:
    path = write_long_tone(tmp_path / "long.wav", seconds, channels=channels)
    # numpy's FFT keeps plan caches after its first use at a given size: fill them first.
    analyze(tmp_path, encode(tone(440.0, channels=channels)))

    tracemalloc.start()
    try:
        result = LocalAnalyzer().analyze(path, lambda percent, message: None)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result["duration_s"] == pytest.approx(seconds)
    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)
    assert peak_bytes <= MAX_MEMORY_GROWTH_BYTES


def test_pitch_is_estimated_on_at_most_100_frames_of_a_long_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_long_tone(tmp_path / "long.wav", 120, sample_rate=8000)
    estimate = pitch.Yin.estimate
    frames_seen: list[int] = []

    def counting_estimate(self: pitch.Yin, frames: np.ndarray[Any, Any]) -> list[float]:
        frames_seen.append(frames.shape[0])
        return estimate(self, frames)

    monkeypatch.setattr(pitch.Yin, "estimate", counting_estimate)
    result = LocalAnalyzer().analyze(path, lambda percent, message: None)

    assert result["f0_median_hz"] == pytest.approx(440.0, abs=2.0)
    # Spread over the whole file, not bunched at its start.
    assert 90 <= sum(frames_seen) <= MAX_PITCH_FRAMES
