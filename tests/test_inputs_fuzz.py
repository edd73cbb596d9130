"""Every file the exporter reads, under one rule (issue 17): whatever the nesting, digits or
kind of file, each loader answers with a valid object or its one-line error, promptly —
never a RecursionError, a hang on a FIFO, an endless read of /dev/zero, or a number written
in non-ASCII digits taken at face value.

The loaders: the config file, the web config file, the web config's certificates, the
``--history.file`` and ``compare``'s JSON documents. Bounded example counts, no deadline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from exporter.gate import compare
from exporter.config import loader as config_loader
from exporter.pages import history
from exporter.config import webconfig
from exporter.errors import ConfigError
from test_compare import document, step

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROMPTLY = 20.0  # seconds: a loader that blocks on a FIFO or reads /dev/zero never returns

_DIR = Path(tempfile.mkdtemp(prefix="pyparallel-inputs-fuzz-"))
# Non-ASCII decimal digits (Arabic-Indic, Devanagari, fullwidth, ...): int() and float() read them all.
FOREIGN_DIGITS = st.text(st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()), min_size=1, max_size=3)


# --- the loaders: each takes a path and returns, or raises its one-line error -------------


def load_config(path: str) -> object:
    return config_loader.load_config(path)


def load_web_config(path: str) -> object:
    return webconfig.load_web_config(path)


def load_certificate(path: str) -> object:
    """The file as the web config's cert_file (a key that matches nothing is never reached)."""
    web = _DIR / "web-cert.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {json.dumps(path)}\n  key_file: {json.dumps(path)}\n")
    return webconfig.load_web_config(str(web))


def load_history(path: str) -> object:
    return history.History(10).restore(path)


def load_compare_document(path: str) -> object:
    return compare.load_document(path)


LOADERS: dict[str, tuple[Callable[[str], object], tuple[type[BaseException], ...]]] = {
    "config": (load_config, (ConfigError,)),
    "web config": (load_web_config, (ConfigError,)),
    "certificate": (load_certificate, (ConfigError,)),
    "history": (load_history, (OSError, ValueError)),  # the daemon logs either and starts empty
    "compare": (load_compare_document, (compare.CompareError,)),
}
JSON_LOADERS = ["history", "compare"]


def outcome(name: str, path: str) -> tuple[str, Any]:
    """("ok", value) or ("error", one-line message), run in a thread that must finish promptly."""
    load, errors = LOADERS[name]
    kind, value = support.promptly(lambda: load(path), errors, PROMPTLY, f"the {name} loader on {path}")
    if kind == "error":
        assert "\n" not in value and len(value) < 2000, value
    return kind, value


def write(data: bytes, name: str = "input") -> str:
    path = _DIR / name
    path.write_bytes(data)
    return str(path)


# --- nesting ------------------------------------------------------------------------------


def nested(depth: int, kinds: str) -> str:
    """``depth`` levels of flow collections (valid JSON and YAML), the kinds cycling through ``kinds``."""
    opening = "".join('{"a": ' if kinds[i % len(kinds)] == "{" else "[" for i in range(depth))
    closing = "".join("}" if kinds[i % len(kinds)] == "{" else "]" for i in reversed(range(depth)))
    return opening + "1" + closing


@FUZZ
@given(st.sampled_from(sorted(LOADERS)), st.integers(1, 20_000), st.sampled_from(["[", "{", "[{", "{[["]),
       st.booleans())
def test_any_nesting_gives_a_value_or_one_line_error(loader, depth, kinds, wrapped):
    text = nested(depth, kinds)
    if wrapped:  # inside the loader's own structure, where validation would walk it
        text = {"config": f'{{"probe": {{"workers": {text}}}}}', "web config": f'{{"basic_auth_users": {text}}}',
                "history": f'{{"version": 1, "steps": {text}, "failures": []}}',
                "compare": f'{{"results": {text}, "host": {{"usable_cpus": 2}}, "interpreters": []}}'}.get(loader, text)
    kind, message = outcome(loader, write(text.encode()))
    if depth > 40:
        assert kind == "error", f"{depth} levels accepted by the {loader} loader"


@FUZZ
@given(st.integers(1, 200))
def test_yaml_block_nesting_gives_a_config_or_one_line_error(depth):
    text = "".join(f"{'  ' * i}a:\n" for i in range(depth)) + f"{'  ' * depth}1\n"
    for loader in ("config", "web config"):
        kind, _ = outcome(loader, write(text.encode()))
        assert kind == "error"


