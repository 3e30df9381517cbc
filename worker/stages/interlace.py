"""Interlace: find combing and the field order, and deinterlace (bwdif-like, one frame per
frame at the first field's time).

Detection looks at the picture, not the file's flags (archive transfers are flagged wrongly
both ways). Combing is rows that zig-zag against both neighbours while the rows two away
(the same field) agree: in a woven frame with motion the two fields disagree, row after row.
Luma is smoothed along rows first, which cancels grain but not combing. The field order is
the one under which the fields of consecutive frames are closest in time: with the top
field first, a frame's bottom field is half a field period from the next frame's top.

Deinterlacing keeps the first field's rows and makes the other field's at the same moment,
as FFmpeg's ``bwdif`` (mode ``send_frame``) does: from the missing field's own rows half a
field period before and after (a still picture keeps its full detail), held within the
range the kept rows above and below allow (a moving one does not comb), with bwdif's cubic
weights; in float, so nothing is rounded between the steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from worker.stages.temporal import luma, windows

# Zig-zags smaller than this (grey levels, after smoothing), or than NOISE_SIGMAS σ of the
# smoothed grain, are not counted.
COMB_LEVEL = 6.0 / 255
NOISE_SIGMAS = 4.0
# Row smoothing for detection: 8 px cancels most grain (√8 ≈ 2.8×) and keeps combing.
SMOOTH = 8
# A block is combed when zig-zags across the fields cover COMB_SHARE of it and outnumber
# those within a field COMB_RATIO times over; a frame, when MIN_COMBED of its blocks are.
BLOCK = 16
COMB_SHARE = 0.1
COMB_RATIO = 3.0
MIN_COMBED = 0.02
FIELD_ORDERS = ("tff", "bff")
# Rows either side the deinterlacer looks at.
PAD = 5
# ffprobe's field_order values (coded, then displayed): which field is shown first.
SHOWN_FIRST = {"tt": "tff", "bt": "tff", "bb": "bff", "tb": "bff"}


def _smoothed(frame: torch.Tensor) -> np.ndarray:
    """Luma (H, W) averaged along rows over SMOOTH px, as a float32 array: detection is
    bookkeeping over a few frames of a sample, done on the CPU whatever the frame's device."""
    plane = luma(frame.float())[0, 0].to("cpu", torch.float32).contiguous().numpy()
    return cv2.blur(plane, (SMOOTH, 1), borderType=cv2.BORDER_REPLICATE)


def _zigzags(y: np.ndarray, gap: int, level: float) -> np.ndarray:
    """Where a row stands out by ``level`` from both rows ``gap`` away, which agree within
    it: (H, W) of 0/1, 0 on the edge rows."""
    mid, up, down = y[gap:-gap], y[: -2 * gap], y[2 * gap :]
    found = (((mid - up) * (mid - down)) > level**2) & (np.abs(up - down) < level)
    return np.pad(found.astype(np.float32), ((gap, gap), (0, 0)))


