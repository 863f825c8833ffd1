"""systemd notification (Type=notify): READY, STATUS, RELOADING, STOPPING and the watchdog, without a dependency.

What the daemon tells systemd, and when, is described in edge_mtl.daemon.service and docs/operations.md.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """sd_notify over $NOTIFY_SOCKET without a dependency; a no-op outside systemd.

    `watchdog_s` is the watchdog interval systemd asked for (WATCHDOG_USEC, for this process per WATCHDOG_PID),
    or None when no watchdog is configured, in which case WATCHDOG=1 is never sent.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        self.addr = ""
        if addr and addr[0] in "@/":
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        elif addr:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying systemd", addr)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us else None

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, msg: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(msg.encode(), self.addr)
        except OSError as e:
            log.debug("sd_notify %r failed: %s", msg.split("\n", 1)[0], e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
