"""Command line: ``parallelism-exporter probe`` (one-shot report) and ``serve`` (the daemon).

``main()`` is ``sys.exit(run())``; every invalid flag or config value exits with code 2 and
one line naming the flag or field.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from typing import NoReturn, Optional, Sequence

from rich.console import Console
from rich.text import Text

from exporter import __version__, report
from exporter.config import fields, inputs, loader, validators
from exporter.config.settings import Config, ProbeConfig
from exporter.errors import ConfigError, Terminated
from exporter.export.push import PushError, add_push_flags, push_reports
from exporter.gate import compare, table
from exporter.host import cpus
from exporter.model import document
from exporter.model.results import Interpreter, WorkloadReport
from exporter.pages.history import add_history_flags
from exporter.probe import preflight, run as probe
from exporter.runner import workloads
from exporter.runner.modes import ALL_MODES, ASYNCIO, PROCESSES, SEQUENTIAL, THREADS

EXIT_OK, EXIT_FAILED_PROBE, EXIT_USAGE = 0, 1, 2
NOT_A_TERMINAL_WIDTH = 160
# The one-shot report adds the I/O control (sleep) and asyncio to the daemon's defaults
# (ProbeConfig): a person reading it once sees the whole contrast, while the daemon spends
# its duty-cycle budget on the CPU-bound steps whose change an alert can act on.
ONE_SHOT = ProbeConfig(workloads=(*ProbeConfig.workloads, "sleep"), modes=(SEQUENTIAL, THREADS, PROCESSES, ASYNCIO))
MAX_RUNS = 20  # runs of one probe --runs: pyperf spreads its values over 20 processes
PLOT_INSTALL = "scripts/install plot (in a clone), or pip install matplotlib into this Python's environment"


TOP_EPILOG = """exit codes:
  probe    0 every probe succeeded, 1 a probe failed, 2 bad input
  compare  0 no regression, 1 a regression, 2 bad input, 3 inconclusive (rerun on a quieter host)
  serve    0 stopped by SIGTERM, SIGINT or POST /-/quit, 2 bad flags or configuration
each command's --help says more."""
COMPARE_DESCRIPTION = """\
Compare two probe --json (or /api/v1/results) documents of one host, step by step: both
speedups with their intervals, the change and a verdict. A regression is a drop of more than
--threshold that is not noise, a step that fails only in the candidate, or the GIL coming back."""
COMPARE_EPILOG = """exit codes:
  0  no regression: every step in both files could be judged and none regressed
  1  a regression (or the GIL came back), whatever else the files say
  2  bad input: a missing or damaged file, several interpreters without a choice, different usable CPUs
  3  inconclusive: a side could not show a step's parallelism (the host was too busy) or a baseline
     step is missing from the candidate; rerun the gate, never count it as a pass"""
