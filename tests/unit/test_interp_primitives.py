"""Warping primitives: backward warp, softmax splatting, hole filling, flow resizing."""

from __future__ import annotations

import torch

from worker.stages.flow import bidirectional_flow, flow_frame, resize_flow
from worker.stages.splat import backwarp, fill_holes, median_flow, softsplat, within_frame


def ramp(h: int = 8, w: int = 10) -> torch.Tensor:
    """A (1, 1, h, w) image whose value is its x coordinate."""
    return torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).clone()


def test_backwarp_samples_at_the_flow_target() -> None:
    image = ramp()
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 1.5
    warped = backwarp(image, flow)
    # Inside, each pixel reads 1.5 px to the right; the right edge clamps.
    assert torch.allclose(warped[..., :7], image[..., :7] + 1.5)
    assert torch.allclose(warped[..., -1], torch.full((1, 1, 8), 9.0))


def test_bicubic_warp_keeps_fine_texture_that_bilinear_blurs() -> None:
    """Half a pixel into a fine sine (period 4 px): bilinear averages its peaks away."""
    x = torch.arange(64, dtype=torch.float64)
    image = (0.5 + 0.4 * torch.sin(x * torch.pi / 2)).expand(1, 1, 8, 64).clone()
    truth = 0.5 + 0.4 * torch.sin((x + 0.5) * torch.pi / 2)
    flow = torch.zeros(1, 2, 8, 64, dtype=torch.float64)
    flow[:, 0] = 0.5
    inside = slice(4, 60)
    errors = {
        mode: float((backwarp(image, flow, mode)[0, 0, 4, inside] - truth[inside]).abs().max())
        for mode in ("bilinear", "bicubic")
    }
    assert errors["bicubic"] < 0.4 * errors["bilinear"]


def test_softsplat_moves_values_and_the_larger_metric_wins() -> None:
    values = torch.zeros(1, 1, 4, 4)
    values[0, 0, 1, 0] = 1.0
    values[0, 0, 1, 2] = 2.0
    flow = torch.zeros(1, 2, 4, 4)
    flow[0, 0, 1, 0] = 2.0  # pixel (1, 0) lands on (1, 2), where the other one stays
    metric = torch.zeros(1, 1, 4, 4)
    metric[0, 0, 1, 0] = -10.0  # the mover is the less consistent (occluded) surface
    total, weight = softsplat(values, flow, metric)
    result = total / weight.clamp_min(1e-12)
    assert weight[0, 0, 1, 0] == 0.0  # nothing is left where the mover was
    assert torch.isclose(result[0, 0, 1, 2], torch.tensor(2.0), atol=1e-3)
    metric[0, 0, 1, 0] = 10.0
    total, weight = softsplat(values, flow, metric)
    assert torch.isclose(total[0, 0, 1, 2] / weight[0, 0, 1, 2], torch.tensor(1.0), atol=1e-3)


def test_softsplat_drops_what_leaves_the_frame() -> None:
    values = torch.ones(1, 2, 3, 3)
    flow = torch.full((1, 2, 3, 3), 5.0)
    total, weight = softsplat(values, flow, torch.zeros(1, 1, 3, 3))
    assert total.abs().sum() == 0 and weight.sum() == 0


def test_fill_holes_keeps_known_pixels_and_fills_the_rest() -> None:
    truth = ramp(16, 16)
    weight = torch.ones(1, 1, 16, 16)
    weight[..., 4:9, 5:10] = 0.0
    filled = fill_holes(truth * weight, weight)
    known = weight.bool()
    assert torch.allclose(filled[known], truth[known])
    # Filled from neighbours on both sides: close to the ramp, never outside its range.
    assert (filled[~known] - truth[~known]).abs().max() < 3.0
    assert filled.min() >= 0.0 and filled.max() <= 15.0


def test_resize_flow_scales_vectors_with_the_grid() -> None:
    flow = torch.ones(1, 2, 10, 20)
    flow[:, 1] = 2.0
    big = resize_flow(flow, (30, 40))
    assert big.shape == (1, 2, 30, 40)
    assert torch.allclose(big[:, 0], torch.full((1, 30, 40), 2.0))
    assert torch.allclose(big[:, 1], torch.full((1, 30, 40), 6.0))


def test_bidirectional_flow_finds_a_known_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 12, 16, generator=generator)
    scene = torch.nn.functional.interpolate(coarse, size=(96, 128), mode="bicubic").clamp(0, 1)
    frame0, frame1 = scene[..., :, 10:110], scene[..., :, 13:113]  # content moves 3 px left
    f01, f10 = bidirectional_flow(frame0, frame1)
    centre = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    assert torch.allclose(f01[centre][:, 0].median(), torch.tensor(-3.0), atol=0.1)
    assert torch.allclose(f10[centre][:, 0].median(), torch.tensor(3.0), atol=0.1)
    assert f01[centre][:, 1].abs().median() < 0.1


def test_flow_frame_caps_the_width_and_keeps_the_aspect() -> None:
    big = torch.rand(1, 3, 720, 1280)
    small = flow_frame(big, 640)
    assert small.shape == (1, 3, 360, 640)
    assert flow_frame(small, 640) is small


def test_opencv_warp_on_the_cpu_matches_grid_sample() -> None:
    """float32 on the CPU goes through cv2.remap; float64 through torch's grid_sample."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 24, 40, generator=generator)
    # Large enough to send many samples past every edge, where the clamping must agree.
    flow = torch.randn(1, 2, 24, 40, generator=generator) * 6.0
    for mode in ("bilinear", "bicubic"):
        fast = backwarp(image, flow, mode)
        reference = backwarp(image.double(), flow.double(), mode)
        assert fast.dtype == torch.float32
        assert float((fast.double() - reference).abs().max()) < 1e-4, mode


def test_within_frame_falls_off_beyond_the_edge() -> None:
    flow = torch.zeros(1, 2, 4, 10)
    flow[:, 0, :, 9] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # the right column reads further out
    flow[:, 1, 0, 0] = -0.5  # one pixel reads half a pixel above the top row
    weight = within_frame(flow, ramp=2.0)
    assert weight.shape == (1, 1, 4, 10)
    assert torch.equal(weight[0, 0, :, 9], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert float(weight[0, 0, 0, 0]) == 0.75
    assert float(weight[0, 0, 1:, :9].min()) == 1.0


def test_median_flow_drops_a_stray_vector_and_keeps_a_motion_edge() -> None:
    flow = torch.zeros(1, 2, 12, 12)
    flow[:, 0, :, 6:] = 4.0  # the right half moves: an edge the median must keep
    flow[:, :, 3, 2] = torch.tensor([9.0, -7.0])  # one wrong vector on the still half
    for field in (flow, flow.double()):  # OpenCV on float32, sorting otherwise
        clean = median_flow(field)
        assert clean.dtype == field.dtype
        assert float(clean[0, :, 3, 2].abs().max()) == 0.0
        assert torch.equal(clean[0, 0, :, 6:], torch.full((12, 6), 4.0, dtype=field.dtype))
        assert float(clean[0, 0, :, :6].abs().max()) == 0.0
    generator = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 2, 20, 30, generator=generator)
    assert torch.allclose(median_flow(noisy).double(), median_flow(noisy.double()), atol=1e-6)
