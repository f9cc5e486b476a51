"""The client daemon: one node learning from its stream and talking to others.

Concurrent parts of one asyncio process:

- the pipeline: read a mini-batch (reader thread), predict then learn
  (learner thread), write the predictions, and every few batches put an insight
  in the outbox;
- the uplink, which delivers the outbox to the coordinator and hands back
  meta-parameters (applied by the learner thread before its next batch);
- the gossip node, which exchanges expert weights with peers;
- the local API for the operator and for applications.

All learner calls, gossip imports included, run on one worker thread, so the
learner is never touched by two threads at once and the event loop stays free.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np
import torch

from sfhfe_node.client.outbox import Outbox
from sfhfe_node.client.progress import Scoreboard
from sfhfe_node.client.uplink import Uplink
from sfhfe_node.config import Settings
from sfhfe_node.errors import ConfigError, InvalidStateError
from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.learner import LabelEncoder, Learner
from sfhfe_node.logs import client_log
from sfhfe_node.stream import Batch, RecordStream, parse_share
from sfhfe_node.wire.insight import INSIGHT_SCHEMA, validate_insight

__all__ = ["ClientNode", "LearnerHost", "run_client"]


class LearnerHost:
    """What the gossip node sees of the learner, safe to call from the loop.

    Cheap reads (embedding, usage, norms) return copies refreshed by the
    learner thread after each batch; weight exports and imports are queued on
    the learner thread, between two batches.
    """

    def __init__(self, learner: Learner, executor: ThreadPoolExecutor) -> None:
        self._learner = learner
        self._executor = executor
        self._embedding = learner.embedding()
        self._usage = learner.usage()
        self._records = 0
        self._norms: dict[str, float] = {}
        self._spec = learner.weight_spec()
        self.refresh()

    def refresh(self) -> None:
        """Copy the cheap reads; call on the learner thread."""
        self._embedding = self._learner.embedding()
        self._usage = self._learner.usage()
        self._records = self._learner.records

    def embedding(self) -> np.ndarray:
        return self._embedding

    def expert_usage(self) -> dict[str, float]:
        return self._usage

    def records(self) -> int:
        return self._records

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return self._spec

    def own_norm(self, expert: str) -> float:
        return self._norms.get(expert, 0.0)

    async def export_experts(self, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._export, names)

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, self._learner.blend_expert, expert, params, factor
        )

    def _export(self, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
        exported = {name: self._learner.export_expert(name) for name in names}
        self.update_norms()
        return exported

    def update_norms(self) -> None:
        """Recompute the L2 norm of every expert's weights (learner thread)."""
        norms = {}
        for name in self._spec:
            params = self._learner.export_expert(name)
            total = sum(float(np.square(value, dtype=np.float64).sum()) for value in params.values())
            norms[name] = math.sqrt(total)
        self._norms = norms


