"""glibc's allocator, set for an API that runs analyses in-process, so that what they free goes back to the system.

glibc serves an allocation of at least its mmap threshold with a mapping of its own, unmapped when freed;
smaller ones come from arenas, whose freed memory mostly stays in the process. The threshold starts at
128 KiB but rises to the size of any mapped block that is freed (up to 32 MiB): after the first analysis,
the multi-megabyte numpy buffers of the next ones are carved from arenas and stay there. Measured with
`bench/run.py soak`, the API kept 230-460 MB after 200 jobs instead of ~115 MB. Setting the threshold
explicitly also turns that rise off. Operators who tune glibc themselves (`MALLOC_MMAP_THRESHOLD_` or
`GLIBC_TUNABLES`) keep their choice.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1024 * 1024  # analysis buffers (megabytes) get their own mappings; request objects do not
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def return_large_blocks(environ: Mapping[str, str] = os.environ) -> bool:
    """Fixes glibc's mmap threshold at `MMAP_THRESHOLD_BYTES` for this process.

    Returns:
        Whether it was set: not on another C library, nor when the environment tunes it already.
    """
    if "MALLOC_MMAP_THRESHOLD_" in environ or "mmap_threshold" in environ.get("GLIBC_TUNABLES", ""):
        return False
    if not _is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; in-process jobs may leave freed memory in the API")
        return False
    return True
