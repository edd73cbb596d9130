"""Read a YAML config file that cannot crash or exhaust the exporter, whatever its bytes.

Both config loaders (``exporter.config.settings`` and ``exporter.config.webconfig``) read through here, and
here through ``exporter.config.inputs`` (regular files only, opened without blocking): the file is
capped at ``MAX_CONFIG_BYTES``, must be UTF-8, nests at most ``MAX_DEPTH`` levels with at
most ``MAX_ITEMS`` items per list or mapping, duplicate keys are refused (PyYAML silently
keeps the last one), and every parser failure — bad syntax, a constructor error such as
``2024-13-45`` — becomes a ``YAMLFileError`` with one line of text.

Numbers and booleans are read as YAML 1.2 writes them (its core schema): numbers in ASCII
decimal, booleans only ``true`` and ``false``. PyYAML's YAML 1.1 rules would read ``0x10`` as
16, ``010`` as 8, ``1_000`` as 1000, ``1:30`` as 90 and ``yes``, ``no``, ``on``, ``off`` as
booleans; here those stay strings, which a field that wants a number or a boolean refuses
by name, and which a field that wants a string keeps as written.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml

from exporter.config import inputs

# Real configs are a few KB. The pure-Python parser is slow (a 1 MiB flow list took 3-8 s and
# 128 MB on the 2-CPU test VM; a 12 MB file once took 80 s and 1 GB), and libyaml's faster
# CSafeLoader is not an option: it overflows the C stack (a segfault) on deep nesting.
MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 32  # real configs nest 4 levels; PyYAML recurses ~4 frames per level
MAX_ITEMS = 10_000  # per list or mapping; the validators allow far fewer (MAX_LIST_ITEMS)

_INT_TAG, _FLOAT_TAG, _BOOL_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"
# YAML 1.2's core schema: only true and false. YAML 1.1 (PyYAML's default) also reads yes, no,
# on and off as booleans, so a name "on" or a country "NO" would silently become one.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# YAML 1.2's core schema, ASCII digits only: no 0x/0o/0b, leading-zero octal, _ or base 60.
_INT = re.compile(r"^[-+]?[0-9]+$", re.ASCII)
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", re.ASCII)


class YAMLFileError(inputs.InputError):
    """Why a file is not a YAML document we accept (one line, without the file name)."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and huge collections, and reads
    numbers and booleans as YAML 1.2 does."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Counted here, before PyYAML recurses: a depth limit, not a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) and len(node.value) > MAX_ITEMS:
            raise yaml.composer.ComposerError(None, None, f"a collection of {len(node.value)} items "
                                              f"(at most {MAX_ITEMS})", node.start_mark)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:  # type: ignore[override]
        return int(self.construct_scalar(node))  # the resolver let only ASCII decimals through

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


StrictLoader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+.0123456789"))
StrictLoader.add_implicit_resolver(_BOOL_TAG, _BOOL, list("tTfF"))
StrictLoader.add_constructor(_INT_TAG, StrictLoader.construct_yaml_int)


def parse(data: bytes) -> Any:
    """The document in ``data``; raises YAMLFileError for anything that is not clean YAML."""
    if len(data) > MAX_CONFIG_BYTES:
        raise YAMLFileError(f"file is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLFileError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    document = _load(text)
    try:
        inputs.refuse_lone_surrogates(document)  # YAML's "\\ud800" escape too
    except inputs.InputError as exc:
        raise YAMLFileError(str(exc)) from None
    return document


def _load(text: str) -> Any:
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
    try:
        data = inputs.read_bytes(path, MAX_CONFIG_BYTES)
    except inputs.InputError as exc:
        raise YAMLFileError(str(exc)) from None
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
