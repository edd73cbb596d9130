"""``compare``: regressions, improvements and noise on constructed documents; real probes of
3.11 against 3.13t and 3.13t against itself with the GIL forced on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest
# Imported at collection, not inside the test: an old numpy's import runs `lscpu`, which the
# unit-test guard (conftest) would count as the test starting a process.
from scipy import stats  # the test extra installs it: the cross-check runs in CI

from conftest import IN_CI, free_threaded_python
from exporter import cli
from exporter.gate import compare, table
from exporter.stats import ranktest
import support
from support import REPO, TESTS

IDENTITY_311 = {"name": "cpython-3.11", "path": "/usr/bin/python3", "version": "3.11.2", "implementation": "cpython",
                "free_threaded_build": False, "gil_enabled": True}
IDENTITY_313T = {"name": "cpython-3.13t", "path": "/opt/python3.13t", "version": "3.13.5", "implementation": "cpython",
                 "free_threaded_build": True, "gil_enabled": False}


def step(mode: str, workers: int, speedup: Optional[float], *, ci: Optional[list[float]] = None,
         spread: float = 0.04, pairs: Optional[list[float]] = None, success: bool = True,
         interpreter: str = "cpython-3.11", workload: str = "pure_python", **extra: Any) -> dict[str, Any]:
    return {"interpreter": interpreter, "workload": workload, "mode": mode, "workers": workers,
            "success": success, "available": True, "reason": None if success else "error",
            "message": "" if success else "ValueError: boom", "speedup": speedup if success else None,
            "speedup_spread": spread if success else None, "speedup_ci": ci, "pair_speedups": pairs, **extra}


def document(*results: dict[str, Any], identity: Optional[dict] = None, usable: float = 2.0) -> dict[str, Any]:
    identity = identity or IDENTITY_311
    rows = [step("sequential", 1, 1.0, interpreter=identity["name"])]
    rows += [dict(r, interpreter=identity["name"]) for r in results]
    return {"interpreter": identity, "interpreters": [identity],
            "host": {"logical_cpus": 2, "physical_cpus": 2, "affinity_cpus": 2, "cgroup_quota_cpus": None,
                     "usable_cpus": usable},
            "results": rows, "verdicts": []}


def compare_dicts(baseline: dict[str, Any], candidate: dict[str, Any], **options: Any) -> compare.Comparison:
    """``compare`` of two documents as probe --json writes them."""
    return compare.compare_documents(compare.parse_document(baseline, options.get("baseline_label", "baseline")),
                                     compare.parse_document(candidate, options.get("candidate_label", "candidate")),
                                     **options)


def run_compare(tmp_path: Path, baseline: Any, candidate: Any, *flags: str,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    paths = []
    for name, content in (("base.json", baseline), ("cand.json", candidate)):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        paths.append(str(path))
    code = cli.run(["compare", *paths, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def only_row(comparison: compare.Comparison) -> compare.Row:
    assert len(comparison.rows) == 1
    return comparison.rows[0]


# --- the verdicts -----------------------------------------------------------------------


def test_candidate_interval_far_below_the_baseline_is_a_regression() -> None:
    base = document(step("threads", 2, 1.9, ci=[1.85, 1.95]))
    cand = document(step("threads", 2, 1.0, ci=[0.95, 1.05]))
    row = only_row(compare_dicts(base, cand))
    assert row.status == "regression"
    assert row.change == pytest.approx(1.0 / 1.9 - 1)
    assert "below the baseline's 1.85–1.95" in row.why


def test_candidate_interval_far_above_the_baseline_is_an_improvement() -> None:
    base = document(step("threads", 2, 1.0, ci=[0.95, 1.05]))
    cand = document(step("threads", 2, 1.9, ci=[1.85, 1.95]), identity=IDENTITY_313T)
    comparison = compare_dicts(base, cand)
    assert only_row(comparison).status == "improvement"
    assert comparison.exit_code == compare.EXIT_OK


def test_drop_within_the_intervals_is_noise_not_a_regression() -> None:
    base = document(step("threads", 2, 1.90, ci=[1.70, 2.00]))
    cand = document(step("threads", 2, 1.80, ci=[1.60, 1.95]))
    comparison = compare_dicts(base, cand)
    assert only_row(comparison).status == "no change"
    assert comparison.exit_code == compare.EXIT_OK


def test_intervals_apart_by_less_than_the_threshold_are_no_regression() -> None:
    """Non-overlapping, but the gap (1.70 vs 0.9 × 1.80 = 1.62) is under 10 %."""
    base = document(step("threads", 2, 1.85, ci=[1.80, 1.90]))
    cand = document(step("threads", 2, 1.65, ci=[1.60, 1.70]))
    assert only_row(compare_dicts(base, cand)).status == "no change"
    assert only_row(compare_dicts(base, cand, threshold=0.0)).status == "regression"


def test_spread_is_the_interval_when_there_is_no_confidence_interval() -> None:
    base = document(step("processes", 2, 1.9, spread=0.04))
    cand = document(step("processes", 2, 1.2, spread=0.04))
    row = only_row(compare_dicts(base, cand))
    assert row.baseline.interval_kind == "repeats' spread"
    assert row.baseline.interval == pytest.approx((1.9 * 0.98, 1.9 * 1.02))
    assert row.status == "regression"


def test_paired_windows_test_finds_a_drop_the_wide_intervals_cannot() -> None:
    """Wide intervals overlap, but eight windows each say the candidate is lower."""
    base_pairs = [1.90, 1.92, 1.88, 1.95, 1.91, 1.89, 1.93, 1.60]
    cand_pairs = [1.55, 1.58, 1.52, 1.61, 1.57, 1.50, 1.59, 1.20]
    base = document(step("threads", 2, 1.91, ci=[1.5, 2.0], pairs=base_pairs))
    cand = document(step("threads", 2, 1.56, ci=[1.2, 1.8], pairs=cand_pairs))
    row = only_row(compare_dicts(base, cand))
    assert row.status == "regression"
    assert row.p_lower is not None and row.p_lower < 0.05
    assert "Mann–Whitney" in row.why


def test_paired_windows_that_overlap_are_not_significant() -> None:
    pairs_a = [1.90, 1.70, 1.85, 1.60, 1.95, 1.75]
    pairs_b = [1.80, 1.65, 1.88, 1.55, 1.70, 1.50]
    base = document(step("threads", 2, 1.80, ci=[1.6, 1.95], pairs=pairs_a))
    cand = document(step("threads", 2, 1.60, ci=[1.5, 1.85], pairs=pairs_b))
    row = only_row(compare_dicts(base, cand))
    assert row.status == "no change"
    assert row.p_lower is not None and row.p_lower >= 0.05


def test_identity_changes_are_listed() -> None:
    gil_forced = dict(IDENTITY_313T, gil_enabled=True)
    comparison = compare_dicts(document(step("threads", 2, 1.9), identity=IDENTITY_313T),
                                           document(step("threads", 2, 1.9), identity=gil_forced))
    assert comparison.identity_changes == [{"field": "gil_enabled", "baseline": False, "candidate": True}]
    full = compare_dicts(document(identity=IDENTITY_311), document(identity=IDENTITY_313T))
    assert [c["field"] for c in full.identity_changes] == ["version", "free_threaded_build", "gil_enabled"]


def test_step_failing_only_in_the_candidate_is_a_regression() -> None:
    comparison = compare_dicts(document(step("threads", 2, 1.9)),
                                           document(step("threads", 2, None, success=False)))
    row = only_row(comparison)
    assert row.status == "new failure"
    assert "ValueError: boom" in row.why
    assert comparison.exit_code == compare.EXIT_REGRESSION


def test_step_failing_in_both_or_only_in_the_baseline_is_no_regression() -> None:
    failed = document(step("threads", 2, None, success=False))
    assert only_row(compare_dicts(failed, failed)).status == "failed in both"
    fixed = compare_dicts(failed, document(step("threads", 2, 1.9)))
    assert only_row(fixed).status == "fixed"
    assert fixed.exit_code == compare.EXIT_OK


def test_steps_in_one_file_only_are_listed_not_compared() -> None:
    comparison = compare_dicts(document(step("threads", 2, 1.9), step("threads", 4, 1.9)),
                                           document(step("threads", 2, 1.9), step("processes", 2, 1.9)))
    assert [(r.mode, r.workers) for r in comparison.rows] == [("threads", 2)]
    assert comparison.only_in_baseline == ["pure_python threads ×4"]
    assert comparison.only_in_candidate == ["pure_python processes ×2"]


# --- the statistics ---------------------------------------------------------------------


def test_mann_whitney_exact_p_of_complete_separation_is_one_over_the_orderings() -> None:
    # Three below three: only 1 of C(6, 3) = 20 orderings is as extreme.
    assert ranktest.mann_whitney_less([1, 2, 3], [4, 5, 6]) == pytest.approx(1 / 20)
    assert ranktest.mann_whitney_less([4, 5, 6], [1, 2, 3]) == pytest.approx(1.0)


def test_mann_whitney_matches_scipy() -> None:

    samples = [([1.1, 2.3, 0.7, 3.3], [2.5, 3.9, 4.1, 2.8, 3.0]),
               ([1.0, 1.0, 2.0, 3.0, 3.0, 4.0], [2.0, 3.0, 5.0, 5.0, 6.0, 1.0]),  # ties: normal approximation
               ([float(i) for i in range(30)], [i + 4.5 for i in range(40)]),
               ([0.3 * i % 7 for i in range(40)], [0.7 * i % 5 + 0.01 for i in range(50)]),  # the exact limit
               ([float(i) for i in range(900)], [i + 0.5 for i in range(900)])]
    for x, y in samples:
        ties = len(set(x + y)) < len(x) + len(y)
        method = "asymptotic" if ties or len(x) * len(y) > ranktest.EXACT_TEST_MAX_PAIRS else "exact"
        expected = stats.mannwhitneyu(x, y, alternative="less", method=method).pvalue
        assert ranktest.mann_whitney_less(x, y) == pytest.approx(expected, rel=1e-6)


def test_mann_whitney_of_the_most_pairs_a_probe_allows_needs_no_recursion_and_little_time() -> None:
    """probe.max_repeats allows 1000 pairs: 2 × 900 values once raised RecursionError."""
    x = [1.0 + (i * 7919 % 1000) / 1e4 for i in range(1000)]
    y = [1.01 + (i * 104729 % 1000) / 1e4 for i in range(1000)]
    assert 0.0 <= ranktest.mann_whitney_less(x, y) < 0.05


def test_exact_u_distribution_counts_every_ordering() -> None:
    from itertools import combinations

    for m, n in ((1, 1), (2, 3), (4, 4), (3, 6)):
        counts = [0] * (m * n + 1)
        for xs in combinations(range(m + n), m):  # the x's ranks among all m + n values
            counts[sum(sum(1 for y in range(m + n) if y not in xs and y < x) for x in xs)] += 1
        assert ranktest._u_counts(m, n) == tuple(counts)


# --- cannot tell, and what is a regression whatever the speedups say ----------------------


BUSY = "other processes used 1.0 cores, leaving 1.0 of 2 cores where the workers needed 2"


def test_a_busy_candidate_is_never_a_regression() -> None:
    base = document(step("threads", 2, 1.9, ci=[1.85, 1.95], conclusive=True))
    cand = document(step("threads", 2, None, ci=None, conclusive=False, inconclusive_reason=BUSY,
                         pair_speedups=[1.0, 1.02, 0.98]))
    comparison = compare_dicts(base, cand)
    row = only_row(comparison)
    assert row.status == "inconclusive" and "candidate cannot tell" in row.why and "1.0 cores" in row.why
    assert comparison.exit_code == compare.EXIT_INCONCLUSIVE == 3


def accounted(speedup: Optional[float], idle: float, ci: tuple[float, float], conclusive: bool,
              pairs: Optional[list[float]] = None) -> dict[str, Any]:
    """A threads step with the kernel's accounting: its idle-host estimate whatever the load."""
    return step("threads", 2, speedup, ci=[speedup * 0.97, speedup * 1.03] if speedup else None,
                conclusive=conclusive, inconclusive_reason=None if conclusive else BUSY,
                pair_speedups=[speedup] * 4 if speedup else [1.0, 1.4, 0.9],
                idle_speedup=idle, idle_speedup_ci=list(ci), pair_idle_speedups=pairs or [idle] * 4)


