"""The router: a contextual bandit that picks experts, and a gate that mixes them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.optim import FlatAdam

__all__ = ["Router"]


class Router:
    """Discounted LinUCB over experts, epsilon mixing, and a softmax gate.

    For a record with context ``c`` (a bias, the label context and the
    standardised features) expert ``e`` scores
    ``theta_e . c + alpha * sqrt(c^T A_e^-1 c) + prior_weight * (prior_e - 0.5)``
    where ``A_e = ridge * I + S_e`` and ``theta_e = A_e^-1 b_e`` come from the
    rewards the expert earned when it was active. ``S_e`` and ``b_e`` decay by
    ``discount`` every batch, so an expert left idle regains exploration bonus
    and the router follows drift. ``theta_e`` and ``A_e^-1`` are re-solved
    every ``solve_every`` updates (between solves the scores use the last
    solution), which keeps the matrix inversions off most batches. The top
    ``top_k`` scores are activated; with
    probability ``epsilon`` a record is routed to ``top_k`` experts drawn at
    random instead, which puts a floor under every expert's share and under
    the routing entropy. A reward that is NaN or infinite is ignored.

    The active experts' predictions are mixed with weights from a softmax
    gate (a linear map of the same context) restricted to them, trained on the
    mixture's loss.

    Parameters:
        n_experts: number of experts.
        context_dim: width of ``c``, bias included.
        top_k: experts activated per record (default 3, at most ``n_experts``).
        alpha: weight of the exploration bonus (default 0.1, in reward units).
            Higher explores more; 0 is greedy.
        epsilon: share of records routed at random (default 0.05).
        ridge: prior precision of every ``A_e`` (default 1.0).
        discount: per-batch decay of the bandit statistics (default 0.995).
            Lower forgets faster.
        prior_weight: score added per unit of coordinator prior above 0.5
            (default 0.2).
        gate_lr: Adam step size of the gate (default 0.01).
        solve_every: updates between two solves of the bandit (default 4).
            1 uses every reward at once; higher is cheaper and reacts a few
            batches later.
        generator: seeded source of the epsilon draws.

    Reference: Li, Chu, Langford and Schapire (2010), "A contextual-bandit
    approach to personalized news article recommendation".
    """

    def __init__(
        self,
        n_experts: int,
        context_dim: int,
        *,
        top_k: int = 3,
        alpha: float = 0.1,
        epsilon: float = 0.05,
        ridge: float = 1.0,
        discount: float = 0.995,
        prior_weight: float = 0.2,
        gate_lr: float = 0.01,
        solve_every: int = 4,
        generator: torch.Generator,
    ) -> None:
        if not 1 <= top_k <= n_experts:
            raise LearnerError(f"top_k={top_k} must be in [1, {n_experts}]")
        if solve_every < 1:
            raise LearnerError(f"solve_every={solve_every} must be at least 1")
        self.n_experts = n_experts
        self.context_dim = context_dim
        self.top_k = top_k
        self.alpha = alpha
        self.epsilon = epsilon
        self.ridge = ridge
        self.discount = discount
        self.prior_weight = prior_weight
        self.solve_every = int(solve_every)
        self.generator = generator
        self.updates = 0
        self.S = np.zeros((n_experts, context_dim, context_dim))
        self.b = np.zeros((n_experts, context_dim))
        self.priors = np.full(n_experts, 0.5)
        self.counts = np.zeros(n_experts)
        self.ignored_rewards = 0
        self.gate = torch.zeros(context_dim * n_experts + n_experts, requires_grad=True)
        self.gate_optimizer = FlatAdam(self.gate, lr=gate_lr)
        self._solved: tuple[np.ndarray, np.ndarray] | None = None
        self._side_by_side: tuple[np.ndarray | None, np.ndarray] = (None, np.zeros(0))

    def scores(self, C: np.ndarray) -> np.ndarray:
        """UCB score of every expert for every context row, [n, n_experts]."""
        theta, inverse = self._solve()
        mean = C @ theta.T
        E, d = self.n_experts, self.context_dim
        if self._side_by_side[0] is not inverse:
            # every expert's inverse side by side: one product for all of them
            joined = inverse.transpose(1, 0, 2).reshape(d, E * d)
            self._side_by_side = (inverse, joined)
        products = (C @ self._side_by_side[1]).reshape(-1, E, d)
        spread = np.einsum("ned,nd->ne", products, C)
        bonus = self.alpha * np.sqrt(np.maximum(spread, 0.0))
        return mean + bonus + self.prior_weight * (self.priors - 0.5)

    def route(self, C: np.ndarray, *, explore: bool) -> np.ndarray:
        """Indices of the active experts per row, [n, top_k], best first.

        ``explore`` draws the epsilon-random rows (this advances the
        generator); without it the choice is a pure function of the state.
        """
        scores = self.scores(C)
        if explore and self.epsilon > 0 and len(C):
            shape = (len(C), self.n_experts + 1)
            draws = torch.rand(shape, generator=self.generator).double().numpy()
            random_rows = draws[:, 0] < self.epsilon
            scores[random_rows] = draws[random_rows, 1:]
        return np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]

    def mix_weights(self, C: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Gate weights of the active experts, [n, top_k], rows summing to 1."""
        split = self.context_dim * self.n_experts
        W = self.gate[:split].view(self.context_dim, self.n_experts)
        logits = torch.addmm(self.gate[split:], C, W)
        return torch.softmax(logits.gather(1, active), dim=1)

    def learn_many(
        self, C: np.ndarray, active: np.ndarray, rewards: np.ndarray
    ) -> None:
        """Update the bandit with the active experts' rewards, both [n, top_k]."""
        mask = np.zeros((len(C), self.n_experts))
        reward = np.zeros((len(C), self.n_experts))
        finite = np.isfinite(rewards)
        self.ignored_rewards += int(finite.size - np.count_nonzero(finite))
        rows = np.repeat(np.arange(len(C)), self.top_k).reshape(active.shape)
        mask[rows[finite], active[finite]] = 1.0
        reward[rows[finite], active[finite]] = rewards[finite]
        weighted = (mask.T[:, :, None] * C).transpose(0, 2, 1)
        self.S = self.discount * self.S + weighted @ C
        self.b = self.discount * self.b + (reward * mask).T @ C
        self.updates += 1
        if self.updates % self.solve_every == 0:
            self._solved = None

    def count_routes(self, active: np.ndarray) -> None:
        """Add a batch's routings, [n, top_k], to the usage counts."""
        self.counts += np.bincount(active.ravel(), minlength=self.n_experts)

    def step_gate(self) -> None:
        """Apply the gradient back-propagated into the gate."""
        self.gate_optimizer.step()

    @torch.no_grad()
    def learn_gate(
        self,
        C: torch.Tensor,
        active: torch.Tensor,
        weights: torch.Tensor,
        grad: torch.Tensor,
    ) -> None:
        """One gate step from the loss gradient over its ``weights`` [n, k].

        ``weights`` are what :meth:`mix_weights` gave for the contexts ``C``
        and ``active`` experts; the gradient goes back through the softmax and
        the linear map by hand and the gate's optimiser applies it.
        """
        logits = weights * (grad - (weights * grad).sum(dim=1, keepdim=True))
        full = logits.new_zeros((len(C), self.n_experts)).scatter_(1, active, logits)
        split = self.context_dim * self.n_experts
        total = torch.empty(self.gate.shape)
        torch.mm(C.t(), full, out=total[:split].view(self.context_dim, self.n_experts))
        torch.sum(full, dim=0, out=total[split:])
        self.gate.grad = total
        self.gate_optimizer.step()

    def usage(self) -> np.ndarray:
        """Share of routing slots each expert received so far; uniform at first."""
        total = self.counts.sum()
        if total <= 0:
            return np.full(self.n_experts, 1.0 / self.n_experts)
        return self.counts / total

    def entropy(self) -> float:
        """Entropy of :meth:`usage`, divided by its maximum ``log(n_experts)``."""
        share = self.usage()
        share = share[share > 0]
        return float(-(share * np.log(share)).sum() / math.log(self.n_experts))

    def _solve(self) -> tuple[np.ndarray, np.ndarray]:
        if self._solved is None:
            A = self.S + self.ridge * np.eye(self.context_dim)
            inverse = np.linalg.inv(A)
            theta = np.einsum("edf,ef->ed", inverse, self.b)
            self._solved = (theta, inverse)
        return self._solved

    def state_dict(self) -> dict[str, Any]:
        """Bandit statistics and their last solution, priors, gate and generator."""
        theta, inverse = self._solve()
        return {
            "theta": torch.from_numpy(theta.copy()),
            "inverse": torch.from_numpy(inverse.copy()),
            "updates": self.updates,
            "S": torch.from_numpy(self.S.copy()),
            "b": torch.from_numpy(self.b.copy()),
            "priors": torch.from_numpy(self.priors.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "ignored_rewards": self.ignored_rewards,
            "gate": self.gate.detach().clone(),
            "gate_optimizer": self.gate_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        E, d = self.n_experts, self.context_dim
        shapes = {
            "S": (E, d, d), "b": (E, d), "priors": (E,), "counts": (E,),
            "theta": (E, d), "inverse": (E, d, d),
        }
        arrays = {}
        for key, shape in shapes.items():
            value = np.asarray(state[key], dtype=np.float64).copy()
            if value.shape != shape:
                raise LearnerError(
                    f"router {key} has shape {value.shape}; expected {shape}"
                )
            arrays[key] = value
        if tuple(state["gate"].shape) != tuple(self.gate.shape):
            raise LearnerError("router gate does not match this router's layout")
        self.S, self.b = arrays["S"], arrays["b"]
        self.priors, self.counts = arrays["priors"], arrays["counts"]
        self.ignored_rewards = int(state["ignored_rewards"])
        with torch.no_grad():
            self.gate.copy_(state["gate"])
        self.gate_optimizer.load_state_dict(state["gate_optimizer"])
        self.generator.set_state(state["generator"].clone())
        self.updates = int(state["updates"])
        self._solved = (arrays["theta"], arrays["inverse"])
