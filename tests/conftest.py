"""Shared fixtures: locating the real tools (promtool, prometheus, ...) the tests run."""

from __future__ import annotations

import os
import shutil

import pytest

# In CI every tool is installed by .ci/run, so a missing tool is a failure there, not a skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Return the path of an executable, skipping the test (failing it in CI) when absent."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
