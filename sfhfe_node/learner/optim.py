"""Adam over one flat parameter vector with a learning rate per element."""

from __future__ import annotations

import math
from typing import Any

import torch

from sfhfe_node.errors import LearnerError

__all__ = ["FlatAdam"]


class FlatAdam:
    """Adam on a 1-D float32 leaf tensor, with per-element step sizes.

    Every parameter of a bank of experts lives in one flat vector, so one
    update is a handful of vector operations whatever the number of experts,
    and each expert keeps its own learning rate through ``lr``, a vector of
    the same length (:meth:`set_lr` fills a slice of it).

    Parameters:
        params: the flat leaf tensor (``requires_grad=True``).
        lr: initial step size of every element (default 1e-2).
        betas: decay of the first and second moment estimates (default 0.9,
            0.999). A lower second value adapts faster to changing gradient
            scales at the price of noisier steps.
        eps: added to the root of the second moment (default 1e-8).

    Reference: Kingma and Ba (2015), "Adam: a method for stochastic
    optimization".
    """

    def __init__(
        self,
        params: torch.Tensor,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if params.dim() != 1 or not params.requires_grad:
            raise LearnerError("FlatAdam needs a 1-D tensor that requires grad")
        self.params = params
        self.betas = betas
        self.eps = eps
        self.lr = torch.full_like(params, lr, requires_grad=False)
        self.m = torch.zeros_like(params, requires_grad=False)
        self.v = torch.zeros_like(params, requires_grad=False)
        self.steps = 0

    def set_lr(self, start: int, stop: int, lr: float) -> None:
        """Use step size ``lr`` for elements ``start:stop``."""
        self.lr[start:stop] = lr

    @torch.no_grad()
    def step(self) -> None:
        """Apply one Adam update from ``params.grad`` and clear the gradient."""
        grad = self.params.grad
        if grad is None:
            return
        grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        beta1, beta2 = self.betas
        self.steps += 1
        self.m.lerp_(grad, 1.0 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        scale = 1.0 / (1.0 - beta1**self.steps)
        # reuse the gradient's buffer for the denominator, then for the step
        root = torch.sqrt(self.v, out=grad)
        root.div_(math.sqrt(1.0 - beta2**self.steps)).add_(self.eps)
        self.params.addcmul_(root.reciprocal_().mul_(self.m), self.lr, value=-scale)
        self.params.grad = None

    def state_dict(self) -> dict[str, Any]:
        """Moments, step sizes and step count."""
        return {
            "lr": self.lr.clone(),
            "m": self.m.clone(),
            "v": self.v.clone(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for key in ("lr", "m", "v"):
            value = state[key]
            if not isinstance(value, torch.Tensor) or value.shape != self.params.shape:
                raise LearnerError(f"optimiser {key} does not match the parameters")
        self.lr = state["lr"].detach().to(torch.float32).clone()
        self.m = state["m"].detach().to(torch.float32).clone()
        self.v = state["v"].detach().to(torch.float32).clone()
        self.steps = int(state["steps"])
