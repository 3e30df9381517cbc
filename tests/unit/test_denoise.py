"""Denoise stage: the noise estimate, FFDNet's gain, auto's pass-through, grey, grain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.clips import pattern
from tests.models_fixture import real_models_dir
from worker.models.ffdnet_arch import FFDNet
from worker.models.loader import load_denoiser
from worker.stages.denoise import (
    AUTO_THRESHOLD,
    add_grain,
    denoise,
    denoise_temporal,
    estimate_chroma_ratio,
    estimate_noise,
    ffdnet_level,
    sigma_for,
)

CPU = torch.device("cpu")
LUMA = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def net() -> FFDNet:
    return load_denoiser(real_models_dir(), CPU)


def scene(frames: int = 3, h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """(T, 3, h, w) real-ish 8-bit frames panning 1 px a frame: shading, hard-edged shapes
    and fine 1/f texture seen through a lens (blurred), rendered at 2× and area-reduced."""
    g = torch.Generator().manual_seed(seed)
    hh, ww = 2 * h, 2 * (w + frames)
    ys, xs = torch.linspace(0, 1, hh).view(-1, 1), torch.linspace(0, 1, ww).view(1, -1)
    phases = torch.rand(3, generator=g) * 6
    img = torch.stack([0.45 + 0.25 * torch.sin(3 * xs + 2 * ys + p) for p in phases])
    for _ in range(14):
        cy, cx, r = torch.rand(3, generator=g).tolist()
        colour = torch.rand(3, 1, 1, generator=g) * 0.8 + 0.1
        if r < 0.5:
            mask = ((ys - cy) ** 2 + ((xs - cx) * ww / hh) ** 2) < (0.05 + 0.2 * r) ** 2
        else:
            mask = ((ys - cy).abs() < 0.12 * r) & ((xs - cx).abs() < 0.1)
        img = torch.where(mask, colour, img)
    fy, fx = torch.fft.fftfreq(hh).view(-1, 1), torch.fft.rfftfreq(ww).view(1, -1)
    f2 = fy**2 + fx**2
    lens = torch.exp(-f2 * 2 * math.pi**2)  # a Gaussian of 1 px at the 2× size
    spectrum = torch.fft.rfft2(torch.randn(hh, ww, generator=g)) / (f2 + 1e-4) ** 0.75 * lens
    texture = torch.fft.irfft2(spectrum, s=(hh, ww))
    img = F.avg_pool2d((img + 0.03 * texture / texture.std())[None], 2)[0]
    clip = torch.stack([img[:, :, t : t + w] for t in range(frames)])
    return (clip.clamp(0, 1) * 255).round() / 255


def grey(frames: torch.Tensor) -> torch.Tensor:
    """The frames' luma in all three channels, 8-bit."""
    luma = (frames * LUMA).sum(1, keepdim=True)
    return ((luma * 255).round() / 255).expand(-1, 3, -1, -1).contiguous()


def noisy(
    clean: torch.Tensor, sigma: float, seed: int = 1, per_channel: bool = False
) -> torch.Tensor:
    """``clean`` plus Gaussian noise of ``sigma`` codes (in luma only unless per channel), 8-bit."""
    g = torch.Generator().manual_seed(seed)
    shape = clean.shape if per_channel else (clean.shape[0], 1, *clean.shape[2:])
    noise = torch.randn(shape, generator=g) * (sigma / 255)
    return ((clean + noise).clamp(0, 1) * 255).round() / 255


def luma_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    ya, yb = (a * LUMA).sum(1) * 255, (b * LUMA).sum(1) * 255
    return float(10 * torch.log10(255**2 / ((ya.round() - yb.round()) ** 2).mean()))


def test_estimate_is_near_zero_on_clean_frames() -> None:
    synthetic = torch.from_numpy(np.stack([pattern(i, i / 24, 64, 48) for i in range(4)]))
    assert estimate_noise(synthetic.permute(0, 3, 1, 2) / 255) < 0.1
    assert estimate_noise(scene()) < 1.0
    assert estimate_noise(grey(scene())) < 1.0
    assert estimate_noise(torch.full((2, 3, 32, 32), 0.5)) == 0.0


