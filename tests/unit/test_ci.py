"""CI runs what the README offers a newcomer: the whole suite, then lint and types."""

from __future__ import annotations

import shlex

from core.settings import PROJECT_ROOT


def _commands() -> list[list[str]]:
    lines = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_test_suite_then_lint_and_types() -> None:
    commands = _commands()
    assert ["make", "test"] in commands
    assert ["make", "lint"] in commands
    assert commands.index(["make", "test"]) < commands.index(["make", "lint"])
    assert ["set", "-euo", "pipefail"] in commands  # a failing step fails the run
