"""Working arrays reused by every analysis a thread runs, instead of fresh ones per block and per call.

An array of a megabyte or more is not served from the allocator's heap but from a fresh mapping of
the kernel's, whose pages fault in one by one on first use: allocated per block, the decode, frame and
FFT buffers made a third of a short file's analysis time page faults, and more in a process that
analyzes files of very different lengths in turn (glibc's thresholds follow the last sizes freed).
Reused, their pages are touched once per thread.

Each array is known by name and only ever grows, to the largest size asked for; the sizes are bounded
by the analyzer's constants (block and batch sizes in samples, whatever the sample rate or the
duration): about 6 MB in all at 44.1 kHz, and about 11 MB at the highest sample rate accepted with
every sample type decoded. They are per thread, because an in-process deployment runs analyses in
several threads at once.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt


class Scratch(threading.local):
    """Named arrays of this thread, each as large as the largest request so far."""

    def __init__(self) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> npt.NDArray[Any]:
        """A C-contiguous array of `shape` and `dtype` (uninitialized) that the next request of `name` reuses.

        The caller must be done with it before asking for `name` again, and no two users may share a name.
        """
        size = math.prod(shape)
        kept = self._arrays.get(name)
        if kept is None or kept.dtype != dtype or kept.shape[0] < size:
            kept = np.empty(size, dtype=dtype)
            self._arrays[name] = kept
        return kept[:size].reshape(shape)

    def nbytes(self) -> int:
        """Bytes held by this thread's arrays."""
        return sum(kept.nbytes for kept in self._arrays.values())


SCRATCH = Scratch()