@pytest.mark.parametrize("sigma", [3, 6, 10, 20])
def test_estimate_tracks_added_noise_within_ten_percent(sigma: float) -> None:
    clean = scene()
    for frames in (noisy(clean, sigma), noisy(grey(clean), sigma)):
        assert estimate_noise(frames) == pytest.approx(sigma, rel=0.1)
    # Noise independent in R, G and B shows in the luma at 0.75 σ.
    rgb = noisy(clean, sigma, per_channel=True)
    assert estimate_noise(rgb) == pytest.approx(0.75 * sigma, rel=0.1)


def test_chroma_ratio_tells_luma_grain_from_colour_noise() -> None:
    clean = scene()
    assert estimate_chroma_ratio(noisy(clean, 8)) < 0.15
    assert estimate_chroma_ratio(noisy(clean, 8, per_channel=True)) == pytest.approx(1.33, rel=0.1)
    assert estimate_chroma_ratio(noisy(grey(clean), 8)) == 0.0
    assert ffdnet_level(6.0) == pytest.approx(6 * math.sqrt(3))
    # Independent RGB noise: the net's level is the per-channel σ, 1/0.75 of the luma's.
    assert ffdnet_level(6.0, 1.334) == pytest.approx(8.0, rel=0.01)


@pytest.mark.parametrize("per_channel", [False, True])
def test_denoise_raises_psnr_by_a_clear_margin(net: FFDNet, per_channel: bool) -> None:
    clean = scene(frames=2)
    frames = noisy(clean, 10, per_channel=per_channel)
    sigma = estimate_noise(frames)
    out = denoise(frames, sigma, net)
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    before, after = luma_psnr(frames, clean), luma_psnr(out, clean)
    assert after > before + 5.0, (before, after)


def test_grey_stays_exactly_grey_and_a_tint_is_kept(net: FFDNet) -> None:
    clean = grey(scene(frames=1))
    frames = noisy(clean, 8)
    out = denoise(frames, 8.0, net)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert luma_psnr(out, clean) > luma_psnr(frames, clean) + 5.0
    # A sepia-ish tint (within the grey tolerance) keeps its channel offsets.
    tint = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1) / 255
    tinted = (frames * 0.9 + 0.05 + tint).clamp(0, 1)
    shifted = denoise(tinted, 8.0, net)
    torch.testing.assert_close(shifted - shifted[:, 1:2], tinted - tinted[:, 1:2])


def test_sigma_zero_and_clean_auto_pass_through_unchanged(net: FFDNet) -> None:
    frames = scene(frames=2)
    assert denoise(frames, 0.0, net) is frames
    sigma = sigma_for("auto", estimate_noise(frames))
    assert sigma == 0.0
    assert denoise(frames, sigma, net) is frames
    # Noisy input: auto denoises at the estimate.
    assert sigma_for("auto", estimate_noise(noisy(frames, 6))) == pytest.approx(6, rel=0.1)


