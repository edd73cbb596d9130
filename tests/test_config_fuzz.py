"""Property-based tests: whatever a config file holds, both loaders answer with a valid
config or our one-line ConfigError — never another exception, never a traceback.

Bounded (a few hundred examples each, no deadline) so CI stays fast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import fields, loader, settings as config_settings, validators
from exporter.config import webconfig
from exporter.errors import ConfigError

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIG_KEYS = ["interval", "jitter", "duty_cycle", "probe", "interpreters", "import_check", "workloads", "modes",
               "workers", "unit_seconds", "repeats", "timeout", "deadline", "workload_path", "start_method",
               "per_core_series", "name", "path", "env", "modules"]
WEB_KEYS = ["tls_server_config", "http_server_config", "basic_auth_users", "cert_file", "key_file",
            "client_auth_type", "client_ca_file", "min_version", "max_version", "headers", "http2", "rate_limit",
            "X-Frame-Options", "Strict-Transport-Security"]
INTERESTING = ["5m", "1w", "5s5m", "1.5m", "0", "auto", "threads", "sleep", "fork", "a:b", "/", "/tmp", "TLS13",
               "$2b$10$" + "a" * 53, "\x00", "\u2028", "x" * 300]
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e30, -0.0, 1e-300, 0.5])
INTS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, 2, 8, 9, 256, 257, 1000, 10**9])


def yaml_values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested YAML-representable values whose mapping keys are mostly the loader's own."""
    scalars = st.none() | st.booleans() | INTS | FLOATS | st.text(max_size=20) | st.sampled_from(INTERESTING)
    key = st.sampled_from(keys) | st.text(max_size=10) | INTS | st.booleans()
    return st.recursive(scalars, lambda children: st.lists(children, max_size=5)
                        | st.dictionaries(key, children, max_size=6), max_leaves=25)


def documents(keys: list[str]) -> st.SearchStrategy[dict]:
    """Top-level mappings built from the loader's keys, so validation runs deep, not just 'unknown key'."""
    return st.dictionaries(st.sampled_from(keys), yaml_values(keys), max_size=6)


_DIR = Path(tempfile.mkdtemp(prefix="pyparallel-fuzz-"))


def write(data: bytes) -> str:
    path = _DIR / "config.yml"
    path.write_bytes(data)
    return str(path)


