"""``parallelism-exporter compare BASELINE.json CANDIDATE.json``: is the candidate's parallelism worse?

pyperf's ``compare_to`` answers this for speed; this answers it for parallel speedup, as a
gate before an interpreter upgrade ships. For every (workload, mode, workers) in both files:
both speedups with their intervals, the change, and a verdict. A *regression* is a drop of
more than ``--threshold`` that is not noise: either the candidate's whole interval lies below
the baseline's by more than the threshold, or a one-sided Mann–Whitney U test on the paired
windows' speedups (``pair_speedups``, when both files carry them) rejects "no change" at
``--alpha``. A step that fails in the candidate but not in the baseline is a regression too,
and so is the GIL coming back: a candidate that runs with the GIL enabled where the baseline
ran without it. Where the evidence cannot show the answer — either side's step had too few
free cores to show its parallelism (another process was busy), or a baseline step was not
measured in the candidate — the outcome is *inconclusive*, never "no regression".
Exit codes: 0 no regression, 1 regression, 2 bad input (one line, never a traceback),
3 inconclusive (nothing regressed that could be seen, but not everything could be seen).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from exporter.config import inputs
from exporter.config.validators import MAX_REPEATS
from exporter.host.cpus import HostCpus
from exporter.model import document
from exporter.model.document import InterpreterInfo, Results, Step
from exporter.model.results import WorkloadReport
from exporter.runner.modes import SEQUENTIAL, max_cores
from exporter.stats import measurement
from exporter.stats.ranktest import mann_whitney_less

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3
EXIT_BUG = 70  # sysexits.h's EX_SOFTWARE: compare itself failed; never 1, which says "regression"
# What a value can make code raise: a field of an unexpected type or size reaching arithmetic,
# indexing or a codec. Raised while a document is read, it is the document's fault: bad input.
# What only code can raise (AttributeError, NameError, AssertionError, ...) stays a bug.
VALUE_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError)
DEFAULT_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.05
IDENTITY_FIELDS = ("implementation", "version", "free_threaded_build", "gil_enabled")
IDENTITY_LABELS = {"implementation": "implementation", "version": "version",
                   "free_threaded_build": "free-threaded build", "gil_enabled": "GIL at run time"}
FAILING = ("regression", "new failure")
WALL_CLOCK, IDLE_HOST = "wall-clock speedup", "idle-host estimate"
INCONCLUSIVE = "inconclusive"
# What a document may hold: /api/v1/results of a large fleet config is a few MB.
MAX_DOCUMENT_BYTES = 64 << 20
MAX_RESULTS = 100_000
# One value per (baseline, parallel) pair; a step measures at most twice max_repeats pairs
# (spoiled ones are replaced), and max_repeats is at most MAX_REPEATS.
MAX_PAIRS = 2 * MAX_REPEATS


class CompareError(Exception):
    """Bad input: one line for the user, exit code 2."""


# --- reading the files ------------------------------------------------------------------


def load_document(path: str) -> Results:
    """A ``probe --json`` or ``/api/v1/results`` document, read into the results model.

    Read under ``exporter.config.inputs``' rule: a regular file (a FIFO is an error, not a hang) of
    at most ``MAX_DOCUMENT_BYTES``, nested and sized within bounds, numbers in ASCII; then
    parsed by ``exporter.model.document`` (any version), so every field compare reads is there.
    """
    try:
        data = inputs.read_json(path, max_bytes=MAX_DOCUMENT_BYTES, max_items=MAX_RESULTS)
    except OSError as exc:
        raise CompareError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except inputs.InputError as exc:
        raise CompareError(f"{path}: {exc}") from None
    return parse_document(data, path)


def parse_document(data: Any, path: str) -> Results:
    """The document as the results model reads it (missing fields at their defaults), or
    CompareError naming the file and its first bad field."""
    try:
        parsed = document.parse(data)
    except document.DocumentError as exc:
        raise CompareError(f"{path}: {exc}") from None
    except VALUE_ERRORS as exc:  # the reader missed a check: still the document's, still one line
        raise CompareError(f"{path}: not a results document this exporter can read "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if len(parsed.results) > MAX_RESULTS:
        raise CompareError(f"{path}: results: holds {len(parsed.results)} results (at most {MAX_RESULTS})")
    for i, result in enumerate(parsed.results):
        if result.pair_speedups is not None and len(result.pair_speedups) > MAX_PAIRS:
            raise CompareError(f"{path}: results[{i}].pair_speedups: holds {len(result.pair_speedups)} values "
                               f"(a probe writes at most {MAX_PAIRS}: one per pair)")
    return parsed


def select_interpreter(results: Results, name: Optional[str], path: str, flag: str) -> InterpreterInfo:
    """The one interpreter of the file, or the one named with ``flag``."""
    names = [i.name for i in results.interpreters]
    if name is not None:
        chosen = results.interpreter_named(name)
        if chosen is None:
            raise CompareError(f"{path}: no interpreter {name!r} in this file (it has: {', '.join(names) or 'none'})")
        return chosen
    if not names:
        raise CompareError(f"{path}: holds no results yet (is the exporter's first round still running?)")
    if len(names) > 1:
        raise CompareError(f"{path}: holds {len(names)} interpreters ({', '.join(names)}): choose one with {flag}")
    return results.interpreters[0]


# --- comparing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One step as one file reports it."""

    success: bool
    available: bool
    speedup: Optional[float]
    interval: Optional[tuple[float, float]]
    interval_kind: str  # "confidence interval", "repeats' spread" or ""
    pairs: tuple[float, ...]
    reason: Optional[str]
    message: str
    cannot_tell: Optional[str] = None  # why this side's figure could not show the parallelism
    figure: str = WALL_CLOCK  # which speedup: measured, or the idle-host estimate

    @staticmethod
    def of(step: Step, usable_cpus: float) -> Side:
        interval, kind = step.interval()
        return Side(success=step.success, available=step.available, speedup=step.speedup,
                    interval=interval, interval_kind=kind, pairs=tuple(step.pair_speedups or ()),
                    reason=step.reason, message=step.message or step.unsteady_reason or "",
                    cannot_tell=cannot_tell(step, usable_cpus))

    @staticmethod
    def estimated(step: Step) -> Side:
        """The step's idle-host speedup from the kernel's accounting, in place of the wall clock."""
        interval = (step.idle_speedup_ci[0], step.idle_speedup_ci[1]) if step.idle_speedup_ci else None
        return Side(success=step.success, available=step.available, speedup=step.idle_speedup,
                    interval=interval, interval_kind="confidence interval" if interval else "",
                    pairs=tuple(step.pair_idle_speedups), reason=step.reason, message=step.message or "",
                    figure=IDLE_HOST)


