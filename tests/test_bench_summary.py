"""benchmarks/summary.py: group means, partial successes and the best cell, on fake records."""

from __future__ import annotations

from benchmarks.summary import summary


def _rec(case, method, value, status="ok", seconds=1.0):
    return {
        "family": "lung",
        "group": case.split("/")[0],
        "case": case,
        "metric": "tre",
        "unit": "mm",
        "method": method,
        "status": status,
        "value": value,
        "seconds": seconds,
    }


def test_group_means_partial_and_best() -> None:
    records = [
        _rec("dirlab4dct/case1", "none", 4.0),
        _rec("dirlab4dct/case2", "none", 6.0),
        _rec("dirlab4dct/case1", "register", 0.2, seconds=2.0),
        _rec("dirlab4dct/case2", "register", 0.4, seconds=4.0),
        _rec("dirlab4dct/case1", "cpd", 1.0),
        _rec("dirlab4dct/case2", "cpd", float("nan"), status="timeout"),
        _rec("dirlab4dct/case1", "bcpd", float("nan"), status="unavailable: no binary"),
        _rec("dirlab4dct/case2", "bcpd", float("nan"), status="unavailable: no binary"),
        _rec("dirlab4dct/case1", "pycpd", float("nan"), status="timeout"),
        _rec("dirlab4dct/case1", "icp", 9.0),
        _rec("dirlab4dct/case1", "nonrigid", 0.5),
        _rec("dirlab4dct/case2", "icp", 9.0),
    ]
    md = summary([{"methods": ["register", "cpd", "bcpd", "pycpd", "icp", "nonrigid"], "records": records}])
    row = next(line for line in md.splitlines() if line.startswith("| dirlab4dct"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "dirlab4dct (2, TRE mm)"
    assert cells[1] == "5.00"  # none: mean of 4 and 6
    assert cells[2] == "**0.30 (3.0 s)**"  # best among methods that succeeded everywhere
    assert cells[3] == "1.00 (1.0 s) [1/2 ok]"  # a timeout is counted, not dropped
    assert cells[4] == "n/a"
    assert cells[5] == "timeout [run on 1/2]"  # a method not run on every case says so
    assert cells[6] == "9.00 (1.0 s)"  # worse than no registration: never bold
    assert cells[7] == "0.50 (1.0 s) [run on 1/2]"  # not bold: not run everywhere
    assert cells[8].startswith("0.71")  # BCPD reference from PEERS.md


def test_quick_smoke_results_are_left_out_when_full_results_are_given(tmp_path, capsys) -> None:
    """A ``--quick`` payload's records never enter the means of a full run (main's file glob)."""
    import json

    from benchmarks.summary import main

    full = {"quick": False, "methods": ["register"], "records": [_rec("lung250m/a", "register", 1.0)]}
    quick = {"quick": True, "methods": ["register"], "records": [_rec("lung250m/a", "register", 9.0)]}
    paths = []
    for name, payload in (("full", full), ("quick", quick)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(payload))
    assert main([str(p) for p in paths]) == 0
    out = capsys.readouterr()
    assert "1.00" in out.out and "9.00" not in out.out and "5.00" not in out.out
    assert "quick" in out.err
