"""Optical flow between neighbouring source frames (OpenCV DIS), as torch tensors.

Flow is estimated at source resolution, where it is cheap, and scaled to the output size by
``resize_flow``. A flow tensor is (1, 2, h, w) in pixels, channel 0 along x and channel 1
along y: the pixel at ``p`` in frame 0 is found at ``p + flow01[p]`` in frame 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FlowSettings:
    """DIS parameters; the defaults favour quality at film-scan source sizes."""

    finest_scale: int = 0
    patch_size: int = 8
    patch_stride: int = 3
    gradient_iterations: int = 25
    variational_iterations: int = 5


FLOW_PRESETS: dict[str, FlowSettings] = {
    "fast": FlowSettings(finest_scale=1, patch_stride=4, gradient_iterations=16),
    # Patch search down to the finest scale beats a finer variational polish (measured on the
    # interpolation benchmark at 480 px: +0.10 dB over finest_scale=1; one variational
    # iteration keeps all but 0.003 dB of five at half the cost).
    "medium": FlowSettings(variational_iterations=1),
    "fine": FlowSettings(),
}


def to_gray_u8(frame: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) RGB in [0, 1] to an (h, w) uint8 luma image for DIS."""
    rgb = frame[0].detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    rgb8 = cv2.convertScaleAbs(rgb, alpha=255.0)
    return cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY)


def flow_frame(src: torch.Tensor, max_width: int) -> torch.Tensor:
    """A frame at the size flow is estimated at: the source size, or ``max_width`` wide."""
    h, w = src.shape[-2:]
    if w <= max_width:
        return src
    # Above ~500 pixels DIS gains almost nothing (measured on 720p) and costs quadratically.
    size = (max(1, round(h * max_width / w)), max_width)
    return F.interpolate(src, size=size, mode="area")


def _dis(settings: FlowSettings) -> cv2.DISOpticalFlow:
    # A fresh object per call: DIS keeps state between calc() calls and we want pure stages.
    # OpenCV's type stubs lack the factory function.
    dis: cv2.DISOpticalFlow = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
        cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
    )
    dis.setFinestScale(settings.finest_scale)
    dis.setPatchSize(settings.patch_size)
    dis.setPatchStride(settings.patch_stride)
    dis.setGradientDescentIterations(settings.gradient_iterations)
    dis.setVariationalRefinementIterations(settings.variational_iterations)
    dis.setUseMeanNormalization(True)
    dis.setUseSpatialPropagation(True)
    return dis


def dis_flow(gray0: np.ndarray, gray1: np.ndarray, settings: FlowSettings) -> np.ndarray:
    """DIS flow from ``gray0`` to ``gray1`` as an (h, w, 2) float32 array."""
    flow = np.zeros((*gray0.shape, 2), dtype=np.float32)
    return np.asarray(_dis(settings).calc(gray0, gray1, flow), dtype=np.float32)


def bidirectional_flow(
    src0: torch.Tensor, src1: torch.Tensor, settings: FlowSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward flow (1, 2, h, w) between two source frames, on their device."""
    settings = settings or FLOW_PRESETS["fine"]
    gray0, gray1 = to_gray_u8(src0), to_gray_u8(src1)
    flows = [dis_flow(gray0, gray1, settings), dis_flow(gray1, gray0, settings)]
    f01, f10 = (
        # Contiguous (N, 2, h, w): a permuted view of the (h, w, 2) array would send every
        # later resize and warp down the slow channels-last paths.
        torch.from_numpy(f).permute(2, 0, 1).unsqueeze(0).contiguous().to(src0.device)
        for f in flows
    )
    return f01, f10


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a flow field to ``size`` = (H, W) and rescale its vectors to match."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], device=flow.device, dtype=flow.dtype)
    return out * scale.view(1, 2, 1, 1)
