"""Which Python a running process is, read from the binary that runs it: no ptrace, nothing injected.

The evidence is what the interpreter binary itself exports, read as a file (through
``/proc/<pid>/exe`` or ``/proc/<pid>/root/...``, never the process's memory) by
``exporter.services.elf``: CPython exports ``Py_Initialize``; from 3.11 on ``Py_Version``
holds the exact version; a free-threaded build (3.13 on) exports ``_Py_DecRefShared``, the
function every extension built for it calls from ``Py_DECREF``, which a build with the GIL
does not have. PyPy's library exports ``pypy_setup_home``. Which binary: the executable when
it holds the interpreter, else the ``libpython``/``libpypy`` library it needs, else (an
embedding program that loaded one) a library of that name it maps.

Names select which files to read and nothing more: a copy of ``sleep`` named ``python3.13t``
exports no ``Py_Initialize`` and is not Python, and a library a process maps beside its own
interpreter cannot change what the executable is. Every file is read as another user's
(``procfs.UntrustedFile``: never a device or a FIFO, bounded bytes and time), once per inode.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from exporter.host.procfs import UNBOUNDED, Deadline, Refused, UntrustedFile
from exporter.services import elf

# The symbols that say what a binary is (see the module's docstring).
CPYTHON_SYMBOL = "Py_Initialize"
VERSION_SYMBOL = "Py_Version"  # const unsigned long PY_VERSION_HEX, CPython 3.11 and later
FREE_THREADED_SYMBOL = "_Py_DecRefShared"  # only Py_GIL_DISABLED builds define it
PYPY_SYMBOL = "pypy_setup_home"  # PyPy's embedding API, in libpypy*-c.so
_SYMBOLS = frozenset({CPYTHON_SYMBOL, VERSION_SYMBOL, FREE_THREADED_SYMBOL, PYPY_SYMBOL})
FIRST_FREE_THREADED = (3, 13)
FIRST_WITH_PY_VERSION = (3, 11)
# Names that make a process worth reading: an interpreter's executable or library, or an
# extension module built for one (its ABI tag).
_EXECUTABLE = re.compile(r"/(?:python|pypy)[^/]*$")
_LIBRARY = re.compile(r"/lib(?:python\d|pypy)[^/]*\.so[^/]*$")
_ABI_TAG = re.compile(r"\.(?:cpython|pypy)\d*-[^/]*\.so$")
_NAMED_VERSION = re.compile(r"(?:python|pypy)(\d)\.(\d{1,2})[^/]*$")
_RELEASE_LEVELS = {0xA: "a", 0xB: "b", 0xC: "rc"}
MAX_CACHED_BINARIES = 256  # distinct interpreter binaries on one host: a handful, in practice
MAX_LIBRARIES_READ = 4  # libpython-named files one process maps: one, in practice


@dataclass(frozen=True)
class PythonIdentity:
    """Implementation, version and build of one process's interpreter."""

    # "cpython", "pypy"; "none": not Python; "unknown": its files unreadable or refused, or
    # libraries that disagree
    implementation: str
    version: str = ""  # "3.13.5" from Py_Version; "3.10" from a file name (see BinaryFacts); "" unknown
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
    """What one binary says about itself."""

    implementation: Optional[str]  # "cpython", "pypy"; None: holds no interpreter
    version: str = ""  # "3.13.5" from Py_Version; "" when the binary does not say
    free_threaded: Optional[bool] = None
    needed: tuple[str, ...] = ()  # the libraries it needs, by file name

    def identity(self, path: str) -> PythonIdentity:
        """The identity of a process this binary runs; ``path`` gives the version where the
        binary has none to give (PyPy; CPython before 3.11)."""
        assert self.implementation is not None
        return PythonIdentity(self.implementation, self.version or _named_version(path, self.implementation),
                              self.free_threaded)


NOTHING = BinaryFacts(None)


def version_from_hex(value: int) -> str:
    """PY_VERSION_HEX (``Py_Version``) as CPython writes it: 0x030d05f0 -> ``3.13.5``."""
    major, minor, micro = value >> 24 & 0xFF, value >> 16 & 0xFF, value >> 8 & 0xFF
    level, serial = value >> 4 & 0xF, value & 0xF
    suffix = f"{_RELEASE_LEVELS[level]}{serial}" if level in _RELEASE_LEVELS else ""
    return f"{major}.{minor}.{micro}{suffix}"


def facts_from_elf(found: Optional[elf.ElfFacts]) -> BinaryFacts:
    """What the exported symbols say; NOTHING for a file that is not an ELF with symbols."""
    if found is None:
        return NOTHING
    if PYPY_SYMBOL in found.defined:
        return BinaryFacts("pypy", "", False, found.needed)
    if CPYTHON_SYMBOL not in found.defined:
        return BinaryFacts(None, needed=found.needed)
    raw = found.values.get(VERSION_SYMBOL)
    if raw is None:  # before 3.11 (there was no free-threaded build then)
        return BinaryFacts("cpython", "", False, found.needed)
    value = int.from_bytes(raw, "little" if found.little_endian else "big") & 0xFFFFFFFF
    number = (value >> 24 & 0xFF, value >> 16 & 0xFF)
    free_threaded = number >= FIRST_FREE_THREADED and FREE_THREADED_SYMBOL in found.defined
    return BinaryFacts("cpython", version_from_hex(value), free_threaded, found.needed)


