"""Tests of the coordinator's dashboard: page, static files and JSON document."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfhfe_node.coordinator import CoordinatorConfig, Store
from sfhfe_node.coordinator.dashboard import DashboardLimits
from tests.conftest import TIMEOUT
from tests.coordinator.helpers import expert, make_insight, running

HOSTILE = "<img src=x onerror=alert(1)>"
STATIC = resources.files("sfhfe_node.coordinator") / "static"
TOKEN = "dashboard-token-0123456789"


@pytest.fixture
def config(tmp_path: Path) -> CoordinatorConfig:
    """A coordinator on a free port that makes a meta version on every upload."""
    return CoordinatorConfig(
        port=0, state_dir=tmp_path, meta_min_samples=1, meta_min_interval=0.0
    )


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with the suite's timeout."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def post(client: aiohttp.ClientSession, url: str, insight: Any) -> None:
    """POST one insight as JSON and check that it was accepted."""
    async with client.post(url + "/v1/insights", json=insight) as reply:
        assert reply.status == 200, await reply.text()


async def document(
    client: aiohttp.ClientSession, url: str, query: str = ""
) -> dict[str, Any]:
    """GET the dashboard document and check its headers."""
    async with client.get(url + "/v1/dashboard" + query) as reply:
        assert reply.status == 200, await reply.text()
        assert reply.content_type == "application/json"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        return await reply.json()


async def seed(config: CoordinatorConfig, insights: list[dict[str, Any]], **kw) -> None:
    """Write insights straight into the store, as an earlier run would have."""

    def write() -> None:
        store = Store(config.database)
        try:
            store.add_insights(insights, **kw)
        finally:
            store.close()

    await asyncio.to_thread(write)


def node_insight(node_id: str, seq: int, **fields: Any) -> dict[str, Any]:
    """An insight of ``node_id`` whose window loss encodes ``seq``."""
    values: dict[str, Any] = {
        "node_id": node_id,
        "seq": seq,
        "window": {"records": 100, "loss": 1.0 / (seq + 1), "accuracy": 0.5},
    }
    values.update(fields)
    return make_insight(**values)


# The page and its files.


async def test_page_is_served_with_a_strict_policy(config, client) -> None:
    """GET / returns the page with a self-only CSP and nosniff."""
    async with running(config) as url:
        async with client.get(url + "/") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/html"
            headers = reply.headers
            page = await reply.text()
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy and "unsafe" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert '<script src="/dashboard/dashboard.js"' in page
    assert "Waiting for the first insight" in page


def test_page_loads_nothing_from_elsewhere() -> None:
    """Every resource of the page is one of the coordinator's own files."""
    page = (STATIC / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith("/dashboard/") for link in links)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert not re.search(r"\sstyle=|\son[a-z]+=", page), "inline style or handler"
    style = (STATIC / "dashboard.css").read_text()
    assert "@import" not in style and "url(" not in style


def test_script_writes_no_markup() -> None:
    """The script never turns data into markup (innerHTML and the like)."""
    script = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                 "eval(", "Function(", "setAttribute(\"style\""):
        assert sink not in script, sink
    urls = re.findall(r"fetch\(\s*\"([^\"]*)\"", script)
    assert urls == ["/v1/dashboard"]


