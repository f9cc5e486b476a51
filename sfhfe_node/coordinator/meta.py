"""Meta-parameters learnt from insights alone.

The coordinator sees no data, only each node's reports: for every expert, the
learning rate the node used and how much the expert's loss fell at that rate
over the window. :class:`MetaLearner` turns the population of those reports
into per-expert learning rates and router priors.

Learning rates follow a population-based rule, after Jaderberg et al. (2017),
"Population Based Training of Neural Networks": for each expert, every node's
latest report gives a pair (lr, improvement) with
``improvement = (loss_start - loss_end) / max(loss_start, eps)``. Nodes are
ranked by improvement; the population rate is the geometric mean of the rates
used by the top quantile ("exploit"), clipped to ``[lr_floor, lr_ceiling]``.
That is what ``GET /v1/meta`` serves. Each node's upload reply carries the
population rates multiplied, per expert, by a factor drawn from ``explore``
and seeded by the seed, the version, the node and the expert
(:meth:`MetaLearner.for_node`): the members of the population try rates
around the best one, as PBT's "explore" step does, and their next reports say
which of those rates worked, which the next "exploit" step picks up. Without
that spread every node would run the same rate and the ranking would have
nothing to choose from.

Router priors measure each expert's usefulness across the population: each
node's ``loss_end`` and ``usage`` of an expert are averaged over its reports
(exponential moving average, weight ``smoothing``), and the usage-weighted
mean over nodes gives a population loss ``L``; the priors are
``softmax(-L / (temperature * mean(L)))`` divided by their maximum, so the
most useful expert gets 1.0 and the others a share in [0, 1]. The temperature
is relative to the mean loss, so one setting separates experts alike
whatever scale the task's loss has.

Limitation, measured by ``scripts/bench_meta.py`` (four Elec2 shares, meta
applied against ignored): the meta-parameters moved the mean prequential
accuracy by -0.16 to +0.52 points across the variants and runs tried, of the
order of the run-to-run spread, and neither the rates alone nor the priors
alone gained anything; see ``docs/coordinator.md``. A temperature of 1.0 in
absolute loss units, tried first, gave priors between 0.65 and 1.0 and no
effect at all; the relative temperature and the smoothing of each node's
losses came from that measurement.

A new version is made only when a trigger fires, at least one new insight
arrived since the previous version and at least ``min_interval`` seconds
passed since it (so hundreds of clients cannot make a version per upload):
``min_samples`` new insights, or
``max_interval`` seconds, or a share of nodes reporting ``drift.active``, or a
drop of the population's mean window accuracy (or a rise of its mean window
loss) since the previous version.

Limitations: losses are compared across nodes as reported, so nodes whose
tasks measure loss on different scales weigh unevenly in the priors; and a
node that reports false improvements can pull a rate within the clipping
bounds (clients clamp each change to +-50 %).

Example::

    >>> learner = MetaLearner(min_samples=1, seed=3)
    >>> learner.current.version
    0
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sfhfe_node.wire.insight import MAX_EXPERTS, validate_meta

__all__ = ["MetaParams", "MetaLearner", "TRIGGERS"]

TRIGGERS = ("drift", "performance", "samples", "time")


@dataclass(frozen=True)
class MetaParams:
    """One version of the meta-parameters sent to clients.

    ``version`` 0 with empty maps means "nothing learnt yet".
    """

    version: int = 0
    learning_rates: Mapping[str, float] = field(default_factory=dict)
    router_priors: Mapping[str, float] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        """The meta document of the wire format."""
        return {
            "version": self.version,
            "learning_rates": dict(self.learning_rates),
            "router_priors": dict(self.router_priors),
        }

    @classmethod
    def from_document(cls, data: Any) -> MetaParams:
        """Build from a meta document, checking it; raises ``InsightError``."""
        clean = validate_meta(data)
        return cls(
            clean["version"], clean["learning_rates"], clean["router_priors"]
        )


@dataclass(frozen=True)
class _Expert:
    lr: float
    improvement: float
    loss_end: float
    usage: float


@dataclass(frozen=True)
class _Report:
    seq: int
    experts: dict[str, _Expert]
    drift_active: bool
    loss: float
    accuracy: float | None


class MetaLearner:
    """Learn per-expert learning rates and router priors from insights.

    Free of I/O: feed it validated insights with :meth:`observe` and ask for a
    new version with :meth:`maybe_update`, passing the current time.

    Parameters:
        min_samples: new insights that trigger a version (default 20). Lower
            reacts faster; higher averages over more reports.
        max_interval: seconds after which any new insight triggers a version
            (default 300.0), so a small federation still gets updates.
        min_interval: fewest seconds between two versions made by this
            learner (default 1.0; 0 disables). Higher saves store writes
            under heavy load; the triggers wait, they are not lost.
        drift_share: share of nodes whose latest report has ``drift.active``
            that triggers a version (default 0.3). It fires once when the
            share crosses the threshold and re-arms when it falls below.
        min_drift_nodes: fewest drifting nodes for the drift trigger
            (default 2), so one node cannot set it off alone.
        accuracy_drop: fall of the mean window accuracy, in accuracy points,
            since the previous version that triggers one (default 0.1).
        loss_rise: relative rise of the mean window loss since the previous
            version that triggers one (default 0.25, i.e. +25 %).
        top_quantile: share of nodes, ranked by improvement, whose rates are
            exploited (default 0.25, at least one node). Lower follows the
            best nodes more closely; higher is more robust to noise.
        explore: factors a node's rate is multiplied by, one drawn per node,
            expert and version (default (0.8, 1.0, 1.25)). Wider explores
            more at the cost of noise; ``(1.0,)`` turns exploration off.
        lr_floor, lr_ceiling: bounds of every rate (default 1e-5 and 1.0;
            the wire format allows (0, 10]).
        temperature: softmax temperature of the priors, as a share of the
            mean expert loss (default 0.3). Lower separates experts more
            sharply and trusts the population's ranking more.
        smoothing: weight of a node's newest report in its running averages
            of each expert's loss and usage, which the priors are built from
            (default 0.2; 1.0 uses the latest window alone). Lower is
            steadier and slower to follow a change.
        eps: guard of the improvement's denominator (default 1e-12).
        max_nodes: nodes whose latest report is kept (default 10000); the
            node heard from least recently is forgotten first.
        seed: seed of the explore draws (default 0).
    """

    def __init__(
        self,
        *,
        min_samples: int = 20,
        max_interval: float = 300.0,
        min_interval: float = 1.0,
        drift_share: float = 0.3,
        min_drift_nodes: int = 2,
        accuracy_drop: float = 0.1,
        loss_rise: float = 0.25,
        top_quantile: float = 0.25,
        explore: tuple[float, ...] = (0.8, 1.0, 1.25),
        lr_floor: float = 1e-5,
        lr_ceiling: float = 1.0,
        temperature: float = 0.3,
        smoothing: float = 0.2,
        eps: float = 1e-12,
        max_nodes: int = 10_000,
        seed: int = 0,
    ) -> None:
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if max_interval <= 0:
            raise ValueError(f"max_interval must be > 0, got {max_interval}")
        if not 0 <= min_interval <= max_interval:
            raise ValueError(
                f"need 0 <= min_interval <= max_interval, got {min_interval}"
            )
        if not 0 < drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], got {drift_share}")
        if not 0 < top_quantile <= 1:
            raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
        if not explore or any(f <= 0 or not math.isfinite(f) for f in explore):
            raise ValueError(f"explore factors must be positive, got {explore}")
        if not 0 < lr_floor <= lr_ceiling <= 10:
            raise ValueError(
                f"need 0 < lr_floor <= lr_ceiling <= 10, got {lr_floor}, {lr_ceiling}"
            )
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if temperature <= 0 or eps <= 0 or max_nodes < 1:
            raise ValueError(
                "temperature, eps and max_nodes must be positive, got "
                f"{temperature}, {eps}, {max_nodes}"
            )
        self.min_samples = min_samples
        self.max_interval = max_interval
        self.min_interval = min_interval
        self.drift_share = drift_share
        self.min_drift_nodes = min_drift_nodes
        self.accuracy_drop = accuracy_drop
        self.loss_rise = loss_rise
        self.top_quantile = top_quantile
        self.explore = tuple(explore)
        self.lr_floor = lr_floor
        self.lr_ceiling = lr_ceiling
        self.temperature = temperature
        self.smoothing = smoothing
        self.eps = eps
        self.max_nodes = max_nodes
        self.seed = seed
        self._current = MetaParams()
        self._reports: dict[str, _Report] = {}
        self._pending = 0
        self._last_time: float | None = None
        self._last_version: float | None = None
        self._drift_armed = True
        self._baseline_loss: float | None = None
        self._baseline_accuracy: float | None = None
        self.last_trigger: str | None = None

    @property
    def current(self) -> MetaParams:
        """The latest meta-parameters."""
        return self._current

    @property
    def pending(self) -> int:
        """New insights observed since the latest version."""
        return self._pending

    @property
    def population(self) -> int:
        """Nodes whose latest report is held."""
        return len(self._reports)

    def observe(self, insight: Mapping[str, Any]) -> None:
        """Take one new validated insight into account.

        A report older than the node's held one (lower ``seq``) still counts
        as a new sample but does not replace the newer report.
        """
        self._pending += 1
        self._remember(insight)

    def maybe_update(self, now: float) -> MetaParams | None:
        """Make a new version if a trigger fires; otherwise return ``None``.

        ``now`` is the current time in seconds; only differences matter.
        """
        if self._last_time is None:
            self._last_time = now
        if self._last_version is not None and now - self._last_version < (
            self.min_interval
        ):
            return None
        trigger = self._trigger(now)
        if trigger is None:
            return None
        params = self.propose(self._current.version + 1)
        if params is None:
            return None
        self._current = params
        self.last_trigger = trigger
        self._last_version = now
        self._mark(now)
        return params

    def propose(self, version: int) -> MetaParams | None:
        """Compute meta-parameters from the held reports, as ``version``.

        Returns ``None`` when no node reported an expert that learnt from
        any record. Does not change the learner.
        """
        table = self._expert_table()
        if not table:
            return None
        rates = {name: self._rate(rows) for name, rows in table.items()}
        return MetaParams(version, rates, self._priors(table))

    def for_node(self, params: MetaParams, node_id: str) -> MetaParams:
        """``params`` with the rates spread around for one node (explore).

        Deterministic: the same seed, version, node and expert always give
        the same factor. Priors and version are unchanged.
        """
        if len(self.explore) == 1 and self.explore[0] == 1.0:
            return params
        rates = {}
        for name, rate in params.learning_rates.items():
            key = f"{self.seed}:{params.version}:{node_id}:{name}".encode()
            digest = hashlib.blake2b(key, digest_size=8).digest()
            factor = self.explore[int.from_bytes(digest, "big") % len(self.explore)]
            rates[name] = min(max(rate * factor, self.lr_floor), self.lr_ceiling)
        return MetaParams(params.version, rates, params.router_priors)

    def resume(
        self, params: MetaParams, insights: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Start again from a saved version and the nodes' latest insights.

        The insights restore the population without counting as new samples,
        so a restart does not by itself make a new version.
        """
        self._current = params
        self._reports.clear()
        for insight in insights:
            self._remember(insight)
        self._mark(None)

    # Triggers.

    def _trigger(self, now: float) -> str | None:
        if self._pending == 0:
            return None
        share = self._drift_share()
        if share < self.drift_share:
            self._drift_armed = True
        elif self._drift_armed and self._drifting() >= self.min_drift_nodes:
            return "drift"
        if self._worse():
            return "performance"
        if self._pending >= self.min_samples:
            return "samples"
        if self._last_time is not None and now - self._last_time >= self.max_interval:
            return "time"
        return None

    def _drifting(self) -> int:
        return sum(report.drift_active for report in self._reports.values())

    def _drift_share(self) -> float:
        return self._drifting() / len(self._reports) if self._reports else 0.0

    def _worse(self) -> bool:
        loss, accuracy = self._means()
        if self._baseline_accuracy is not None and accuracy is not None:
            if self._baseline_accuracy - accuracy >= self.accuracy_drop:
                return True
        if self._baseline_loss is not None and loss is not None:
            return loss > self._baseline_loss * (1 + self.loss_rise) + self.eps
        return False

    def _means(self) -> tuple[float | None, float | None]:
        losses = [r.loss for r in self._reports.values()]
        accuracies = [
            r.accuracy for r in self._reports.values() if r.accuracy is not None
        ]
        loss = sum(losses) / len(losses) if losses else None
        accuracy = sum(accuracies) / len(accuracies) if accuracies else None
        return loss, accuracy

    def _mark(self, now: float | None) -> None:
        self._pending = 0
        self._last_time = now
        self._baseline_loss, self._baseline_accuracy = self._means()
        self._drift_armed = self._drift_share() < self.drift_share

    # The rule.

    def _remember(self, insight: Mapping[str, Any]) -> None:
        node_id = insight["node_id"]
        held = self._reports.get(node_id)
        if held is not None and held.seq > insight["seq"]:
            return
        before = held.experts if held is not None else {}
        experts = {}
        for name, stats in insight["experts"].items():
            if stats["samples"] <= 0:
                continue
            loss, usage = stats["loss_end"], stats["usage"]
            if name in before:
                # Priors follow each node's long-run losses, not one window.
                keep = 1.0 - self.smoothing
                loss = keep * before[name].loss_end + self.smoothing * loss
                usage = keep * before[name].usage + self.smoothing * usage
            experts[name] = _Expert(
                lr=stats["lr"],
                improvement=(stats["loss_start"] - stats["loss_end"])
                / max(stats["loss_start"], self.eps),
                loss_end=loss,
                usage=usage,
            )
        window = insight["window"]
        self._reports.pop(node_id, None)
        self._reports[node_id] = _Report(
            seq=insight["seq"],
            experts=experts,
            drift_active=bool(insight["drift"]["active"]),
            loss=window["loss"],
            accuracy=window["accuracy"],
        )
        while len(self._reports) > self.max_nodes:
            del self._reports[next(iter(self._reports))]

    def _expert_table(self) -> dict[str, list[_Expert]]:
        table: dict[str, list[_Expert]] = {}
        for report in self._reports.values():
            for name, expert in report.experts.items():
                table.setdefault(name, []).append(expert)
        # The wire format carries at most MAX_EXPERTS names: keep the most
        # widely reported ones.
        names = sorted(table, key=lambda name: (-len(table[name]), name))
        return {name: table[name] for name in sorted(names[:MAX_EXPERTS])}

    def _rate(self, rows: list[_Expert]) -> float:
        ranked = sorted(rows, key=lambda row: row.improvement, reverse=True)
        top = ranked[: max(1, math.ceil(self.top_quantile * len(ranked)))]
        base = math.exp(sum(math.log(row.lr) for row in top) / len(top))
        return min(max(base, self.lr_floor), self.lr_ceiling)

    def _priors(self, table: dict[str, list[_Expert]]) -> dict[str, float]:
        losses = {}
        for name, rows in table.items():
            weight = sum(row.usage for row in rows)
            if weight > 0:
                losses[name] = sum(row.usage * row.loss_end for row in rows) / weight
            else:
                losses[name] = sum(row.loss_end for row in rows) / len(rows)
        scale = self.temperature * max(sum(losses.values()) / len(losses), self.eps)
        scores = {name: -loss / scale for name, loss in losses.items()}
        top = max(scores.values())
        # Dividing the softmax by its maximum is exp(score - top).
        return {name: math.exp(score - top) for name, score in scores.items()}