def test_strengths_map_to_multiples_with_floors() -> None:
    assert sigma_for("auto", AUTO_THRESHOLD - 0.01) == 0.0
    assert sigma_for("auto", 7.0) == 7.0
    assert sigma_for(0, 7.0) == 0.0
    assert [sigma_for(s, 10.0) for s in (1, 2, 3)] == [7.0, 10.0, 15.0]
    assert [sigma_for(s, 0.3) for s in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert sigma_for("3", 10.0) == 15.0
    with pytest.raises(ValueError, match="strength"):
        sigma_for(4, 10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strength"):
        sigma_for("strong", 10.0)


def test_tiles_and_single_frames_give_the_same_pixels(net: FFDNet) -> None:
    # 61×75: odd sizes, and tiles of 32 px cut it into 2×3 windows.
    frames = noisy(scene(frames=2, h=61, w=75), 12, per_channel=True)
    whole = denoise(frames, 12.0, net, chroma_ratio=1.3, tile=4096)
    tiled = denoise(frames[1], 12.0, net, chroma_ratio=1.3, tile=32)
    assert tiled.shape == (3, 61, 75)
    assert float((tiled - whole[1]).abs().max()) < 1e-5


def test_temporal_beats_frame_by_frame_and_chunks_exactly(net: FFDNet) -> None:
    clean = grey(scene(frames=5, h=48, w=64))
    frames = noisy(clean, 10)
    along = denoise_temporal(frames, 10.0, net)
    alone = denoise(frames[1:4], 10.0, net)
    assert luma_psnr(along[1:4], clean[1:4]) > luma_psnr(alone, clean[1:4]) + 0.5
    assert torch.equal(along[:, 0], along[:, 2])
    # A chunk outputting frame 3 from frames 1–4 (2 frames of context; the film ends at 4).
    part = denoise_temporal(frames[1:], 10.0, net, keep=range(2, 3))
    assert torch.equal(part, along[3:4])
    assert denoise_temporal(frames, 0.0, net, keep=range(1, 3)).data_ptr() == frames[1].data_ptr()
    with pytest.raises(ValueError, match="keep"):
        denoise_temporal(frames, 10.0, net, keep=range(3, 7))


def test_temporal_does_not_ghost_what_only_the_neighbours_show(net: FFDNet) -> None:
    clean = grey(scene(frames=5, h=48, w=64, seed=3))
    # A white card in every frame but the middle one (a flash frame, or a cut and back).
    clean[[0, 1, 3, 4], :, 12:32, 20:44] = 1.0
    frames = noisy(clean, 6)
    alone = denoise(frames[2], 6.0, net)
    along = denoise_temporal(frames, 6.0, net, keep=range(2, 3))[0]
    card = (slice(None), slice(12, 32), slice(20, 44))
    assert float((along[card] - alone[card]).abs().mean() * 255) < 1.5
    assert luma_psnr(along[None], clean[2:3]) > luma_psnr(alone[None], clean[2:3]) - 0.2


def test_grain_is_deterministic_per_frame_and_identity_at_zero() -> None:
    frames = grey(scene(frames=4))
    assert add_grain(frames, 0.0, seed=7) is frames
    grained = add_grain(frames, 6.0, seed=7)
    assert torch.equal(grained, add_grain(frames, 6.0, seed=7))
    assert not torch.equal(grained, add_grain(frames, 6.0, seed=8))
    # A chunk starting at frame 2 gets exactly the grain of frames 2 and 3.
    assert torch.equal(add_grain(frames[2:], 6.0, seed=7, first=2), grained[2:])
    assert torch.equal(add_grain(frames[2], 6.0, seed=7, first=2), grained[2])
    # Monochrome: grey stays grey; frames differ from each other.
    assert torch.equal(grained[:, 0], grained[:, 1]) and torch.equal(grained[:, 1], grained[:, 2])
    assert not torch.equal(grained[0] - frames[0], grained[1] - frames[1])


def test_grain_is_soft_strongest_in_midtones_and_sized_by_amount() -> None:
    mid = torch.full((2, 3, 128, 128), 0.5)
    grain = (add_grain(mid, 8.0, seed=1) - mid) * 255
    assert float(grain.std()) == pytest.approx(8.0, rel=0.05)
    # Soft: neighbouring pixels correlate (white noise would not).
    a, b = grain[..., :, :-1].flatten(), grain[..., :, 1:].flatten()
    assert float(torch.corrcoef(torch.stack((a, b)))[0, 1]) > 0.3
    dark = torch.full((1, 3, 128, 128), 0.04)
    assert float((add_grain(dark, 8.0, seed=1) - dark).std() * 255) < 0.5 * 8.0
    black = torch.zeros(1, 3, 16, 16)
    assert torch.equal(add_grain(black, 8.0, seed=1), black)
