"""Fundamental-frequency (pitch) estimation with YIN, vectorized over batches of frames.

de Cheveigné & Kawahara, "YIN, a fundamental frequency estimator for speech and music" (2002): the
difference function is computed with FFTs, normalized cumulatively, and the first dip under the
aperiodicity threshold gives the period, refined to a fraction of a sample.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy import fft  # numpy loads it lazily; here it loads with this module, before a worker forks

from tasks.analyzers.frames import FrameSampler, SampleArray, rows_needed
from tasks.analyzers.scratch import SCRATCH

FloatArray = npt.NDArray[np.float64]

# Fundamental frequency search range: from a low male voice / bass note to a high soprano / whistle.
F0_MIN_HZ = 50.0
F0_MAX_HZ = 2000.0
# Integration window of the YIN difference function: longer than one period at F0_MIN_HZ.
F0_WINDOW_S = 0.030
# A frame is voiced when 1 - (YIN cumulative mean normalized difference at the chosen lag) reaches
# this; YIN recommends 0.10-0.15 as the aperiodicity threshold, white noise stays near 0.
F0_MIN_CLARITY = 0.85
# A frame quieter than this is never voiced: the same level as the silence threshold, so a silent
# frame cannot contribute a pitch.
F0_ENERGY_FLOOR_DBFS = -50.0
# Distance between f0 frames for short files; longer files use evenly spread frames instead.
F0_HOP_S = 0.010
# At most this many f0 frames per file: the median of a hundred frames is stable (a tone's varies by
# hundredths of a hertz from 100 to 400 frames), and the cost stays constant whatever the duration.
F0_MAX_FRAMES = 100
# Samples of the frames analyzed together (16 frames at 44.1 kHz, fewer at higher rates): vectorized
# enough, and the FFT buffers stay under about 1 MB each whatever the sample rate.
YIN_BATCH_SAMPLES = 16 * 2304


def fast_fft_size(minimum: int) -> int:
    """The smallest size >= `minimum` of the form 2^a * 3^b, which pocketfft transforms fast.

    At 44.1 kHz a YIN frame is 2206 samples: 2304 (2^8 * 3^2) transforms about 3x faster than 4096,
    the next power of two, and 2206 itself (2 * 1103) is several times slower than either.
    """
    best = 1 << max(0, math.ceil(math.log2(max(1, minimum))))
    power3 = 1
    while power3 < best:
        size = power3
        while size < minimum:
            size *= 2
        best = min(best, size)
        power3 *= 3
    return best


class Yin:
    """YIN fundamental-frequency estimator (de Cheveigné & Kawahara, 2002) on batches of frames."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.window = max(2, round(F0_WINDOW_S * sample_rate))
        self.max_lag = math.ceil(sample_rate / F0_MIN_HZ) + 1
        self.frame_len = self.window + self.max_lag
        # The correlation of a frame with its first `window` samples needs no zero padding: lags stop at
        # max_lag, so no product wraps around a transform of frame_len points or more.
        self.fft_size = fast_fft_size(self.frame_len)
        self.energy_floor = self.window * 10.0 ** (F0_ENERGY_FLOOR_DBFS / 10.0)
        self._lag_index = np.arange(1, self.max_lag + 1, dtype=np.float64)
        self.batch = max(1, YIN_BATCH_SAMPLES // self.fft_size)

    def estimate(self, frames: FloatArray) -> list[float]:
        """f0 in Hz of every voiced frame of `frames` (shape (n, frame_len)); unvoiced ones are skipped."""
        values: list[float] = []
        for first in range(0, frames.shape[0], self.batch):
            values += self._estimate_batch(frames[first : first + self.batch])
        return values

    def _estimate_batch(self, frames: FloatArray) -> list[float]:
        w, lags, count, bins = self.window, self.max_lag, frames.shape[0], self.fft_size // 2 + 1
        spectrum = fft.rfft(
            self._padded("yin.frames", frames), axis=1, out=_scratch("yin.spectrum", count, bins, np.complex128)
        )
        head = fft.rfft(
            self._padded("yin.head", frames[:, :w]),
            axis=1,
            out=_scratch("yin.head_spectrum", count, bins, np.complex128),
        )
        spectrum *= np.conjugate(head, out=head)
        # r[t] = sum_{j<w} x[j] * x[j + t]
        corr = fft.irfft(spectrum, n=self.fft_size, axis=1, out=_scratch("yin.corr", count, self.fft_size))
        corr = corr[:, : lags + 1]
        squares = np.square(frames[:, : w + lags], out=_scratch("yin.squares", count, w + lags))
        cumulative = np.cumsum(squares, axis=1, out=squares)
        energy = cumulative[:, w - 1 : w + lags]  # sum_{j<w} x[j + t]^2
        energy[:, 1:] -= cumulative[:, :lags]
        # Difference function d[t] = sum_{j<w} (x[j] - x[j + t])^2, clipped at 0 against rounding.
        corr *= -2.0
        corr += energy
        corr += energy[:, :1]
        diff = np.maximum(corr, 0.0, out=corr)
        running = np.cumsum(diff[:, 1:], axis=1, out=_scratch("yin.running", count, lags))
        cmnd = _scratch("yin.cmnd", count, lags + 1)
        cmnd[:, 0] = 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            np.multiply(diff[:, 1:], self._lag_index, out=cmnd[:, 1:])
            np.divide(cmnd[:, 1:], running, out=cmnd[:, 1:])
        if not (running[:, 0] > 0.0).all():  # running never decreases: positive at lag 1, positive throughout
            np.copyto(cmnd[:, 1:], 1.0, where=~(running > 0.0))

        # Candidates are the local minima of cmnd from lag 2 on, not from the F0_MAX_HZ lag, so a
        # pitch above the range is seen as such (and rejected) instead of taken for its subharmonic.
        left, centre, right = cmnd[:, 1:-2], cmnd[:, 2:-1], cmnd[:, 3:]
        loud = energy[:, 0] >= self.energy_floor
        dips = np.flatnonzero(((centre < left) & (centre <= right) & loud[:, None]).ravel())
        # Each dip is judged by the value at its interpolated bottom: with only 4-5 samples per
        # period (high pitches at 8 kHz) the integer lags straddle the true minimum.
        rows, at = np.divmod(dips, centre.shape[1])
        d_left, d_centre, d_right = left[rows, at], centre[rows, at], right[rows, at]
        curvature = np.maximum(d_left - 2.0 * d_centre + d_right, 1e-12)
        bottom = d_centre - (d_left - d_right) ** 2 / (8.0 * curvature)
        voiced = bottom < 1.0 - F0_MIN_CLARITY
        # The dips are in order of row, then lag: the first voiced one of each row is its pitch period.
        voiced_rows, first = np.unique(rows[voiced], return_index=True)
        return self._refine(diff, voiced_rows, at[voiced][first] + 2)

    def _padded(self, name: str, frames: FloatArray) -> FloatArray:
        """`frames` copied into the start of rows of fft_size samples, zero after (no padding inside the FFT)."""
        padded = _scratch(name, frames.shape[0], self.fft_size)
        padded[:, : frames.shape[1]] = frames
        padded[:, frames.shape[1] :] = 0.0
        return padded

    def _refine(self, diff: FloatArray, rows: npt.NDArray[np.intp], lags: npt.NDArray[np.intp]) -> list[float]:
        """f0 of each of `rows` from its first voiced dip at `lags`, refined on the raw difference function.

        Frames whose f0 falls out of range are skipped.
        """
        # The sub-sample position is fitted on the raw difference function: the normalization of
        # cmnd tilts the dip, which biases short periods (1 kHz at 8 kHz) by several hertz. So each
        # lag first walks down the difference function, to the left, then to the right.
        lags, top = lags.copy(), diff.shape[1] - 2
        for step in (-1, 1):
            while True:
                moving = (lags > 1) & (lags < top) & (diff[rows, lags + step] < diff[rows, lags])
                if not moving.any():
                    break
                lags += step * moving
        d_left, d_centre, d_right = diff[rows, lags - 1], diff[rows, lags], diff[rows, lags + 1]
        d_curvature = d_left - 2.0 * d_centre + d_right
        bent = d_curvature > 0
        offset = np.divide(0.5 * (d_left - d_right), d_curvature, out=np.zeros_like(d_curvature), where=bent)
        f0 = self.sample_rate / (lags + offset)
        values: list[float] = f0[(f0 >= F0_MIN_HZ) & (f0 <= F0_MAX_HZ)].tolist()
        return values


def _scratch(name: str, rows: int, columns: int, dtype: type[np.generic] = np.float64) -> npt.NDArray[Any]:
    return SCRATCH.array(name, (rows, columns), dtype)


class PitchTrack:
    """The median f0 of at most F0_MAX_FRAMES frames spread over the signal, fed block by block."""

    def __init__(self, sample_rate: int, total_frames: int) -> None:
        self._yin = Yin(sample_rate)
        length, batch = self._yin.frame_len, self._yin.batch
        stride = max(round(F0_HOP_S * sample_rate), math.ceil(total_frames / F0_MAX_FRAMES), 1)
        rows = SCRATCH.array("pitch.frames", (rows_needed(length, stride, batch), length), np.float64)
        self._frames = FrameSampler(length, stride, batch, rows)
        self._values: list[float] = []

    def add(self, mono: SampleArray) -> None:
        """Estimate f0 on the frames that the next samples of the mono mix complete."""
        for frames in self._frames.batches(mono):
            self._values += self._yin.estimate(frames)

    def median_hz(self) -> float | None:
        """Median f0 over the voiced frames, None when none was voiced (once all is added)."""
        frames = self._frames.flush()
        if frames.shape[0]:
            self._values += self._yin.estimate(frames)
        return statistics.median(self._values) if self._values else None