def test_on_a_busy_host_the_idle_host_estimates_show_a_regression_the_wall_clock_cannot() -> None:
    """3.13t against 3.13t with PYTHON_GIL=1, both probed while other work took the cores."""
    base = document(accounted(None, 1.96, (1.90, 2.00), conclusive=False, pairs=[1.95, 1.97, 1.96, 1.94]))
    cand = document(accounted(None, 1.01, (0.97, 1.05), conclusive=False, pairs=[1.0, 1.02, 1.01, 0.99]))
    comparison = compare_dicts(base, cand)
    row = only_row(comparison)
    assert row.status == "regression" and "idle-host estimates" in row.why
    assert row.baseline.figure == row.candidate.figure == compare.IDLE_HOST
    assert comparison.exit_code == compare.EXIT_REGRESSION


def test_on_a_busy_host_the_same_interpreter_twice_is_no_regression_not_cannot_tell() -> None:
    base = document(accounted(None, 1.96, (1.90, 2.00), conclusive=False))
    cand = document(accounted(1.95, 1.95, (1.89, 2.00), conclusive=True))  # quiet for one of the two
    comparison = compare_dicts(base, cand)
    assert only_row(comparison).status == "no change"
    assert comparison.exit_code == compare.EXIT_OK


def test_a_busy_baseline_is_never_no_regression() -> None:
    base = document(step("threads", 2, None, conclusive=False, inconclusive_reason=BUSY))
    cand = document(step("threads", 2, 1.9, ci=[1.85, 1.95], conclusive=True))
    comparison = compare_dicts(base, cand)
    assert only_row(comparison).status == "inconclusive" and "baseline cannot tell" in only_row(comparison).why
    assert comparison.exit_code == compare.EXIT_INCONCLUSIVE


