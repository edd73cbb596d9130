"""Which Python a running process is, read from the files it has mapped: no ptrace, nothing injected.

A process shows its interpreter in ``/proc/<pid>/maps``: the executable, a
``libpythonX.Y[t]`` library when Python is linked shared, and the ABI tag of the extension
modules it has loaded (``_json.cpython-313t-x86_64-linux-gnu.so``). Names alone can mislead:
a free-threaded build's ``python3`` is a hard link of ``python3.13``, without the ``t``. So
the binary that holds the interpreter is read as well (as a file, through
``/proc/<pid>/root`` or ``/proc/<pid>/exe``, never the process's memory): its exported
``Py_Version`` gives the exact version, and only a free-threaded build carries the banner
``free-threading build`` that ``sys.version`` prints. A binary is read once per inode.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

# Py_GetVersion()'s format on a Py_GIL_DISABLED build: "... experimental free-threading build
# (...)" in 3.13, "... free-threading build (...)" from 3.14 on; GIL builds have no such text.
FREE_THREADING_BANNER = b"free-threading build ("
_LIBPYTHON = re.compile(r"/libpython(\d)\.(\d{1,2})(t?)d?m?\.so")
_EXECUTABLE = re.compile(r"/python(\d)\.(\d{1,2})(t?)$")
_ABI_TAG = re.compile(r"\.cpython-(\d)(\d{1,2})(t?)d?-[^/]*\.so$")
_PYPY = re.compile(r"/(?:libpypy(\d)(?:\.(\d{1,2}))?-c\.so|pypy(\d)?(?:\.(\d{1,2}))?)$")
_RELEASE_LEVELS = {0xA: "a", 0xB: "b", 0xC: "rc"}
MAX_CACHED_BINARIES = 256  # distinct interpreter binaries on one host: a handful, in practice


@dataclass(frozen=True)
class PythonIdentity:
    """Implementation, version and build of one process's interpreter."""

    implementation: str  # "cpython", "pypy"; "none": not Python; "unknown": maps unreadable
    version: str = ""  # "3.13.5" from the binary, "3.13" from a file name, "" when unknown
    free_threaded_build: Optional[bool] = None  # None: cannot tell

    @property
    def is_python(self) -> bool:
        return self.implementation not in ("none", "unknown")

    @property
    def build(self) -> str:
        """The ``free_threaded_build`` label value: true, false or unknown."""
        return "unknown" if self.free_threaded_build is None else str(self.free_threaded_build).lower()


NOT_PYTHON = PythonIdentity("none")
UNREADABLE = PythonIdentity("unknown")


@dataclass(frozen=True)
class BinaryFacts:
    """What an interpreter binary says about itself; None where it does not say."""

    version: Optional[str]
    free_threaded: Optional[bool]


def version_from_hex(value: int) -> str:
    """PY_VERSION_HEX (``Py_Version``) as CPython writes it: 0x030d05f0 -> ``3.13.5``."""
    major, minor, micro = value >> 24 & 0xFF, value >> 16 & 0xFF, value >> 8 & 0xFF
    level, serial = value >> 4 & 0xF, value & 0xF
    suffix = f"{_RELEASE_LEVELS[level]}{serial}" if level in _RELEASE_LEVELS else ""
    return f"{major}.{minor}.{micro}{suffix}"


def read_binary_facts(path: str) -> BinaryFacts:
    """The version (exported ``Py_Version``) and build (the banner) of an ELF binary."""
    with open(path, "rb") as handle:
        version = _py_version(handle)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            banner = data.find(FREE_THREADING_BANNER) >= 0
    # No Py_Version (not CPython, or older than 3.11): the banner's absence proves nothing.
    return BinaryFacts(version, banner if version is not None or banner else None)


