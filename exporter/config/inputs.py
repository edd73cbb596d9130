"""One rule for every file the exporter reads, so no file can hang, crash or exhaust it.

Config and web config files (through ``exporter.config.yamlfile``), the ``--history.file``,
``compare``'s JSON documents and the web config's certificates all go through here:

- **opened without blocking**: ``O_NONBLOCK``, then ``fstat``; only a regular file is read,
  so a FIFO, a terminal or ``/dev/zero`` is an error instead of a hang or an endless read;
- **read with a size cap** that the caller names (what a real file of that kind can need);
- **parsed with bounded nesting and bounded arrays**: a JSON document's depth is checked
  before the recursive parser sees it (``'[' * 100000`` is a one-line error, never a
  ``RecursionError``), and every array and object is held to ``max_items``;
- **numbers in ASCII only**: JSON's grammar allows nothing else, ``NaN`` and ``Infinity``
  are refused; flags and durations use ``ascii_int`` / ``ascii_number`` (Python's ``int``
  and ``float`` accept any Unicode digit: ``int("٣") == 3``);
- **each key once** in a JSON object (``json`` keeps the last one silently);
- **valid Unicode**: a string holding a lone surrogate (the escape ``\\ud800``) is refused,
  naming where it is, or has it replaced by U+FFFD where text must be kept (the history);
- **in time linear in the size**, whatever the bytes.

Every failure is an ``InputError`` (a ``ValueError``) with one line of text and without the
file name, which the caller adds as it names its source; ``OSError`` is left to the caller.
"""

from __future__ import annotations

import array
import itertools
import json
import os
import re
import stat
from typing import Any, Callable, Iterator, Literal, Optional

MAX_DEPTH = 32  # the deepest real document (a probe --json result) nests 5 levels
MAX_ITEMS = 100_000  # items of one array or object; a history step keeps at most 100 000 points
MAX_INTEGER_DIGITS = 40  # int() of a long digit string is slow (quadratic); no count or time needs more

# A JSON string (its escapes included), or the unterminated rest of the text (a trailing lone
# backslash too): whatever follows a quote matches, so no quote inside an unterminated string
# starts another scan to the end, and the depth scan stays linear (80 KB of escaped quotes
# took 35 s when each did).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
# Each bracket as a signed byte, +1 opening and -1 closing: their running sum is the depth.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# A JSON or YAML escape can write one half of a UTF-16 surrogate pair alone ("\\ud800"); Python
# keeps it as a lone surrogate, a code point no encoder writes: printing it or sending it in a
# page raises UnicodeEncodeError. Decoded UTF-8 holds none (the codec refuses them), so only a
# JSON text with such an escape needs its strings looked at.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
REPLACEMENT_CHARACTER = "\ufffd"
_ASCII_INT = re.compile(r"[-+]?[0-9]+", re.ASCII)
# inf and nan are read too, so a flag's validator can refuse them by value ("got inf").
_ASCII_NUMBER = re.compile(r"[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|inf|infinity|nan)",
                           re.ASCII | re.IGNORECASE)


class InputError(ValueError):
    """Why a file (or a value) is not what we accept: one line, without the file name."""


def read_bytes(path: str, max_bytes: int) -> bytes:
    """The contents of the regular file ``path``, at most ``max_bytes`` of them.

    Raises InputError for a special file or a file over the cap, OSError when it cannot be
    opened (the caller names it: missing, permission denied, ...).
    """
    # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one for ever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(f"not a regular file ({file_kind(mode)})")
    with open(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"file is larger than {format_bytes(max_bytes)}")
    return data


def refuse_to_replace(path: str) -> None:
    """Raise OSError when ``path`` exists as a device, a FIFO, a socket or a directory.

    For a file written atomically (a temporary file renamed over it): renaming over
    ``/dev/full`` or a FIFO would remove it. A symbolic link is replaced, never its target.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OSError(f"{path} is not a regular file ({file_kind(mode)}); not replacing it")


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words a user recognises."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def format_bytes(size: int) -> str:
    """``262144`` -> ``256 KiB``: caps in messages as a person writes them."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


# --- JSON -------------------------------------------------------------------------------


def read_json(path: str, *, max_bytes: int, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
              lone_surrogates: Literal["refuse", "replace"] = "refuse") -> Any:
    """Read and parse one JSON document under the rule; InputError or OSError otherwise."""
    return parse_json(read_bytes(path, max_bytes), max_depth=max_depth, max_items=max_items,
                      lone_surrogates=lone_surrogates)


def parse_json(data: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
               lone_surrogates: Literal["refuse", "replace"] = "refuse") -> Any:
    """One JSON document from UTF-8 bytes, nested at most ``max_depth`` levels, no object
    naming a key twice; a string holding a lone surrogate is refused (naming where it is) or
    has it replaced by U+FFFD."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if json_depth(text) > max_depth:
        raise InputError(f"nested more than {max_depth} levels deep")
    duplicates: list[_DuplicateKeys] = []
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                              object_pairs_hook=_object_marking_duplicates(duplicates))
    except json.JSONDecodeError as exc:
        raise InputError(f"not a JSON document: {exc.msg} at line {exc.lineno}") from None
    except ValueError as exc:  # NaN, Infinity, a huge integer
        raise InputError(f"not a JSON document: {_one_line(str(exc))}") from None
    except RecursionError:  # a thread with less stack than the depth check assumes
        raise InputError(f"nested more than {max_depth} levels deep") from None
    check_items(document, max_items)
    if duplicates:
        refuse_duplicate_keys(document)
    if _SURROGATE_ESCAPE.search(text):
        if lone_surrogates == "replace":
            return replace_lone_surrogates(document)
        refuse_lone_surrogates(document)
    return document


def json_depth(text: str) -> int:
    """How deeply ``text``'s arrays and objects nest (brackets inside strings do not count).

    Linear in the text and run by C code (regular expressions, ``accumulate``): it runs before
    the parser on every document, up to 64 MiB of them.
    """
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    steps = array.array("b", brackets.encode("ascii").translate(_DEPTH_STEPS))
    return max(0, max(itertools.accumulate(steps), default=0))


def check_items(document: Any, max_items: int) -> None:
    """Every array and object in ``document`` has at most ``max_items`` items (no recursion)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if len(children) > max_items:
            kind = "an object" if isinstance(value, dict) else "an array"
            raise InputError(f"{kind} of {len(children)} items (at most {max_items})")
        pending.extend(children)


