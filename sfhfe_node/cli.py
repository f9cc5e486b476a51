"""The ``sfhfe-node`` command.

::

    sfhfe-node --role server [--listen 0.0.0.0:8080] [--state-dir DIR] ...
    sfhfe-node --role client --server URL --stream csv:PATH --target COL ...
    sfhfe-node demo [--report PATH]
    sfhfe-node config --print --role ROLE [settings...]

Exit status: 0 on a clean stop, 78 for a bad setting (EX_CONFIG), 66 when the
stream cannot be opened (EX_NOINPUT), 1 for any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from sfhfe_node import __version__
from sfhfe_node.config import EXIT_CONFIG, Settings, add_arguments, resolve
from sfhfe_node.errors import ConfigError, StreamError
from sfhfe_node.logs import cli_log, reopen_logs, setup_logging

__all__ = ["build_parser", "main"]

EXIT_NOINPUT = 66


def build_parser() -> argparse.ArgumentParser:
    """The parser for running a role (``--role server`` or ``--role client``)."""
    parser = argparse.ArgumentParser(
        prog="sfhfe-node",
        description=(
            "Federated online continual learning node. Subcommands: "
            "'demo' runs a coordinator and three clients on this machine; "
            "'config --print' shows the effective settings."
        ),
        epilog="Every setting may also come from SFHFE_<NAME> or a --config TOML file.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "--role", choices=("server", "client"), help="what this node is"
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from sfhfe_node.demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["config"]:
        return _config_command(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.role is None:
        parser.print_usage(sys.stderr)
        print(
            "sfhfe-node: error: --role server or --role client is required",
            file=sys.stderr,
        )
        return 2
    try:
        settings = resolve(args.role, vars(args), config_path=args.config)
        _check(settings)
    except ConfigError as exc:
        print(f"sfhfe-node: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        setup_logging(settings.log_level, settings.log_format, settings.log_file)
    except OSError as exc:
        print(f"sfhfe-node: cannot open log file: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _run(_role_main(settings), settings.stop_timeout)
    except ConfigError as exc:
        cli_log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except StreamError as exc:
        cli_log.error("stream error: %s", exc)
        return EXIT_NOINPUT
    except OSError as exc:
        cli_log.error("cannot start: %s", exc)
        return 1


def _check(settings: Settings) -> None:
    if settings.role == "client" and not settings.stream:
        raise ConfigError("stream is not set: give --stream csv:PATH (or SFHFE_STREAM)")


def _config_command(argv: list[str]) -> int:
    parser = build_parser()
    parser.prog = "sfhfe-node config"
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_config",
        help="show every setting, its value and its source",
    )
    args = parser.parse_args(argv)
    role = args.role or "client"
    try:
        settings = resolve(role, vars(args), config_path=args.config)
    except ConfigError as exc:
        print(f"sfhfe-node: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    print(f"# effective settings for --role {role}")
    for name, value, source in rows:
        print(f"{name:<{width}}  {value or '-':<28}  ({source})")
    return 0


Main = Callable[[asyncio.Event, list[Callable[[], None]]], Awaitable[int]]


def _role_main(settings: Settings) -> Main:
    async def run(stop: asyncio.Event, reload_hooks: list[Callable[[], None]]) -> int:
        if settings.role == "server":
            return await _run_server(settings, stop)
        from sfhfe_node.client.daemon import run_client

        return await run_client(settings, stop, reload_hooks)

    return run


async def _run_server(settings: Settings, stop: asyncio.Event) -> int:
    from sfhfe_node.coordinator.app import CoordinatorConfig, run_coordinator
    from sfhfe_node.systemd import Notifier

    host, port = settings.listen
    config = CoordinatorConfig(
        host=host,
        port=port,
        state_dir=settings.state_dir,
        db_path=settings.db,
        max_body_bytes=settings.max_body,
        durability=settings.durability,
        peer_stale_seconds=settings.peer_stale,
        token_file=settings.token_file,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        retention_days=settings.retention_days,
        retention_rows=settings.retention_rows,
        shutdown_timeout=max(settings.stop_timeout - 2.0, 1.0),
    )
    notifier = Notifier()

    async def heartbeat() -> None:
        # The loop runs this only while it is responsive: that is the health.
        interval = min(notifier.watchdog_interval or 5.0, 5.0)
        while True:
            await asyncio.sleep(interval)
            notifier.watchdog()

    beats = asyncio.create_task(heartbeat()) if notifier.enabled else None
    try:
        await run_coordinator(
            config, stop, lambda bound: notifier.ready(f"listening on {host}:{bound}")
        )
    finally:
        notifier.stopping()
        if beats is not None:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
        notifier.close()
    return 0


def _run(main: Main, stop_timeout: float) -> int:
    """Run ``main`` on uvloop when available.

    SIGTERM and SIGINT set its stop event; if it has not returned
    ``stop_timeout`` seconds later it is cancelled and the status is 1.
    SIGHUP reopens the log file and runs the reload hooks ``main`` added.
    """

    async def wrapper() -> int:
        stop = asyncio.Event()
        reload_hooks: list[Callable[[], None]] = []
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _on_signal, stop, signum)
        loop.add_signal_handler(signal.SIGHUP, _on_hangup, reload_hooks)
        work = asyncio.create_task(main(stop, reload_hooks))
        await asyncio.wait(
            [work, asyncio.create_task(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not work.done():
            done, _ = await asyncio.wait([work], timeout=stop_timeout)
            if not done:
                cli_log.error("stop took longer than %.0f s; giving up", stop_timeout)
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                return 1
        return work.result()

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    if stop.is_set():
        return
    cli_log.info("%s received; stopping", signal.Signals(signum).name)
    stop.set()


def _on_hangup(reload_hooks: list[Callable[[], None]]) -> None:
    reopen_logs()
    cli_log.info("SIGHUP received; log file reopened")
    for hook in reload_hooks:
        hook()
