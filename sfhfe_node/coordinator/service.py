"""The coordinator's running state: store, meta learner and counters.

:class:`Coordinator` sits between the HTTP handlers and the blocking store.
Every store call runs on one dedicated thread, which keeps SQLite off the
event loop and serialises the writes; the meta learner runs on the loop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sfhfe_node.coordinator.meta import MetaLearner, MetaParams
from sfhfe_node.coordinator.metrics import CoordinatorMetrics
from sfhfe_node.coordinator.store import NodeRecord, Store
from sfhfe_node.errors import InvalidStateError, StoreError
from sfhfe_node.logs import coordinator_log

__all__ = ["CoordinatorState", "Coordinator"]

_T = TypeVar("_T")


class CoordinatorState(enum.Enum):
    """Lifecycle of a :class:`Coordinator`."""

    IDLE = "idle"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Coordinator:
    """Store insights, learn meta-parameters and answer queries.

    Starts ``IDLE``; :meth:`start` opens the store and rebuilds the meta
    learner from the latest saved version (``OPEN``); :meth:`close` closes
    the store (``CLOSED``). Calls made in another state raise
    :class:`InvalidStateError`.

    The meta-parameters served (:attr:`meta`) advance only once their version
    is saved, so a restart never serves a lower version than one already
    sent to a client.

    Parameters:
        db_path: the SQLite file.
        learner: the meta learner, fresh; it is resumed from the store.
        durability: ``"full"`` or ``"normal"``, see :class:`Store`.
        busy_timeout: seconds a store call waits for a lock, see :class:`Store`.
        clock: source of the current unix time (default :func:`time.time`).
    """

    def __init__(
        self,
        db_path: Path,
        learner: MetaLearner,
        *,
        durability: str = "full",
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = db_path
        self.learner = learner
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.clock = clock
        self.metrics = CoordinatorMetrics()
        self.meta = MetaParams()
        self.state = CoordinatorState.IDLE
        self._store: Store | None = None
        self._executor: ThreadPoolExecutor | None = None

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
        coordinator_log.info(
            "store ready at %s: %d nodes, meta version %d",
            self.db_path,
            len(nodes),
            self.meta.version,
        )

    async def close(self) -> None:
        """Close the store and its thread; closing twice is harmless."""
        if self.state in (CoordinatorState.CLOSING, CoordinatorState.CLOSED):
            return
        self.state = CoordinatorState.CLOSING
        try:
            if self._store is not None:
                await self._call(self._store.close)
        finally:
            await self._shut_executor()
            self.state = CoordinatorState.CLOSED
            coordinator_log.info("store closed")

    async def submit(self, insight: dict[str, Any]) -> bool:
        """Store a validated insight; ``False`` if it was a duplicate.

        A new insight feeds the meta learner, which may make a new version.
        """
        store = self._open_store()
        added, seconds = await self._call(_timed, store.add_insight, insight)
        self.metrics.store_write.observe(seconds)
        if not added:
            self.metrics.duplicates += 1
            return False
        self.metrics.stored += 1
        self.learner.observe(insight)
        params = self.learner.maybe_update(self.clock())
        if params is not None:
            await self._publish(params, self.learner.last_trigger or "unknown")
        return True

    async def nodes(self) -> list[NodeRecord]:
        """Every known node with its last insight."""
        store = self._open_store()
        return await self._call(store.nodes, with_last=True)

    async def node_counts(self, stale_seconds: float) -> tuple[int, int]:
        """Nodes known, and nodes heard from within ``stale_seconds``."""
        store = self._open_store()
        return await self._call(store.node_counts, self.clock() - stale_seconds)

    async def _publish(self, params: MetaParams, trigger: str) -> None:
        store = self._open_store()
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

    def _open_store(self) -> Store:
        if self.state is not CoordinatorState.OPEN or self._store is None:
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


def _timed(function: Callable[..., _T], *args: Any) -> tuple[_T, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started