def sides(baseline: Step, candidate: Step, b_cpus: float, c_cpus: float) -> tuple[Side, Side]:
    """Both steps' wall-clock figures; where either could not tell (the host left too few free
    cores), both steps' idle-host estimates when both have them: the kernel's accounting does
    not need free cores, and comparing like with like keeps the two figures apart."""
    b_side, c_side = Side.of(baseline, b_cpus), Side.of(candidate, c_cpus)
    busy = b_side.cannot_tell or c_side.cannot_tell
    if busy and baseline.idle_speedup is not None and candidate.idle_speedup is not None:
        return Side.estimated(baseline), Side.estimated(candidate)
    return b_side, c_side


def cannot_tell(step: Step, usable_cpus: float) -> Optional[str]:
    """Why a step's figure could not show its parallelism (too few free cores), or None.

    Documents written before ``conclusive`` existed are judged from their other load.
    """
    if step.conclusive is False:
        return step.inconclusive_reason or "too few free cores"
    if step.conclusive is True or step.mode == SEQUENTIAL or step.interference_cores is None:
        return None
    needed = min(float(step.workers), usable_cpus, max_cores(step.mode) or usable_cpus)
    return measurement.FreeCores(usable_cpus, step.interference_cores, 0.0, needed).reason()


@dataclass(frozen=True)
class Row:
    workload: str
    mode: str
    workers: int
    baseline: Side
    candidate: Side
    status: str  # regression, improvement, no change, new failure, fixed, failed in both, unavailable, no figure,
    # inconclusive
    why: str
    change: Optional[float] = None  # candidate / baseline - 1
    p_lower: Optional[float] = None  # one-sided p that the candidate's windows are lower
    p_higher: Optional[float] = None