def _blocks(flags: np.ndarray) -> np.ndarray:
    """The mean of each whole BLOCK×BLOCK block of an (H, W) map."""
    h, w = (flags.shape[0] // BLOCK) * BLOCK, (flags.shape[1] // BLOCK) * BLOCK
    return flags[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(1, 3))


def combing(frame: torch.Tensor, noise: float = 0.0) -> float:
    """How combed a (1, C, H, W) frame is: the share of its BLOCK×BLOCK blocks where rows
    zig-zag across the fields on COMB_SHARE of the pixels, COMB_RATIO times as often as
    within a field. Moving things comb, so a few blocks may be all there is. ``noise``: the
    grain's σ (grey levels), which zig-zags must clear after the smoothing."""
    if min(frame.shape[-2:]) < BLOCK:
        return 0.0
    y = _smoothed(frame)
    level = max(COMB_LEVEL, NOISE_SIGMAS * noise / math.sqrt(SMOOTH) / 255)
    across, within = (_blocks(_zigzags(y, gap, level)) for gap in (1, 2))
    return float(((across >= COMB_SHARE) & (across >= COMB_RATIO * within)).mean())


def is_combed(frame: torch.Tensor, noise: float = 0.0) -> bool:
    """Whether the frame shows combing (two fields from different moments)."""
    return combing(frame, noise) >= MIN_COMBED


def top_first_vote(before: torch.Tensor, after: torch.Tensor) -> float:
    """Positive when consecutive frames look top field first, negative when bottom first."""
    a, b = _smoothed(before), _smoothed(after)
    rows = min(a.shape[0], b.shape[0]) // 2 * 2
    top_a, bottom_a = a[0:rows:2], a[1:rows:2]
    top_b, bottom_b = b[0:rows:2], b[1:rows:2]
    # Top first: bottom_a and top_b are half a field period apart, top_a and bottom_b 1.5.
    return float(np.abs(top_a - bottom_b).mean() - np.abs(bottom_a - top_b).mean())


def deinterlace_frame(
    prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor, order: str
) -> torch.Tensor:
    """``cur`` (1, C, H, W) at its first field's moment: that field's rows kept, the other's
    made as FFmpeg's bwdif makes them (``prev``/``nxt``: the frames either side, or ``cur``
    at the film's ends)."""
    missing = 1 if order == "tff" else 0
    count = len(range(missing, cur.shape[-2], 2))
    # Reflecting about the edge rows keeps every row's parity: a field stays a field.
    p, c0, n = (F.pad(t.float(), (0, 0, PAD, PAD), mode="reflect") for t in (prev, cur, nxt))

    def rows(image: torch.Tensor, offset: int) -> torch.Tensor:
        """The rows ``offset`` away from each missing row."""
        start = PAD + missing + offset
        return image[..., start : start + 2 * count - 1 : 2, :]

    def field(offset: int) -> torch.Tensor:
        """The missing field's own rows ``offset`` away: in the previous frame (half a
        field period before) and this one (half a period after), summed."""
        return rows(p, offset) + rows(c0, offset)

    c, e = rows(c0, -1), rows(c0, 1)
    d = field(0) / 2
    diff = torch.maximum(
        (rows(p, 0) - rows(c0, 0)).abs() / 2,
        torch.maximum(
            ((rows(p, -1) - c).abs() + (rows(p, 1) - e).abs()) / 2,
            ((rows(n, -1) - c).abs() + (rows(n, 1) - e).abs()) / 2,
        ),
    )
    b, f = field(-2) / 2 - c, field(2) / 2 - e
    high = torch.maximum(torch.maximum(d - e, d - c), torch.minimum(b, f))
    low = torch.minimum(torch.minimum(d - e, d - c), torch.maximum(b, f))
    diff = torch.maximum(torch.maximum(diff, low), -high)
    outer = rows(c0, -3) + rows(c0, 3)
    # Where the kept rows differ more than the missing field does in time, high
    # frequencies come from the missing field itself (bwdif's coefficients, /8192).
    moving = (c - e).abs() > (rows(p, 0) - rows(c0, 0)).abs()
    temporal = (5570 * field(0) - 3801 * (field(-2) + field(2)) + 1016 * (field(-4) + field(4))) / 4
    with_detail = (temporal + 4309 * (c + e) - 213 * outer) / 8192
    spatial = (5077 * (c + e) - 981 * outer) / 8192
    made = torch.where(moving, with_detail, spatial)
    out = cur.clone()
    out[..., missing::2, :] = torch.minimum(torch.maximum(made, d - diff), d + diff)
    return out


def deinterlaced(frames: Iterable[torch.Tensor], order: str) -> Iterator[torch.Tensor]:
    """The frames (1, C, H, W) of a stretch of interlaced film, deinterlaced, in order."""
    for window, at in windows(frames, 1):
        cur = window[at]
        prev = window[at - 1] if at > 0 else cur
        nxt = window[at + 1] if at + 1 < len(window) else cur
        yield deinterlace_frame(prev, cur, nxt, order)


def deinterlace(frames: torch.Tensor, order: str = "tff") -> torch.Tensor:
    """Deinterlace (T, C, H, W) consecutive frames, ``order`` "tff" or "bff"."""
    return torch.cat(list(deinterlaced(frames.split(1), order)))
