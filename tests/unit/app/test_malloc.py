"""The API in in-process mode hands freed analysis buffers back to the system instead of keeping them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.malloc import return_large_blocks
from core.settings import PROJECT_ROOT

# Frees one analysis-sized buffer (which raises glibc's dynamic mmap threshold), allocates the next one and
# prints whether it got a mapping of its own (unmapped when freed) or came from an arena (kept when freed).
_PROBE = """
import ctypes, sys
import numpy
sys.path.insert(0, "back-end")
from app.malloc import return_large_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert return_large_blocks()
buffer_bytes = 8 * 1024 * 1024  # 10 s of 44.1 kHz stereo as float64 is ~7 MB
first = numpy.ones(buffer_bytes // 8)
del first
before = libc.mallinfo2().hblks
second = numpy.ones(buffer_bytes // 8)
print("mapped" if libc.mallinfo2().hblks == before + 1 else "arena")
"""


def _probe(mode: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc's mallopt")
def test_a_freed_analysis_buffer_goes_back_to_the_system_once_the_threshold_is_fixed() -> None:
    assert _probe("default") == "arena"  # glibc's own behaviour: the next buffer comes from an arena, kept
    assert _probe("tuned") == "mapped"


def test_an_operator_setting_for_glibc_is_left_alone() -> None:
    assert not return_large_blocks(environ={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not return_large_blocks(environ={"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