def assert_one_line_or_valid(load: Callable[[str], object], data: bytes, prefix: str) -> None:
    path = write(data)
    try:
        loaded = load(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{prefix}: {path}"), message
        assert "\n" not in message and len(message) < 2000, message
        return
    if isinstance(loaded, config_settings.Config):
        assert_within_bounds(loaded)


def assert_within_bounds(cfg: config_settings.Config) -> None:
    """What a loaded config promises the daemon: finite numbers, inside the documented bounds."""
    p = cfg.probe
    assert validators.MIN_INTERVAL_SECONDS <= cfg.interval_seconds <= validators.MAX_INTERVAL_SECONDS
    assert 0 <= cfg.jitter_seconds < cfg.interval_seconds
    assert 0 < cfg.duty_cycle <= 1
    assert all(1 <= n <= validators.max_workers() for n in p.workers)
    assert 1 <= p.repeats <= validators.MAX_REPEATS
    assert 0 < p.unit_seconds <= validators.MAX_UNIT_SECONDS
    assert 0 < p.timeout_seconds <= validators.MAX_TIMEOUT_SECONDS
    assert p.deadline_seconds is None or 0 < p.deadline_seconds <= validators.MAX_DEADLINE_SECONDS


def dump(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True).encode()


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_a_config_or_one_line_error(data):
    assert_one_line_or_valid(loader.load_config, data, "error parsing config file")


@FUZZ
@given(st.lists(st.sampled_from(list("[]{}:,-&*!|>'\"#%@` \n\t?ab1.") + ["5m", "probe", "workers", "<<", "!!binary"]),
                max_size=80))
def test_yaml_punctuation_soup_gives_a_config_or_one_line_error(pieces):
    assert_one_line_or_valid(loader.load_config, "".join(pieces).encode(), "error parsing config file")


@FUZZ
@given(documents(CONFIG_KEYS) | yaml_values(CONFIG_KEYS))
def test_any_yaml_structure_gives_a_config_or_one_line_error(document):
    assert_one_line_or_valid(loader.load_config, dump(document), "error parsing config file")


@FUZZ
@given(st.fixed_dictionaries({}, optional={"probe": st.dictionaries(st.sampled_from(sorted(f.key for f in fields.PROBE_FIELDS)),
                                                                    yaml_values(CONFIG_KEYS), max_size=4),
                                           "interval": yaml_values(CONFIG_KEYS), "jitter": yaml_values(CONFIG_KEYS),
                                           "duty_cycle": yaml_values(CONFIG_KEYS)}))
def test_any_probe_section_gives_a_config_or_one_line_error(document):
    assert_one_line_or_valid(loader.load_config, dump(document), "error parsing config file")


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_a_web_config_or_one_line_error(data):
    assert_one_line_or_valid(webconfig.load_web_config, data, "error parsing web config file")


@FUZZ
@given(documents(WEB_KEYS) | yaml_values(WEB_KEYS))
def test_any_yaml_structure_gives_a_web_config_or_one_line_error(document):
    assert_one_line_or_valid(webconfig.load_web_config, dump(document), "error parsing web config file")


@pytest.mark.parametrize("document", [
    {"\n": None},
    {"basic_auth_users": {"a\nb": "x"}},
    {"http_server_config": {"headers": {"X\r\nSet-Cookie": "v"}}},
])
def test_a_key_with_a_line_break_is_quoted_in_the_one_line_error(tmp_path, document):
    """Found by the structure fuzzer: a field path must never carry the key's raw newline."""
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as error:
        webconfig.load_web_config(str(path))
    assert "\n" not in str(error.value) and "\r" not in str(error.value)


# --- issue 27: YAML 1.1 booleans and lone surrogates ---------------------------------------

YAML_1_1_BOOLEANS = st.sampled_from(sorted(validators.YAML_1_1_BOOLEANS)).flatmap(
    lambda word: st.sampled_from([word, word.upper(), word.capitalize()]))
SURROGATE_ESCAPES = st.integers(0xD800, 0xDFFF).map(lambda point: f"\\u{point:04x}")


@FUZZ
@given(YAML_1_1_BOOLEANS)
def test_a_yaml_1_1_boolean_never_becomes_a_boolean(word):
    """yes, on, y, ... were read as true where a key wants a boolean: now a string, refused by name."""
    path = write(f"probe:\n  per_core_series: {word}\n".encode())
    with pytest.raises(ConfigError, match=f"probe.per_core_series: must be true, false or auto, got '{word}' "
                                          r"\(the file is YAML 1.2"):
        loader.load_config(path)


@FUZZ
@given(st.sampled_from(["on", "off", "yes", "no", "y", "n", "No", "ON"]))
def test_a_yaml_1_1_boolean_where_a_string_is_wanted_stays_the_string_written(word):
    path = write(f"interpreters:\n  - name: {word}\n    path: /usr/bin/python3\n".encode())
    assert loader.load_config(path).interpreters[0].name == word


@FUZZ
@given(st.text(st.characters(categories=["L", "N"]), max_size=5), SURROGATE_ESCAPES, st.sampled_from(["name", "path", "env"]))
def test_a_lone_surrogate_anywhere_in_a_config_is_one_line_naming_its_field(before, escape, key):
    text = before + escape
    value = f'{{PYTHONWARNINGS: "{text}"}}' if key == "env" else f'"{text}"'
    fields_ = {"name": "a", "path": "/usr/bin/python3", key: value}
    data = "interpreters:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in fields_.items()) + "\n"
    path = write(data.encode())
    with pytest.raises(ConfigError) as error:
        loader.load_config(path)
    where = "interpreters[0].env.PYTHONWARNINGS" if key == "env" else f"interpreters[0].{key}"
    assert f"{where}: not valid Unicode: a lone surrogate" in str(error.value)
    str(error.value).encode("utf-8")  # the line itself can be printed
