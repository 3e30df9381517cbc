"""Interpolate stage: the registry of frame interpolators and the classical baselines.

An interpolator sees a pair of neighbouring source frames twice: at source resolution
(``src0``, ``src1``, where motion is cheap to estimate) and after upscaling (``out0``,
``out1``, the pixels to warp). It returns one output-resolution frame per time in (0, 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch


class Interpolator(Protocol):
    """Makes in-between frames of one pair of neighbouring frames."""

    name: str

    def __call__(
        self,
        src0: torch.Tensor,
        src1: torch.Tensor,
        out0: torch.Tensor,
        out1: torch.Tensor,
        times: Sequence[float],
    ) -> list[torch.Tensor]:
        """Frames (1, 3, H, W) at each ``t`` in ``times`` between ``out0`` (t=0) and ``out1``."""
        ...


class BlendInterpolator:
    """Linear cross-fade: the classical baseline (ghosts on motion, never morphs)."""

    name = "blend"

    def __call__(self, src0, src1, out0, out1, times):  # type: ignore[no-untyped-def]
        return [torch.lerp(out0, out1, float(t)) for t in times]


class RepeatInterpolator:
    """Nearest frame in time: what a plain frame-rate conversion does."""

    name = "repeat"

    def __call__(self, src0, src1, out0, out1, times):  # type: ignore[no-untyped-def]
        return [out0.clone() if t < 0.5 else out1.clone() for t in times]


InterpolatorFactory = Callable[..., Interpolator]
INTERPOLATORS: dict[str, InterpolatorFactory] = {
    "blend": lambda device, dtype, **options: BlendInterpolator(),
    "repeat": lambda device, dtype, **options: RepeatInterpolator(),
}


def get_interpolator(
    name: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> Interpolator:
    """Build the interpolator called ``name``; unknown names raise ``KeyError``."""
    try:
        factory = INTERPOLATORS[name]
    except KeyError:
        raise KeyError(
            f"unknown interpolator {name!r}; choose one of {sorted(INTERPOLATORS)}"
        ) from None
    return factory(device=device, dtype=dtype, **options)
