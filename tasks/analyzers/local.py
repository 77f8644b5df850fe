"""Local audio analysis with numpy and libsndfile (through soundfile).

The file is decoded block by block and every statistic is accumulated as the blocks go by, so memory
stays bounded whatever the duration (an hour of MP3 decodes to more than 1 GB of float samples).

Level features (RMS, peak, clipping, silence) use every channel; spectral features, the zero-crossing
rate and f0 use the mono mix (the mean of the channels).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import soundfile as sf

from core.errors import CorruptAudio
from tasks.analyzers.base import ProgressFn
from tasks.analyzers.pitch import Yin

FloatArray = npt.NDArray[np.float64]
_T = TypeVar("_T")

# --- constants ------------------------------------------------------------------------------------

# Samples (all channels together) decoded per block: bounds memory (8 MB of float64) whatever the
# channel count or sample rate, and is long enough (about 6 s of 44.1 kHz stereo) to keep the
# per-block Python overhead negligible.
BLOCK_SAMPLES = 2**19
# Levels are reported down to this floor; digital silence (all zeros) has no finite dB value, and
# anything quieter than this is far below the noise floor of 16-bit audio (about -98 dBFS).
DBFS_FLOOR = -120.0
# Silence is measured on frames this long: short enough to catch pauses between words, long enough
# for a stable RMS.
SILENCE_FRAME_S = 0.050
# A frame quieter than this counts as silent: roughly the noise of a quiet room after recording gain.
SILENCE_THRESHOLD_DBFS = -50.0
# A sample at or above this magnitude counts as clipped: a little below 1.0 so clipping that went
# through a lossy codec or a gain stage still counts.
CLIPPING_THRESHOLD = 0.999
# 8-bit PCM cannot go above 127/128 on the positive side, so clipping there stops short of 0.999.
CLIPPING_THRESHOLD_8_BIT = 127 / 128
# Highest sample rate accepted: the highest rate in real use (DXD masters, 768 kHz DACs); larger
# values come from broken headers and would make the per-frame buffers grow without bound.
MAX_SAMPLE_RATE_HZ = 768_000
# Target frequency resolution of the averaged spectrum: the FFT frame is the smallest power of two
# whose bins are at most this wide, so the interpolated peak is accurate to a fraction of a hertz.
SPECTRUM_BIN_HZ = 3.0
# FFT frame bounds in samples: below, the frequency resolution is too coarse; above, a frame lasts
# so long that short files get a single, zero-padded one.
SPECTRUM_MIN_FFT = 1024
SPECTRUM_MAX_FFT = 65536
# The dominant frequency is searched above this: DC offsets and rumble are not what anyone means.
DOMINANT_MIN_HZ = 20.0
# Distance between f0 frames for short files; longer files use evenly spread frames instead.
F0_HOP_S = 0.010
# At most this many f0 frames per file: the median of a few hundred frames is stable, and the cost
# then stays constant whatever the duration.
F0_MAX_FRAMES = 400
# Progress reported while decoding goes from READ_PROGRESS_START to READ_PROGRESS_END, in steps of at
# least PROGRESS_STEP percent, so a file of any length yields at most about 20 progress calls.
READ_PROGRESS_START = 5
READ_PROGRESS_END = 90
PROGRESS_STEP = 5
SPECTRAL_PROGRESS = 95

_EIGHT_BIT_SUBTYPES = frozenset({"PCM_S8", "PCM_U8"})
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_REASON_CHARS = 160


# --- public API -----------------------------------------------------------------------------------


class LocalAnalyzer:
    """Analyzes audio files on this machine with libsndfile and numpy."""

    def analyze(self, path: Path, progress: ProgressFn) -> dict[str, Any]:
        """Decode the file at `path` block by block and return its statistics.

        The result has these keys (plain floats, ints, strings or None):

        - `duration_s`, `sample_rate`, `channels`, `format` (e.g. "WAV"), `subtype` (e.g. "PCM_16").
        - `rms_dbfs`, `peak_dbfs`: 20*log10 of the RMS / peak magnitude over all channels, full scale
          being 1.0 (a full-scale sine has RMS -3.01 dBFS). Clamped to `DBFS_FLOOR` (-120.0), which
          is what digital silence reports.
        - `silence_ratio`: fraction of `SILENCE_FRAME_S` frames whose RMS over all channels is under
          `SILENCE_THRESHOLD_DBFS`.
        - `clipping_ratio`: fraction of samples (all channels) with magnitude >= `CLIPPING_THRESHOLD`.
        - `zero_crossing_rate`: sign changes of the mono mix per second (a 440 Hz sine gives 880).
        - `spectral_centroid_hz`, `dominant_frequency_hz`: from the averaged power spectrum of the mono
          mix; None when the mono mix is silent.
        - `f0_median_hz`: median fundamental frequency over voiced frames (YIN, see `pitch`), None
          when no frame is voiced (silence, noise, or pitch outside 50-2000 Hz).

        Args:
            path: The audio file; any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...).
            progress: Called with (percent, message), percentages non-decreasing, never 100.
                Exceptions it raises propagate unchanged (that is how a running job is canceled).

        Returns:
            The statistics described above.

        Raises:
            CorruptAudio: The file cannot be decoded, has no samples, or holds invalid samples.
            OSError: The file cannot be opened at all (missing, unreadable): not a decoding problem.
        """
        progress(0, "decoding audio")
        with path.open("rb") as stream:
            # libsndfile only ever sees the open stream, never the path, so its messages cannot
            # contain the path.
            sound = _guard(lambda: sf.SoundFile(stream))
            with sound:
                return self._analyze_open(sound, progress)

    def _analyze_open(self, sound: Any, progress: ProgressFn) -> dict[str, Any]:
        sample_rate = int(sound.samplerate)
        channels = int(sound.channels)
        total_frames = int(sound.frames)
        if total_frames <= 0:
            raise CorruptAudio("audio file contains no samples")
        if not 0 < sample_rate <= MAX_SAMPLE_RATE_HZ or channels <= 0:
            raise CorruptAudio("audio file header is invalid: unsupported sample rate or channel count")
        subtype = str(sound.subtype)
        clip_threshold = CLIPPING_THRESHOLD_8_BIT if subtype in _EIGHT_BIT_SUBTYPES else CLIPPING_THRESHOLD
        stats = _Accumulator(sample_rate, channels, total_frames, clip_threshold)

        block_frames = max(1, BLOCK_SAMPLES // channels)
        buffer = np.empty((block_frames, channels), dtype=np.float64)
        last_percent = 0
        while True:
            block: FloatArray = _guard(lambda: sound.read(dtype="float64", always_2d=True, out=buffer))
            if block.shape[0] == 0:
                break
            stats.add(block)
            done = min(stats.frames_read, total_frames)
            percent = READ_PROGRESS_START + (READ_PROGRESS_END - READ_PROGRESS_START) * done // total_frames
            if percent >= last_percent + PROGRESS_STEP:
                last_percent = percent
                progress(percent, f"decoded {done / sample_rate:.0f} of {total_frames / sample_rate:.0f} s")

        if stats.frames_read == 0:
            raise CorruptAudio("could not decode audio: no samples could be decoded")
        progress(SPECTRAL_PROGRESS, "computing spectral features")
        return {
            "duration_s": round(stats.frames_read / sample_rate, 4),
            "sample_rate": sample_rate,
            "channels": channels,
            "format": str(sound.format),
            "subtype": subtype,
            **stats.result(),
        }


# --- decoding errors ------------------------------------------------------------------------------


def _guard(call: Callable[[], _T]) -> _T:
    """Run a libsndfile call, turning its failures into CorruptAudio with a readable message."""
    try:
        return call()
    except sf.LibsndfileError as exc:
        raise CorruptAudio(f"could not decode audio: {_reason(str(exc.error_string))}") from exc
    except (RuntimeError, ValueError, TypeError, EOFError) as exc:
        # soundfile raises these for inconsistent files (odd sizes, unknown subtypes); their text
        # may quote internals, so only the kind of failure is reported.
        raise CorruptAudio("could not decode audio: the file is damaged or not a supported format") from exc


def _reason(text: str) -> str:
    """libsndfile's error string, cleaned up into a short clause ("Error : x." -> "x")."""
    text = _CONTROL_CHARS.sub(" ", text).strip()
    text = re.sub(r"^error\s*:\s*", "", text, flags=re.IGNORECASE).rstrip(". ")
    if not text:
        return "unknown decoder error"
    return text[:_MAX_REASON_CHARS]