@dataclass(frozen=True)
class Comparison:
    baseline_label: str
    candidate_label: str
    baseline_interpreter: InterpreterInfo
    candidate_interpreter: InterpreterInfo
    identity_changes: list[dict[str, Any]]
    rows: list[Row]
    only_in_baseline: list[str] = field(default_factory=list)
    only_in_candidate: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA

    @property
    def regressions(self) -> list[Row]:
        return [row for row in self.rows if row.status in FAILING]

    @property
    def gil_regression(self) -> Optional[str]:
        """The GIL came back: enabled in the candidate where the baseline ran without it."""
        return gil_came_back(self.baseline_interpreter, self.candidate_interpreter)

    @property
    def inconclusive(self) -> list[str]:
        """What could not be judged: steps either side could not measure, steps left out."""
        reasons = [f"{row.workload} {row.mode} ×{row.workers}: {row.why}" for row in self.rows
                   if row.status == INCONCLUSIVE]
        if self.only_in_baseline:
            reasons.append("not measured in the candidate: " + ", ".join(self.only_in_baseline))
        if not self.rows and not self.only_in_baseline:
            reasons.append("the files have no step in common")
        return reasons

    @property
    def exit_code(self) -> int:
        if self.regressions or self.gil_regression:
            return EXIT_REGRESSION
        return EXIT_INCONCLUSIVE if self.inconclusive else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": {"file": self.baseline_label, "interpreter": interpreter_json(self.baseline_interpreter)},
            "candidate": {"file": self.candidate_label, "interpreter": interpreter_json(self.candidate_interpreter)},
            "threshold": self.threshold, "alpha": self.alpha,
            "identity_changes": self.identity_changes,
            "rows": [row_json(row) for row in self.rows],
            "only_in_baseline": self.only_in_baseline, "only_in_candidate": self.only_in_candidate,
            "regressions": len(self.regressions), "gil_regression": self.gil_regression,
            "inconclusive": self.inconclusive, "exit_code": self.exit_code,
        }


def row_json(row: Row) -> dict[str, Any]:
    """``asdict(row)`` without its deep copies, which took 7 s for 100 000 rows: a row holds
    only numbers, strings and tuples of them."""
    return dict(vars(row), baseline=dict(vars(row.baseline)), candidate=dict(vars(row.candidate)))


def judge(baseline: Side, candidate: Side, threshold: float, alpha: float) -> dict[str, Any]:
    """Status, reason and figures of one step present in both files."""
    if not baseline.available or not candidate.available:
        return {"status": "unavailable", "why": "mode unavailable in " + ("the baseline" if not baseline.available
                                                                         else "the candidate")}
    if not candidate.success:
        if baseline.success:
            return {"status": "new failure", "why": f"fails in the candidate ({candidate.reason}): {candidate.message}"}
        return {"status": "failed in both", "why": f"candidate: {candidate.reason}: {candidate.message}"}
    if not baseline.success:
        return {"status": "fixed", "why": f"failed in the baseline ({baseline.reason})"}
    for side, name in ((candidate, "candidate"), (baseline, "baseline")):
        if side.cannot_tell:
            return {"status": INCONCLUSIVE, "why": f"the {name} cannot tell: {side.cannot_tell}"}
    if baseline.speedup is None or candidate.speedup is None:
        return {"status": "no figure", "why": "speedup withheld (unsteady): " + (candidate.message or baseline.message)}
    change = candidate.speedup / baseline.speedup - 1
    figures: dict[str, Any] = {"change": change}
    of = "" if baseline.figure == WALL_CLOCK else f" ({baseline.figure}s: the host left too few free cores)"
    if len(baseline.pairs) >= 2 and len(candidate.pairs) >= 2:
        figures["p_lower"] = mann_whitney_less(candidate.pairs, baseline.pairs)
        figures["p_higher"] = mann_whitney_less(baseline.pairs, candidate.pairs)
    b, c = baseline.interval, candidate.interval
    if b and c and c[1] < b[0] * (1 - threshold):
        return figures | {"status": "regression",
                          "why": f"candidate's interval {c[0]:.2f}–{c[1]:.2f} lies more than {threshold:.0%} below "
                                 f"the baseline's {b[0]:.2f}–{b[1]:.2f}{of}"}
    if b and c and c[0] > b[1] * (1 + threshold):
        return figures | {"status": "improvement",
                          "why": f"candidate's interval {c[0]:.2f}–{c[1]:.2f} lies more than {threshold:.0%} above "
                                 f"the baseline's {b[0]:.2f}–{b[1]:.2f}{of}"}
    if "p_lower" in figures and change <= -threshold and figures["p_lower"] < alpha:
        return figures | {"status": "regression",
                          "why": f"{change:+.0%}; Mann–Whitney U on the paired windows: "
                                 f"p={figures['p_lower']:.3g} < {alpha:g}{of}"}
    if "p_higher" in figures and change >= threshold and figures["p_higher"] < alpha:
        return figures | {"status": "improvement",
                          "why": f"{change:+.0%}; Mann–Whitney U on the paired windows: "
                                 f"p={figures['p_higher']:.3g} < {alpha:g}{of}"}
    if abs(change) < threshold:
        why = f"{change:+.0%} is within the {threshold:.0%} threshold"
    elif "p_lower" in figures:
        why = f"{change:+.0%} but not significant (p={min(figures['p_lower'], figures['p_higher']):.3g} ≥ {alpha:g})"
    else:
        why = f"{change:+.0%} but the intervals are not {threshold:.0%} apart: noise cannot be ruled out"
    return figures | {"status": "no change", "why": why + of}


