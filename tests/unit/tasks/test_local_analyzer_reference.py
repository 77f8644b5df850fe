"""The local analyzer agrees with its reference results (every frame analyzed) within the spec's tolerances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.tasks.reference_cases import CASES, REFERENCE_PATH, analyze_case

REFERENCE: dict[str, dict[str, Any]] = json.loads(REFERENCE_PATH.read_text())

# Noise has no spectral peak: its "dominant frequency" is whichever bin of a flat spectrum happens to be
# highest, and any other choice of frames picks another one.
NO_PEAK_CASES = frozenset({"white noise", "quiet noise 30 s"})

EXACT = ("duration_s", "sample_rate", "channels", "format", "subtype")
# field -> (absolute, relative) tolerance: the spec's for levels and frequencies.
TOLERANCES = {
    "peak_dbfs": (0.1, 0.0),
    "rms_dbfs": (0.2, 0.0),
    "silence_ratio": (0.01, 0.0),
    "clipping_ratio": (0.001, 0.0),
    "zero_crossing_rate": (0.0, 0.001),
    "dominant_frequency_hz": (2.0, 0.0),
    "f0_median_hz": (2.0, 0.0),
    "spectral_centroid_hz": (0.0, 0.01),
}


def test_every_case_has_a_reference_result() -> None:
    assert set(REFERENCE) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_result_matches_the_reference_within_tolerances(tmp_path: Path, name: str) -> None:
    reference = REFERENCE[name]

    result = analyze_case(name, tmp_path)

    assert set(result) == set(reference)
    for field in EXACT:
        assert result[field] == reference[field], field
    for field, (absolute, relative) in TOLERANCES.items():
        expected = reference[field]
        if field == "dominant_frequency_hz" and name in NO_PEAK_CASES:
            assert (result[field] is None) == (expected is None), field
        elif expected is None:
            assert result[field] is None, field
        else:
            assert result[field] == pytest.approx(expected, abs=absolute, rel=relative), field
