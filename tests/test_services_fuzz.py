"""The services watcher's readers under hypothesis, as tests/test_inputs_fuzz.py holds the loaders:
whatever a watched process's owner puts in the files it points at — any bytes, an ELF whose
every count lies, a sparse file of gigabytes, a FIFO, a device — each reader returns a value
or refuses (``procfs.Refused``), promptly, having read no more than its byte cap.

The readers: the binary reader (``pyidentity.read_binary_facts``, through
``exporter.services.elf``), ``identify`` over a /proc-shaped directory, and procfs's ``maps``,
``stat`` and ``cmdline`` parsers. Bounded example counts, no deadline.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fake_elf
import support
from exporter.host import procfs
from exporter.services import elf, pyidentity
from exporter.services.pyidentity import NOT_PYTHON, UNREADABLE

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROMPTLY = 20.0  # seconds: a reader blocked on a FIFO, or walking 200 M symbols, never returns
_DIR = Path(tempfile.mkdtemp(prefix="pyparallel-services-fuzz-"))
# Header counts and table sizes as an attacker may declare them: zero, plausible, past the
# caps, and past the file.
COUNTS = st.one_of(st.integers(0, 70), st.integers(0, 1 << 16), st.integers(0, 1 << 62))


def promptly(read: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value) or ("error", the refusal), from a thread that must finish promptly."""
    return support.promptly(read, (procfs.Refused,), PROMPTLY, "the reader")


@contextmanager
def counting_reads() -> Iterator[list[int]]:
    """The bytes ``os.pread`` returns while the block runs (what the binary reader reads)."""
    counted = [0]
    real = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        data = real(fd, size, offset)
        counted[0] += len(data)
        return data

    os.pread = pread
    try:
        yield counted
    finally:
        os.pread = real


def binary(data: bytes, name: str = "libpython3.13t.so") -> str:
    path = _DIR / name
    path.write_bytes(data)
    return str(path)


def read_facts(path: str) -> tuple[str, Any]:
    with counting_reads() as counted:
        outcome = promptly(lambda: pyidentity.read_binary_facts(path))
    assert counted[0] <= elf.MAX_FILE_READ_BYTES
    if outcome[0] == "ok":
        assert isinstance(outcome[1], pyidentity.BinaryFacts)
    return outcome


# --- the binary reader ---------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_binary_give_facts_or_a_refusal(data):
    read_facts(binary(data))


@FUZZ
@given(st.booleans(), st.sampled_from([32, 64]), st.booleans(),
       st.fixed_dictionaries({}, optional={"symbol_table_bytes": COUNTS, "section_count": COUNTS,
                                           "segment_count": COUNTS, "string_table_bytes": COUNTS}),
       st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8))
def test_an_elf_whose_headers_lie_gives_facts_or_a_refusal(free_threaded, bits, big_endian, lies, flips):
    """Any count past the caps, any table outside the file, any byte changed."""
    symbols = fake_elf.interpreter(3, 13, 5, free_threaded)
    symbols["Py_Version"] = fake_elf.py_version(3, 13, 5, ">" if big_endian else "<", bits)
    data = bytearray(fake_elf.elf_file(symbols, needed=["libc.so.6"], bits=bits, big_endian=big_endian,
                                       **{k: min(v, 0xFFFF if k.endswith("count") else (1 << (bits - 1)) - 1)
                                          for k, v in lies.items()}))
    for position, value in flips:
        if position < len(data):
            data[position] = value
    kind, facts = read_facts(binary(bytes(data)))
    if not lies and not flips:  # the honest file says what it is
        assert kind == "ok" and facts == pyidentity.BinaryFacts("cpython", "3.13.5", free_threaded, ("libc.so.6",))


