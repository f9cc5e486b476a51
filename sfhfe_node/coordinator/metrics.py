"""The coordinator's counters, rendered in the Prometheus text format.

Free of I/O: the application bumps the counters and asks for the text when
``GET /metrics`` is scraped.
"""

from __future__ import annotations

from collections import Counter, deque

__all__ = ["CoordinatorMetrics", "LatencySummary"]

_QUANTILES = (0.5, 0.9, 0.99)


class LatencySummary:
    """Count, sum and quantiles of observed values (durations in seconds).

    Parameters:
        window: how many recent values the quantiles are computed from
            (default 1024). Larger is steadier and costs more memory and
            sorting time per scrape; count and sum cover every duration.
    """

    def __init__(self, window: int = 1024) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.count = 0
        self.total = 0.0
        self._recent: deque[float] = deque(maxlen=window)

    def observe(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        self.total += value
        self._recent.append(value)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the recent durations, ``None`` before any."""
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CoordinatorMetrics:
    """Counters of insight uploads, meta updates, store writes and auth.

    ``store_write`` times each group commit (one transaction, one fsync);
    ``batch_size`` counts the uploads each commit carried.
    """

    def __init__(self) -> None:
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self.meta_updates = 0
        self.meta_save_failures = 0
        self.internal_errors = 0
        self.pruned = 0
        self.store_write = LatencySummary()
        self.batch_size = LatencySummary()

    def reject(self, reason: str) -> None:
        """Count one upload rejected for ``reason``."""
        self.rejected[reason] += 1

    def deny(self, reason: str) -> None:
        """Count one request refused for a ``missing`` or ``wrong`` token."""
        self.auth_failures[reason] += 1

    def render(
        self,
        meta_version: int,
        nodes_known: int,
        nodes_active: int,
        queued: int = 0,
    ) -> str:
        """The Prometheus text exposition of every metric."""
        simple = [
            ("insights_received_total", "counter", "Insight uploads received.",
             self.received),
            ("insights_stored_total", "counter", "New insights stored.", self.stored),
            ("insights_duplicates_total", "counter",
             "Uploads of an insight already stored.", self.duplicates),
            ("meta_version", "gauge", "Version of the meta-parameters served.",
             meta_version),
            ("meta_updates_total", "counter", "Meta-parameter versions made.",
             self.meta_updates),
            ("meta_save_failures_total", "counter",
             "Meta-parameter versions the store failed to save.",
             self.meta_save_failures),
            ("nodes_known", "gauge", "Nodes ever heard from.", nodes_known),
            ("nodes_active", "gauge", "Nodes heard from within the staleness limit.",
             nodes_active),
            ("http_internal_errors_total", "counter",
             "Requests that failed with an unexpected error.", self.internal_errors),
            ("insights_pruned_total", "counter",
             "Insights deleted by the retention limits.", self.pruned),
            ("store_queue_depth", "gauge", "Uploads waiting for the next commit.",
             queued),
        ]
        lines: list[str] = []
        for name, kind, text, value in simple:
            lines += _header("sfhfe_" + name, kind, text)
            lines.append(f"sfhfe_{name} {_number(value)}")

        name = "sfhfe_insights_rejected_total"
        lines += _header(name, "counter", "Uploads rejected, by reason.")
        for reason, count in sorted(self.rejected.items()):
            lines.append(f'{name}{{reason="{_label(reason)}"}} {count}')

        name = "sfhfe_auth_failures_total"
        text = "Requests refused for a missing or wrong token."
        lines += _header(name, "counter", text)
        for reason, count in sorted(self.auth_failures.items()):
            lines.append(f'{name}{{reason="{_label(reason)}"}} {count}')

        summaries = [
            ("store_write_seconds", "Time to commit one batch of insights.",
             self.store_write),
            ("store_batch_size", "Insights committed per transaction.",
             self.batch_size),
        ]
        for short, text, summary in summaries:
            name = "sfhfe_" + short
            lines += _header(name, "summary", text)
            for q in _QUANTILES:
                value = _number(summary.quantile(q))
                lines.append(f'{name}{{quantile="{q}"}} {value}')
            lines.append(f"{name}_sum {_number(summary.total)}")
            lines.append(f"{name}_count {summary.count}")
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _number(value: float | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
