"""Settings for both roles, and where each value came from.

Every setting can be given, in order of precedence, as a command-line flag
(``--batch-size 64``), an environment variable (``SFHFE_BATCH_SIZE=64``), a key
of the TOML file named by ``--config`` (``batch_size = 64``, at the top level
or under a ``[server]`` / ``[client]`` table for one role), or left at its
default. :func:`resolve` returns a :class:`Settings` that records the source of
each value; a bad value raises :class:`ConfigError` naming the setting, the
value and what is allowed, and the command exits with status 78
(``EX_CONFIG``), which the systemd units list in ``RestartPreventExitStatus``.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfhfe_node.errors import ConfigError, StreamError
from sfhfe_node.stream import parse_share

__all__ = [
    "EXIT_CONFIG",
    "EXPERTS",
    "SETTINGS",
    "Setting",
    "Settings",
    "add_arguments",
    "parse_host_port",
    "resolve",
    "settings_for",
]

EXIT_CONFIG = 78
ROLES = ("server", "client")


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name, parser, default and help text.

    ``roles`` lists the roles that use it; ``default`` may be a mapping from
    role to default where the roles differ.
    """

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    roles: tuple[str, ...] = ROLES
    allowed: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SFHFE_" + self.name.upper()

    def default_for(self, role: str) -> Any:
        if isinstance(self.default, dict):
            return self.default.get(role)
        return self.default


EXPERTS = 10  # experts in the learner (learner.experts.DEFAULT_EXPERTS)

# Parsers: each takes the text (or a TOML value) and returns the value or raises
# ValueError with what is allowed.


def _text(value: Any) -> str:
    return str(value)


def _path(value: Any) -> Path:
    if str(value) == "":
        raise ValueError("a path, not an empty string")
    return Path(str(value)).expanduser()


