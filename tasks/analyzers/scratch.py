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

A forking worker's work-horse lives for one job: arrays of its own would be faulted in (fresh zero
pages) and freed again on every job. So a forking worker creates a `SharedArena` once, before its
first fork (`share_with_work_horses`): a shared anonymous mapping whose pages, once written, stay
resident in the worker, and from which its work-horses carve their arrays. Only the work-horses of
the worker that made it use it (a process whose parent is the arena's owner), and a worker runs one
work-horse at a time, so no two of them ever use it at once; its pages hold nothing from one job to
the next that a job relies on (the arrays are uninitialized). The worker itself, a no-fork worker and
an in-process deployment keep their per-thread arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

ALIGNMENT = 64  # bytes: each array of the arena starts on a cache line
HEADER_BYTES = ALIGNMENT  # the arena's first bytes: the most any work-horse used (uint64), shared
MADV_POPULATE_WRITE = 23  # Linux >= 5.14: map (and allocate) the range's pages without a fault per page


class SharedArena:
    """A shared anonymous mapping (`mmap.mmap(-1, n)`: MAP_SHARED) handed out in slices, for the children
    forked after it was made. Each child starts from the owner's state (nothing handed out) and hands out
    slices one after the other; the most any child used is kept in the mapping for the next one."""

    def __init__(self, nbytes: int) -> None:
        self.owner = os.getpid()
        self.size = nbytes
        self._map = mmap.mmap(-1, nbytes)  # anonymous, MAP_SHARED: written pages are the worker's too
        self.bytes: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8)
        self._high_water = self.bytes[:8].view(np.uint64)
        self._used = HEADER_BYTES
        self._lock = threading.Lock()

    def for_this_process(self) -> bool:
        """True in a child of the arena's owner (a work-horse of the worker that made it)."""
        return os.getppid() == self.owner

    def take(self, nbytes: int) -> npt.NDArray[np.uint8] | None:
        """The next `nbytes` of the mapping for this process's own use; None when they do not fit."""
        with self._lock:
            start = -(-self._used // ALIGNMENT) * ALIGNMENT
            if start + nbytes > self.size:
                return None
            self._used = start + nbytes
            if self._used > int(self._high_water[0]):
                self._high_water[0] = self._used
            return self.bytes[start : start + nbytes]

    def high_water(self) -> int:
        """The most bytes any child has used so far."""
        return int(self._high_water[0])

    def prefault(self) -> bool:
        """Maps the pages the children have used so far into this process's page table in one call (instead of
        a page fault on each first write); False where the kernel cannot (before Linux 5.14)."""
        length = -(-self.high_water() // mmap.PAGESIZE) * mmap.PAGESIZE
        if length == 0:
            return True
        return _madvise(self.bytes.ctypes.data, length, MADV_POPULATE_WRITE)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _madvise(address: int, length: int, advice: int) -> bool:
    result: int = _libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), ctypes.c_int(advice))
    return result == 0


_arena: SharedArena | None = None


def share_with_work_horses(nbytes: int) -> SharedArena | None:
    """In a forking worker, before it forks: the arena its work-horses take their arrays from (made once per
    worker process; a process forked from another worker makes its own). None when `nbytes` is 0."""
    global _arena
    if nbytes <= 0:
        return None
    if _arena is None or _arena.owner != os.getpid():
        _arena = SharedArena(nbytes)
    return _arena


def shared_arena() -> SharedArena | None:
    """The arena this process's arrays come from, if it is a work-horse of a worker that made one."""
    arena = _arena
    return arena if arena is not None and arena.for_this_process() else None


class Scratch(threading.local):
    """Named arrays of this thread, each as large as the largest request so far."""

    def __init__(self) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        self._pid = os.getpid()

    def array(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> npt.NDArray[Any]:
        """A C-contiguous array of `shape` and `dtype` (uninitialized) that the next request of `name` reuses.

        The caller must be done with it before asking for `name` again, and no two users may share a name.
        A forked child starts from none of its parent's (each page it wrote would be a copy of the parent's).
        """
        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        size = math.prod(shape)
        kept = self._arrays.get(name)
        if kept is None or kept.dtype != dtype or kept.shape[0] < size:
            kept = _new_array(size, np.dtype(dtype))
            self._arrays[name] = kept
        return kept[:size].reshape(shape)

    def nbytes(self) -> int:
        """Bytes held by this thread's arrays."""
        return sum(kept.nbytes for kept in self._arrays.values())


def _new_array(size: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    arena = shared_arena()
    region = arena.take(size * dtype.itemsize) if arena is not None else None
    if region is None:
        return np.empty(size, dtype=dtype)
    return region.view(dtype)


SCRATCH = Scratch()
