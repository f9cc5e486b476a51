"""Tests of the mixture's losses and their hand-written gradients."""

from __future__ import annotations

import pytest
import torch

from sfhfe_node.learner import (
    expert_gradient,
    expert_losses,
    mixture_gradient,
    mixture_loss,
)

E, ROWS, CLASSES = 4, 6, 5


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    outputs = torch.randn((E, ROWS, CLASSES), generator=gen) * 2
    target = torch.randint(0, 3, (ROWS,), generator=gen).float()
    weights = torch.rand((E, ROWS), generator=gen)
    return outputs, target, weights


@pytest.mark.parametrize("robust", [-1, 2])
def test_classification_gradient_matches_autograd(robust: int) -> None:
    """Log-loss and generalised cross-entropy gradients, masked classes included."""
    outputs, target, weights = _inputs(1)
    mask = torch.tensor([0.0, 0.0, 0.0, -30.0, -30.0])
    leaf = outputs.clone().requires_grad_(True)
    training, plain = expert_losses(
        leaf, target, mask, robust, torch.tensor([max(robust, 0)])
    )
    (training * weights).sum().backward()
    losses, grad = expert_gradient(outputs, target, mask, robust, weights)
    torch.testing.assert_close(losses, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("robust", [-1, 1])
def test_regression_gradient_matches_autograd(robust: int) -> None:
    """Squared-error and Huber gradients, errors on both sides of the kink."""
    outputs, target, weights = _inputs(2)
    outputs = outputs[:, :, :1]
    leaf = outputs.clone().requires_grad_(True)
    training, plain = expert_losses(
        leaf, target, None, robust, torch.tensor([max(robust, 0)])
    )
    (training * weights).sum().backward()
    losses, grad = expert_gradient(outputs, target, None, robust, weights)
    torch.testing.assert_close(losses, plain)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("classify", [True, False])
def test_mixture_gradient_matches_autograd(classify: bool) -> None:
    """The gradient over the gate weights of the mean mixture loss."""
    outputs, target, _ = _inputs(3)
    gen = torch.Generator().manual_seed(4)
    index = torch.stack([torch.randperm(E, generator=gen)[:2] for _ in range(ROWS)])
    weights = torch.softmax(torch.randn((ROWS, 2), generator=gen), dim=1)
    probs = torch.softmax(outputs, dim=2) if classify else None
    values = outputs if classify else outputs[:, :, :1]
    leaf = weights.clone().requires_grad_(True)
    reference = mixture_loss(values, leaf, index, target, probs)
    reference.mean().backward()
    losses, grad = mixture_gradient(values, weights, index, target, probs)
    torch.testing.assert_close(losses, reference.detach())
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-6)
