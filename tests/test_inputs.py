"""``exporter.config.inputs``, the one rule for reading files, and numbers on the command line in
ASCII only (issue 17): Python's int() and float() read any Unicode digit, ``int("٣") == 3``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exporter import cli
from exporter.config import inputs
from exporter.errors import ConfigError
from scaling import assert_linear


def test_a_regular_file_is_read_whole_within_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert inputs.read_bytes(str(path), 100) == b"x" * 100
    with pytest.raises(inputs.InputError, match="^file is larger than 99 bytes$"):
        inputs.read_bytes(str(path), 99)
    with pytest.raises(inputs.InputError, match="^file is larger than 1 KiB$"):
        path.write_bytes(b"x" * 1025)
        inputs.read_bytes(str(path), 1024)


@pytest.mark.parametrize("kind, expected", [("fifo", "a FIFO"), ("directory", "a directory"),
                                            ("/dev/null", "a character device")])
def test_special_files_are_named_without_being_read(tmp_path: Path, kind: str, expected: str) -> None:
    path = {"fifo": tmp_path / "fifo", "directory": tmp_path, "/dev/null": Path("/dev/null")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(inputs.InputError, match=rf"^not a regular file \({expected}\)$"):
        inputs.read_bytes(str(path), 1024)


def test_a_missing_file_is_left_to_the_caller_as_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inputs.read_bytes(str(tmp_path / "nope"), 1024)


@pytest.mark.parametrize("text, depth", [("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4),
                                         ('["[[[[", "\\"]]]"]', 1), ("[" * 50 + "]" * 50, 50)])
def test_json_depth_ignores_brackets_inside_strings(text: str, depth: int) -> None:
    assert inputs.json_depth(text) == depth


def test_json_nesting_is_bounded_before_the_recursive_parser_sees_it() -> None:
    deepest: list = []
    for _ in range(31):
        deepest = [deepest]
    assert inputs.parse_json(("[" * 32 + "]" * 32).encode()) == deepest
    with pytest.raises(inputs.InputError, match="^nested more than 32 levels deep$"):
        inputs.parse_json(("[" * 33 + "]" * 33).encode())
    with pytest.raises(inputs.InputError, match="^nested more than 32 levels deep$"):
        inputs.parse_json(("[" * 1_000_000).encode())


# Texts the depth scan once read in quadratic time (issue 27: 80 KB of escaped quotes took 35 s).
ADVERSARIAL_JSON = {
    "unterminated escaped quotes": lambda n: '"' + '\\"' * n,
    "escaped quotes, a lone backslash at the end": lambda n: '"' + '\\"' * n + "\\",
    "escaped quotes outside a string": lambda n: '\\"' * n,
    "bare quotes": lambda n: '"' * n,
    "strings opened in brackets": lambda n: '["\\' * n,
}


@pytest.mark.parametrize("make", ADVERSARIAL_JSON.values(), ids=ADVERSARIAL_JSON.keys())
def test_json_loading_takes_time_linear_in_the_size_of_any_text(make) -> None:
    def parse(data: bytes) -> None:
        with pytest.raises(inputs.InputError):
            inputs.parse_json(data)

    assert_linear(parse, lambda n: make(n).encode(), 1000)


@pytest.mark.parametrize("text, depth", [('"\\"\\"', 0), ('["a\\', 1), ('[["\\"]]', 2), ('[[]] "[[[', 2)])
def test_json_depth_of_unterminated_strings(text: str, depth: int) -> None:
    assert inputs.json_depth(text) == depth


@pytest.mark.parametrize("text, message", [
    ('{"a": 1, "a": 2}', "(top level): duplicate key 'a'"),
    ('{"x": [{"b": 1}, {"c": 1, "d": 2, "c": 3}]}', "x[1]: duplicate key 'c'"),
    ('[{"a\\ud800": 1, "a\\ud800": 2}]', "[0]: duplicate key 'a\\ud800'"),
])
def test_a_json_object_naming_a_key_twice_is_refused_naming_where(text: str, message: str) -> None:
    """json keeps the last value silently: a second "version" would win."""
    with pytest.raises(inputs.InputError) as error:
        inputs.parse_json(text.encode())
    assert str(error.value) == message


@pytest.mark.parametrize("text, message", [
    ('{"a": [1, "\\ud800"]}', "a[1]: not valid Unicode: a lone surrogate U+D800"),
    ('{"a\\udfffb": 1}', "'a\\udfffb' (the key): not valid Unicode: a lone surrogate U+DFFF"),
    ('"\\udc00"', "(top level): not valid Unicode: a lone surrogate U+DC00"),
])
def test_a_lone_surrogate_is_refused_naming_where_or_replaced(text: str, message: str) -> None:
    with pytest.raises(inputs.InputError) as error:
        inputs.parse_json(text.encode())
    assert str(error.value) == message + " (a \\ud800-\\udfff escape must be half of a pair)"
    replaced = inputs.parse_json(text.encode(), lone_surrogates="replace")
    assert "\ufffd" in json.dumps(replaced, ensure_ascii=False)
    assert inputs.parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character


def test_json_arrays_and_objects_are_bounded() -> None:
    assert inputs.parse_json(b"[1, 2, 3]", max_items=3) == [1, 2, 3]
    with pytest.raises(inputs.InputError, match=r"^an array of 4 items \(at most 3\)$"):
        inputs.parse_json(b"[[1, 2, 3, 4]]", max_items=3)
    with pytest.raises(inputs.InputError, match=r"^an object of 4 items \(at most 3\)$"):
        inputs.parse_json(b'{"a": 1, "b": 2, "c": 3, "d": 4}', max_items=3)


@pytest.mark.parametrize("text, value", [("7", 7), ("-5", -5), ("+5", 5), ("\u0663", None), ("\uff17", None),
                                         ("1_000", None), ("0x10", None), ("1.5", None), ("", None), ("7\n", None)])
def test_ascii_int(text: str, value: int | None) -> None:
    assert inputs.ascii_int(text) == value


@pytest.mark.parametrize("text, value", [("0.5", 0.5), (".5", 0.5), ("1e3", 1000.0), ("-2", -2.0), ("3.", 3.0),
                                         ("\u0660.\u0665", None), ("1_0", None), ("\uff11.5", None)])
def test_ascii_number(text: str, value: float | None) -> None:
    assert inputs.ascii_number(text) == value


@pytest.mark.parametrize("flags, message", [
    (["--workers", "\u0662"], "--workers: must be an integer >= 1, got '\u0662'"),
    (["--repeats", "\u0663"], "--repeats: must be an integer >= 1, got '\u0663'"),
    (["--max-repeats", "\uff11\uff10"], "--max-repeats: must be an integer >= 1, got '\uff11\uff10'"),
    (["--seconds", "\u0660.\u0665"], "--seconds: must be a number > 0, got '\u0660.\u0665'"),
    (["--timeout", "\u0665s"], "--timeout: must be a duration like 30s or 5m, got '\u0665s'"),
    (["--nice", "\u0665"], "--nice: must be an integer 0..19 or idle, got '\u0665'"),
    (["--memory-limit", "\u0665GiB"], "--memory-limit: must be a size like 512MiB or 2GiB, got '\u0665GiB'"),
    (["--memory-limit", "1MiB"], "--memory-limit: must be at least 64MiB, got '1MiB'"),
])
def test_probe_flags_take_ascii_digits_only(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        cli.one_shot_config(cli.build_parser().parse_args(["probe", *flags]))
    assert str(error.value) == message


def test_memory_limit_flag_reaches_the_probe_specs() -> None:
    cfg = cli.one_shot_config(cli.build_parser().parse_args(["probe", "--memory-limit", "300MiB"]))
    assert {spec.memory_limit_bytes for spec in cfg.probe_specs(2)} == {300 << 20}
    cfg = cli.one_shot_config(cli.build_parser().parse_args(["probe", "--memory-limit", str(256 << 20)]))
    assert cfg.probe.memory_limit_bytes == 256 << 20


def test_history_limit_flag_takes_ascii_digits_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["serve", "--history.limit", "\u0661\u0660", "--config.check"])
    assert exit_info.value.code == 2
    assert "--history.limit: must be an integer from 1 to 100000" in capsys.readouterr().err
