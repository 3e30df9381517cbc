"""Pick the device and compute dtype for networks, and how much memory a run may use."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch


def compute_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype that measured fastest without visible loss on ``device``."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # oneDNN runs bf16 convolutions natively on AVX-512-BF16/AMX CPUs (1.4–1.6× fp32 here);
    # without those instructions bf16 is emulated and slower, so stay in fp32.
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for ``dtype`` below fp32; a no-op for fp32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``. A CPU tensor bound for a GPU is copied through pinned memory
    without blocking: the stages' threads share one CUDA stream, and a copy from ordinary
    memory would wait there for all the work queued before it (a batch being upscaled)."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    # The caching host allocator keeps the pinned block until the copy has run.
    return tensor.pin_memory().to(device, non_blocking=True)


def _meminfo(field: str, fallback: int) -> int:
    """A /proc/meminfo figure in bytes (``fallback`` where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return fallback


def free_memory_bytes(device: torch.device) -> int:
    """Memory a run on ``device`` may still take: free GPU memory, or available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return _meminfo("MemAvailable", 2 << 30)


def total_memory_bytes(device: torch.device) -> int:
    """All the memory of ``device``: a constant per machine, unlike what is free."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo("MemTotal", 8 << 30)


@functools.cache
def keep_freed_memory() -> bool:
    """Stop glibc handing freed heap back to the kernel after every layer (CPU inference).

    Each layer's output is a fresh multi-MiB tensor; by default glibc returns the freed
    heap top (and mmapped blocks) to the kernel, so the next layer page-faults and zeroes
    it all again: 10–15 % of a waifu2x tile. Keeping it costs RSS at the peak we reach
    anyway. Returns whether glibc accepted the settings (False on other C libraries).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    # 32 MiB is glibc's ceiling for the mmap threshold on 64-bit builds.
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),
            (m_trim_threshold, 1 << 30),
            (m_top_pad, 64 << 20),
        )
    )


@functools.cache
def can_compile_cpu_kernels() -> bool:
    """Whether torch.compile can build CPU kernels here: Inductor needs a C++ compiler.

    The slim worker image has none, so there the CPU runs direct bf16 convolutions (slower,
    same pictures); machines with a compiler get the compiled Winograd path."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
