"""The feature views the experts read, and the router's context, of a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sfhfe_node.learner.context import StreamContext
from sfhfe_node.learner.geometry import OnlinePCA
from sfhfe_node.learner.normalizer import OnlineStandardizer
from sfhfe_node.learner.structure import LaggedGraph

__all__ = ["FeatureViews", "build_views"]


@dataclass
class FeatureViews:
    """The inputs of one batch's experts and router.

    ``views`` maps a view name (``plain``, ``geometry``, ``sequence``,
    ``latent``, ``causal``) to its float32 [n, width] tensor, ``context`` is
    the router's float64 [n, c] context, ``z`` the standardised records
    [n, n_features] and ``trends`` their deviations from the stream's moving
    averages.
    """

    views: dict[str, torch.Tensor]
    context: np.ndarray
    z: torch.Tensor
    trends: np.ndarray


def build_views(
    windows: np.ndarray,
    lags: np.ndarray,
    codes: torch.Tensor,
    trends: np.ndarray,
    *,
    stream: StreamContext,
    target: OnlineStandardizer,
    pca: OnlinePCA,
    graph: LaggedGraph,
    needed: set[str],
    projection: np.ndarray | None,
) -> FeatureViews:
    """Every view in ``needed``, and the router's context, of a batch.

    ``windows`` [n, window, n_features] are the standardised record windows,
    ``lags`` [n, window] their labels, ``codes`` the autoencoder's latent
    codes and ``trends`` the records' trends. ``projection``, when given,
    randomly projects the records down for the router's context.
    """
    n = len(windows)
    encoded = stream.encode(lags, target)
    last = encoded[:, -1]
    z_np = np.ascontiguousarray(windows[:, -1])
    # the views share their tail (trends, previous label): joined in numpy,
    # which costs less than tensor concatenation at these sizes
    tail = np.concatenate([trends, last], axis=1)
    views: dict[str, torch.Tensor] = {}
    if "plain" in needed:
        views["plain"] = torch.from_numpy(np.concatenate([z_np, tail], axis=1))
    if "geometry" in needed:
        projected = z_np @ pca.components.numpy()
        views["geometry"] = torch.from_numpy(np.concatenate([projected, tail], axis=1))
    if "sequence" in needed:
        joined = np.concatenate([windows, encoded], axis=2).reshape(n, -1)
        views["sequence"] = torch.from_numpy(joined)
    if "latent" in needed:
        coded = np.concatenate([codes.numpy(), tail], axis=1)
        views["latent"] = torch.from_numpy(coded)
    if "causal" in needed:
        inputs = np.concatenate([z_np, windows[:, -2], last], axis=1)
        inputs *= graph.parents[: inputs.shape[1]]
        views["causal"] = torch.from_numpy(inputs)
    z_router = z_np.astype(np.float64)
    if projection is not None:
        z_router = z_router @ projection
    context = np.concatenate([np.ones((n, 1)), last, z_router], 1)
    return FeatureViews(views, context, torch.from_numpy(z_np), trends)
