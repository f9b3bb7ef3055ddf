"""benchmarks/ablation.py: group means, relative change and verdict of the flow-stage ablation."""

from __future__ import annotations

import pytest

from benchmarks.ablation import ablation_table, register_runs, verdict


def _rec(case, value, status="ok", seconds=1.0):
    return {
        "family": "lung",
        "group": case.split("/")[0],
        "case": case,
        "metric": "tre",
        "unit": "mm",
        "method": "register",
        "status": status,
        "value": value,
        "seconds": seconds,
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [(-0.25, "helps"), (-0.20, "helps"), (-0.19, "neutral"), (0.02, "neutral"), (0.021, "hurts")],
)
def test_verdict_edges(change, expected) -> None:
    assert verdict(change) == expected


def test_table_means_change_and_missing_cases() -> None:
    base = register_runs(
        [{"records": [_rec("a/1", 2.0), _rec("a/2", 4.0), _rec("b/1", 1.0), _rec("c/1", 5.0)]}]
    )
    arm = register_runs(
        [
            {
                "records": [
                    _rec("a/1", 1.0, seconds=3.0),
                    _rec("a/2", 2.0, seconds=5.0),
                    _rec("b/1", float("nan"), status="timeout"),
                    _rec("d/1", 1.0),
                    {**_rec("a/1", 0.0), "method": "cpd"},  # other methods are ignored
                ]
            }
        ]
    )
    table, notes = ablation_table(base, arm)
    row_a = next(line for line in table.splitlines() if line.startswith("| a "))
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    assert cells[:5] == ["a (2, TRE mm)", "3.00", "1.50", "-50.0%", "helps"]
    assert cells[5] == "1.0 -> 4.0"
    row_b = next(line for line in table.splitlines() if line.startswith("| b "))
    assert "n/a (b/1: timeout)" in row_b
    assert "c/1: only without the flow stage" in notes
    assert "d/1: only with the flow stage" in notes
    assert not any(line.startswith("| c ") or line.startswith("| d ") for line in table.splitlines())
