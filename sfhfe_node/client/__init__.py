"""The client node: stream, learner, uplink to the coordinator, gossip, local API."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientNode", "run_client"]


def __getattr__(name: str) -> Any:
    # The daemon pulls in torch; import it only when it is asked for.
    if name in __all__:
        from sfhfe_node.client import daemon

        return getattr(daemon, name)
    raise AttributeError(name)
