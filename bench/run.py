"""Entry point of `make bench`, from the repository root.

`.venv/bin/python bench/run.py [--quick]`: latency and throughput in both modes.
`.venv/bin/python bench/run.py soak [--jobs N]`: memory of the API and workers after N jobs (bench/soak_memory.py).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _run() -> int:
    # Run as a script, Python puts bench/ first on sys.path; the benchmarks import from the repository
    # root (core, devserver, tests.support, bench), so the root takes its place.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    if sys.argv[1:2] == ["soak"]:
        from bench.soak_memory import main as soak

        return soak(sys.argv[2:])
    from bench.main import main

    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_run())
