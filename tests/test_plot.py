"""The --plot chart's title says which interpreter, host and date it shows."""

from __future__ import annotations

import datetime
import socket

from exporter.host.cpus import HostCpus
from exporter.plot import chart_title
from exporter.model.results import Identity, Interpreter, ProbeSpec, WorkloadReport


def test_title_names_interpreter_host_cpus_and_date() -> None:
    identity = Identity("3.13.5", "cpython", "/opt/python3.13t", True, False, ("forkserver",), None)
    report = WorkloadReport(Interpreter("cpython-3.13t", "/opt/python3.13t"), ProbeSpec("pure_python", ("threads",), (2,)),
                            identity=identity)
    when = datetime.datetime(2026, 11, 25, 21, 5, tzinfo=datetime.timezone.utc)
    title = chart_title([report, report], HostCpus(logical=4, physical=2, affinity=4, quota=2.0), when)
    assert title.splitlines() == [
        "cpython-3.13t: cpython 3.13.5, free-threaded, GIL disabled",
        f"host {socket.gethostname()}: 4 logical CPUs, 2 usable · 2026-11-25 21:05 UTC",
    ]
