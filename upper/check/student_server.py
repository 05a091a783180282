"""The server under test, started by the checker (``--start``) and stopped after it.

The command is run without a shell: on POSIX it is split with ``shlex`` (the
rules of ``sh``: quotes and backslashes, no variables, no ``&&``); on Windows the
string goes to ``CreateProcess`` as it is, so the program parses it by the
Windows rules. A ``{port}`` in it becomes the port the checker picked.

Its output (standard output and error together) goes to a file, so a chatty
server never blocks on a full pipe and its last lines can be shown when it
fails. On POSIX it runs in a session of its own, and stopping it signals the
whole process group: SIGTERM, then SIGKILL after a grace period. Without
``os.killpg`` (Windows) it gets ``CREATE_NEW_PROCESS_GROUP`` and is stopped
with ``terminate()``, then ``kill()``; its own children are not reached there.
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from upper.i18n import Message
from upper.protocol.address import format_address

PORT_PLACEHOLDER = "{port}"
PROBE_INTERVAL = 0.05
"""Seconds between attempts to connect while the server starts."""
KILL_WAIT = 5.0
"""Seconds to wait for the processes to go after SIGKILL (or ``kill()``)."""
TAIL_LINES = 10
_TAIL_BYTES = 16 * 1024

STOPPED, KILLED, HAD_EXITED = "stopped", "killed", "had-exited"
"""How a stop went (JSON and CSV values, never translated): the server stopped when
asked, had to be killed, or had exited before it was asked."""


class StartFailed(Exception):
    """The server could not be run, exited before listening, or never listened.

    ``reason`` is one line (a ``Message``: English in JSON, translated where shown);
    ``output`` the program's last lines; ``exit_status`` the status it exited with,
    when it did.
    """

    def __init__(self, reason: str, output: list[str], exit_status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.output = output
        self.exit_status = exit_status


@dataclass(frozen=True)
class Stop:
    """How the server ended: ``how`` is one of ``STOPPED``, ``KILLED``, ``HAD_EXITED``."""

    how: str
    exit_status: int | None

    def describe(self) -> Message:
        if self.how == STOPPED:
            return Message("stopped on {signal}", signal=_stop_request())
        if self.how == KILLED:
            return Message("did not stop on {signal} (killed)", signal=_stop_request())
        return Message("had already exited ({status})", status=describe_exit(self.exit_status))


def describe_exit(status: int | None) -> Message:
    """``exit 1``, or ``killed by SIGSEGV`` for a status a signal gave."""
    if status is None:
        return Message("still running")
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return Message("killed by {signal}", signal=name)
    return Message("exit {status}", status=status)


def has_port_placeholder(command: str) -> bool:
    return PORT_PLACEHOLDER in command


def with_port(command: str, port: int) -> str:
    """The command as it is run: ``{port}`` replaced (what the reports show)."""
    return command.replace(PORT_PLACEHOLDER, str(port))


def command_line(command: str, port: int, windows: bool | None = None) -> list[str] | str:
    """What ``Popen`` runs: argv split by ``sh`` rules (POSIX) or the string (Windows),
    ``{port}`` replaced. ``ValueError`` for a POSIX command with unbalanced quotes."""
    if windows is None:
        windows = sys.platform == "win32"
    if windows:
        return with_port(command, port)
    argv = [with_port(word, port) for word in shlex.split(command)]
    if not argv:
        raise ValueError(Message("the command is empty"))
    return argv


def free_port(host: str) -> int:
    """A port nothing listens on now (the kernel's pick), for a ``{port}`` command."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class StudentServer:
    """One run of the command: ``start()`` until it listens, ``stop()`` at the end.

    Use it as a context manager: it is stopped however the checks end.
    """

    def __init__(
        self, command: str, *, host: str, port: int, cwd: str | None = None,
        log_path: Path | None = None,
    ):
        self.command = command
        self.host = host
        self.port = port
        self.cwd = cwd
        self.log_path = log_path
        self._own_log = log_path is None
        self._process: subprocess.Popen | None = None
        self.stop_result: Stop | None = None

    # -- starting -------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Run the command and wait until ``host:port`` accepts a connection."""
        try:
            argv = command_line(self.command, self.port)
        except ValueError as exc:
            raise StartFailed(Message("cannot read the command: {error}", error=exc.args[0]),
                              []) from None
        if self._accepts_connections():
            raise StartFailed(
                Message("something already accepts connections on {address}: stop it, or put "
                        "{{port}} in the command", address=self.address), [],
            )
        if self._own_log:
            handle, name = tempfile.mkstemp(prefix="upper-check-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # a Python server's prints reach the log
        with open(self.log_path, "wb") as log:
            try:
                self._process = subprocess.Popen(
                    argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, **_new_group(),
                )
            except OSError as exc:
                raise StartFailed(
                    Message(
                        "cannot run {command} in {cwd}: {error}",
                        command=repr(with_port(self.command, self.port)),
                        cwd=self.cwd or os.getcwd(), error=exc.strerror or str(exc),
                    ), [],
                ) from None
        self._wait_until_listening(timeout)

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartFailed(
                    Message("nothing accepted connections on {address} within {seconds}s",
                            address=self.address, seconds=f"{timeout:g}"),
                    self.output_tail(),
                )
            if not self._accepts_connections(min(remaining, 1.0)):
                time.sleep(min(PROBE_INTERVAL, max(0.0, deadline - time.monotonic())))
                continue
            self._raise_if_exited()  # something else may hold the port
            return

    def _accepts_connections(self, timeout: float = 1.0) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout).close()
        except OSError:
            return False
        return True

    def _raise_if_exited(self) -> None:
        status = self.exit_status()
        if status is not None:
            raise StartFailed(
                Message("the server exited before accepting connections ({status})",
                        status=describe_exit(status)),
                self.output_tail(),
                status,
            )

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    # -- while it runs --------------------------------------------------------------

    def exit_status(self, wait: float = 0.0) -> int | None:
        """``None`` while it runs (after waiting up to ``wait`` seconds for it to end);
        its exit status once it has exited."""
        if self._process is None:
            return None
        try:
            return self._process.wait(wait) if wait else self._process.poll()
        except subprocess.TimeoutExpired:
            return None

    def output_tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last ``lines`` lines the server printed."""
        if self.log_path is None:
            return []
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _TAIL_BYTES))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    # -- stopping -------------------------------------------------------------------

    def stop(self, grace: float) -> Stop:
        """SIGTERM (``terminate()``), up to ``grace`` seconds, then SIGKILL (``kill()``)."""
        if self.stop_result is not None or self._process is None:
            return self.stop_result
        already = self._process.poll() is not None
        if hasattr(os, "killpg"):
            stopped = self._stop_group(grace)
        else:
            stopped = self._stop_process(grace)
        status = self._process.poll()
        how = HAD_EXITED if already and stopped else STOPPED if stopped else KILLED
        self.stop_result = Stop(how, status)
        return self.stop_result

    def _stop_group(self, grace: float) -> bool:
        group = self._process.pid  # its own session: the group's id is its pid
        _signal_group(group, signal.SIGTERM)
        if _wait(lambda: self._process.poll() is not None and not _group_alive(group), grace):
            return True
        _signal_group(group, signal.SIGKILL)
        _wait(lambda: self._process.poll() is not None and not _group_alive(group), KILL_WAIT)
        return False

    def _stop_process(self, grace: float) -> bool:
        if self._process.poll() is not None:
            return True
        self._process.terminate()
        try:
            self._process.wait(grace)
            return True
        except subprocess.TimeoutExpired:
            self._process.kill()
        try:
            self._process.wait(KILL_WAIT)
        except subprocess.TimeoutExpired:
            pass
        return False

    def __enter__(self) -> "StudentServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop(0.0 if exc_info[0] is not None else 0.5)
        if self._own_log and self.log_path is not None:
            try:
                self.log_path.unlink()
            except OSError:
                pass


def _new_group() -> dict:
    if hasattr(os, "killpg"):
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _stop_request() -> str:
    return "SIGTERM" if hasattr(os, "killpg") else "terminate()"


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs (zombies, which a kill cannot end, do not)."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and int(fields[2]) == group and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait(done, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
