"""Entry point of `make bench`: `.venv/bin/python bench/run.py [--quick]`, from the repository root."""

from __future__ import annotations

import sys
from pathlib import Path


def _run() -> int:
    # Run as a script, Python puts bench/ first on sys.path; the benchmarks import from the repository
    # root (core, devserver, tests.support, bench), so the root takes its place.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.main import main

    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_run())
