"""The coordinator's durable store: one SQLite file in WAL mode.

Tables (schema version in ``PRAGMA user_version``)::

    nodes          node_id, gossip, embedding (JSON), records, first_seen,
                   last_seen, last_seq
    insights       node_id, seq, received, body (the validated insight: msgpack
                   bytes since schema 2, JSON text in rows written by schema 1),
                   UNIQUE(node_id, seq)
    drift_events   node_id, seq, received, events, active
    meta_versions  version, created, params (JSON), trigger

Schema 2 adds indexes on the arrival times that retention deletes by, and
writes insight bodies as msgpack (several times cheaper to encode than JSON);
rows written as JSON text before the upgrade are still read.

Every write is one transaction committed before the call returns, so an
insight the coordinator acknowledged survives a crash or a restart.
:meth:`Store.add_insights` writes a whole batch in one transaction: with
``synchronous=FULL`` a commit costs one fsync of the write-ahead log whatever
the batch size, which is how the coordinator keeps durability without paying
one fsync per upload (group commit). SQLite calls block: the application runs
them on one dedicated thread, which also serialises the writes.

Retention (:meth:`Store.prune`) deletes insights older than a cutoff and the
oldest beyond a row cap, but never a node's latest insight, which the meta
learner resumes from. Exactly-once on ``(node_id, seq)`` therefore holds
within the retention horizon: a retry of an insight already pruned would be
stored again. Clients retry within minutes, retention is counted in days.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from sfhfe_node.errors import InvalidStateError, StoreError
from sfhfe_node.logs import coordinator_log

__all__ = [
    "DURABILITY",
    "SCHEMA_VERSION",
    "MetaRecord",
    "NodeRecord",
    "Store",
    "StoreState",
    "unpack",
]

SCHEMA_VERSION = 2
DURABILITY = {"full": "FULL", "normal": "NORMAL"}

_T = TypeVar("_T")

# Each entry upgrades the schema from its index to index + 1.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE nodes (
            node_id    TEXT PRIMARY KEY,
            gossip     TEXT,
            embedding  TEXT NOT NULL,
            records    INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            last_seq   INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE insights (
            id       INTEGER PRIMARY KEY,
            node_id  TEXT NOT NULL,
            seq      INTEGER NOT NULL,
            received REAL NOT NULL,
            body     TEXT NOT NULL,
            UNIQUE (node_id, seq)
        )
        """,
        """
        CREATE TABLE drift_events (
            id       INTEGER PRIMARY KEY,
            node_id  TEXT NOT NULL,
            seq      INTEGER NOT NULL,
            received REAL NOT NULL,
            events   INTEGER NOT NULL,
            active   INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE meta_versions (
            version  INTEGER PRIMARY KEY,
            created  REAL NOT NULL,
            params   TEXT NOT NULL,
            trigger  TEXT NOT NULL
        )
        """,
    ),
    (
        "CREATE INDEX insights_received ON insights (received)",
        "CREATE INDEX drift_events_received ON drift_events (received)",
    ),
]

# A node's latest insight is kept whatever its age: the meta learner resumes
# from it after a restart.
_NOT_LATEST = (
    "NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = insights.node_id "
    "AND n.last_seq = insights.seq)"
)


