"""systemd notification over ``$NOTIFY_SOCKET`` without libsystemd.

READY=1 after start-up, WATCHDOG=1 at half of ``$WATCHDOG_USEC``, STATUS= lines,
STOPPING=1 on shutdown. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket

import anyio
import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends sd_notify datagrams to the socket systemd gave us, if any.

    Args:
        environ: the process environment (injected for tests).
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET`` and the watchdog settings."""
        env = dict(os.environ) if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval_s: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and watchdog_for_us else None
        )

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return bool(self._address)

    def notify(self, state: str) -> None:
        """Send one notification; errors are logged, never raised (systemd may be gone)."""
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(state.encode(), self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", state=state.split("=", 1)[0], error=str(exc))

    def ready(self, status: str) -> None:
        """READY=1 with a status line."""
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """STATUS= line."""
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        """STOPPING=1."""
        self.notify("STOPPING=1\nSTATUS=stopping")

    async def run_watchdog(self) -> None:
        """Ping WATCHDOG=1 at half the watchdog interval until cancelled."""
        if self.watchdog_interval_s is None or not self._address:
            return
        while True:
            self.notify("WATCHDOG=1")
            await anyio.sleep(self.watchdog_interval_s)

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
