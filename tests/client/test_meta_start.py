"""A client that joins a running federation starts from its meta-parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfhfe_node.client.daemon import ClientNode
from sfhfe_node.config import settings_for
from sfhfe_node.coordinator.app import CoordinatorConfig
from sfhfe_node.coordinator.store import Store
from tests.client.test_daemon import make_stream
from tests.coordinator.helpers import running


async def test_meta_is_fetched_before_the_first_batch(tmp_path: Path) -> None:
    """The coordinator's latest version is pending before any record is learned."""
    database = tmp_path / "server" / "coordinator.sqlite3"
    database.parent.mkdir()
    store = Store(database)
    document = {
        "version": 7,
        "learning_rates": {"temporal": 0.004},
        "router_priors": {"temporal": 0.9},
    }
    store.save_meta(7, document, "test")
    store.close()
    stream = tmp_path / "s.csv"
    make_stream(stream, np.random.default_rng(5).integers(0, 2, size=64))
    config = CoordinatorConfig(host="127.0.0.1", port=0, state_dir=tmp_path / "server")
    async with running(config) as url:
        node = ClientNode(
            settings_for(
                "client",
                server=url,
                stream=f"csv:{stream}",
                target="y",
                listen="127.0.0.1:0",
                state_dir=str(tmp_path / "client"),
                discovery_interval="0",
            )
        )
        try:
            await node._start()
            assert node.meta_version == 7
            assert node.session.pending_meta == document
        finally:
            await node._shutdown()
