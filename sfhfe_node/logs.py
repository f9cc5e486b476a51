"""Logger names and log set-up, in one place.

Every module takes its logger from here, so that operators can filter by the
names below. Messages are short lowercase fragments with lazy ``%`` arguments.
"""

from __future__ import annotations

import json
import logging
import os
import sys

__all__ = [
    "ROOT",
    "cli_log",
    "learner_log",
    "coordinator_log",
    "client_log",
    "uplink_log",
    "gossip_log",
    "stream_log",
    "demo_log",
    "setup_logging",
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


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Send the package's logs to standard error.

    ``fmt`` is ``"text"`` (human-readable) or ``"json"`` (JSON lines). Under
    systemd (``JOURNAL_STREAM`` set) text lines carry no timestamp, since the
    journal adds its own.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"
            )
        )
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
