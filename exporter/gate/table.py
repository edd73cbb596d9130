"""The terminal side of ``parallelism-exporter compare``: the table, the verdict lines, the flags.

The judging (exporter/gate/compare.py) returns a `Comparison`; this module only shows it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from exporter.config import inputs
from exporter.gate.compare import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    IDENTITY_LABELS,
    IDLE_HOST,
    INCONCLUSIVE,
    CompareError,
    Comparison,
    Side,
    compare_documents,
    load_document,
)
from exporter.model.results import interpreter_label

STYLES = {"regression": "bold red", "new failure": "bold red", "improvement": "green", "fixed": "green",
          "no change": "", "failed in both": "yellow", "unavailable": "dim", "no figure": "yellow",
          INCONCLUSIVE: "bold yellow"}


def side_text(side: Side) -> str:
    if not side.available:
        return "n/a"
    if not side.success:
        return f"failed ({side.reason})"
    if side.cannot_tell:
        return "cannot tell"
    if side.speedup is None:
        return "withheld"
    interval = f" [{side.interval[0]:.2f}–{side.interval[1]:.2f}]" if side.interval else ""
    estimated = "~" if side.figure == IDLE_HOST else ""
    return f"{estimated}{side.speedup:.2f}×{interval}"


def identity_value(key: str, value: Any) -> str:
    if key == "gil_enabled" and isinstance(value, bool):
        return "enabled" if value else "disabled"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


COLUMNS = ("workload", "mode", "N", "baseline", "candidate", "change", "p", "verdict")
WRAPPING = ("workload", "baseline", "candidate")  # the rest never wraps: a verdict is never cut
INDENT = 2  # the lines under the table: wrapped lines keep the indent, so each stays one item


def render(comparison: Comparison, console: Console) -> None:
    """The comparison for a person or a CI log: fits 80 columns, as a pipe without
    ``COLUMNS`` gets (long names and intervals wrap inside their cells; the verdict, change
    and p never do)."""
    for role, label, interpreter in (("baseline: ", comparison.baseline_label, comparison.baseline_interpreter),
                                     ("candidate:", comparison.candidate_label, comparison.candidate_interpreter)):
        where = "" if label == interpreter.name else f"{label} — "
        console.print(Text(f"{role} {where}{interpreter_label(interpreter.name, interpreter.identity(), interpreter.path)}"))
    for change in comparison.identity_changes:
        key = change["field"]
        console.print(Text(f"identity changed: {IDENTITY_LABELS[key]}: {identity_value(key, change['baseline'])} → "
                           f"{identity_value(key, change['candidate'])}", style="yellow"))
    # Above the table rather than its title: a title is cut at the table's width, a line wraps.
    console.print(Text(f"speedup [interval]; regression: a drop of more than {comparison.threshold:.0%} "
                       f"that is not noise (alpha {comparison.alpha:g})"))
    console.print(rows_table(comparison))
    if any(row.baseline.figure == IDLE_HOST for row in comparison.rows):
        indented(console, Text("~ the idle-host estimate (workers the runtime let run at once × their rate, from the "
                               "kernel's accounting): the host left too few free cores for the wall clock", style="dim"))
    for row in comparison.rows:
        indented(console, Text(f"{row.workload} {row.mode} ×{row.workers}: {row.status}: {row.why}",
                               style=STYLES.get(row.status) or "dim"))
    for label, keys in (("only in the baseline", comparison.only_in_baseline),
                        ("only in the candidate", comparison.only_in_candidate)):
        if keys:
            console.print(Text(f"{label} (not compared): {', '.join(keys)}", style="dim"))
    regressions = comparison.regressions
    if comparison.gil_regression:
        console.print(Text(f"regression: {comparison.gil_regression}", style="bold red"))
    if regressions:
        console.print(Text(f"{len(regressions)} regression{'s' if len(regressions) > 1 else ''}: "
                           + "; ".join(f"{r.workload} {r.mode} ×{r.workers} ({r.status})" for r in regressions),
                           style="bold red"))
    if comparison.exit_code == EXIT_INCONCLUSIVE:
        console.print(Text("inconclusive (exit 3): " + "; ".join(comparison.inconclusive), style="bold yellow"))
    elif comparison.exit_code == EXIT_OK:
        console.print(Text("no regression", style="bold green"))


def rows_table(comparison: Comparison) -> Table:
    """One row per step in both files. One space between columns, as the probe's report."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0),
                  collapse_padding=True)
    verdict_width = max((len(row.status) for row in comparison.rows), default=len("verdict"))
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("N", "change", "p") else "left",
                         overflow="fold", no_wrap=column not in WRAPPING,
                         min_width=max(verdict_width, len(column)) if column == "verdict" else None)
    for row in comparison.rows:
        p = row.p_lower if row.change is not None and row.change < 0 else row.p_higher
        table.add_row(Text(row.workload), row.mode, str(row.workers), Text(side_text(row.baseline)),
                      Text(side_text(row.candidate)), "" if row.change is None else f"{row.change:+.0%}",
                      "" if p is None else f"{p:.2g}", Text(row.status, style=STYLES.get(row.status, "")))
    return table


