"""The motion interpolator on synthetic clips with known motion: quality, times, sizes, cuts."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.stages.interpolate import MotionInterpolator, get_interpolator

H, W = 96, 128
SQUARE = 32


def texture(seed: int, h: int, w: int) -> np.ndarray:
    """Smooth random colour texture (sum of upsampled noise octaves) in [0, 1]."""
    rng = np.random.default_rng(seed)
    image = np.zeros((3, h, w), np.float32)
    for cells, gain in ((4, 0.5), (12, 0.3), (32, 0.2)):
        noise = torch.from_numpy(rng.random((1, 3, cells, cells * w // h), dtype=np.float32))
        image += gain * F.interpolate(noise, size=(h, w), mode="bicubic")[0].numpy()
    return np.clip(image, 0.0, 1.0)


BACKGROUND = texture(1, H + 40, W + 40)
FOREGROUND = texture(2, SQUARE, SQUARE)


def scene(t: float, square_speed: int = 8, pan: int = 4) -> torch.Tensor:
    """Frame at time ``t``: a panning background and a square crossing it faster."""
    bx = 20 + round(pan * t)
    frame = BACKGROUND[:, 20:-20, bx : bx + W].copy()
    x = 24 + round(square_speed * t)
    frame[:, 32 : 32 + SQUARE, x : x + SQUARE] = FOREGROUND
    return torch.from_numpy(frame).unsqueeze(0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two frames in [0, 1]."""
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


@pytest.fixture(scope="module")
def motion() -> MotionInterpolator:
    """The interpolator on the CPU with default options."""
    return MotionInterpolator(torch.device("cpu"))


def test_midpoint_beats_blend_by_a_wide_margin(motion: MotionInterpolator) -> None:
    f0, f1, truth = scene(0.0), scene(1.0), scene(0.5)
    (ours,) = motion(f0, f1, f0, f1, [0.5])
    blend = torch.lerp(f0, f1, 0.5)
    assert ours.shape == truth.shape
    assert psnr(ours, truth) > psnr(blend, truth) + 6.0
    assert psnr(ours, truth) > 30.0


