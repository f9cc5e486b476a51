"""Checks on received weights, their weighting and their robust combination."""

from __future__ import annotations

import numpy as np
import pytest

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.merge import (
    RoundBuffer,
    Update,
    blend_params,
    check_weights,
    combine,
    params_norm,
    update_weight,
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


def test_update_weight_multiplies_trust_similarity_and_sample_share() -> None:
    """The weight is trust x similarity x sample share, each clipped to [0, 1]."""
    assert update_weight(0.5, 0.8, 50, 100) == pytest.approx(0.2)
    assert update_weight(1.0, -0.4, 100, 100) == 0.0
    assert update_weight(2.0, 1.0, 100, 100) == pytest.approx(1.0)


def test_claiming_more_samples_buys_no_extra_weight() -> None:
    """A sample count far above the node's own counts as an equal share."""
    assert update_weight(1.0, 1.0, 10**12, 100) == update_weight(1.0, 1.0, 100, 100)


def _update(peer: str, scale: float, weight: float = 1.0) -> Update:
    return Update(peer, _params(scale), weight)


def test_combine_counts_own_weights_as_one_vote() -> None:
    """One full-weight peer gives the plain delta as target and blend/2 as factor."""
    target, factor = combine(_params(1.0), [_update("a", 2.0)], blend=0.6)
    assert all(np.allclose(value, 2.0) for value in target.values())
    assert factor == pytest.approx(0.3)


def test_combine_clips_an_outlier_to_the_median_delta() -> None:
    """A peer far from the others moves the target no more than a typical one."""
    honest = [_update("a", 1.1), _update("b", 1.1)]
    target, _ = combine(_params(1.0), [*honest, _update("evil", -50.0)], blend=0.5)
    # Deltas of the honest peers are +0.1 each; the outlier's is clipped to the
    # same norm, so the mean delta is (0.1 + 0.1 - 0.1) / 3 per value.
    expected = 1.0 + 0.1 / 3
    assert all(np.allclose(value, expected, atol=1e-6) for value in target.values())


def test_combine_bounds_any_delta_by_the_own_norm() -> None:
    """Even a lone peer moves the target at most clip_ratio times the own norm."""
    own = _params(1.0)
    target, _ = combine(own, [_update("a", 100.0)], blend=1.0, clip_ratio=0.5)
    moved = params_norm({n: target[n] - own[n] for n in own})
    assert moved == pytest.approx(0.5 * params_norm(own), rel=1e-5)


def test_combine_without_weight_changes_nothing() -> None:
    """Updates of zero weight give a factor of zero."""
    target, factor = combine(_params(1.0), [_update("a", 3.0, weight=0.0)], 0.5)
    assert factor == 0.0 and all(np.allclose(v, 1.0) for v in target.values())


def test_round_buffer_keeps_the_latest_update_per_peer() -> None:
    """A second update of one peer and expert replaces the first in its round."""
    buffer = RoundBuffer()
    buffer.add("temporal", _update("a", 1.0))
    buffer.add("temporal", _update("a", 2.0))
    buffer.add("temporal", _update("b", 3.0))
    taken = buffer.take()
    assert [u.params["b"][0] for u in taken["temporal"]] == [2.0, 3.0]
    assert len(buffer) == 0 and buffer.take() == {}


def test_blend_moves_own_weights_toward_incoming() -> None:
    """Blending by f moves every weight a share f of the way to the peer's."""
    mixed = blend_params(_params(0.0), _params(1.0), 0.25)
    assert all(np.allclose(value, 0.25) for value in mixed.values())
    assert all(value.dtype == np.float32 for value in mixed.values())
