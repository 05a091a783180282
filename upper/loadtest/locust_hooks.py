"""Where ``TcpUser`` hooks into Locust itself, beyond the ``User`` API, in one place.

Locust has no API for these; each relies on how Locust works today, listed in
``USED_LOCUST_NAMES`` with why, and ``tests/test_locust_hooks.py`` checks each
one by behaviour, so a Locust upgrade that changes one fails there:

- **Options checked as argparse checks them.** ``--host`` and the ``--tls-*``
  files are refused with the other invalid options (exit 2, one line), before
  ``--processes`` forks: the parser's ``parse_args`` is wrapped from an
  ``init_command_line_parser`` listener.
- **Workers die with their parent** (Linux, ``prctl`` after each fork).
- **A malformed class host stops the run** at ``init``, and a host typed into the
  web UI stops the test it started.
- **Stalls count in the exit code**: Ctrl+C or SIGTERM stops the users before
  Locust decides its exit code.
- **Finer latencies**: Locust keeps response times in whole-millisecond buckets
  below 100 ms, so loopback latencies read 0 or 1 ms; ``install`` replaces
  Locust's documented bucketing function with one that keeps 0.01 ms below
  10 ms (percentiles in the CSV, ``--json`` and the web UI; the console table
  prints whole milliseconds whatever the buckets).
- **Numeric hosts without gevent's resolver thread** (``upper.client.resolve``),
  installed by every ``TcpUser``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

import gevent
import locust.stats
from locust import events
from locust.runners import LocalRunner, WorkerRunner

from upper.client.resolve import answer_numeric_hosts_at_once

log = logging.getLogger(__name__)

USED_LOCUST_NAMES = {
    "locust.events.init_command_line_parser": "fired with the parser before it parses; "
    "listeners add options, and this one wraps parser.parse_args",
    "locust.argument_parser.get_parser": "builds the parser, fires init_command_line_parser, "
    "and the caller then calls its parse_args (with --processes, before forking)",
    "locust.events.init": "fired in every process once the runner exists",
    "locust.events.test_start": "fired on the master (or local runner) when a test starts",
    "locust.events.quitting": "fired before Locust computes its exit code, and before it "
    "stops the users",
    "locust.runners.LocalRunner.stop": "stops the users (does nothing when stopped already)",
    "locust.runners.WorkerRunner": "a worker process: the master reports web UI hosts",
    "locust.stats.bucket_response_time": "the documented, replaceable bucketing of "
    "response times (customizing-response-time-bucketing)",
    "Environment.parsed_options, .user_classes, .host, .runner": "what a run was given: "
    "its options, user classes, host and runner",
}
"""Every Locust name this module relies on, and what it relies on it for."""

FINE_BELOW_MS = 10.0
"""Response times under this many milliseconds are kept in 0.01 ms buckets."""
_PR_SET_PDEATHSIG = 1
_installed = False
_dying_with_the_parent = False


def fine_bucket(response_time: float) -> float | int:
    """Locust's bucket for ``response_time`` (ms), but 0.01 ms wide below ``FINE_BELOW_MS``."""
    if response_time < FINE_BELOW_MS:
        # Not round(x, 2): a third of Locust's whole log() per request more (timeit).
        return int(response_time * 100.0 + 0.5) / 100
    return _locust_bucket(response_time)


_locust_bucket = locust.stats.bucket_response_time


def install(
    check_options: Callable[[object], str | None],
    host_errors: Callable[[object], list[str]],
    add_options: Callable[[object], None],
) -> None:
    """Register the hooks once per process.

    ``add_options(parser)`` adds the user's options; ``check_options(options)``
    returns a usage error for the parsed options, or ``None``;
    ``host_errors(environment)`` says why the hosts of a run's ``TcpUser`` classes
    are malformed, if they are.
    """
    global _installed
    if _installed:
        return
    _installed = True
    locust.stats.bucket_response_time = fine_bucket

    @events.init_command_line_parser.add_listener
    def _options_checked_with_the_others(parser, **_kwargs) -> None:
        parse_args = parser.parse_args

        def parse_and_check(*args, **kwargs):
            options = parse_args(*args, **kwargs)
            if problem := check_options(options):
                parser.error(problem)
            return options

        add_options(parser)
        parser.parse_args = parse_and_check
        die_with_the_parent_after_fork()

    @events.init.add_listener
    def _check_hosts_at_init(environment, **_kwargs) -> None:
        """A ``TcpUser`` class's own malformed ``host`` (``--host`` was checked with the
        options): refuse to start. After ``--processes`` has forked, its workers end
        with this process."""
        problems = host_errors(environment)
        if problems:
            for problem in problems:
                log.error("%s", problem)
            sys.exit(1)

    @events.test_start.add_listener
    def _check_hosts_at_start(environment, **_kwargs) -> None:
        """A host typed into the web UI: report it and stop the run that just started."""
        runner = environment.runner
        if runner is None or isinstance(runner, WorkerRunner):
            return
        problems = host_errors(environment)
        if problems:
            for problem in problems:
                log.error("%s; stopping the test", problem)
            gevent.spawn_later(0.1, runner.stop)

    @events.quitting.add_listener
    def _stop_users_before_the_exit_code(environment, **_kwargs) -> None:
        """Ctrl+C or SIGTERM: stop the users first, so that stalls count in the exit code.

        Locust decides its exit code right after this event and stops the users only
        afterwards; the requests found stalled as they are killed would then be in the
        report but not in the exit code. (A run that ends by ``-t`` is stopped first.)
        """
        runner = environment.runner
        if isinstance(runner, LocalRunner):
            runner.stop()  # does nothing when the test is already stopped


def prepare_user_process() -> None:
    """What each process needs before its first ``TcpUser`` connects."""
    answer_numeric_hosts_at_once()


def die_with_the_parent_after_fork() -> None:
    """Workers forked by ``--processes`` end when the process that forked them does.

    Locust's workers otherwise outlive a master that exited at start, retrying it
    for minutes. Linux only (``prctl``); elsewhere workers end when their master
    stops sending heartbeats.
    """
    global _dying_with_the_parent
    if not sys.platform.startswith("linux") or _dying_with_the_parent:
        return
    _dying_with_the_parent = True
    forking = [0]  # the pid of the process that forks, as the child sees it

    def before() -> None:
        forking[0] = os.getpid()

    def in_child() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # no prctl: rely on the master's heartbeats
            return
        if os.getppid() != forking[0]:  # the parent was gone before prctl: no signal will come
            os._exit(1)

    os.register_at_fork(before=before, after_in_child=in_child)
