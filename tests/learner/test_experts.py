"""Tests of the expert bank and its batched training."""

from __future__ import annotations

import numpy as np
import torch

from sfhfe_node.learner import DEFAULT_EXPERTS, ExpertBank, ExpertSpec

WIDTHS = {"plain": 5, "geometry": 4, "sequence": 18, "latent": 4, "causal": 7}


def _bank(seed: int = 0) -> ExpertBank:
    return ExpertBank(DEFAULT_EXPERTS, WIDTHS, 4, torch.Generator().manual_seed(seed))


def _views(n: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        view: torch.randn((n, width), generator=gen) for view, width in WIDTHS.items()
    }


def _gru_alone(x: torch.Tensor, p: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """A textbook GRU over the slices of ``x``, one step at a time."""
    H = p["wh"].shape[0]
    h = torch.zeros((x.shape[0], H))
    for chunk in x.reshape(x.shape[0], steps, -1).unbind(1):
        gx = chunk @ p["wx"] + p["bx"]
        gh = h @ p["wh"] + p["bh"]
        r = torch.sigmoid(gx[:, :H] + gh[:, :H])
        u = torch.sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        c = torch.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - u) * c + u * h
    return h @ p["w2"] + p["b2"]


def test_same_shaped_experts_share_one_group() -> None:
    """The six plain networks run as one stacked group, geometry with latent."""
    bank = _bank()
    sizes = sorted(len(group.members) for group in bank.groups)
    assert sizes == [1, 1, 2, 6]
    pairs = [group.members for group in bank.groups if len(group.members) == 2]
    assert {bank.names[i] for i in pairs[0]} == {"geometry", "reconstruction"}


def test_batched_forward_matches_each_expert_alone() -> None:
    """The stacked pass gives every expert the output of its own weights."""
    bank = _bank()
    views = _views()
    outputs = bank.forward(views).detach()
    for i, spec in enumerate(DEFAULT_EXPERTS):
        p = {k: torch.from_numpy(v) for k, v in bank.export(spec.name).items()}
        x = views[spec.view]
        if spec.steps:
            alone = _gru_alone(x, p, spec.steps)
        elif spec.hidden == 0:
            alone = x @ p["w"] + p["b"]
        else:
            alone = torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        torch.testing.assert_close(outputs[i], alone, rtol=1e-5, atol=1e-6)


def test_each_expert_uses_its_own_learning_rate() -> None:
    """An expert with rate 0 keeps its weights while the others move."""
    bank = _bank()
    bank.set_lr("drift", 0.0)
    before = {name: bank.export(name) for name in bank.names}
    bank.forward(_views()).pow(2).sum().backward()
    bank.step()
    for name in bank.names:
        same = all(
            np.array_equal(before[name][k], v) for k, v in bank.export(name).items()
        )
        assert same == (name == "drift"), name