class StoreState(enum.Enum):
    """Lifecycle of a :class:`Store`."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class NodeRecord:
    """One known client node, as the store last saw it.

    ``last`` is the node's most recent insight (highest ``seq``), or ``None``
    when the store was asked not to load it.
    """

    node_id: str
    gossip: str | None
    embedding: list[float]
    records: int
    first_seen: float
    last_seen: float
    last_seq: int
    last: dict[str, Any] | None = None


@dataclass(frozen=True)
class MetaRecord:
    """One saved meta-parameter version."""

    version: int
    created: float
    params: dict[str, Any]
    trigger: str


class Store:
    """Nodes, insights, drift events and meta versions in one SQLite file.

    The store opens (creating or migrating the schema) when constructed and
    is then :attr:`StoreState.OPEN`; :meth:`close` moves it to ``CLOSED`` and
    any later call raises :class:`InvalidStateError`. Calls are thread-safe
    (a lock serialises them) but block, so asyncio code runs them on one
    dedicated thread.

    Parameters:
        path: the database file; its folder is created if missing.
        durability: ``"full"`` (default) syncs the write-ahead log on every
            commit, so an acknowledged insight survives a power loss;
            ``"normal"`` syncs only at checkpoints, several times faster per
            write, and can lose the last commits on power loss (never on a
            process crash).
        busy_timeout: seconds a call waits for a lock held by another process
            on the same file before it fails with :class:`StoreError`
            (default 5.0).
    """

    def __init__(
        self, path: Path, *, durability: str = "full", busy_timeout: float = 5.0
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(
                f"durability {durability!r} is not one of {', '.join(DURABILITY)}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout}")
        self.path = Path(path)
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self.state = StoreState.CLOSED
        self._db = self._open()
        self.state = StoreState.OPEN

    # Lifecycle.

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"store {self.path} cannot use WAL mode ({mode})")
            db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate(db)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot prepare store {self.path}: {exc}") from exc
        except StoreError:
            db.close()
            raise
        coordinator_log.debug("store open at %s", self.path)
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {found}, newer than this "
                f"program's {SCHEMA_VERSION}"
            )
        for version in range(found, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={version + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            coordinator_log.info("store schema migrated to %d", version + 1)

    def close(self) -> None:
        """Close the database; closing twice is harmless."""
        with self._lock:
            if self.state is StoreState.CLOSED:
                return
            self.state = StoreState.CLOSED
            try:
                self._db.close()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot close store {self.path}: {exc}") from exc

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        return self._read(lambda db: db.execute("PRAGMA user_version").fetchone()[0])

    def pragma(self, name: str) -> Any:
        """Read one of ``journal_mode``, ``synchronous`` or ``busy_timeout``."""
        if name not in ("journal_mode", "synchronous", "busy_timeout"):
            raise ValueError(f"pragma {name!r} cannot be read here")
        return self._read(lambda db: db.execute(f"PRAGMA {name}").fetchone()[0])

    # Writes.

    def add_insight(
        self, insight: dict[str, Any], received: float | None = None
    ) -> bool:
        """Store one validated insight; see :meth:`add_insights`.

        Returns ``True`` for a new insight and ``False`` for a duplicate.
        """
        now = time.time() if received is None else received
        return self.add_insights([insight], now)[0]

    def add_insights(
        self, insights: Sequence[dict[str, Any]], received: float | None = None
    ) -> list[bool]:
        """Store a batch of validated insights in one transaction.

        Returns one flag per insight: ``True`` when it was new, ``False`` when
        its ``(node_id, seq)`` was already stored (earlier, or earlier in the
        same batch), which changes nothing. Either every insight of the batch
        is committed or, on :class:`StoreError`, none is. A node's gossip
        address, embedding and record count follow its insight with the
        highest ``seq``, so a late retry of an old insight does not roll them
        back. ``received`` defaults to the current time.
        """
        now = time.time() if received is None else received
        rows = [
            (
                insight,
                _pack(insight),
                json.dumps(insight["embedding"], separators=(",", ":")),
            )
            for insight in insights
        ]

        def write(db: sqlite3.Connection) -> list[bool]:
            return [_write_one(db, item, body, emb, now) for item, body, emb in rows]

        return self._write(write)

    def prune(
        self,
        older_than: float | None,
        max_rows: int | None,
        *,
        chunk: int = 5000,
        max_chunks: int | None = None,
    ) -> int:
        """Delete insights received before ``older_than`` and beyond ``max_rows``.

        ``None`` disables either bound. The oldest go first, in transactions
        of at most ``chunk`` rows, at most ``max_chunks`` of them per bound
        (``None``: until done), so that a caller can interleave uploads
        between calls; each node's latest insight is kept. Drift events older
        than ``older_than`` go too. Returns how many insights were deleted.
        """
        if max_rows is not None and max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        if chunk < 1 or (max_chunks is not None and max_chunks < 1):
            raise ValueError(f"chunk and max_chunks must be >= 1, got {chunk}")
        deleted = 0
        if older_than is not None:
            deleted += self._prune_chunks(
                "received < ?", (older_than,), chunk, max_chunks
            )
            self._write(
                lambda db: db.execute(
                    "DELETE FROM drift_events WHERE received < ?", (older_than,)
                )
            )
        if max_rows is not None:
            excess = self.count_insights() - max_rows
            if excess > 0:
                edge = self._read(
                    lambda db: db.execute(
                        "SELECT id FROM insights ORDER BY id LIMIT 1 OFFSET ?",
                        (excess - 1,),
                    ).fetchone()
                )
                deleted += self._prune_chunks("id <= ?", (edge[0],), chunk, max_chunks)
        if deleted:
            coordinator_log.debug("retention removed %d insights", deleted)
        return deleted

    def _prune_chunks(
        self,
        where: str,
        args: tuple[Any, ...],
        chunk: int,
        max_chunks: int | None,
    ) -> int:
        statement = (
            "DELETE FROM insights WHERE id IN (SELECT id FROM insights WHERE "
            f"{where} AND {_NOT_LATEST} ORDER BY id LIMIT ?)"
        )
        total = 0
        done = 0
        while max_chunks is None or done < max_chunks:
            removed = self._write(
                lambda db: db.execute(statement, (*args, chunk)).rowcount
            )
            total += removed
            done += 1
            if removed < chunk:
                break
        return total

    def save_meta(
        self,
        version: int,
        params: dict[str, Any],
        trigger: str,
        created: float | None = None,
    ) -> None:
        """Record a new meta-parameter version; a reused version is an error."""
        text = json.dumps(params, separators=(",", ":"), allow_nan=False)
        stamp = time.time() if created is None else created

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO meta_versions (version, created, params, trigger) "
                "VALUES (?, ?, ?, ?)",
                (version, stamp, text, trigger),
            )

        self._write(write)

    # Reads.

    def nodes(self, *, with_last: bool = False) -> list[NodeRecord]:
        """Every known node, ordered by id; ``with_last`` loads its last insight."""
        if with_last:
            query = (
                "SELECT n.node_id, n.gossip, n.embedding, n.records, n.first_seen,"
                " n.last_seen, n.last_seq, i.body FROM nodes n LEFT JOIN insights"
                " i ON i.node_id = n.node_id AND i.seq = n.last_seq"
                " ORDER BY n.node_id"
            )
        else:
            query = (
                "SELECT node_id, gossip, embedding, records, first_seen, last_seen,"
                " last_seq, NULL FROM nodes ORDER BY node_id"
            )
        rows = self._read(lambda db: db.execute(query).fetchall())
        return [_node(row) for row in rows]

    def recent_nodes(self, limit: int) -> list[NodeRecord]:
        """The ``limit`` nodes heard from last, most recent first, with their
        last insight loaded."""
        query = (
            "SELECT n.node_id, n.gossip, n.embedding, n.records, n.first_seen,"
            " n.last_seen, n.last_seq, i.body FROM nodes n LEFT JOIN insights"
            " i ON i.node_id = n.node_id AND i.seq = n.last_seq"
            " ORDER BY n.last_seen DESC, n.node_id LIMIT ?"
        )
        rows = self._read(lambda db: db.execute(query, (int(limit),)).fetchall())
        return [_node(row) for row in rows]

    def history(
        self, node_ids: Sequence[str], limit: int
    ) -> dict[str, list[tuple[int, float, bytes | str]]]:
        """Each node's last ``limit`` insights as ``(seq, received, body)``.

        Oldest first per node. One indexed query per node, each reading at
        most ``limit`` rows, so the cost does not grow with the table. The
        bodies are left encoded: :func:`unpack` decodes them, on another
        thread than the store's if there are many, so that uploads do not wait
        for the decoding.
        """
        query = (
            "SELECT seq, received, body FROM insights WHERE node_id = ? "
            "ORDER BY seq DESC LIMIT ?"
        )

        def read(db: sqlite3.Connection) -> dict[str, list[Any]]:
            return {
                node_id: db.execute(query, (node_id, int(limit))).fetchall()[::-1]
                for node_id in node_ids
            }

        return self._read(read)

    def node_counts(self, since: float) -> tuple[int, int]:
        """Nodes known, and nodes heard from at or after ``since``."""
        query = "SELECT count(*), count(*) FILTER (WHERE last_seen >= ?) FROM nodes"
        row = self._read(lambda db: db.execute(query, (since,)).fetchone())
        return int(row[0]), int(row[1] or 0)

    def insights(
        self, node_id: str | None = None, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored insights in arrival order, of one node or of all.

        ``limit`` keeps only the most recent ones.
        """
        args = [] if node_id is None else [node_id]
        where = "" if node_id is None else "WHERE node_id = ?"
        query = f"SELECT body FROM insights {where} ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        rows = self._read(lambda db: db.execute(query, args).fetchall())
        return [unpack(row[0]) for row in reversed(rows)]

    def count_insights(self) -> int:
        """How many distinct insights are stored."""
        query = "SELECT count(*) FROM insights"
        return self._read(lambda db: db.execute(query).fetchone()[0])

    def drift_events(
        self, node_id: str | None = None, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded drift reports in arrival order.

        ``limit`` keeps only the most recent ones.
        """
        args: list[Any] = [] if node_id is None else [node_id]
        where = "" if node_id is None else "WHERE node_id = ?"
        query = (
            "SELECT node_id, seq, received, events, active FROM drift_events "
            f"{where} ORDER BY id DESC"
        )
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        rows = self._read(lambda db: db.execute(query, args).fetchall())
        keys = ("node_id", "seq", "received", "events", "active")
        return [dict(zip(keys, row[:4] + (bool(row[4]),))) for row in rows[::-1]]

    def latest_meta(self) -> MetaRecord | None:
        """The highest saved meta version, or ``None`` before the first one."""
        query = (
            "SELECT version, created, params, trigger FROM meta_versions "
            "ORDER BY version DESC LIMIT 1"
        )
        row = self._read(lambda db: db.execute(query).fetchone())
        if row is None:
            return None
        return MetaRecord(row[0], row[1], json.loads(row[2]), row[3])

    def meta_history(self, limit: int = 100) -> list[MetaRecord]:
        """The most recent meta versions, oldest first."""
        query = (
            "SELECT version, created, params, trigger FROM meta_versions "
            "ORDER BY version DESC LIMIT ?"
        )
        rows = self._read(lambda db: db.execute(query, (limit,)).fetchall())
        return [MetaRecord(r[0], r[1], json.loads(r[2]), r[3]) for r in rows[::-1]]

    # Plumbing.

    def _check_open(self) -> None:
        if self.state is not StoreState.OPEN:
            raise InvalidStateError(f"store {self.path} is {self.state.value}")

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            self._check_open()
            try:
                return query(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from exc

    def _write(self, change: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            self._check_open()
            with self._transaction() as db:
                return change(db)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"store write cannot start: {exc}") from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"store write failed: {exc}") from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            coordinator_log.warning("store rollback failed", exc_info=True)


def _node(row: Sequence[Any]) -> NodeRecord:
    return NodeRecord(
        node_id=row[0],
        gossip=row[1],
        embedding=json.loads(row[2]),
        records=row[3],
        first_seen=row[4],
        last_seen=row[5],
        last_seq=row[6],
        last=None if row[7] is None else unpack(row[7]),
    )


def _pack(insight: dict[str, Any]) -> bytes:
    # The insight passed validate_insight: plain types, finite numbers only.
    return msgpack.packb(insight)


def unpack(body: bytes | str) -> dict[str, Any]:
    """Decode a stored insight body (msgpack, or JSON text from schema 1)."""
    if isinstance(body, str):
        return json.loads(body)
    return msgpack.unpackb(body, raw=False)


def _write_one(
    db: sqlite3.Connection,
    insight: dict[str, Any],
    body: bytes,
    embedding: str,
    now: float,
) -> bool:
    node_id = insight["node_id"]
    seq = insight["seq"]
    added = db.execute(
        "INSERT OR IGNORE INTO insights (node_id, seq, received, body) "
        "VALUES (?, ?, ?, ?)",
        (node_id, seq, now, body),
    ).rowcount
    if not added:
        return False
    db.execute(
        """
        INSERT INTO nodes (node_id, gossip, embedding, records,
                           first_seen, last_seen, last_seq)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (node_id) DO UPDATE SET
            last_seen = max(last_seen, excluded.last_seen),
            gossip = CASE WHEN excluded.last_seq >= last_seq
                     THEN excluded.gossip ELSE gossip END,
            embedding = CASE WHEN excluded.last_seq >= last_seq
                        THEN excluded.embedding ELSE embedding END,
            records = CASE WHEN excluded.last_seq >= last_seq
                      THEN excluded.records ELSE records END,
            last_seq = max(last_seq, excluded.last_seq)
        """,
        (node_id, insight["gossip"], embedding, insight["records"], now, now, seq),
    )
    drift = insight["drift"]
    if drift["events"] or drift["active"]:
        db.execute(
            "INSERT INTO drift_events (node_id, seq, received, events, active) "
            "VALUES (?, ?, ?, ?, ?)",
            (node_id, seq, now, drift["events"], int(drift["active"])),
        )
    return True