@settings(max_examples=20, deadline=None)
@given(st.integers(1 << 20, 8 << 30), st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_a_sparse_file_of_gigabytes_costs_no_more_than_the_caps(size, symbols_at, strings_at):
    """An ELF header in front of gigabytes of nothing, its tables pointing anywhere."""
    path = _DIR / "sparse.so"
    header = fake_elf.elf_file(fake_elf.interpreter(3, 13, 5, True), symbol_table_bytes=min(symbols_at, 1 << 62),
                               string_table_bytes=min(strings_at, 1 << 62))
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(max(size, len(header)))
    read_facts(str(path))


def special_file(kind: str) -> str:
    """A path of the given kind named like a library of Python, in a directory of its own."""
    directory = Path(tempfile.mkdtemp(dir=_DIR))
    path = directory / "libpython3.13t.so"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
    elif kind == "device":
        if os.geteuid() != 0:
            return "/dev/null"
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    elif kind == "symlink loop":
        path.symlink_to(path)
    elif kind == "symlink to a fifo":
        os.mkfifo(directory / "fifo")
        path.symlink_to(directory / "fifo")
    elif kind == "dangling symlink":
        path.symlink_to(directory / "nothing-here")
    return str(path)


SPECIAL = ["fifo", "directory", "socket", "device", "symlink loop", "symlink to a fifo", "dangling symlink"]


@pytest.mark.integration  # binds a Unix socket
@settings(max_examples=len(SPECIAL) * 3, deadline=None)
@given(st.sampled_from(SPECIAL), st.booleans())
def test_a_special_file_as_executable_or_library_is_never_opened_for_reading(kind, as_library):
    """identify, over a /proc-shaped directory, of a process whose executable or mapped
    libpython is a special file: UNREADABLE or NOT_PYTHON, at once, never a blocked open."""
    proc = Path(tempfile.mkdtemp(dir=_DIR))
    process = proc / "70"
    process.mkdir()
    (process / "root").symlink_to("/")
    target = special_file(kind)
    if as_library:  # a program that embeds Python and maps the special file as its libpython
        (process / "exe").symlink_to(binary(fake_elf.elf_file({"main": b""}), "uwsgi"))
        exe, mapped = "/usr/bin/uwsgi", target
    else:
        (process / "exe").symlink_to(target)
        exe, mapped = "/usr/bin/python3.13t", "/nonexistent/libpython3.13t.so"
    reasons: list[str] = []
    kind_of, identity = promptly(lambda: pyidentity.identify(70, exe, lambda: [mapped], pyidentity.BinaryCache(),
                                                             str(proc), count=reasons.append))
    assert kind_of == "ok" and identity in (UNREADABLE, NOT_PYTHON), identity
    assert set(reasons) <= {"refused"}


# --- procfs's parsers ------------------------------------------------------------------------


def fake_process(files: dict[str, bytes]) -> str:
    proc = Path(tempfile.mkdtemp(dir=_DIR))
    (proc / "70").mkdir()
    for name, data in files.items():
        (proc / "70" / name).write_bytes(data)
    return str(proc)


@FUZZ
@given(st.lists(st.text(max_size=120), max_size=40))
def test_any_maps_text_gives_absolute_paths(lines):
    proc = fake_process({"maps": "\n".join(lines).encode("utf-8", "surrogatepass")})
    kind, paths = promptly(lambda: procfs.mapped_files(70, proc))
    assert kind == "ok" and all(isinstance(p, str) and p.startswith("/") for p in paths)


@FUZZ
@given(st.binary(max_size=400))
def test_any_stat_bytes_give_a_stat_or_vanished(data):
    proc = fake_process({"stat": data})

    def read() -> object:
        try:
            return procfs.read_stat(70, proc=proc)
        except procfs.Vanished:
            return None

    assert promptly(read)[0] == "ok"


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.integers(1, 4000))
def test_a_command_line_of_any_length_is_read_as_its_first_4_kib(piece, repeats):
    proc = fake_process({"cmdline": piece * repeats})
    kind, text = promptly(lambda: procfs.cmdline(70, proc))
    assert kind == "ok" and len(text) <= procfs.MAX_CMDLINE_BYTES
