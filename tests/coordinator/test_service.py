"""Tests of the coordinator service: group commit, shutdown and retention."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sfhfe_node.coordinator import Coordinator, CoordinatorState, MetaLearner, Store
from sfhfe_node.errors import InvalidStateError
from tests.conftest import TIMEOUT
from tests.coordinator.helpers import make_insight


def coordinator(tmp_path: Path, **options) -> Coordinator:
    """A coordinator on a fresh file with a meta learner that never waits."""
    learner = MetaLearner(min_samples=1, min_interval=0.0)
    return Coordinator(tmp_path / "c.sqlite3", learner, **options)


async def test_concurrent_uploads_share_commits(tmp_path: Path) -> None:
    """Uploads queued together are committed in fewer transactions than uploads."""
    service = coordinator(tmp_path)
    await service.start()
    insights = [make_insight(node_id=f"n{i % 7}", seq=i) for i in range(200)]
    flags = await asyncio.wait_for(
        asyncio.gather(*(service.submit(insight) for insight in insights)), TIMEOUT
    )
    commits = service.metrics.batch_size.count
    await service.close()
    assert all(flags) and service.metrics.stored == 200
    assert commits < 50


async def test_duplicates_in_one_batch_are_flagged(tmp_path: Path) -> None:
    """The same insight queued twice at once is stored once, reported once new."""
    service = coordinator(tmp_path)
    await service.start()
    flags = await asyncio.gather(
        service.submit(make_insight()), service.submit(make_insight())
    )
    await service.close()
    assert sorted(flags) == [False, True]
    assert service.metrics.duplicates == 1


async def test_reply_meta_is_saved_before_the_acknowledgement(tmp_path: Path) -> None:
    """When submit returns, the meta version it caused is already on disk."""
    service = coordinator(tmp_path)
    await service.start()
    await service.submit(make_insight())
    version = service.meta.version
    await service.close()
    store = Store(tmp_path / "c.sqlite3")
    assert version == 1 and store.latest_meta().version == 1
    store.close()


async def test_close_commits_queued_uploads(tmp_path: Path) -> None:
    """Uploads queued when close starts are committed before the store closes."""
    service = coordinator(tmp_path)
    await service.start()
    pending = [
        asyncio.ensure_future(service.submit(make_insight(seq=seq)))
        for seq in range(20)
    ]
    await asyncio.sleep(0)
    await service.close()
    assert all(future.result() for future in pending)
    store = Store(tmp_path / "c.sqlite3")
    assert store.count_insights() == 20
    store.close()


async def test_submit_after_close_is_refused(tmp_path: Path) -> None:
    """An upload after close raises InvalidStateError naming the state."""
    service = coordinator(tmp_path)
    await service.start()
    await service.close()
    assert service.state is CoordinatorState.CLOSED
    with pytest.raises(InvalidStateError, match="closed"):
        await service.submit(make_insight())


async def test_retention_prunes_in_the_background(tmp_path: Path) -> None:
    """With a row limit the retention task trims the table while running."""
    service = coordinator(tmp_path, retention_rows=5, prune_interval=0.05)
    await service.start()
    for seq in range(12):
        await service.submit(make_insight(seq=seq))
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while service.metrics.pruned < 7:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await service.close()
    store = Store(tmp_path / "c.sqlite3")
    assert store.count_insights() == 5
    store.close()
