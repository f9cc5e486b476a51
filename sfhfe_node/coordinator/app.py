"""The coordinator's HTTP application (``sfhfe-node --role server``).

Endpoints::

    POST /v1/insights        one insight, JSON or msgpack; replies with the meta
                             (rates spread for the sender, see MetaLearner.for_node)
    GET  /v1/meta            current meta-parameters, with an ETag
    GET  /v1/peers?node=ID&k=N   known nodes most similar to ID first
    GET  /v1/nodes           every node with its last window's loss and accuracy
    GET  /v1/dashboard?nodes=N&points=M   the live dashboard's document
    GET  /                   the live dashboard (files under /dashboard/)
    GET  /healthz            the process answers
    GET  /readyz             the store is open
    GET  /metrics            Prometheus text format

With a token file configured, every ``/v1/`` endpoint needs the header
``Authorization: Bearer <token>``; a missing or wrong token gets 401 and is
counted in ``sfhfe_auth_failures_total``. ``/healthz``, ``/readyz`` and
``/metrics`` stay open for probes and scrapers (they carry no node data), and
so do the dashboard's page and static files: the page then asks for the token
and sends it as that header with each poll of ``/v1/dashboard``. Every
response carries ``X-Content-Type-Options: nosniff`` and a Content-Security-
Policy allowing only the coordinator's own script, style and images.
With a certificate and a key the coordinator speaks HTTPS only.

Every rejection is a JSON body ``{"error": reason, "detail": message}`` with
a 4xx status; an unexpected failure is a 500 with the same shape and a logged
traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web

from sfhfe_node.coordinator.dashboard import (
    CONTENT_SECURITY_POLICY,
    Asset,
    DashboardLimits,
    build_document,
    load_assets,
)
from sfhfe_node.coordinator.meta import MetaLearner
from sfhfe_node.coordinator.peers import rank_peers
from sfhfe_node.coordinator.service import Coordinator, Snapshot
from sfhfe_node.coordinator.store import DURABILITY
from sfhfe_node.errors import ConfigError, InsightError, InvalidStateError, StoreError
from sfhfe_node.logs import coordinator_log
from sfhfe_node.security import read_token, server_ssl_context
from sfhfe_node.wire.insight import decode_body, validate_insight

__all__ = [
    "ASSETS_KEY",
    "CONFIG_KEY",
    "COORDINATOR_KEY",
    "TOKEN_KEY",
    "CoordinatorConfig",
    "make_app",
    "run_coordinator",
]

JSON_TYPE = "application/json"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack")

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/")
_ASSET_PREFIX = "/dashboard/"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class CoordinatorConfig:
    """Settings of the coordinator; a bad value raises :class:`ConfigError`.

    Parameters:
        host, port: address to listen on (default 127.0.0.1:8080; port 0
            picks a free port).
        state_dir: folder of the database (default ``state``).
        db_path: the SQLite file; ``None`` means
            ``state_dir / "coordinator.sqlite3"``.
        max_body_bytes: largest accepted upload (default 64 KiB); larger
            bodies get 413 before they are read.
        durability: ``"full"`` (default: every acknowledged insight survives
            a power loss) or ``"normal"`` (faster writes, the last commits
            may be lost on power loss).
        busy_timeout: seconds a store call waits for a database lock
            (default 5.0).
        peer_stale_seconds: nodes not heard from for this long are left out
            of peer lists and of the active count (default 300.0).
        peers_default_k, peers_max_k: peers returned when ``k`` is absent
            (default 8), and the largest ``k`` allowed (default 256).
        meta_min_samples, meta_max_interval, meta_min_interval,
        meta_drift_share, meta_accuracy_drop, meta_loss_rise,
        meta_top_quantile, meta_explore, meta_evidence, meta_margin,
        meta_first_samples, meta_temperature, lr_floor, lr_ceiling,
        meta_seed: the :class:`MetaLearner` settings ``min_samples``,
            ``max_interval``, ``min_interval``, ``drift_share``,
            ``accuracy_drop``, ``loss_rise``, ``top_quantile``,
            ``explore``, ``evidence``, ``margin``, ``first_samples``,
            ``temperature``, ``lr_floor``, ``lr_ceiling`` and ``seed``.
        shutdown_timeout: seconds in-flight requests get to finish on
            shutdown before they are cut, and then again the seconds the
            queued uploads get to commit before the store closes (default
            10.0); a stop therefore ends within about twice this.
        token_file: file holding the bearer token every ``/v1/`` request
            must carry (16-4096 printable characters, surrounding whitespace
            ignored); ``None`` (default) leaves the endpoints open.
        tls_cert, tls_key: PEM certificate chain and private key; with both
            the coordinator serves HTTPS (TLS 1.2 or later); ``None``
            (default) serves plain HTTP. Giving one without the other is an
            error.
        retention_days: insights older than this many days are deleted
            (default 30.0; 0 keeps them all).
        retention_rows: most insights kept in all (default 1,000,000; 0
            means no limit). Each node's latest insight is always kept.
        prune_interval: seconds between retention passes (default 60.0).
        max_batch: most uploads committed in one transaction (default 512).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = Path("state")
    db_path: Path | None = None
    max_body_bytes: int = 64 * 1024
    durability: str = "full"
    busy_timeout: float = 5.0
    peer_stale_seconds: float = 300.0
    peers_default_k: int = 8
    peers_max_k: int = 256
    meta_min_samples: int = 20
    meta_max_interval: float = 300.0
    meta_min_interval: float = 1.0
    meta_drift_share: float = 0.3
    meta_accuracy_drop: float = 0.1
    meta_loss_rise: float = 0.25
    meta_top_quantile: float = 0.25
    meta_explore: tuple[float, ...] = (0.7, 1.0, 1.4)
    meta_evidence: int = 12
    meta_margin: float = 1.0
    meta_first_samples: int = 4
    meta_temperature: float = 0.3
    lr_floor: float = 1e-5
    lr_ceiling: float = 1.0
    meta_seed: int = 0
    shutdown_timeout: float = 10.0
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    retention_days: float = 30.0
    retention_rows: int = 1_000_000
    prune_interval: float = 60.0
    max_batch: int = 512

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        for name in ("db_path", "token_file", "tls_cert", "tls_key"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        if self.retention_days < 0 or self.retention_rows < 0:
            raise ConfigError(
                f"retention_days and retention_rows must be >= 0, got "
                f"{self.retention_days} and {self.retention_rows}"
            )
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is outside 0..65535")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes {self.max_body_bytes} is below 1024")
        if self.durability not in DURABILITY:
            raise ConfigError(
                f"durability {self.durability!r} is not one of "
                f"{', '.join(DURABILITY)}"
            )
        positive = (
            "busy_timeout",
            "peer_stale_seconds",
            "shutdown_timeout",
            "prune_interval",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.peers_default_k <= self.peers_max_k:
            raise ConfigError(
                f"need 1 <= peers_default_k <= peers_max_k, got "
                f"{self.peers_default_k} and {self.peers_max_k}"
            )
        try:
            self.meta_learner()
        except ValueError as exc:
            raise ConfigError(f"bad meta-learner setting: {exc}") from None

    @property
    def database(self) -> Path:
        """The SQLite file in use."""
        return self.db_path or self.state_dir / "coordinator.sqlite3"

    @property
    def retention_seconds(self) -> float | None:
        """The age limit of insights in seconds, ``None`` for none."""
        return self.retention_days * 86400.0 if self.retention_days else None

    def meta_learner(self) -> MetaLearner:
        """A fresh meta learner with these settings."""
        return MetaLearner(
            min_samples=self.meta_min_samples,
            max_interval=self.meta_max_interval,
            min_interval=self.meta_min_interval,
            drift_share=self.meta_drift_share,
            accuracy_drop=self.meta_accuracy_drop,
            loss_rise=self.meta_loss_rise,
            top_quantile=self.meta_top_quantile,
            explore=tuple(self.meta_explore),
            evidence=self.meta_evidence,
            margin=self.meta_margin,
            first_samples=self.meta_first_samples,
            temperature=self.meta_temperature,
            lr_floor=self.lr_floor,
            lr_ceiling=self.lr_ceiling,
            seed=self.meta_seed,
        )


CONFIG_KEY = web.AppKey("sfhfe_config", CoordinatorConfig)
COORDINATOR_KEY = web.AppKey("sfhfe_coordinator", Coordinator)
TOKEN_KEY = web.AppKey("sfhfe_token", bytes)
ASSETS_KEY = web.AppKey("sfhfe_assets", dict[str, Asset])


class _Rejected(Exception):
    """A request refused with a 4xx status and a reason token."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def make_app(config: CoordinatorConfig) -> web.Application:
    """Build the coordinator application; the store opens at start-up.

    Reads the token file now, so a bad one raises :class:`ConfigError`
    before anything listens.
    """
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[_error_middleware, _auth_middleware],
    )
    app[CONFIG_KEY] = config
    if config.token_file is not None:
        app[TOKEN_KEY] = read_token(config.token_file).encode()
    app[COORDINATOR_KEY] = Coordinator(
        config.database,
        config.meta_learner(),
        durability=config.durability,
        busy_timeout=config.busy_timeout,
        max_batch=config.max_batch,
        retention_seconds=config.retention_seconds,
        retention_rows=config.retention_rows or None,
        prune_interval=config.prune_interval,
    )
    app[ASSETS_KEY] = load_assets()
    app.cleanup_ctx.append(_coordinator_context)
    app.on_response_prepare.append(_security_headers)
    app.router.add_post("/v1/insights", post_insight)
    app.router.add_get("/v1/meta", get_meta)
    app.router.add_get("/v1/peers", get_peers)
    app.router.add_get("/v1/nodes", get_nodes)
    app.router.add_get("/v1/dashboard", get_dashboard)
    app.router.add_get("/", get_page)
    app.router.add_get(_ASSET_PREFIX + "{name}", get_asset)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/readyz", get_ready)
    app.router.add_get("/metrics", get_metrics)
    return app


async def run_coordinator(
    config: CoordinatorConfig,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the coordinator until ``stop`` is set, then shut down cleanly.

    ``ready`` is called with the bound port once the store is open and the
    socket listens. Shutdown stops accepting connections, gives in-flight
    requests ``config.shutdown_timeout`` seconds, commits the uploads still
    queued (within the same time again), then closes the store.
    """
    context = None
    if config.tls_cert is not None and config.tls_key is not None:
        context = server_ssl_context(config.tls_cert, config.tls_key)
    app = make_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.shutdown_timeout,
    )
    await runner.setup()
    try:
        # A deep accept queue, so that hundreds of clients connecting at
        # once are not left to the kernel's SYN retries.
        site = web.TCPSite(
            runner, config.host, config.port, ssl_context=context, backlog=1024
        )
        await site.start()
        port = int(runner.addresses[0][1])
        scheme = "https" if context is not None else "http"
        coordinator_log.info("listening on %s:%d (%s)", config.host, port, scheme)
        if ready is not None:
            ready(port)
        await stop.wait()
        coordinator_log.info("shutting down")
    finally:
        await runner.cleanup()
    coordinator_log.info("coordinator stopped")