def facts_of(file: UntrustedFile) -> BinaryFacts:
    """The facts of an open binary; Refused when its headers declare more than
    ``exporter.services.elf``'s caps."""
    return facts_from_elf(elf.read_elf(file, _SYMBOLS, frozenset({VERSION_SYMBOL})))


def read_binary_facts(path: str, deadline: Deadline = UNBOUNDED) -> BinaryFacts:
    """The facts of the binary at ``path``; Refused when it is not a regular file either."""
    with UntrustedFile(path, elf.MAX_FILE_READ_BYTES, deadline) as file:
        return facts_of(file)


def _named_version(path: str, implementation: str) -> str:
    """The version a binary's file name gives, for a binary that exports none: PyPy's, or a
    CPython's before 3.11 (a CPython named 3.11 or later without Py_Version is not what its
    name says, so its version is ""). Only the version: the implementation and build come
    from the symbols."""
    named = _NAMED_VERSION.search(path)
    if named is None:
        return ""
    number = (int(named.group(1)), int(named.group(2)))
    return f"{number[0]}.{number[1]}" if implementation == "pypy" or number < FIRST_WITH_PY_VERSION else ""


class BinaryCache:
    """Facts per binary inode: interpreters are few, processes many."""

    def __init__(self) -> None:
        self._facts: dict[tuple[int, int, int, int], BinaryFacts] = {}
        self._lock = threading.Lock()

    def facts(self, path: str, deadline: Deadline = UNBOUNDED) -> Optional[BinaryFacts]:
        """The binary's facts, or None when it cannot be opened (gone, no permission).

        Raises Refused for a file that is not a regular file or not within the caps, and
        ScanCut when the scan's time is up.
        """
        try:
            with UntrustedFile(path, elf.MAX_FILE_READ_BYTES, deadline) as file:
                with self._lock:
                    known = self._facts.get(file.key)
                if known is not None:
                    return known
                facts = facts_of(file)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            return None
        except OSError as exc:  # ELOOP, ENOTDIR, EIO...: a path we will not follow
            raise Refused(f"{path}: {exc}") from None
        with self._lock:
            if len(self._facts) >= MAX_CACHED_BINARIES:
                self._facts.clear()
            self._facts[file.key] = facts
        return facts


def identify(pid: int, exe: str, mapped: Callable[[], Iterable[str]], binaries: BinaryCache, proc: str = "/proc",
             deadline: Deadline = UNBOUNDED, count: Callable[[str], None] = lambda reason: None) -> PythonIdentity:
    """The identity of process ``pid`` from the binary that holds its interpreter.

    ``mapped()`` lists the files the process maps; it is read only when the executable does
    not settle the question. The executable is read through ``/proc/<pid>/exe`` (it opens
    even after an upgrade deleted the file); a library through ``/proc/<pid>/root`` (a
    container's own file, not the host's at the same path). ``count("refused")`` is called
    for each file refused as untrusted.
    """
    unreadable = False

    def facts(where: str) -> Optional[BinaryFacts]:
        nonlocal unreadable
        try:
            found = binaries.facts(where, deadline)
        except Refused:
            count("refused")
            found = None
        unreadable = unreadable or found is None
        return found

    exe = exe.removesuffix(" (deleted)")
    named = _EXECUTABLE.search(exe) is not None
    own = facts(f"{proc}/{pid}/exe") if named else None
    if own is not None and own.implementation is not None:
        return own.identity(exe)
    paths = list(dict.fromkeys(p.removesuffix(" (deleted)") for p in mapped()))
    if not named:
        if not any(_LIBRARY.search(p) or _ABI_TAG.search(p) for p in paths):
            return NOT_PYTHON  # nothing is named like Python: no binary is read
        own = facts(f"{proc}/{pid}/exe")
        if own is not None and own.implementation is not None:
            return own.identity(exe)
    names = [p for p in paths if _LIBRARY.search(p)][:MAX_LIBRARIES_READ]
    libraries = {path: found for path in names if (found := facts(f"{proc}/{pid}/root{path}")) is not None}
    interpreters = {path: found for path, found in libraries.items() if found.implementation is not None}
    # The library the executable needs is its interpreter; libraries an embedding program
    # loaded itself (dlopen) are believed only when they agree.
    needed = own.needed if own is not None else ()
    for path, found in interpreters.items():
        if os.path.basename(path) in needed:
            return found.identity(path)
    loaded = {found.identity(path) for path, found in interpreters.items()}
    if len(loaded) == 1:
        return loaded.pop()
    return UNREADABLE if loaded or unreadable else NOT_PYTHON
