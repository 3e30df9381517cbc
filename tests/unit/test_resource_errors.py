"""Running out of disk or memory becomes a reason users can act on; other errors do not."""

from __future__ import annotations

import errno

import pytest
import torch

from worker.jobs import resource_error


def test_a_failed_cpu_allocation_is_reported_as_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)  # far beyond any machine: torch refuses it
    reason = resource_error(caught.value)
    assert reason is not None and "out of memory" in reason


def test_memory_error_and_full_disks_are_named() -> None:
    assert "out of memory" in (resource_error(MemoryError()) or "")
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        assert "disk is full" in (resource_error(OSError(code, "x")) or "")


def test_other_failures_are_not_disguised_as_resources() -> None:
    assert resource_error(OSError(errno.ECONNREFUSED, "refused")) is None
    assert resource_error(RuntimeError("shape mismatch")) is None
