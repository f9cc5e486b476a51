"""Online principal components of the standardised feature stream."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["OnlinePCA"]

_INIT_SEED = 20_240_611


class OnlinePCA:
    """Leading principal directions by the generalised Hebbian algorithm.

    One mini-batch ``Z`` [n, d] moves the components ``W`` [d, m] by
    ``rate * (Z^T Y - W triu(Y^T Y)) / n`` with ``Y = Z W`` (Sanger's rule, the
    multi-component form of Oja's rule), then re-orthonormalises them with a
    sign-preserving QR step so that a large batch cannot blow them up. The
    components start from the same matrix on every node (not from the node's
    seed), so that nodes observing similar data converge to components of the
    same sign and can average them.

    Parameters:
        n_features: input dimension ``d``.
        n_components: number of directions ``m`` kept (at most ``d``).
        rate: Hebbian step size (default 0.01). Larger follows a drifting
            covariance faster but jitters more around it.
        decay: per-batch decay of the variance estimates behind
            :attr:`explained_variance_ratio` (default 0.99).

    Reference: Sanger (1989), "Optimal unsupervised learning in a single-layer
    linear feedforward neural network".
    """

    def __init__(
        self,
        n_features: int,
        n_components: int,
        *,
        rate: float = 0.01,
        decay: float = 0.99,
    ) -> None:
        if not 1 <= n_components <= n_features:
            raise LearnerError(
                f"n_components={n_components} must be in [1, {n_features}]"
            )
        self.n_features = n_features
        self.n_components = n_components
        self.rate = rate
        self.decay = decay
        rng = np.random.default_rng(_INIT_SEED)
        start = rng.normal(size=(n_features, n_components))
        self.components = torch.from_numpy(_orthonormal(start)).to(torch.float32)
        self.component_var = torch.zeros(n_components)
        self.total_var = torch.zeros(())

    @property
    def explained_variance_ratio(self) -> list[float]:
        """Share of the recent total variance along each component."""
        total = float(self.total_var)
        if total <= 0.0:
            return [0.0] * self.n_components
        return [min(1.0, float(v) / total) for v in self.component_var]

    def project(self, Z: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``Z`` [n, d] on the components, [n, m]."""
        return Z @ self.components

    def residual(self, Z: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of each row of ``Z``, [n]."""
        rebuilt = self.project(Z) @ self.components.T
        return (Z - rebuilt).pow(2).mean(dim=1)

    @torch.no_grad()
    def learn_many(self, Z: torch.Tensor) -> None:
        """Move the components toward the principal directions of ``Z``."""
        n = Z.shape[0]
        if n == 0:
            return
        W = self.components
        Y = Z @ W
        hebb = Z.T @ Y - W @ torch.triu(Y.T @ Y)
        moved = (W + (self.rate / n) * hebb).double().numpy()
        if np.isfinite(moved).all():
            self.components = torch.from_numpy(_orthonormal(moved)).to(torch.float32)
        keep = self.decay
        self.component_var.mul_(keep).add_((1 - keep) * Y.pow(2).mean(dim=0))
        self.total_var.mul_(keep).add_((1 - keep) * Z.pow(2).sum(dim=1).mean())

    def blend(self, components: np.ndarray, factor: float) -> None:
        """Average ``components`` in, aligning each column's sign to ours first."""
        own = self.components.double().numpy()
        other = np.asarray(components, dtype=np.float64)
        signs = np.where((own * other).sum(axis=0) < 0, -1.0, 1.0)
        if np.array_equal(other * signs, own):
            return  # blending in the same components changes nothing
        mixed = (1.0 - factor) * own + factor * other * signs
        if np.isfinite(mixed).all() and np.linalg.matrix_rank(mixed) == mixed.shape[1]:
            self.components = torch.from_numpy(_orthonormal(mixed)).to(torch.float32)

    def state_dict(self) -> dict[str, Any]:
        """Components and variance estimates, as tensors."""
        return {
            "components": self.components.clone(),
            "component_var": self.component_var.clone(),
            "total_var": self.total_var.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        components = state["components"]
        if tuple(components.shape) != (self.n_features, self.n_components):
            raise LearnerError(
                f"components have shape {tuple(components.shape)}; expected "
                f"({self.n_features}, {self.n_components})"
            )
        self.components = components.detach().to(torch.float32).clone()
        self.component_var = state["component_var"].detach().to(torch.float32).clone()
        self.total_var = state["total_var"].detach().to(torch.float32).clone()


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning ``matrix``, each keeping its sign."""
    q, r = np.linalg.qr(matrix)
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    return q * signs
