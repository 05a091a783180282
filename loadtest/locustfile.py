"""Locust load test for UPPER servers (see docs/loadtest.md).

    locust -f loadtest/locustfile.py                      # web UI on http://localhost:8089
    locust -f loadtest/locustfile.py --headless -u 1000 -r 200 -t 30s --host tcp://127.0.0.1:5000

Every simulated user repeats one cycle: connect (request ``connect``), send
``--messages-per-connection`` lines and check each reply is exactly their
uppercase (request ``upper``; ``--pipeline-depth`` of them in flight at a time),
then ``DESCONEXION`` (request ``DESCONEXION``: the time until the server closes
the connection). A request still waiting when the test stops, for longer than
``--stall-threshold``, is a failure.
"""

import itertools
import logging
import random
import sys
from itertools import islice
from pathlib import Path

import gevent
from locust import constant, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

try:
    from upper.loadtest.tcp_user import REQUEST_TYPE, TcpUser
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from upper.loadtest.tcp_user import REQUEST_TYPE, TcpUser

from upper.cli.options import number
from upper.client.duplex import DEFAULT_TIMEOUT
from upper.protocol import ends_session, uppercase

log = logging.getLogger(__name__)

DEFAULTS = {
    "messages_per_connection": 10,
    "message_size": 32,
    "unicode": False,
    "think_time": 0.0,
    "socket_timeout": DEFAULT_TIMEOUT,
    "pipeline_depth": 1,
    "stall_threshold": 1.0,
}
POOL_SIZE = 64
"""Distinct messages per (size, unicode) pool; each user walks it from a random start."""
RECONNECT_PAUSE = 0.1
"""Seconds a user waits after a failed connect, so a dead server is not a busy loop."""

ASCII_WORDS = ("hola", "servidor", "mensaje", "carga", "prueba", "texto", "linea", "locust")
UNICODE_WORDS = ("canción", "ñandú", "straße")


# -- options ------------------------------------------------------------------
# Help texts are plain sentences: the web UI shows them as the labels of its fields,
# next to the value (defaults are in docs/loadtest.md and in those fields).


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    parser.add_argument(
        "--messages-per-connection",
        type=number(int),
        default=DEFAULTS["messages_per_connection"],
        help="Lines each user sends on a connection before DESCONEXION",
    )
    parser.add_argument(
        "--message-size",
        type=number(int),
        default=DEFAULTS["message_size"],
        help="Bytes per line, not counting the newline",
    )
    parser.add_argument(
        "--unicode",
        action="store_true",
        default=DEFAULTS["unicode"],
        help="Mix non-ASCII words into the lines (canción, ñandú, straße)",
    )
    parser.add_argument(
        "--think-time",
        type=number(float),
        default=DEFAULTS["think_time"],
        help="Seconds a user pauses before sending each line",
    )
    parser.add_argument(
        "--socket-timeout",
        type=number(float, above=True),
        default=DEFAULTS["socket_timeout"],
        help="Seconds to wait for a connection, a reply, or the close after DESCONEXION",
    )
    parser.add_argument(
        "--pipeline-depth",
        type=number(int, minimum=1),
        default=DEFAULTS["pipeline_depth"],
        help="Lines each user keeps in flight on its connection (1: one at a time)",
    )
    parser.add_argument(
        "--stall-threshold",
        type=number(float),
        default=DEFAULTS["stall_threshold"],
        help="Seconds after which a request still waiting when the test stops is a failure",
    )


def settings(environment) -> dict:
    """The options of this run (the defaults when Locust is driven without a command line)."""
    options = environment.parsed_options
    return {key: getattr(options, key, default) for key, default in DEFAULTS.items()}


def settings_errors(values: dict) -> list[str]:
    """Invalid values that reached us without argparse (typed into the web UI)."""
    errors = []
    for key in ("messages_per_connection", "message_size", "think_time", "stall_threshold"):
        if values[key] < 0:
            errors.append(f"--{key.replace('_', '-')} must be >= 0, not {values[key]}")
    if values["socket_timeout"] <= 0:
        errors.append(f"--socket-timeout must be > 0, not {values['socket_timeout']}")
    if values["pipeline_depth"] < 1:
        errors.append(f"--pipeline-depth must be >= 1, not {values['pipeline_depth']}")
    return errors


class InvalidOption(Exception):
    """A value typed into the web UI that the command line would have refused."""


@events.test_start.add_listener
def check_settings(environment, **_kwargs) -> None:
    """Values typed into the web UI: each error is a failure of the run and a logged
    error (the UI's Failures and Logs tabs), and the run stops; users send nothing."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    errors = settings_errors(settings(environment))
    for error in errors:
        log.error("%s; stopping the test", error)
        environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name="options",
            response_time=0,
            response_length=0,
            exception=InvalidOption(error),
            context={},
        )
    if errors:
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
        self.invalid = bool(settings_errors(values))
        if self.invalid:
            values = DEFAULTS  # the run is being stopped (check_settings); this user sends nothing
        self.client.timeout = values["socket_timeout"]
        self.client.stall_threshold = values["stall_threshold"]
        self.messages_per_connection = values["messages_per_connection"]
        self.think_time = values["think_time"]
        self.pipeline_depth = values["pipeline_depth"]
        self.pool = message_pool(values["message_size"], values["unicode"])

    def on_start(self) -> None:
        if self.invalid:
            raise StopUser()

    @task
    def cycle(self) -> None:
        client = self.client
        if not client.connect():
            gevent.sleep(RECONNECT_PAUSE)
            return
        start = random.randrange(POOL_SIZE)
        if self.pipeline_depth > 1:
            lines = islice(itertools.cycle(self.pool), start, start + self.messages_per_connection)
            if self.think_time:
                lines = self.paced(lines)
            if not client.pipeline(lines, self.pipeline_depth):
                return  # the connection was lost: counted; the next cycle reconnects
        elif not self.one_at_a_time(start):
            return
        client.disconnect()

    def one_at_a_time(self, index: int) -> bool:
        """Each line's reply before the next line; False when the connection was lost."""
        client = self.client
        upper_line = client.upper_line
        pool = self.pool
        think_time = self.think_time
        for _ in range(self.messages_per_connection):
            if think_time:
                gevent.sleep(think_time)
            line, expected = pool[index]
            if not upper_line(line, expected) and not client.connected:
                return False  # timed out or reset: counted; the next cycle reconnects
            index = (index + 1) % POOL_SIZE
        return True

    def paced(self, lines):
        for line in lines:
            gevent.sleep(self.think_time)
            yield line


if __name__ == "__main__":
    # `locust -f loadtest/locustfile.py --help` prints Locust's help before it imports
    # this file (locust.argument_parser.parse_locustfile_option), so this file's options
    # and TcpUser's --tls-* are not in it: `python loadtest/locustfile.py --help` prints
    # the same help with them, built by the same parser and listeners.
    from locust.argument_parser import get_parser

    get_parser().print_help()
