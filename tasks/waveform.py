"""The waveform task: a PNG picture of an analysed upload, because people would rather look than read.

The file is read block by block (memory stays bounded whatever its length); each of the image's
columns shows the lowest and highest sample of its stretch of time, the channels mixed to mono.
The image is stored next to the upload (`<id>.png`, same storage) and written in one step, so a reader
never sees half an image and a second run replaces it with the same picture.
"""

from __future__ import annotations

from typing import Any

from core.errors import CorruptAudio
from core.models import Job
from core.settings import QUEUE_NORMAL
from jobs import progress, task
from jobs.retention import stored_files
from jobs.runtime import get_runtime

TASK_NAME = "tasks.waveform.render_waveform"
WIDTH, HEIGHT = 800, 160


@task(name=TASK_NAME, queue=QUEUE_NORMAL, timeout="2m", retry=2, retry_intervals=[2, 10])
def render_waveform(storage_key: str, image_key: str) -> dict[str, Any]:
    """Draws the waveform of the upload `storage_key` into the PNG `image_key`; returns its size.

    Raises:
        CorruptAudio: the upload is missing or not readable audio (not retried).
    """
    # Imported here, not with the task: the API and the scheduler import this module to know the task,
    # and need no numpy; workers load it before they fork (`workers.preload`).
    from tasks.waveform_image import DECODE_ERRORS, draw, encode_png, extremes

    storage = get_runtime().storage
    try:
        with storage.local_copy(storage_key) as path:  # with object storage, a temporary download
            lows, highs, seconds = extremes(str(path))
    except FileNotFoundError:
        raise CorruptAudio("the stored upload is missing") from None
    except DECODE_ERRORS as exc:
        raise CorruptAudio(f"could not decode audio: {exc}") from None
    progress(90, "drawing")
    image = encode_png(draw(lows, highs))
    storage.put_bytes(image_key, image)
    return {"image_key": image_key, "width": WIDTH, "height": HEIGHT, "bytes": len(image), "duration_s": seconds}


@stored_files(TASK_NAME)
def _image_of(job: Job) -> list[str]:
    """The image goes with its drawing job (retention); the upload belongs to the analysis."""
    return [str(job.args[1])] if len(job.args) > 1 else []