def test_gradient_matches_finite_differences() -> None:
    """The batched backward pass agrees with a finite-difference estimate."""
    bank = ExpertBank(
        (ExpertSpec("a", "plain", 3, 0.01), ExpertSpec("b", "plain", 3, 0.01)),
        {"plain": 2},
        2,
        torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        bank.flat.copy_(bank.flat.double().float())
    views = {"plain": torch.randn((4, 2), generator=torch.Generator().manual_seed(2))}
    bank.forward(views).pow(2).sum().backward()
    analytic = bank.flat.grad.clone()
    step = 1e-2
    for index in (0, 5, 11, len(bank.flat) - 1):
        with torch.no_grad():
            bank.flat[index] += step
            up = bank.forward(views).pow(2).sum().item()
            bank.flat[index] -= 2 * step
            down = bank.forward(views).pow(2).sum().item()
            bank.flat[index] += step
        assert abs((up - down) / (2 * step) - analytic[index].item()) < 2e-2


def test_same_seed_gives_same_weights() -> None:
    """Initial weights depend only on the seed."""
    assert torch.equal(_bank(5).flat, _bank(5).flat)
    assert not torch.equal(_bank(5).flat, _bank(6).flat)


def test_recurrent_gradient_matches_finite_differences() -> None:
    """The GRU head's backward pass agrees with a finite-difference estimate."""
    bank = ExpertBank(
        (ExpertSpec("seq", "sequence", 3, 0.01, steps=3),),
        {"sequence": 6},
        2,
        torch.Generator().manual_seed(3),
    )
    inputs = torch.randn((4, 6), generator=torch.Generator().manual_seed(4))
    views = {"sequence": inputs}
    bank.forward(views).pow(2).sum().backward()
    analytic = bank.flat.grad.clone()
    step = 1e-2
    for index in (0, 7, 20, 40, len(bank.flat) - 1):
        with torch.no_grad():
            bank.flat[index] += step
            up = bank.forward(views).pow(2).sum().item()
            bank.flat[index] -= 2 * step
            down = bank.forward(views).pow(2).sum().item()
            bank.flat[index] += step
        assert abs((up - down) / (2 * step) - analytic[index].item()) < 2e-2


def _recurrent_bank(steps: int) -> tuple[ExpertBank, dict[str, torch.Tensor]]:
    bank = ExpertBank(
        DEFAULT_EXPERTS[:1] + (ExpertSpec("seq", "sequence", 5, 0.01, steps=steps),),
        {"geometry": 4, "sequence": 6 * steps},
        3,
        torch.Generator().manual_seed(steps),
    )
    gen = torch.Generator().manual_seed(10 + steps)
    views = {
        "geometry": torch.randn((7, 4), generator=gen),
        "sequence": torch.randn((7, 6 * steps), generator=gen),
    }
    return bank, views


def _autograd_gradient(
    bank: ExpertBank, views: dict[str, torch.Tensor], grad: torch.Tensor
) -> torch.Tensor:
    bank.flat.grad = None
    (bank.forward(views) * grad).sum().backward()
    reference = bank.flat.grad.clone()
    bank.flat.grad = None
    return reference


def test_taped_forward_gives_the_outputs_of_forward() -> None:
    """The training pass computes exactly what the differentiable pass does."""
    bank = _bank()
    views = _views()
    outputs, _ = bank.forward_taped(views)
    assert torch.equal(outputs, bank.forward(views).detach())


def test_hand_written_backward_matches_autograd() -> None:
    """Every group's gradient (linear, tanh network, GRU) equals autograd's."""
    bank = _bank()
    views = _views()
    outputs, tape = bank.forward_taped(views)
    grad = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(3))
    reference = _autograd_gradient(bank, views, grad)
    torch.testing.assert_close(
        bank.backward(tape, grad), reference, rtol=1e-4, atol=1e-5
    )


def test_hand_written_recurrent_backward_matches_autograd_for_any_steps() -> None:
    """The GRU's backward pass through time is right for one to four steps."""
    for steps in (1, 2, 3, 4):
        bank, views = _recurrent_bank(steps)
        outputs, tape = bank.forward_taped(views)
        gen = torch.Generator().manual_seed(steps)
        grad = torch.randn(outputs.shape, generator=gen)
        reference = _autograd_gradient(bank, views, grad)
        torch.testing.assert_close(
            bank.backward(tape, grad), reference, rtol=1e-4, atol=1e-5
        )


def test_backward_reads_the_weights_of_the_taped_pass() -> None:
    """After an update the next taped pass uses the new weights (views stay live)."""
    bank = _bank()
    views = _views()
    outputs, tape = bank.forward_taped(views)
    bank.flat.grad = bank.backward(tape, torch.ones(outputs.shape))
    bank.step()
    after, _ = bank.forward_taped(views)
    assert not torch.equal(after, outputs)
    assert torch.equal(after, bank.forward(views).detach())