class _DuplicateKeys(dict):
    """A JSON object that names ``key`` twice (``json`` would keep the last value silently)."""

    key: str = ""


def _object_marking_duplicates(found: list[_DuplicateKeys]) -> Callable[[list[tuple[str, Any]]], dict]:
    """json's object_pairs_hook: a dict, marked and listed in ``found`` when a key repeats, so
    the refusal can say where it is once the whole document is parsed."""

    def make_object(pairs: list[tuple[str, Any]]) -> dict:
        made = dict(pairs)
        if len(made) == len(pairs):
            return made
        marked = _DuplicateKeys(made)
        marked.key = _first_repeated(key for key, _ in pairs)
        found.append(marked)
        return marked

    return make_object


def _first_repeated(keys: Iterator[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""


def refuse_duplicate_keys(document: Any) -> None:
    """InputError naming the first object of ``document`` that names a key twice."""
    for where, value in values(document):
        if isinstance(value, _DuplicateKeys):
            raise InputError(f"{where or '(top level)'}: duplicate key {quoted(value.key)}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


# --- text: valid Unicode only -----------------------------------------------------------


def refuse_lone_surrogates(document: Any) -> None:
    """InputError naming the first string (or key) of ``document`` that holds a lone surrogate."""
    for where, text in strings(document):
        found = _LONE_SURROGATE.search(text)
        if found:
            raise InputError(f"{where or '(top level)'}: not valid Unicode: a lone surrogate "
                             f"U+{ord(found.group()):04X} (a \\ud800-\\udfff escape must be half of a pair)")


def replace_lone_surrogates(document: Any) -> Any:
    """``document`` with every lone surrogate of its strings and keys replaced by U+FFFD, so
    text from a workload or an older version's file is kept and can be printed and served.

    Lists and mappings are changed in place (a document just parsed: nothing else holds it),
    without recursion: any depth.
    """
    if isinstance(document, str):
        return valid_text(document)
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            items: Any = enumerate(value)
        elif isinstance(value, dict):
            items = [(valid_text(key) if isinstance(key, str) else key, item) for key, item in value.items()]
            value.clear()
        else:
            continue
        for key, item in items:
            value[key] = valid_text(item) if isinstance(item, str) else item
            pending.append(item)
    return document


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return _LONE_SURROGATE.sub(REPLACEMENT_CHARACTER, text)


def strings(document: Any) -> Iterator[tuple[str, str]]:
    """(where, string) for every string and mapping key in ``document``, in document order."""
    for where, value in values(document):
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, dict):
            yield from ((f"{field_path(where, key)} (the key)", key) for key in value if isinstance(key, str))


def values(document: Any) -> Iterator[tuple[str, Any]]:
    """(where, value) for ``document`` and every value in it, in document order; ``where``
    reads as a field path, ``results[3].message``. No recursion (any depth), and each list or
    mapping is visited once: YAML aliases share one (a billion laughs is 81 references) or
    hold themselves."""
    pending: list[tuple[str, Any]] = [("", document)]
    visited: set[int] = set()
    while pending:
        where, value = pending.pop()
        yield where, value
        if not isinstance(value, (list, dict)) or id(value) in visited:
            continue
        visited.add(id(value))
        if isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        else:
            pending.extend((field_path(where, key), item) for key, item in reversed(list(value.items())))


def field_path(where: str, key: Any) -> str:
    """The path of ``key`` in the mapping at ``where``: ``results[3]`` and ``speedup`` make
    ``results[3].speedup``."""
    return f"{where}.{path_key(key)}" if where else path_key(key)


def path_key(key: Any) -> str:
    """A mapping key as it reads in a field path: as written when it is a short printable
    string, otherwise quoted."""
    if isinstance(key, str) and len(key) <= 100 and key.isprintable():
        return key
    return quoted(key)


def quoted(value: Any) -> str:
    """``repr`` cut to 60 characters: one line, escapes for what cannot be printed."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


# --- numbers in flags and durations -----------------------------------------------------


def ascii_int(text: str) -> Optional[int]:
    """The integer written in ASCII decimal digits in ``text`` (``"7"``, ``"-5"``), or None
    (``"٣"``, ``"1_000"``, ``"0x10"``, ``"1.5"``)."""
    return int(text) if _ASCII_INT.fullmatch(text) else None


def ascii_number(text: str) -> Optional[float]:
    """The number written in ASCII in ``text`` (``0.5``, ``-3``, ``1e3``, ``inf``), or None."""
    return float(text) if _ASCII_NUMBER.fullmatch(text) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
