"""The test selection is honest: a test not marked integration cannot start a process or a server."""

from __future__ import annotations

import socket
import subprocess

import pytest


def test_an_unmarked_test_cannot_start_a_process() -> None:
    with pytest.raises(RuntimeError, match="not marked @pytest.mark.integration"):
        subprocess.run(["true"], check=False)


def test_an_unmarked_test_cannot_open_a_server_socket() -> None:
    with socket.socket() as sock, pytest.raises(RuntimeError, match="not marked @pytest.mark.integration"):
        sock.bind(("127.0.0.1", 0))


@pytest.mark.integration
def test_an_integration_test_may_start_a_process() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0