@pytest.mark.parametrize("loader", JSON_LOADERS)
def test_the_issue_17_document_is_one_line_not_a_recursion_error(loader):
    kind, message = outcome(loader, write(("[" * 100_000 + "]" * 100_000).encode()))
    assert kind == "error" and "nested more than 32 levels deep" in message


# --- non-ASCII digits ---------------------------------------------------------------------


@FUZZ
@given(FOREIGN_DIGITS, st.sampled_from([
    "interval: {d}m", "interval: '{d}m'", "jitter: {d}s", "probe:\n  repeats: {d}", "probe:\n  workers: [{d}]",
    "probe:\n  timeout: {d}s", "probe:\n  unit_seconds: {d}", "probe:\n  memory_limit: {d}GiB",
    "probe:\n  nice: {d}", "probe:\n  deadline: 1h{d}m", "duty_cycle: 0.{d}"]))
def test_config_numbers_in_foreign_digits_are_refused(digits, template):
    kind, _ = outcome("config", write(template.format(d=digits).encode()))
    assert kind == "error"


@FUZZ
@given(st.text(st.characters(categories=["Nd"]), min_size=2, max_size=2).filter(lambda d: not d.isascii()))
def test_a_bcrypt_cost_in_foreign_digits_is_refused(digits):
    hashed = f"$2b${digits}$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
    kind, message = outcome("web config", write(f"basic_auth_users:\n  alice: '{hashed}'\n".encode()))
    assert kind == "error" and message.endswith("basic_auth_users.alice: not a bcrypt hash")


def history_document(points: str) -> str:
    return ('{"version": 1, "limit": 10, "steps": [{"interpreter": "default", "workload": "pure_python", '
            f'"mode": "threads", "workers": 2, "points": {points}}}], "failures": []}}')


@FUZZ
@given(FOREIGN_DIGITS, st.sampled_from(["[[{d}, 1.5]]", '[["{d}", 1.5]]', '[[1700000000, "{d}"]]', "[[1e{d}, 1]]"]))
def test_history_numbers_in_foreign_digits_are_damage(digits, points):
    kind, _ = outcome("history", write(history_document(points.format(d=digits)).encode()))
    assert kind == "error"


@FUZZ
@given(FOREIGN_DIGITS, st.sampled_from(["workers", "speedup", "speedup_spread"]), st.booleans())
def test_compare_numbers_in_foreign_digits_are_refused(digits, field, quoted):
    text = json.dumps(document(step("threads", 2, 1.9))).replace(
        f'"{field}": ', f'"{field}": {json.dumps(digits) if quoted else digits}, "was": ', 1)
    kind, _ = outcome("compare", write(text.encode()))
    assert kind == "error"


def test_the_valid_documents_above_load():
    """The documents the digit tests corrupt are valid before the corruption."""
    assert outcome("history", write(history_document("[[1700000000, 1.5]]").encode())) == ("ok", 1)
    assert outcome("compare", write(json.dumps(document(step("threads", 2, 1.9))).encode()))[0] == "ok"


# --- special files ------------------------------------------------------------------------


def special_file(kind: str) -> str:
    """A path of the given kind; FIFOs have no writer, so a blocking open would wait for ever."""
    if kind.startswith("/dev/"):
        return kind
    path = _DIR / f"special-{kind.replace(' ', '-')}"
    if not os.path.lexists(path):
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        elif kind == "symlink to a fifo":
            path.symlink_to(special_file("fifo"))
    return str(path)


# Files a regression could only block on, never read without end: safe in this process.
SPECIAL = ["fifo", "directory", "symlink to a fifo", "/dev/null"]
# Files without an end (issue 17: /dev/full as the history file grew memory at 340 MB/s):
# read in a child under RLIMIT_AS, so a regression fails the test instead of the host.
ENDLESS = ["/dev/zero", "/dev/full", "/dev/urandom"]


@settings(max_examples=len(SPECIAL) * len(LOADERS) * 2, deadline=None)
@given(st.sampled_from(sorted(LOADERS)), st.sampled_from(SPECIAL))
def test_special_files_are_one_line_errors_never_a_hang(loader, kind):
    result, message = outcome(loader, special_file(kind))
    assert result == "error"
    assert "not a regular file" in message, message


