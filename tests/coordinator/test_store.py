"""Tests of the SQLite store."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from sfhfe_node.coordinator.store import SCHEMA_VERSION, Store, StoreState, unpack
from sfhfe_node.errors import InvalidStateError, StoreError
from tests.coordinator.helpers import make_insight


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An open store in a fresh file."""
    opened = Store(tmp_path / "db" / "coordinator.sqlite3")
    yield opened
    opened.close()


def test_opens_in_wal_mode_with_full_sync(store: Store) -> None:
    """A new store uses WAL, synchronous FULL and a busy timeout."""
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2
    assert store.pragma("busy_timeout") == 5000
    assert store.schema_version() == SCHEMA_VERSION


def test_normal_durability_sets_synchronous_normal(tmp_path: Path) -> None:
    """durability="normal" selects synchronous NORMAL."""
    store = Store(tmp_path / "s.sqlite3", durability="normal")
    assert store.pragma("synchronous") == 1
    store.close()


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    """An unknown durability level raises ValueError."""
    with pytest.raises(ValueError, match="durability"):
        Store(tmp_path / "s.sqlite3", durability="sometimes")


def test_duplicate_insight_is_stored_once(store: Store) -> None:
    """A second insight with the same (node_id, seq) returns False."""
    assert store.add_insight(make_insight()) is True
    assert store.add_insight(make_insight(records=999)) is False
    assert store.count_insights() == 1
    assert store.insights()[0]["records"] == 320


def test_insights_survive_reopening(tmp_path: Path) -> None:
    """Insights and meta versions are on disk after close and reopen."""
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.add_insight(make_insight(seq=0))
    store.add_insight(make_insight(seq=1))
    store.save_meta(1, {"version": 1}, "samples")
    store.close()
    again = Store(path)
    assert [i["seq"] for i in again.insights("n1")] == [0, 1]
    assert again.latest_meta().version == 1
    again.close()


def test_node_follows_highest_seq(store: Store) -> None:
    """A late old insight does not roll back the node's address or embedding."""
    store.add_insight(make_insight(seq=5, gossip="ws://b:1", embedding=[1.0]))
    store.add_insight(make_insight(seq=3, gossip="ws://a:1", embedding=[0.0]))
    (node,) = store.nodes(with_last=True)
    assert (node.gossip, node.embedding, node.last_seq) == ("ws://b:1", [1.0], 5)
    assert node.last["seq"] == 5


def test_drift_reports_are_recorded(store: Store) -> None:
    """An insight with drift events adds a drift_events row."""
    store.add_insight(make_insight(seq=0))
    store.add_insight(make_insight(seq=1, drift={"events": 2, "active": True}))
    events = store.drift_events()
    assert [(e["seq"], e["events"], e["active"]) for e in events] == [(1, 2, True)]


def test_drift_events_limit_keeps_the_latest(store: Store) -> None:
    """drift_events(limit=N) returns the N latest reports, oldest first."""
    drift = {"events": 1, "active": False}
    store.add_insights([make_insight(seq=seq, drift=drift) for seq in range(5)])
    assert [event["seq"] for event in store.drift_events(limit=2)] == [3, 4]
    assert len(store.drift_events()) == 5


def test_recent_nodes_come_latest_first_with_their_last_insight(
    store: Store,
) -> None:
    """recent_nodes(N) returns the N nodes heard from last, with last insights."""
    for index in range(3):
        store.add_insight(make_insight(node_id=f"n{index}"), received=100.0 + index)
    store.add_insight(make_insight(node_id="n0", seq=1, records=9), received=200.0)
    recent = store.recent_nodes(2)
    assert [node.node_id for node in recent] == ["n0", "n2"]
    assert recent[0].last is not None and recent[0].last["records"] == 9


