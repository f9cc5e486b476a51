"""Tests of the coordinator package's public surface."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["app", "dashboard", "meta", "metrics", "peers", "service", "store"]


@pytest.mark.parametrize("name", MODULES)
def test_module_defines_everything_it_exports(name: str) -> None:
    """Every name in a module's __all__ exists in that module."""
    module = importlib.import_module(f"sfhfe_node.coordinator.{name}")
    assert all(hasattr(module, item) for item in module.__all__)


def test_package_reexports_the_main_api() -> None:
    """The package exports the config, the app builders, the store and learner."""
    package = importlib.import_module("sfhfe_node.coordinator")
    names = ("CoordinatorConfig", "make_app", "run_coordinator", "Store", "MetaParams")
    for item in names:
        assert item in package.__all__ and hasattr(package, item)
