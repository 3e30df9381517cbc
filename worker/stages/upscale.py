"""Upscale stage: the registry of upscalers and the classical Lanczos baseline.

An upscaler takes a batch (N, 3, h, w) and returns it at exactly (N, 3, H, W). Network
upscalers run at the smallest native factor that reaches the target, then resize exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np
import torch


class Upscaler(Protocol):
    """Anything that brings a batch of frames to an exact size."""

    name: str

    def __call__(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return ``frames`` (N, 3, h, w) resized to ``size`` = (H, W)."""
        ...


class LanczosUpscaler:
    """Classical Lanczos-4 resize (OpenCV): the fast baseline, never an AI stand-in."""

    name = "lanczos"

    def __call__(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        # OpenCV works on HWC arrays; it resizes up to 4 channels at once, so 3 is fine.
        images = frames.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
        out = np.stack(
            [cv2.resize(img, (width, height), interpolation=cv2.INTER_LANCZOS4) for img in images]
        )
        result = torch.from_numpy(out).permute(0, 3, 1, 2).clamp_(0.0, 1.0)
        return result.to(frames.device, frames.dtype)


# name -> factory(device, dtype, **options). AI upscalers register here (see worker/models).
UpscalerFactory = Callable[..., Upscaler]
UPSCALERS: dict[str, UpscalerFactory] = {
    "lanczos": lambda device, dtype, **options: LanczosUpscaler(),
}


def get_upscaler(
    name: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> Upscaler:
    """Build the upscaler called ``name``; unknown names raise ``KeyError`` with the choices."""
    try:
        factory = UPSCALERS[name]
    except KeyError:
        raise KeyError(f"unknown upscaler {name!r}; choose one of {sorted(UPSCALERS)}") from None
    return factory(device=device, dtype=dtype, **options)
