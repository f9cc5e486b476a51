"""Three-tier replay memory and elastic weight consolidation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["TIERS", "Consolidation", "TieredMemory"]

TIERS = ("recent", "latent", "anchors")


class TieredMemory:
    """Bounded replay memory: recent rows, compressed codes, critical anchors.

    Every tier holds rows as fixed-width float32 arrays, so its size is a
    hard bound known at construction:

    - ``recent``: the last ``recent`` rows, first in first out, each the
      standardised window the temporal expert saw, the record's trend
      features, the label context and the target;
    - ``latent``: a reservoir sample (Vitter's algorithm R, over every row
      offered) of compressed rows, each an autoencoder code, the trend
      features, the previous label and the target;
    - ``anchors``: the ``anchors`` rows with the highest loss, whose scores
      decay by ``anchor_decay`` per batch so that stale anchors give way.

    :meth:`sample` draws a replay batch mixing the tiers by ``mix``.

    Parameters:
        row_width: floats per full row; code_width: floats per code row.
        recent, latent, anchors: capacity of each tier in rows (defaults
            512, 512 and 128).
        mix: share of a replay batch drawn from each tier (default 0.5,
            0.25, 0.25); an empty tier's share goes to the others.
        anchor_decay: per-batch decay of anchor scores (default 0.995).
        generator: seeded source of the reservoir and replay draws.
    """

    def __init__(
        self,
        row_width: int,
        code_width: int,
        *,
        recent: int = 512,
        latent: int = 512,
        anchors: int = 128,
        mix: tuple[float, float, float] = (0.5, 0.25, 0.25),
        anchor_decay: float = 0.995,
        generator: torch.Generator,
    ) -> None:
        if min(recent, latent, anchors) < 1 or len(mix) != 3 or min(mix) < 0:
            raise LearnerError("memory tiers need positive sizes and three shares")
        self.capacity = {"recent": recent, "latent": latent, "anchors": anchors}
        self.mix = tuple(float(m) for m in mix)
        self.anchor_decay = anchor_decay
        self.generator = generator
        self.rows = {
            "recent": np.zeros((0, row_width), dtype=np.float32),
            "latent": np.zeros((0, code_width), dtype=np.float32),
            "anchors": np.zeros((0, row_width), dtype=np.float32),
        }
        self.anchor_scores = np.zeros(0)
        self.offered = 0
        self.replayed = 0

    def sizes(self) -> dict[str, int]:
        """Rows held per tier."""
        return {tier: len(rows) for tier, rows in self.rows.items()}

    def nbytes(self) -> int:
        """Bytes held by the rows."""
        return sum(rows.nbytes for rows in self.rows.values())

    def add(self, full: np.ndarray, codes: np.ndarray, losses: np.ndarray) -> None:
        """Offer rows: ``full`` [n, row_width], ``codes`` [n, code_width], losses."""
        full = full.astype(np.float32)
        recent = np.concatenate([self.rows["recent"], full])
        self.rows["recent"] = recent[-self.capacity["recent"] :]
        self._reservoir(codes.astype(np.float32))
        self._anchor(full, np.nan_to_num(losses, nan=0.0, posinf=0.0))

    def _reservoir(self, codes: np.ndarray) -> None:
        held = self.rows["latent"]
        limit = self.capacity["latent"]
        n = len(codes)
        positions = self.offered + np.arange(n)
        draws = torch.rand(n, generator=self.generator, dtype=torch.float64).numpy()
        slots = np.floor(draws * (positions + 1)).astype(np.int64)
        room = max(limit - len(held), 0)
        if room:
            held = np.concatenate([held, codes[:room]])
        later = np.flatnonzero(slots[room:] < limit) + room
        held[slots[later]] = codes[later]  # a repeated slot keeps the last row
        self.rows["latent"] = held
        self.offered += n

    def _anchor(self, full: np.ndarray, losses: np.ndarray) -> None:
        decayed = self.anchor_scores * self.anchor_decay
        if len(decayed) >= self.capacity["anchors"]:
            # a full tier keeps its rows on ties, so only rows above its
            # lowest score can enter; most batches offer none
            entering = losses > decayed.min()
            if not entering.any():
                self.anchor_scores = decayed
                return
            full, losses = full[entering], losses[entering]
        scores = np.concatenate([decayed, losses])
        rows = np.concatenate([self.rows["anchors"], full])
        keep = np.argsort(-scores, kind="stable")[: self.capacity["anchors"]]
        keep.sort()
        self.anchor_scores = scores[keep]
        self.rows["anchors"] = rows[keep]

    def sample(self, size: int) -> dict[str, np.ndarray]:
        """A replay draw of about ``size`` rows, keyed by tier (with replacement)."""
        held = self.sizes()
        shares = np.array([m if held[t] else 0.0 for t, m in zip(TIERS, self.mix)])
        if shares.sum() <= 0 or size <= 0:
            return {tier: rows[:0] for tier, rows in self.rows.items()}
        counts = np.floor(shares / shares.sum() * size + 0.5).astype(np.int64)
        drawn = {}
        for tier, count in zip(TIERS, counts.tolist()):
            if not count:
                drawn[tier] = self.rows[tier][:0]
                continue
            pick = torch.randint(held[tier], (count,), generator=self.generator)
            drawn[tier] = self.rows[tier][pick.numpy()]
        self.replayed += int(counts.sum())
        return drawn

    def state_dict(self) -> dict[str, Any]:
        """Every tier's rows, anchor scores and counters."""
        return {
            "rows": {t: torch.from_numpy(r.copy()) for t, r in self.rows.items()},
            "anchor_scores": torch.from_numpy(self.anchor_scores.copy()),
            "offered": self.offered,
            "replayed": self.replayed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        rows = {}
        for tier, current in self.rows.items():
            value = np.asarray(state["rows"][tier], dtype=np.float32)
            if value.ndim != 2 or value.shape[1] != current.shape[1]:
                raise LearnerError(f"saved memory tier {tier} has shape {value.shape}")
            if len(value) > self.capacity[tier]:
                raise LearnerError(f"saved memory tier {tier} exceeds its capacity")
            rows[tier] = value.copy()
        scores = np.asarray(state["anchor_scores"], dtype=np.float64).copy()
        if scores.shape != (len(rows["anchors"]),):
            raise LearnerError("saved anchor scores do not match the anchors")
        self.rows = rows
        self.anchor_scores = scores
        self.offered = int(state["offered"])
        self.replayed = int(state["replayed"])


class Consolidation:
    """Elastic weight consolidation over a flat parameter vector.

    A snapshot stores the weights ``theta*`` and a diagonal Fisher estimate
    ``F`` (the optimiser's running mean of squared gradients, normalised to
    mean 1 per snapshot). Afterwards :meth:`penalise` adds
    ``lambda * F * (theta - theta*)`` to the gradient, the gradient of
    ``lambda / 2 * sum F (theta - theta*)^2``, so weights that mattered move
    less. ``lambda`` is a vector: experts outside the consolidated set get 0.

    Parameters:
        strength: the per-element ``lambda`` vector (0 turns EWC off there).

    Reference: Kirkpatrick et al. (2017), "Overcoming catastrophic
    forgetting in neural networks".
    """

    def __init__(self, strength: torch.Tensor) -> None:
        self.strength = strength
        self.anchor: torch.Tensor | None = None
        self.fisher: torch.Tensor | None = None
        self.snapshots = 0

    @torch.no_grad()
    def snapshot(self, params: torch.Tensor, squared_grads: torch.Tensor) -> None:
        """Remember ``params`` and their importance now."""
        fisher = squared_grads / squared_grads.mean().clamp(min=1e-12)
        self.anchor = params.detach().clone()
        self.fisher = (fisher * self.strength).clamp(max=100.0)
        self.snapshots += 1

    @torch.no_grad()
    def penalise(self, params: torch.Tensor) -> None:
        """Add the EWC gradient to ``params.grad`` (no-op before a snapshot)."""
        if self.anchor is None or self.fisher is None or params.grad is None:
            return
        params.grad.addcmul_(self.fisher, params.detach() - self.anchor)

    def state_dict(self) -> dict[str, Any]:
        """Anchor, importance and count."""
        return {
            "anchor": None if self.anchor is None else self.anchor.clone(),
            "fisher": None if self.fisher is None else self.fisher.clone(),
            "snapshots": self.snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for key in ("anchor", "fisher"):
            value = state[key]
            if value is not None and tuple(value.shape) != tuple(self.strength.shape):
                raise LearnerError(f"saved EWC {key} does not match the parameters")
        self.anchor = None if state["anchor"] is None else state["anchor"].clone()
        self.fisher = None if state["fisher"] is None else state["fisher"].clone()
        self.snapshots = int(state["snapshots"])
