"""Tiling: spans cover the frame, blending is seamless, a real net tiled ≈ untiled."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from tests.models_fixture import real_models_dir
from worker.stages.tiling import run_tiled, spans
from worker.stages.upscale import get_upscaler


def local_fn(x: torch.Tensor) -> torch.Tensor:
    """A ×2 function that only looks 1 pixel around each pixel (3×3 blur, then nearest)."""
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return F.interpolate(blurred, scale_factor=2, mode="nearest")


def test_spans_cover_the_axis_once_with_context() -> None:
    parts = spans(100, 32, 8)
    cores = [(a, b) for a, b, _, _ in parts]
    assert cores[0][0] == 0 and cores[-1][1] == 100
    assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(cores))
    for a, b, w0, w1 in parts:
        assert w0 == max(0, a - 8) and w1 == min(100, b + 8)


def test_tiles_blend_to_the_untiled_result_exactly_for_a_local_function() -> None:
    x = torch.rand(2, 3, 70, 53, generator=torch.Generator().manual_seed(0))
    whole = local_fn(x)
    tiled = run_tiled(local_fn, x, scale=2, tile=16, overlap=8)
    assert tiled.shape == whole.shape
    # Overlap 8 leaves a zero-weight margin of 2 ≥ the blur's reach of 1: exact.
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_blend_weights_hide_a_per_tile_offset() -> None:
    # A function whose output carries a per-tile constant: the worst seam there is.
    calls = []

    def biased(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return local_fn(x) + 0.02 * (len(calls) % 2)

    x = torch.full((1, 1, 64, 64), 0.5)
    out = run_tiled(biased, x, scale=2, tile=16, overlap=8)
    # Cross-fading spreads each step over ≥ 2·(8-2)·2 = 24 output pixels: no jump
    # between neighbouring pixels exceeds the step divided by that ramp.
    jumps = torch.maximum(out.diff(dim=-1).abs().amax(), out.diff(dim=-2).abs().amax())
    assert float(jumps) <= 0.02 / 24 + 1e-6
    assert len(calls) == 16


def test_real_network_tiled_matches_untiled() -> None:
    models = real_models_dir()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 96), indexing="ij")
    image = torch.stack([0.5 + 0.3 * torch.sin(6 * xx + 3 * yy), xx, (yy > 0.4).float() * 0.6])
    frames = image[None].clamp(0, 1)
    cpu = torch.device("cpu")
    whole = get_upscaler("waifu2x-photo", cpu, models_dir=models, precision="fp32", tile=4096)
    tiled = get_upscaler(
        "waifu2x-photo", cpu, models_dir=models, precision="fp32", tile=32, overlap=16
    )
    a, b = whole(frames, (144, 192)), tiled(frames, (144, 192))
    assert float((a - b).abs().max()) < 2e-3
    assert float((a - b).abs().mean()) < 1e-4


def test_tiles_share_frame_wide_squeeze_excitation_statistics() -> None:
    # Real-CUGAN rescales channels by their mean over the whole input: per-tile means
    # make tiles disagree; sharing the frame's means must bring them much closer.
    models = real_models_dir()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    image = torch.stack([0.5 + 0.3 * torch.sin(9 * xx + 4 * yy), xx, (yy > 0.4).float() * 0.6])
    frames = image[None].clamp(0, 1)
    cpu = torch.device("cpu")
    whole = get_upscaler("realcugan", cpu, models_dir=models, precision="fp32", tile=4096)
    whole_out = whole(frames, (192, 192))
    errors = []
    for sync in (False, True):
        up = get_upscaler(
            "realcugan",
            cpu,
            models_dir=models,
            precision="fp32",
            tile=48,
            overlap=32,
            sync_pooling=sync,
        )
        errors.append(float((up(frames, (192, 192)) - whole_out).abs().mean()))
    assert errors[1] < 0.75 * errors[0]
    assert errors[1] < 1.5 / 255
