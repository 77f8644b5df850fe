"""The waveform task's picture: the extremes of an upload's samples per column, drawn and encoded as a PNG.

Apart from `tasks.waveform` so that importing the task (the API, the scheduler) loads no numpy.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt
import soundfile

from jobs import progress
from tasks.waveform import HEIGHT, WIDTH

BLOCK_FRAMES = 1 << 16
BACKGROUND = (255, 255, 255)
WAVE = (37, 99, 235)
AXIS = (203, 213, 225)
# What reading an undecodable file raises.
DECODE_ERRORS = (soundfile.SoundFileError, RuntimeError)


def extremes(path: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float]:
    """Per column, the lowest and highest sample (mono mix), reading the file block by block."""
    info = soundfile.info(path)
    total = max(int(info.frames), 1)
    lows = np.zeros(WIDTH, dtype=np.float32)
    highs = np.zeros(WIDTH, dtype=np.float32)
    position = 0
    for block in soundfile.blocks(path, blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
        mono = block.mean(axis=1)
        if not mono.shape[0]:
            continue
        columns = np.minimum((np.arange(position, position + mono.shape[0]) * WIDTH) // total, WIDTH - 1)
        starts = np.flatnonzero(np.diff(columns)) + 1
        starts = np.concatenate(([0], starts))
        where = columns[starts]
        lows[where] = np.minimum(lows[where], np.minimum.reduceat(mono, starts))
        highs[where] = np.maximum(highs[where], np.maximum.reduceat(mono, starts))
        position += mono.shape[0]
        progress(min(89, 89 * position // total), "reading samples")
    return lows, highs, position / info.samplerate if info.samplerate else 0.0


def draw(lows: npt.NDArray[np.float32], highs: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """An RGB image: the band between each column's low and high, around a centre line."""
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[HEIGHT // 2, :] = AXIS
    half = (HEIGHT - 1) / 2
    top = np.floor(half - np.clip(highs, -1, 1) * half).astype(np.int32)
    bottom = np.ceil(half - np.clip(lows, -1, 1) * half).astype(np.int32)
    rows = np.arange(HEIGHT)[:, None]
    image[(rows >= top[None, :]) & (rows <= bottom[None, :])] = WAVE
    return image


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """A truecolour 8-bit PNG of `rgb` (height x width x 3), with no filter (flat colours compress well)."""
    height, width, _ = rgb.shape
    raw = np.concatenate((np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, width * 3)), axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
