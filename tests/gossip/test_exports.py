"""The gossip package's public surface."""

from __future__ import annotations

import importlib

import pytest

import sfhfe_node.gossip as gossip

MODULES = [
    "auth", "dialer", "discovery", "exchange", "fields", "handler", "ledger",
    "links", "merge", "messages", "metrics", "node", "penalties", "peers",
    "protocol", "sendqueue", "tensors",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_what_it_defines(name: str) -> None:
    """Every name in a module's __all__ exists in that module."""
    module = importlib.import_module(f"sfhfe_node.gossip.{name}")
    assert module.__all__ and all(hasattr(module, item) for item in module.__all__)


def test_package_reexports_exist() -> None:
    """Every name the package exports can be imported from it."""
    assert all(hasattr(gossip, item) for item in gossip.__all__)