SERVE_DESCRIPTION = """\
Run the exporter: probe the configured interpreters on a schedule, within a duty-cycle budget,
and serve the figures as Prometheus metrics (--web.telemetry-path), a status page at / and
/api/v1/results."""
SERVE_EPILOG = """exit codes:
  0  stopped by SIGTERM, SIGINT or POST /-/quit (with --web.enable-lifecycle); --config.check: valid
  2  a bad flag, config file or web config file, or an address it cannot listen on (one line on stderr)
SIGHUP or POST /-/reload reloads the config file; a reload that fails keeps the running configuration."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="parallelism-exporter",
                           description="Measure how well this Python runs CPU-bound work in parallel.",
                           epilog=TOP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    one_shot = commands.add_parser("probe", help="run the probes once and print a report",
                                   description="Run the probes once and print a report.",
                                   epilog=probe_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    one_shot.add_argument("--config.file", dest="config_file", help="YAML config; flags override it")
    fields.add_probe_flags(one_shot, ONE_SHOT)
    one_shot.add_argument("--python", action="append", metavar="[NAME=]PATH",
                          help="interpreter to probe; repeat to compare several (default: this one)")
    one_shot.add_argument("--runs", metavar="N",
                          help=f"probe each workload N times, each in a fresh runner, and pool their pairs: the "
                               f"interval then holds the variance between runs, as code whose speed settles "
                               f"differently in each run needs (1..{MAX_RUNS}; default 1)")
    one_shot.add_argument("--json", action="store_true", help="print one JSON document instead")
    one_shot.add_argument("--plot", metavar="FILE.png", help="also write a chart (needs matplotlib: the plot extra)")
    one_shot.add_argument("--textfile", metavar="PATH",
                          help="also write the metrics for node_exporter's textfile collector")
    one_shot.add_argument("--compare", action="store_true",
                          help="with two --python (baseline first): compare them as `compare` does; exit 1 on a regression")
    add_push_flags(one_shot)

    compare_command = commands.add_parser("compare", help="compare two probe --json results: the upgrade gate",
                                          description=COMPARE_DESCRIPTION, epilog=COMPARE_EPILOG,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    table.add_compare_flags(compare_command)

    serve = commands.add_parser("serve", help="run the exporter daemon", description=SERVE_DESCRIPTION,
                                epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_flags(serve)
    return parser


def probe_help_epilog() -> str:
    """The workloads and modes with their defaults, for ``probe --help``."""
    daemon = ProbeConfig()
    lines = [f"workloads (default: {','.join(ONE_SHOT.workloads)}; serve's default: {','.join(daemon.workloads)}):"]
    lines += [f"  {w.name:<16} {w.description}" for w in workloads.ALL_WORKLOADS.values()]
    lines += ["  module:function  your own no-argument function (package.module:function too), imported from",
              "                   a --workload.path directory or the interpreter's own sys.path, never the working directory",
              "", f"modes (default: {','.join(ONE_SHOT.modes)}; serve's default: {','.join(daemon.modes)}):"]
    lines += [f"  {mode.name:<16} {mode.description}" + (f" (needs {mode.needs})" if mode.needs else "")
              for mode in ALL_MODES.values()]
    lines += ["", "The one-shot report adds the sleep control and asyncio to what serve probes by default,",
              "to show the whole contrast once; serve keeps its duty-cycle budget for CPU-bound steps.",
              "Exit codes: 0 all probes succeeded, 1 a probe failed (with --compare: a regression),",
              "2 bad input, 3 with --compare: inconclusive (a step could not show its parallelism)."]
    return "\n".join(lines)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config.file", dest="config_file", help="YAML config (default: built-in defaults)")
    serve.add_argument("--config.check", dest="config_check", action="store_true",
                       help="validate the config file, print the result and exit 0 or 2")
    serve.add_argument("--web.listen-address", dest="listen_address", default=":9860",
                       help="address to listen on (default :9860)")
    serve.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                       help="path of the metrics endpoint (default /metrics)")
    serve.add_argument("--web.config.file", dest="web_config_file",
                       help="exporter-toolkit web config: TLS and basic auth")
    serve.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                       help="serve POST /-/reload and /-/quit (off: they answer 403, as in Prometheus)")
    serve.add_argument("--web.max-requests", dest="max_requests", type=_non_negative_int, default=40,
                       help="requests served at once; more get 503 (0: no limit; default 40)")
    add_history_flags(serve)
    serve.add_argument("--log.level", dest="log_level", default="info",
                       help="debug, info, warn or error (default info)")
    serve.add_argument("--log.format", dest="log_format", default="logfmt",
                       help="logfmt or json (default logfmt)")


def _non_negative_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def parse_interpreters(values: list[str]) -> tuple[Interpreter, ...]:
    """``--python PATH`` or ``--python NAME=PATH``; unnamed ones are named after the run."""
    interpreters = []
    for value in values:
        name, _, path = value.rpartition("=")
        if name:
            fields.check_flag("--python", validators.label_value, name)
        interpreters.append(Interpreter(name, fields.check_flag("--python", validators.path_value, path)))
    return tuple(interpreters)


def one_shot_config(args: argparse.Namespace) -> Config:
    """The config file (if any), then the flags on top, each checked by the config's validators."""
    base = loader.load_config(args.config_file)
    probe_fields = base.probe if args.config_file is not None else ONE_SHOT
    flags = fields.probe_flag_values(args)
    result = replace(base, probe=replace(probe_fields, **flags))
    loader.check_probe_flags(result.probe, flags.keys() | fields.explicitly_set(base.probe))
    if args.python:
        result = replace(result, interpreters=parse_interpreters(fields.comma_list(args.python)))
    return result


def check_textfile_target(path: str) -> None:
    """Fail before probing when the textfile cannot be written (a probe can take minutes)."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise ConfigError(f"--textfile: {path}: is a directory")
    if not os.path.isdir(directory):
        raise ConfigError(f"--textfile: {path}: directory {directory} does not exist")
    try:
        inputs.refuse_to_replace(target)
    except OSError as exc:
        raise ConfigError(f"--textfile: {exc}") from None
    try:
        # Root passes every permission check, so only a real file tells a read-only mount.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".pyparallel-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--textfile: {path}: cannot write in {directory}: {exc.strerror or exc}") from None


def name_after_identity(reports: list[WorkloadReport]) -> None:
    """Give unnamed ``--python`` interpreters a label from what they reported."""
    for item in reports:
        if item.interpreter.name:
            continue
        identity = item.identity
        name = item.interpreter.path
        if identity is not None:
            major_minor = ".".join(identity.version.split(".")[:2])
            name = f"{identity.implementation}-{major_minor}{'t' if identity.free_threaded_build else ''}"
        item.interpreter = Interpreter(name, item.interpreter.path, item.interpreter.env)


def check_plot_target(path: str) -> None:
    """Refuse --plot before probing when the chart could not be written."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"--plot: matplotlib is not installed; install it with {PLOT_INSTALL}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"--plot: directory {directory!r} does not exist")


