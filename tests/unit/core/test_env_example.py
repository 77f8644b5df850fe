"""`.env.example` documents every setting, with the default the code really has."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, Settings, load_settings

EXAMPLE = PROJECT_ROOT / ".env.example"


def _documented() -> dict[str, str]:
    pairs = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def test_every_setting_is_documented_and_nothing_else() -> None:
    assert set(_documented()) == {name.upper() for name in Settings.model_fields}


def test_the_example_loads_to_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _documented():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # relative paths are the project's, wherever a process starts
    from_example = load_settings(env_file=str(EXAMPLE))
    defaults = load_settings(env_file="")
    assert from_example == defaults
