"""Real node processes for tests: start them, wait for them, read their data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import ELEC2, TIMEOUT, free_port

T = TypeVar("T")


def start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``sfhfe-node ARGS`` with its output going to ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "sfhfe_node", *args],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return json.loads(reply.read())


def wait_for(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``url``/healthz answers; fail if the process exits first."""

    def healthy() -> bool:
        assert process.poll() is None, f"process exited with {process.returncode}"
        with urllib.request.urlopen(url + "/healthz", timeout=1) as reply:
            return reply.status == 200

    wait_for(healthy, TIMEOUT * 3, f"{url} to be healthy")


@contextmanager
def coordinator_process(state: Path, port: int | None = None) -> Iterator[str]:
    """A real coordinator on 127.0.0.1; yields its URL, stops it cleanly after."""
    port = port or free_port()
    state.mkdir(parents=True, exist_ok=True)
    process = start_node(
        ["--role", "server", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)],
        state / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 3) == 0


def elec2_head(directory: Path, records: int) -> Path:
    """Write the first ``records`` records of Elec2 to a CSV in ``directory``."""
    if not ELEC2.exists():
        pytest.skip(f"{ELEC2} is not present")
    path = directory / f"elec2-{records}.csv"
    with open(ELEC2) as source:
        path.write_text("".join(source.readline() for _ in range(records + 1)))
    return path
