"""The systemd notification protocol, in plain Python.

Under a unit with ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` to a datagram
socket (a path, or a name in the abstract namespace when it starts with
``@``). The service sends ``READY=1`` once it serves, ``STATUS=...`` lines for
``systemctl status``, ``WATCHDOG=1`` pings within ``$WATCHDOG_USEC`` and
``STOPPING=1`` when it begins to stop. Without the variable every call does
nothing, so the same code runs outside systemd.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """Send state changes to systemd, if it is listening.

    ``environ`` defaults to ``os.environ``; tests pass their own.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ if environ is None else environ)
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2e6 if watched and int(usec) else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; True if a datagram was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(message.encode("utf-8"), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
