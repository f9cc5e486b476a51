"""Meta-parameters learnt from insights alone.

The coordinator sees no data, only each node's reports: for every expert, the
learning rate the node used and how much the expert's loss fell at that rate
over the window. :class:`MetaLearner` turns the population of those reports
into per-expert learning rates and router priors.

Learning rates follow population-based training, after Jaderberg et al.
(2017), "Population Based Training of Neural Networks", with the coordinator
running the experiment. The first time an expert is seen, its population rate
is the geometric mean of the rates reported by the top quantile of nodes
ranked by ``improvement = (loss_start - loss_end) / max(loss_start, eps)``
(early reports carry the clients' defaults). From then on the coordinator
owns the rate: each node's upload reply carries the population rate times
one factor of ``explore`` per expert (:meth:`MetaLearner.for_node`; the
factor rotates with the version, so every node tries every factor in turn,
and the coordinator remembers which factor it sent). Each later report of
the node is credited to that factor: the expert's improvement minus the
median improvement of all the node's experts in the same window, which
removes what the window's data did to every expert alike. Once every factor
of an expert has ``evidence`` credited reports, the rate moves by the factor
whose mean gain is highest, if it beats the current rate's (factor 1.0) by
more than ``margin`` standard errors, and the expert's evidence starts
afresh. The rates that nodes report are not fed back as the population rate
after the first version: they include the client's own schedule multiplier
(0.25 to 4, 0 while frozen), and feeding them back compounded that
multiplier version after version (measured: the drift expert's base rate
went from 0.03 to 0.13-0.30 in one run).

Router priors measure each expert's usefulness across the population: each
node's ``loss_end`` and ``usage`` of an expert are averaged over its reports
(exponential moving average, weight ``smoothing``), and the usage-weighted
mean over nodes gives a population loss ``L``; the priors are
``softmax(-L / (temperature * mean(L)))`` divided by their maximum, so the
most useful expert gets 1.0 and the others a share in [0, 1]. The temperature
is relative to the mean loss, so one setting separates experts alike
whatever scale the task's loss has.

Measured by ``scripts/bench_meta.py`` (four Elec2 shares, meta applied
against ignored, both arms on one frozen copy of the code; tables in
``docs/coordinator.md``): this rule gained +0.03 to +0.26 accuracy points in
each of twelve paired runs (about +0.1 on average, most of it from the
priors; the rates alone stay within their spread), and the early first
version cut node 3's records to the loss level from 675 to 601-631. The
previous rule, which fed the reported rates back, gained nothing (-0.05). A
temperature of 1.0 in absolute loss units, tried before, gave priors between
0.65 and 1.0 and no effect at all; the relative temperature and the
smoothing of each node's losses came from that measurement.

A new version is made only when a trigger fires, at least one new insight
arrived since the previous version and at least ``min_interval`` seconds
passed since it (so hundreds of clients cannot make a version per upload):
``min_samples`` new insights (``first_samples`` for the first version), or
``max_interval`` seconds, or a share of nodes reporting ``drift.active``, or a
drop of the population's mean window accuracy (or a rise of its mean window
loss) since the previous version.

Limitations: losses are compared across nodes as reported, so nodes whose
tasks measure loss on different scales weigh unevenly in the priors; a node
that reports false improvements can pull a rate by one factor per decision
(clients clamp each change to +-50 %); the factor a node was sent is kept in
memory only, so after a restart reports are credited again from the next
reply on; and a report is credited to the factor of the node's latest reply,
although the client applies it from its next batch, so the first window
after a new version is partly credited to the new factor.

Example::

    >>> learner = MetaLearner(min_samples=1, seed=3)
    >>> learner.current.version
    0
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sfhfe_node.wire.insight import MAX_EXPERTS, validate_meta

__all__ = ["TRIGGERS", "MetaLearner", "MetaParams"]

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
        top_quantile: share of nodes, ranked by improvement, whose reported
            rates give an expert's first population rate (default 0.25, at
            least one node). Lower follows the best nodes more closely;
            higher is more robust to noise.
        explore: factors a node's rate is multiplied by, one per node,
            expert and version, rotating with the version (default (0.7,
            1.0, 1.4): within the clients' +-50 % step, so a node reaches
            its factor in one update). Include 1.0, the current rate, to
            compare against; wider explores more at the cost of noise;
            ``(1.0,)`` turns exploration and rate moves off.
        evidence: credited reports every factor of an expert needs before
            the expert's rate may move (default 12). Higher moves less often
            and less by chance.
        margin: standard errors by which the best factor's mean gain must
            beat the current rate's to move the rate (default 1.0). Higher
            moves only on clearer evidence; 0 follows the best mean.
        first_samples: new insights that make the first version (default 4),
            so a federation gets priors and rates early; later versions need
            ``min_samples``.
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
        explore: tuple[float, ...] = (0.7, 1.0, 1.4),
        evidence: int = 12,
        margin: float = 1.0,
        first_samples: int = 4,
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
        if margin < 0 or not math.isfinite(margin):
            raise ValueError(f"margin must be >= 0, got {margin}")
        if evidence < 1 or first_samples < 1:
            raise ValueError(
                f"evidence and first_samples must be >= 1, got {evidence}, "
                f"{first_samples}"
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
        self.evidence = evidence
        self.margin = margin
        self.first_samples = first_samples
        self.lr_floor = lr_floor
        self.lr_ceiling = lr_ceiling
        self.temperature = temperature
        self.smoothing = smoothing
        self.eps = eps
        self.max_nodes = max_nodes
        self.seed = seed
        self._current = MetaParams()
        self._reports: dict[str, _Report] = {}
        # The factor each node was last sent per expert, and per expert and
        # factor the sum and count of the relative gains seen under it.
        self._assigned: dict[str, dict[str, float]] = {}
        self._gains: dict[str, dict[float, list[float]]] = {}
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
        self._settle()
        self.last_trigger = trigger
        self._last_version = now
        self._mark(now)
        return params

    def propose(self, version: int) -> MetaParams | None:
        """Compute meta-parameters from the held reports, as ``version``.

        An expert seen for the first time gets the geometric mean of the
        rates reported by the nodes that improved it most; an expert with a
        rate already moves by the factor whose nodes gained most, once every
        factor has ``evidence`` reports and the winner is clear
        (:meth:`_best_factor`). Returns ``None`` when no node reported an
        expert that learnt from any record. Does not change the learner.
        """
        table = self._expert_table()
        if not table:
            return None
        rates = {}
        for name, rows in table.items():
            held = self._current.learning_rates.get(name)
            rate = self._rate(rows) if held is None else held * self._best_factor(name)
            rates[name] = min(max(rate, self.lr_floor), self.lr_ceiling)
        return MetaParams(version, rates, self._priors(table))

    def for_node(self, params: MetaParams, node_id: str) -> MetaParams:
        """``params`` with the rates spread around for one node (explore).

        Each expert's rate is multiplied by one of the ``explore`` factors;
        the factor a node gets rotates with the version, so every node tries
        every factor in turn. The factors are remembered, and the node's next
        reports are credited to them. Deterministic: the same seed, version,
        node and expert always give the same factor. Priors and version are
        unchanged.
        """
        if len(self.explore) == 1 and self.explore[0] == 1.0:
            return params
        rates, factors = {}, {}
        for name, rate in params.learning_rates.items():
            key = f"{self.seed}:{node_id}:{name}".encode()
            digest = hashlib.blake2b(key, digest_size=8).digest()
            turn = int.from_bytes(digest, "big") + params.version
            factor = self.explore[turn % len(self.explore)]
            factors[name] = factor
            rates[name] = min(max(rate * factor, self.lr_floor), self.lr_ceiling)
        if params.version == self._current.version:
            self._assigned.pop(node_id, None)
            self._assigned[node_id] = factors
            while len(self._assigned) > self.max_nodes:
                del self._assigned[next(iter(self._assigned))]
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
        self._assigned.clear()
        self._gains.clear()
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
        first = self._current.version == 0 and self._pending >= self.first_samples
        if first or self._pending >= self.min_samples:
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
        if held is not None:
            self._credit(node_id, experts)
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

    def _credit(self, node_id: str, experts: dict[str, _Expert]) -> None:
        # A window's data moves every expert's loss alike; what an expert
        # gained beyond the node's median expert is what its rate did.
        assigned = self._assigned.get(node_id)
        if not assigned:
            return
        gains = [expert.improvement for expert in experts.values()]
        middle = statistics.median(gains) if len(gains) > 1 else 0.0
        for name, expert in experts.items():
            factor = assigned.get(name)
            if factor is None:
                continue
            gain = expert.improvement - middle
            cell = self._gains.setdefault(name, {}).setdefault(factor, [0.0, 0.0, 0])
            cell[0] += gain
            cell[1] += gain * gain
            cell[2] += 1

    def _decided(self, name: str) -> bool:
        cells = self._gains.get(name, {})
        return all(
            factor in cells and cells[factor][2] >= self.evidence
            for factor in self.explore
        )

    def _best_factor(self, name: str) -> float:
        """The factor whose nodes gained most, if clearly better than 1.0.

        Clearly: its mean gain exceeds that of the current rate by more than
        ``margin`` standard errors of the difference. Otherwise 1.0.
        """
        if len(self.explore) == 1 or not self._decided(name):
            return 1.0
        cells = self._gains[name]
        stats = {factor: _mean_and_error(*cells[factor]) for factor in self.explore}
        best = max(self.explore, key=lambda factor: stats[factor][0])
        if 1.0 not in stats:
            return best
        if best == 1.0:
            return 1.0
        (mean, error), (base, base_error) = stats[best], stats[1.0]
        if mean - base <= self.margin * math.hypot(error, base_error):
            return 1.0
        return best

    def _settle(self) -> None:
        # A decided expert starts collecting evidence afresh at its new rate.
        for name in [name for name in self._gains if self._decided(name)]:
            del self._gains[name]

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


def _mean_and_error(total: float, squares: float, count: float) -> tuple[float, float]:
    """Mean and standard error from a sum, a sum of squares and a count."""
    mean = total / count
    variance = max(squares / count - mean * mean, 0.0)
    return mean, math.sqrt(variance / max(count - 1, 1))
