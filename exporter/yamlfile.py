"""Read a YAML config file that cannot crash or exhaust the exporter, whatever its bytes.

Both config loaders (``exporter.config`` and ``exporter.webconfig``) read through here:
the file is capped at ``MAX_CONFIG_BYTES``, must be UTF-8, duplicate keys are refused
(PyYAML silently keeps the last one), and every parser failure — bad syntax, a recursion
limit hit by deep nesting, a constructor error such as ``2024-13-45`` — becomes a
``YAMLFileError`` with one line of text.
"""

from __future__ import annotations

import os
import reprlib
import stat
from typing import Any

import yaml

# Real configs are a few KB. The pure-Python parser is slow (a 1 MiB flow list took 3-8 s and
# 128 MB on the 2-CPU test VM; a 12 MB file once took 80 s and 1 GB), and libyaml's faster
# CSafeLoader is not an option: it overflows the C stack (a segfault) on deep nesting.
MAX_CONFIG_BYTES = 256 * 1024


class YAMLFileError(ValueError):
    """Why a file is not a YAML document we accept (one line, without the file name)."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<" merge keys may repeat by design
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable keys: construct_mapping below reports them
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}", mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def parse(data: bytes) -> Any:
    """The document in ``data``; raises YAMLFileError for anything that is not clean YAML."""
    if len(data) > MAX_CONFIG_BYTES:
        raise YAMLFileError(f"file is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLFileError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise YAMLFileError(f"{where}invalid YAML: {_one_line(problem)}") from None
    except RecursionError:
        raise YAMLFileError("invalid YAML: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML constructors raise ValueError, OverflowError, ...
        raise YAMLFileError(f"invalid YAML: {_one_line(str(exc)) or type(exc).__name__}") from None


def read(path: str) -> Any:
    """Read and parse ``path``; OSError is left to the caller (it knows how to name it)."""
    # Non-blocking open, then a regular-file check: a FIFO or a terminal would block a reload.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise YAMLFileError("not a regular file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    return parse(data)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def field_name(key: Any) -> str:
    """A mapping key as it reads in a field path: as written when it is a short printable
    string, otherwise quoted by ``show`` (a key may hold a newline or be any YAML value)."""
    if isinstance(key, str) and len(key) <= 100 and key.isprintable():
        return key
    return show(key)


def show(value: Any) -> str:
    """A short repr for error messages: a huge, deep or self-referencing value stays one line."""
    try:
        return _one_line(_REPR.repr(value))
    except Exception:  # noqa: BLE001 - a value's repr must not turn an error into a crash
        return f"<{type(value).__name__}>"
