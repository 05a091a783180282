"""UpperClient under gevent's monkey-patching (as inside Locust) is cooperative.

Run in a subprocess: monkey-patching the pytest process would change every test.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import socket
    import threading

    import gevent

    from upper.client import UpperClient

    CLIENTS = 30
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(CLIENTS)
    port = listener.getsockname()[1]

    def barrier_server():
        # Replies only once every client has sent its line: a client whose
        # receive blocked the process would keep the others from ever sending.
        accepted = [listener.accept()[0] for _ in range(CLIENTS)]
        lines = [conn.makefile("rb").readline() for conn in accepted]
        for conn, line in zip(accepted, lines):
            conn.sendall(line.upper())
        for conn in accepted:
            conn.makefile("rb").readline()  # DESCONEXION
            conn.close()

    def session(number):
        with UpperClient("127.0.0.1", port, timeout=10) as client:
            reply = client.upper(f"cliente {number}")
            client.disconnect()
            return reply

    server = gevent.spawn(barrier_server)
    sessions = [gevent.spawn(session, n) for n in range(CLIENTS)]
    gevent.joinall(sessions, timeout=20, raise_error=True)
    server.join(timeout=10)
    replies = [g.value for g in sessions]
    assert replies == [f"CLIENTE {n}" for n in range(CLIENTS)], replies
    assert threading.current_thread() is threading.main_thread()
    print("cooperative ok")
    """
)


def test_client_is_cooperative_under_monkey_patching():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cooperative ok"
