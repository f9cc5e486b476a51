"""Tests of the bearer token and of TLS on a real socket."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sfhfe_node.coordinator import CoordinatorConfig, make_app
from sfhfe_node.errors import ConfigError
from tests.conftest import TIMEOUT
from tests.coordinator.helpers import make_insight, running

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file holding TOKEN and a newline."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def config(tmp_path: Path, token_file: Path) -> CoordinatorConfig:
    """A coordinator that requires the token."""
    return CoordinatorConfig(port=0, state_dir=tmp_path, token_file=token_file)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with the suite's timeout."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def test_right_token_is_accepted(config, client) -> None:
    """An upload with the right token is stored."""
    async with running(config) as url:
        async with client.post(
            url + "/v1/insights", json=make_insight(), headers=bearer(TOKEN)
        ) as reply:
            assert reply.status == 200


@pytest.mark.parametrize(
    "headers,reason",
    [
        ({}, "missing"),
        (bearer("wrong-token-0123456789"), "wrong"),
        ({"Authorization": f"Basic {TOKEN}"}, "wrong"),
        (bearer(TOKEN[:-1]), "wrong"),
    ],
    ids=["missing", "wrong", "other_scheme", "prefix"],
)
async def test_bad_token_gets_401_and_is_counted(
    config, client, headers, reason
) -> None:
    """A missing or wrong token gets 401 and bumps the auth failure counter."""
    async with running(config) as url:
        async with client.post(
            url + "/v1/insights", json=make_insight(), headers=headers
        ) as reply:
            assert reply.status == 401
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await reply.json())["error"] == "unauthorized"
        async with client.get(url + "/metrics") as reply:
            text = await reply.text()
    assert f'sfhfe_auth_failures_total{{reason="{reason}"}} 1' in text
    assert "sfhfe_insights_received_total 0" in text


@pytest.mark.parametrize("path", ["/v1/meta", "/v1/peers?node=a", "/v1/nodes"])
async def test_every_client_endpoint_needs_the_token(config, client, path) -> None:
    """Each /v1/ endpoint answers 401 without the token."""
    async with running(config) as url:
        async with client.get(url + path) as reply:
            assert reply.status == 401


async def test_probes_stay_open(config, client) -> None:
    """/healthz, /readyz and /metrics answer without a token."""
    async with running(config) as url:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with client.get(url + path) as reply:
                assert reply.status == 200


@pytest.mark.parametrize(
    "content", ["", "short", "has a space in the middle", "\xe9" * 20]
)
def test_unusable_token_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    """An empty, short, spaced or non-ASCII token file raises ConfigError."""
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")
    config = CoordinatorConfig(port=0, state_dir=tmp_path, token_file=path)
    with pytest.raises(ConfigError, match="token file"):
        make_app(config)


def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    """A token file that does not exist raises ConfigError."""
    config = CoordinatorConfig(port=0, state_dir=tmp_path, token_file=tmp_path / "x")
    with pytest.raises(ConfigError, match="cannot read"):
        make_app(config)


def test_half_tls_settings_are_refused(tmp_path: Path) -> None:
    """A certificate without a key raises ConfigError."""
    with pytest.raises(ConfigError, match="together"):
        CoordinatorConfig(state_dir=tmp_path, tls_cert=tmp_path / "cert.pem")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl tool."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    return cert, key


async def test_tls_serves_https_with_the_token(
    tmp_path: Path, token_file: Path, certificate, client
) -> None:
    """With a certificate the coordinator answers HTTPS and still checks tokens."""
    cert, key = certificate
    config = CoordinatorConfig(
        port=0, state_dir=tmp_path, token_file=token_file, tls_cert=cert, tls_key=key
    )
    context = ssl.create_default_context(cafile=str(cert))
    async with running(config) as url:
        secure = url.replace("http://", "https://")
        async with client.post(
            secure + "/v1/insights",
            json=make_insight(),
            headers=bearer(TOKEN),
            ssl=context,
        ) as reply:
            assert reply.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with client.get(url + "/healthz") as reply:
                await reply.read()


async def test_bad_certificate_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable certificate stops the start with ConfigError."""
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate")
    config = CoordinatorConfig(
        port=0, state_dir=tmp_path, tls_cert=bogus, tls_key=bogus
    )
    with pytest.raises(ConfigError, match="TLS"):
        async with running(config):
            pytest.fail("a coordinator with a bogus certificate started")
