"""Logger names and log set-up, in one place.

Every module takes its logger from here, so that operators can filter by the
names below. Messages are short lowercase fragments with lazy ``%`` arguments.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

__all__ = [
    "ROOT",
    "cli_log",
    "client_log",
    "coordinator_log",
    "demo_log",
    "gossip_log",
    "learner_log",
    "reopen_logs",
    "setup_logging",
    "stream_log",
    "uplink_log",
]

ROOT = "sfhfe_node"

cli_log = logging.getLogger(ROOT + ".cli")
learner_log = logging.getLogger(ROOT + ".learner")
coordinator_log = logging.getLogger(ROOT + ".coordinator")
client_log = logging.getLogger(ROOT + ".client")
uplink_log = logging.getLogger(ROOT + ".uplink")
gossip_log = logging.getLogger(ROOT + ".gossip")
stream_log = logging.getLogger(ROOT + ".stream")
demo_log = logging.getLogger(ROOT + ".demo")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    level: str = "info", fmt: str = "text", log_file: Path | None = None
) -> None:
    """Send the package's logs to standard error, or to ``log_file``.

    ``fmt`` is ``"text"`` (human-readable) or ``"json"`` (JSON lines). Under
    systemd (``JOURNAL_STREAM`` set) text lines on standard error carry no
    timestamp, since the journal adds its own. A log file is reopened by
    :func:`reopen_logs`, so that it can be rotated.
    """
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif log_file is None and os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
    root = logging.getLogger(ROOT)
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def reopen_logs() -> None:
    """Reopen the log file (after logrotate moved it); harmless on stderr."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                stale, handler.stream = handler.stream, handler._open()
                stale.close()
            finally:
                handler.release()