class ClientNode:
    """One client node, from its settings to its exit status.

    States: ``created`` → ``running`` → ``stopping`` → ``stopped``.
    :meth:`run` may be called once; :meth:`request_stop` at any time.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = "created"
        self.state_dir: Path = settings.state_dir
        self.node_id = ""
        self.scores = Scoreboard()
        self.batches = 0
        self.seq = 0
        self.meta_version = -1
        self.started = time.monotonic()
        self.learner: Learner | None = None
        self.labels: LabelEncoder | None = None
        self.stream: RecordStream | None = None
        self.gossip: GossipNode | None = None
        self.uplink: Uplink | None = None
        self.outbox: Outbox | None = None
        self.host: LearnerHost | None = None
        self.api_port: int | None = None
        self.advertise: str | None = None
        self.last_loss: float | None = None
        self.stream_done = False
        self._stop = asyncio.Event()
        self._pending_meta: dict[str, Any] | None = None
        self._predictions: IO[str] | None = None
        self._learn_pool = ThreadPoolExecutor(1, thread_name_prefix="learner")
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="reader")
        self._task_set: set[asyncio.Task[Any]] = set()
        self._last_insight = time.monotonic()

    # Lifecycle.

    def request_stop(self) -> None:
        """Ask the node to finish its batch and shut down."""
        self._stop.set()
        if self.stream is not None:
            self.stream.stop()

    async def run(self) -> int:
        """Run until the stream ends (or a stop is requested); return 0."""
        if self.state != "created":
            raise InvalidStateError(f"client node cannot run: it is {self.state}")
        self.state = "running"
        try:
            await self._start()
            await self._pipeline()
            await self._finish()
            if self.settings.stay and not self._stop.is_set():
                client_log.info("stream ended; serving peers until stopped")
                await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    async def _start(self) -> None:
        settings = self.settings
        torch.set_num_threads(settings.threads)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = settings.node_id or self._stored_node_id()
        self.seq = self._stored_seq()
        loop = asyncio.get_running_loop()

        # Open the stream and build the learner for its columns.
        self.stream = await loop.run_in_executor(self._read_pool, self._open_stream)
        task = settings.task
        if task == "auto":
            task = "classification" if self.stream.target else "none"
        self.task = task
        self.labels = LabelEncoder(settings.max_classes)
        self.learner = Learner(
            len(self.stream.features),
            task="regression" if task == "regression" else "classification",
            max_classes=settings.max_classes,
            top_k=settings.top_k,
            seed=settings.seed,
        )
        self.host = LearnerHost(self.learner, self._learn_pool)
        await loop.run_in_executor(self._learn_pool, self.host.update_norms)
        client_log.info(
            "node %s learning %s on %s (%d features, target %s)",
            self.node_id,
            task,
            settings.stream,
            len(self.stream.features),
            self.stream.target,
        )
        if settings.predictions is not None:
            settings.predictions.parent.mkdir(parents=True, exist_ok=True)
            self._predictions = open(settings.predictions, "w", encoding="utf-8")

        # Gossip: listen, then dial the configured peers.
        host, port = settings.listen
        self.gossip = GossipNode(
            self.node_id,
            self.host,
            listen=(host, port),
            advertise=settings.advertise,
            peers=list(settings.peers),
            k=settings.gossip_k,
            margin=settings.gossip_margin,
            cooldown=settings.gossip_cooldown,
            interval=settings.gossip_interval,
        )
        await self.gossip.start()
        self.advertise = settings.advertise or _advertised(host, self.gossip.port)

        # Local API, then the uplink.
        from sfhfe_node.client.api import start_api

        self._api_runner, self.api_port = await start_api(self, *settings.api)
        if settings.server:
            self.outbox = Outbox(self.state_dir / "outbox")
            self.uplink = Uplink(
                settings.server, self.outbox, self._on_meta, token=_read_token(settings)
            )
            self.uplink.start()
            if len(self.outbox):
                self.uplink.wake()
        else:
            client_log.warning("no --server given: insights are not uploaded")

    def _open_stream(self) -> RecordStream:
        settings = self.settings
        if not settings.stream:
            raise ConfigError("stream is not set; use --stream csv:PATH")
        return RecordStream(
            settings.stream, settings.target, share=parse_share(settings.share)
        )

    async def _pipeline(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.stream is not None
        rate = self.settings.rate
        begun = time.monotonic()
        while not self._stop.is_set():
            batch = await loop.run_in_executor(
                self._read_pool, self.stream.read_batch, self.settings.batch_size
            )
            if batch is None:
                self.stream_done = True
                break
            await loop.run_in_executor(self._learn_pool, self._learn_batch, batch)
            self.batches += 1
            if self._insight_due():
                await self._queue_insight()
            if rate > 0:
                ahead = begun + self.learner.records / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def _finish(self) -> None:
        """Send the last insight and wait a while for the coordinator to take it."""
        if self.learner is not None and self.learner.records:
            await self._queue_insight()
        if self.uplink is not None and self.outbox is not None:
            timeout = 2.0 if self._stop.is_set() else self.settings.drain_timeout
            if not await self.uplink.drain(timeout):
                client_log.warning(
                    "coordinator unreachable; %d insight(s) stay in the outbox",
                    len(self.outbox),
                )
        client_log.info(
            "stream done: %d records, accuracy %s, no-change %s",
            self.learner.records if self.learner else 0,
            _fmt(self.scores.accuracy),
            _fmt(self.scores.no_change_accuracy),
        )

    async def _shutdown(self) -> None:
        self.state = "stopping"
        errors: list[BaseException] = []
        final = self.summary() if self.learner is not None else None

        # Stop the links, newest first.
        for closer in (
            self.uplink.close if self.uplink else None,
            self.gossip.close if self.gossip else None,
            self._api_runner.cleanup if getattr(self, "_api_runner", None) else None,
        ):
            if closer is None:
                continue
            try:
                await closer()
            except Exception as exc:  # teardown goes on; reported together below
                errors.append(exc)

        # Flush local files, then the worker threads.
        if self._predictions is not None:
            self._predictions.close()
        if self.stream is not None:
            self.stream.close()
        self._learn_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        self.state = "stopped"
        if self.settings.summary is not None and final is not None:
            final["state"] = self.state
            _write_json(self.settings.summary, final)
        if errors:
            raise ExceptionGroup("client shutdown failed", errors)

    # Learner thread.

    def _learn_batch(self, batch: Batch) -> None:
        assert self.learner is not None and self.labels is not None
        if self._pending_meta is not None:
            meta, self._pending_meta = self._pending_meta, None
            self.learner.apply_meta(meta["learning_rates"], meta["router_priors"])
        y = self._targets(batch)
        prediction, report = self.learner.step(batch.features, y)
        self.last_loss = float(report.loss)
        if self.task == "classification":
            self.scores.update(np.asarray(prediction.labels), y.astype(np.int64))
        if self._predictions is not None:
            self._write_predictions(batch, prediction)
        self.host.refresh()
        if self.batches % 50 == 0:
            self.host.update_norms()

    def _targets(self, batch: Batch) -> np.ndarray:
        if self.task == "classification":
            return self.labels.encode_many(batch.targets).astype(np.float64)
        if self.task == "regression":
            return np.array([_to_float(value) for value in batch.targets])
        return np.full(len(batch), -1.0)

    def _write_predictions(self, batch: Batch, prediction: Any) -> None:
        names = self.learner.expert_names
        anomaly = np.asarray(prediction.anomaly, dtype=np.float64)
        experts = np.asarray(prediction.experts)
        drift = bool(self.learner.drift_active) if hasattr(self.learner, "drift_active") else False
        if self.task == "classification":
            shown = [self.labels.decode(int(label)) for label in prediction.labels]
        elif self.task == "regression":
            shown = [float(value) for value in prediction.values]
        else:
            shown = [None] * len(batch)
        lines = []
        for row, index in enumerate(batch.index.tolist()):
            lines.append(
                json.dumps(
                    {
                        "index": index,
                        "prediction": shown[row],
                        "anomaly": round(float(anomaly[row]), 6),
                        "drift": drift,
                        "experts": [names[e] for e in experts[row].tolist()],
                    }
                )
            )
        self._predictions.write("\n".join(lines) + "\n")
        self._predictions.flush()

    # Insights and meta.

    def _insight_due(self) -> bool:
        settings = self.settings
        if self.batches % settings.insight_every == 0:
            return True
        return time.monotonic() - self._last_insight >= settings.insight_seconds

    async def _queue_insight(self) -> None:
        loop = asyncio.get_running_loop()
        window = await loop.run_in_executor(self._learn_pool, self.learner.take_window)
        self._last_insight = time.monotonic()
        if not window["records"] or self.outbox is None:
            return
        insight = validate_insight(
            {
                "schema": INSIGHT_SCHEMA,
                "node_id": self.node_id,
                "seq": self.seq,
                "time": time.time(),
                "task": self.task,
                "records": int(self.learner.records),
                "window": {
                    "records": int(window["records"]),
                    "loss": float(window["loss"]),
                    "accuracy": window["accuracy"],
                },
                "experts": window["experts"],
                "drift": window["drift"],
                "memory_bytes": int(window["memory_bytes"]),
                "embedding": [float(v) for v in self.host.embedding()],
                "gossip": self.advertise,
            }
        )
        self.outbox.put(self.seq, msgpack.packb(insight))
        self.seq += 1
        _write_text(self.state_dir / "seq", str(self.seq))
        self.uplink.wake()

    def _on_meta(self, meta: dict[str, Any]) -> None:
        if self.settings.ignore_meta:
            return
        if meta["version"] > self.meta_version and meta["learning_rates"]:
            self.meta_version = meta["version"]
            self._pending_meta = meta

    # Status.

    def summary(self) -> dict[str, Any]:
        """The node's figures, as ``/v1/status`` and the summary file give them."""
        gossip = self.gossip.stats() if self.gossip else {}
        return {
            "node_id": self.node_id,
            "state": self.state,
            "stream_done": self.stream_done,
            "task": getattr(self, "task", None),
            "records": int(self.learner.records) if self.learner else 0,
            "batches": self.batches,
            "position": self.stream.position if self.stream else 0,
            "skipped_rows": self.stream.skipped if self.stream else 0,
            "bad_cells": self.stream.bad_cells if self.stream else 0,
            "accuracy": self.scores.accuracy,
            "no_change_accuracy": self.scores.no_change_accuracy,
            "loss": self.last_loss,
            "insights_sent": self.seq,
            "insights_acked": self.uplink.acked if self.uplink else 0,
            "insights_rejected": self.uplink.rejected if self.uplink else 0,
            "outbox": len(self.outbox) if self.outbox else 0,
            "meta_version": self.meta_version,
            "learning_rates": self.learner.learning_rates() if self.learner else {},
            "gossip_address": self.advertise,
            "gossip_sent": gossip.get("sent", 0),
            "gossip_accepted": gossip.get("accepted", 0),
            "gossip_rejected": gossip.get("rejected", 0),
            "gossip_rejected_by_reason": gossip.get("rejected_by_reason", {}),
            "peers": gossip.get("peers", []),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    # State files.

    def _stored_node_id(self) -> str:
        path = self.state_dir / "node_id"
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
        node_id = "node-" + uuid.uuid4().hex[:12]
        _write_text(path, node_id)
        return node_id

    def _stored_seq(self) -> int:
        path = self.state_dir / "seq"
        stored = int(path.read_text()) if path.exists() else 0
        pending = Outbox(self.state_dir / "outbox").pending() if self.settings.server else []
        return max([stored] + [seq + 1 for seq in pending])


async def run_client(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Run a client node until its stream ends or ``stop`` is set."""
    node = ClientNode(settings)
    if stop is not None:
        watcher = asyncio.create_task(_relay(stop, node))
        try:
            return await node.run()
        finally:
            watcher.cancel()
    return await node.run()


async def _relay(stop: asyncio.Event, node: ClientNode) -> None:
    await stop.wait()
    node.request_stop()


def _read_token(settings: Settings) -> str | None:
    if settings.token_file is None:
        return None
    try:
        token = settings.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"token_file={str(settings.token_file)!r} cannot be read: {exc.strerror}"
        ) from None
    if not token:
        raise ConfigError(f"token_file={str(settings.token_file)!r} is empty")
    return token


def _advertised(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}"


def _to_float(value: str | None) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(data, indent=2))