def test_history_reads_each_node_latest_insights(store: Store) -> None:
    """history() returns each node's latest insights, oldest first."""
    store.add_insights([make_insight(node_id="a", seq=seq) for seq in range(6)], 5.0)
    store.add_insight(make_insight(node_id="b"), received=7.0)
    found = store.history(["a", "b", "unknown"], 3)
    assert [seq for seq, _, _ in found["a"]] == [3, 4, 5]
    assert [(seq, received) for seq, received, _ in found["b"]] == [(0, 7.0)]
    assert unpack(found["a"][-1][2])["seq"] == 5 and found["unknown"] == []


def test_reused_meta_version_is_an_error(store: Store) -> None:
    """Saving the same meta version twice raises StoreError."""
    store.save_meta(1, {"version": 1}, "samples")
    with pytest.raises(StoreError):
        store.save_meta(1, {"version": 1}, "time")


def test_node_counts_split_known_and_active(store: Store) -> None:
    """node_counts counts every node and the recently seen ones."""
    store.add_insight(make_insight(node_id="old"), received=100.0)
    store.add_insight(make_insight(node_id="new"), received=200.0)
    assert store.node_counts(since=150.0) == (2, 1)


def test_closed_store_refuses_calls(store: Store) -> None:
    """Any call on a closed store raises InvalidStateError."""
    store.close()
    assert store.state is StoreState.CLOSED
    with pytest.raises(InvalidStateError, match="closed"):
        store.count_insights()


def test_close_twice_is_harmless(store: Store) -> None:
    """Closing an already closed store does nothing."""
    store.close()
    store.close()
    assert store.state is StoreState.CLOSED


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema raises StoreError instead of opening."""
    path = tmp_path / "s.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite raises StoreError."""
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Store(path)


def test_batch_stores_each_new_insight_once(store: Store) -> None:
    """A batch with a repeated (node_id, seq) stores it once and flags it."""
    batch = [make_insight(seq=0), make_insight(seq=1), make_insight(seq=0)]
    assert store.add_insights(batch) == [True, True, False]
    assert store.count_insights() == 2


def test_failed_batch_stores_nothing(store: Store) -> None:
    """A batch whose write fails leaves none of its insights behind."""
    bad = make_insight(seq=1, drift={"active": True})
    with pytest.raises(KeyError):
        store.add_insights([make_insight(seq=0), bad])
    assert store.count_insights() == 0


def test_prune_by_age_keeps_each_node_latest(store: Store) -> None:
    """Age retention deletes old insights but not a node's latest one."""
    store.add_insight(make_insight(node_id="a", seq=0), received=10.0)
    store.add_insight(make_insight(node_id="a", seq=1), received=20.0)
    store.add_insight(make_insight(node_id="b", seq=0), received=30.0)
    store.add_insight(make_insight(node_id="a", seq=2), received=100.0)
    assert store.prune(older_than=50.0, max_rows=None) == 2
    remaining = {(i["node_id"], i["seq"]) for i in store.insights()}
    assert remaining == {("a", 2), ("b", 0)}


def test_prune_by_rows_removes_the_oldest(store: Store) -> None:
    """Row retention keeps the newest max_rows insights, in small chunks."""
    store.add_insights([make_insight(seq=seq) for seq in range(10)])
    assert store.prune(older_than=None, max_rows=4, chunk=2) == 6
    assert [i["seq"] for i in store.insights()] == [6, 7, 8, 9]


def test_prune_stops_after_max_chunks(store: Store) -> None:
    """max_chunks bounds the rows one prune call deletes."""
    store.add_insights([make_insight(seq=seq) for seq in range(10)])
    assert store.prune(None, 0, chunk=3, max_chunks=1) == 3


def test_old_schema_is_migrated_on_open(tmp_path: Path) -> None:
    """A version 1 file gains the retention indexes when opened."""
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX insights_received")
        db.execute("DROP INDEX drift_events_received")
        db.execute("PRAGMA user_version=1")
        db.commit()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 2
    store.close()
    with closing(sqlite3.connect(path)) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "insights_received" in names