async def _coordinator_context(app: web.Application) -> AsyncIterator[None]:
    coordinator = app[COORDINATOR_KEY]
    await coordinator.start()
    yield
    await coordinator.close(app[CONFIG_KEY].shutdown_timeout)


# Middleware: every failure becomes a JSON reply.


@web.middleware
async def _error_middleware(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Rejected as exc:
        return _error(exc.status, exc.reason, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = (exc.reason or "error").lower().replace(" ", "_")
        response = _error(exc.status, reason, exc.text or exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except InvalidStateError as exc:
        return _error(503, "unavailable", str(exc))
    except StoreError as exc:
        coordinator_log.warning("store failed: %s", exc)
        return _error(503, "store_error", "the store failed; retry later")
    except Exception:
        request.app[COORDINATOR_KEY].metrics.internal_errors += 1
        coordinator_log.exception(
            "unexpected error on %s %s", request.method, request.path
        )
        return _error(500, "internal", "unexpected server error")


@web.middleware
async def _auth_middleware(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    expected = request.app.get(TOKEN_KEY)
    path = request.path
    if expected is None or path in _OPEN_PATHS or path.startswith(_ASSET_PREFIX):
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is None:
        reason, detail = "missing", "an Authorization: Bearer token is required"
    else:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), expected
        ):
            return await handler(request)
        reason, detail = "wrong", "the bearer token is not valid"
    request.app[COORDINATOR_KEY].metrics.deny(reason)
    response = _error(401, "unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="sfhfe"'
    return response


async def _security_headers(
    request: web.Request, response: web.StreamResponse
) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


# Handlers.


async def post_insight(request: web.Request) -> web.StreamResponse:
    """Store one insight and reply with the current meta-parameters."""
    coordinator = request.app[COORDINATOR_KEY]
    coordinator.metrics.received += 1
    try:
        insight, kind = await _read_insight(request)
    except _Rejected as exc:
        coordinator.metrics.reject(exc.reason)
        raise
    added = await coordinator.submit(insight)
    meta = coordinator.learner.for_node(coordinator.meta, insight["node_id"])
    reply = {"ok": True, "duplicate": not added, "meta": meta.to_document()}
    if kind in MSGPACK_TYPES:
        return web.Response(body=msgpack.packb(reply), content_type=kind)
    return web.json_response(reply)


async def _read_insight(request: web.Request) -> tuple[dict[str, Any], str]:
    limit = request.app[CONFIG_KEY].max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise _Rejected(
            413, "body_too_large", f"body of {length} bytes; at most {limit}"
        )
    header = request.headers.get("Content-Type", "")
    kind = header.split(";", 1)[0].strip().lower()
    if kind != JSON_TYPE and kind not in MSGPACK_TYPES:
        raise _Rejected(
            415,
            "unsupported_media_type",
            f"content type {kind[:60]!r} is not allowed; use {JSON_TYPE} or "
            f"{MSGPACK_TYPES[0]}",
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Rejected(
            413, "body_too_large", f"body is larger than {limit} bytes"
        ) from None
    try:
        return validate_insight(decode_body(body, header)), kind
    except InsightError as exc:
        status = 415 if exc.reason == "unsupported_media_type" else 400
        raise _Rejected(status, exc.reason, str(exc)) from None


async def get_meta(request: web.Request) -> web.StreamResponse:
    """Current meta-parameters; 304 when the client's ETag is current."""
    meta = request.app[COORDINATOR_KEY].meta
    tag = f'"{meta.version}"'
    wanted = request.headers.get("If-None-Match", "")
    tags = {part.strip().removeprefix("W/") for part in wanted.split(",")}
    if tag in tags or "*" in tags:
        return web.Response(status=304, headers={"ETag": tag})
    response = web.json_response(meta.to_document())
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "no-cache"
    return response


async def get_peers(request: web.Request) -> web.StreamResponse:
    """Known nodes with their gossip addresses, most similar to ``node`` first."""
    config = request.app[CONFIG_KEY]
    node_id = _single(request, "node")
    if node_id is None:
        raise _Rejected(400, "missing_field", "query parameter node is required")
    if not _NODE_ID.fullmatch(node_id):
        raise _Rejected(400, "bad_value", f"node={node_id[:80]!r} is not a node id")
    raw_k = _single(request, "k")
    k = config.peers_default_k
    if raw_k is not None:
        if not raw_k.isdigit() or len(raw_k) > 6:
            raise _Rejected(400, "bad_type", f"k={raw_k[:20]!r} is not an integer")
        k = int(raw_k)
        if not 1 <= k <= config.peers_max_k:
            raise _Rejected(
                400, "out_of_range", f"k={k} is outside [1, {config.peers_max_k}]"
            )
    coordinator = request.app[COORDINATOR_KEY]
    nodes = await coordinator.nodes()
    peers = rank_peers(
        nodes, node_id, k, coordinator.clock(), config.peer_stale_seconds
    )
    return web.json_response({"node": node_id, "peers": peers})


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _Rejected(400, "bad_value", f"query parameter {name} is repeated")
    return values[0] if values else None


async def get_nodes(request: web.Request) -> web.StreamResponse:
    """Every known node with its last window's records, loss and accuracy."""
    nodes = await request.app[COORDINATOR_KEY].nodes()
    listing = []
    for node in nodes:
        last = node.last or {}
        window = last.get("window", {})
        listing.append(
            {
                "node_id": node.node_id,
                "gossip": node.gossip,
                "task": last.get("task"),
                "records": node.records,
                "first_seen": node.first_seen,
                "last_seen": node.last_seen,
                "last_seq": node.last_seq,
                "window_records": window.get("records"),
                "window_loss": window.get("loss"),
                "window_accuracy": window.get("accuracy"),
                "drift_active": last.get("drift", {}).get("active"),
            }
        )
    return web.json_response(listing)


async def get_dashboard(request: web.Request) -> web.StreamResponse:
    """The dashboard's document: bounded views of nodes, curves, drift and meta."""
    config = request.app[CONFIG_KEY]
    coordinator = request.app[COORDINATOR_KEY]
    defaults = DashboardLimits()
    limits = DashboardLimits(
        nodes=_bounded(request, "nodes", defaults.nodes, DashboardLimits.max_nodes),
        points=_bounded(
            request, "points", defaults.points, DashboardLimits.max_points
        ),
    )
    snapshot = await coordinator.snapshot(
        nodes=limits.nodes,
        points=limits.points,
        drift_events=limits.drift_events,
        meta_versions=limits.meta_versions,
        stale_seconds=config.peer_stale_seconds,
    )
    # Decoding the bodies, ranking peers (quadratic in the nodes shown) and
    # encoding megabytes of JSON all run off the loop.
    body = await asyncio.to_thread(
        _dashboard_body,
        snapshot,
        coordinator.meta.version,
        config.peer_stale_seconds,
        config.peers_default_k,
    )
    return web.Response(
        body=body,
        content_type=JSON_TYPE,
        headers={"Cache-Control": "no-store"},
    )


def _dashboard_body(
    snapshot: Snapshot, meta_version: int, stale_seconds: float, peers_k: int
) -> bytes:
    document = build_document(
        snapshot,
        meta_version=meta_version,
        stale_seconds=stale_seconds,
        peers_k=peers_k,
    )
    return json.dumps(document, separators=(",", ":")).encode()


def _bounded(request: web.Request, name: str, default: int, most: int) -> int:
    raw = _single(request, name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 6:
        raise _Rejected(400, "bad_type", f"{name}={raw[:20]!r} is not an integer")
    value = int(raw)
    if not 1 <= value <= most:
        raise _Rejected(400, "out_of_range", f"{name}={value} is outside [1, {most}]")
    return value


async def get_page(request: web.Request) -> web.StreamResponse:
    """The dashboard's page."""
    return _asset(request.app[ASSETS_KEY]["index.html"])


async def get_asset(request: web.Request) -> web.StreamResponse:
    """One of the dashboard's static files; any other name is 404."""
    asset = request.app[ASSETS_KEY].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(text="no such dashboard file")
    return _asset(asset)


def _asset(asset: Asset) -> web.Response:
    return web.Response(
        body=asset.body,
        headers={"Content-Type": asset.content_type, "Cache-Control": "no-cache"},
    )


async def get_health(request: web.Request) -> web.StreamResponse:
    """The process is up and answers."""
    return web.Response(text="ok")


async def get_ready(request: web.Request) -> web.StreamResponse:
    """200 while the store is open, 503 otherwise."""
    coordinator = request.app[COORDINATOR_KEY]
    if coordinator.ready:
        return web.Response(text="ready")
    return web.Response(status=503, text=f"not ready: {coordinator.state.value}")


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """Counters and gauges in the Prometheus text format."""
    config = request.app[CONFIG_KEY]
    coordinator = request.app[COORDINATOR_KEY]
    known, active = await coordinator.node_counts(config.peer_stale_seconds)
    text = coordinator.metrics.render(
        coordinator.meta.version, known, active, coordinator.queued
    )
    return web.Response(
        body=text.encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
