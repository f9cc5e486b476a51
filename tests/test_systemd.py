"""The systemd units verify, and both roles speak the notify protocol."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TIMEOUT, free_port

UNITS = ROOT / "systemd"
INSTALLED = "/opt/sfhfe-node/bin/sfhfe-node"


@pytest.mark.parametrize("unit", ["sfhfe-server.service", "sfhfe-client@.service"])
def test_unit_verifies(tmp_path: Path, unit: str) -> None:
    """systemd-analyze verify accepts the unit without a single warning."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (CI installs it)")
    command = Path(sys.executable).parent / "sfhfe-node"
    text = (UNITS / unit).read_text()
    assert INSTALLED in text
    (tmp_path / unit).write_text(text.replace(INSTALLED, str(command)))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)],
        capture_output=True, text=True, timeout=TIMEOUT * 6,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def close(self) -> None:
        self.sock.close()


def run_with_notify(args: list[str], listener: NotifyListener, stop_after: float | None):
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    begun = time.monotonic()
    deadline = begun + TIMEOUT * 6
    while process.poll() is None and time.monotonic() < deadline:
        listener.drain()
        if stop_after is not None and time.monotonic() - begun > stop_after:
            process.send_signal(signal.SIGTERM)
            stop_after = None
    if process.poll() is None:
        process.kill()
    listener.drain()
    return process.wait()


def test_client_notifies_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    """A client sends READY=1, STATUS= lines, WATCHDOG=1 pings and STOPPING=1."""
    stream = tmp_path / "s.csv"
    stream.write_text("a,y\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(3000)))
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        status = run_with_notify(
            ["--role", "client", "--stream", f"csv:{stream}", "--target", "y",
             "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
             "--rate", "1000"],
            listener, stop_after=None,
        )
    finally:
        listener.close()
    assert status == 0
    messages = listener.messages
    assert messages[0].get("READY") == "1"
    assert messages[0]["STATUS"].startswith("records ")
    assert any(m.get("WATCHDOG") == "1" for m in messages)
    assert any("peers" in m.get("STATUS", "") for m in messages[1:])
    assert messages[-1].get("STOPPING") == "1"


def test_server_notifies_ready_and_stopping(tmp_path: Path) -> None:
    """The coordinator sends READY=1 once listening and STOPPING=1 on SIGTERM."""
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        status = run_with_notify(
            ["--role", "server", "--listen", f"127.0.0.1:{free_port()}",
             "--state-dir", str(tmp_path / "server")],
            listener, stop_after=3.0,
        )
    finally:
        listener.close()
    assert status == 0
    ready = [m for m in listener.messages if m.get("READY") == "1"]
    assert ready and ready[0]["STATUS"].startswith("listening on 127.0.0.1:")
    assert any(m.get("WATCHDOG") == "1" for m in listener.messages)
    assert listener.messages[-1].get("STOPPING") == "1"


def test_sighup_reopens_the_log_file(tmp_path: Path) -> None:
    """After the log file is moved away, SIGHUP makes the node write a new one."""
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", "--role", "server",
         "--listen", f"127.0.0.1:{free_port()}", "--state-dir", str(tmp_path / "s"),
         "--log-file", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while "listening" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        log.rename(tmp_path / "server.log.1")
        process.send_signal(signal.SIGHUP)
        while "SIGHUP" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 3) == 0
    assert "listening" in (tmp_path / "server.log.1").read_text()


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    """--log-format json writes parseable lines with level, logger and message."""
    stream = tmp_path / "s.csv"
    stream.write_text("a,y\n1,0\n2,1\n")
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "--role", "client", "--stream",
         f"csv:{stream}", "--target", "y", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
        capture_output=True, text=True, timeout=TIMEOUT * 6,
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert entries and all({"level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"] == "sfhfe_node.client" for e in entries)


def test_sighup_reloads_the_rules_file(tmp_path: Path) -> None:
    """A client re-reads its rules on SIGHUP and keeps the old ones if the new are bad."""
    stream = tmp_path / "s.csv"
    stream.write_text("a,y\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(200)))
    rules = tmp_path / "rules.toml"
    rules.write_text("[ranges]\na = [0.0, 10.0]\n")
    log = tmp_path / "client.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "sfhfe_node", "--role", "client", "--stream",
         f"csv:{stream}", "--target", "y", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state"), "--rules", str(rules), "--stay",
         "--log-file", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def wait_log(text: str) -> None:
        deadline = time.monotonic() + TIMEOUT * 3
        while text not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and process.poll() is None, text
            time.sleep(0.1)

    try:
        wait_log("serving peers")
        rules.write_text("[ranges]\na = [0.0, 3.0]\n")
        process.send_signal(signal.SIGHUP)
        wait_log("rules reloaded")
        rules.write_text("[ranges]\nnot_a_feature = [0.0, 1.0]\n")
        process.send_signal(signal.SIGHUP)
        wait_log("rules not reloaded")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT * 3) == 0


def test_journal_lines_carry_no_timestamp(tmp_path: Path) -> None:
    """Under systemd (JOURNAL_STREAM set) log lines start with the level."""
    stream = tmp_path / "s.csv"
    stream.write_text("a,y\n1,0\n2,1\n")
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "--role", "client", "--stream",
         f"csv:{stream}", "--target", "y", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=TIMEOUT * 6,
        env={**os.environ, "JOURNAL_STREAM": "8:1234"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.split(" ", 1)[0] in ("INFO", "WARNING") for line in lines)
