"""The analyzer's working arrays are reused from block to block and from one analysis to the next.

Fresh arrays of a megabyte or more per block or per call come from fresh kernel mappings whose pages
fault in on first use, which cost a short file's analysis a third of its time; the arrays kept instead
stay bounded whatever the file.
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tasks.analyzers import local
from tasks.analyzers.local import LocalAnalyzer
from tasks.analyzers.scratch import SCRATCH, Scratch
from tests.support.audio import encode, tone

# The samples of one decoded block as float32: a repeated analysis allocates less than this in all.
ONE_BLOCK_BYTES = local.BLOCK_SAMPLES * 4


def _quiet(percent: int, message: str) -> None:
    del percent, message


def _write(path: Path, seconds: float, sample_rate: int, channels: int, subtype: str) -> Path:
    samples = np.tile(tone(440.0, -6.0, seconds, sample_rate)[:, None], (1, channels))
    path.write_bytes(encode(samples, sample_rate, "WAV", subtype))
    return path


def test_a_repeated_analysis_allocates_less_than_one_block(tmp_path: Path) -> None:
    path = _write(tmp_path / "ten-seconds.wav", 10.0, 44100, 2, "PCM_16")
    analyzer = LocalAnalyzer()
    first = analyzer.analyze(path, _quiet)

    tracemalloc.start()
    try:
        again = analyzer.analyze(path, _quiet)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert again == first
    assert peak_bytes < ONE_BLOCK_BYTES


def test_the_arrays_kept_stay_bounded_whatever_the_rate_length_and_sample_type(tmp_path: Path) -> None:
    kept: list[int] = []

    def analyze_all() -> None:
        # A thread of its own: its arrays start from nothing.
        cases = [(10.0, 44100, 2, "PCM_16"), (60.0, 8000, 1, "PCM_U8"), (0.5, 768000, 1, "PCM_24")]
        cases += [(0.3, 768000, 2, "FLOAT"), (0.05, 768000, 8, "DOUBLE"), (0.01, 22050, 1, "PCM_32")]
        for index, (seconds, sample_rate, channels, subtype) in enumerate(cases):
            path = _write(tmp_path / f"{index}.wav", seconds, sample_rate, channels, subtype)
            LocalAnalyzer().analyze(path, _quiet)
            kept.append(SCRATCH.nbytes())

    thread = threading.Thread(target=analyze_all)
    thread.start()
    thread.join()

    assert len(kept) == 6
    assert kept[0] < 8 * 2**20  # 44.1 kHz
    assert kept[-1] < 16 * 2**20  # every sample type at the highest sample rate


def test_an_array_is_reused_by_name_and_only_grows() -> None:
    scratch = Scratch()

    small = scratch.array("a", (4, 10), np.float64)
    large = scratch.array("a", (8, 10), np.float64)
    smaller = scratch.array("a", (2, 3), np.float64)
    other = scratch.array("b", (2, 3), np.float64)

    assert [small.shape, large.shape, smaller.shape] == [(4, 10), (8, 10), (2, 3)]
    assert smaller.flags.c_contiguous
    assert np.shares_memory(large, smaller)
    assert not np.shares_memory(smaller, other)
    assert scratch.nbytes() == (80 + 6) * 8


def test_each_thread_has_its_own_arrays() -> None:
    mine = SCRATCH.array("test.thread", (16,), np.float64)
    theirs: list[npt.NDArray[np.float64]] = []
    thread = threading.Thread(target=lambda: theirs.append(SCRATCH.array("test.thread", (16,), np.float64)))
    thread.start()
    thread.join()

    assert not np.shares_memory(mine, theirs[0])