def gil_came_back(baseline: InterpreterInfo, candidate: InterpreterInfo) -> Optional[str]:
    """A regression whatever the speedups say: the candidate runs with the GIL where the
    baseline ran without it (PYTHON_GIL=1, or an extension that re-enabled it)."""
    if baseline.gil_enabled is not False or candidate.gil_enabled is not True:
        return None
    why = ("PYTHON_GIL=1 in the candidate's environment" if candidate.gil_requested
           else "an extension module re-enabled it, or the build has a GIL")
    return f"the GIL is enabled in the candidate but was disabled in the baseline ({why})"


def identity_changes(baseline: InterpreterInfo, candidate: InterpreterInfo) -> list[dict[str, Any]]:
    return [{"field": key, "baseline": getattr(baseline, key), "candidate": getattr(candidate, key)}
            for key in IDENTITY_FIELDS if getattr(baseline, key) != getattr(candidate, key)]


def interpreter_json(interpreter: InterpreterInfo) -> dict[str, Any]:
    """As the document writes it (``compare --json``'s baseline and candidate)."""
    return asdict(interpreter)


def step_label(key: tuple[str, str, int]) -> str:
    return f"{key[0]} {key[1]} ×{key[2]}"


def compare_documents(baseline: Results, candidate: Results, *,
                      baseline_label: str = "baseline", candidate_label: str = "candidate",
                      baseline_interpreter: Optional[str] = None, candidate_interpreter: Optional[str] = None,
                      threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Compare two documents; raises CompareError where a comparison would mislead."""
    b_cpus, c_cpus = baseline.host.usable_cpus, candidate.host.usable_cpus
    if b_cpus != c_cpus:
        raise CompareError(
            f"{baseline_label} ran with {b_cpus:g} usable CPUs and {candidate_label} with {c_cpus:g}: a speedup is "
            "bounded by the usable CPUs, so the difference would measure the hosts, not the interpreters; "
            "probe both on the same host (or under the same CPU limit)")
    b_interp = select_interpreter(baseline, baseline_interpreter, baseline_label, "--baseline-interpreter")
    c_interp = select_interpreter(candidate, candidate_interpreter, candidate_label, "--candidate-interpreter")

    def steps(results: Results, name: str) -> dict[tuple[str, str, int], Step]:
        return {r.key.step: r for r in results.results if r.interpreter == name}

    b_steps, c_steps = steps(baseline, b_interp.name), steps(candidate, c_interp.name)
    rows = []
    for key in (k for k in b_steps if k in c_steps):
        b_side, c_side = sides(b_steps[key], c_steps[key], b_cpus, c_cpus)
        if key[1] == SEQUENTIAL and b_side.success == c_side.success:
            continue  # the baseline of each file: its speedup is 1 by definition
        rows.append(Row(*key, baseline=b_side, candidate=c_side, **judge(b_side, c_side, threshold, alpha)))
    return Comparison(baseline_label, candidate_label, b_interp, c_interp, identity_changes(b_interp, c_interp), rows,
                      [step_label(k) for k in b_steps if k not in c_steps],
                      [step_label(k) for k in c_steps if k not in b_steps], threshold, alpha)


def compare_reports(baseline: Sequence[WorkloadReport], candidate: Sequence[WorkloadReport], host: HostCpus, *,
                    threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """``probe --python OLD --python NEW --compare``: the two interpreters of one run."""
    return compare_documents(document.build(baseline, host), document.build(candidate, host),
                             baseline_label=baseline[0].interpreter.name, candidate_label=candidate[0].interpreter.name,
                             threshold=threshold, alpha=alpha)
