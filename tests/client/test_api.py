"""The client's local API, served by a node running in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from sfhfe_node.client.daemon import ClientNode
from sfhfe_node.config import settings_for
from tests.client.test_daemon import make_stream
from tests.conftest import TIMEOUT


@pytest.fixture
async def node(tmp_path: Path):
    """A client that has learned a 300-record stream and stays up."""
    stream = tmp_path / "s.csv"
    make_stream(stream, np.random.default_rng(3).integers(0, 2, size=300))
    settings = settings_for(
        "client",
        stream=f"csv:{stream}",
        target="y",
        listen="127.0.0.1:0",
        api="127.0.0.1:0",
        state_dir=str(tmp_path / "state"),
        stay="true",
    )
    client = ClientNode(settings)
    task = asyncio.create_task(client.run())
    async with asyncio.timeout(TIMEOUT):
        while not client.stream_done:
            await asyncio.sleep(0.05)
    yield client
    client.request_stop()
    assert await asyncio.wait_for(task, TIMEOUT) == 0


async def test_status_reports_records(node: ClientNode) -> None:
    """/v1/status shows the records learned and the accuracies."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{node.api_port}/v1/status") as reply:
            status = await reply.json()
    assert status["records"] == 300
    assert 0.0 <= status["accuracy"] <= 1.0
    assert status["stream_done"] is True


async def test_metrics_are_prometheus_text(node: ClientNode) -> None:
    """/metrics exposes the record counter in Prometheus text format."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{node.api_port}/metrics") as reply:
            text = await reply.text()
    assert "# TYPE sfhfe_client_records_total counter" in text
    assert "sfhfe_client_records_total 300" in text


async def test_predict_answers_without_learning(node: ClientNode) -> None:
    """POST /v1/predict returns one prediction per record and learns nothing."""
    url = f"http://127.0.0.1:{node.api_port}/v1/predict"
    records = [{"a": 1.0, "b": 0.5, "c": "oops"}, {"a": -1.0}]
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"records": records}) as reply:
            assert reply.status == 200
            body = await reply.json()
    assert len(body["predictions"]) == 2
    assert body["predictions"][0]["prediction"] in (0, 1, "0", "1")
    assert node.learner.records == 300


@pytest.mark.parametrize(
    ("payload", "status"),
    [(b"{nope", 400), (b'{"records": 3}', 400), (b'{"records": [1, 2]}', 400),
     (b'{"records": [' + b"{}," * 1100 + b"{}]}", 413)],
)
async def test_predict_refuses_bad_bodies(
    node: ClientNode, payload: bytes, status: int
) -> None:
    """Malformed or oversize prediction requests get a 4xx with a reason."""
    url = f"http://127.0.0.1:{node.api_port}/v1/predict"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=payload, headers={"Content-Type": "application/json"}
        ) as reply:
            assert reply.status == status
            assert "error" in await reply.json()