def _integer(value: Any, allowed: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(allowed)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(allowed) from None


def _positive_int(value: Any) -> int:
    number = _integer(value, "an integer > 0")
    if number <= 0:
        raise ValueError("an integer > 0")
    return number


def _count(value: Any) -> int:
    number = _integer(value, "an integer >= 0")
    if number < 0:
        raise ValueError("an integer >= 0")
    return number


def _top_k(value: Any) -> int:
    allowed = f"an integer from 1 to {EXPERTS} (the learner has {EXPERTS} experts)"
    number = _integer(value, allowed)
    if not 1 <= number <= EXPERTS:
        raise ValueError(allowed)
    return number


def _share(value: Any) -> str:
    try:
        parse_share(str(value))
    except StreamError:
        raise ValueError("I/N with 1 <= I <= N, e.g. 2/3") from None
    return str(value)


def _seconds(value: Any) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("a finite number of seconds >= 0")
    return number


def _fraction(value: Any) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("a number in [0, 1]")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError("one of " + ", ".join(options))
        return text

    return parse


def parse_host_port(value: Any) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:7070`` for IPv6); port 0 asks for a free one."""
    if isinstance(value, tuple) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    match = re.fullmatch(r"\[?([A-Za-z0-9.\-:]*?)\]?:(\d{1,5})", str(value).strip())
    if not match or int(match.group(2)) > 65535:
        raise ValueError("HOST:PORT with a port in 0-65535")
    return match.group(1) or "0.0.0.0", int(match.group(2))


def _url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("an http:// or https:// URL")
    return text


def _peer_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    peers = [str(item).strip() for item in items if str(item).strip()]
    for peer in peers:
        if not re.fullmatch(r"wss?://[^\s/]+(/\S*)?", peer):
            raise ValueError("a comma-separated list of ws:// or wss:// addresses")
    return peers


def _ws_address(value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"wss?://[^\s/,]+(/\S*)?", text):
        raise ValueError("one ws:// or wss:// address")
    return text


def _rate(value: Any) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("a finite number >= 0")
    return number


def _node_id(value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise ValueError("1-64 characters of A-Z a-z 0-9 . _ -")
    return text


SETTINGS: tuple[Setting, ...] = (
    Setting("state_dir", _path, Path("state"), "directory for the node's files"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info",
            "log level", allowed="debug, info, warning, error"),
    Setting("log_format", _choice("text", "json"), "text", "log line format"),
    Setting("log_file", _path, None,
            "append logs to this file (reopened on SIGHUP) instead of stderr"),
    Setting("stop_timeout", _seconds, 20.0,
            "seconds a stop may take before the process gives up waiting"),
    Setting("listen", parse_host_port, {"server": ("0.0.0.0", 8080),
                                        "client": ("0.0.0.0", 7070)},
            "HOST:PORT to listen on (coordinator HTTP, or client gossip)"),
    # Coordinator.
    Setting("db", _path, None, "SQLite file (default STATE_DIR/coordinator.sqlite3)",
            ("server",)),
    Setting("durability", _choice("full", "normal"), "full",
            "SQLite synchronous level for acknowledged insights", ("server",)),
    Setting("max_body", _positive_int, 64 * 1024, "largest insight body, bytes",
            ("server",)),
    Setting("peer_stale", _seconds, 300.0,
            "seconds after which an unseen node is left out of discovery", ("server",)),
    Setting("tls_cert", _path, None,
            "TLS certificate chain (PEM): HTTPS on the coordinator, wss:// gossip"),
    Setting("tls_key", _path, None, "TLS private key (PEM) for tls_cert"),
    Setting("retention_days", _seconds, 30.0,
            "days of insights kept (0: keep all)", ("server",)),
    Setting("retention_rows", _count, 1_000_000,
            "most insights kept in all (0: no limit)", ("server",)),
    Setting("token_file", _path, None,
            "file holding the bearer token shared by coordinator and clients"),
    # Client.
    Setting("node_id", _node_id, None,
            "node id (default: generated once and kept in STATE_DIR)", ("client",)),
    Setting("server", _url, None, "coordinator URL, e.g. http://10.0.0.1:8080",
            ("client",)),
    Setting("advertise", _ws_address, None,
            "ws:// address peers should dial (default from --listen)", ("client",)),
    Setting("peers", _peer_list, [], "comma-separated ws:// addresses of peers",
            ("client",)),
    Setting("stream", _text, None,
            "csv:PATH, jsonl:PATH, - (CSV on stdin) or builtin:elec2", ("client",)),
    Setting("follow", _flag, False,
            "at the end of a file stream, wait for more lines (a growing file)",
            ("client",)),
    Setting("share", _share, None,
            "I/N: learn only the I-th of N contiguous blocks of the stream",
            ("client",)),
    Setting("target", _text, None, "target column (none: anomaly scores only)",
            ("client",)),
    Setting("task", _choice("auto", "classification", "regression", "none"), "auto",
            "learning task; auto = classification when a target is set", ("client",)),
    Setting("rules", _path, None,
            "TOML or JSON governance rules file (reloaded on SIGHUP)", ("client",)),
    Setting("max_classes", _positive_int, 16, "most distinct labels learned",
            ("client",)),
    Setting("batch_size", _positive_int, 64, "most records per mini-batch",
            ("client",)),
    Setting("early_batch_size", _positive_int, 32,
            "most records per mini-batch while the learner is young",
            ("client",)),
    Setting("early_records", _count, 10_000,
            "records a learner counts as young (0: full batches from the start)",
            ("client",)),
    Setting("predictions", _path, None, "JSON-lines file for predictions",
            ("client",)),
    Setting("insight_every", _positive_int, 10, "batches between insights",
            ("client",)),
    Setting("insight_seconds", _seconds, 30.0, "most seconds between insights",
            ("client",)),
    Setting("gossip_interval", _seconds, 5.0, "seconds between weight exchanges",
            ("client",)),
    Setting("gossip_k", _positive_int, 3, "peers kept for exchanges", ("client",)),
    Setting("gossip_margin", _fraction, 0.05,
            "similarity a candidate must gain to replace a peer", ("client",)),
    Setting("gossip_cooldown", _seconds, 60.0, "seconds between peer-set changes",
            ("client",)),
    Setting("api", parse_host_port, ("127.0.0.1", 0),
            "HOST:PORT of the local status and prediction API", ("client",)),
    Setting("gossip_blend", _fraction, 0.0,
            "how far one round of peers' weights may move an own expert (0: the "
            "own experts stay local; peers' models compete beside them)",
            ("client",)),
    Setting("gossip_explore", _seconds, 300.0,
            "seconds between rotations of the random exploration peer (0: none)",
            ("client",)),
    Setting("cluster_key_file", _path, None,
            "file with the cluster key: gossip frames are signed and checked",
            ("client",)),
    Setting("tls_ca", _path, None,
            "CA certificates (PEM) to verify the coordinator and wss:// peers",
            ("client",)),
    Setting("discovery_interval", _seconds, 60.0,
            "seconds between asks for peers at the coordinator (0: never)",
            ("client",)),
    Setting("top_k", _top_k, 4, "experts active per record", ("client",)),
    Setting("seed", _count, 0, "random seed of the learner", ("client",)),
    Setting("rate", _rate, 0.0, "most records per second (0: as fast as possible)",
            ("client",)),
    Setting("stay", _flag, False, "keep serving peers after a finite stream ends",
            ("client",)),
    Setting("drain_timeout", _seconds, 15.0,
            "seconds to wait for the coordinator at the end of the stream",
            ("client",)),
    Setting("ignore_meta", _flag, False,
            "upload insights but do not apply the coordinator's meta-parameters",
            ("client",)),
    Setting("checkpoint_every", _positive_int, 5000,
            "records between checkpoints", ("client",)),
    Setting("checkpoint_seconds", _seconds, 60.0,
            "most seconds between checkpoints", ("client",)),
    Setting("watchdog_stall", _seconds, 120.0,
            "seconds one batch may take before the watchdog stops pinging",
            ("client",)),
    Setting("summary", _path, None, "write a JSON summary here on exit", ("client",)),
    Setting("threads", _positive_int, 1, "torch threads for learning", ("client",)),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


class Settings(Mapping[str, Any]):
    """The effective settings of one role, with the source of each value."""

    def __init__(self, role: str, values: dict[str, Any], sources: dict[str, str]):
        self.role = role
        self._values = values
        self.sources = sources

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows of (setting, value, source) for ``config --print``."""
        rows = []
        for name, value in self._values.items():
            if isinstance(value, tuple) and len(value) == 2:
                shown = f"{value[0]}:{value[1]}"
            elif isinstance(value, list):
                shown = ",".join(value)
            else:
                shown = "" if value is None else str(value)
            rows.append((name, shown, self.sources[name]))
        return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; flags default to None so absence is visible."""
    parser.add_argument("--config", type=Path, help="TOML file with settings")
    for setting in SETTINGS:
        kwargs: dict[str, Any] = {"dest": setting.name, "default": None}
        if setting.parse is _flag:
            kwargs["action"] = "store_const"
            kwargs["const"] = "true"
        else:
            kwargs["metavar"] = setting.name.upper()
        roles = "" if setting.roles == ROLES else f" [{'/'.join(setting.roles)}]"
        parser.add_argument(setting.flag, help=setting.help + roles, **kwargs)


def resolve(
    role: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Merge flags, environment, TOML file and defaults for ``role``."""
    if role not in ROLES:
        raise ConfigError(
            f"role={role!r} is not allowed; use one of {', '.join(ROLES)}"
        )
    environ = os.environ if environ is None else environ
    table = _load_toml(config_path, role) if config_path else {}
    unknown = sorted(set(table) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"{config_path}: unknown setting(s) {', '.join(unknown)}; "
            "see sfhfe-node --help"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if role not in setting.roles:
            continue
        raw, source = _pick(setting, role, flags, environ, table, config_path)
        parsed = _parse(setting, raw, source) if source != "default" else raw
        values[setting.name] = parsed
        sources[setting.name] = source
    return Settings(role, values, sources)


def _pick(
    setting: Setting,
    role: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    table: Mapping[str, Any],
    config_path: Path | None,
) -> tuple[Any, str]:
    if flags.get(setting.name) is not None:
        return flags[setting.name], "flag " + setting.flag
    if setting.env in environ:
        return environ[setting.env], "env " + setting.env
    if setting.name in table:
        return table[setting.name], f"file {config_path}"
    return setting.default_for(role), "default"


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        allowed = setting.allowed or str(exc) or "a valid value"
        raise ConfigError(
            f"{setting.name}={str(raw)[:80]!r} (from {source}) is not allowed: "
            f"expected {allowed}"
        ) from None


def _load_toml(path: Path, role: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    merged = {key: value for key, value in document.items() if key not in ROLES}
    section = document.get(role, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [{role}] must be a table")
    merged.update(section)
    return merged


def settings_for(role: str, **values: Any) -> Settings:
    """Settings of ``role`` from defaults and keyword values, for tests and tools."""
    return resolve(role, values, environ={})
