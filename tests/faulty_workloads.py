"""User workloads that misbehave, for the fault-isolation tests (imported by the runner child)."""

from __future__ import annotations

import multiprocessing
import os
import time


def in_worker_process() -> bool:
    return multiprocessing.parent_process() is not None


def raises() -> None:
    raise ValueError("boom from a workload")


def raises_a_lone_surrogate() -> None:
    """Its message reaches the parent as the JSON escape "\\ud800": half a surrogate pair."""
    raise ValueError("bad \ud800 text")


def aborts() -> None:
    os.abort()


def hangs() -> None:
    time.sleep(3600)


def aborts_in_worker_process() -> None:
    """Fine in the runner itself; kills only a worker process of the processes mode."""
    if in_worker_process():
        os.abort()
    time.sleep(0.001)


def hangs_in_worker_process() -> None:
    if in_worker_process():
        time.sleep(3600)
    time.sleep(0.001)


def prints() -> None:
    """Writes to stdout, which must not corrupt the runner's event stream."""
    print("noise on stdout {not json")
    time.sleep(0.001)


def raises_in_subinterpreter() -> None:
    """Fine in the main interpreter; raises inside a PEP 734 subinterpreter."""
    import _interpreters  # CPython 3.13+

    if _interpreters.get_current()[0] != _interpreters.get_main()[0]:
        raise ValueError("boom in a subinterpreter")
    time.sleep(0.001)


def complains_then_aborts() -> None:
    """Leaves a line on stderr, then dies: the step's log must keep that line."""
    import sys

    print("workload: about to abort", file=sys.stderr, flush=True)
    os.abort()


# --- the containment suite: workloads that attack the harness rather than just fail ----------

_done_once: set[str] = set()


def _first_time(what: str) -> bool:
    """True once per process: the attack runs once, the rest of the probe stays quick."""
    if what in _done_once:
        return False
    _done_once.add(what)
    return True


def exits() -> None:
    """Leaves the interpreter without unwinding, as a C extension calling exit() would."""
    os._exit(3)


def forks_sleepers() -> None:
    """A fork storm: every operation starts a long sleep that inherits the runner's stdio."""
    import subprocess

    subprocess.Popen(["sleep", "600"])
    time.sleep(0.001)


def forks_detached_sleepers() -> None:
    """A fork storm of sleeps that detach their stdio and leave the session (setsid)."""
    import subprocess

    subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.001)


def double_forks_a_daemon() -> None:
    """The classic daemon: fork, setsid, fork again, close stdio; init adopts the grandchild."""
    if _first_time("daemon"):
        child = os.fork()
        if child == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.execvp("sleep", ["sleep", "600"])
            os._exit(0)
        os.waitpid(child, 0)
    time.sleep(0.001)


def holds_stderr_open() -> None:
    """A child that keeps the runner's stderr pipe open long after the probe is over."""
    import subprocess

    if _first_time("stderr"):
        subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    time.sleep(0.001)


def floods_output_without_newline() -> None:
    """10 MB on stdout (the runner points it at stderr) without a single newline."""
    import sys

    if _first_time("flood"):
        chunk = "x" * (1 << 20)
        for _ in range(10):
            sys.stdout.write(chunk)
        sys.stdout.flush()
    time.sleep(0.001)


def writes_invalid_utf8_then_raises() -> None:
    """Bytes that are not UTF-8 on stderr must not stop the parent reading the runner."""
    os.write(2, b"bad bytes: \xff\xfe\xc3\x28 end\n")
    raise ValueError("after invalid UTF-8")


def grows_memory_then_hangs() -> None:
    """Allocates 50 MB per operation up to 250 MB (bounded: the machine is shared), then hangs."""
    held = globals().setdefault("_held", [])
    if len(held) < 5:
        held.append(bytearray(50 << 20))
        return
    time.sleep(3600)


def raises_with_markup() -> None:
    """A message full of HTML, which the status page must show as text."""
    raise ValueError('<img src=x onerror=alert(1)> & <b>not bold</b>')


def grows_memory_without_end() -> None:
    """100 MB more per operation, each page touched, until the memory limit stops it.

    Bounded at 2 GB all the same (then it hangs), so a broken limit fails the test at its
    timeout instead of taking a shared test machine's memory.
    """
    held = globals().setdefault("_hungry", [])
    if len(held) < 20:
        held.append(b"\x01" * (100 << 20))
        return
    time.sleep(3600)


def grows_memory_in_worker_process() -> None:
    """Fine in the runner; grows without end (as above) only in a worker process."""
    if in_worker_process():
        grows_memory_without_end()
    time.sleep(0.001)


def leaves_a_thread_running() -> None:
    """Starts a (non-daemon) thread that outlives its operation: a worker process cannot exit."""
    import threading

    if _first_time("thread"):
        threading.Thread(target=time.sleep, args=(3600,), name="forgotten-sleeper").start()
    time.sleep(0.001)


def detaches_sleepers_then_hangs() -> None:
    """Five sleeps that leave the session (setsid) and a double-forked daemon, then a hang:
    all there when the exporter is killed mid-probe."""
    import subprocess

    if _first_time("detach"):
        for _ in range(5):
            subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        double_forks_a_daemon()
    time.sleep(3600)


# As root: a new PID namespace whose init moves itself out of the probe's cgroup v2 (root may)
# and starts 50 sleeps there; they stay in the probe's other cgroups and keep its token.
UNSHARE_AND_LEAVE_CGROUP = """
echo 1 > /sys/fs/cgroup/unified/cgroup.procs 2>/dev/null || echo 1 > /sys/fs/cgroup/cgroup.procs 2>/dev/null
for i in $(seq 50); do sleep 600 & done
wait
"""


def unshares_and_leaves_its_cgroup() -> None:
    import subprocess

    if _first_time("unshare"):
        subprocess.Popen(["unshare", "--fork", "--pid", "sh", "-c", UNSHARE_AND_LEAVE_CGROUP],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        time.sleep(0.5)  # the 50 sleeps are started
    time.sleep(0.001)
