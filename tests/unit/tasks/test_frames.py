"""FrameSampler: the frames cut from a signal fed in blocks are those cut from the whole signal."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.analyzers.frames import FrameSampler, rows_needed


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
        for frames in sampler.batches(part):
            assert frames.shape[0] == batch
            taken.append(frames.copy())  # a batch is valid until the sampler is used again
    taken.append(sampler.flush().copy())
    return np.concatenate(taken), sampler


@pytest.mark.parametrize("batch", [1, 5, 16])
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

    assert sum(batch.shape[0] for batch in sampler.batches(np.arange(1050, dtype=np.float64))) == 10

    np.testing.assert_array_equal(sampler.pending, np.arange(1000, 1050))


@pytest.mark.parametrize(("length", "stride", "batch"), [(0, 10, 1), (10, 0, 1), (10, 10, 0)])
def test_length_stride_and_batch_must_be_positive(length: int, stride: int, batch: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameSampler(length, stride, batch)


@pytest.mark.parametrize(("length", "stride", "batch"), [(64, 16, 5), (64, 64, 1), (10, 1, 3), (64, 300, 2)])
def test_the_frames_of_a_run_fit_in_the_rows_given_and_are_cut_into_them(length: int, stride: int, batch: int) -> None:
    # The rows are all the sampler needs, whatever the blocks: nothing else grows with the signal.
    rows = np.full((rows_needed(length, stride, batch), length + 3), np.nan)
    sampler = FrameSampler(length, stride, batch, rows)
    signal = np.random.default_rng(2).normal(size=2000)

    taken = []
    for start in range(0, signal.shape[0], 333):
        for frames in sampler.batches(signal[start : start + 333]):
            assert np.shares_memory(frames, rows)
            taken.append(frames.copy())
    taken.append(sampler.flush().copy())

    np.testing.assert_array_equal(np.concatenate(taken), frames_of_whole(signal, length, stride))


def test_rows_too_few_for_a_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        FrameSampler(64, 16, 5, np.empty((rows_needed(64, 16, 5) - 1, 64)))