@pytest.mark.integration
def test_endless_files_are_refused_before_a_byte_is_read():
    program = (
        "import json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import test_inputs_fuzz as t\n"
        "print(json.dumps({f'{l} {k}': t.outcome(l, k) for l in t.LOADERS for k in t.ENDLESS}))\n")
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", program, str(tests)], capture_output=True, text=True,
                            timeout=120, cwd=tests.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = json.loads(result.stdout)
    assert len(outcomes) == len(LOADERS) * len(ENDLESS)
    for case, (kind, message) in outcomes.items():
        assert kind == "error" and "not a regular file (a character device)" in message, (case, message)


@FUZZ
@given(st.sampled_from(sorted(LOADERS)), st.binary(max_size=400))
def test_any_bytes_give_a_value_or_one_line_error(loader, data):
    outcome(loader, write(data))


# --- issue 27: lone surrogates, duplicate keys, runs of escapes ---------------------------

SURROGATE_ESCAPES = st.integers(0xD800, 0xDFFF).map(lambda point: f"\\u{point:04x}")
JSON_PIECES = st.sampled_from(['"', '\\"', "\\\\", "\\", "\\ud800", "\\udfff", "\\ud83d\\ude00", "{", "}", "[", "]",
                               ":", ",", '"a"', '"version"', "1", "null", " "])


def string_paths(value: Any, prefix: str = "") -> list[tuple[str, list]]:
    """(field path, path of keys) of every string value in a decoded JSON document."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        where = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else key
        if isinstance(item, str):
            found.append((where, [key]))
        else:
            found += [(w, [key, *keys]) for w, keys in string_paths(item, where)]
    return found


@FUZZ
@given(st.sampled_from(JSON_LOADERS), st.lists(JSON_PIECES, max_size=80), st.integers(0, 3000))
def test_any_run_of_quotes_escapes_and_surrogates_gives_a_value_or_one_line_error(loader, pieces, repeat):
    """An unterminated string of 80 KB of escaped quotes took 35 s: a run of them, repeated."""
    kind, value = outcome(loader, write(("".join(pieces) + '\\"' * repeat).encode()))
    if kind == "ok":
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # valid Unicode: printable, servable


@FUZZ
@given(st.data(), SURROGATE_ESCAPES)
def test_a_lone_surrogate_in_any_string_of_a_compare_document_is_refused_naming_it(data, escape):
    good = json.loads(json.dumps(document(step("threads", 2, 1.9, ci=[1.8, 2.0], pairs=[1.8, 1.9, 2.0]),
                                          step("processes", 2, None, success=False))))  # a copy: the identity is shared
    where, keys = data.draw(st.sampled_from(string_paths(good)))
    target = good
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = "x" + chr(int(escape[2:], 16))  # json.dumps writes it as the escape
    kind, message = outcome("compare", write(json.dumps(good).encode()))
    assert kind == "error" and message.endswith(f"{where}: not valid Unicode: a lone surrogate U+{escape[2:].upper()} "
                                                "(a \\ud800-\\udfff escape must be half of a pair)"), message


@FUZZ
@given(st.data())
def test_a_key_named_twice_in_any_object_of_a_compare_document_is_refused(data):
    text = json.dumps(document(step("threads", 2, 1.9, ci=[1.8, 2.0], pairs=[1.8, 1.9, 2.0])))
    keys = sorted(set(object_keys(text)))
    key = data.draw(st.sampled_from(keys))
    at = data.draw(st.sampled_from([i for i in range(len(text)) if text.startswith(f'"{key}": ', i)]))
    doubled = text[:at] + f'"{key}": null, ' + text[at:]  # the later value wins in json: null never would
    kind, message = outcome("compare", write(doubled.encode()))
    assert kind == "error" and f"duplicate key {key!r}" in message, message


def object_keys(text: str) -> list[str]:
    """The keys of a JSON text json.dumps wrote."""
    return re.findall(r'"([a-z_]+)": ', text)


@FUZZ
@given(SURROGATE_ESCAPES, st.sampled_from(["message", "reason", "interpreter", "log"]))
def test_a_history_file_holding_a_lone_surrogate_restores_it_as_u_fffd(escape, field):
    failure = {"timestamp": 1.0, "interpreter": "default", "workload": "w", "mode": "threads", "workers": 2,
               "reason": "error", "message": "m", "log": ["l"]}
    failure[field] = [f"a{escape}"] if field == "log" else f"a{escape}"
    text = json.dumps({"version": 1, "limit": 10, "steps": [], "failures": [failure]}).replace("\\\\u", "\\u")
    restored = history.History(10)
    restored.restore(write(text.encode()))
    (kept,) = restored.failures()
    assert "a\ufffd" in json.dumps(vars(kept), ensure_ascii=False)
