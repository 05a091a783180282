"""systemd's two small protocols: socket activation and readiness notification.

Neither needs libsystemd. Socket activation (``sd_listen_fds(3)``): systemd, or
``systemd-socket-activate``, passes the listening sockets as descriptors 3, 4,
... and sets ``LISTEN_FDS`` to their count and ``LISTEN_PID`` to the pid they
are meant for (a child that inherited the environment must not take them).
Notification (``sd_notify(3)``): one datagram such as ``READY=1`` sent to the
Unix socket named by ``NOTIFY_SOCKET``; a name starting with ``@`` is in
Linux's abstract namespace.

Error handling: a notification that cannot be sent is logged at warning and
otherwise ignored (the server keeps serving); without ``NOTIFY_SOCKET`` it is
a no-op, so the calls can stay in place wherever the server runs.
"""

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3
_ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(environ=os.environ) -> list[int]:
    """The descriptors systemd passed to this process (none if not socket-activated).

    The variables are removed from ``environ`` as ``sd_listen_fds(1)`` does, so
    worker processes started later do not take the descriptors for theirs.
    """
    pid, count = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
    for name in _ACTIVATION_VARIABLES:
        environ.pop(name, None)
    if not pid or not count or pid != str(os.getpid()):
        return []
    try:
        number = int(count)
    except ValueError:
        log.warning("ignoring LISTEN_FDS=%r: not a number", count)
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + max(0, number)))


def activated_listeners(environ=os.environ) -> list[socket.socket]:
    """The listening sockets systemd passed (non-blocking), or ``[]``."""
    listeners = []
    for fd in listen_fds(environ):
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        sock.setblocking(False)
        listeners.append(sock)
    return listeners


def notify(*assignments: str, environ=os.environ) -> bool:
    """Send ``READY=1`` (and the like) to the service manager; whether it was sent."""
    address = environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", environ["NOTIFY_SOCKET"], exc)
        return False
    return True


def notify_reloading() -> bool:
    # systemd 253+ wants the monotonic time of the reload with RELOADING=1 (Type=notify-reload).
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
