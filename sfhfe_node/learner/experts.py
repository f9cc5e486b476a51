"""Experts and the bank that trains same-shaped experts as one tensor.

An expert is a feature *view* of the stream (what it looks at) followed by a
*head* (how it maps that to outputs): a linear map when ``hidden`` is 0, a
one-hidden-layer tanh network otherwise, or, with ``steps`` above 0, a gated
recurrent unit (GRU) run over the ``steps`` records of a sequence view and a
linear map of its last state. Experts whose view width and hidden
width agree form a *group*: their weights are stacked along a leading expert
axis and the whole group runs as one batched matrix product
(``torch.baddbmm``), forward and backward. All groups' parameters are views of
one flat float32 vector trained by :class:`~sfhfe_node.learner.optim.FlatAdam`
with one learning rate per expert, so an update costs the same handful of
vector operations however many experts there are.

The training pass (:meth:`ExpertBank.forward_taped`) runs without autograd and
keeps what the backward pass needs (tanh activations, the GRU's gates and
states); :meth:`ExpertBank.backward` then writes the gradient of every group
straight into a flat vector. At a few dozen rows per batch autograd's
bookkeeping costs more than the arithmetic, and the hand-written pass is
checked against autograd in the tests. :meth:`ExpertBank.forward` stays
differentiable for anything else.

Adding an expert is adding an :class:`ExpertSpec`: a view the learner knows
how to build and a head size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.optim import FlatAdam

__all__ = ["DEFAULT_EXPERTS", "ExpertBank", "ExpertSpec"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class ExpertSpec:
    """What one expert looks at, how big its head is, and how fast it learns.

    Parameters:
        name: stable lowercase identifier (``[a-z][a-z0-9_]*``), used in
            insights, meta-parameters and gossip.
        view: name of the feature view the learner builds for it
            (``"plain"``, ``"geometry"``, ``"sequence"``, ``"latent"`` or
            ``"causal"``).
        hidden: hidden units of the head; 0 makes it linear.
        lr: initial Adam step size; the coordinator tunes it later.
        steps: records in a sequence view; above 0 makes the head a GRU
            reading the view as ``steps`` equal slices, oldest first
            (default 0, a feed-forward head).
    """

    name: str
    view: str
    hidden: int
    lr: float
    steps: int = 0


DEFAULT_EXPERTS: tuple[ExpertSpec, ...] = (
    # a head on the online principal components of the record
    ExpertSpec("geometry", "geometry", 16, 0.01),
    # a GRU over the last records and labels (the stream's autocorrelation);
    # the moving-average trends of the other views carry the longer horizons
    ExpertSpec("temporal", "sequence", 8, 0.01, steps=2),
    # a head on the autoencoder's latent code of the record
    ExpertSpec("reconstruction", "latent", 16, 0.01),
    # a linear model of the target's parents in the lagged dependency graph
    ExpertSpec("causal", "causal", 0, 0.02),
    # short memory, high rate: follows a drifting concept first
    ExpertSpec("drift", "plain", 32, 0.03),
    # a network whose outputs are constrained by the governance rules
    ExpertSpec("governance", "plain", 32, 0.01),
    # trained with a robust loss, on records that are not outliers
    ExpertSpec("consistency", "plain", 32, 0.01),
    # plain networks carrying the peer-selection and meta-adaptation jobs
    ExpertSpec("peer", "plain", 32, 0.005),
    ExpertSpec("meta", "plain", 32, 0.01),
    # slow and replay-heavy, consolidated by EWC
    ExpertSpec("memory", "plain", 32, 0.002),
)


@dataclass(frozen=True)
class _Group:
    members: tuple[int, ...]
    width: int
    hidden: int
    steps: int
    # parameter name -> (offset in the flat vector, shape of one expert's tensor)
    params: dict[str, tuple[int, tuple[int, ...]]]


class ExpertBank:
    """The weights of every expert, grouped by shape, and their optimiser.

    Parameters:
        specs: the experts, in the order their outputs are returned.
        widths: width of each view the specs name.
        n_outputs: outputs per expert (classes, or 1 for regression).
        generator: seeded source of the initial weights.
    """

    def __init__(
        self,
        specs: tuple[ExpertSpec, ...],
        widths: dict[str, int],
        n_outputs: int,
        generator: torch.Generator,
    ) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names) or not all(_NAME.fullmatch(n) for n in names):
            raise LearnerError(f"expert names must be unique [a-z0-9_]: {names}")
        for spec in specs:
            if spec.view not in widths:
                raise LearnerError(
                    f"expert {spec.name} asks for unknown view {spec.view!r}"
                )
        self.specs = specs
        self.names = tuple(names)
        self.n_outputs = n_outputs
        self.groups = self._layout(widths)
        size = max(
            offset + math.prod(shape) * len(group.members)
            for group in self.groups
            for offset, shape in group.params.values()
        )
        self.flat = torch.zeros(size)
        # the flat vector is the concatenation of every group's parameters
        self._sizes = [
            math.prod(shape) * len(group.members)
            for group in self.groups
            for _, shape in group.params.values()
        ]
        self._init_weights(generator)
        self.flat.requires_grad_(True)
        self.optimizer = FlatAdam(self.flat)
        order = [i for group in self.groups for i in group.members]
        self._unsort = torch.tensor(np.argsort(order), dtype=torch.long)
        self._order = torch.tensor(order, dtype=torch.long)
        self._counts = [len(group.members) for group in self.groups]
        self._sorted = order == sorted(order)
        # per group: parameter name -> shape of one expert's tensor as used,
        # a bias [out] taken as [1, out]
        self._shapes = [
            {
                pname: (1, *shape) if pname.startswith("b") else shape
                for pname, (_, shape) in group.params.items()
            }
            for group in self.groups
        ]
        for spec in specs:
            self.set_lr(spec.name, spec.lr)
        # views of the flat weights without autograd, for the taped passes;
        # the optimiser and every load write into the flat vector in place
        with torch.no_grad():
            self._taped_params = self._unpacked()
        # the gradient buffer and its blocks, rewritten whole by every backward
        self._grad = torch.zeros(self.flat.shape)
        blocks = iter(self._grad.split_with_sizes(self._sizes))
        self._grad_blocks = [
            {
                pname: next(blocks).view(len(group.members), *shape)
                for pname, shape in self._shapes[g].items()
            }
            for g, group in enumerate(self.groups)
        ]
        self._one = torch.ones(())

    def _layout(self, widths: dict[str, int]) -> tuple[_Group, ...]:
        keys: dict[tuple[int, int, int], list[int]] = {}
        for i, spec in enumerate(self.specs):
            width = widths[spec.view]
            if spec.steps and (spec.hidden < 1 or width % spec.steps):
                raise LearnerError(
                    f"expert {spec.name}: a recurrent head needs hidden units and "
                    f"a view width ({width}) divisible by steps ({spec.steps})"
                )
            keys.setdefault((width, spec.hidden, spec.steps), []).append(i)
        groups = []
        offset = 0
        for (width, hidden, steps), members in keys.items():
            if steps:
                step_width = width // steps
                shapes = {
                    "wx": (step_width, 3 * hidden),
                    "wh": (hidden, 3 * hidden),
                    "bx": (3 * hidden,),
                    "bh": (3 * hidden,),
                    "w2": (hidden, self.n_outputs),
                    "b2": (self.n_outputs,),
                }
            elif hidden == 0:
                shapes = {"w": (width, self.n_outputs), "b": (self.n_outputs,)}
            else:
                shapes = {
                    "w1": (width, hidden),
                    "b1": (hidden,),
                    "w2": (hidden, self.n_outputs),
                    "b2": (self.n_outputs,),
                }
            params = {}
            for pname, shape in shapes.items():
                params[pname] = (offset, shape)
                offset += math.prod(shape) * len(members)
            groups.append(_Group(tuple(members), width, hidden, steps, params))
        return tuple(groups)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator) -> None:
        for group in self.groups:
            for pname, (_, shape) in group.params.items():
                if pname.startswith("b"):
                    continue
                bound = 1.0 / math.sqrt(shape[0])
                stacked = self._stacked(group, pname)
                stacked.copy_(
                    (torch.rand(stacked.shape, generator=generator) * 2 - 1) * bound
                )

    def _stacked(self, group: _Group, pname: str) -> torch.Tensor:
        offset, shape = group.params[pname]
        count = len(group.members)
        return self.flat[offset : offset + count * math.prod(shape)].view(count, *shape)

    def _locate(self, name: str) -> tuple[_Group, int]:
        try:
            index = self.names.index(name)
        except ValueError:
            raise LearnerError(
                f"unknown expert {name!r}; known: {', '.join(self.names)}"
            ) from None
        for group in self.groups:
            if index in group.members:
                return group, group.members.index(index)
        raise LearnerError(f"expert {name!r} has no group")

    def _slices(self, name: str) -> dict[str, torch.Tensor]:
        group, slot = self._locate(name)
        return {pname: self._stacked(group, pname)[slot] for pname in group.params}

    def _unpacked(self) -> list[dict[str, torch.Tensor]]:
        """Every group's stacked parameters, cut from the flat vector in one op.

        One split (rather than a slice per parameter) keeps the backward pass
        to a single scatter of the gradient into the flat vector. Biases come
        shaped ``[count, 1, out]``, ready to broadcast over the rows, so that
        no reshaping op enters the graph.
        """
        parts = iter(self.flat.split_with_sizes(self._sizes))
        return [
            {
                pname: next(parts).view(len(group.members), *shape)
                for pname, shape in self._shapes[g].items()
            }
            for g, group in enumerate(self.groups)
        ]

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Outputs of every expert, [n_experts, n, n_outputs], in spec order.

        Differentiable: under autograd the gradient reaches :attr:`flat`.
        The learner's training path uses :meth:`forward_taped` and
        :meth:`backward` instead, which compute the same gradient by hand.
        """
        return self._run(views, None)

    @torch.no_grad()
    def forward_taped(
        self, views: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[Any]]:
        """:meth:`forward` without autograd, and the tape :meth:`backward` reads."""
        tape: list[Any] = []
        return self._run(views, tape), tape

    def _run(
        self, views: dict[str, torch.Tensor], tape: list[Any] | None
    ) -> torch.Tensor:
        outputs = []
        # cached views serve whenever no gradient has to reach the flat vector
        grad = tape is None and torch.is_grad_enabled()
        params = self._unpacked() if grad else self._taped_params
        for group, p in zip(self.groups, params):
            inputs = [views[self.specs[i].view] for i in group.members]
            if all(x is inputs[0] for x in inputs):
                X = inputs[0].unsqueeze(0).expand(len(inputs), -1, -1)
            else:
                X = torch.stack(inputs)
            if group.steps:
                outputs.append(self._recurrent(group, X, p, tape))
            elif group.hidden == 0:
                outputs.append(torch.baddbmm(p["b"], X, p["w"]))
                if tape is not None:
                    tape.append((X,))
            else:
                hidden = torch.tanh(torch.baddbmm(p["b1"], X, p["w1"]))
                outputs.append(torch.baddbmm(p["b2"], hidden, p["w2"]))
                if tape is not None:
                    tape.append((X, hidden))
        joined = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return joined if self._sorted else joined.index_select(0, self._unsort)

    def _recurrent(
        self,
        group: _Group,
        X: torch.Tensor,
        p: dict[str, torch.Tensor],
        tape: list[Any] | None,
    ) -> torch.Tensor:
        count, n, _ = X.shape
        H = group.hidden
        sequence = X.reshape(count, n * group.steps, -1)
        bh, wh = p["bh"], p["wh"]
        gates_x = torch.baddbmm(p["bx"], sequence, p["wx"])
        gates_x = gates_x.view(count, n, group.steps, 3 * H)
        state = X.new_zeros((count, n, H))
        steps = []
        # one split per tensor (not a slice per part) keeps the graph small
        for step, gx in enumerate(gates_x.unbind(2)):
            # the state starts at zero, where its product with wh is the bias
            gh = torch.baddbmm(bh, state, wh) if step else bh.expand(-1, n, -1)
            gx_gates, gx_fresh = gx.split_with_sizes((2 * H, H), dim=2)
            gh_gates, gh_fresh = gh.split_with_sizes((2 * H, H), dim=2)
            reset, update = torch.sigmoid(gx_gates + gh_gates).chunk(2, dim=2)
            fresh = torch.addcmul(gx_fresh, reset, gh_fresh)
            candidate = torch.tanh(fresh)
            if tape is not None:
                steps.append((state, reset, update, gh_fresh, candidate))
            state = torch.lerp(candidate, state, update)
        if tape is not None:
            tape.append((sequence, steps, state))
        return torch.baddbmm(p["b2"], state, p["w2"])

    @torch.no_grad()
    def backward(self, tape: list[Any], grad: torch.Tensor) -> torch.Tensor:
        """Gradient over :attr:`flat` of ``(grad * outputs).sum()``.

        ``tape`` comes from the :meth:`forward_taped` call that gave the
        outputs and ``grad`` is shaped like them. Written out by hand: the
        same numbers as autograd's at a fraction of its bookkeeping, which
        dominates at the learner's small batch sizes. The result is the
        bank's own buffer, valid until the next call (the optimiser may use
        it as scratch space).
        """
        if not self._sorted:
            grad = grad.index_select(0, self._order)
        parts = grad.split_with_sizes(self._counts)
        groups = zip(self.groups, tape, parts, self._taped_params, self._grad_blocks)
        for group, entry, G, p, d in groups:
            if group.steps:
                self._recurrent_backward(group, entry, G, p, d)
            elif group.hidden == 0:
                (X,) = entry
                torch.bmm(X.transpose(1, 2), G, out=d["w"])
                torch.sum(G, dim=1, keepdim=True, out=d["b"])
            else:
                X, hidden = entry
                torch.bmm(hidden.transpose(1, 2), G, out=d["w2"])
                torch.sum(G, dim=1, keepdim=True, out=d["b2"])
                dpre = torch.bmm(G, p["w2"].transpose(1, 2))
                dpre.mul_(torch.addcmul(self._one, hidden, hidden, value=-1.0))
                torch.bmm(X.transpose(1, 2), dpre, out=d["w1"])
                torch.sum(dpre, dim=1, keepdim=True, out=d["b1"])
        return self._grad

    def _recurrent_backward(
        self,
        group: _Group,
        entry: tuple[Any, ...],
        G: torch.Tensor,
        p: dict[str, torch.Tensor],
        d: dict[str, torch.Tensor],
    ) -> None:
        sequence, steps, last = entry
        count, n = G.shape[0], G.shape[1]
        H = group.hidden
        torch.bmm(last.transpose(1, 2), G, out=d["w2"])
        torch.sum(G, dim=1, keepdim=True, out=d["b2"])
        dstate = torch.bmm(G, p["w2"].transpose(1, 2))
        dgates_x = sequence.new_empty((count, n, group.steps, 3 * H))
        d["wh"].zero_()
        d["bh"].zero_()
        wh_t = p["wh"].transpose(1, 2)
        for step in range(group.steps - 1, -1, -1):
            state, reset, update, gh_fresh, candidate = steps[step]
            dgx = dgates_x[:, :, step]
            dr, du, dfresh = dgx.split_with_sizes((H, H, H), dim=2)
            # state' = candidate + update * (state - candidate)
            one = self._one
            torch.mul(dstate, state - candidate, out=du)
            du.mul_(torch.addcmul(update, update, update, value=-1.0))
            torch.mul(dstate, torch.sub(one, update), out=dfresh)
            dfresh.mul_(torch.addcmul(one, candidate, candidate, value=-1.0))
            torch.mul(dfresh, gh_fresh, out=dr)
            dr.mul_(torch.addcmul(reset, reset, reset, value=-1.0))
            dgh = torch.cat([dr, du, dfresh * reset], dim=2)
            d["bh"].add_(dgh.sum(dim=1, keepdim=True))
            if step:
                d["wh"].baddbmm_(state.transpose(1, 2), dgh)
                dstate = torch.baddbmm(dstate * update, dgh, wh_t)
        flat_gates = dgates_x.view(count, n * group.steps, 3 * H)
        torch.bmm(sequence.transpose(1, 2), flat_gates, out=d["wx"])
        torch.sum(flat_gates, dim=1, keepdim=True, out=d["bx"])

    def step(self) -> None:
        """Apply the gradient accumulated in the flat vector."""
        self.optimizer.step()

    def lr(self, name: str) -> float:
        """The learning rate expert ``name`` uses now."""
        group, slot = self._locate(name)
        offset, shape = next(iter(group.params.values()))
        return float(self.optimizer.lr[offset + slot * math.prod(shape)])

    def set_lr(self, name: str, lr: float) -> None:
        """Make expert ``name`` learn with step size ``lr``."""
        group, slot = self._locate(name)
        for offset, shape in group.params.values():
            size = math.prod(shape)
            start = offset + slot * size
            self.optimizer.set_lr(start, start + size, lr)

    def per_element(self, values: np.ndarray) -> torch.Tensor:
        """A float32 vector over the flat weights holding each expert's value."""
        out = torch.zeros(self.flat.shape)
        for group in self.groups:
            for offset, shape in group.params.values():
                size = math.prod(shape)
                for slot, index in enumerate(group.members):
                    start = offset + slot * size
                    out[start : start + size] = float(values[index])
        return out

    def set_lrs(self, lrs: np.ndarray) -> None:
        """Give every expert its step size (``lrs`` in spec order)."""
        self.optimizer.lr = self.per_element(lrs)

    def spec(self, name: str) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape of expert ``name``'s head."""
        group, _ = self._locate(name)
        return {pname: shape for pname, (_, shape) in group.params.items()}

    def export(self, name: str) -> dict[str, np.ndarray]:
        """Float32 copies of expert ``name``'s head parameters."""
        return {
            pname: tensor.detach().numpy().copy()
            for pname, tensor in self._slices(name).items()
        }

    @torch.no_grad()
    def blend(self, name: str, params: dict[str, np.ndarray], factor: float) -> None:
        """``own = (1 - factor) own + factor params``; inputs must be checked.

        A weight equal to its peer's stays bit for bit as it was, so that
        blending in an expert's own weights changes nothing.
        """
        for pname, tensor in self._slices(name).items():
            other = torch.from_numpy(np.array(params[pname], dtype=np.float32))
            mixed = tensor * (1.0 - factor) + other * factor
            tensor.copy_(torch.where(other == tensor, tensor, mixed))

    def nbytes(self) -> int:
        """Bytes held by the weights and the optimiser state."""
        return 4 * self.flat.numel() * 5

    def state_dict(self) -> dict[str, Any]:
        """Weights and optimiser state, as tensors."""
        return {
            "flat": self.flat.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        flat = state["flat"]
        if not isinstance(flat, torch.Tensor) or flat.shape != self.flat.shape:
            raise LearnerError("saved expert weights do not match this bank's layout")
        with torch.no_grad():
            self.flat.copy_(flat)
        self.optimizer.load_state_dict(state["optimizer"])
