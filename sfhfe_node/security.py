"""Secrets and TLS contexts shared by the coordinator and the clients.

Secrets are read from files, never from the command line, and are never
logged. A bad file raises :class:`ConfigError`, so the command exits with 78.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from sfhfe_node.errors import ConfigError

__all__ = [
    "client_ssl_context",
    "read_cluster_key",
    "read_token",
    "server_ssl_context",
    "tls_contexts",
]

_TOKEN = re.compile(r"[\x21-\x7e]{16,4096}")
MIN_CLUSTER_KEY = 16


def read_token(path: Path) -> str:
    """The bearer token in ``path``; raises :class:`ConfigError` if unusable.

    The token is the file's content without surrounding whitespace: 16 to
    4096 printable ASCII characters, no spaces.
    """
    try:
        raw = path.read_bytes()[:8192]
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not ASCII text") from None
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            f"token file {path} must hold 16-4096 printable characters without "
            f"spaces (found {len(token)} characters)"
        )
    return token


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context; raises :class:`ConfigError` if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {cert} and key {key}: {exc}"
        ) from None
    return context


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A context that verifies peers against ``ca_file`` (None: system CAs)."""
    if ca_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA certificates {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def read_cluster_key(path: Path) -> bytes:
    """The gossip cluster key in ``path``: at least 16 bytes, whitespace stripped."""
    try:
        key = path.read_bytes()[:8192].strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read cluster key file {path}: {exc.strerror}"
        ) from None
    if len(key) < MIN_CLUSTER_KEY:
        raise ConfigError(
            f"cluster key file {path} must hold at least {MIN_CLUSTER_KEY} bytes "
            f"(found {len(key)})"
        )
    return key


def tls_contexts(
    cert: Path | None, key: Path | None, ca_file: Path | None
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """Server and client contexts from the TLS settings (None where unused)."""
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    server = (
        server_ssl_context(cert, key) if cert is not None and key is not None else None
    )
    return server, client_ssl_context(ca_file)
