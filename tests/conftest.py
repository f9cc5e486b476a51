"""Shared test fixtures.

Every timeout in the suite derives from :data:`TIMEOUT`, which the environment
variable ``SFHFE_TEST_TIMEOUT_SCALE`` multiplies on slow machines. Async tests
run with asyncio debug mode on, and a test whose event loop is blocked by one
callback for longer than :data:`BLOCK_LIMIT` fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCALE = float(os.environ.get("SFHFE_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 10.0 * SCALE
BLOCK_LIMIT = 0.5 * SCALE

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
ELEC2 = DATA / "elec2.csv"
PYTHON = sys.executable


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=TIMEOUT * 3,
    )
    return cert, key


@pytest.fixture
def port() -> int:
    """A free port on 127.0.0.1."""
    return free_port()


class _BlockedLoop(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.messages.append(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every coroutine test the loop guard."""
    for item in items:
        function = getattr(item, "function", None)
        if asyncio.iscoroutinefunction(function):
            item.fixturenames.append("loop_guard")


@pytest.fixture
async def loop_guard():
    """Turn on asyncio debug mode and fail a test that blocks its loop."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCK_LIMIT
    guard = _BlockedLoop()
    logger = logging.getLogger("asyncio")
    logger.addHandler(guard)
    try:
        yield
    finally:
        logger.removeHandler(guard)
    if guard.messages:
        pytest.fail("event loop blocked: " + "; ".join(guard.messages[:3]))
