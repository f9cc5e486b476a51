"""The client daemon: one node learning from its stream and talking to others.

Concurrent parts of one asyncio process:

- the pipeline: read a mini-batch (reader thread), predict then learn
  (learner thread), write the predictions, every few batches put an insight in
  the outbox, and every few thousand records write a checkpoint;
- the uplink, which delivers the outbox to the coordinator and hands back
  meta-parameters (applied by the learner thread before its next batch);
- the gossip node, which exchanges expert weights with peers;
- the local API for the operator and for applications;
- under systemd, the heartbeat: ``STATUS=`` lines and watchdog pings, which
  stop when a batch has been stuck for ``watchdog_stall`` seconds.

All learner calls, gossip imports included, run on one worker thread, so the
learner is never touched by two threads at once and the event loop stays free.

On start the node resumes from its newest intact checkpoint: it restores the
learner, skips the records the checkpoint covers, cuts the predictions file
back to the length the checkpoint recorded and keeps its node id and insight
sequence, so that a crash at any moment loses no record and repeats none.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import torch
from aiohttp import web

from sfhfe_node.client.api import start_api
from sfhfe_node.client.checkpoint import CheckpointStore
from sfhfe_node.client.files import write_atomic, write_json
from sfhfe_node.client.host import LearnerHost
from sfhfe_node.client.outbox import Outbox
from sfhfe_node.client.predictions import PredictionWriter
from sfhfe_node.client.session import LearningSession
from sfhfe_node.client.uplink import Uplink
from sfhfe_node.config import Settings
from sfhfe_node.errors import ConfigError, InsightError, InvalidStateError, LearnerError
from sfhfe_node.gossip.discovery import Discovery
from sfhfe_node.gossip.node import GossipNode
from sfhfe_node.learner import LabelEncoder, Learner
from sfhfe_node.learner.rules import load_rules
from sfhfe_node.logs import client_log
from sfhfe_node.security import read_cluster_key, read_token, tls_contexts
from sfhfe_node.stream import Batch, RecordStream, parse_share
from sfhfe_node.systemd import Notifier
from sfhfe_node.wire.insight import make_insight, validate_meta

__all__ = ["ClientNode", "run_client"]

CHECKPOINT_FORMAT = 1


class ClientNode:
    """One client node, from its settings to its exit status.

    States: ``created`` → ``running`` → ``stopping`` → ``stopped``.
    :meth:`run` may be called once; :meth:`request_stop` at any time.
    """

    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.state = "created"
        self.state_dir: Path = settings.state_dir
        self.node_id = ""
        self.task = "classification"
        self.batches = 0
        self.seq = 0
        self.meta_version = -1
        self.started = time.monotonic()
        self.stream_done = False
        self.resumed_from: int | None = None
        self.last_checkpoint: float | None = None
        self.checkpoints = 0
        self.session: LearningSession | None = None
        self.stream: RecordStream | None = None
        self.gossip: GossipNode | None = None
        self.uplink: Uplink | None = None
        self.outbox: Outbox | None = None
        self.host: LearnerHost | None = None
        self.discovery: Discovery | None = None
        self.checkpoint_store = CheckpointStore(self.state_dir)
        self.api_port: int | None = None
        self._lock_fd: int | None = None
        self.advertise: str | None = None
        self.learn_pool = ThreadPoolExecutor(1, thread_name_prefix="learner")
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="reader")
        self._api_runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._last_insight = time.monotonic()
        self._records_at_checkpoint = 0
        self._batch_started: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # Lifecycle.

    def reload(self) -> None:
        """Re-read the rules file (on SIGHUP); a bad file keeps the old rules."""
        if self.settings.rules is None or self.learner is None:
            return
        try:
            rules = load_rules(self.settings.rules)
        except ConfigError as exc:
            client_log.error("rules not reloaded: %s", exc)
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.learn_pool, self.learner.replace_rules, rules
        )
        future.add_done_callback(_report_reload)

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
            self.notifier.ready(self._status_line())
            await self._pipeline()
            await self._finish()
            if self.settings.stay and not self._stop.is_set():
                client_log.info("stream ended; serving peers until stopped")
                await self._stop.wait()
        finally:
            self.notifier.stopping()
            await self._shutdown()
        return 0

    def _lock_state_dir(self) -> None:
        """Hold ``STATE_DIR/lock`` for the life of the process: two nodes on
        one state directory would share an id and overwrite each other's
        checkpoints. The lock file names the holder's process id."""
        path = self.state_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"another node (process {holder}) is using {self.state_dir}; "
                "give each node its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    async def _start(self) -> None:
        settings = self.settings
        torch.set_num_threads(settings.threads)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        loop = asyncio.get_running_loop()

        # Identity, then the checkpoint that says where to resume.
        self.node_id = settings.node_id or self._stored_node_id()
        checkpoint = await loop.run_in_executor(
            self.learn_pool, self.checkpoint_store.load
        )
        self.seq = self._stored_seq(checkpoint)

        # The stream, from the first record the checkpoint does not cover.
        start = int(checkpoint["position"]) if checkpoint else 0
        self.stream = await loop.run_in_executor(
            self._read_pool, self._open_stream, start
        )
        task = settings.task
        if task == "auto":
            task = "classification" if self.stream.target else "none"
        self.task = task

        # The learner, restored when there is a checkpoint for this stream.
        labels = LabelEncoder(settings.max_classes)
        learner = Learner(
            len(self.stream.features),
            task=task,
            max_classes=settings.max_classes,
            top_k=settings.top_k,
            seed=settings.seed,
            feature_names=list(self.stream.features),
            target_name=self.stream.target or "target",
            rules=load_rules(settings.rules) if settings.rules else None,
            labels=labels,
        )
        self.session = LearningSession(learner, labels, task)
        if checkpoint is not None:
            self._restore(checkpoint)
        if settings.predictions is not None:
            offset = checkpoint.get("predictions_offset") if checkpoint else None
            self.session.predictions = PredictionWriter(settings.predictions, offset)
        self.host = LearnerHost(learner, self.learn_pool)
        await loop.run_in_executor(self.learn_pool, self.host.update_norms)
        client_log.info(
            "node %s learning %s on %s from record %d (%d features, target %s)",
            self.node_id,
            task,
            settings.stream,
            self.stream.position,
            len(self.stream.features),
            self.stream.target,
        )

        # Gossip: listen, then dial the configured and remembered peers.
        host, port = settings.listen
        ssl_server, ssl_client = tls_contexts(
            settings.tls_cert, settings.tls_key, settings.tls_ca
        )
        self.gossip = GossipNode(
            self.node_id,
            self.host,
            listen=(host, port),
            advertise=settings.advertise,
            peers=list(settings.peers),
            cluster_key=(
                read_cluster_key(settings.cluster_key_file)
                if settings.cluster_key_file
                else None
            ),
            ssl_server=ssl_server,
            ssl_client=ssl_client,
            k=settings.gossip_k,
            margin=settings.gossip_margin,
            cooldown=settings.gossip_cooldown,
            interval=settings.gossip_interval,
            blend=settings.gossip_blend,
            explore_period=settings.gossip_explore or None,
        )
        await self.gossip.start()
        scheme = "wss" if ssl_server is not None else "ws"
        self.advertise = settings.advertise or _advertised(
            scheme, host, self.gossip.port
        )
        for address in (checkpoint or {}).get("peer_addresses", []):
            if address not in settings.peers and address != self.advertise:
                self.gossip.add_peer_address(address)

        # Local API, the uplink, and the heartbeat for systemd.
        self._api_runner, self.api_port = await start_api(self, *settings.api)
        client_log.info(
            "local API on http://%s:%d (status, metrics, predict); gossip at %s",
            settings.api[0], self.api_port, self.advertise,
        )
        if settings.server:
            token = read_token(settings.token_file) if settings.token_file else None
            self.outbox = Outbox(self.state_dir / "outbox")
            self.uplink = Uplink(
                settings.server,
                self.outbox,
                self._on_meta,
                token=token,
                ssl_context=ssl_client,
            )
            self.uplink.start()
            if len(self.outbox):
                client_log.info("%d insight(s) waiting in the outbox", len(self.outbox))
                self.uplink.wake()
            if not settings.ignore_meta:
                await self._fetch_meta(token, ssl_client)
            if settings.discovery_interval > 0:
                self.discovery = Discovery(
                    settings.server,
                    self.node_id,
                    self.gossip.add_peer_address,
                    token=token,
                    interval=settings.discovery_interval,
                    ssl_context=ssl_client,
                )
                self.discovery.start()
        else:
            client_log.warning("no --server given: insights are not uploaded")
        if self.notifier.enabled:
            self._spawn(self._heartbeat(), "heartbeat")

    async def _fetch_meta(
        self, token: str | None, context: ssl.SSLContext | None
    ) -> None:
        """Start from the population's meta-parameters, if the coordinator answers.

        A node that joins a running federation then uses what the others
        learned from its first record, instead of after its first upload.
        """
        headers = {"Authorization": "Bearer " + token} if token else {}
        timeout = aiohttp.ClientTimeout(total=5.0)
        url = self.settings.server + "/v1/meta"
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(
                    url, headers=headers, ssl=context or True
                ) as reply:
                    if reply.status != 200:
                        client_log.info(
                            "no meta-parameters at start: HTTP %d", reply.status
                        )
                        return
                    document = validate_meta(await reply.json(content_type=None))
        except InsightError as exc:
            client_log.warning("coordinator meta-parameters refused: %s", exc)
            return
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            client_log.info(
                "no meta-parameters at start: %s", str(exc) or type(exc).__name__
            )
            return
        self._on_meta(document)

    def _open_stream(self, start: int) -> RecordStream:
        settings = self.settings
        if not settings.stream:
            raise ConfigError("stream is not set; use --stream csv:PATH")
        return RecordStream(
            settings.stream,
            settings.target,
            share=parse_share(settings.share),
            start=start,
            follow=settings.follow,
        )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            found = checkpoint.get("format")
            raise ConfigError(
                f"checkpoint in {self.state_dir} has format {found!r};"
                f" this version reads {CHECKPOINT_FORMAT}"
            )
        if list(checkpoint["features"]) != self.stream.features:
            raise ConfigError(
                f"the stream's columns differ from those of the checkpoint in "
                f"{self.state_dir}; move checkpoint.bin away to start afresh"
            )
        try:
            self.session.load_state_dict(checkpoint)
        except (LearnerError, KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"checkpoint in {self.state_dir} does not fit this version's learner "
                f"({exc}); move checkpoint.bin away to start afresh"
            ) from None
        self.batches = int(checkpoint["batches"])
        self.meta_version = int(checkpoint["meta_version"])
        self.resumed_from = int(checkpoint["position"])
        self._records_at_checkpoint = int(self.learner.records)
        client_log.info(
            "resumed from checkpoint at record %d (%d learned)",
            self.resumed_from,
            self.learner.records,
        )

    def _batch_size(self) -> int:
        """Records to read next: smaller batches while the learner is young.

        A young model gains most from frequent updates: on thirds of Elec2
        learned from scratch, batches of 32 for the first 10,000 records then
        64 matched 32 throughout (0.932 on average) where 64 throughout
        reached 0.924, at the throughput of 64 afterwards.
        """
        settings = self.settings
        if self.learner is not None and self.learner.records < settings.early_records:
            return min(settings.early_batch_size, settings.batch_size)
        return settings.batch_size

    async def _pipeline(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.settings.rate
        begun = time.monotonic()
        first = self.learner.records
        while not self._stop.is_set():
            batch = await loop.run_in_executor(
                self._read_pool, self.stream.read_batch, self._batch_size()
            )
            if batch is None:
                self.stream_done = not self._stop.is_set()
                break
            self._batch_started = time.monotonic()
            await loop.run_in_executor(self.learn_pool, self._learn_batch, batch)
            self._batch_started = None
            self.batches += 1
            for event in self.session.take_drift():
                client_log.info(
                    "drift detected at record %d: %s, magnitude %.3g, features %s",
                    event["time"],
                    event["kind"],
                    event["magnitude"],
                    ",".join(event["features"]) or "-",
                )
            if self._insight_due():
                await self._queue_insight()
            if self._checkpoint_due():
                await loop.run_in_executor(
                    self.learn_pool, self._save_checkpoint, self._peer_addresses()
                )
            if rate > 0:
                ahead = begun + (self.learner.records - first) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def _finish(self) -> None:
        """Send the last insight, checkpoint, and give the coordinator a while."""
        loop = asyncio.get_running_loop()
        if self.learner.records:
            await self._queue_insight()
        await loop.run_in_executor(
            self.learn_pool, self._save_checkpoint, self._peer_addresses()
        )
        if self.uplink is not None:
            stopping = self._stop.is_set()
            timeout = (
                self.settings.stop_timeout / 4
                if stopping
                else self.settings.drain_timeout
            )
            if not await self.uplink.drain(timeout):
                client_log.warning(
                    "coordinator unreachable; %d insight(s) stay in the outbox",
                    len(self.outbox),
                )
        client_log.info(
            "%s: %d records, accuracy %s, no-change %s",
            "stream done" if self.stream_done else "stopped",
            self.learner.records,
            _fmt(self.session.scores.accuracy),
            _fmt(self.session.scores.no_change_accuracy),
        )

    async def _shutdown(self) -> None:
        self.state = "stopping"
        errors: list[BaseException] = []
        final = self.summary() if self.learner is not None else None
        if final is not None:
            loop = asyncio.get_running_loop()
            final["learner"] = await loop.run_in_executor(
                self.learn_pool, self.learner.status
            )

        # Stop background tasks, then the links: uplink, gossip, local API.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closers = [
            self.discovery.close if self.discovery else None,
            self.uplink.close if self.uplink else None,
            self.gossip.close if self.gossip else None,
            self._api_runner.cleanup if self._api_runner else None,
        ]
        for closer in closers:
            if closer is None:
                continue
            try:
                await closer()
            except Exception as exc:  # teardown goes on; reported together below
                errors.append(exc)

        # Close local files, then the worker threads.
        if self.session is not None and self.session.predictions is not None:
            self.session.predictions.close()
        if self.stream is not None:
            self.stream.close()
        self.learn_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        self.notifier.close()
        self.state = "stopped"
        if self.settings.summary is not None and final is not None:
            final["state"] = self.state
            write_json(self.settings.summary, final)
        if errors:
            raise ExceptionGroup("client shutdown failed", errors)

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat(self) -> None:
        """Ping the watchdog while batches complete; send STATUS= lines."""
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        stall = self.settings.watchdog_stall
        while True:
            await asyncio.sleep(interval)
            started = self._batch_started
            if started is not None and time.monotonic() - started > stall:
                client_log.error(
                    "learner stalled for %.0f s; watchdog pings stop", stall
                )
            else:
                self.notifier.watchdog()
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        records = self.learner.records if self.learner else 0
        peers = len(self.gossip.stats()["peers"]) if self.gossip else 0
        last = self.session.last_loss if self.session else None
        loss = "-" if last is None else f"{last:.4f}"
        return f"records {records}, peers {peers}, loss {loss}"

    # Learner thread.

    def _learn_batch(self, batch: Batch) -> None:
        self.session.learn(batch)
        self.host.refresh()
        if self.batches % 50 == 0:
            self.host.update_norms()

    def _checkpoint_due(self) -> bool:
        since = self.learner.records - self._records_at_checkpoint
        if since >= self.settings.checkpoint_every:
            return True
        last = self.last_checkpoint or self.started
        return time.monotonic() - last >= self.settings.checkpoint_seconds

    def _peer_addresses(self) -> list[str]:
        """Addresses of the peers known now (event loop)."""
        known = self.gossip.stats().get("known", {}) if self.gossip else {}
        return sorted(
            {info["address"] for info in known.values() if info.get("address")}
        )

    def _save_checkpoint(self, peer_addresses: list[str]) -> None:
        """Write the whole state durably (learner thread, between batches)."""
        predictions = self.session.predictions
        if predictions is not None:
            predictions.sync()
        state = {
            "format": CHECKPOINT_FORMAT,
            "node_id": self.node_id,
            "stream": self.settings.stream,
            "features": list(self.stream.features),
            "position": int(self.stream.position),
            "predictions_offset": predictions.offset if predictions else None,
            **self.session.state_dict(),
            "batches": self.batches,
            "seq": self.seq,
            "meta_version": self.meta_version,
            "peer_addresses": peer_addresses,
            "time": time.time(),
        }
        size = self.checkpoint_store.save(state)
        self.last_checkpoint = time.monotonic()
        self._records_at_checkpoint = int(self.learner.records)
        self.checkpoints += 1
        client_log.info(
            "checkpoint written at record %d (%d bytes)", self.stream.position, size
        )

    # Insights and meta.

    def _insight_due(self) -> bool:
        settings = self.settings
        if self.batches % settings.insight_every == 0:
            return True
        return time.monotonic() - self._last_insight >= settings.insight_seconds

    async def _queue_insight(self) -> None:
        loop = asyncio.get_running_loop()
        window = await loop.run_in_executor(self.learn_pool, self.learner.take_window)
        self._last_insight = time.monotonic()
        if not window["records"] or self.outbox is None:
            return
        insight = make_insight(
            node_id=self.node_id,
            seq=self.seq,
            task=self.task,
            records=self.learner.records,
            window=window,
            embedding=self.host.embedding(),
            gossip=self.advertise,
            now=time.time(),
            peer_models=_insight_peer_models(self.host.peer_models()),
        )
        self.outbox.put(self.seq, msgpack.packb(insight))
        self.seq += 1
        write_atomic(self.state_dir / "seq", str(self.seq).encode())
        self.uplink.wake()

    def _on_meta(self, meta: dict[str, Any]) -> None:
        if self.settings.ignore_meta:
            return
        if meta["version"] > self.meta_version and meta["learning_rates"]:
            self.meta_version = meta["version"]
            self.session.pending_meta = meta

    # Status.

    @property
    def learner(self) -> Learner | None:
        return self.session.learner if self.session else None

    def summary(self) -> dict[str, Any]:
        """The node's figures, as ``/v1/status`` and the summary file give them."""
        gossip = self.gossip.stats() if self.gossip else {}
        session = self.session
        learner = self.learner
        age = None
        if self.last_checkpoint is not None:
            age = round(time.monotonic() - self.last_checkpoint, 3)
        return {
            "node_id": self.node_id,
            "state": self.state,
            "stream_done": self.stream_done,
            "task": self.task,
            "records": int(learner.records) if learner else 0,
            "batches": self.batches,
            "position": self.stream.position if self.stream else 0,
            "resumed_from": self.resumed_from,
            "skipped_rows": self.stream.skipped if self.stream else 0,
            "bad_cells": self.stream.bad_cells if self.stream else 0,
            "accuracy": session.scores.accuracy if session else None,
            "no_change_accuracy": session.scores.no_change_accuracy
            if session
            else None,
            "loss": session.last_loss if session else None,
            "drift_events": session.drift_count if session else 0,
            "insights_sent": self.seq,
            "insights_acked": self.uplink.acked if self.uplink else 0,
            "insights_rejected": self.uplink.rejected if self.uplink else 0,
            "outbox": len(self.outbox) if self.outbox else 0,
            "checkpoints": self.checkpoints,
            "checkpoint_age_s": age,
            "meta_version": self.meta_version,
            "learning_rates": learner.learning_rates() if learner else {},
            "gossip_address": self.advertise,
            "gossip_sent": gossip.get("sent", 0),
            "gossip_accepted": gossip.get("accepted", 0),
            "gossip_rejected": gossip.get("rejected", 0),
            "gossip_rejected_by_reason": gossip.get("rejected_by_reason", {}),
            "peers": gossip.get("peers", []),
            "gossip": gossip,
            **_peer_figures(self.host),
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
        write_atomic(path, node_id.encode())
        return node_id

    def _stored_seq(self, checkpoint: dict[str, Any] | None) -> int:
        """The next insight number: never one that was used before."""
        path = self.state_dir / "seq"
        candidates = [int(checkpoint["seq"]) if checkpoint else 0]
        if path.exists():
            text = path.read_text().strip()
            candidates.append(int(text) if text.isdigit() else 0)
        if self.settings.server:
            pending = Outbox(self.state_dir / "outbox").pending()
            candidates += [seq + 1 for seq in pending]
        return max(candidates)


async def run_client(
    settings: Settings,
    stop: asyncio.Event | None = None,
    reload_hooks: list[Callable[[], None]] | None = None,
) -> int:
    """Run a client node until its stream ends or ``stop`` is set.

    The node adds its reload (rules file) to ``reload_hooks``, which the
    caller runs on SIGHUP.
    """
    node = ClientNode(settings)
    if reload_hooks is not None:
        reload_hooks.append(node.reload)
    if stop is None:
        return await node.run()
    watcher = asyncio.create_task(_relay(stop, node))
    try:
        return await node.run()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _relay(stop: asyncio.Event, node: ClientNode) -> None:
    await stop.wait()
    node.request_stop()


def _advertised(scheme: str, host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _report_reload(future: Any) -> None:
    error = future.exception()
    if error is None:
        client_log.info("rules reloaded")
    else:
        client_log.error("rules not reloaded: %s", error)


def _peer_figures(host: LearnerHost | None) -> dict[str, Any]:
    """The summary's peer-model figures: totals, and each peer's weight."""
    models = host.peer_models() if host is not None else {}
    return {
        "peer_weight": models.get("weight", 0.0),
        "peer_helped": models.get("helped", 0),
        "peer_hurt": models.get("hurt", 0),
        "peer_models": models.get("peers", {}),
    }


def _insight_peer_models(models: dict[str, Any]) -> dict[str, Any] | None:
    """The insight's ``peer_models`` field; None while the node holds none."""
    if not models.get("peers"):
        return None
    return {
        "weight": min(max(float(models["weight"]), 0.0), 1.0),
        "peers": len(models["peers"]),
        "helped": int(models["helped"]),
        "hurt": int(models["hurt"]),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
