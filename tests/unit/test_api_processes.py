"""How many API processes run: the setting, else one per core the API may use (at most 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.stack import api_argv
from shared.config import DEFAULT_MAX_API_WORKERS, Settings, usable_cores


def test_a_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs: two processes' worth
    assert usable_cores(quota) == min(cores, 2)
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == cores
    assert usable_cores(tmp_path / "absent") == cores


def test_the_setting_wins_and_the_default_follows_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUMIERE_API_WORKERS", "3")
    assert Settings().resolved_api_workers() == 3
    monkeypatch.setenv("LUMIERE_API_WORKERS", "0")
    expected = min(usable_cores(), DEFAULT_MAX_API_WORKERS)
    assert Settings().resolved_api_workers() == expected
    argv = api_argv("127.0.0.1", 8000, expected)
    assert argv[argv.index("--workers") + 1] == str(expected)
    # The fast loop and parser are asked for by name, never left to a silent fallback.
    assert argv[argv.index("--loop") + 1] == "uvloop"
    assert argv[argv.index("--http") + 1] == "httptools"
