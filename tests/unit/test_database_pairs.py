"""Which databases a run of a test is kept on: every one chosen, the first (`one_database`), or one per
value of a `pairwise` parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.conftest import databases_for

pytestmark = pytest.mark.one_database  # the selection is checked, not a database

BOTH = ("sqlite", "postgres")


@dataclass
class _CallSpec:
    indices: dict[str, int]


@dataclass
class _Item:
    """What `databases_for` reads of a collected test: its markers and its parameters' indices."""

    marks: list[pytest.Mark] = field(default_factory=list)
    indices: dict[str, int] = field(default_factory=dict)
    nodeid: str = "test_x"

    @property
    def callspec(self) -> _CallSpec:
        return _CallSpec(self.indices)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((mark for mark in self.marks if mark.name == name), None)


def _wanted(item: _Item, chosen: tuple[str, ...] = BOTH) -> tuple[str, ...]:
    return databases_for(cast(Any, item), chosen)


def test_a_plain_test_runs_on_every_chosen_database_and_a_one_database_test_on_the_first() -> None:
    assert _wanted(_Item()) == BOTH
    assert _wanted(_Item([pytest.mark.one_database.mark])) == ("sqlite",)
    assert _wanted(_Item([pytest.mark.one_database.mark]), ("postgres", "sqlite")) == ("postgres",)


def test_pairwise_values_take_the_databases_in_turn_from_their_offset() -> None:
    plain = pytest.mark.pairwise("mode").mark
    shifted = pytest.mark.pairwise("mode", offset=1).mark
    assert [_wanted(_Item([plain], {"mode": index})) for index in range(3)] == [
        ("sqlite",),
        ("postgres",),
        ("sqlite",),
    ]
    assert [_wanted(_Item([shifted], {"mode": index})) for index in range(2)] == [("postgres",), ("sqlite",)]


def test_pairwise_keeps_every_value_when_one_database_is_chosen() -> None:
    plain = pytest.mark.pairwise("mode").mark
    assert [_wanted(_Item([plain], {"mode": index}), ("postgres",)) for index in range(2)] == [("postgres",)] * 2


def test_pairwise_naming_no_parameter_of_the_test_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="pairwise\\('mood'\\)"):
        _wanted(_Item([pytest.mark.pairwise("mood").mark], {"mode": 0}))
