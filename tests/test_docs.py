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


def test_relative_links_in_readme_and_docs_resolve() -> None:
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "systemd" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s):, mailto:
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_measurement_doc_states_the_verdicts_thresholds_the_code_uses():
    """One threshold in code and docs: the words' boundaries are read from exporter.model.verdicts."""
    from exporter.model import verdicts

    text = (ROOT / "docs" / "measurement.md").read_text()
    assert f"×{verdicts.NOT_PARALLEL:g}" in text and "`verdicts.NOT_PARALLEL`" in text
    assert f"{verdicts.SCALES_FRACTION:.0%}".replace("%", " %") in text
    assert f"{verdicts.CONTENTION_RATE:.0%}".replace("%", " %") in text
    assert not re.search(r"×1\.2(?![0-9])[^\n]*(?:threshold|interval below)", text), "a stale ×1.2 threshold"
