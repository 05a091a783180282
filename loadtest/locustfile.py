"""Locust load test for UPPER servers (see docs/loadtest.md).

    locust -f loadtest/locustfile.py                      # web UI on http://localhost:8089
    locust -f loadtest/locustfile.py --headless -u 1000 -r 200 -t 30s --host tcp://127.0.0.1:5000

Every simulated user repeats one cycle: connect (request ``connect``), send
``--messages-per-connection`` lines and check each reply is exactly their
uppercase (request ``upper``), then ``DESCONEXION`` (request ``DESCONEXION``:
the time until the server closes the connection).
"""

import logging
import random
import sys
from pathlib import Path

import gevent
from locust import constant, events, task

try:
    from loadtest.tcp_user import TcpUser
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from loadtest.tcp_user import TcpUser

from upper_cli.options import number
from upper_protocol import ends_session, uppercase

log = logging.getLogger(__name__)

DEFAULTS = {
    "messages_per_connection": 10,
    "message_size": 32,
    "unicode": False,
    "think_time": 0.0,
    "socket_timeout": 5.0,
}
POOL_SIZE = 64
"""Distinct messages per (size, unicode) pool; each user walks it from a random start."""
RECONNECT_PAUSE = 0.1
"""Seconds a user waits after a failed connect, so a dead server is not a busy loop."""

ASCII_WORDS = ("hola", "servidor", "mensaje", "carga", "prueba", "texto", "linea", "locust")
UNICODE_WORDS = ("canción", "ñandú", "straße")


# -- options ------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    parser.add_argument(
        "--messages-per-connection",
        type=number(int),
        default=DEFAULTS["messages_per_connection"],
        help="lines each user sends on a connection before DESCONEXION (default: %(default)s)",
    )
    parser.add_argument(
        "--message-size",
        type=number(int),
        default=DEFAULTS["message_size"],
        help="bytes per line, not counting the newline (default: %(default)s)",
    )
    parser.add_argument(
        "--unicode",
        action="store_true",
        default=DEFAULTS["unicode"],
        help="mix non-ASCII words into the lines (canción, ñandú, straße)",
    )
    parser.add_argument(
        "--think-time",
        type=number(float),
        default=DEFAULTS["think_time"],
        help="seconds a user pauses between lines (default: %(default)s)",
    )
    parser.add_argument(
        "--socket-timeout",
        type=number(float, above=True),
        default=DEFAULTS["socket_timeout"],
        help="seconds to wait for a connection, a reply or the close after DESCONEXION "
        "(default: %(default)s)",
    )


def settings(environment) -> dict:
    """The options of this run (the defaults when Locust is driven without a command line)."""
    options = environment.parsed_options
    return {key: getattr(options, key, default) for key, default in DEFAULTS.items()}


def settings_errors(values: dict) -> list[str]:
    """Invalid values that reached us without argparse (typed into the web UI)."""
    errors = []
    for key in ("messages_per_connection", "message_size", "think_time"):
        if values[key] < 0:
            errors.append(f"--{key.replace('_', '-')} must be >= 0, not {values[key]}")
    if values["socket_timeout"] <= 0:
        errors.append(f"--socket-timeout must be > 0, not {values['socket_timeout']}")
    return errors


@events.test_start.add_listener
def check_settings(environment, **_kwargs) -> None:
    runner = environment.runner
    errors = settings_errors(settings(environment))
    if errors and runner is not None:
        for error in errors:
            log.error("%s; stopping the test", error)
        gevent.spawn_later(0.1, runner.stop)


# -- messages -----------------------------------------------------------------

_pools: dict[tuple[int, bool], list[tuple[bytes, bytes]]] = {}


def make_message(rng: random.Random, size: int, mixed: bool) -> bytes:
    """``size`` bytes of words (whole UTF-8 characters only), lowercase, no newline."""
    out = bytearray()
    first = True
    while len(out) < size:
        if mixed and (first or rng.random() < 0.4):
            word = rng.choice(UNICODE_WORDS)
        else:
            word = rng.choice(ASCII_WORDS)
        out += word.encode() + b" "
        first = False
    cut = size
    while cut < len(out) and cut > 0 and out[cut] & 0xC0 == 0x80:
        cut -= 1  # never split a character: pad with ASCII instead
    return bytes(out[:cut]) + b"x" * (size - cut)


def message_pool(size: int, mixed: bool) -> list[tuple[bytes, bytes]]:
    """``(line, expected reply)``, both ending in a newline, for ``POOL_SIZE`` messages.

    Cached, and encoded once: the expected reply comes from the project's
    protocol package, computed once per message here rather than once per request.
    """
    key = (size, mixed)
    pool = _pools.get(key)
    if pool is None:
        rng = random.Random(f"{size}-{mixed}")
        pool = []
        while len(pool) < POOL_SIZE:
            line = make_message(rng, size, mixed)
            if ends_session(line):
                continue
            pool.append((line + b"\n", uppercase(line) + b"\n"))
        _pools[key] = pool
    return pool


# -- the user -----------------------------------------------------------------


class UpperUser(TcpUser):
    """connect, ``--messages-per-connection`` checked lines, DESCONEXION; over and over."""

    wait_time = constant(0)

    def __init__(self, environment) -> None:
        super().__init__(environment)
        values = settings(environment)
        if settings_errors(values):
            values = DEFAULTS  # the run is being stopped (check_settings); stay harmless
        self.client.timeout = values["socket_timeout"]
        self.messages_per_connection = values["messages_per_connection"]
        self.think_time = values["think_time"]
        self.pool = message_pool(values["message_size"], values["unicode"])

    @task
    def cycle(self) -> None:
        client = self.client
        if not client.connect():
            gevent.sleep(RECONNECT_PAUSE)
            return
        upper_line = client.upper_line
        pool = self.pool
        think_time = self.think_time
        index = random.randrange(len(pool))
        for _ in range(self.messages_per_connection):
            line, expected = pool[index]
            if not upper_line(line, expected) and not client.connected:
                return  # timed out or reset: counted; the next cycle reconnects
            index = (index + 1) % POOL_SIZE
            if think_time:
                gevent.sleep(think_time)
        client.disconnect()
