"""Print pip constraints that pin every direct dependency in pyproject.toml to its floor.

    python scripts/lowest_constraints.py [pyproject.toml] > lowest.txt
    pip install -c lowest.txt -e '.[test]'

Each ``name>=X`` (runtime dependencies and every extra) becomes ``name==X``, so a CI job can
install the oldest versions the project claims to support and run the tests against them.
A dependency without a floor is an error: its lowest version would be whatever is oldest
on the index, which nobody has tested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")
_FLOOR = re.compile(r">=\s*([0-9][^,\s]*)")


def floors(pyproject: dict) -> dict[str, str]:
    """{distribution name: lowest allowed version} of every direct dependency."""
    project = pyproject["project"]
    own_name = project["name"].lower()
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, _extras, specifier, _marker = match.groups()
        if name.lower() == own_name:  # an extra that includes other extras
            continue
        floor = _FLOOR.search(specifier)
        if floor is None:
            raise SystemExit(f"{requirement!r} has no floor (name>=version): its lowest version is untested")
        pins[name] = max(pins.get(name, floor.group(1)), floor.group(1), key=_version_key)
    return pins


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    for name, version in sorted(floors(tomllib.loads(path.read_text())).items(), key=lambda item: item[0].lower()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
