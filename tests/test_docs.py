"""The README stays a newcomer's page: two commands that exist, links that resolve, short."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_gives_the_two_set_up_commands_and_they_exist() -> None:
    text = README.read_text()
    block = re.search(r"## Set-up: two commands\n.*?```sh\n(.*?)```", text, flags=re.DOTALL)
    assert block is not None
    install_and_probe, run_tests = block.group(1).strip().splitlines()
    assert install_and_probe == "./scripts/install && .venv/bin/parallelism-exporter probe"
    assert run_tests == ".ci/run"
    assert [line for line in text.splitlines() if line.startswith("./scripts/install")] == [install_and_probe]  # what .ci/run runs
    for script in ("scripts/install", ".ci/run", "scripts/build-python"):
        assert os.access(ROOT / script, os.X_OK), script


def test_readme_is_short_and_points_to_the_reference_in_docs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 160
    for name in ("configuration", "metrics", "dashboards-and-alerts", "deployment", "interpreters", "benchmarks"):
        assert f"(docs/{name}.md)" in text, name
        assert (ROOT / "docs" / f"{name}.md").is_file(), name


USER_PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "systemd" / "README.md",
              ROOT / "dashboards" / "README.md", ROOT / "examples" / "README.md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a "# comment" in a code block is no heading
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_relative_links_in_readme_and_docs_resolve_with_their_anchors() -> None:
    broken = []
    for page in USER_PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s):, mailto:
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []


COMMANDS = ("probe", "serve", "compare")


def help_flags() -> dict[str, set[str]]:
    """Each command's flags, as its --help lists them."""
    from exporter import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.choices and "probe" in a.choices).choices  # type: ignore[operator]
    return {name: {o for action in commands[name]._actions for o in action.option_strings if o.startswith("--")}
            for name in COMMANDS}


def command_texts(text: str) -> list[str]:
    """Inline code spans, and code-block lines with their continuation lines joined."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


def documented_command_flags(page: Path) -> list[tuple[str, str]]:
    """(command, flag) for every flag written after ``parallelism-exporter probe|serve|compare``
    (or a code span that starts with the command's name)."""
    found = []
    for text in command_texts(page.read_text()):
        match = re.search(r"(?:parallelism-exporter\s+|^\s*)(probe|serve|compare)\b(.*)", text)
        if match:
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9.-]*[a-z0-9])", match.group(2)):
                found.append((match.group(1), flag))
    return found


def test_every_flag_the_docs_give_a_command_is_in_its_help() -> None:
    flags = help_flags()
    unknown = [f"{page.relative_to(ROOT)}: {command} {flag}" for page in USER_PAGES
               for command, flag in documented_command_flags(page) if flag not in flags[command]]
    assert unknown == []


def test_every_flag_in_the_help_is_documented_in_configuration_md() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    sections = {command: text.split(f"## `parallelism-exporter {command}`")[1].split("\n## ")[0] for command in COMMANDS}
    missing = [f"{command} {flag}" for command, flags in help_flags().items() for flag in sorted(flags - {"--help"})
               if f"`{flag}" not in sections[command]]
    assert missing == []
    # And the other way: a flag in a section's table is one its command has.
    for command, section in sections.items():
        listed = set(re.findall(r"^\| `(--[a-z][a-z0-9.-]*)", section, flags=re.M))
        assert listed <= help_flags()[command], (command, listed - help_flags()[command])


def test_measurement_doc_states_the_verdicts_thresholds_the_code_uses():
    """One threshold in code and docs: the words' boundaries are read from exporter.model.verdicts."""
    from exporter.model import verdicts

    text = (ROOT / "docs" / "measurement.md").read_text()
    assert f"×{verdicts.NOT_PARALLEL:g}" in text and "`verdicts.NOT_PARALLEL`" in text
    assert f"{verdicts.SCALES_FRACTION:.0%}".replace("%", " %") in text
    assert f"{verdicts.CONTENTION_RATE:.0%}".replace("%", " %") in text
    assert not re.search(r"×1\.2(?![0-9])[^\n]*(?:threshold|interval below)", text), "a stale ×1.2 threshold"
