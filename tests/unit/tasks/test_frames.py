"""FrameSampler: the frames cut from a signal fed in blocks are those cut from the whole signal."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.analyzers.frames import FrameSampler


def frames_of_whole(signal: np.ndarray, length: int, stride: int) -> np.ndarray:
    starts = range(0, signal.shape[0] - length + 1, stride)
    return np.array([signal[start : start + length] for start in starts]).reshape(-1, length)


def frames_in_blocks(
    signal: np.ndarray, length: int, stride: int, block: int, batch: int = 1
) -> tuple[np.ndarray, FrameSampler]:
    sampler = FrameSampler(length, stride, batch)
    buffer = np.empty(block, dtype=signal.dtype)
    taken = []
    for start in range(0, signal.shape[0], block):
        # One buffer reused for every block, the way the analyzer decodes.
        part = buffer[: signal[start : start + block].shape[0]]
        part[:] = signal[start : start + block]
        frames = sampler.take(part)
        assert frames.shape[0] == 0 or frames.shape[0] >= batch
        taken.append(frames)
    taken.append(sampler.flush())
    return np.concatenate(taken), sampler


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("block", [1, 7, 50, 64, 1000, 5000])
@pytest.mark.parametrize(("length", "stride"), [(64, 16), (64, 64), (64, 300), (10, 1)])
def test_frames_do_not_depend_on_the_block_size(length: int, stride: int, block: int, batch: int) -> None:
    signal = np.random.default_rng(1).normal(size=3001).astype(np.float32)

    taken, _ = frames_in_blocks(signal, length, stride, block, batch)

    expected = frames_of_whole(signal, length, stride)
    assert taken.dtype == np.float64
    assert taken.shape == expected.shape
    np.testing.assert_array_equal(taken, expected)


@pytest.mark.parametrize("block", [3, 100])
def test_a_signal_shorter_than_a_frame_is_left_pending_whole(block: int) -> None:
    signal = np.arange(100, dtype=np.float64)

    taken, sampler = frames_in_blocks(signal, 256, 256, block)

    assert taken.shape == (0, 256)
    np.testing.assert_array_equal(sampler.pending, signal)


def test_pending_holds_only_the_start_of_the_next_frame() -> None:
    sampler = FrameSampler(100, 100)

    sampler.take(np.arange(1050, dtype=np.float64))

    np.testing.assert_array_equal(sampler.pending, np.arange(1000, 1050))


@pytest.mark.parametrize(("length", "stride", "batch"), [(0, 10, 1), (10, 0, 1), (10, 10, 0)])
def test_length_stride_and_batch_must_be_positive(length: int, stride: int, batch: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameSampler(length, stride, batch)
