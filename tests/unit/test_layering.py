"""The layering, checked on the source: core ← jobs ← tasks ← {app, workers}, nothing imports back up.

The queue layer (`jobs`) imports no web framework except its adapter `jobs.web`, and nothing of the
audio service, so a team can copy or install `core`, `jobs`, `redis_client.py` and `workers` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

WEB = {"fastapi", "starlette", "sse_starlette", "uvicorn", "a2wsgi", "rq_dashboard", "app"}
AUDIO = {"numpy", "soundfile", "tasks", "app"}

# Package (a directory, or a module file) → top-level names it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "core": {"jobs", "tasks", "app", "workers", "redis_client", *WEB},
    "redis_client.py": {"jobs", "tasks", "app", "workers", *WEB},
    "jobs": {"workers", *WEB, *AUDIO},
    "jobs/web": {"workers", "tasks", "app", "numpy", "soundfile"},
    "tasks": {"app", "workers", *WEB},
    "workers": WEB,
}


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions included), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_of(package: str) -> list[Path]:
    root = PROJECT_ROOT / package
    if root.is_file():
        return [root]
    files = sorted(root.rglob("*.py"))
    if package == "jobs":  # the adapter has its own, looser rule
        files = [path for path in files if "web" not in path.relative_to(root).parts]
    return files


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_against_the_layering(package: str) -> None:
    assert files_of(package), package
    breaches = [
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for path in files_of(package)
        for name in sorted(imported_names(path))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not breaches, breaches


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from fastapi import FastAPI\n    import tasks.waveform\n")
    assert imported_names(sample) == {"os", "fastapi", "tasks.waveform"}