def indented(console: Console, text: Text) -> None:
    console.print(Padding(text, (0, 0, 0, INDENT), expand=False))


# --- command line -----------------------------------------------------------------------


def fraction_flag(flag: str, text: str, low_open: bool) -> float:
    value = inputs.ascii_number(text)  # float() would read "٠.١" too
    if value is None:
        value = math.nan
    if not (0 < value < 1 if low_open else 0 <= value < 1):
        raise CompareError(f"{flag}: must be a number {'>' if low_open else '>='} 0 and < 1, got {text!r}")
    return value


def add_compare_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE.json", help="probe --json or /api/v1/results output: the reference")
    parser.add_argument("candidate", metavar="CANDIDATE.json", help="the same for the interpreter or run under test")
    parser.add_argument("--threshold", default=str(DEFAULT_THRESHOLD),
                        help=f"smallest relative drop that counts as a regression (default {DEFAULT_THRESHOLD:g})")
    parser.add_argument("--alpha", default=str(DEFAULT_ALPHA),
                        help=f"significance level of the test on paired windows (default {DEFAULT_ALPHA:g})")
    parser.add_argument("--baseline-interpreter", metavar="NAME", help="interpreter to use when the file holds several")
    parser.add_argument("--candidate-interpreter", metavar="NAME", help="the same for the candidate file")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def run(args: argparse.Namespace) -> int:
    """``parallelism-exporter compare``: returns the exit code."""
    try:
        threshold = fraction_flag("--threshold", args.threshold, low_open=False)
        alpha = fraction_flag("--alpha", args.alpha, low_open=True)
        comparison = compare_documents(load_document(args.baseline), load_document(args.candidate),
                                       baseline_label=args.baseline, candidate_label=args.candidate,
                                       baseline_interpreter=args.baseline_interpreter,
                                       candidate_interpreter=args.candidate_interpreter,
                                       threshold=threshold, alpha=alpha)
    except CompareError as exc:
        print(f"parallelism-exporter compare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        render(comparison, Console())
    return comparison.exit_code


def run_guarded(args: argparse.Namespace) -> int:
    """``run``, whose unexpected exceptions are exit 70 with their traceback, never exit 1.

    Bad input is CompareError (one line, exit 2) wherever it is found, and a value the reader
    did not expect becomes one while the document is read (``compare.VALUE_ERRORS``); an
    output that cannot be written is one line and exit 2 too. What is left is a bug in
    compare: it must show (the traceback) and must not pass for a regression or for bad
    input, which would send the user to their files.
    """
    try:
        return run(args)
    except OSError as exc:  # the files were read: this is the output (a full disk, a closed pipe)
        print(f"parallelism-exporter compare: cannot write the result: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - every exception: Python's own exit code for one would be 1
        traceback.print_exc()
        print(f"parallelism-exporter compare: internal error (exit {EXIT_BUG}): a bug in compare, not in the "
              "files; please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG
