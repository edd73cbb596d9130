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
from exporter.gate import compare, table
from exporter.config import settings
from exporter.host import cpus
from exporter.config import inputs
from exporter.probe import run as probe
from exporter.runner import workloads
from exporter.errors import ConfigError, Terminated
from exporter.pages.history import add_history_flags
from exporter.export.push import PushError, add_push_flags, push_reports
from exporter.model.modes import ALL_MODES
from exporter.model.results import Interpreter, WorkloadReport

EXIT_OK, EXIT_FAILED_PROBE, EXIT_USAGE = 0, 1, 2
NOT_A_TERMINAL_WIDTH = 160
# The one-shot report adds the I/O control (sleep) and asyncio to the daemon's defaults
# (config.ProbeConfig): a person reading it once sees the whole contrast, while the daemon
# spends its duty-cycle budget on the CPU-bound steps whose change an alert can act on.
ONE_SHOT_WORKLOADS = ("pure_python", "sha256", "sleep")
ONE_SHOT_MODES = ("sequential", "threads", "processes", "asyncio")
PLOT_INSTALL = "scripts/install plot (in a clone), or pip install matplotlib into this Python's environment"

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def comma_list(values: Optional[Sequence[str]]) -> list[str]:
    """Flags may repeat and may hold comma-separated values: --mode threads,processes."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="parallelism-exporter",
                           description="Measure how well this Python runs CPU-bound work in parallel.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    one_shot = commands.add_parser("probe", help="run the probes once and print a report",
                                   description="Run the probes once and print a report.",
                                   epilog=probe_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    one_shot.add_argument("--config.file", dest="config_file", help="YAML config; flags override it")
    one_shot.add_argument("--workload", action="append",
                          help=f"workload name or package.module:function (default: {','.join(ONE_SHOT_WORKLOADS)})")
    one_shot.add_argument("--mode", action="append",
                          help=f"mode to compare (default: {','.join(ONE_SHOT_MODES)})")
    one_shot.add_argument("--workers", action="append", help="worker count(s) (default: usable cores)")
    one_shot.add_argument("--repeats", help="fewest independent (one worker, N workers) pairs per step (default 3)")
    one_shot.add_argument("--seconds", help="target duration of one unit of work (default 0.3)")
    one_shot.add_argument("--timeout", help="longest wait for the runner's next result (default 60s)")
    one_shot.add_argument("--precision", help="target relative half-width of the speedup's 95%% interval (default 0.05)")
    one_shot.add_argument("--max-repeats", help="most clean pairs a step runs to reach the precision (default 10)")
    one_shot.add_argument("--step-budget", help="time one step may spend reaching the precision (default 5s)")
    one_shot.add_argument("--nice", help="run the probe at a lower priority: 0..19 or idle (SCHED_IDLE) (default 0)")
    one_shot.add_argument("--wait-quiet", metavar="SECONDS",
                          help="before each parallel step, wait up to this long for enough free cores (for CI; "
                               "default 0: measure at once and say 'cannot tell' when the host is too busy)")
    one_shot.add_argument("--memory-limit",
                          help="memory of the whole probe process tree, e.g. 2GiB (default: half the host's memory)")
    one_shot.add_argument("--deadline",
                          help="wall-clock limit of one workload's whole probe (default: timeout x (steps + 1))")
    one_shot.add_argument("--workload.path", dest="workload_path", action="append", metavar="DIR",
                          help="directory to import package.module:function workloads from; repeatable "
                               "(the working directory is never searched)")
    one_shot.add_argument("--python", action="append", metavar="[NAME=]PATH",
                          help="interpreter to probe; repeat to compare several (default: this one)")
    one_shot.add_argument("--start-method", help="processes start method: fork, forkserver, spawn")
    one_shot.add_argument("--json", action="store_true", help="print one JSON document instead")
    one_shot.add_argument("--plot", metavar="FILE.png", help="also write a chart (needs matplotlib: the plot extra)")
    one_shot.add_argument("--textfile", metavar="PATH",
                          help="also write the metrics for node_exporter's textfile collector")
    one_shot.add_argument("--compare", action="store_true",
                          help="with two --python (baseline first): compare them as `compare` does; exit 1 on a regression")
    add_push_flags(one_shot)

    compare_command = commands.add_parser("compare", help="compare two probe --json results; exit 1 on a regression")
    table.add_compare_flags(compare_command)

    serve = commands.add_parser("serve", help="run the exporter daemon")
    add_serve_flags(serve)
    return parser


def probe_help_epilog() -> str:
    """The workloads and modes with their defaults, for ``probe --help``."""
    daemon = settings.ProbeConfig()
    lines = [f"workloads (default: {','.join(ONE_SHOT_WORKLOADS)}; serve's default: {','.join(daemon.workloads)}):"]
    lines += [f"  {w.name:<16} {w.description}" for w in workloads.ALL_WORKLOADS.values()]
    lines += ["  module:function  your own no-argument function (package.module:function too), imported from",
              "                   a --workload.path directory or the interpreter's own sys.path, never the working directory",
              "", f"modes (default: {','.join(ONE_SHOT_MODES)}; serve's default: {','.join(daemon.modes)}):"]
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


def parse_interpreters(values: list[str]) -> tuple[settings.Interpreter, ...]:
    """``--python PATH`` or ``--python NAME=PATH``; unnamed ones are named after the run."""
    interpreters = []
    for value in values:
        name, _, path = value.rpartition("=")
        if name:
            settings.check_flag("--python", settings.label_value, name)
        interpreters.append(settings.Interpreter(name, settings.check_flag("--python", settings.path_value, path)))
    return tuple(interpreters)


def one_shot_config(args: argparse.Namespace) -> settings.Config:
    """The config file (if any), then the flags on top, each checked by the config's validators."""
    base = settings.load_config(args.config_file)
    probe_fields = base.probe
    if args.config_file is None:
        probe_fields = settings.ProbeConfig(workloads=ONE_SHOT_WORKLOADS, modes=ONE_SHOT_MODES)
    changes: dict = {}
    if args.workload:
        changes["workloads"] = settings.check_flag("--workload", settings.list_of(settings.workload_name), comma_list(args.workload))
    if args.mode:
        changes["modes"] = settings.check_flag("--mode", settings.list_of(settings.mode_name), comma_list(args.mode))
    if args.workers:
        counts = [_integer(v) for v in comma_list(args.workers)]
        changes["workers"] = settings.check_flag("--workers", settings.list_of(settings.worker_count), counts)
    if args.repeats is not None:
        value = _integer(args.repeats)
        changes["repeats"] = settings.check_flag("--repeats", settings.repeats_count, value)
    if args.seconds is not None:
        changes["unit_seconds"] = settings.check_flag("--seconds", settings.unit_seconds, _number(args.seconds))
    if args.timeout is not None:
        changes["timeout_seconds"] = settings.check_flag("--timeout", settings.timeout_duration, _number(args.timeout))
    if args.deadline is not None:
        changes["deadline_seconds"] = settings.check_flag("--deadline", settings.deadline_duration, _number(args.deadline))
    if args.workload_path:
        changes["workload_path"] = settings.check_flag(
            "--workload.path", settings.list_of(settings.directory), comma_list(args.workload_path))
    if args.start_method is not None:
        changes["start_method"] = settings.check_flag("--start-method", settings.start_method, args.start_method)
    if args.precision is not None:
        changes["precision"] = settings.check_flag("--precision", settings.ratio, _number(args.precision))
    if args.max_repeats is not None:
        value = _integer(args.max_repeats)
        changes["max_repeats"] = settings.check_flag("--max-repeats", settings.repeats_count, value)
    if args.step_budget is not None:
        changes["step_budget_seconds"] = settings.check_flag("--step-budget", settings.timeout_duration, _number(args.step_budget))
    if args.nice is not None:
        changes["nice"] = settings.check_flag("--nice", settings.nice_value, _integer(args.nice))
    if args.memory_limit is not None:
        changes["memory_limit_bytes"] = settings.check_flag("--memory-limit", settings.memory_size,
                                                          _integer(args.memory_limit))
    if args.wait_quiet is not None:
        changes["wait_quiet_seconds"] = settings.check_flag("--wait-quiet", settings.wait_duration, _number(args.wait_quiet))
    result = replace(base, probe=replace(probe_fields, **changes))
    budget_set = args.step_budget is not None or (args.config_file is not None and
                                                   base.probe.step_budget_seconds != settings.ProbeConfig().step_budget_seconds)
    settings.check_probe_flags(result.probe, step_budget_given=budget_set)
    if args.python:
        result = replace(result, interpreters=parse_interpreters(comma_list(args.python)))
    return result


def _number(text: str) -> object:
    """A number written in ASCII (float() would read "٠.٥" too), or the text for the error."""
    number = inputs.ascii_number(text)
    return text if number is None else number


def _integer(text: str) -> object:
    """An integer written in ASCII decimal digits, or the text for the error."""
    number = inputs.ascii_int(text)
    return text if number is None else number


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


def run_one_shot(args: argparse.Namespace) -> int:
    cfg = one_shot_config(args)
    if args.compare and len(cfg.interpreters) != 2:
        raise ConfigError("--compare: needs exactly two --python interpreters, the baseline first")
    if args.textfile:
        check_textfile_target(args.textfile)
    if args.plot:
        check_plot_target(args.plot)
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

                reports.append(probe.run_workload(interpreter, spec, progress))
    name_after_identity(reports)
    comparison = None
    if args.compare:  # reports come interpreter by interpreter: the baseline's first
        half = len(reports) // 2
        comparison = compare.compare_reports(reports[:half], reports[half:], host)
    if args.json:
        document = report.json_document(reports, host)
        if comparison is not None:
            document["comparison"] = comparison.to_json()
        print(json.dumps(document, indent=2))
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
            return table.run(args)
        from exporter.serve.daemon import serve

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
