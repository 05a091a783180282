"""Runs the checks one after the other, each bounded in time and unable to crash the tool.

A check runs in a worker thread with a deadline; its connections are closed
when it ends, and if it overruns (which only a checker bug could cause: every
wait in a check is bounded) they are closed under it. Once the server accepts
no more connections, the remaining checks are not run, each saying why.
"""

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from upper.check.checks import CHECKS, Check, Context
from upper.check.outcome import CheckFailed, Result, ServerGone, Status
from upper.check.target import ConnectError, Target
from upper.i18n import Message, message_of

log = logging.getLogger(__name__)

MARGIN = 5.0
"""Seconds a check may take beyond its budget of timeouts (connecting, the checker's own work)."""


@dataclass(frozen=True)
class Settings:
    long_line_bytes: int = 32 * 1024 * 1024
    """The streaming-long-line check's line: tens of MB, as the protocol allows any length."""
    sessions: int = 200
    """Sessions the concurrent-sessions check opens at once."""


def select_checks(names: Iterable[str] | None) -> list[Check]:
    """The checks named (in the table's order), or all; ``KeyError`` for an unknown name."""
    if not names:
        return list(CHECKS)
    known = {c.name for c in CHECKS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise KeyError(unknown[0])
    wanted = set(names)
    return [c for c in CHECKS if c.name in wanted]


def preflight(target: Target) -> None:
    """Raise ``ServerGone`` (with the client's one-line reason) if nothing listens."""
    try:
        target.open().close()
    except ConnectError as exc:
        raise ServerGone(message_of(exc)) from None


def run_checks(
    target: Target,
    checks: Iterable[Check] | None = None,
    settings: Settings = Settings(),
    on_result: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    results = []
    gone: str | None = None
    for check in CHECKS if checks is None else checks:
        if gone is None:
            result = run_one(check, target, settings)
            if result.status is Status.NOT_RUN:
                gone = Message(
                    "the server stopped accepting connections during {check}", check=check.name
                )
        else:
            result = _result(check, Status.NOT_RUN, gone)
        results.append(result)
        on_result(result)
    return results


def run_one(check: Check, target: Target, settings: Settings, margin: float = MARGIN) -> Result:
    budget = check.budget * target.timeout + margin
    started = time.monotonic()
    ctx = Context(target, settings.long_line_bytes, settings.sessions, started + budget, [])
    verdict: list[Result] = []

    def body() -> None:
        verdict.append(_judge(check, ctx))

    worker = threading.Thread(target=body, name=f"check {check.name}", daemon=True)
    worker.start()
    worker.join(budget + 1.0)
    if worker.is_alive():
        _close_all(ctx, abort=True)  # makes the check's socket calls fail, so it ends
        worker.join(1.0)
        result = _result(
            check,
            Status.FAIL,
            Message("the check did not finish within {seconds:g}s", seconds=budget),
        )
    else:
        result = verdict[0]
    _close_all(ctx)
    return dataclasses.replace(result, seconds=round(time.monotonic() - started, 3))


def _judge(check: Check, ctx: Context) -> Result:
    try:
        check.run(ctx)
    except CheckFailed as failed:
        return _result(check, Status.FAIL, failed.reason, failed.evidence, failed.hint)
    except ServerGone as gone:
        return _result(check, Status.NOT_RUN, message_of(gone))
    except Exception as exc:  # a checker bug must not hide the other checks' results
        log.debug("check %s crashed", check.name, exc_info=True)
        return _result(
            check, Status.FAIL, Message("the checker itself failed: {error}", error=repr(exc))
        )
    return _result(check, Status.PASS)


def _result(check: Check, status: Status, reason=None, evidence=None, hint=None) -> Result:
    hint = (hint or check.hint) if status is Status.FAIL else None
    return Result(
        check.name, check.title, status,
        reason=reason, hint=hint, evidence=evidence, section=check.section,
    )


def _close_all(ctx: Context, abort: bool = False) -> None:
    for conversation in list(ctx.opened):
        try:
            conversation.abort() if abort else conversation.close()
        except OSError:
            pass
