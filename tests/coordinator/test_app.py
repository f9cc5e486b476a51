"""Tests of the coordinator's HTTP application on a real socket and file."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from sfhfe_node.coordinator import CoordinatorConfig, Store
from sfhfe_node.errors import ConfigError
from tests.conftest import TIMEOUT
from tests.coordinator.helpers import make_insight, running

JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    """A coordinator on a free port with its database under tmp_path."""
    return CoordinatorConfig(
        port=0, state_dir=tmp_path, meta_min_samples=1, meta_min_interval=0.0
    )


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with the suite's timeout."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def post_json(
    client: aiohttp.ClientSession, url: str, insight: Any
) -> tuple[int, Any]:
    """POST an insight as JSON and return the status and the parsed reply."""
    async with client.post(url + "/v1/insights", json=insight) as reply:
        return reply.status, await reply.json()


async def rejection(
    client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    """POST raw bytes and return the status and the error reason."""
    async with client.post(url + "/v1/insights", data=body, headers=headers) as reply:
        return reply.status, (await reply.json())["error"]


async def test_json_insight_is_stored_once(config, client) -> None:
    """A JSON insight posted twice is stored once and the retry is a duplicate."""
    async with running(config) as url:
        first = await post_json(client, url, make_insight())
        second = await post_json(client, url, make_insight())
    assert first[0] == second[0] == 200
    assert (first[1]["duplicate"], second[1]["duplicate"]) == (False, True)
    store = Store(config.database)
    assert store.count_insights() == 1
    store.close()


async def test_msgpack_insight_is_stored_once_and_answered_in_msgpack(
    config, client
) -> None:
    """A msgpack insight posted twice is stored once; replies are msgpack."""
    body = msgpack.packb(make_insight())
    replies = []
    async with running(config) as url:
        for _ in range(2):
            async with client.post(
                url + "/v1/insights", data=body, headers=MSGPACK
            ) as reply:
                assert reply.content_type == "application/msgpack"
                replies.append(msgpack.unpackb(await reply.read()))
    assert [r["duplicate"] for r in replies] == [False, True]
    assert replies[0]["ok"] is True and replies[0]["meta"]["version"] == 1


async def test_reply_carries_the_meta_document(config, client) -> None:
    """The reply's meta holds the rate learnt from the insight."""
    async with running(config) as url:
        _, reply = await post_json(client, url, make_insight())
    assert reply["meta"]["version"] == 1
    assert set(reply["meta"]["learning_rates"]) == {"linear"}
    assert reply["meta"]["router_priors"] == {"linear": 1.0}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BAD_BODIES = [
    ("malformed_json", b'{"schema": 1,', JSON, 400, "bad_encoding"),
    ("malformed_msgpack", b"\xc1\x00", MSGPACK, 400, "bad_encoding"),
    ("truncated_msgpack", b"\x92\x01", MSGPACK, 400, "bad_encoding"),
    ("deep_json", _nested(30_000), JSON, 400, "bad_encoding"),
    ("deep_msgpack", b"\x91" * 60_000 + b"\xc0", MSGPACK, 400, "bad_encoding"),
    ("nan_literal", b'{"schema": NaN}', JSON, 400, "not_finite"),
    ("not_a_map", b"[1, 2]", JSON, 400, "bad_type"),
    ("text_type", b"words", TEXT, 415, "unsupported_media_type"),
    ("no_type", b"{}", {}, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(
    "body,headers,status,reason",
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_body_is_rejected_with_reason(
    config, client, body, headers, status, reason
) -> None:
    """A body that cannot be decoded gets the matching 4xx and reason."""
    async with running(config) as url:
        assert await rejection(client, url, body, headers) == (status, reason)


def _without(field: str) -> dict[str, Any]:
    insight = make_insight()
    del insight[field]
    return insight


NAN_WINDOW = {"records": 1, "loss": float("nan"), "accuracy": 0.5}

BAD_INSIGHTS = [
    ("missing_field", _without("seq"), "missing_field"),
    ("wrong_type", make_insight(seq="7"), "bad_type"),
    ("bool_as_int", make_insight(records=True), "bad_type"),
    ("unknown_field", make_insight(password="x"), "unknown_field"),
    ("nan_value", make_insight(window=NAN_WINDOW), "not_finite"),
    ("deep_field", make_insight(embedding=[[[[[1.0]]]]]), "bad_type"),
    ("bad_schema", make_insight(schema=2), "bad_schema"),
    ("bad_node_id", make_insight(node_id="../etc"), "bad_value"),
    ("negative_seq", make_insight(seq=-1), "out_of_range"),
    ("long_embedding", make_insight(embedding=[0.0] * 65), "too_large"),
]


@pytest.mark.parametrize(
    "insight,reason",
    [case[1:] for case in BAD_INSIGHTS],
    ids=[case[0] for case in BAD_INSIGHTS],
)
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_bad_insight_is_rejected_with_reason(
    config, client, insight, reason, encoding
) -> None:
    """An insight that breaks the schema gets 400 with the schema's reason."""
    if encoding == "json":
        body, headers = json.dumps(insight).encode(), JSON
    else:
        body, headers = msgpack.packb(insight), MSGPACK
    async with running(config) as url:
        assert await rejection(client, url, body, headers) == (400, reason)
        async with client.get(url + "/v1/nodes") as reply:
            assert await reply.json() == []


async def test_oversize_body_is_rejected_by_length(config, client) -> None:
    """A Content-Length above max_body_bytes gets 413 body_too_large."""
    body = b" " * (config.max_body_bytes + 1)
    async with running(config) as url:
        assert await rejection(client, url, body, JSON) == (413, "body_too_large")


async def test_oversize_chunked_body_is_rejected(config, client) -> None:
    """A chunked body that grows past max_body_bytes gets 413 body_too_large."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(config.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    async with running(config) as url:
        assert await rejection(client, url, chunks(), JSON) == (
            413,
            "body_too_large",
        )


async def test_metrics_count_rejections_by_reason(config, client) -> None:
    """/metrics counts received, stored, duplicate and rejected-by-reason uploads."""
    async with running(config) as url:
        await post_json(client, url, make_insight())
        await post_json(client, url, make_insight())
        await post_json(client, url, make_insight(seq="x"))
        await rejection(client, url, b"{", JSON)
        await rejection(client, url, b"{", JSON)
        async with client.get(url + "/metrics") as reply:
            assert reply.content_type == "text/plain"
            text = await reply.text()
    lines = set(text.splitlines())
    assert "sfhfe_insights_received_total 5" in lines
    assert "sfhfe_insights_stored_total 1" in lines
    assert "sfhfe_insights_duplicates_total 1" in lines
    assert 'sfhfe_insights_rejected_total{reason="bad_type"} 1' in lines
    assert 'sfhfe_insights_rejected_total{reason="bad_encoding"} 2' in lines
    assert "sfhfe_meta_version 1" in lines
    assert "sfhfe_nodes_known 1" in lines
    assert "sfhfe_store_write_seconds_count 2" in lines


async def test_data_survives_a_restart(config, client) -> None:
    """Insights and the meta version are kept across a coordinator restart."""
    async with running(config) as url:
        for seq in range(3):
            await post_json(client, url, make_insight(seq=seq))
    async with running(config) as url:
        async with client.get(url + "/v1/meta") as reply:
            assert (await reply.json())["version"] == 3
        status, again = await post_json(client, url, make_insight(seq=2))
        assert again["duplicate"] is True
        _, fresh = await post_json(client, url, make_insight(seq=3))
        assert fresh["meta"]["version"] == 4
        async with client.get(url + "/v1/nodes") as reply:
            (node,) = await reply.json()
    assert node["last_seq"] == 3 and node["window_accuracy"] == 0.8


async def test_meta_etag_gives_304(config, client) -> None:
    """GET /v1/meta sends an ETag and answers 304 when it still matches."""
    async with running(config) as url:
        async with client.get(url + "/v1/meta") as reply:
            tag = reply.headers["ETag"]
            assert (await reply.json())["version"] == 0
        headers = {"If-None-Match": tag}
        async with client.get(url + "/v1/meta", headers=headers) as reply:
            assert reply.status == 304
        await post_json(client, url, make_insight())
        async with client.get(url + "/v1/meta", headers=headers) as reply:
            assert reply.status == 200
            assert reply.headers["ETag"] != tag


async def test_peers_are_ordered_by_similarity_and_skip_stale(
    config, client
) -> None:
    """/v1/peers lists fresh nodes most similar first and drops stale ones."""
    store = Store(config.database)
    store.add_insight(
        make_insight(node_id="stale", embedding=[1.0, 0.0]),
        received=time.time() - 2 * config.peer_stale_seconds,
    )
    store.close()
    nodes = {"me": [1.0, 0.0], "far": [0.0, 1.0], "near": [0.9, 0.1]}
    async with running(config) as url:
        for node_id, embedding in nodes.items():
            await post_json(
                client, url, make_insight(node_id=node_id, embedding=embedding)
            )
        async with client.get(url + "/v1/peers", params={"node": "me"}) as reply:
            peers = (await reply.json())["peers"]
    assert [p["node_id"] for p in peers] == ["near", "far"]
    assert peers[0]["gossip"] == "ws://127.0.0.1:7070"
    assert peers[0]["similarity"] > peers[1]["similarity"]


@pytest.mark.parametrize(
    "query,reason",
    [
        ({}, "missing_field"),
        ({"node": "a b"}, "bad_value"),
        ({"node": "me", "k": "three"}, "bad_type"),
        ({"node": "me", "k": "0"}, "out_of_range"),
        ({"node": "me", "k": "100000"}, "out_of_range"),
    ],
)
async def test_bad_peer_query_is_rejected(config, client, query, reason) -> None:
    """/v1/peers answers 400 with a reason for bad parameters."""
    async with running(config) as url:
        async with client.get(url + "/v1/peers", params=query) as reply:
            assert reply.status == 400
            assert (await reply.json())["error"] == reason


async def test_health_and_readiness(config, client) -> None:
    """/healthz and /readyz answer 200 while the coordinator runs."""
    async with running(config) as url:
        async with client.get(url + "/healthz") as reply:
            assert (reply.status, await reply.text()) == (200, "ok")
        async with client.get(url + "/readyz") as reply:
            assert reply.status == 200


async def test_unknown_path_is_a_json_404(config, client) -> None:
    """An unknown path gets a JSON 404."""
    async with running(config) as url:
        async with client.get(url + "/v1/nothing") as reply:
            assert reply.status == 404
            assert (await reply.json())["error"] == "not_found"


async def test_concurrent_uploads_are_all_stored_once(config, client) -> None:
    """Parallel uploads, each sent twice, store every insight exactly once."""
    insights = [make_insight(node_id=f"n{i % 5}", seq=i) for i in range(40)]
    async with running(config) as url:
        replies = await asyncio.gather(
            *(post_json(client, url, insight) for insight in insights * 2)
        )
    assert all(status == 200 for status, _ in replies)
    assert sum(not reply["duplicate"] for _, reply in replies) == 40
    store = Store(config.database)
    assert store.count_insights() == 40
    store.close()


async def test_run_reports_the_bound_port_and_logs(config, client, caplog) -> None:
    """Port 0 reports the real port, logged as "listening on"."""
    caplog.set_level(logging.INFO, logger="sfhfe_node.coordinator")
    async with running(config) as url:
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
    assert f"listening on 127.0.0.1:{port} (http)" in caplog.messages


async def test_stop_closes_the_store(config, client) -> None:
    """After stop the port refuses connections and the file opens cleanly."""
    async with running(config) as url:
        await post_json(client, url, make_insight())
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url + "/healthz") as reply:
            pytest.fail(f"a stopped coordinator answered {reply.status}")
    store = Store(config.database)
    assert store.count_insights() == 1
    store.close()


def test_bad_config_is_refused(tmp_path: Path) -> None:
    """An unknown durability raises ConfigError."""
    with pytest.raises(ConfigError, match="durability"):
        CoordinatorConfig(state_dir=tmp_path, durability="never")


async def test_locked_store_answers_503_and_retry_succeeds(tmp_path, client) -> None:
    """A database locked by another process gives 503; a later retry is stored."""
    config = CoordinatorConfig(port=0, state_dir=tmp_path, busy_timeout=0.05)
    async with running(config) as url:
        with closing(sqlite3.connect(config.database, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            async with client.post(url + "/v1/insights", json=make_insight()) as reply:
                assert reply.status == 503
                assert (await reply.json())["error"] == "store_error"
            other.execute("ROLLBACK")
        status, reply = await post_json(client, url, make_insight())
    assert (status, reply["duplicate"]) == (200, False)


def _mutations(count: int, seed: int) -> list[bytes]:
    """Random corruptions of a valid insight: swapped types, cut or flipped bytes."""
    rng = random.Random(seed)
    odd_values: list[Any] = [
        None, True, -1, 2**63, 1e308, "x" * 300, [], {}, [[[]]], b"\x00", {"a": 1},
    ]
    bodies = []
    for _ in range(count):
        insight = make_insight(seq=rng.randrange(1000))
        target = insight if rng.random() < 0.5 else rng.choice(
            [insight["window"], insight["drift"], insight["experts"]["linear"]]
        )
        target[rng.choice(list(target))] = rng.choice(odd_values)
        body = bytearray(msgpack.packb(insight))
        if rng.random() < 0.3:
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.2:
            del body[rng.randrange(len(body)) :]
        bodies.append(bytes(body))
    return bodies


async def test_fuzzed_insights_never_cause_a_server_error(config, client) -> None:
    """Hundreds of corrupted uploads each get 200 or a 4xx, never a 5xx."""
    statuses = []
    async with running(config) as url:
        for body in _mutations(300, seed=11):
            async with client.post(
                url + "/v1/insights", data=body, headers=MSGPACK
            ) as reply:
                statuses.append(reply.status)
                await reply.read()
        async with client.get(url + "/metrics") as reply:
            text = await reply.text()
    assert all(status == 200 or 400 <= status < 500 for status in statuses)
    assert statuses.count(200) < len(statuses)
    assert "sfhfe_http_internal_errors_total 0" in text.splitlines()
