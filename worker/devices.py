"""Pick the device and compute dtype for networks, and how much memory a run may use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch


def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` means the first CUDA GPU when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


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


def free_memory_bytes(device: torch.device) -> int:
    """Memory a run on ``device`` may still take: free GPU memory, or available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30
