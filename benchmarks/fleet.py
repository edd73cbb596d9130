"""Fleet-scale cost of the rules and dashboards: a real Prometheus backfilled with 7 days of a
1 000- or 5 000-host fleet, every rule group and every dashboard query timed against it.

    .venv/bin/python benchmarks/fleet.py --hosts 1000            # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/fleet.py --hosts 5000 --workdir /var/tmp/fleet

Run by hand on a quiet machine (it prints `uptime` first); results go to stdout as Markdown,
for benchmarks/results-fleet.md.

What is backfilled (`promtool tsdb create-blocks-from openmetrics`, one input file per 2-hour
block and host chunk, so promtool parses each line once):

- every series the exporter's default config exports per host (one interpreter, `pure_python`
  and `sha256`, sequential/threads/processes, 2 workers, 2 CPUs: 130 series), scraped every
  15 s: the 51 the rules read for the last 80 minutes (the longest window a rule reads of
  them is 1 h), the others for the last hour (so the index holds them); for the host the
  host dashboard is timed on, all of them for all 7 days;
- the recording rules' series every 5 minutes (the state group's interval): the per-probe
  level, reference, hold and blind series and the fleet aggregates for 7 days, the others for
  6 h 20 min (the failure-ratio alert reads 6 h of the recorded success).

Each rule is then run as an instant query at the data's end, with `stats=all`: a group's time
is the sum of its rules' engine times (Prometheus evaluates a group's rules one after the
other); each dashboard panel's as the sum of its targets' (Grafana sends them together, so
this is an upper bound), instant panels at the end, time series over 7 days at the step
Grafana picks for a 1 000-point panel (10 minutes). Nothing is appended, so a real group
takes a little longer (writing its results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import cpu_model  # noqa: E402
from dashboards import queries  # noqa: E402
from dashboards import recording as r  # noqa: E402
from dashboards import fleet_rules  # noqa: E402
from dashboards.generate import rule_files  # noqa: E402
from dashboards.mixin_config import CONFIG  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRAPE, ROUND, STATE = 15, 300, 300
BLOCK = 7200
RAW_SPAN = 80 * 60  # the longest window a rule reads of the exporter's series (1 h) and a margin
RECORDED_SPAN = 6 * 3600 + 20 * 60  # the longest window a rule reads of a recorded series (6 h)
OTHER_SPAN = 3600  # series no rule reads: an hour, so the index holds them
DAYS = 7
STEP_SECONDS = 600  # Grafana's $__interval for 7 days on a 1 000-point panel, at least the panels' 10m
STEPS = [(w, m, "1" if m == "sequential" else "2") for w in ("pure_python", "sha256")
         for m in ("sequential", "threads", "processes")]
PARALLEL = [s for s in STEPS if s[1] != "sequential"]
VIEWED = 0  # the host the host dashboard is timed on


def jitter(*key: int) -> float:
    """A deterministic number in [-1, 1) per tuple of integers (cheap: called per sample)."""
    value = 0
    for part in key:
        value = (value * 1_000_003 + part * 2_654_435_761) % 4_294_967_291
    return value / 2_147_483_645.5 - 1


@dataclass(frozen=True)
class Host:
    index: int

    @property
    def name(self) -> str:
        return f"host-{self.index:05d}"

    @property
    def labels(self) -> str:
        return f'job="pyparallel",instance="{self.name}:9860",node="{self.name}"'

    @property
    def node(self) -> str:
        return f'job="pyparallel",node="{self.name}"'

    @property
    def regressed(self) -> bool:  # 1 % of hosts hold a drop, 1 % are blind
        return self.index % 100 == 7

    @property
    def blind(self) -> bool:
        return self.index % 100 == 42

    def level(self, workload: str, mode: str) -> float:
        if mode == "sequential":
            return 1.0
        if mode == "threads" and workload == "pure_python":
            return 1.0
        return 1.9


def step_labels(host: Host, step: tuple[str, str, str], node: bool = False) -> str:
    workload, mode, workers = step
    base = host.node if node else host.labels
    return f'{base},interpreter="default",workload="{workload}",mode="{mode}",workers="{workers}"'


Series = tuple[str, str, Any]  # metric, labels, value(t) -> float


def raw_series(host: Host) -> Iterator[Series]:
    """The exporter's series the rules read, as its default config exports them."""
    role = f'{host.labels},interpreter="default"'
    for step in STEPS:
        workload, mode, workers = step
        labels = step_labels(host, step)
        level = host.level(workload, mode)

        def speedup(t: float, level: float = level, key: int = STEPS.index(step)) -> float:
            return round(level * (1 + 0.1 * jitter(host.index, key, int(t // ROUND))), 4)

        yield "pyparallel_probe_success", labels, lambda t: 1.0
        yield "pyparallel_probe_last_success_timestamp_seconds", labels, lambda t: float(t // ROUND * ROUND)
        yield "pyparallel_speedup_unsteady", labels, lambda t: 0.0
        yield "pyparallel_cpu_cores_used", labels, lambda t, lv=level: round(min(lv, 2.0) * 0.98, 3)
        yield "pyparallel_speedup_ratio", labels, speedup
        yield "pyparallel_efficiency_ratio", labels, lambda t, s=speedup, n=float(workers): round(s(t) / n, 4)
        if mode != "sequential":
            yield "pyparallel_step_conclusive", labels, lambda t: 0.0 if host.blind else 1.0
    yield ("pyparallel_python_info", f'{role},version="3.13.5",implementation="cpython",free_threaded_build="false"',
           lambda t: 1.0)
    yield "pyparallel_gil_enabled", role, lambda t: 1.0
    yield "pyparallel_gil_requested", role, lambda t: 0.0
    yield "pyparallel_exporter_build_info", f'{host.labels},version="0.1.0"', lambda t: 1.0
    yield "pyparallel_probe_interval_seconds", host.labels, lambda t: 300.0
    yield "pyparallel_round_duration_seconds", host.labels, lambda t: 21.5
    yield "pyparallel_config_last_reload_successful", host.labels, lambda t: 1.0
    for kind in ("logical", "physical", "usable"):
        yield "pyparallel_host_cpus", f'{host.labels},kind="{kind}"', lambda t: 2.0
    yield "up", host.labels, lambda t: 1.0


def other_series(host: Host) -> Iterator[Series]:
    """The rest of what the exporter's default config exports (read by no rule; only the host
    dashboard draws them), so the index holds the default series count per host."""
    for step in STEPS:
        labels = step_labels(host, step)
        for metric in ("pyparallel_probe_duration_seconds", "pyparallel_speedup_lower_ratio",
                       "pyparallel_speedup_upper_ratio", "pyparallel_speedup_spread_ratio",
                       "pyparallel_throughput_units_per_second", "pyparallel_cpu_rate_ratio",
                       "pyparallel_interference_cores", "pyparallel_worker_startup_seconds"):
            yield metric, labels, lambda t: 0.5
        for cpu in ("0", "1"):
            yield "pyparallel_core_utilisation_ratio", f'{labels},cpu="{cpu}"', lambda t: 0.9
        if step[1] != "sequential":
            for metric in ("pyparallel_speedup_pairs", "pyparallel_step_remeasured", "pyparallel_serial_fraction_ratio"):
                yield metric, labels, lambda t: 0.0
    role = f'{host.labels},interpreter="default"'
    yield "pyparallel_probe_nice", role, lambda t: 0.0
    for mode in ("sequential", "threads", "processes"):
        yield "pyparallel_mode_available", f'{role},mode="{mode}"', lambda t: 1.0
    yield "pyparallel_duty_cycle_ratio", host.labels, lambda t: 0.05
    yield "pyparallel_process_start_method_info", f'{host.labels},start_method="forkserver"', lambda t: 1.0
    yield "pyparallel_config_last_reload_success_timestamp_seconds", host.labels, lambda t: 1.7e9


def recorded_series(host: Host, start: float) -> tuple[list[Series], list[Series]]:
    """(drawn over 7 days, read only over the carry window) recording-rule series."""
    long: list[Series] = []
    short: list[Series] = []
    role = f'{host.node},interpreter="default"'
    identity = 'version="3.13.5",implementation="cpython",free_threaded_build="false"'
    for step in PARALLEL:
        workload, mode, _ = step
        labels = step_labels(host, step, node=True)
        level = host.level(workload, mode)
        held = start + 3 * 86400

        def median(t: float, level: float = level, key: int = STEPS.index(step), held: float = held) -> float:
            scale = 0.5 if host.regressed and t >= held else 1.0
            return round(level * scale * (1 + 0.02 * jitter(host.index, key, int(t // STATE))), 4)

        long += [(r.speedup_median(), labels, median),
                 (r.reference(), labels, lambda t, lv=level: lv),
                 (r.held_since(), labels, lambda t, h=held: h if host.regressed and t >= h else 0.0),
                 (r.blind_since(), labels, lambda t: start if host.blind else 0.0)]
        short += [(r.efficiency_last(), labels, lambda t, m=median: round(m(t) / 2, 4)),
                  (r.conclusive(), labels, lambda t: 0.0 if host.blind else 1.0),
                  (fleet_rules.reference_ratio(), labels, lambda t, m=median, lv=level: round(m(t) / lv, 4)),
                  (r.reference_identity(), f"{labels},{identity}", lambda t: start),
                  (r.first_seen(), labels, lambda t: start)]
    for step in STEPS:
        labels = step_labels(host, step, node=True)
        short += [(r.probe_last_seen(), labels, lambda t: t),
                  (r.probe_success(), labels, lambda t: 1.0),
                  (r.last_success(), labels, lambda t: float(t // ROUND * ROUND))]
    long += [(r.identity_since(), f"{role},{identity}", lambda t: start),
             (r.host_last_seen(), host.node, lambda t: t)]
    short += [(r.gil_enabled(), role, lambda t: 1.0),
              (r.host_targets(), f'{host.node},instance="{host.name}:9860"', lambda t: 1.0)]
    return long, short


def fleet_series(hosts: list[Host], end: int, start: int) -> dict[str, list[tuple[str, Any, int, int]]]:
    """metric -> [(labels, value(t), first sample time, spacing)] for these hosts."""
    raw_from = end - RAW_SPAN
    families: dict[str, list[tuple[str, Any, int, int]]] = {}
    for host in hosts:
        long, short = recorded_series(host, start)
        for metric, labels, value in raw_series(host):
            families.setdefault(metric, []).append((labels, value, start if host.index == VIEWED else raw_from, SCRAPE))
        for metric, labels, value in other_series(host):
            families.setdefault(metric, []).append((labels, value, start if host.index == VIEWED else end - OTHER_SPAN,
                                                    SCRAPE))
        for series_list, first in ((long, start), (short, end - RECORDED_SPAN)):
            for metric, labels, value in series_list:
                families.setdefault(metric, []).append((labels, value, first, STATE))
    return families


def fleet_aggregates(hosts: int, start: int) -> dict[str, list[tuple[str, Any, int, int]]]:
    """The pyparallel.fleet group's series (a handful, whatever the fleet size), 7 days."""
    families: dict[str, list[tuple[str, Any, int, int]]] = {}
    for workload, mode, _ in PARALLEL:
        labels = f'job="pyparallel",workload="{workload}",mode="{mode}"'
        for q, value in ((0.05, 0.62), (0.5, 1.0), (0.95, 1.04)):
            families.setdefault(fleet_rules.ratio_quantiles(), []).append(
                (f'{labels},quantile="{q:g}"', lambda t, v=value: v, start, STATE))
        families.setdefault(fleet_rules.held_probes(), []).append(
            (labels, lambda t: float(hosts // 100) if t >= start + 3 * 86400 else 0.0, start, STATE))
        families.setdefault(fleet_rules.blind_probes(), []).append((labels, lambda t: float(hosts // 100), start, STATE))
    return families


def write_block(path: Path, families: dict[str, list[tuple[str, Any, int, int]]], block_start: int, end: int) -> int:
    """One OpenMetrics file of the samples in [block_start, block_start + BLOCK); lines written."""
    lines = 0
    stop = min(block_start + BLOCK, end + 1)
    with path.open("w") as out:
        for metric, series in families.items():
            out.write(f"# TYPE {metric} gauge\n")
            for labels, value, first, spacing in series:
                begin = max(block_start, first)
                times = range(-(-begin // spacing) * spacing, stop, spacing)
                if times:
                    out.write("".join(f"{metric}{{{labels}}} {value(t):g} {t}\n" for t in times))
                    lines += len(times)
        out.write("# EOF\n")
    return lines


def backfill(data: Path, hosts: int, end: int, chunk: int) -> None:
    start = end - DAYS * 86400
    scratch = Path(tempfile.mkdtemp(prefix="fleet-om-", dir=data.parent))
    total, began = 0, time.monotonic()
    chunks = [fleet_series([Host(i) for i in range(first, min(first + chunk, hosts))], end, start)
              for first in range(0, hosts, chunk)]
    chunks[0].update(fleet_aggregates(hosts, start))
    try:
        for block_start in range(start // BLOCK * BLOCK, end + 1, BLOCK):
            for first, families in enumerate(chunks):
                path = scratch / f"{block_start}-{first}.om"
                total += write_block(path, families, block_start, end)
                subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(data)],
                               check=True)
                path.unlink()
            print(f"  backfilled up to {time.strftime('%m-%d %H:%M', time.gmtime(block_start + BLOCK))} UTC: "
                  f"{total / 1e6:.1f}M samples, {time.monotonic() - began:.0f}s", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Prometheus:
    def __init__(self, data: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = data.parent / "prometheus.yml"
        config.write_text("global: {scrape_interval: 15s}\n")
        self.url = f"http://127.0.0.1:{port}"
        self.log = (data.parent / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
             "--storage.tsdb.retention.time=30d", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else self.url + path
        with urllib.request.urlopen(url, timeout=600) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api") else body.decode()

    def wait_settled(self) -> None:
        """Ready, and no compaction for a minute (the backfilled blocks overlap per host chunk)."""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            try:
                if self.get("/-/ready").strip():
                    break
            except OSError:
                time.sleep(2)
        last, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 60:
            metrics = self.get("/metrics")
            count = sum(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith(("prometheus_tsdb_compactions_total", "prometheus_tsdb_vertical_compactions_total")))
            if count != last:
                last, quiet_since = count, time.monotonic()
            time.sleep(5)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        self.log.close()

    def cpu_seconds(self) -> float:
        """CPU time Prometheus has used: what a query costs whatever else loads the machine."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def timed(self, expr: str, at: int, range_: tuple[int, int] | None = None) -> tuple[float, int, int, float]:
        """(engine seconds, peak samples, series returned, CPU seconds), the median of three runs."""
        runs = []
        for _ in range(3):
            cpu = self.cpu_seconds()
            if range_ is None:
                answer = self.get("/api/v1/query", query=expr, time=at, stats="all")
            else:
                answer = self.get("/api/v1/query_range", query=expr, start=range_[0], end=range_[1],
                                  step=STEP_SECONDS, stats="all")
            assert answer["status"] == "success", answer
            stats = answer["data"]["stats"]
            runs.append((stats["timings"]["execTotalTime"], stats["samples"]["peakSamples"],
                         len(answer["data"]["result"]), self.cpu_seconds() - cpu))
        return sorted(runs)[1]


def rule_groups() -> list[dict[str, Any]]:
    return [group for groups in rule_files(CONFIG).values() for group in groups]


def dashboard_panels(name: str, end: int) -> list[tuple[str, list[str], bool]]:
    """(title, exprs with variables filled, instant?) of every panel and annotation."""
    dashboard = json.loads((ROOT / "dashboards" / name).read_text())
    host = Host(VIEWED)
    values = {"job": "pyparallel", "host": host.name, "instance": f"{host.name}:9860", "interpreter": ".+",
              "workload": "pure_python", "datasource": "prometheus", "__interval": f"{STEP_SECONDS}s",
              "__rate_interval": "1m", "__range": "7d"}
    panels = []
    for panel in queries.iter_panels(dashboard):
        targets = [t for t in panel.get("targets", []) if t.get("expr") and not t.get("hide")]
        if panel.get("type") == "row" or not targets:
            continue
        instant = all(t.get("instant") for t in targets)
        panels.append((panel["title"], [queries.substitute(t["expr"], values) for t in targets], instant))
    for title, expr in queries.annotation_queries(dashboard):
        panels.append((f"annotation: {title}", [queries.substitute(expr, values)], False))
    return panels


def measure(prometheus: Prometheus, end: int) -> None:
    """Wall time (at the machine's load) and CPU time (what it costs an idle core) per group and panel."""
    print("\n| rule group | rules | wall (s) | CPU (s) | costliest rule, CPU (s) | peak samples |\n"
          "|---|---:|---:|---:|---|---:|")
    for group in rule_groups():
        times = [(prometheus.timed(rule["expr"], end), rule.get("record") or rule.get("alert")) for rule in group["rules"]]
        slowest = max(times, key=lambda t: t[0][3])
        print(f"| {group['name']} | {len(times)} | {sum(t[0][0] for t in times):.3f} | "
              f"{sum(t[0][3] for t in times):.2f} | {slowest[1]}: {slowest[0][3]:.2f} | {max(t[0][1] for t in times):,} |")
    for name in ("python-parallelism-fleet.json", "python-parallelism.json"):
        print(f"\n| {name} panel | kind | wall (s) | CPU (s) | peak samples | series |\n|---|---|---:|---:|---:|---:|")
        for title, exprs, instant in dashboard_panels(name, end):
            runs = [prometheus.timed(e, end, None if instant else (end - DAYS * 86400, end)) for e in exprs]
            print(f"| {title} | {'instant' if instant else '7 days'} | {sum(x[0] for x in runs):.3f} | "
                  f"{sum(x[3] for x in runs):.2f} | {max(x[1] for x in runs):,} | {sum(x[2] for x in runs)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="keep the TSDB here (default: a temporary directory)")
    parser.add_argument("--chunk", type=int, default=1000, help="hosts per backfill file")
    parser.add_argument("--reuse", action="store_true", help="measure an existing --workdir without backfilling")
    args = parser.parse_args()
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"fleet.py: {tool} is not installed (apt-get install prometheus)", file=sys.stderr)
            return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fleet-"))
    data = workdir / "data"
    marker = workdir / "end"
    print(f"# Fleet benchmark: {args.hosts} hosts, {DAYS} days\n")
    print(f"Machine: {cpu_model()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs; "
          f"{subprocess.run(['prometheus', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    if not args.reuse:
        end = int(time.time()) // STATE * STATE - STATE
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        began = time.monotonic()
        backfill(data, args.hosts, end, args.chunk)
        marker.write_text(str(end))
        print(f"Backfill: {time.monotonic() - began:.0f}s")
    end = int(marker.read_text())
    prometheus = Prometheus(data)
    try:
        prometheus.wait_settled()
        head = prometheus.get("/api/v1/status/tsdb")["data"]["headStats"]
        print(f"Load before measuring: {Path('/proc/loadavg').read_text().split()[:3]}; "
              f"TSDB {subprocess.run(['du', '-sh', str(data)], capture_output=True, text=True).stdout.split()[0]}, "
              f"head series {head['numSeries']}")
        measure(prometheus, end)
    finally:
        prometheus.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
