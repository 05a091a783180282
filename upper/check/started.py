"""One run of the checks against a server the checker starts itself (``--start``).

The server is started, the checks run, and the server is stopped however they
end. What happened to the server (did not start, exited during the checks, had
to be killed) is part of the run, next to the checks' results, so every report
(text, JSON, JUnit, a class's summary) says it the same way.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from upper.check.checks import Check
from upper.check.outcome import Result, Status
from upper.check.runner import run_checks
from upper.check.student_server import StartFailed, Stop, StudentServer, describe_exit
from upper.check.target import Target
from upper.i18n import Message, _, translated

EXIT_WAIT = 1.0
"""Seconds a server that failed a check has to exit on its own before it is stopped."""


@dataclass(frozen=True)
class Launch:
    """How to start a server and how long to give it."""

    command: str
    cwd: str | None = None
    start_timeout: float = 10.0
    """Seconds the server has to accept a first connection."""
    stop_grace: float = 3.0
    """Seconds between SIGTERM and SIGKILL."""


@dataclass
class Run:
    """The results of one run, and, with ``--start``, what became of the server."""

    level: str
    target: Target
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    launch: Launch | None = None
    start_error: StartFailed | None = None
    exited_during_checks: int | None = None
    """The exit status of a server that ended while it was being checked."""
    stop: Stop | None = None
    output: list[str] = field(default_factory=list)
    """The server's last lines, kept when it did not start or ended on its own."""

    @property
    def passed(self) -> bool:
        return (
            self.start_error is None
            and self.exited_during_checks is None
            and all(result.passed for result in self.results)
        )

    @property
    def error(self) -> Message | None:
        """What went wrong with the server itself, in a few words (not the checks)."""
        if self.start_error is not None:
            return Message("did not start: {reason}", reason=self.start_error.reason)
        if self.exited_during_checks == 0:
            return Message("exited during the checks (exit 0)")
        if self.exited_during_checks is not None:
            return Message("crashed ({status})", status=describe_exit(self.exited_during_checks))
        return None

    def server_lines(self) -> list[str]:
        """What a report says about the server it started (nothing without ``--start``),
        in the language in use."""
        if self.launch is None:
            return []
        lines = []
        if self.error is not None:
            lines.append(_("server: {error}").format(error=translated(self.error)))
        if self.stop is not None:
            lines.append(_("server: {stop}").format(stop=translated(self.stop.describe())))
        if self.output:
            lines.append(_("its last lines of output:"))
            lines.extend(f"  | {line}" for line in self.output)
        return lines

    def json_fields(self) -> dict:
        """The run's keys of the ``--json`` document (keys and values other than
        sentences are never translated)."""
        fields = {"level": self.level}
        if self.launch is not None:
            fields["server"] = {
                "command": self.launch.command,
                "cwd": self.launch.cwd,
                "started": self.start_error is None,
                "error": self.error,
                "exited_during_checks": self.exited_during_checks,
                "stop": self.stop.how if self.stop else None,
                "exit_status": self.stop.exit_status if self.stop else None,
                "output": self.output,
            }
        return fields


def run_started(
    launch: Launch,
    target: Target,
    checks: list[Check],
    level: str,
    *,
    log_path: Path | None = None,
    on_started: Callable[[StudentServer], None] = lambda server: None,
    on_result: Callable[[Result], None] = lambda result: None,
) -> Run:
    """Start the server, run ``checks`` against ``target``, stop it: never raises for
    anything the server does."""
    run = Run(level, target, launch=launch)
    with StudentServer(
        launch.command, host=target.host, port=target.port, cwd=launch.cwd, log_path=log_path
    ) as server:
        try:
            server.start(launch.start_timeout)
        except StartFailed as failed:
            run = not_started(launch, target, checks, level, failed)
            run.stop = server.stop(launch.stop_grace)
            return run
        on_started(server)
        started = time.monotonic()
        run.results = run_checks(target, checks, on_result=on_result)
        run.seconds = time.monotonic() - started
        # A failing server may be crashing (its last connection reset, its traceback
        # being printed): give it a moment to exit, so the crash is reported as one.
        failing = not all(result.passed for result in run.results)
        run.exited_during_checks = server.exit_status(wait=EXIT_WAIT if failing else 0.0)
        run.stop = server.stop(launch.stop_grace)
        if run.exited_during_checks is not None:
            run.output = server.output_tail()
    return run


def not_started(
    launch: Launch, target: Target, checks: list[Check], level: str, failed: StartFailed
) -> Run:
    """The run of a server that never listened: every check not run, saying why."""
    reason = Message("the server did not start")
    results = [
        Result(c.name, c.title, Status.NOT_RUN, reason=reason, section=c.section) for c in checks
    ]
    return Run(level, target, results, launch=launch, start_error=failed, output=failed.output)
