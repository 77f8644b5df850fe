"""The averaged power spectrum of the mono mix (Welch's method on a bounded number of frames).

Files up to `SPECTRUM_MAX_FRAMES` FFT frames long (about 24 s at 44.1 kHz) are covered by
back-to-back frames; longer ones by that many frames spread evenly over the file, so the cost
stays constant whatever the duration.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from numpy import fft  # numpy loads it lazily; here it loads with this module, before a worker forks

from tasks.analyzers.frames import FrameSampler, SampleArray, rows_needed
from tasks.analyzers.scratch import SCRATCH

FloatArray = npt.NDArray[np.float64]

# Target frequency resolution of the averaged spectrum: the FFT frame is the smallest power of two
# whose bins are at most this wide, so the interpolated peak is accurate to a fraction of a hertz.
SPECTRUM_BIN_HZ = 3.0
# FFT frame bounds in samples: below, the frequency resolution is too coarse; above, a frame lasts
# so long that short files get a single, zero-padded one.
SPECTRUM_MIN_FFT = 1024
SPECTRUM_MAX_FFT = 65536
# At most this many FFT frames per file: an average of 64 frames has a spread of about 1/8 of one
# frame's (a noise spectrum's centroid moves by well under 1%), and costs a few milliseconds.
SPECTRUM_MAX_FRAMES = 64
# Samples of the FFT frames transformed together (8 frames at 44.1 and 48 kHz, 2 at the largest FFT):
# fewer calls for long files (one frame every few blocks), and the buffers stay under about 1 MB.
SPECTRUM_BATCH_SAMPLES = 8 * 16384
# The dominant frequency is searched above this: DC offsets and rumble are not what anyone means.
DOMINANT_MIN_HZ = 20.0


def fft_size(sample_rate: int) -> int:
    """Smallest power of two giving bins at most SPECTRUM_BIN_HZ wide, within the FFT bounds."""
    size = 1 << max(0, math.ceil(math.log2(sample_rate / SPECTRUM_BIN_HZ)))
    return min(SPECTRUM_MAX_FFT, max(SPECTRUM_MIN_FFT, size))


@functools.cache
def hann_window(size: int) -> FloatArray:
    """The Hann window of `size` points, computed once per size (a few per process) and read-only."""
    window = np.hanning(size)
    window.flags.writeable = False
    return window


# The window of 44.1 and 48 kHz files, made at import: a worker imports this before it forks its jobs.
hann_window(fft_size(44_100))


class Spectrum:
    """Accumulates the Hann-windowed power spectrum of evenly spread frames of the mono mix."""

    def __init__(self, sample_rate: int, total_frames: int) -> None:
        self.sample_rate = sample_rate
        self.fft_size = fft_size(sample_rate)
        stride = max(self.fft_size, math.ceil(total_frames / SPECTRUM_MAX_FRAMES))
        batch = max(1, SPECTRUM_BATCH_SAMPLES // self.fft_size)
        rows = SCRATCH.array("spectrum.frames", (rows_needed(self.fft_size, stride, batch), self.fft_size), np.float64)
        self._frames = FrameSampler(self.fft_size, stride, batch, rows)
        self._spectra = SCRATCH.array("spectrum.spectra", (batch, self.fft_size // 2 + 1), np.complex128)
        self._sums = SCRATCH.array("spectrum.sums", (self.fft_size + 2,), np.float64)
        self._window = hann_window(self.fft_size)
        self._power: FloatArray = np.zeros(self.fft_size // 2 + 1, dtype=np.float64)
        self.frames_used = 0

    def add(self, mono: SampleArray) -> None:
        """Fold in the next samples of the mono mix."""
        for frames in self._frames.batches(mono):
            self._fold(frames)

    def _fold(self, frames: FloatArray) -> None:
        """Adds the power spectra of `frames` (modified: they are the sampler's rows, handed out once)."""
        count = frames.shape[0]
        if not count:
            return
        frames *= self._window
        for first in range(0, count, self._spectra.shape[0]):
            part = frames[first : first + self._spectra.shape[0]]
            spectra = fft.rfft(part, axis=1, out=self._spectra[: part.shape[0]])
            # |X|^2 as re^2 + im^2: squared in place on the spectra's memory seen as floats (re, im,
            # re, im, ...), summed over the frames, then each bin's two halves added.
            floats = spectra.view(np.float64)
            np.square(floats, out=floats)
            sums = np.add.reduce(floats, axis=0, out=self._sums)
            self._power += sums[0::2]
            self._power += sums[1::2]
        self.frames_used += count

    def power(self) -> FloatArray:
        """The summed power spectrum (bins of sample_rate / fft_size Hz from 0 to Nyquist), once all is added."""
        self._fold(self._frames.flush())
        pending = self._frames.pending
        if self.frames_used or not pending.shape[0]:
            return self._power
        # A file shorter than one FFT frame: window what there is and zero-pad it.
        tail = pending * np.hanning(pending.shape[0])
        spectrum = fft.rfft(tail, n=self.fft_size)
        return self._power + (spectrum.real**2 + spectrum.imag**2)

    def centroid_hz(self, power: FloatArray) -> float:
        """The power-weighted mean frequency of `power` (which must not be all zero)."""
        freqs = fft.rfftfreq(self.fft_size, d=1.0 / self.sample_rate)
        # Not np.dot: a BLAS call that may spread over threads, slow on a busy machine.
        return float((freqs * power).sum() / power.sum())

    def dominant_hz(self, power: FloatArray) -> float | None:
        """The strongest frequency above DOMINANT_MIN_HZ, interpolated between bins; None if out of range."""
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
