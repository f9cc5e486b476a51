"""The mixture of experts' arithmetic: gating, per-expert and mixture losses.

Pure tensor functions, free of learner state: the learner passes in the
experts' outputs, the router's choices and weights, and the targets.
"""

from __future__ import annotations

import torch

__all__ = [
    "GCE_Q",
    "LOSS_CAP",
    "PROBA_FLOOR",
    "expert_gradient",
    "expert_losses",
    "mix",
    "mixture_gradient",
    "mixture_loss",
]

PROBA_FLOOR = 1e-7  # floor of a probability inside a log-loss
LOSS_CAP = 1e6  # per-row losses are clipped here, far below the schema's 1e9
GCE_Q = 0.7  # exponent of the consistency expert's generalised cross-entropy


def mix(
    values: torch.Tensor, active: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mix ``values`` [E, n, o] of the ``active`` [n, k] experts by ``weights``."""
    index = active.unsqueeze(2).expand(-1, -1, values.shape[2])
    chosen = values.transpose(0, 1).gather(1, index)
    return torch.bmm(weights.unsqueeze(1), chosen)[:, 0]


def expert_losses(
    outputs: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    robust: int,
    robust_index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-expert, per-row training losses [E, rows] and the plain ones, detached.

    With a class ``mask`` (logit offsets) the losses are log-losses, without
    one squared errors. The expert at index ``robust`` (none when negative)
    trains on a robust loss instead: a generalised cross-entropy or a Huber
    loss; ``robust_index`` is that index as a one-element tensor.
    """
    if mask is not None:
        logp = torch.log_softmax(outputs + mask, dim=2)
        index = target.long().view(1, -1, 1).expand(logp.shape[0], -1, 1)
        picked = logp.gather(2, index)[:, :, 0]
        losses = -picked
        if robust >= 0:
            gce = (1.0 - picked[robust : robust + 1].exp().pow(GCE_Q)) / GCE_Q
            training = losses.index_copy(0, robust_index, gce)
            return training, losses.detach()
        return losses, losses.detach()
    diff = outputs[:, :, 0] - target
    losses = diff.pow(2)
    if robust >= 0:
        a = diff[robust : robust + 1].abs()
        huber = torch.where(a < 1.0, a.pow(2), 2.0 * a - 1.0)
        training = losses.index_copy(0, robust_index, huber)
        return training, losses.detach()
    return losses, losses.detach()


def mixture_loss(
    outputs: torch.Tensor,
    weights: torch.Tensor,
    index: torch.Tensor,
    target: torch.Tensor,
    probs: torch.Tensor | None,
) -> torch.Tensor:
    """Per-row loss of the mixture of the ``index`` [n, k] experts.

    With the experts' class probabilities ``probs`` it is the log-loss of the
    mixed probabilities; without them the squared error of the mixed values.
    """
    if probs is not None:
        mixed = mix(probs, index, weights)
        picked = mixed.gather(1, target.long().view(-1, 1))[:, 0]
        return -torch.log(picked + PROBA_FLOOR)
    mixed = mix(outputs, index, weights)[:, 0]
    return (mixed - target).pow(2)


def expert_gradient(
    outputs: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    robust: int,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain per-expert losses [E, rows] and the gradient of the training loss.

    The training loss is ``(weights * losses).sum()`` with the losses of
    :func:`expert_losses` (``robust`` names the expert on a robust loss); the
    gradient is taken over ``outputs`` [E, rows, o] and written out by hand:
    ``softmax - onehot`` for a log-loss, scaled by ``p_target ** q`` for the
    generalised cross-entropy, ``2 * error`` for a squared error and its
    clipped value for the Huber loss.
    """
    if mask is not None:
        logp = torch.log_softmax(outputs + mask, dim=2)
        index = target.long().view(1, -1, 1).expand(logp.shape[0], -1, 1)
        picked = logp.gather(2, index)
        coef = weights.unsqueeze(2)
        if robust >= 0:
            coef = coef.clone()
            coef[robust].mul_(picked[robust].mul(GCE_Q).exp_())
        grad = logp.exp_().mul_(coef)
        grad.scatter_add_(2, index, -coef)
        return picked[:, :, 0].neg_(), grad
    diff = outputs[:, :, 0] - target
    losses = diff * diff
    slope = diff * 2.0
    if robust >= 0:
        slope[robust].clamp_(-2.0, 2.0)
    return losses, (slope * weights).unsqueeze(2)


def mixture_gradient(
    outputs: torch.Tensor,
    weights: torch.Tensor,
    index: torch.Tensor,
    target: torch.Tensor,
    probs: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses of :func:`mixture_loss` and the gradient of their mean
    over ``weights`` [rows, k], written out by hand."""
    rows = max(len(target), 1)
    if probs is not None:
        picked = probs.gather(
            2, target.long().view(1, -1, 1).expand(probs.shape[0], -1, 1)
        )[:, :, 0]
        chosen = picked.t().gather(1, index)
        mixed = (weights * chosen).sum(dim=1) + PROBA_FLOOR
        return -torch.log(mixed), chosen.div_(mixed.unsqueeze(1)).mul_(-1.0 / rows)
    chosen = outputs[:, :, 0].t().gather(1, index)
    error = (weights * chosen).sum(dim=1) - target
    return error * error, chosen.mul_(error.unsqueeze(1) * (2.0 / rows))
