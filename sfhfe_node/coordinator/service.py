"""The coordinator's running state: store, meta learner and counters.

:class:`Coordinator` sits between the HTTP handlers and the blocking store.
Every store call runs on one dedicated thread, which keeps SQLite off the
event loop and serialises the writes; the meta learner runs on the loop.

Uploads are written by group commit: a handler queues its insight and waits;
one writer task takes every insight queued at that moment (up to
``max_batch``), commits them in one transaction on the store thread, feeds the
new ones to the meta learner, saves a new meta version if one is due, and only
then wakes the handlers, which acknowledge. While a batch commits the next
one gathers, so a slow fsync raises the batch size instead of the latency.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sfhfe_node.coordinator.meta import MetaLearner, MetaParams
from sfhfe_node.coordinator.metrics import CoordinatorMetrics
from sfhfe_node.coordinator.store import MetaRecord, NodeRecord, Store
from sfhfe_node.errors import InvalidStateError, StoreError
from sfhfe_node.logs import coordinator_log

__all__ = ["Coordinator", "CoordinatorState", "Snapshot"]

_T = TypeVar("_T")


class CoordinatorState(enum.Enum):
    """Lifecycle of a :class:`Coordinator`."""

    IDLE = "idle"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Coordinator:
    """Store insights, learn meta-parameters and answer queries.

    Starts ``IDLE``; :meth:`start` opens the store, rebuilds the meta
    learner from the latest saved version and starts the writer and the
    retention tasks (``OPEN``); :meth:`close` refuses new uploads
    (``CLOSING``), commits the queued ones, stops the tasks and closes the
    store (``CLOSED``). Calls made in another state raise
    :class:`InvalidStateError`.

    The meta-parameters served (:attr:`meta`) advance only once their version
    is saved, so a restart never serves a lower version than one already
    sent to a client.

    Parameters:
        db_path: the SQLite file.
        learner: the meta learner, fresh; it is resumed from the store.
        durability: ``"full"`` or ``"normal"``, see :class:`Store`.
        busy_timeout: seconds a store call waits for a lock, see :class:`Store`.
        max_batch: most insights committed in one transaction (default 512).
            Larger batches amortise the fsync further but make every upload
            of the batch wait for the whole of it.
        retention_seconds: insights older than this are deleted; ``None``
            (default) keeps them all.
        retention_rows: most insights kept; ``None`` (default) means no cap.
        prune_interval: seconds between two retention passes (default 60.0).
        clock: source of the current unix time (default :func:`time.time`).
    """

    def __init__(
        self,
        db_path: Path,
        learner: MetaLearner,
        *,
        durability: str = "full",
        busy_timeout: float = 5.0,
        max_batch: int = 512,
        retention_seconds: float | None = None,
        retention_rows: int | None = None,
        prune_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if prune_interval <= 0:
            raise ValueError(f"prune_interval must be > 0, got {prune_interval}")
        self.db_path = db_path
        self.learner = learner
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.max_batch = max_batch
        self.retention_seconds = retention_seconds
        self.retention_rows = retention_rows
        self.prune_interval = prune_interval
        self.clock = clock
        self.metrics = CoordinatorMetrics()
        self.meta = MetaParams()
        self.state = CoordinatorState.IDLE
        self._store: Store | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[dict[str, Any], asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queued(self) -> int:
        """Uploads waiting for the next commit."""
        return len(self._queue)

    @property
    def ready(self) -> bool:
        """Whether the store is open and requests can be served."""
        return self.state is CoordinatorState.OPEN

    async def start(self) -> None:
        """Open the store and resume the meta learner from it."""
        if self.state is not CoordinatorState.IDLE:
            raise InvalidStateError(f"coordinator is {self.state.value}")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sfhfe-store")
        try:
            self._store = await self._call(
                Store,
                self.db_path,
                durability=self.durability,
                busy_timeout=self.busy_timeout,
            )
            saved = await self._call(self._store.latest_meta)
            nodes = await self._call(self._store.nodes, with_last=True)
        except BaseException:
            await self._shut_executor()
            self.state = CoordinatorState.CLOSED
            raise
        if saved is not None:
            self.meta = MetaParams.from_document(saved.params)
        self.learner.resume(self.meta, [node.last for node in nodes if node.last])
        self.state = CoordinatorState.OPEN
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="sfhfe-store-writer"),
            asyncio.create_task(self._retention_loop(), name="sfhfe-retention"),
        ]
        coordinator_log.info(
            "store ready at %s: %d nodes, meta version %d",
            self.db_path,
            len(nodes),
            self.meta.version,
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Commit the queued uploads, then close the store and its thread.

        Uploads arriving from now on raise :class:`InvalidStateError`. The
        queued ones get ``timeout`` seconds to commit; any still waiting then
        fail with :class:`StoreError`. Closing twice is harmless.
        """
        if self.state in (CoordinatorState.CLOSING, CoordinatorState.CLOSED):
            return
        self.state = CoordinatorState.CLOSING
        try:
            # Let the writer drain the queue, then stop both tasks.
            self._wake.set()
            if self._tasks:
                done, _ = await asyncio.wait({self._tasks[0]}, timeout=timeout)
                if not done:
                    coordinator_log.warning("writer still busy after %.1f s", timeout)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._fail_queued(StoreError("the coordinator is shutting down"))

            # Close the database on its own thread.
            if self._store is not None:
                await self._call(self._store.close)
        finally:
            await self._shut_executor()
            self.state = CoordinatorState.CLOSED
            coordinator_log.info("store closed")

    async def submit(self, insight: dict[str, Any]) -> bool:
        """Store a validated insight; ``False`` if it was a duplicate.

        Returns once the insight is committed with its batch. A new insight
        feeds the meta learner, which may make a new version; it is saved
        before this returns, so the caller's reply can carry it.
        """
        if self.state is not CoordinatorState.OPEN:
            raise InvalidStateError(f"coordinator is {self.state.value}")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((insight, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                try:
                    await self._commit(batch)
                except Exception as exc:
                    # Whatever failed, no upload may wait for ever.
                    coordinator_log.exception("batch of %d failed", len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
            if self.state is not CoordinatorState.OPEN:
                return

    async def _commit(
        self, batch: list[tuple[dict[str, Any], asyncio.Future[bool]]]
    ) -> None:
        store = self._open_store(closing_ok=True)
        insights = [insight for insight, _ in batch]
        try:
            flags, seconds = await self._call(_timed, store.add_insights, insights)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.metrics.store_write.observe(seconds)
        self.metrics.batch_size.observe(len(batch))
        added = 0
        for insight, flag in zip(insights, flags):
            if flag:
                added += 1
                self.learner.observe(insight)
        self.metrics.stored += added
        self.metrics.duplicates += len(batch) - added
        if added:
            params = self.learner.maybe_update(self.clock())
            if params is not None:
                await self._publish(params, self.learner.last_trigger or "unknown")
        for (_, future), flag in zip(batch, flags):
            if not future.done():
                future.set_result(flag)

    def _fail_queued(self, error: Exception) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)

    async def _retention_loop(self) -> None:
        if self.retention_seconds is None and self.retention_rows is None:
            return
        store = self._open_store()
        while self.state is CoordinatorState.OPEN:
            try:
                # One chunk per store call, so uploads interleave with it.
                while True:
                    cutoff = None
                    if self.retention_seconds is not None:
                        cutoff = self.clock() - self.retention_seconds
                    removed = await self._call(
                        store.prune, cutoff, self.retention_rows, max_chunks=1
                    )
                    self.metrics.pruned += removed
                    if removed == 0:
                        break
            except StoreError as exc:
                coordinator_log.warning("retention pass failed: %s", exc)
            await asyncio.sleep(self.prune_interval)

    async def nodes(self) -> list[NodeRecord]:
        """Every known node with its last insight."""
        store = self._open_store()
        return await self._call(store.nodes, with_last=True)

    async def snapshot(
        self,
        *,
        nodes: int,
        points: int,
        drift_events: int,
        meta_versions: int,
        stale_seconds: float,
    ) -> Snapshot:
        """What the dashboard shows, read in one call on the store thread.

        Every part is bounded: the ``nodes`` nodes heard from last, the last
        ``points`` insights of each, the last ``drift_events`` drift reports
        and the last ``meta_versions`` meta versions. Nodes heard from within
        ``stale_seconds`` count as active.
        """
        store = self._open_store()
        limits = (nodes, points, drift_events, meta_versions, stale_seconds)
        return await self._call(_snapshot, store, self.clock(), *limits)

    async def node_counts(self, stale_seconds: float) -> tuple[int, int]:
        """Nodes known, and nodes heard from within ``stale_seconds``."""
        store = self._open_store()
        return await self._call(store.node_counts, self.clock() - stale_seconds)

    async def _publish(self, params: MetaParams, trigger: str) -> None:
        store = self._open_store(closing_ok=True)
        try:
            await self._call(
                store.save_meta, params.version, params.to_document(), trigger
            )
        except StoreError as exc:
            self.metrics.meta_save_failures += 1
            coordinator_log.error("meta version %d not saved: %s", params.version, exc)
            return
        self.metrics.meta_updates += 1
        if params.version > self.meta.version:
            self.meta = params
        coordinator_log.info(
            "meta version %d on %s trigger from %d nodes",
            params.version,
            trigger,
            self.learner.population,
        )

    def _open_store(self, closing_ok: bool = False) -> Store:
        # The writer still commits the queued uploads while closing.
        allowed = {CoordinatorState.OPEN}
        if closing_ok:
            allowed.add(CoordinatorState.CLOSING)
        if self._store is None or self.state not in allowed:
            raise InvalidStateError(f"coordinator is {self.state.value}")
        return self._store

    async def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._executor is None:
            raise InvalidStateError(f"coordinator is {self.state.value}")
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    async def _shut_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # The thread is idle by now; joining it off the loop costs nothing.
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)


@dataclass(frozen=True)
class Snapshot:
    """A bounded read of the store for the dashboard.

    ``known`` counts every node and ``active`` those heard from lately;
    ``nodes`` holds the most recently seen ones
    with their last insight, ``history`` their latest insights as ``(seq,
    received, body)`` oldest first (bodies still encoded, see
    :meth:`Store.history`), ``drift`` the latest drift reports and
    ``meta`` the latest meta versions, both oldest first. ``taken`` is the
    coordinator's clock when the read started.
    """

    taken: float
    known: int
    active: int
    nodes: list[NodeRecord]
    history: dict[str, list[tuple[int, float, bytes | str]]]
    drift: list[dict[str, Any]]
    meta: list[MetaRecord]


def _snapshot(
    store: Store,
    taken: float,
    nodes: int,
    points: int,
    drift_events: int,
    meta_versions: int,
    stale_seconds: float,
) -> Snapshot:
    recent = store.recent_nodes(nodes)
    known, active = store.node_counts(taken - stale_seconds)
    return Snapshot(
        taken=taken,
        known=known,
        active=active,
        nodes=recent,
        history=store.history([node.node_id for node in recent], points),
        drift=store.drift_events(limit=drift_events),
        meta=store.meta_history(meta_versions),
    )


def _timed(function: Callable[..., _T], *args: Any) -> tuple[_T, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started
