"""Warping primitives in torch: backward warp, softmax forward splatting, hole filling.

All work on (1, C, h, w) tensors on any device; flows are (1, 2, h, w) in pixels.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=4)
def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates (1, 2, h, w), x then y; cached: every warp of a film reuses them."""
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0)


def _targets(flow: torch.Tensor) -> torch.Tensor:
    """Where each pixel's flow points: ``x + flow(x)`` as (N, 2, h, w) float32 pixel coordinates."""
    _, _, h, w = flow.shape
    return _base_grid(h, w, flow.device, torch.float32) + flow.to(torch.float32)


def backwarp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``image`` at ``x + flow(x)`` (``bilinear`` or ``bicubic``, edges clamped)."""
    n, _, h, w = image.shape
    if image.device.type == "cpu" and image.dtype == torch.float32 and n == flow.shape[0] == 1:
        return _remap(image, flow, mode)
    pos = _targets(flow)
    # grid_sample wants (x, y) in [-1, 1] with -1/1 on the outer pixel centres.
    gx = pos[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pos[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    # Half-precision grids are off by up to a third of a pixel at 1280 px, so sample in fp32.
    source = image if image.dtype == torch.float64 else image.to(torch.float32)
    warped = F.grid_sample(
        source, grid.to(source.dtype), mode=mode, padding_mode="border", align_corners=True
    )
    return warped.to(image.dtype)


def within_frame(flow: torch.Tensor, ramp: float = 1.0) -> torch.Tensor:
    """How far inside the frame each pixel's warp target ``x + flow(x)`` lies, as a weight.

    1 on or inside the outer pixel centres, falling to 0 at ``ramp`` pixels beyond them:
    a backward warp reads a clamped edge there, not picture. Returns (1, 1, h, w).
    """
    _, _, h, w = flow.shape
    pos = _targets(flow)
    x, y = pos[:, :1], pos[:, 1:]
    inside = torch.minimum(torch.minimum(x, (w - 1) - x), torch.minimum(y, (h - 1) - y))
    return (1.0 + inside / ramp).clamp_(0.0, 1.0)


_CV2_MODES = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def _remap(image: torch.Tensor, flow: torch.Tensor, mode: str) -> torch.Tensor:
    """``backwarp`` on the CPU with OpenCV: the same sampling, 2.2x faster than grid_sample.

    OpenCV's cubic kernel is torch's (a = -0.75), and BORDER_REPLICATE is grid_sample's
    border padding; the two agree within 1e-4 (tests/unit/test_interp_primitives.py).
    """
    # Float maps: OpenCV 5 then samples at the exact position (4.x and fixed-point maps round
    # to 1/32 px, hence the floor of 5.0 in pyproject.toml).
    map_x, map_y = _targets(flow)[0].contiguous().numpy()
    source = image[0].contiguous().numpy()
    out = np.empty_like(source)
    # One plane at a time: the planes of a (C, h, w) tensor are already contiguous images,
    # so no copy to and from OpenCV's interleaved layout is needed.
    for channel in range(image.shape[1]):
        cv2.remap(
            source[channel],
            map_x,
            map_y,
            _CV2_MODES[mode],
            dst=out[channel],
            borderMode=cv2.BORDER_REPLICATE,
        )
    return torch.from_numpy(out).unsqueeze(0)


def softsplat(
    values: torch.Tensor, flow: torch.Tensor, metric: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-splat ``values`` along ``flow`` with bilinear footprints weighted by exp(metric).

    Returns the weighted sums (1, C, h, w) and the summed weights (1, 1, h, w); divide one by
    the other (or use ``fill_holes``) for the splatted values. Where several pixels collide
    the one with the larger ``metric`` dominates, which is how the nearer surface wins
    without a depth map.
    """
    _, c, h, w = values.shape
    device, dtype = values.device, values.dtype
    pos = _base_grid(h, w, device, dtype) + flow.to(dtype)
    x, y = pos[0, 0].reshape(-1), pos[0, 1].reshape(-1)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    # No shift by the max: two splats to one target must share a scale to be summed. The
    # clamp only guards exp() against overflow.
    weight = torch.exp(metric.reshape(-1).to(dtype).clamp(max=50.0))
    payload = torch.cat([values.reshape(c, -1) * weight, weight[None]])
    x0i, y0i = x0.long(), y0.long()
    acc = torch.zeros(c + 1, h * w + 1, device=device, dtype=dtype)
    for dx, dy, bil in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0i + dx, y0i + dy
        # Off-image targets go to a spare slot past the end instead of being masked out, so
        # every corner is one fixed-size sum. bincount is the fastest scatter-add on the CPU
        # (1.7x scatter_add_ at 640x272).
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        index = torch.where(inside, yi * w + xi, h * w)
        if device.type != "cpu":
            # On a GPU bincount waits for the device (it sizes its output from the data);
            # one atomic index_add_ per corner does not.
            acc.index_add_(1, index, payload * bil)
            continue
        for channel in range(c + 1):
            acc[channel] += torch.bincount(
                index, weights=payload[channel] * bil, minlength=h * w + 1
            ).to(dtype)
    acc = acc[:, :-1].reshape(1, c + 1, h, w)
    return acc[:, :c], acc[:, c:]


