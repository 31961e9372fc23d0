"""sd_notify: telling systemd how the daemon is doing, over the documented datagram protocol.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a path to a
Unix datagram socket, or an abstract socket name written with a leading ``@``.
Each notification is one datagram of ``KEY=VALUE`` lines (sd_notify(3)):
``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, and a failed
send is logged and ignored: the daemon's work never depends on its supervisor
hearing it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["Notifier", "watchdog_interval"]

log = structlog.get_logger("syncd.notify")

#: systemd truncates STATUS= lines it shows; a long one only wastes the datagram.
STATUS_MAX = 400


class Notifier:
    """Sends sd_notify messages to ``address`` (``$NOTIFY_SOCKET`` when built by :meth:`from_env`)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; True when it was sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            # A socket per message, as libsystemd's sd_notify does: nothing to share between threads or to leak.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode("utf-8", "replace"), target)
        except OSError as exc:
            log.warning("notify.failed", socket=self.address, message=lines[0].split("=", 1)[0], error=str(exc))
            return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        flat = " ".join(text.split())
        return self.send("STATUS=" + (flat if len(flat) <= STATUS_MAX else flat[: STATUS_MAX - 1] + "…"))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload units match the reload to this message.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None when no watchdog is set.

    ``$WATCHDOG_PID``, when present, must name this process: the watchdog was
    meant for someone else otherwise (a child that inherited the environment).
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
