"""`lumiere up`'s supervisor, on real processes: a child that dies is started again, one that
keeps dying stops the stack with its name, and stopping takes its whole process group."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cli.local_services import pid_alive
from cli.supervisor import GaveUp, Program, Supervisor, pause

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_pauses_double_up_to_a_ceiling() -> None:
    assert [pause(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert pause(20) == 30


def test_a_child_that_dies_is_started_again(tmp_path: Path) -> None:
    program = Program(SLEEPER, dict(os.environ), tmp_path / "sleeper.log")
    supervisor = Supervisor([program.child("sleeper")], first_pause_s=0.01)
    supervisor.start()
    try:
        assert program.proc is not None
        first = program.proc.pid
        program.proc.kill()
        program.proc.wait()
        deadline = time.monotonic() + 10
        supervisor.watch(until=lambda: program.alive() or time.monotonic() > deadline)
        assert program.alive() and program.proc.pid != first
        assert supervisor.children[0].failures == 1
    finally:
        supervisor.stop()
    assert not program.alive()


def test_a_child_that_keeps_dying_stops_the_stack_naming_it(tmp_path: Path) -> None:
    doomed = Program([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    supervisor = Supervisor([doomed.child("doomed")], first_pause_s=0.01)
    supervisor.start()
    with pytest.raises(GaveUp, match="doomed kept failing"):
        supervisor.watch(until=lambda: False)
    supervisor.stop()


def test_stopping_a_program_stops_what_it_forked(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    forker = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        f"p = subprocess.Popen({SLEEPER!r}); open({str(pid_file)!r}, 'w').write(str(p.pid)); "
        "time.sleep(60)",
    ]
    program = Program(forker, dict(os.environ))
    program.start()
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)
    program.stop(timeout=5)
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)