def test_old_documents_without_conclusive_are_judged_from_their_other_load() -> None:
    base = document(step("processes", 2, 1.9, ci=[1.85, 1.95], interference_cores=0.02))
    cand = document(step("processes", 2, 1.1, ci=[1.05, 1.15], interference_cores=0.95))
    comparison = compare_dicts(base, cand)
    assert only_row(comparison).status == "inconclusive" and comparison.exit_code == compare.EXIT_INCONCLUSIVE


def test_a_regression_that_was_seen_wins_over_a_step_that_could_not_be() -> None:
    base = document(step("threads", 2, 1.9, ci=[1.85, 1.95]), step("processes", 2, 1.9, ci=[1.85, 1.95]))
    cand = document(step("threads", 2, 1.0, ci=[0.95, 1.05]),
                    step("processes", 2, None, conclusive=False, inconclusive_reason=BUSY))
    assert compare_dicts(base, cand).exit_code == compare.EXIT_REGRESSION


def test_an_empty_or_renamed_candidate_is_not_no_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = document(step("threads", 2, 1.9, ci=[1.85, 1.95]))
    empty = dict(document(), results=[])
    comparison = compare_dicts(base, empty)
    assert comparison.exit_code == compare.EXIT_INCONCLUSIVE
    assert any("not measured in the candidate" in reason for reason in comparison.inconclusive)
    renamed = document(step("threads", 2, 1.9, ci=[1.85, 1.95], workload="other"))
    assert compare_dicts(base, renamed).exit_code == compare.EXIT_INCONCLUSIVE
    code, out, _ = run_compare(tmp_path, base, empty, capsys=capsys)
    assert code == 3 and "inconclusive" in out and "no regression" not in out


