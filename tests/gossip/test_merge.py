"""Checks on received weights and the blend of accepted ones."""

from __future__ import annotations

import numpy as np
import pytest

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.merge import (
    blend_factor,
    blend_params,
    check_weights,
    params_norm,
)

SPEC = {"temporal": {"w": (2, 3), "b": (2,)}}


def _params(scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "w": np.full((2, 3), scale, np.float32),
        "b": np.full((2,), scale, np.float32),
    }


def _reason(
    expert: str, params: dict[str, np.ndarray], own: float | None = None
) -> str:
    with pytest.raises(ProtocolError) as caught:
        check_weights(SPEC, expert, params, own)
    return caught.value.reason


def test_matching_weights_are_accepted() -> None:
    """Weights of the right names, shapes and size pass."""
    check_weights(SPEC, "temporal", _params(), own_norm=params_norm(_params()))


def test_unknown_expert_is_rejected() -> None:
    """An expert the node does not have is rejected."""
    assert _reason("oracle", _params()) == "unknown_expert"


def test_wrong_shape_is_rejected() -> None:
    """A parameter of another shape is rejected."""
    params = _params()
    params["w"] = np.zeros((3, 2), np.float32)
    assert _reason("temporal", params) == "bad_shape"


def test_missing_parameter_is_rejected() -> None:
    """A parameter set that differs from the spec is rejected."""
    params = _params()
    del params["b"]
    assert _reason("temporal", params) == "bad_shape"


def test_wrong_dtype_is_rejected() -> None:
    """A float64 array is rejected."""
    params = _params()
    params["b"] = params["b"].astype(np.float64)
    assert _reason("temporal", params) == "bad_dtype"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_value_is_rejected(value: float) -> None:
    """NaN or an infinity anywhere in a tensor is rejected."""
    params = _params()
    params["w"][1, 2] = value
    assert _reason("temporal", params) == "not_finite"


def test_norm_far_above_own_is_rejected() -> None:
    """An update more than 10x the node's own norm (plus 1) is rejected."""
    own = params_norm(_params())
    assert _reason("temporal", _params(scale=20.0), own) == "norm_too_large"
    check_weights(SPEC, "temporal", _params(scale=5.0), own)


def test_norm_of_huge_float32_does_not_overflow() -> None:
    """Norms are summed in float64, so large float32 values give a finite norm."""
    params = {"w": np.full((2, 3), 3e38, np.float32), "b": np.zeros(2, np.float32)}
    assert np.isfinite(params_norm(params))


def test_blend_factor_scales_by_trust_and_similarity() -> None:
    """The factor is base x trust x similarity, with negative similarity as zero."""
    assert blend_factor(0.3, 0.5, 0.8) == pytest.approx(0.12)
    assert blend_factor(0.3, 1.0, -0.4) == 0.0
    assert blend_factor(0.3, 2.0, 1.0) == pytest.approx(0.3)


def test_blend_moves_own_weights_toward_incoming() -> None:
    """Blending by f moves every weight a share f of the way to the peer's."""
    mixed = blend_params(_params(0.0), _params(1.0), 0.25)
    assert all(np.allclose(value, 0.25) for value in mixed.values())
    assert all(value.dtype == np.float32 for value in mixed.values())
