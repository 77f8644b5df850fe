"""Local audio analysis with numpy and libsndfile (through soundfile).

The file is decoded block by block and every statistic is accumulated as the blocks go by, so memory
stays bounded whatever the duration (an hour of MP3 decodes to more than 1 GB of float samples).
The time-domain statistics see every sample (`levels`); the spectrum and the pitch look at a bounded
number of frames spread over the file (`spectrum`, `pitch`), so their cost does not grow with it.

Level features (RMS, peak, clipping, silence) use every channel; spectral features, the zero-crossing
rate and f0 use the mono mix (the mean of the channels).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import soundfile as sf

from core.errors import CorruptAudio
from tasks.analyzers.base import ProgressFn
from tasks.analyzers.frames import SampleArray
from tasks.analyzers.levels import DBFS_FLOOR, Levels
from tasks.analyzers.pitch import PitchTrack
from tasks.analyzers.scratch import SCRATCH
from tasks.analyzers.spectrum import Spectrum

__all__ = ["DBFS_FLOOR", "LocalAnalyzer"]

_T = TypeVar("_T")

# --- constants ------------------------------------------------------------------------------------

# Samples (all channels together) decoded per block: bounds memory (1 MB of samples and as much in
# temporaries) whatever the channel count or sample rate; small enough for each pass over a block to
# stay in the CPU cache, long enough (1.5 s of 44.1 kHz stereo) to keep per-block overhead small.
BLOCK_SAMPLES = 2**17
# A sample at or above this magnitude counts as clipped: a little below 1.0 so clipping that went
# through a lossy codec or a gain stage still counts.
CLIPPING_THRESHOLD = 0.999
# 8-bit PCM cannot go above 127/128 on the positive side, so clipping there stops short of 0.999.
CLIPPING_THRESHOLD_8_BIT = 127 / 128
# Highest sample rate accepted: the highest rate in real use (DXD masters, 768 kHz DACs); larger
# values come from broken headers and would make the per-frame buffers grow without bound.
MAX_SAMPLE_RATE_HZ = 768_000
# Progress reported while decoding goes from READ_PROGRESS_START to READ_PROGRESS_END, in steps of at
# least PROGRESS_STEP percent, so a file of any length yields at most about 20 progress calls.
READ_PROGRESS_START = 5
READ_PROGRESS_END = 90
PROGRESS_STEP = 5
SPECTRAL_PROGRESS = 95

_EIGHT_BIT_SUBTYPES = frozenset({"PCM_S8", "PCM_U8"})
# Integer PCM is decoded as integers and scaled to float32 here, several times faster than
# libsndfile's own conversion to float; float32 holds 16- and 24-bit samples exactly. libsndfile
# widens 8-bit samples to the top of an int16 and 24-bit ones to the top of an int32.
_INTEGER_READS: dict[str, tuple[type[np.signedinteger[Any]], float]] = {
    "PCM_S8": (np.int16, 2.0**-15),
    "PCM_U8": (np.int16, 2.0**-15),
    "PCM_16": (np.int16, 2.0**-15),
    "PCM_24": (np.int32, 2.0**-31),
    "PCM_32": (np.int32, 2.0**-31),
}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_REASON_CHARS = 160


# --- public API -----------------------------------------------------------------------------------


class LocalAnalyzer:
    """Analyzes audio files on this machine with libsndfile and numpy."""

    def analyze(self, path: Path, progress: ProgressFn) -> dict[str, Any]:
        """Decode the file at `path` block by block and return its statistics.

        The result has these keys (plain floats, ints, strings or None):

        - `duration_s`, `sample_rate`, `channels`, `format` (e.g. "WAV"), `subtype` (e.g. "PCM_16").
        - `rms_dbfs`, `peak_dbfs`: 20*log10 of the RMS / peak magnitude over all channels, full scale
          being 1.0 (a full-scale sine has RMS -3.01 dBFS). Clamped to `DBFS_FLOOR` (-120.0), which
          is what digital silence reports.
        - `silence_ratio`: fraction of `levels.SILENCE_FRAME_S` frames whose RMS over all channels is
          under `levels.SILENCE_THRESHOLD_DBFS`.
        - `clipping_ratio`: fraction of samples (all channels) with magnitude >= `CLIPPING_THRESHOLD`.
        - `zero_crossing_rate`: sign changes of the mono mix per second (a 440 Hz sine gives 880).
        - `spectral_centroid_hz`, `dominant_frequency_hz`: from the power spectrum of the mono mix
          averaged over at most `spectrum.SPECTRUM_MAX_FRAMES` frames; None when the mono mix is silent.
        - `f0_median_hz`: median fundamental frequency over the voiced ones of at most
          `pitch.F0_MAX_FRAMES` frames (YIN, see `pitch`), None when no frame is voiced (silence,
          noise, or pitch outside 50-2000 Hz).

        Args:
            path: The audio file; any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...).
            progress: Called with (percent, message), percentages non-decreasing, never 100.
                Exceptions it raises propagate unchanged (that is how a running job is canceled).

        Returns:
            The statistics described above.

        Raises:
            CorruptAudio: The file cannot be decoded, has no samples, or holds invalid samples.
            OSError: The file cannot be opened at all (missing, unreadable): not a decoding problem.
        """
        progress(0, "decoding audio")
        with path.open("rb") as stream:
            # libsndfile only ever sees the open file's descriptor, never the path, so its messages
            # cannot contain the path; it reads the descriptor itself, without calls back into Python.
            sound = _guard(lambda: sf.SoundFile(stream.fileno(), closefd=False))
            with sound:
                return self._analyze_open(sound, progress)

    def _analyze_open(self, sound: Any, progress: ProgressFn) -> dict[str, Any]:
        sample_rate = int(sound.samplerate)
        channels = int(sound.channels)
        total_frames = int(sound.frames)
        if total_frames <= 0:
            raise CorruptAudio("audio file contains no samples")
        if not 0 < sample_rate <= MAX_SAMPLE_RATE_HZ or channels <= 0:
            raise CorruptAudio("audio file header is invalid: unsupported sample rate or channel count")
        subtype = str(sound.subtype)
        clip_threshold = CLIPPING_THRESHOLD_8_BIT if subtype in _EIGHT_BIT_SUBTYPES else CLIPPING_THRESHOLD
        levels = Levels(sample_rate, channels, clip_threshold)
        spectrum = Spectrum(sample_rate, total_frames)
        pitch = PitchTrack(sample_rate, total_frames)

        last_percent = 0
        for block in _blocks(sound, subtype, max(1, BLOCK_SAMPLES // channels)):
            mono = _mono_mix(block)
            levels.add(block, mono)
            spectrum.add(mono)
            pitch.add(mono)
            done = min(levels.frames_read, total_frames)
            percent = READ_PROGRESS_START + (READ_PROGRESS_END - READ_PROGRESS_START) * done // total_frames
            if percent >= last_percent + PROGRESS_STEP:
                last_percent = percent
                progress(percent, f"decoded {done / sample_rate:.0f} of {total_frames / sample_rate:.0f} s")

        if levels.frames_read == 0:
            raise CorruptAudio("could not decode audio: no samples could be decoded")
        progress(SPECTRAL_PROGRESS, "computing spectral features")
        power = spectrum.power()
        spectral_silent = levels.mono_dbfs() <= DBFS_FLOOR or not power.any()
        dominant = None if spectral_silent else spectrum.dominant_hz(power)
        f0 = pitch.median_hz()
        return {
            "duration_s": round(levels.frames_read / sample_rate, 4),
            "sample_rate": sample_rate,
            "channels": channels,
            "format": str(sound.format),
            "subtype": subtype,
            **levels.result(),
            "spectral_centroid_hz": None if spectral_silent else round(spectrum.centroid_hz(power), 2),
            "dominant_frequency_hz": None if dominant is None else round(dominant, 2),
            "f0_median_hz": None if f0 is None else round(f0, 2),
        }


# --- decoding -------------------------------------------------------------------------------------


def _blocks(sound: Any, subtype: str, block_frames: int) -> Iterator[SampleArray]:
    """The decoded samples, block after block, shape (frames, channels), full scale 1.0.

    Every block reuses the same buffers (the thread's, from one analysis to the next): it is valid
    until the next one is asked for.
    """
    channels = int(sound.channels)
    read_type, scale = _INTEGER_READS.get(subtype, (np.float64, 1.0))
    raw = SCRATCH.array(f"decode.{np.dtype(read_type).name}", (block_frames, channels), read_type)
    scaled = (
        SCRATCH.array("decode.scaled", (block_frames, channels), np.float32) if read_type is not np.float64 else raw
    )
    while True:
        block: npt.NDArray[Any] = _guard(lambda: sound.read(always_2d=True, out=raw))
        count = block.shape[0]
        if count == 0:
            return
        if scaled is raw:
            yield block
        else:
            yield np.multiply(block, np.float32(scale), out=scaled[:count], dtype=np.float32)


def _mono_mix(block: SampleArray) -> SampleArray:
    """The mean of the channels (a view of the only one for mono), valid until the next block's."""
    count, channels = block.shape
    if channels == 1:
        return block[:, 0]
    # Channel by channel: a reduction along the short channel axis is several times slower.
    mono: SampleArray = SCRATCH.array(f"mono.{block.dtype.name}", (count,), block.dtype.type)
    np.add(block[:, 0], block[:, 1], out=mono)
    for channel in range(2, channels):
        mono += block[:, channel]
    mono *= 1.0 / channels
    return mono


# --- decoding errors ------------------------------------------------------------------------------


def _guard(call: Callable[[], _T]) -> _T:
    """Run a libsndfile call, turning its failures into CorruptAudio with a readable message."""
    try:
        return call()
    except sf.LibsndfileError as exc:
        raise CorruptAudio(f"could not decode audio: {_reason(str(exc.error_string))}") from exc
    except (RuntimeError, ValueError, TypeError, EOFError) as exc:
        # soundfile raises these for inconsistent files (odd sizes, unknown subtypes); their text
        # may quote internals, so only the kind of failure is reported.
        raise CorruptAudio("could not decode audio: the file is damaged or not a supported format") from exc


def _reason(text: str) -> str:
    """libsndfile's error string, cleaned up into a short clause ("Error : x." -> "x")."""
    text = _CONTROL_CHARS.sub(" ", text).strip()
    text = re.sub(r"^error\s*:\s*", "", text, flags=re.IGNORECASE).rstrip(". ")
    if not text:
        return "unknown decoder error"
    return text[:_MAX_REASON_CHARS]