def test_the_gil_coming_back_is_a_regression_whatever_the_speedups_say() -> None:
    gil_forced = dict(IDENTITY_313T, gil_enabled=True, gil_requested=True)
    busy = step("threads", 2, None, conclusive=False, inconclusive_reason=BUSY)
    comparison = compare_dicts(document(busy, identity=IDENTITY_313T), document(busy, identity=gil_forced))
    assert comparison.exit_code == compare.EXIT_REGRESSION
    assert comparison.gil_regression is not None and "PYTHON_GIL=1" in comparison.gil_regression
    # Asked for on both sides: the GIL was never off, so it did not come back.
    both = compare_dicts(document(busy, identity=gil_forced), document(busy, identity=gil_forced))
    assert both.gil_regression is None and both.exit_code == compare.EXIT_INCONCLUSIVE


# --- the command line -------------------------------------------------------------------


def test_cli_exit_1_and_a_table_on_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_compare(tmp_path, document(step("threads", 2, 1.9, ci=[1.85, 1.95])),
                                 document(step("threads", 2, 1.0, ci=[0.95, 1.05])), capsys=capsys)
    assert code == 1
    assert "regression" in out and "1.90×" in out and "[1.85–1.95]" in out and "-47%" in out
    assert err == ""


def test_cli_json_has_every_row_and_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_compare(tmp_path, document(step("threads", 2, 1.0, ci=[0.95, 1.05])),
                               document(step("threads", 2, 1.9, ci=[1.85, 1.95]), identity=IDENTITY_313T),
                               "--json", capsys=capsys)
    result = json.loads(out)
    assert code == 0 and result["exit_code"] == 0 and result["regressions"] == 0
    assert result["rows"][0]["status"] == "improvement"
    assert result["rows"][0]["candidate"]["interval"] == [1.85, 1.95]
    assert {c["field"] for c in result["identity_changes"]} == {"version", "free_threaded_build", "gil_enabled"}