def _py_version(handle: BinaryIO) -> Optional[str]:
    try:
        elf = ELFFile(handle)
        symbols = elf.get_section_by_name(".dynsym")
        found = symbols.get_symbol_by_name("Py_Version") if isinstance(symbols, SymbolTableSection) else None
        if not found:
            return None
        address, size = found[0]["st_value"], found[0]["st_size"]
        for segment in elf.iter_segments("PT_LOAD"):
            start = segment["p_vaddr"]
            if start <= address < start + segment["p_filesz"] and size in (4, 8):
                handle.seek(address - start + segment["p_offset"])
                raw = handle.read(size)
                return version_from_hex(int.from_bytes(raw, "little" if elf.little_endian else "big"))
    except (ELFError, ValueError, OSError, KeyError, AttributeError):
        return None  # not an ELF file we can read: the names decide
    return None


class BinaryCache:
    """Facts per binary inode: interpreters are few, processes many."""

    def __init__(self) -> None:
        self._facts: dict[tuple[int, int, int, int], BinaryFacts] = {}
        self._lock = threading.Lock()

    def facts(self, path: str) -> Optional[BinaryFacts]:
        """The binary's facts, or None when it cannot be opened (gone, no permission)."""
        try:
            status = os.stat(path)
        except OSError:
            return None
        key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        with self._lock:
            known = self._facts.get(key)
        if known is not None:
            return known
        try:
            facts = read_binary_facts(path)
        except (OSError, ValueError):  # ValueError: mmap of an empty file
            return None
        with self._lock:
            if len(self._facts) >= MAX_CACHED_BINARIES:
                self._facts.clear()
            self._facts[key] = facts
        return facts


@dataclass(frozen=True)
class NameEvidence:
    """What the mapped files' names say: the interpreter binary, its version, its build."""

    implementation: str
    binary: Optional[str]  # the mapped file that holds the interpreter, as the process sees it
    version: str
    free_threaded: Optional[bool]


def evidence_from_names(exe: str, mapped: Iterable[str]) -> Optional[NameEvidence]:
    """Read the mapped file names; None when nothing there is Python."""
    exe = exe.removesuffix(" (deleted)")
    paths = [p.removesuffix(" (deleted)") for p in mapped]
    for path in [exe, *paths]:
        if pypy := _PYPY.search(path):
            numbers = [g for g in pypy.groups() if g]
            return NameEvidence("pypy", None, ".".join(numbers) if len(numbers) == 2 else "", False)
    library = next((p for p in paths if _LIBPYTHON.search(p)), None)
    tags = sorted({m.groups() for p in paths if (m := _ABI_TAG.search(p))})
    named = _LIBPYTHON.search(library) if library else _EXECUTABLE.search(exe)
    if tags:  # an extension's tag is the interpreter's own ABI: it outranks a hard link's name
        major, minor, t = tags[0]
    elif named:
        major, minor, t = named.groups()
    elif os.path.basename(exe).startswith("python"):
        return NameEvidence("cpython", exe, "", None)  # "python3", "python": the binary decides
    else:
        return None
    return NameEvidence("cpython", library or exe, f"{major}.{minor}", t == "t")


def identify(pid: int, exe: str, mapped: Iterable[str], binaries: BinaryCache, proc: str = "/proc") -> PythonIdentity:
    """The identity of process ``pid`` from its executable and mapped files.

    The binary is opened in the process's own mount namespace (``/proc/<pid>/root``), so a
    container's interpreter is read, not the host's file at the same path; the executable
    through ``/proc/<pid>/exe``, which still opens after an upgrade deleted the file.
    """
    evidence = evidence_from_names(exe, mapped)
    if evidence is None:
        return NOT_PYTHON
    if evidence.implementation != "cpython" or evidence.binary is None:
        return PythonIdentity(evidence.implementation, evidence.version, evidence.free_threaded)
    if evidence.binary == exe.removesuffix(" (deleted)"):
        where = f"{proc}/{pid}/exe"
    else:
        where = f"{proc}/{pid}/root{evidence.binary}"
    facts = binaries.facts(where)
    version, free_threaded = evidence.version, evidence.free_threaded
    if facts is not None:
        version = facts.version or version
        free_threaded = facts.free_threaded if facts.free_threaded is not None else free_threaded
    return PythonIdentity("cpython", version, free_threaded)
