"""Keep `lumiere up`'s processes running, as a process manager would.

A child that dies is started again after a pause that doubles with each failure in a row
(1 s, 2 s, 4 s … 30 s) and is logged with its exit. One that has run for ``STABLE_S`` counts
as healthy again. One that fails ``MAX_FAILURES`` times in a row — it will not start, or it
dies again at once — stops the stack, saying which and why: retrying for ever would hide it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.logs import get_logger

log = get_logger(__name__)

FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0
STABLE_S = 30.0
MAX_FAILURES = 5
POLL_S = 0.5


class GaveUp(RuntimeError):
    """A child kept failing; the message says which, and why."""


@dataclass
class Child:
    """One supervised process: how to start it, whether it is alive, how to stop it."""

    name: str
    start: Callable[[], None]
    alive: Callable[[], bool]
    stop: Callable[[], None]
    # Where to look when it fails, for the message that stops the stack.
    log_hint: str = ""
    failures: int = 0
    started_at: float = field(default=0.0)
    retry_at: float | None = None


def pause(failures: int, first: float = FIRST_PAUSE_S) -> float:
    """Seconds to wait before the next start after ``failures`` failures in a row."""
    return float(min(LONGEST_PAUSE_S, first * 2 ** max(0, failures - 1)))


@dataclass
class Supervisor:
    """Starts children in order, restarts those that die, stops them in reverse order."""

    children: list[Child]
    first_pause_s: float = FIRST_PAUSE_S
    started: list[Child] = field(default_factory=list)

    def start(self) -> None:
        """Start every child (a child that fails to start here stops the stack at once)."""
        for child in self.children:
            child.start()
            child.started_at = time.monotonic()
            self.started.append(child)

    def watch(self, until: Callable[[], bool] = lambda: False) -> None:
        """Keep the children alive until ``until()`` is true; raises `GaveUp`."""
        while not until():
            for child in self.children:
                self.check(child)
            time.sleep(POLL_S)

    def check(self, child: Child) -> None:
        """Restart ``child`` if it died and its pause is over."""
        now = time.monotonic()
        if child.retry_at is None:
            if child.alive():
                if child.failures and now - child.started_at > STABLE_S:
                    log.info("child.healthy", child=child.name)
                    child.failures = 0
                return
            child.failures += 1
            child.retry_at = now + pause(child.failures, self.first_pause_s)
            log.warning("child.died", child=child.name, failures=child.failures)
        if child.failures > MAX_FAILURES:
            raise GaveUp(
                f"{child.name} kept failing ({MAX_FAILURES} restarts in a row); "
                f"see {child.log_hint or 'its log'}"
            )
        if now < child.retry_at:
            return
        child.retry_at = None
        child.started_at = now
        try:
            child.stop()  # whatever is left of it: its pid file, its orphaned children
            child.start()
            log.info("child.restarted", child=child.name, failures=child.failures)
        except Exception as err:  # counted as one more failure; the next check retries
            log.warning("child.restart_failed", child=child.name, error=str(err)[:500])

    def stop(self) -> None:
        """Stop the started children, the last started first."""
        for child in reversed(self.started):
            try:
                child.stop()
            except Exception as err:  # stopping anyway; say what could not be stopped
                log.warning("child.stop_failed", child=child.name, error=str(err)[:300])


def _die_with_parent() -> None:
    """In the child, before it runs: be sent SIGTERM if `lumiere up` itself dies (even by
    SIGKILL), so no server outlives the stack that started it (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


@dataclass
class Program:
    """A child started from a command line, in a process group of its own, so that stopping
    it also stops what it forked (a Celery worker's pool outlives a killed parent)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log_path.open("ab") if self.log_path else None
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if out:
                out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.alive():
            # The main process only: a Celery worker shuts its own pool down in order.
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self._signal(signal.SIGKILL)  # whatever is left of the group
        self.proc.wait()

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def child(self, name: str) -> Child:
        """This program as a supervised child called ``name``."""
        hint = str(self.log_path) if self.log_path else "the output above"
        return Child(name, self.start, self.alive, self.stop, log_hint=hint)