def check_interpreters(interpreters: Sequence[Interpreter], from_flags: bool) -> None:
    """Refuse, before probing, an interpreter that cannot run the probe (after the other
    checks: this one starts each interpreter once)."""
    for interpreter in interpreters:
        reason = preflight.why_not_runnable(interpreter)
        if reason is not None:
            raise ConfigError(f"--python: {reason}" if from_flags else f"interpreter {interpreter.name}: {reason}")


def run_one_shot(args: argparse.Namespace) -> int:
    cfg = one_shot_config(args)
    if args.compare and len(cfg.interpreters) != 2:
        raise ConfigError("--compare: needs exactly two --python interpreters, the baseline first")
    if args.textfile:
        check_textfile_target(args.textfile)
    if args.plot:
        check_plot_target(args.plot)
    runs = 1 if args.runs is None else fields.check_flag("--runs", validators.bounded_int(lambda: MAX_RUNS),
                                                         fields.read_integer(args.runs))
    check_interpreters(cfg.interpreter_list(), from_flags=bool(args.python))
    host = cpus.host_cpus()
    err = Console(stderr=True)
    reports: list[WorkloadReport] = []
    # Progress only for a person watching: never into a log, a pipe or the JSON.
    with (err.status("probing…") if sys.stderr.isatty() else contextlib.nullcontext()) as status:
        for interpreter in cfg.interpreter_list():
            for spec in cfg.probe_specs(host.default_workers):
                where = f"{interpreter.name or interpreter.path}: "

                def progress(message: str, where: str = where) -> None:
                    if status is not None:  # Text, not markup: paths and workload names may hold brackets
                        status.update(Text(where + message))

                reports.append(probe.run_pooled(interpreter, spec, runs, progress))
    name_after_identity(reports)
    comparison = None
    if args.compare:  # reports come interpreter by interpreter: the baseline's first
        half = len(reports) // 2
        comparison = compare.compare_reports(reports[:half], reports[half:], host)
    if args.json:
        written = document.to_json(document.build(reports, host))
        if comparison is not None:
            written["comparison"] = comparison.to_json()
        print(json.dumps(written, indent=2))
    else:
        out = report_console()
        report.render(reports, host, out)
        if comparison is not None:
            out.print()
            table.render(comparison, out)
    if args.plot:
        from exporter.plot import write_chart

        write_chart(reports, args.plot, host)
        err.print(f"chart written to {args.plot}")
    if args.textfile:
        from exporter.export.collector import write_textfile

        try:
            write_textfile(args.textfile, reports, host, cfg)  # atomic: a temporary file, renamed
        except OSError as exc:
            raise ConfigError(f"--textfile: cannot write {args.textfile}: {exc.strerror or exc}") from None
    if args.push:
        push_reports(args.push, reports, host, cfg, job=args.push_job, instance=args.push_instance)
        err.print(Text(f"pushed to {args.push}"))
    if comparison is not None and comparison.exit_code != EXIT_OK:
        return comparison.exit_code
    return EXIT_OK if all(r.success for r in reports) else EXIT_FAILED_PROBE


def report_console() -> Console:
    """The report's console: a terminal's width, or wide enough that no figure is cut when the
    output goes to a file or a pipe (rich would otherwise fit it into 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=NOT_A_TERMINAL_WIDTH)


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "probe":
            return run_one_shot_interruptible(args)
        if args.command == "compare":
            return table.run_guarded(args)
        from exporter.serve.command import serve

        return serve(args)
    except (ConfigError, compare.CompareError) as exc:
        print(f"parallelism-exporter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PushError as exc:
        print(f"parallelism-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILED_PROBE


def run_one_shot_interruptible(args: argparse.Namespace) -> int:
    """Ctrl-C or SIGTERM: kill the runner tree, one line, exit 128 + the signal's number."""

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if in_main_thread else None
    try:
        return run_one_shot(args)
    except (KeyboardInterrupt, Terminated) as exc:
        signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        probe.kill_all_runners()
        print(f"parallelism-exporter: interrupted by {signum.name}; probe processes killed", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main() -> None:
    sys.exit(run())