@pytest.mark.parametrize(
    "name,content_type",
    [
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_have_their_content_types(
    config, client, name, content_type
) -> None:
    """The stylesheet, the script and the icon are served with their types."""
    async with running(config) as url:
        async with client.get(url + "/dashboard/" + name) as reply:
            assert reply.status == 200
            assert reply.content_type == content_type
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert await reply.read() == (STATIC / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/dashboard/", "/dashboard/missing.js", "/dashboard/dashboard.py",
     "/v1/dashboard/nodes", "/dashboard.js"],
)
async def test_unknown_dashboard_paths_are_404(config, client, path) -> None:
    """Paths the dashboard does not serve answer 404 with a JSON reason."""
    async with running(config) as url:
        async with client.get(url + path) as reply:
            assert reply.status == 404
            assert (await reply.json())["error"] == "not_found"


# The document.


async def test_empty_store_gives_an_empty_document(config, client) -> None:
    """Before the first insight every part of the document is empty."""
    async with running(config) as url:
        doc = await document(client, url)
    assert doc["totals"] == {"nodes": 0, "active": 0, "shown": 0}
    assert doc["nodes"] == [] and doc["drift"] == [] and doc["meta"] == []
    assert doc["experts"] == {"names": [], "usage": []}
    assert doc["topology"] == {"edges": []}
    assert doc["meta_version"] == 0


async def test_document_has_the_documented_shape(config, client) -> None:
    """The document and each node hold exactly the documented fields."""
    async with running(config) as url:
        await post(client, url, make_insight())
        doc = await document(client, url)
    assert set(doc) == {
        "generated", "stale_seconds", "meta_version", "totals", "nodes",
        "experts", "drift", "topology", "meta",
    }
    assert set(doc["nodes"][0]) == {
        "node_id", "state", "task", "records", "first_seen", "last_seen",
        "last_seq", "loss", "accuracy", "drift_active", "memory_bytes", "gossip",
        "series",
    }
    assert set(doc["nodes"][0]["series"]) == {"time", "seq", "loss", "accuracy"}
    assert set(doc["meta"][0]) == {
        "version", "created", "trigger", "learning_rates", "router_priors",
    }


async def test_document_reflects_the_posted_insights(config, client) -> None:
    """Nodes, curves, usage, drift, peers and meta follow what was posted."""
    experts = {"linear": expert(0.01, usage=0.25), "gru": expert(0.02, usage=0.75)}
    async with running(config) as url:
        for seq in range(3):
            for index, node_id in enumerate(("alpha", "beta")):
                drifting = node_id == "beta" and seq == 2
                await post(client, url, node_insight(
                    node_id, seq,
                    experts=experts if node_id == "alpha" else {"gru": expert(0.02)},
                    drift={"events": int(drifting), "active": drifting},
                    embedding=[1.0, float(index)],
                    gossip=f"ws://127.0.0.1:{7000 + index}",
                ))
        doc = await document(client, url)
    nodes = {node["node_id"]: node for node in doc["nodes"]}
    assert doc["totals"] == {"nodes": 2, "active": 2, "shown": 2}
    assert nodes["alpha"]["state"] == "active"
    assert nodes["beta"]["state"] == "drifting" and nodes["beta"]["drift_active"]
    assert nodes["alpha"]["series"]["seq"] == [0, 1, 2]
    assert nodes["alpha"]["series"]["loss"] == [1.0, 0.5, 1.0 / 3]
    assert nodes["alpha"]["loss"] == 1.0 / 3 and nodes["alpha"]["accuracy"] == 0.5
    times = nodes["alpha"]["series"]["time"]
    assert times == sorted(times) and times[-1] <= doc["generated"]

    order = [node["node_id"] for node in doc["nodes"]]
    assert doc["experts"]["names"] == ["gru", "linear"]
    usage = dict(zip(doc["experts"]["names"], doc["experts"]["usage"]))
    assert usage["linear"][order.index("alpha")] == 0.25
    assert usage["linear"][order.index("beta")] is None
    assert usage["gru"][order.index("alpha")] == 0.75

    assert [(e["node_id"], e["seq"], e["active"]) for e in doc["drift"]] == [
        ("beta", 2, True)
    ]
    edge = doc["topology"]["edges"]
    assert [(e["source"], e["target"]) for e in edge] == [("alpha", "beta")]
    assert edge[0]["similarity"] == pytest.approx(2**-0.5)

    versions = [meta["version"] for meta in doc["meta"]]
    assert versions == sorted(versions) and versions[-1] == doc["meta_version"] >= 1
    assert set(doc["meta"][-1]["learning_rates"]) == {"gru", "linear"}
    assert doc["meta"][-1]["trigger"]


async def test_series_and_lists_are_capped(config, client) -> None:
    """Curves keep each node's latest points; drift keeps the latest reports."""
    limits = DashboardLimits()
    count = max(limits.points, limits.drift_events) + 30
    await seed(config, [
        node_insight("busy", seq, drift={"events": 1, "active": False})
        for seq in range(count)
    ])
    async with running(config) as url:
        full = await document(client, url)
        short = await document(client, url, "?points=5")
    series = full["nodes"][0]["series"]
    assert series["seq"] == list(range(count - limits.points, count))
    assert len(series["loss"]) == len(series["time"]) == limits.points
    assert short["nodes"][0]["series"]["seq"] == list(range(count - 5, count))
    assert [e["seq"] for e in full["drift"]] == list(
        range(count - limits.drift_events, count)
    )


async def test_nodes_are_capped_to_the_latest_seen(config, client) -> None:
    """``nodes=N`` shows the N nodes heard from last; totals count them all."""
    now = time.time()
    for index in range(5):
        await seed(config, [node_insight(f"n{index}", 0)], received=now + index)
    async with running(config) as url:
        doc = await document(client, url, "?nodes=2")
    assert doc["totals"] == {"nodes": 5, "active": 5, "shown": 2}
    assert [node["node_id"] for node in doc["nodes"]] == ["n4", "n3"]
    assert all(len(row) == 2 for row in doc["experts"]["usage"])


async def test_silent_nodes_are_stale(config, client) -> None:
    """A node not heard from for longer than peer_stale_seconds is stale."""
    old = time.time() - 2 * config.peer_stale_seconds
    await seed(config, [node_insight("quiet", 0)], received=old)
    async with running(config) as url:
        doc = await document(client, url)
    assert doc["nodes"][0]["state"] == "stale"
    assert doc["totals"]["active"] == 0 and doc["topology"]["edges"] == []


@pytest.mark.parametrize(
    "query,reason",
    [
        ("?points=0", "out_of_range"),
        ("?points=100000", "out_of_range"),
        (f"?nodes={DashboardLimits.max_nodes + 1}", "out_of_range"),
        ("?nodes=many", "bad_type"),
        ("?points=-1", "bad_type"),
        ("?nodes=1&nodes=2", "bad_value"),
    ],
)
async def test_bad_limits_are_refused(config, client, query, reason) -> None:
    """Limits outside their bounds get 400 with the reason."""
    async with running(config) as url:
        async with client.get(url + "/v1/dashboard" + query) as reply:
            assert reply.status == 400
            assert (await reply.json())["error"] == reason


async def test_hostile_node_id_is_returned_as_data(config, client) -> None:
    """A node id holding markup reaches the page as a JSON string, nothing else."""
    await seed(config, [node_insight(HOSTILE, 0, gossip=None)])
    async with running(config) as url:
        async with client.get(url + "/v1/dashboard") as reply:
            assert reply.content_type == "application/json"
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            doc = await reply.json()
        async with client.get(url + "/") as reply:
            page = await reply.text()
    assert doc["nodes"][0]["node_id"] == HOSTILE
    assert HOSTILE not in page


# With a token.


async def test_token_guards_the_document_but_not_the_page(
    tmp_path, client
) -> None:
    """With a token the page and its files stay open and the document needs it."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = CoordinatorConfig(port=0, state_dir=tmp_path, token_file=token_file)
    async with running(config) as url:
        for path in ("/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
            async with client.get(url + path) as reply:
                assert reply.status == 200, path
        async with client.get(url + "/v1/dashboard") as reply:
            assert reply.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with client.get(url + "/v1/dashboard", headers=headers) as reply:
            assert reply.status == 200
