"""Tests of the learner package's public surface."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sfhfe_node.learner

MODULES = sorted(
    module.name for module in pkgutil.iter_modules(sfhfe_node.learner.__path__)
)


@pytest.mark.parametrize("module", MODULES)
def test_module_exports_what_it_defines(module: str) -> None:
    """Every name in a module's __all__ exists and is re-exported by the package."""
    loaded = importlib.import_module(f"sfhfe_node.learner.{module}")
    for name in loaded.__all__:
        assert hasattr(loaded, name), name
        if not name.isupper() or name in sfhfe_node.learner.__all__:
            assert getattr(sfhfe_node.learner, name) is getattr(loaded, name), name
