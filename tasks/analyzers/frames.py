"""Evenly spaced analysis frames cut out of a signal that arrives block by block.

The spectrum and the pitch estimate look at a bounded number of frames spread over the whole file,
so their cost does not grow with the duration. Frames may straddle block boundaries; between blocks
only the start of the next, incomplete frame is kept.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]
SampleArray = npt.NDArray[np.floating]


class FrameSampler:
    """Frames of `length` samples starting at samples 0, `stride`, 2 * `stride`, ... of the signal.

    Frames are handed out in batches of at least `batch` rows (`take`), the rest at the end (`flush`):
    the analysis of a batch costs about as much in overhead as that of a single frame.
    """

    def __init__(self, length: int, stride: int, batch: int = 1) -> None:
        if length < 1 or stride < 1 or batch < 1:
            raise ValueError(f"frame length, stride and batch must be positive, got {length}, {stride}, {batch}")
        self.length = length
        self.stride = stride
        self.batch = batch
        self._ready: list[SampleArray] = []  # frames cut but not handed out yet
        self._ready_rows = 0
        self._next = 0  # absolute position of the next frame's first sample
        self._position = 0  # absolute position of the next block's first sample
        # The samples from the next frame's start up to `_position`, when that frame has begun.
        self._carry: SampleArray = np.zeros(0, dtype=np.float64)

    @property
    def pending(self) -> SampleArray:
        """The samples of the frame begun but not complete (all of them, for a signal shorter than a frame)."""
        return self._carry

    def take(self, block: SampleArray) -> FloatArray:
        """Frames that `block` (the signal's next samples, 1-D) completes, as float64 rows, once a batch is ready."""
        self._cut(block)
        if self._ready_rows < self.batch:
            return np.zeros((0, self.length), dtype=np.float64)
        return self.flush()

    def flush(self) -> FloatArray:
        """Every frame cut and not handed out yet, as float64 rows."""
        rows = _rows(self._ready, self.length)
        self._ready, self._ready_rows = [], 0
        return rows

    def _cut(self, block: SampleArray) -> None:
        length, count = self.length, block.shape[0]
        pieces = self._ready
        if self._carry.shape[0]:
            carry_start = self._position - self._carry.shape[0]
            head = np.concatenate((self._carry, block[: length - 1]))
            starts = []
            while self._next < self._position and self._next - carry_start + length <= head.shape[0]:
                starts.append(self._next - carry_start)
                self._next += self.stride
            if starts:
                # Copied: `head` is rebuilt for every block.
                pieces.append(np.stack([head[start : start + length] for start in starts]))
                self._ready_rows += len(starts)
            if self._next < self._position:
                # The block is too short to complete the frame begun before it.
                self._carry = np.concatenate((self._carry[self._next - carry_start :], block))
                self._position += count
                return
        offset = self._next - self._position
        if offset + length <= count:
            whole = (count - offset - length) // self.stride + 1
            # Copied: the caller may reuse the block's memory for the next one.
            pieces.append(np.array(sliding_window_view(block, length)[offset :: self.stride][:whole]))
            self._ready_rows += whole
            self._next += whole * self.stride
        keep_from = self._next - self._position
        self._carry = block[keep_from:].copy() if keep_from < count else block[:0].copy()
        self._position += count


def _rows(pieces: list[SampleArray], length: int) -> FloatArray:
    if not pieces:
        return np.zeros((0, length), dtype=np.float64)
    return np.concatenate(pieces, axis=0, dtype=np.float64)