def test_what_a_pan_brings_in_comes_from_the_frame_that_has_it(
    motion: MotionInterpolator,
) -> None:
    """At the leading edge of a pan, frame 0 has no picture: the strip is frame 1's."""
    pan = 20  # the widest the background allows
    f0, f1, truth = scene(0.0, pan=pan), scene(1.0, pan=pan), scene(0.5, pan=pan)
    (ours,) = motion(f0, f1, f0, f1, [0.5])
    entering = (..., slice(W - pan // 2, W))
    rest = (..., slice(0, W - pan // 2))
    # Frame 1 alone rebuilds the strip (31 dB); blending in frame 0's clamped edge, as
    # temporal weights alone would, drops it to 27.5 dB, below the rest of the frame (28).
    assert psnr(ours[entering], truth[entering]) > 30.0
    assert psnr(ours[entering], truth[entering]) > psnr(ours[rest], truth[rest]) + 2.0


def test_a_frame_shared_by_two_pairs_is_prepared_once_and_the_same_as_afresh() -> None:
    """The second pair reuses its first frame's flow input, with the same result."""
    frames = [scene(t) for t in (0.0, 1.0, 2.0)]
    # Narrower than the frames, so a flow input is a new (downsized) tensor each time it is made.
    running = MotionInterpolator(torch.device("cpu"), max_flow_width=64)
    first = running.prepare(frames[0], frames[1])
    reused = running.prepare(frames[1], frames[2])
    fresh = MotionInterpolator(torch.device("cpu"), max_flow_width=64).prepare(frames[1], frames[2])
    assert reused.src0.shape[-1] == 64
    assert reused.src0 is first.src1
    assert fresh.src0 is not first.src1
    assert torch.equal(reused.src0, fresh.src0)
    assert torch.equal(reused.f01, fresh.f01) and torch.equal(reused.f10, fresh.f10)


def accelerating(t: float) -> torch.Tensor:
    """Frame at time ``t`` of a whole picture speeding up: x(t) = 2 t^2 + 6 t pixels."""
    x = 40 + 2.0 * t * t + 6.0 * t
    shifted = torch.from_numpy(BACKGROUND).unsqueeze(0)
    # Sub-pixel shift of the texture (it is smooth, so bicubic resampling is exact enough).
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(theta, [1, 3, H + 40, W + 40], align_corners=True)
    grid[..., 0] += 2.0 * x / (W + 39)
    moved = F.grid_sample(shifted, grid, mode="bicubic", align_corners=True)
    return moved[:, :, 20 : 20 + H, 20 : 20 + W].clamp(0, 1)


def test_neighbouring_pairs_follow_a_curved_path(motion: MotionInterpolator) -> None:
    """With the pairs either side, the in-between frame lies on the curve, not the chord."""
    frames = [accelerating(t) for t in (-1.0, 0.0, 1.0, 2.0)]
    before, pair, after = (motion.prepare(a, b) for a, b in pairwise(frames))
    f0, f1, truth = frames[1], frames[2], accelerating(0.5)
    (chord,) = motion(f0, f1, f0, f1, [0.5], pair=pair)
    (curve,) = motion(f0, f1, f0, f1, [0.5], pair=pair, before=before, after=after)
    # The chord is off by a quarter of the acceleration (0.5 px here): visible in PSNR.
    assert psnr(curve, truth) > psnr(chord, truth) + 2.0
    # Across a cut the neighbour is ignored, as at a film's ends.
    (alone,) = motion(f0, f1, f0, f1, [0.5], pair=pair, before=motion.prepare(f0 * 0, f0))
    assert torch.equal(alone, chord)


def test_arbitrary_times_from_one_pair(motion: MotionInterpolator) -> None:
    f0, f1 = scene(0.0), scene(1.0)
    times = [0.25, 0.4, 0.75]
    frames = motion(f0, f1, f0, f1, times)
    assert len(frames) == len(times)
    for t, frame in zip(times, frames, strict=True):
        truth = scene(t)
        assert psnr(frame, truth) > psnr(torch.lerp(f0, f1, t), truth) + 5.0


def test_output_at_upscaled_resolution(motion: MotionInterpolator) -> None:
    def up(frame: torch.Tensor) -> torch.Tensor:
        return F.interpolate(frame, scale_factor=2, mode="bilinear", align_corners=False)

    f0, f1 = scene(0.0), scene(1.0)
    (ours,) = motion(f0, f1, up(f0), up(f1), [0.5])
    truth = up(scene(0.5))
    assert ours.shape == (1, 3, 2 * H, 2 * W)
    assert psnr(ours, truth) > psnr(torch.lerp(up(f0), up(f1), 0.5), truth) + 6.0


def test_no_morph_across_a_cut() -> None:
    f0 = scene(0.0)
    f1 = torch.from_numpy(texture(7, H, W)).unsqueeze(0).flip(1) * 0.6
    hold = MotionInterpolator(torch.device("cpu"), on_cut="hold")
    for frame in hold(f0, f1, f0, f1, [0.2, 0.5, 0.9]):
        assert torch.equal(frame, f0)
    blend = MotionInterpolator(torch.device("cpu"), on_cut="blend")
    (mid,) = blend(f0, f1, f0, f1, [0.5])
    assert torch.allclose(mid, torch.lerp(f0, f1, 0.5))


def test_registry_names_and_options() -> None:
    cpu = torch.device("cpu")
    assert get_interpolator("motion", cpu).name == "motion"
    assert isinstance(get_interpolator("dain", cpu, on_cut="blend"), MotionInterpolator)
    with pytest.raises(ValueError, match="on_cut"):
        get_interpolator("motion", cpu, on_cut="morph")
    f0, f1 = scene(0.0), scene(1.0)
    assert get_interpolator("motion", cpu)(f0, f1, f0, f1, []) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    cuda = torch.device("cuda")
    f0, f1, truth = scene(0.0), scene(1.0), scene(0.5)
    (ours,) = MotionInterpolator(cuda)(f0, f1, f0.to(cuda), f1.to(cuda), [0.5])
    assert ours.device.type == "cuda"
    assert psnr(ours.cpu(), truth) > 30.0


def test_half_precision_output_keeps_its_dtype() -> None:
    f0, f1, truth = scene(0.0), scene(1.0), scene(0.5)
    half = MotionInterpolator(torch.device("cpu"), torch.bfloat16)
    (ours,) = half(f0, f1, f0.bfloat16(), f1.bfloat16(), [0.5])
    assert ours.dtype == torch.bfloat16
    assert psnr(ours.float(), truth) > psnr(torch.lerp(f0, f1, 0.5), truth) + 6.0
