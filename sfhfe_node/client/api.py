"""The client's local HTTP API, for the operator and for applications.

- ``GET /healthz``: 200 ``ok`` while the process serves.
- ``GET /v1/status``: the node's figures as JSON (see ``ClientNode.summary``).
- ``GET /metrics``: the same figures in Prometheus text format.
- ``POST /v1/predict``: ``{"records": [{"feature": value, ...}, ...]}`` (at most
  :data:`MAX_PREDICT` records) answers ``{"predictions": [...]}`` from the
  current model without learning anything. Missing or non-numeric features are
  imputed, as for the stream.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from sfhfe_node.gossip.metrics import render_metrics

if TYPE_CHECKING:
    from sfhfe_node.client.daemon import ClientNode

__all__ = ["MAX_PREDICT", "make_api", "start_api"]

MAX_PREDICT = 1024
NODE = web.AppKey("node", object)


def make_api(node: ClientNode) -> web.Application:
    """Build the local API application for ``node``."""
    app = web.Application(client_max_size=1 << 20)
    app[NODE] = node
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/v1/predict", _predict)
    return app


async def start_api(
    node: ClientNode, host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve the API on ``host:port`` (0: any free port); return runner and port."""
    runner = web.AppRunner(make_api(node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, bound


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    summary = node.summary()
    if node.learner is not None and node.state == "running":
        loop = asyncio.get_running_loop()
        summary["learner"] = await loop.run_in_executor(
            node.learn_pool, node.learner.status
        )
    return web.json_response(summary)


_METRICS = (
    ("records", "sfhfe_client_records_total", "counter", "records learned"),
    ("batches", "sfhfe_client_batches_total", "counter", "mini-batches learned"),
    (
        "skipped_rows",
        "sfhfe_client_skipped_rows_total",
        "counter",
        "stream rows skipped",
    ),
    ("bad_cells", "sfhfe_client_bad_cells_total", "counter", "cells imputed"),
    ("accuracy", "sfhfe_client_accuracy", "gauge", "prequential accuracy"),
    (
        "no_change_accuracy",
        "sfhfe_client_no_change_accuracy",
        "gauge",
        "accuracy of repeating the previous label",
    ),
    ("loss", "sfhfe_client_loss", "gauge", "mixture loss of the last batch"),
    ("insights_sent", "sfhfe_client_insights_total", "counter", "insights built"),
    (
        "insights_acked",
        "sfhfe_client_insights_acked_total",
        "counter",
        "insights acknowledged",
    ),
    ("outbox", "sfhfe_client_outbox_depth", "gauge", "insights waiting"),
    ("drift_events", "sfhfe_client_drift_events_total", "counter", "drift events"),
    ("checkpoints", "sfhfe_client_checkpoints_total", "counter", "checkpoints written"),
    (
        "checkpoint_age_s",
        "sfhfe_client_checkpoint_age_seconds",
        "gauge",
        "seconds since the last checkpoint",
    ),
    ("uptime_s", "sfhfe_client_uptime_seconds", "gauge", "seconds since start"),
    ("meta_version", "sfhfe_client_meta_version", "gauge", "meta version applied"),
    ("gossip_sent", "sfhfe_client_gossip_sent_total", "counter", "weights sent"),
    (
        "gossip_accepted",
        "sfhfe_client_gossip_accepted_total",
        "counter",
        "weights accepted",
    ),
    (
        "gossip_rejected",
        "sfhfe_client_gossip_rejected_total",
        "counter",
        "gossip messages rejected",
    ),
    (
        "peer_weight",
        "sfhfe_client_peer_weight",
        "gauge",
        "peers' models' share of the predictions",
    ),
    (
        "peer_helped",
        "sfhfe_client_peer_helped_total",
        "counter",
        "records the peers' models turned right",
    ),
    (
        "peer_hurt",
        "sfhfe_client_peer_hurt_total",
        "counter",
        "records the peers' models turned wrong",
    ),
)


async def _metrics(request: web.Request) -> web.Response:
    summary = request.app[NODE].summary()
    lines = []
    for key, name, kind, text in _METRICS:
        value = summary.get(key)
        if value is None:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lines.append("# TYPE sfhfe_client_peers gauge")
    lines.append(f"sfhfe_client_peers {len(summary['peers'])}")
    name = "sfhfe_client_peer_model_weight"
    lines += [
        f"# HELP {name} each peer's model's share of the predictions",
        f"# TYPE {name} gauge",
    ]
    for peer, model in sorted(summary.get("peer_models", {}).items()):
        lines.append(f'{name}{{peer="{peer}"}} {model["weight"]}')
    text = "\n".join(lines) + "\n" + render_metrics(summary["gossip"])
    return web.Response(text=text, content_type="text/plain")


async def _predict(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.learner is None or node.stream is None:
        return _error(503, "not_ready", "the learner is not ready yet")
    try:
        body = await request.json(loads=_strict_json)
    except ValueError as exc:
        return _error(400, "bad_encoding", f"body is not valid JSON: {exc}")
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not records:
        return _error(400, "bad_type", "records must be a non-empty list of objects")
    if len(records) > MAX_PREDICT:
        return _error(
            413, "too_large", f"{len(records)} records; at most {MAX_PREDICT}"
        )
    if not all(isinstance(record, dict) for record in records):
        return _error(400, "bad_type", "every record must be an object")
    features = node.stream.features
    matrix = np.array(
        [[_number(record.get(name)) for name in features] for record in records],
        dtype=np.float64,
    )
    loop = asyncio.get_running_loop()
    prediction = await loop.run_in_executor(
        node.learn_pool, node.learner.predict_many, matrix
    )
    return web.json_response({"predictions": _shown(node, prediction, len(records))})


def _shown(node: ClientNode, prediction: Any, count: int) -> list[dict[str, Any]]:
    rows = []
    for row in range(count):
        entry: dict[str, Any] = {"anomaly": float(prediction.anomaly[row])}
        if node.task == "classification":
            entry["prediction"] = node.session.labels.decode(
                int(prediction.labels[row])
            )
        elif node.task == "regression":
            entry["prediction"] = float(prediction.values[row])
        rows.append(entry)
    return rows


def _strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=lambda name: math.nan)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)
