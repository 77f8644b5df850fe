"""The Dockerfile: a pinned slim base, a non-root user, the project installed with its PostgreSQL extra.

No container daemon runs here, so the image is not built by the tests: the file is read, and
hadolint (from PyPI) lints it. README, "Deploying", says what was run and what only validated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def test_every_stage_starts_from_python_3_11_slim_pinned_by_version_and_digest() -> None:
    instructions = _instructions()
    base = next(arguments for keyword, arguments in instructions if keyword == "ARG" and "PYTHON_IMAGE=" in arguments)
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]

    assert PINNED_BASE.fullmatch(base.partition("=")[2]), base
    assert stages
    assert all(stage.split()[0] == "${PYTHON_IMAGE}" for stage in stages)
    assert "latest" not in DOCKERFILE.read_text()


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _instructions() if keyword == "USER"]
    assert users, "no USER: the processes would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_project_is_installed_with_pip_and_its_postgres_extra() -> None:
    runs = " ".join(arguments for keyword, arguments in _instructions() if keyword == "RUN")
    assert 'pip install --no-cache-dir ".[postgres]"' in runs
    assert "apt-get" not in runs  # libsndfile comes inside the soundfile wheel; nothing else is needed


def test_the_build_context_holds_every_package_the_project_installs() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs: dict[str, str] = pyproject.get("package-dir", {})
    roots = {name.split(".")[0] for name in pyproject["packages"]}
    top_level = {package_dirs.get(name, name).split("/")[0] for name in roots}
    needed = top_level | {f"{module}.py" for module in pyproject["py-modules"]} | {"pyproject.toml", "README.md"}
    needed |= {"alembic.ini", "migrations"}  # `alembic upgrade head` runs from the image's working directory
    copied = " ".join(arguments for keyword, arguments in _instructions() if keyword == "COPY")
    allowed = {line.strip().lstrip("!").rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}

    for name in needed:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", copied), f"{name} is not copied into the image"
        assert name in allowed, f"{name} is excluded from the build context by .dockerignore"
    assert DOCKERIGNORE.read_text().splitlines()[1:2] == ["*"], ".dockerignore must start from nothing"


def test_hadolint_finds_nothing_to_fix() -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra installs it on Linux x86_64)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
