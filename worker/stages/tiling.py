"""Run a scale-×s image function tile by tile, blending overlaps so no seam shows.

Each tile is processed with ``overlap`` pixels of real neighbouring context on every inner
side; in the band two tiles share, their outputs are cross-faded with linear weights that
sum to one, and the outermost quarter of each context (most touched by the tile's own
border padding) gets no weight at all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ImageFn = Callable[[torch.Tensor], torch.Tensor]


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, window_start, window_end) along one axis."""
    if tile <= 0:
        raise ValueError("tile must be positive")
    result = []
    for start in range(0, length, tile):
        end = min(start + tile, length)
        result.append((start, end, max(0, start - overlap), min(length, end + overlap)))
    return result


def _ramp(window: tuple[int, int], length: int, overlap: int, scale: int) -> torch.Tensor:
    """Per-output-pixel weight along one axis of a window."""
    w0, w1 = window
    size = (w1 - w0) * scale
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) / scale  # input units in window
    weight = torch.ones(size)
    if overlap <= 0:
        return weight
    margin = overlap / 4
    band = 2 * overlap - 2 * margin
    if w0 > 0:
        weight = torch.minimum(weight, ((pos - margin) / band).clamp(0, 1))
    if w1 < length:
        weight = torch.minimum(weight, (((w1 - w0) - pos - margin) / band).clamp(0, 1))
    return weight


def is_tiled(height: int, width: int, tile: int, align: int = 1) -> bool:
    """Whether :func:`run_tiled` would split a ``height`` × ``width`` frame."""
    tile = -(-tile // align) * align
    return tile < height or tile < width


def run_tiled(
    fn: ImageFn, x: torch.Tensor, scale: int, tile: int, overlap: int, align: int = 1
) -> torch.Tensor:
    """``fn`` applied to ``x`` (N, C, H, W) in tiles; returns (N, C', H·scale, W·scale).

    ``tile`` and ``overlap`` are rounded up to multiples of ``align`` so that every window
    starts on the grid the network's strided layers expect.
    """
    n, _, height, width = x.shape
    if not is_tiled(height, width, tile, align):
        return fn(x)
    tile = -(-tile // align) * align
    overlap = -(-overlap // align) * align
    out: torch.Tensor | None = None
    total = torch.zeros(height * scale, width * scale, device=x.device)
    for _, _, y0, y1 in spans(height, tile, overlap):
        wy = _ramp((y0, y1), height, overlap, scale).to(x.device)
        for _, _, x0, x1 in spans(width, tile, overlap):
            wx = _ramp((x0, x1), width, overlap, scale).to(x.device)
            piece = fn(x[:, :, y0:y1, x0:x1]).float()
            if out is None:
                out = torch.zeros(n, piece.shape[1], height * scale, width * scale, device=x.device)
            weight = wy[:, None] * wx[None, :]
            region = (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
            out[:, :, region[0], region[1]] += piece * weight
            total[region] += weight
    assert out is not None
    return out / total.clamp_min(1e-8)
