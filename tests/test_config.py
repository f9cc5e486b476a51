"""Settings come from flags, environment, TOML and defaults, in that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sfhfe_node.config import EXIT_CONFIG, EXPERTS, resolve
from sfhfe_node.errors import ConfigError
from sfhfe_node.learner import DEFAULT_EXPERTS


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    config = tmp_path / "node.toml"
    config.write_text('batch_size = 8\nseed = 5\ntop_k = 2\n[client]\nrate = 10\n')
    settings = resolve(
        "client",
        {"batch_size": "64"},
        {"SFHFE_BATCH_SIZE": "16", "SFHFE_SEED": "7"},
        config,
    )
    assert settings.batch_size == 64
    assert settings.seed == 7
    assert settings.top_k == 2
    assert settings.rate == 10.0
    assert settings.max_classes == 16
    assert settings.sources["seed"] == "env SFHFE_SEED"
    assert settings.sources["max_classes"] == "default"


def test_role_defaults_differ() -> None:
    """The server and the client listen on different default ports."""
    assert resolve("server", {}, {}).listen == ("0.0.0.0", 8080)
    assert resolve("client", {}, {}).listen == ("0.0.0.0", 7070)


@pytest.mark.parametrize(
    ("name", "value"),
    [("batch_size", "0"), ("listen", "nohost"), ("server", "ftp://x"),
     ("peers", "http://a:1"), ("gossip_margin", "2"), ("log_level", "loud"),
     ("batch_size", "abc"), ("batch_size", 2.5), ("top_k", "11"), ("top_k", "0"),
     ("share", "4/3"), ("share", "1/0"), ("share", "half")],
)
def test_bad_value_names_setting_and_value(name: str, value: str) -> None:
    """A bad value is refused with the setting's name, the value and what is
    allowed in the message."""
    with pytest.raises(ConfigError, match=name) as caught:
        resolve("client", {name: value}, {})
    assert repr(str(value)) in str(caught.value)
    assert "invalid literal" not in str(caught.value)


def test_top_k_bound_is_the_number_of_experts() -> None:
    """top_k is checked against the learner's own expert count."""
    assert EXPERTS == len(DEFAULT_EXPERTS)
    assert resolve("client", {"top_k": str(EXPERTS)}, {}).top_k == EXPERTS


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key in the TOML file is an error, not silently ignored."""
    config = tmp_path / "node.toml"
    config.write_text("batchsize = 8\n")
    with pytest.raises(ConfigError, match="batchsize"):
        resolve("client", {}, {}, config)


def test_cli_exits_78_on_bad_setting() -> None:
    """The command exits with EX_CONFIG for a bad value."""
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "--role", "client", "--stream",
         "csv:x.csv", "--batch-size", "-3"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == EXIT_CONFIG
    assert "batch_size" in result.stderr


def test_config_print_shows_sources() -> None:
    """config --print lists each setting with where its value came from."""
    result = subprocess.run(
        [sys.executable, "-m", "sfhfe_node", "config", "--print", "--role", "client",
         "--batch-size", "12"],
        capture_output=True, text=True, timeout=60,
        env={"SFHFE_SEED": "4", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "flag --batch-size" in result.stdout
    assert "env SFHFE_SEED" in result.stdout


def test_version_and_help() -> None:
    """--version and --help work without a role."""
    for flag in ("--version", "--help"):
        result = subprocess.run(
            [sys.executable, "-m", "sfhfe_node", flag],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0 and "sfhfe-node" in result.stdout