def every_kind_of_row() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two documents whose comparison has the longest names and verdicts the table shows."""
    mine = "myapp.bench:score_batch"
    base = document(step("threads", 2, 1.71, ci=[1.27, 2.16]), step("processes", 2, 1.66, ci=[1.17, 2.15]),
                    step("subinterpreters", 2, 1.9, ci=[1.8, 1.95]), step("threads", 2, 1.9, ci=[1.8, 1.95],
                                                                           workload=mine),
                    step("processes", 2, None, success=False, workload=mine), identity=IDENTITY_313T)
    cand = document(step("threads", 2, 0.98, ci=[0.95, 1.0]),
                    step("processes", 2, None, conclusive=False, inconclusive_reason=BUSY),
                    step("subinterpreters", 2, None, success=False), step("threads", 2, 1.9, ci=[1.8, 1.95],
                                                                          workload=mine),
                    step("processes", 2, None, success=False, workload=mine), identity=IDENTITY_313T)
    return base, cand


def table_lines(text: str) -> list[str]:
    """The table's header and rows: from the header line to the first line of the notes under
    it (indented by two spaces; a row's wrapped cells are indented further)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workload"))
    end = next(i for i, line in enumerate(lines) if i > start and re.match(r"  \S", line))
    return lines[start:end]


def assert_table_whole(text: str) -> None:
    assert "(alpha 0.05)" in " ".join(text.split())  # the heading wraps, never cut
    header = table_lines(text)[0].split()
    assert header == ["workload", "mode", "N", "baseline", "candidate", "change", "p", "verdict"]
    for verdict in ("regression", "inconclusive", "new failure", "no change", "failed in both"):
        assert any(line.rstrip().endswith(verdict) for line in table_lines(text)), (verdict, text)
    assert "…" not in text


def test_the_table_fits_80_columns_with_every_column_and_whole_verdicts() -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    table.render(compare_dicts(*every_kind_of_row()), Console(file=out, width=80))
    text = out.getvalue()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    assert_table_whole(text)


def test_the_table_is_whole_in_a_ci_log_without_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI runs compare with stdout to a log and no COLUMNS: rich falls back to 80 columns."""
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, err = run_compare(tmp_path, *every_kind_of_row(), capsys=capsys)
    assert code == 1 and err == ""
    assert_table_whole(out)


@pytest.mark.parametrize("baseline, candidate, flags, expected", [
    ("{not json", None, [], "base.json: not a JSON document: Expecting property name enclosed in double quotes at line 1"),
    ([1, 2], None, [], "base.json: not a probe --json or /api/v1/results document (expected an object with results)"),
    ({"results": []}, None, [], "base.json: host: missing"),
    (None, "", [], "cand.json: not a JSON document: Expecting value at line 1"),
    ("BINARY", None, [], "base.json: not UTF-8 text: invalid start byte at byte 0"),
    (None, None, ["--threshold", "ten"], "--threshold: must be a number >= 0 and < 1, got 'ten'"),
    (None, None, ["--alpha", "0"], "--alpha: must be a number > 0 and < 1, got '0'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              baseline: Any, candidate: Any, flags: list[str], expected: str) -> None:
    good = document(step("threads", 2, 1.9))
    paths = []
    for name, content in (("base.json", baseline), ("cand.json", candidate)):
        path = tmp_path / name
        if content == "BINARY":
            path.write_bytes(b"\xff\xfe\x00garbage")
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(good if content is None else content))
        paths.append(str(path))
    code = cli.run(["compare", *paths, *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err, err


def test_cli_bad_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = document(step("threads", 2, 1.9))
    broken["results"][1]["speedup"] = "fast"
    code, _, err = run_compare(tmp_path, broken, document(), capsys=capsys)
    assert code == 2
    assert err.strip().endswith("base.json: results[1].speedup: must be a finite number, got 'fast'")


def test_cli_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["compare", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")]) == 2
    assert "nope.json: cannot read: No such file or directory" in capsys.readouterr().err


def test_cli_different_usable_cpus_are_explained_not_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_compare(tmp_path, document(step("threads", 2, 1.9), usable=4.0),
                                 document(step("threads", 2, 1.9), usable=2.0), capsys=capsys)
    assert code == 2 and out == ""
    assert "ran with 4 usable CPUs" in err and "with 2" in err and "measure the hosts, not the interpreters" in err
    assert err.count("\n") == 1


def test_cli_several_interpreters_need_a_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = document(step("threads", 2, 1.0, ci=[0.95, 1.05]))
    ft = document(step("threads", 2, 1.9, ci=[1.85, 1.95]), identity=IDENTITY_313T)
    both["interpreters"] += ft["interpreters"]
    both["results"] += ft["results"]
    code, _, err = run_compare(tmp_path, both, both, capsys=capsys)
    assert code == 2 and "holds 2 interpreters (cpython-3.11, cpython-3.13t): choose one with --baseline-interpreter" in err
    code, out, _ = run_compare(tmp_path, both, both, "--baseline-interpreter", "cpython-3.13t",
                               "--candidate-interpreter", "cpython-3.11", "--json", capsys=capsys)
    assert code == 1 and json.loads(out)["rows"][0]["status"] == "regression"


def test_api_document_before_the_first_round_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = document()
    empty["interpreters"], empty["results"] = [], []
    code, _, err = run_compare(tmp_path, empty, document(), capsys=capsys)
    assert code == 2 and "first round still running" in err


# --- real probes ------------------------------------------------------------------------


def require_free_threaded_python() -> str:
    path = free_threaded_python()
    if path is None:
        message = ("no free-threaded CPython 3.13t: build one with `scripts/build-python 3.13 --free-threaded` "
                   "or set PYPARALLEL_FT_PYTHON")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def probe_json(path: Path, python: str, env: Optional[dict[str, str]] = None) -> None:
    """One real ``probe --json`` of the threads mode of a CPU-bound workload."""
    args = [sys.executable, "-m", "exporter", "probe", "--python", python, "--workload", "pure_python",
            "--mode", "threads", "--workers", "2", "--seconds", "0.3", "--repeats", "5", "--json",
            "--wait-quiet", "10"]
    support.wait_for_quiet_host(2)
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    completed = subprocess.run(args, capture_output=True, text=True, cwd=TESTS, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    path.write_text(completed.stdout)


def compare_files(base: Path, cand: Path) -> tuple[int, dict[str, Any]]:
    completed = subprocess.run([sys.executable, "-m", "exporter", "compare", str(base), str(cand), "--json"],
                               capture_output=True, text=True, cwd=TESTS, timeout=60,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert completed.returncode in (0, 1, 3), completed.stderr
    return completed.returncode, json.loads(completed.stdout)


def threads_row(result: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["mode"] == "threads" and r["workers"] == 2)


@pytest.mark.integration
@pytest.mark.freethreaded
def test_real_probes_threads_improve_from_gil_python_to_free_threaded(tmp_path: Path) -> None:
    ft = require_free_threaded_python()
    probe_json(tmp_path / "base.json", sys.executable)
    probe_json(tmp_path / "cand.json", ft)
    code, result = compare_files(tmp_path / "base.json", tmp_path / "cand.json")
    assert "free_threaded_build" in {c["field"] for c in result["identity_changes"]}
    row = threads_row(result)
    if row["status"] == "inconclusive":  # the host stayed busy: the gate must say so, never pass
        assert code == compare.EXIT_INCONCLUSIVE and "cannot tell" in row["why"], row
        warnings.warn(support.HostTooBusy(f"real 3.11 → 3.13t compare: {row['why']}"), stacklevel=2)
        return
    assert row["status"] == "improvement", row
    assert code == 0


@pytest.mark.integration
@pytest.mark.freethreaded
def test_real_probes_threads_regress_when_the_gil_is_forced_on(tmp_path: Path) -> None:
    ft = require_free_threaded_python()
    probe_json(tmp_path / "base.json", ft)
    probe_json(tmp_path / "cand.json", ft, env={"PYTHON_GIL": "1"})
    code, result = compare_files(tmp_path / "base.json", tmp_path / "cand.json")
    # The GIL came back: a regression whatever the host did to the speedups.
    assert code == 1 and result["gil_regression"] and "PYTHON_GIL=1" in result["gil_regression"]
    assert result["identity_changes"] == [{"field": "gil_enabled", "baseline": False, "candidate": True}]
    row = threads_row(result)
    assert row["status"] in ("regression", "inconclusive"), row
    if row["status"] == "inconclusive":
        warnings.warn(support.HostTooBusy(f"real 3.13t → PYTHON_GIL=1 compare: {row['why']}"), stacklevel=2)


# --- the documented CI example ----------------------------------------------------------

EXAMPLE_WORKFLOW = REPO / "docs/examples/github-actions-parallelism-gate.yml"


@pytest.mark.integration  # check-jsonschema runs in a child process
def test_example_workflow_matches_the_github_workflow_schema() -> None:
    from conftest import require_binary

    check = require_binary("check-jsonschema")
    result = subprocess.run([check, "--builtin-schema", "vendor.github-workflows", str(EXAMPLE_WORKFLOW)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_workflow_uses_only_flags_the_cli_accepts() -> None:
    import shlex

    import yaml

    workflow = yaml.safe_load(EXAMPLE_WORKFLOW.read_text())
    known = {k: str(v) for k, v in workflow["env"].items() if "${{" not in str(v)}
    commands = []
    for step in workflow["jobs"]["parallelism"]["steps"]:
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = re.sub(r"\$\{\{[^}]*\}\}", "/usr/bin/python3", line)  # ${{ expressions }}
            line = re.sub(r"\$\{PUSHGATEWAY_URL:\+([^}]*)\}", r"\1", line)  # the push flags, as when set
            line = re.sub(r'"?\$\{?(\w+)\}?"?', lambda m: known.get(m.group(1), "x"), line)  # env values
            line = re.split(r"\s(?:>|\|\|)\s", line.strip().removeprefix("COLUMNS=120 "))[0]
            if line.startswith("parallelism-exporter "):
                commands.append(shlex.split(line)[1:])
    assert [c[0] for c in commands] == ["probe", "probe", "compare", "compare"]
    parser = cli.build_parser()
    for args in commands:
        parser.parse_args(args)  # a flag it does not know exits 2 and fails the test


def checkout_copy(target: Path) -> None:
    """The working tree as a fresh clone would hold it, uncommitted changes included: every
    tracked or untracked-but-not-ignored file, no .venv."""
    import shutil

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def github_expressions(text: str, values: dict[str, str]) -> str:
    """``${{ expression }}`` as GitHub fills it in; an expression the test does not know fails it."""
    def value(match: re.Match[str]) -> str:
        assert match.group(1) in values, f"the test does not know ${{{{ {match.group(1)} }}}}"
        return values[match.group(1)]

    return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", value, text)


@pytest.mark.integration
def test_example_workflow_runs_as_pasted_in_a_clone(tmp_path: Path) -> None:
    """Every ``run:`` step of the GitHub Actions example, in order, in a copy of this checkout,
    as a runner runs it: ``bash -e``, the job's env, $GITHUB_PATH and $GITHUB_STEP_SUMMARY.
    The setup-python steps are the 3.13 and 3.13t scripts/build-python builds. Only the time
    the probes may spend is cut (REPEATS, WAIT_QUIET): on a loaded machine the pasted 2m
    waits would make this one test take a quarter of an hour."""
    import yaml

    from conftest import require_gil_313_python

    clone, github = tmp_path / "clone", tmp_path / "github"
    clone.mkdir()
    github.mkdir()
    checkout_copy(clone)
    workflow = yaml.safe_load(EXAMPLE_WORKFLOW.read_text())
    values = {"steps.baseline.outputs.python-path": require_gil_313_python(),
              "steps.candidate.outputs.python-path": require_free_threaded_python(), "secrets.PUSHGATEWAY_URL": ""}
    values |= {f"env.{k}": str(v) for k, v in workflow["env"].items() if "${{" not in str(v)}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p]  # no exporter but the clone's
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "COLUMNS")}
    env |= {k: github_expressions(str(v), values) for k, v in workflow["env"].items()}
    env |= {"REPEATS": "3", "WAIT_QUIET": "5s"}
    env |= {"GITHUB_PATH": str(github / "path"), "GITHUB_STEP_SUMMARY": str(github / "summary.md")}
    (github / "path").touch()
    codes = {}
    for step in workflow["jobs"]["parallelism"]["steps"]:
        if "run" not in step:
            continue
        added = (github / "path").read_text().split()
        env["PATH"] = os.pathsep.join(list(reversed(added)) + path)
        done = subprocess.run(["bash", "-e", "-c", github_expressions(step["run"], values)], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=1800)
        codes[step["name"]] = done.returncode
        if done.returncode != 0 and not step["name"].startswith("Compare"):
            pytest.fail(f"{step['name']}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    compared = json.loads((clone / "comparison.json").read_text())
    for name in ("baseline.json", "candidate.json"):
        results = json.loads((clone / name).read_text())["results"]
        assert {r["workload"] for r in results} == {"myapp.bench:score_batch", "pure_python"}
        assert all(r["success"] for r in results), [r["message"] for r in results if not r["success"]]
    assert "### Parallelism gate" in (github / "summary.md").read_text()
    (compare_step,) = [code for name, code in codes.items() if name.startswith("Compare")]
    assert compare_step == compared["exit_code"]
    if compare_step == compare.EXIT_INCONCLUSIVE:
        warnings.warn(support.HostTooBusy(f"the example gate: {compared['inconclusive']}"), stacklevel=2)
    else:  # 3.13 → 3.13t: threads gain, nothing regresses
        assert compare_step == compare.EXIT_OK, (clone / "comparison.txt").read_text()


# --- probe --compare --------------------------------------------------------------------


def test_probe_compare_needs_exactly_two_interpreters(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["probe", "--python", sys.executable, "--compare"]) == 2
    assert capsys.readouterr().err.strip() == (
        "parallelism-exporter: --compare: needs exactly two --python interpreters, the baseline first")


@pytest.mark.integration
def test_probe_compare_runs_both_and_fails_on_a_step_the_candidate_cannot_run(tmp_path: Path) -> None:
    # A Python that answers the check before probing but cannot start the runner.
    broken = tmp_path / "python"
    broken.write_text(f'#!/bin/sh\ncase "$2" in *loop.main*) echo "no runner here" >&2; exit 1;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    broken.chmod(0o755)
    args = [sys.executable, "-m", "exporter", "probe", "--python", f"old={sys.executable}",
            "--python", f"new={broken}", "--workload", "sleep", "--mode", "sequential,threads",
            "--workers", "2", "--seconds", "0.1", "--repeats", "1", "--compare"]
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    text = subprocess.run(args, capture_output=True, text=True, cwd=TESTS, env=env, timeout=120)
    assert text.returncode == 1, text.stderr
    assert "sleep threads ×2: new failure: fails in the candidate (interpreter): " in text.stdout
    as_json = subprocess.run(args + ["--json"], capture_output=True, text=True, cwd=TESTS, env=env, timeout=120)
    assert as_json.returncode == 1
    comparison = json.loads(as_json.stdout)["comparison"]
    assert comparison["baseline"]["interpreter"]["name"] == "old"
    assert [(r["mode"], r["status"]) for r in comparison["rows"]] == [("sequential", "new failure"),
                                                                      ("threads", "new failure")]


# --- inputs nobody expected -------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document a value could be replaced."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, prefix + (index,))
    return found


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_damaged_document_is_compared_or_refused_with_one_line(data: Any) -> None:
    """The property: a comparison, or CompareError (exit 2) — never another exception."""
    good = document(step("threads", 2, 1.9, ci=[1.8, 2.0], pairs=[1.8, 1.9, 2.0]), step("processes", 2, None, success=False))
    damaged = json.loads(json.dumps(good))
    where = data.draw(st.sampled_from(paths(damaged)))
    replacement = data.draw(JSON_VALUES)
    if where:
        target = damaged
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = replacement
    else:
        damaged = replacement
    try:
        compare.parse_document(damaged, "cand.json")
        result = compare_dicts(good, damaged)
    except compare.CompareError as exc:
        assert "\n" not in str(exc)
    else:
        assert result.exit_code in (0, 1, 3)


# --- issue 17: compare's inputs are bounded ---------------------------------------------


def test_cli_deep_nesting_is_one_line_and_exit_2_not_a_recursion_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_compare(tmp_path, "[" * 100_000 + "]" * 100_000, document(), capsys=capsys)
    assert (code, out) == (2, "")
    assert err == f"parallelism-exporter compare: {tmp_path / 'base.json'}: nested more than 32 levels deep\n"


def test_cli_fifo_argument_is_one_line_and_exit_2_not_a_hang(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "base.json"
    os.mkfifo(fifo)
    (tmp_path / "cand.json").write_text(json.dumps(document()))
    import threading

    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(cli.run(["compare", str(fifo), str(tmp_path / "cand.json")])),
                              daemon=True)
    thread.start()
    thread.join(10)
    assert codes == [2], "compare blocked opening the FIFO"
    assert capsys.readouterr().err == f"parallelism-exporter compare: {fifo}: not a regular file (a FIFO)\n"


def test_cli_pair_speedups_beyond_what_a_probe_writes_are_refused_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """100 000 pair speedups took over a minute (the test was quadratic); a probe writes at
    most 2000 of them (twice max_repeats pairs at the most, max_repeats at most 1000)."""
    import time

    many = [1.9 + i * 1e-7 for i in range(100_000)]  # around the speedup: only their number is wrong
    started = time.monotonic()
    code, _, err = run_compare(tmp_path, document(step("threads", 2, 1.9, pairs=many)), document(), capsys=capsys)
    assert time.monotonic() - started < 5
    assert code == 2
    assert err.endswith("base.json: results[1].pair_speedups: holds 100000 values (a probe writes at most 2000: "
                        "one per pair)\n")


@pytest.mark.parametrize("text, expected", [
    ('{"results": [NaN]}', "not a JSON document: NaN is not a number JSON allows"),
    ('{"a": ' + "9" * 5000 + "}", "not a JSON document: an integer of 5000 digits (at most 40)"),
    ('{"a": \u0661}', "not a JSON document: Expecting value at line 1"),
])
def test_documents_with_numbers_json_does_not_allow_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 text: str, expected: str) -> None:
    code, _, err = run_compare(tmp_path, text, document(), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and expected in err, err


@pytest.mark.parametrize("flag", ["--threshold", "--alpha"])
def test_fraction_flags_take_ascii_digits_only(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, _, err = run_compare(tmp_path, document(), document(), flag, "\u0660.\u0661", capsys=capsys)
    assert code == 2 and f"{flag}: must be a number" in err


# --- issue 27: valid Unicode only, and exit 1 for a regression alone ----------------------


@pytest.mark.parametrize("where, expected", [
    (("results", 1, "message"), "results[1].message"),
    (("results", 1, "workload"), "results[1].workload"),
    (("interpreters", 0, "version"), "interpreters[0].version"),
    (("verdicts",), "verdicts"),
])
def test_a_lone_surrogate_in_a_document_is_exit_2_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: tuple, expected: str) -> None:
    """It was a traceback and exit 1, the regression code: printing "\\ud800" raises."""
    candidate = json.loads(json.dumps(document(step("threads", 2, 1.9, success=False))))  # a copy of IDENTITY_311 too
    target: Any = candidate
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = "\ud800" if where != ("verdicts",) else ["fine", "x\udfffy"]
    code, out, err = run_compare(tmp_path, document(step("threads", 2, 1.9)), candidate, capsys=capsys)
    assert (code, out) == (2, "")
    assert err == (f"parallelism-exporter compare: {tmp_path / 'cand.json'}: {expected}{'[1]' if expected == 'verdicts' else ''}: "
                   f"not valid Unicode: a lone surrogate U+{'DFFF' if expected == 'verdicts' else 'D800'} "
                   "(a \\ud800-\\udfff escape must be half of a pair)\n")


def test_a_surrogate_pair_is_one_character_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    candidate = document(step("threads", 2, 1.9, success=False))
    candidate["results"][1]["message"] = "\U0001f600"  # json.dumps writes "\ud83d\ude00"
    code, out, _ = run_compare(tmp_path, document(step("threads", 2, 1.9)), candidate, capsys=capsys)
    assert code == 1 and "\U0001f600" in out


def test_a_value_the_reader_did_not_expect_is_bad_input_exit_2_and_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(data: Any) -> Any:
        raise TypeError("'<' not supported between\n instances")

    monkeypatch.setattr(compare.document, "parse", unexpected)
    code, out, err = run_compare(tmp_path, document(), document(), capsys=capsys)
    assert (code, out) == (2, "")
    assert err == (f"parallelism-exporter compare: {tmp_path / 'base.json'}: not a results document this exporter "
                   "can read (TypeError: '<' not supported between instances)\n")


def test_a_bug_in_compare_shows_its_traceback_and_is_exit_70_never_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'Step' object has no attribute 'speedupp'")

    monkeypatch.setattr(table, "compare_documents", broken)
    code, out, err = run_compare(tmp_path, document(), document(), capsys=capsys)
    assert (code, out) == (compare.EXIT_BUG, "")
    assert "Traceback (most recent call last)" in err and "AttributeError: 'Step' object has no attribute" in err
    assert err.endswith("parallelism-exporter compare: internal error (exit 70): a bug in compare, not in the files; "
                        "please report it with the traceback above\n")


@pytest.mark.parametrize("candidate, expected", [
    (json.dumps(dict(document(step("threads", 2, 1.9)), version=2))[:-1] + ', "version": 99}',
     "(top level): duplicate key 'version'"),  # json kept the last: version 99
    (json.dumps(document(step("threads", 2, 1.9))).replace('"workers": 2,', '"workers": 2, "workers": 1,'),
     "results[1]: duplicate key 'workers'"),
    (dict(document(step("threads", 2, 1.9)), version=99), "version: this exporter reads versions 1 to"),
    (dict(document(step("threads", 2, 1.9)), version=-1), "version: this exporter reads versions 1 to"),
    (document(step("threads", 2, 1.9, pairs=[-1.0, -1.0, -1.0])), "results[1].pair_speedups[0]: must be a number > 0"),
    (document(step("threads", 2, 1.9, pairs=[0.0, 0.0, 0.0])), "results[1].pair_speedups[0]: must be a number > 0"),
    (document(step("threads", 0, 1.9)), "results[1].workers: must be a number from 1 to 256, got 0"),
    (document(step("threads", 2, 1.9, ci=[2.0, 1.8])), "results[1].speedup_ci: must be [low, high] with low <= high"),
])
def test_a_candidate_no_probe_wrote_is_exit_2_not_no_regression(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], candidate: Any, expected: str) -> None:
    """Each of these was exit 0, "no regression" (issue 27)."""
    code, out, err = run_compare(tmp_path, document(step("threads", 2, 1.9)), candidate, capsys=capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"parallelism-exporter compare: {tmp_path / 'cand.json'}: {expected}") and err.count("\n") == 1, err


def test_judging_takes_time_linear_in_the_steps() -> None:
    """Parsing, judging and --json's rows: no work per step that grows with the steps."""
    from scaling import assert_linear

    def documents(steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rows = [step("threads", 2, 1.9, ci=[1.8, 2.0], pairs=[1.8, 1.9, 2.0], workload=f"w{i}") for i in range(steps)]
        return document(*rows), document(*rows)

    assert_linear(lambda pair: compare_dicts(*pair).to_json(), documents, 200)


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2_not_a_bug(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """compare --json > /dev/full: the disk, not compare, failed."""
    import errno

    class Full:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    base = tmp_path / "base.json"
    base.write_text(json.dumps(document(step("threads", 2, 1.9))))
    monkeypatch.setattr(sys, "stdout", Full())
    assert cli.run(["compare", str(base), str(base), "--json"]) == 2
    assert capsys.readouterr().err == "parallelism-exporter compare: cannot write the result: No space left on device\n"
