"""Result rows: median/p90/p99 of samples, spreads over repeated runs, and the table printed at the end."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Ends the name of a per-job phase that is a count of page faults, not a time (its unit: "faults").
FAULTS_SUFFIX = ", page faults"

# Columns of the printed table, and how wide each is at least.
_HEADERS = ("name", "n", "median", "p90", "p99", "unit", "notes")


@dataclass(frozen=True)
class Row:
    """One line of the results: a summary of `n` samples (or one derived value with `p90` None)."""

    name: str
    n: int
    median: float
    p90: float | None
    unit: str
    notes: str = ""
    samples: list[float] = field(default_factory=list)
    p99: float | None = None

    def as_json(self) -> dict[str, Any]:
        """A plain dict for JSON (NaN, which strict JSON lacks, becomes null)."""
        data = asdict(self)
        for key in ("median", "p90", "p99"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        return data


def percentile(samples: Sequence[float], percent: int) -> float:
    """The `percent`th percentile (linear interpolation between closest ranks, like numpy's default)."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def p90(samples: Sequence[float]) -> float:
    return percentile(samples, 90)


def spread(values: Sequence[float], digits: int = 1) -> str:
    """`min/median/max` of per-run values, for the notes."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"min/median/max {low:.{digits}f}/{mid:.{digits}f}/{high:.{digits}f}"


def summarize(name: str, samples: Sequence[float], unit: str, notes: str = "") -> Row:
    """A row holding the median, p90 and p99 of `samples` (which must not be empty)."""
    if not samples:
        raise ValueError(f"{name}: no samples")
    values = [float(value) for value in samples]
    return Row(name, len(values), statistics.median(values), p90(values), unit, notes, values, percentile(values, 99))


def over_runs(name: str, per_run: Sequence[float], unit: str, notes: str = "") -> Row:
    """A row for one value measured once per run: its median over the runs, min/median/max in the notes."""
    values = [float(value) for value in per_run]
    digits = 2 if unit in ("x", "jobs/s") else 1
    text = f"{len(values)} runs: {spread(values, digits)}" + (f"; {notes}" if notes else "")
    return Row(name, len(values), statistics.median(values), None, unit, text, values)


def single(name: str, n: int, value: float, unit: str, notes: str = "") -> Row:
    """A row for one derived value (a throughput, a ratio): no spread to report."""
    return Row(name, n, value, None, unit, notes)


def ratio(name: str, numerator: Row, denominator: Row, notes: str = "") -> Row:
    """The ratio of two rows' medians, both measured in this run."""
    value = numerator.median / denominator.median if denominator.median else float("nan")
    return single(name, min(numerator.n, denominator.n), value, "x", notes or f"{numerator.name} / {denominator.name}")


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("x", "jobs/s"):
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table (numbers right-aligned)."""
    cells = [list(_HEADERS)] + [
        [
            row.name,
            str(row.n),
            _number(row.median, row.unit),
            _number(row.p90, row.unit),
            _number(row.p99, row.unit),
            row.unit,
            row.notes,
        ]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(_HEADERS) - 1)]
    right_aligned = {1, 2, 3, 4}
    lines = []
    for index, line in enumerate(cells):
        parts = [
            cell.rjust(widths[column]) if column in right_aligned else cell.ljust(widths[column])
            for column, cell in enumerate(line[:-1])
        ]
        lines.append("  ".join([*parts, line[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * len(_HEADERS[-1]))
    return "\n".join(lines)