# --- statistics -----------------------------------------------------------------------------------


def _dbfs(magnitude: float) -> float:
    """20*log10(magnitude) with full scale 1.0, clamped to DBFS_FLOOR."""
    if magnitude <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(magnitude))


def _fft_size(sample_rate: int) -> int:
    """Smallest power of two giving bins at most SPECTRUM_BIN_HZ wide, within the FFT bounds."""
    size = 1 << max(0, math.ceil(math.log2(sample_rate / SPECTRUM_BIN_HZ)))
    return min(SPECTRUM_MAX_FFT, max(SPECTRUM_MIN_FFT, size))


class _Accumulator:
    """Running statistics over the decoded blocks; each buffer it keeps is at most one frame long."""

    def __init__(self, sample_rate: int, channels: int, total_frames: int, clip_threshold: float) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.total_frames = total_frames
        self.clip_threshold = clip_threshold
        self.frames_read = 0
        self.sum_squares = 0.0
        self.mono_sum_squares = 0.0
        self.peak = 0.0
        self.clipped = 0
        self.crossings = 0
        self.last_negative: bool | None = None
        self.silent_frames = 0
        self.silence_frames = 0
        self.spectrum_frames = 0
        self.f0_values: list[float] = []
        self.ones: FloatArray = np.ones(channels, dtype=np.float64)
        self.mix: FloatArray = self.ones / channels

        self.silence_len = max(1, round(SILENCE_FRAME_S * self.sample_rate))
        # Mean power under which a frame is silent.
        self.silence_power = 10.0 ** (SILENCE_THRESHOLD_DBFS / 10.0)
        # Per-frame sum of squares over the channels, carried until a whole silence frame is there.
        self.silence_tail: FloatArray = np.zeros(0, dtype=np.float64)

        self.fft_size = _fft_size(self.sample_rate)
        self.window: FloatArray = np.hanning(self.fft_size).astype(np.float64)
        self.power: FloatArray = np.zeros(self.fft_size // 2 + 1, dtype=np.float64)
        self.spectrum_tail: FloatArray = np.zeros(0, dtype=np.float64)

        self.f0 = Yin(self.sample_rate)
        self.f0_stride = max(round(F0_HOP_S * self.sample_rate), math.ceil(self.total_frames / F0_MAX_FRAMES), 1)
        self.f0_next = 0  # absolute position of the next f0 frame
        self.f0_tail: FloatArray = np.zeros(0, dtype=np.float64)
        self.f0_tail_start = 0  # absolute position of f0_tail[0]

    def add(self, block: FloatArray) -> None:
        """Fold one block of shape (frames, channels) into the statistics."""
        # Mixing goes through a matrix product: numpy reductions along the short channel axis are
        # several times slower than BLAS.
        squares: FloatArray = np.square(block) @ self.ones if self.channels > 1 else block[:, 0] ** 2
        block_sum_squares = float(squares.sum())
        if not math.isfinite(block_sum_squares):
            raise CorruptAudio("could not decode audio: the file holds invalid (NaN or infinite) samples")
        self.sum_squares += block_sum_squares
        self.peak = max(self.peak, float(block.max()), -float(block.min()))
        self.clipped += int(np.count_nonzero(np.abs(block) >= self.clip_threshold))

        mono: FloatArray = block @ self.mix if self.channels > 1 else block[:, 0]
        self.mono_sum_squares += float(np.dot(mono, mono))
        self._add_silence(squares)
        self._add_crossings(mono)
        self._add_spectrum(mono)
        self._add_f0(mono)
        self.frames_read += block.shape[0]

    def _add_silence(self, squares: FloatArray) -> None:
        data = np.concatenate((self.silence_tail, squares))
        whole = data.shape[0] // self.silence_len
        frames = data[: whole * self.silence_len].reshape(whole, self.silence_len)
        powers = frames.mean(axis=1) / self.channels
        self.silent_frames += int(np.count_nonzero(powers < self.silence_power))
        self.silence_frames += whole
        self.silence_tail = data[whole * self.silence_len :]

    def _add_crossings(self, mono: FloatArray) -> None:
        negative = mono < 0.0
        self.crossings += int(np.count_nonzero(negative[1:] != negative[:-1]))
        if self.last_negative is not None and bool(negative[0]) != self.last_negative:
            self.crossings += 1
        self.last_negative = bool(negative[-1])

    def _add_spectrum(self, mono: FloatArray) -> None:
        data = np.concatenate((self.spectrum_tail, mono))
        whole = data.shape[0] // self.fft_size
        if whole:
            frames = data[: whole * self.fft_size].reshape(whole, self.fft_size) * self.window
            self.power += (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
            self.spectrum_frames += whole
        self.spectrum_tail = data[whole * self.fft_size :]

    def _add_f0(self, mono: FloatArray) -> None:
        data = np.concatenate((self.f0_tail, mono))
        end = self.f0_tail_start + data.shape[0]
        starts: list[int] = []
        while self.f0_next + self.f0.frame_len <= end:
            starts.append(self.f0_next - self.f0_tail_start)
            self.f0_next += self.f0_stride
        if starts:
            frames = np.stack([data[s : s + self.f0.frame_len] for s in starts])
            self.f0_values.extend(self.f0.estimate(frames))
        keep_from = min(data.shape[0], max(0, self.f0_next - self.f0_tail_start))
        self.f0_tail = data[keep_from:]
        self.f0_tail_start += keep_from

    def result(self) -> dict[str, Any]:
        """The final statistics (keys of the analysis result except the file description)."""
        samples = self.frames_read * self.channels
        silent, frames = self.silent_frames, self.silence_frames
        tail_len = self.silence_tail.shape[0]
        # A last, partial frame counts when it is at least half a frame (or the whole file).
        if tail_len and (2 * tail_len >= self.silence_len or frames == 0):
            silent += float(self.silence_tail.mean()) / self.channels < self.silence_power
            frames += 1
        power = self.power
        if self.spectrum_frames == 0 and self.spectrum_tail.shape[0]:
            # A file shorter than one FFT frame: window what there is and zero-pad it.
            tail = self.spectrum_tail * np.hanning(self.spectrum_tail.shape[0])
            power = power + np.abs(np.fft.rfft(tail, n=self.fft_size)) ** 2

        mono_rms = math.sqrt(self.mono_sum_squares / self.frames_read)
        spectral_silent = _dbfs(mono_rms) <= DBFS_FLOOR or not power.any()
        return {
            "rms_dbfs": round(_dbfs(math.sqrt(self.sum_squares / samples)), 3),
            "peak_dbfs": round(_dbfs(self.peak), 3),
            "silence_ratio": round(silent / frames, 6),
            "clipping_ratio": round(self.clipped / samples, 6),
            "zero_crossing_rate": round(self.crossings * self.sample_rate / self.frames_read, 2),
            "spectral_centroid_hz": None if spectral_silent else round(self._centroid(power), 2),
            "dominant_frequency_hz": None if spectral_silent else _round_or_none(self._dominant(power), 2),
            "f0_median_hz": round(float(np.median(self.f0_values)), 2) if self.f0_values else None,
        }

    def _centroid(self, power: FloatArray) -> float:
        freqs = np.fft.rfftfreq(self.fft_size, d=1.0 / self.sample_rate)
        return float(np.dot(freqs, power) / power.sum())

    def _dominant(self, power: FloatArray) -> float | None:
        bin_hz = self.sample_rate / self.fft_size
        first = max(1, math.ceil(DOMINANT_MIN_HZ / bin_hz))
        last = power.shape[0] - 2  # the peak needs a neighbour on each side
        if last < first:
            return None
        peak = first + int(np.argmax(power[first : last + 1]))
        # Parabolic interpolation of the log power (exact for a Gaussian peak, close for Hann).
        left, centre, right = np.log(power[peak - 1 : peak + 2] + 1e-300)
        curvature = left - 2.0 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        return float((peak + offset) * bin_hz)


def _round_or_none(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
