"""Time-domain statistics, accumulated block by block: levels, silence, clipping, zero crossings.

Level features (RMS, peak, clipping, silence) use every channel; the zero-crossing rate uses the
mono mix. Each block is read a few times in place; nothing is kept between blocks but counters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.errors import CorruptAudio
from tasks.analyzers.frames import SampleArray
from tasks.analyzers.scratch import SCRATCH

# Levels are reported down to this floor; digital silence (all zeros) has no finite dB value, and
# anything quieter than this is far below the noise floor of 16-bit audio (about -98 dBFS).
DBFS_FLOOR = -120.0
# Silence is measured on frames this long: short enough to catch pauses between words, long enough
# for a stable RMS.
SILENCE_FRAME_S = 0.050
# A frame quieter than this counts as silent: roughly the noise of a quiet room after recording gain.
SILENCE_THRESHOLD_DBFS = -50.0


def dbfs(magnitude: float) -> float:
    """20*log10(magnitude) with full scale 1.0, clamped to DBFS_FLOOR."""
    if magnitude <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(magnitude))


def _sum_squares(samples: SampleArray) -> float:
    # einsum, not np.dot: BLAS may spread a long dot product over threads, slow on a busy machine.
    return float(np.einsum("i,i->", samples, samples))


class Levels:
    """Running time-domain statistics of a signal of `channels` channels."""

    def __init__(self, sample_rate: int, channels: int, clip_threshold: float) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
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
        self.silence_len = max(1, round(SILENCE_FRAME_S * sample_rate))
        # A silence frame is silent when its sum of squares over all channels is under this.
        self.silent_sum = self.silence_len * channels * 10.0 ** (SILENCE_THRESHOLD_DBFS / 10.0)
        # The last silence frame, begun but not complete: its sum of squares and length.
        self.pending_sum = 0.0
        self.pending_len = 0

    def add(self, block: SampleArray, mono: SampleArray) -> None:
        """Fold in one block of shape (frames, channels), C-contiguous, and its mono mix."""
        flat = block.reshape(-1)
        high, low = float(flat.max()), float(flat.min())
        if not (math.isfinite(high) and math.isfinite(low)):
            raise CorruptAudio("could not decode audio: the file holds invalid (NaN or infinite) samples")
        block_peak = max(high, -low)
        self.peak = max(self.peak, block_peak)
        if block_peak >= self.clip_threshold:
            self.clipped += int(np.count_nonzero(np.abs(flat) >= self.clip_threshold))
        self._add_silence(block)
        if not math.isfinite(self.sum_squares):
            raise CorruptAudio("could not decode audio: the file holds invalid (NaN or infinite) samples")
        self.mono_sum_squares += _sum_squares(mono) if self.channels > 1 else 0.0
        count = mono.shape[0]
        negative = np.less(mono, 0.0, out=SCRATCH.array("levels.negative", (count,), np.bool_))
        flips = np.not_equal(
            negative[1:], negative[:-1], out=SCRATCH.array("levels.flips", (max(0, count - 1),), np.bool_)
        )
        self.crossings += int(np.count_nonzero(flips))
        if self.last_negative is not None and bool(negative[0]) != self.last_negative:
            self.crossings += 1
        self.last_negative = bool(negative[-1])
        self.frames_read += block.shape[0]

    def _add_silence(self, block: SampleArray) -> None:
        """Sums of squares per silence frame (aligned on the start of the file), and their total."""
        size, start = self.silence_len, 0
        if self.pending_len:
            start = min(block.shape[0], size - self.pending_len)
            self._extend_pending(block[:start])
            if self.pending_len == size:
                self._close_pending()
        whole = (block.shape[0] - start) // size
        if whole:
            frames = block[start : start + whole * size].reshape(whole, size * self.channels)
            sums = np.einsum("ij,ij->i", frames, frames)
            self.sum_squares += float(sums.sum(dtype=np.float64))
            self.silent_frames += int(np.count_nonzero(sums < self.silent_sum))
            self.silence_frames += whole
        self._extend_pending(block[start + whole * size :])

    def _extend_pending(self, part: SampleArray) -> None:
        if part.shape[0]:
            part_sum = _sum_squares(part.reshape(-1))
            self.sum_squares += part_sum
            self.pending_sum += part_sum
            self.pending_len += part.shape[0]

    def _close_pending(self) -> None:
        self.silent_frames += self._pending_is_silent()
        self.silence_frames += 1
        self.pending_sum, self.pending_len = 0.0, 0

    def _pending_is_silent(self) -> bool:
        return bool(self.pending_sum < self.silent_sum * self.pending_len / self.silence_len)

    def result(self) -> dict[str, Any]:
        """rms_dbfs, peak_dbfs, silence_ratio, clipping_ratio and zero_crossing_rate."""
        silent, frames = self.silent_frames, self.silence_frames
        # A last, partial silence frame counts when it is at least half a frame (or the whole file).
        if self.pending_len and (2 * self.pending_len >= self.silence_len or frames == 0):
            silent += self._pending_is_silent()
            frames += 1
        samples = self.frames_read * self.channels
        return {
            "rms_dbfs": round(dbfs(math.sqrt(self.sum_squares / samples)), 3),
            "peak_dbfs": round(dbfs(self.peak), 3),
            "silence_ratio": round(silent / max(1, frames), 6),
            "clipping_ratio": round(self.clipped / samples, 6),
            "zero_crossing_rate": round(self.crossings * self.sample_rate / self.frames_read, 2),
        }

    def mono_dbfs(self) -> float:
        """The RMS level of the mono mix (the same as the RMS level for a single channel)."""
        total = self.mono_sum_squares if self.channels > 1 else self.sum_squares
        return dbfs(math.sqrt(total / self.frames_read))
