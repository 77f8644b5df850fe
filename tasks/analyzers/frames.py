"""Evenly spaced analysis frames cut out of a signal that arrives block by block.

The spectrum and the pitch estimate look at a bounded number of frames spread over the whole file,
so their cost does not grow with the duration. Frames may straddle block boundaries. Every frame is
copied once, straight from the blocks into its row of one array that is reused from batch to batch
(and, given by the caller, from analysis to analysis): the rows of a batch, then the frames begun and
not complete yet.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]
SampleArray = npt.NDArray[np.floating]


def rows_needed(length: int, stride: int, batch: int) -> int:
    """Rows a sampler's array needs: a batch, and the frames begun but not complete at a block's end."""
    return batch + -(-(length - 1) // stride)


class FrameSampler:
    """Frames of `length` samples starting at samples 0, `stride`, 2 * `stride`, ... of the signal.

    Frames are handed out as float64 rows, in batches of `batch` rows (`batches`), the rest at
    the end (`flush`): the analysis of a batch costs about as much in overhead as that of a single frame.
    A batch is a view of `rows` (an array of at least `rows_needed(length, stride, batch)` rows of at
    least `length` samples, allocated here when not given), valid until the sampler is used again.
    """

    def __init__(self, length: int, stride: int, batch: int = 1, rows: FloatArray | None = None) -> None:
        if length < 1 or stride < 1 or batch < 1:
            raise ValueError(f"frame length, stride and batch must be positive, got {length}, {stride}, {batch}")
        self.length = length
        self.stride = stride
        self.batch = batch
        capacity = rows_needed(length, stride, batch)
        if rows is None:
            rows = np.empty((capacity, length), dtype=np.float64)
        if rows.shape[0] < capacity or rows.shape[1] < length:
            raise ValueError(f"the frame array needs {capacity} rows of {length} samples, got {rows.shape}")
        self._rows = rows[:capacity, :length]
        self._first = 0  # index of the frame in row 0
        self._stored = 0  # index of the first frame not in the rows yet
        self._handed = 0  # rows handed out, dropped when the sampler is next used
        self._position = 0  # samples fed so far

    @property
    def pending(self) -> SampleArray:
        """The samples of the frame begun but not complete (all of them, for a signal shorter than a frame)."""
        self._drop_handed()
        frame = max(self._first, self._complete_before(self._position))
        if frame >= self._begun_before(self._position):
            return self._rows[0, :0]
        start = frame * self.stride
        return self._rows[frame - self._first, : self._position - start]

    def batches(self, block: SampleArray) -> Iterator[FloatArray]:
        """The batches of frames that `block` (the signal's next samples, 1-D) completes, each valid until the next."""
        self._drop_handed()
        start, end = self._position, self._position + block.shape[0]
        begun = self._begun_before(end)
        filled = self._first
        while filled < begun:
            upto = min(begun, self._first + self._rows.shape[0])
            self._fill(block, start, filled, upto)
            filled = self._stored = upto
            while min(upto, self._complete_before(end)) - self._first >= self.batch:
                self._handed = self.batch
                yield self._rows[: self.batch]
                self._drop_handed()
        self._position = end

    def flush(self) -> FloatArray:
        """Every frame completed and not handed out yet, as float64 rows (valid until the sampler is used again)."""
        self._drop_handed()
        complete = max(0, min(self._begun_before(self._position), self._complete_before(self._position)) - self._first)
        self._handed = complete
        return self._rows[:complete]

    def _begun_before(self, end: int) -> int:
        """Number of frames that start before sample `end`."""
        return -(-end // self.stride)

    def _complete_before(self, end: int) -> int:
        """Number of frames that end at or before sample `end`."""
        return 0 if end < self.length else (end - self.length) // self.stride + 1

    def _fill(self, block: SampleArray, start: int, first: int, upto: int) -> None:
        """Copies into the rows of frames `first` to `upto` (excluded) their samples found in `block`."""
        length, stride, end = self.length, self.stride, start + block.shape[0]
        # The frames lying wholly in the block: one strided copy.
        inside_from = max(first, -(-start // stride))
        inside_upto = min(upto, self._complete_before(end))
        if inside_upto > inside_from:
            windows = sliding_window_view(block, length)[inside_from * stride - start :: stride]
            rows = self._rows[inside_from - self._first : inside_upto - self._first]
            np.copyto(rows, windows[: inside_upto - inside_from])
        else:
            inside_from = inside_upto = first
        # The frames that straddle the block's start or end (or both): piece by piece.
        for frame in (*range(first, inside_from), *range(max(inside_upto, first), upto)):
            frame_start = frame * stride
            low, high = max(frame_start, start), min(frame_start + length, end)
            if low < high:
                row = self._rows[frame - self._first]
                row[low - frame_start : high - frame_start] = block[low - start : high - start]

    def _drop_handed(self) -> None:
        """Forgets the rows handed out; the frames stored after them (begun, maybe complete) move up to row 0."""
        handed = self._handed
        if handed:
            kept = self._stored - self._first - handed
            if kept > 0:
                self._rows[:kept] = self._rows[handed : handed + kept]
            self._first += handed
            self._handed = 0
