"""Gate weave is the whole picture moving as one; things moving in a still shot are not."""

from __future__ import annotations

import numpy as np
import torch

from worker.stages import weave


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random texture in [0.2, 0.8] (a correlation has something to hold on to)."""
    noise = rng.random((h // 4 + 2, w // 4 + 2))
    big = np.kron(noise, np.ones((4, 4)))[:h, :w]
    return 0.2 + 0.6 * big


def object_jittering(size: tuple[int, int], frames: int = 16) -> list[torch.Tensor]:
    """A still, textured shot (H, W) with a textured patch half its size jumping up to
    4 px at random every frame: the patch's steps are uncorrelated, as weave's are."""
    h, w = size
    rng = np.random.default_rng(5)
    background, patch = textured(rng, h, w), textured(rng, h // 2, w // 2)
    out, x, y = [], w // 4, h // 4
    for _ in range(frames):
        x = int(np.clip(x + rng.integers(-4, 5), 0, w - patch.shape[1]))
        y = int(np.clip(y + rng.integers(-4, 5), 0, h - patch.shape[0]))
        frame = background.copy()
        frame[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
        out.append(torch.from_numpy(frame).float().expand(1, 3, h, w).clone())
    return out


def gate_woven(size: tuple[int, int], frames: int = 16) -> list[torch.Tensor]:
    """A still, textured shot with every frame moved by up to 2 px at random."""
    h, w = size
    rng = np.random.default_rng(6)
    still = torch.from_numpy(textured(rng, h, w)).float().expand(1, 3, h, w).contiguous()
    moves = rng.integers(-2, 3, (frames, 2))
    return [weave.shift(still, float(dx), float(dy)) for dx, dy in moves]


def test_something_moving_in_a_still_shot_is_no_weave() -> None:
    for size in ((36, 64), (72, 128), (144, 256)):
        jitter, _ = weave.weave_signature(object_jittering(size))
        assert jitter == 0.0, size


def test_gate_weave_is_measured_at_small_sizes_too() -> None:
    for size in ((36, 64), (72, 128), (144, 256)):
        jitter, pattern = weave.weave_signature(gate_woven(size))
        assert jitter > 1.0 and pattern < -0.15, (size, jitter, pattern)
