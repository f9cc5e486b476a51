"""What the node learns about its stream without a target: codes and a graph."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.optim import FlatAdam

__all__ = ["Autoencoder", "LaggedGraph"]


class Autoencoder:
    """A small autoencoder of standardised records, trained online.

    ``d -> hidden -> latent -> hidden -> d`` with tanh layers and a linear
    output, trained by Adam on the mean squared reconstruction error of each
    batch. The error of a record before it is learned is its anomaly score
    (in squared standard deviations per feature); its latent code is what the
    reconstruction expert looks at and what the compressed memory tier
    stores.

    Parameters:
        n_features: input width ``d``.
        latent: code width (default 3). Narrower compresses more and scores
            more records as unusual.
        hidden: width of both hidden layers (default 16).
        lr: Adam step size (default 0.005).
        generator: seeded source of the initial weights.

    Reference: Hinton and Salakhutdinov (2006), "Reducing the dimensionality
    of data with neural networks".
    """

    def __init__(
        self,
        n_features: int,
        *,
        latent: int = 3,
        hidden: int = 16,
        lr: float = 0.005,
        generator: torch.Generator,
    ) -> None:
        self.n_features = n_features
        self.latent = latent
        self.hidden = hidden
        shapes = {
            "w1": (n_features, hidden), "b1": (hidden,),
            "w2": (hidden, latent), "b2": (latent,),
            "w3": (latent, hidden), "b3": (hidden,),
            "w4": (hidden, n_features), "b4": (n_features,),
        }
        self._layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for name, shape in shapes.items():
            self._layout[name] = (offset, shape)
            offset += math.prod(shape)
        flat = torch.zeros(offset)
        for name, (start, shape) in self._layout.items():
            if name.startswith("w"):
                bound = 1.0 / math.sqrt(shape[0])
                size = math.prod(shape)
                flat[start : start + size] = (
                    torch.rand(size, generator=generator) * 2 - 1
                ) * bound
        self.flat = flat.requires_grad_(True)
        self.optimizer = FlatAdam(self.flat, lr=lr)
        self.error_mean = 0.0
        self.error_sq = 0.0
        self.scored = 0

    def _params(self) -> dict[str, torch.Tensor]:
        """Every weight, cut from the flat vector in one op (one backward node)."""
        sizes = [math.prod(shape) for _, shape in self._layout.values()]
        parts = self.flat.split_with_sizes(sizes)
        return {
            name: part.view(shape)
            for (name, (_, shape)), part in zip(self._layout.items(), parts)
        }

    def encode(
        self, Z: torch.Tensor, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Latent codes of ``Z`` [n, d], [n, latent]."""
        p = params if params is not None else self._params()
        hidden = torch.tanh(torch.addmm(p["b1"], Z, p["w1"]))
        return torch.tanh(torch.addmm(p["b2"], hidden, p["w2"]))

    def decode(
        self, codes: torch.Tensor, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Records rebuilt from ``codes`` [n, latent], [n, d]."""
        p = params if params is not None else self._params()
        hidden = torch.tanh(torch.addmm(p["b3"], codes, p["w3"]))
        return torch.addmm(p["b4"], hidden, p["w4"])

    def forward(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent codes [n, latent] and reconstruction errors [n] of ``Z``.

        Differentiable: back-propagate a loss built from the errors, then
        call :meth:`step`.
        """
        params = self._params()
        codes = self.encode(Z, params)
        errors = (self.decode(codes, params) - Z).pow(2).mean(dim=1)
        return codes, errors

    @torch.no_grad()
    def score(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` without gradients."""
        return self.forward(Z)

    def step(self) -> None:
        """Apply the gradient accumulated by a reconstruction loss."""
        self.optimizer.step()

    def learn_many(self, Z: torch.Tensor) -> None:
        """One Adam step on the mean reconstruction error of ``Z``."""
        if len(Z):
            self.forward(Z)[1].mean().backward()
            self.step()

    def observe(self, errors: np.ndarray) -> None:
        """Add anomaly scores to the running statistics of :meth:`stats`."""
        if len(errors):
            keep = 0.99
            mean = float(errors.mean())
            self.error_mean = keep * self.error_mean + (1 - keep) * mean
            square = float((errors**2).mean())
            self.error_sq = keep * self.error_sq + (1 - keep) * square
            self.scored += len(errors)

    def stats(self) -> dict[str, float]:
        """Recent mean and standard deviation of the anomaly score."""
        var = max(self.error_sq - self.error_mean**2, 0.0)
        return {"mean": self.error_mean, "std": math.sqrt(var)}

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser and score statistics."""
        return {
            "flat": self.flat.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "error": [self.error_mean, self.error_sq],
            "scored": self.scored,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        flat = state["flat"]
        if not isinstance(flat, torch.Tensor) or flat.shape != self.flat.shape:
            raise LearnerError("saved autoencoder does not match this layout")
        with torch.no_grad():
            self.flat.copy_(flat)
        self.optimizer.load_state_dict(state["optimizer"])
        self.error_mean, self.error_sq = (float(v) for v in state["error"])
        self.scored = int(state["scored"])


class LaggedGraph:
    """An online sparse graph of lagged dependencies among features and target.

    The variables of record ``t`` are its standardised features ``x_t`` and
    its target ``y_t`` (a one-hot row for classification). Decayed first and
    second moments of ``[x_t, x_{t-1}, y_{t-1}, y_t]`` are kept, and every
    ``refresh`` batches two lasso problems are solved on them by coordinate
    descent: each feature of ``x_t`` on ``[x_{t-1}, y_{t-1}]``, and the
    target on ``[x_t, x_{t-1}, y_{t-1}]``. A non-zero coefficient is a
    directed edge; the target's parents are the inputs of the causal expert.

    Parameters:
        n_features: features ``d``.
        n_targets: target width ``K`` (classes, 1 for regression, 0 without
            a target).
        penalty: L1 weight ``lambda`` in correlation units (default 0.02).
            Higher keeps fewer edges.
        decay: per-batch decay of the moments (default 0.998).
        refresh: batches between two solves (default 32).
        sweeps: coordinate-descent sweeps per solve (default 6), each
            starting from the previous solution.

    Reference: Tibshirani (1996), "Regression shrinkage and selection via the
    lasso"; Granger (1969) for lagged dependence.
    """

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        *,
        penalty: float = 0.02,
        decay: float = 0.998,
        refresh: int = 32,
        sweeps: int = 6,
    ) -> None:
        self.d = n_features
        self.k = n_targets
        self.penalty = penalty
        self.decay = decay
        self.refresh = refresh
        self.sweeps = sweeps
        width = 2 * n_features + 2 * n_targets
        self.weight = 0.0
        self.sum = np.zeros(width)
        self.outer = np.zeros((width, width))
        self.batches = 0
        # x_t on [x_{t-1}, y_{t-1}]: [d + k, d]; y_t on [x_t, x_{t-1}, y_{t-1}]
        self.feature_coef = np.zeros((n_features + n_targets, n_features))
        self.target_coef = np.zeros((2 * n_features + n_targets, n_targets))
        self.parents = np.ones(2 * n_features + n_targets, dtype=bool)

    def learn_many(self, U: np.ndarray) -> None:
        """Add rows ``[x_t, x_{t-1}, y_{t-1}, y_t]`` and re-solve on cadence."""
        U = U[np.isfinite(U).all(axis=1)]
        self.batches += 1
        if len(U):
            keep = self.decay
            self.weight = keep * self.weight + len(U)
            self.sum = keep * self.sum + U.sum(axis=0)
            self.outer = keep * self.outer + U.T @ U
        if self.batches % self.refresh == 0 and self.weight > 8:
            self._solve()

    def _solve(self) -> None:
        mean = self.sum / self.weight
        cov = self.outer / self.weight - np.outer(mean, mean)
        d, k = self.d, self.k
        lagged = np.arange(d, 2 * d + k)
        self.feature_coef = _lasso(
            cov[np.ix_(lagged, lagged)], cov[np.ix_(lagged, np.arange(d))],
            self.penalty, self.sweeps, self.feature_coef,
        )
        if k:
            inputs = np.arange(2 * d + k)
            targets = np.arange(2 * d + k, 2 * d + 2 * k)
            self.target_coef = _lasso(
                cov[np.ix_(inputs, inputs)], cov[np.ix_(inputs, targets)],
                self.penalty, self.sweeps, self.target_coef,
            )
            strength = np.abs(self.target_coef).sum(axis=1)
            parents = strength > 1e-6
            if parents.any():
                self.parents = parents

    def edges(
        self, feature_names: list[str], target_name: str, limit: int = 32
    ) -> list[tuple[str, str, float]]:
        """The strongest edges as ``(source, destination, weight)``, by |weight|."""
        lagged = [f"{name}@t-1" for name in feature_names]
        lagged += [f"{target_name}@t-1"] if self.k else []
        found = []
        for j, source in enumerate(lagged):
            for i, destination in enumerate(feature_names):
                found.append((source, destination, float(self.feature_coef[j, i])))
        if self.k:
            sources = list(feature_names) + lagged
            for j, source in enumerate(sources):
                strength = float(np.abs(self.target_coef[j]).sum())
                found.append((source, target_name, strength))
        kept = [edge for edge in found if abs(edge[2]) > 1e-6]
        kept.sort(key=lambda edge: -abs(edge[2]))
        return kept[:limit]

    def state_dict(self) -> dict[str, Any]:
        """Moments, coefficients and the parent mask."""
        return {
            "weight": self.weight,
            "sum": torch.from_numpy(self.sum.copy()),
            "outer": torch.from_numpy(self.outer.copy()),
            "batches": self.batches,
            "feature_coef": torch.from_numpy(self.feature_coef.copy()),
            "target_coef": torch.from_numpy(self.target_coef.copy()),
            "parents": torch.from_numpy(self.parents.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        arrays = {
            key: np.asarray(state[key]).copy()
            for key in ("sum", "outer", "feature_coef", "target_coef", "parents")
        }
        for key, value in arrays.items():
            if value.shape != getattr(self, key).shape:
                raise LearnerError(f"saved graph {key} has shape {value.shape}")
        self.weight = float(state["weight"])
        self.batches = int(state["batches"])
        self.sum, self.outer = arrays["sum"], arrays["outer"]
        self.feature_coef = arrays["feature_coef"]
        self.target_coef = arrays["target_coef"]
        self.parents = arrays["parents"].astype(bool)


def _lasso(
    C: np.ndarray, c: np.ndarray, penalty: float, sweeps: int, start: np.ndarray
) -> np.ndarray:
    """Lasso coefficients [p, r] from input covariance C [p, p] and C_xy [p, r]."""
    p, _ = c.shape
    beta = start.copy()
    diag = np.diag(C).copy()
    for _ in range(sweeps):
        for j in range(p):
            if diag[j] <= 1e-9:
                continue
            rho = c[j] - C[j] @ beta + diag[j] * beta[j]
            beta[j] = np.sign(rho) * np.maximum(np.abs(rho) - penalty, 0.0) / diag[j]
    return beta