def fill_holes(total: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise splatted sums, filling empty pixels from coarser levels (push-pull)."""
    levels: list[tuple[torch.Tensor, torch.Tensor]] = []
    # Cap the weight at 1 so dense regions do not swamp their sparse neighbours when pooled.
    value = total / weight.clamp_min(eps)
    confidence = weight.clamp(0.0, 1.0)
    while True:
        levels.append((value, confidence))
        h, w = value.shape[-2:]
        if min(h, w) <= 2 or bool((confidence > eps).all()):
            break
        pooled_sum = F.avg_pool2d(value * confidence, 2, ceil_mode=True)
        pooled_conf = F.avg_pool2d(confidence, 2, ceil_mode=True)
        value = pooled_sum / pooled_conf.clamp_min(eps)
        confidence = pooled_conf.clamp(0.0, 1.0)
    filled, _ = levels[-1]
    for value, confidence in reversed(levels[:-1]):
        coarse = F.interpolate(filled, size=value.shape[-2:], mode="bilinear", align_corners=False)
        filled = confidence * value + (1.0 - confidence) * coarse
    return filled


def choose_motion(
    frame0: torch.Tensor,
    frame1: torch.Tensor,
    candidates: list[torch.Tensor],
    t: float,
    radius: int = 2,
) -> torch.Tensor:
    """Per pixel, the candidate motion (frame 0 -> 1 terms) whose two warps to ``t`` agree best.

    Agreement is the absolute difference of ``frame0`` warped back along ``-t * motion`` and
    ``frame1`` warped along ``(1 - t) * motion``, averaged over a (2 * radius + 1)² window so a
    choice is made per patch, not per noisy pixel. Ties go to the earlier candidate.
    """
    errors = []
    for motion in candidates:
        diff = (backwarp(frame0, motion * -t) - backwarp(frame1, motion * (1.0 - t))).abs()
        errors.append(diff.mean(1, keepdim=True))
    window = 2 * radius + 1
    error = F.avg_pool2d(torch.cat(errors, 1), window, 1, radius, count_include_pad=False)
    # A running minimum: argmin over a short channel axis is a slow path on CPU.
    best_error, best = error[:, :1], candidates[0]
    for i in range(1, len(candidates)):
        better = error[:, i : i + 1] < best_error
        best_error = torch.where(better, error[:, i : i + 1], best_error)
        best = torch.where(better, candidates[i], best)
    return best


def median_flow(flow: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Per-channel ``size`` x ``size`` median of a (1, C, h, w) field, edges replicated.

    Removes isolated wrong vectors (where ``choose_motion`` flips between candidates patch by
    patch) without blurring motion boundaries, as a mean would.
    """
    _, c, h, w = flow.shape
    if flow.device.type == "cpu" and flow.dtype == torch.float32 and size in (3, 5):
        # OpenCV's float median takes sizes 3 and 5 only; 5-10x faster than sorting patches.
        planes = flow[0].contiguous().numpy()
        out = np.stack([cv2.medianBlur(planes[i], size) for i in range(c)])
        return torch.from_numpy(out).unsqueeze(0)
    r = size // 2
    padded = F.pad(flow, (r, r, r, r), mode="replicate")
    patches = F.unfold(padded, size).view(1, c, size * size, h * w)
    return patches.median(2).values.view(1, c, h, w)
