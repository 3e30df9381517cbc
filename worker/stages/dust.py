"""Dust and scratches: a defect in one frame, absent from both motion-compensated neighbours,
replaced from them.

Each frame is compared with its previous and next frames warped onto it by optical flow
(worker.stages.flow, as the interpolator uses). A frame where no pixel stands out from
everything near it in both neighbours has no defect and costs no flow. Elsewhere a pixel is
a candidate where the frame is brighter (or darker) than both warped neighbours by more
than the grain explains and the two neighbours agree with each other. A speck drags the
flow around it off course, so near what stands out (and wherever forward and backward flow
do not cancel: an occlusion) the flow is taken from the trusted flow around; where too
little is trusted, nothing is judged. Each candidate blob must then differ from the picture
just around it, lie where the flow follows the picture well (fast, blurred or turning
things leave candidates among mismatches), and not be found again in the unwarped
neighbours near where the flow puts it (a small object that moved faster than the flow is
found there, and kept; scenery that merely looks alike, which this frame shows too, does
not count). What is left is replaced by the average of the warped neighbours. A frame next
to a cut, and the frame's edge strip (a weaving gate fills it), are not judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from worker.stages.flow import FLOW_PRESETS, bidirectional_flow, flow_frame, resize_flow
from worker.stages.splat import backwarp, within_frame
from worker.stages.temporal import luma, shot_change, thumb, windows

# Flow is estimated at most this wide (as the interpolator does: DIS gains little above).
FLOW_WIDTH = 640
# Forward and backward flow must cancel within this many pixels: else occlusion.
CONSISTENT_PX = 1.0
# A candidate must differ from both neighbours by this many grey levels at least, and the
# neighbours agree with each other within AGREE, each raised with the grain (in σ of the
# difference of two grainy frames).
MIN_CONTRAST, CONTRAST_SIGMAS = 24.0, 5.0
MIN_AGREE, AGREE_SIGMAS = 10.0, 3.0
# A blob of more than this share of the frame is not dust (a flash, a failed flow); a frame
# with more candidate pixels than MAX_SHARE in all is left as it is.
MAX_BLOB_SHARE = 0.01
MAX_SHARE = 0.03
# ... unless it is a scratch: a line at most this wide, of any length.
SCRATCH_WIDTH = 4
# A blob found in both neighbours with at most this share of its "absent" energy, or in
# one with at most CLEARLY_FOUND, is picture.
FOUND_RATIO, CLEARLY_FOUND = 0.15, 0.08
# ... unless this frame looks like the blob there too, within this share of that energy.
SCENERY = 0.5
# A blob must differ from the RING px around it by APART of the contrast threshold, and
# the flow must follow the picture in the TRACKED px around it.
RING, APART = 2, 0.5
TRACKED = 6
# How far from the flow's guess a blob is looked for (its own pixels only: the picture
# around a fast object moved otherwise).
MIN_SEARCH = 12
# Untrusted flow vectors are filled from trusted ones within ~FILL_SIGMA px, where at least
# MIN_SUPPORT of the pixels around (Gaussian-weighted) are trusted.
FILL_SIGMA = 6.0
MIN_SUPPORT = 0.15
# Pixels this close to the frame's edge are not judged.
EDGE_PX = 3
# A pixel is only looked at when it stands out from everything within NEAR_PX in both
# neighbours: slower motion cannot make one.
NEAR_PX = 3
# How far around a pixel that stands out the flow is not trusted (half a DIS patch).
SUSPECT_PX = 4


@dataclass(frozen=True)
class DustSettings:
    """How grainy the frames are (σ in 8-bit levels): thresholds rise with it."""

    noise: float = 0.0

    @property
    def contrast(self) -> float:
        return max(MIN_CONTRAST, CONTRAST_SIGMAS * self.noise * math.sqrt(2)) / 255

    @property
    def agree(self) -> float:
        return max(MIN_AGREE, AGREE_SIGMAS * self.noise * math.sqrt(2)) / 255


@dataclass(frozen=True, eq=False)
class Linked:
    """A frame, and whether a cut parts it from the previous one."""

    frame: torch.Tensor
    cut: bool


class Flows(NamedTuple):
    """The flows between a frame and its neighbours (1, 2, H, W): to and from each."""

    to_prev: torch.Tensor
    from_prev: torch.Tensor
    to_next: torch.Tensor
    from_next: torch.Tensor


def pair_flow(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow a→b and b→a (1, 2, H, W) at the frames' size."""
    fa, fb = flow_frame(a.float(), FLOW_WIDTH), flow_frame(b.float(), FLOW_WIDTH)
    ab, ba = bidirectional_flow(fa, fb, FLOW_PRESETS["medium"])
    size = (a.shape[-2], a.shape[-1])
    return resize_flow(ab, size), resize_flow(ba, size)


def linked(frames: Iterable[torch.Tensor]) -> Iterator[Linked]:
    """Each frame, marked where a cut (or a change of size) parts it from the previous."""
    before: tuple[torch.Tensor, np.ndarray] | None = None
    for frame in frames:
        small = thumb(frame)
        cut = before is None or before[0].shape != frame.shape or shot_change(before[1], small)
        yield Linked(frame, cut)
        before = frame, small


def _extreme(y: torch.Tensor, radius: int, largest: bool) -> torch.Tensor:
    """The largest (or smallest) value within ``radius`` px of each pixel of (1, 1, H, W)."""
    size = 2 * radius + 1
    if y.device.type == "cpu":
        plane = y[0, 0].to(torch.float32).contiguous().numpy()
        kernel = np.ones((size, size), np.uint8)
        spread = cv2.dilate(plane, kernel) if largest else cv2.erode(plane, kernel)
        return torch.from_numpy(spread)[None, None]
    sign = 1.0 if largest else -1.0
    return sign * F.max_pool2d(sign * y, size, stride=1, padding=radius)


class Near(NamedTuple):
    """A frame's luma (1, 1, H, W) and the largest and smallest luma within NEAR_PX of each
    pixel: what ``nothing_stands_out`` compares, measured once per frame."""

    y: torch.Tensor
    high: torch.Tensor
    low: torch.Tensor


def near(frame: torch.Tensor) -> Near:
    """The ``Near`` measures of a (1, C, H, W) frame."""
    y = luma(frame.float())
    return Near(y, _extreme(y, NEAR_PX, True), _extreme(y, NEAR_PX, False))


def nothing_stands_out(prev: Near, cur: Near, nxt: Near, settings: DustSettings) -> bool:
    """Whether no pixel of ``cur`` is brighter (darker) than everything within NEAR_PX of
    it in both neighbours, by the contrast threshold: then there is no defect to look for,
    and no flow to estimate (motion up to NEAR_PX a frame cannot make such a pixel)."""
    y, c = cur.y, settings.contrast
    brighter = (y > prev.high + c) & (y > nxt.high + c)
    darker = (y < prev.low - c) & (y < nxt.low - c)
    return not bool((brighter | darker).any())


def _gaussian(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of (1, C, H, W), edges repeated (OpenCV on the CPU: a grouped
    convolution there is ten times slower)."""
    radius = math.ceil(3 * sigma)
    if image.device.type == "cpu":
        planes = image[0].to(torch.float32).contiguous().numpy()
        size = (2 * radius + 1, 2 * radius + 1)
        blurred = [
            cv2.GaussianBlur(p, size, sigma, borderType=cv2.BORDER_REPLICATE) for p in planes
        ]
        return torch.from_numpy(np.stack(blurred))[None]
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    out = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def trusted_flow(
    there: torch.Tensor, back: torch.Tensor, suspect: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``there`` with its vectors near ``suspect`` pixels, and those ``back`` does not undo
    (within CONSISTENT_PX), filled from the trusted ones around them; and where enough of
    those are (a bool map).

    A speck pulls the flow in and around it off course (a patch-based flow's whole patch),
    consistently or not; the picture's motion under it is the motion around it. A real
    occlusion is a wide region of failures, where too little support is left."""
    loop = there + backwarp(back, there)
    consistent = (loop.norm(dim=1, keepdim=True) < CONSISTENT_PX) & (within_frame(there) > 0)
    ok = (consistent & ~suspect).float()
    support = _gaussian(ok, FILL_SIGMA)
    filled = _gaussian(there * ok, FILL_SIGMA) / support.clamp_min(1e-3)
    return torch.where(ok > 0, there, filled), support > MIN_SUPPORT


def _stands_out(
    frame: torch.Tensor, prev: torch.Tensor, nxt: torch.Tensor, settings: DustSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where ``frame`` is brighter (or darker) than both warped neighbours by the contrast
    threshold, and the neighbours' luma."""
    y, yp, yn = luma(frame), luma(prev), luma(nxt)
    dp, dn = y - yp, y - yn
    return (dp * dn > 0) & (torch.minimum(dp.abs(), dn.abs()) > settings.contrast), yp, yn


def candidates(
    prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor, flows: Flows, settings: DustSettings
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Candidate defect pixels (1, 1, H, W) of ``cur``, with the (trusted) flows to the
    neighbours and the neighbours warped onto it by them.

    A first look with the flows as estimated finds what stands out; the flows there and
    SUSPECT_PX around are then taken from the picture around, and the look repeated with
    the neighbours warped by those, which must also agree with each other there."""
    first = backwarp(prev, flows.to_prev), backwarp(nxt, flows.to_next)
    suspect, _, _ = _stands_out(cur, *first, settings)
    suspect = _extreme(suspect.float(), SUSPECT_PX, True) > 0
    to_prev, prev_ok = trusted_flow(flows.to_prev, flows.from_prev, suspect)
    to_next, next_ok = trusted_flow(flows.to_next, flows.from_next, suspect)
    warped_prev, warped_next = backwarp(prev, to_prev), backwarp(nxt, to_next)
    out, yp, yn = _stands_out(cur, warped_prev, warped_next, settings)
    found = {"to_prev": to_prev, "to_next": to_next, "prev": warped_prev, "next": warped_next}
    mask = out & ((yp - yn).abs() < settings.agree) & prev_ok & next_ok
    # The edge strip is not judged (a weaving gate fills it with repeated edge pixels); a
    # defect judged inside reaches into it (``repaired_frame``).
    inside = torch.zeros_like(mask)
    inside[..., EDGE_PX:-EDGE_PX, EDGE_PX:-EDGE_PX] = True
    found["edges"] = mask & ~inside
    return mask & inside, found


def _plane(image: torch.Tensor) -> np.ndarray:
    return luma(image.float())[0, 0].to("cpu", torch.float32).numpy()


def matches_near(
    patch: np.ndarray, weight: np.ndarray, image: np.ndarray, x: int, y: int, search: int
) -> np.ndarray:
    """The weighted mean squared difference of ``patch`` placed with its corner at each
    offset up to ``search`` px from (x, y) in ``image``: a (2s + 1, 2s + 1) map (edges
    repeated beyond the frame)."""
    ph, pw = patch.shape
    h, w = image.shape
    x, y = min(max(x, -pw), w - 1), min(max(y, -ph), h - 1)
    pad = search + max(ph, pw)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    top, left = y + pad - search, x + pad - search
    region = padded[top : top + ph + 2 * search, left : left + pw + 2 * search]
    return cv2.matchTemplate(region, patch, cv2.TM_SQDIFF, mask=weight) / float(weight.sum())


def is_picture(
    box: tuple[int, int, int, int],
    weight: np.ndarray,
    planes: dict[str, np.ndarray],
    moves: dict[str, np.ndarray],
) -> bool:
    """Whether the blob in ``box`` (x, y, w, h; ``weight`` marks its pixels) is found in
    the unwarped neighbours near where the flow moves it: in both (an object faster than the
    flow), or clearly in one (one that is hidden in the other).

    A place where this frame looks like the blob too is scenery that resembles it (a dark
    speck on a dark coat), not the blob moved there: matches there do not count."""
    x, y, w, h = box
    patch = np.ascontiguousarray(planes["cur"][y : y + h, x : x + w])
    search = max(MIN_SEARCH, w, h)
    here = matches_near(patch, weight, planes["cur"], x, y, search)
    ratios = []
    for side in ("prev", "next"):
        gap = (patch - planes[f"warped_{side}"][y : y + h, x : x + w]) ** 2
        absent = max(float((gap * weight).sum() / weight.sum()), 1e-12)
        dx, dy = np.median(moves[side][:, y : y + h, x : x + w].reshape(2, -1), axis=1)
        there = matches_near(patch, weight, planes[side], x + round(dx), y + round(dy), search)
        moved = there[here >= SCENERY * absent]
        ratios.append(float(moved.min()) / absent if moved.size else math.inf)
    return max(ratios) < FOUND_RATIO or min(ratios) < CLEARLY_FOUND


def blobs(mask: torch.Tensor) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected blobs of a (1, 1, H, W) mask: their count, label image and stats (x, y, w,
    h, area per blob, row 0 being the background)."""
    plane = mask[0, 0].to("cpu", torch.uint8).numpy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
    return count, labels, stats


def _band(
    labels: np.ndarray, label: int, box: tuple[int, int, int, int], width: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The region around blob ``label`` (``width`` px more each way), the blob in it, and
    the band of ``width`` px around the blob (bool maps)."""
    x, y, w, h = box
    rows = slice(max(y - width, 0), min(y + h + width, labels.shape[0]))
    cols = slice(max(x - width, 0), min(x + w + width, labels.shape[1]))
    blob = (labels[rows, cols] == label).astype(np.uint8)
    near = cv2.dilate(blob, np.ones((2 * width + 1, 2 * width + 1), np.uint8)) > blob
    return (rows, cols), blob > 0, near


def stands_apart(
    labels: np.ndarray, label: int, box: tuple[int, int, int, int], cur: np.ndarray, level: float
) -> bool:
    """Whether blob ``label`` differs from the picture just around it (a RING px band) by
    ``level`` on average: a speck or a scratch does, the edge of something moving (half
    its band is that thing) seldom does."""
    region, blob, near = _band(labels, label, box, RING)
    patch = cur[region]
    return bool(near.any()) and abs(float(patch[blob].mean() - patch[near].mean())) >= level


def well_tracked(
    labels: np.ndarray,
    label: int,
    box: tuple[int, int, int, int],
    planes: dict[str, np.ndarray],
    level: float,
) -> bool:
    """Whether both warped neighbours match the frame around blob ``label`` (a TRACKED px
    band; median difference under ``level``): dust lies on picture the flow follows, while
    a failing flow (fast, blurred, turning things) leaves candidates among mismatches."""
    region, _, near = _band(labels, label, box, TRACKED)
    cur = planes["cur"][region]
    return bool(near.any()) and all(
        float(np.median(np.abs(cur - planes[f"warped_{side}"][region])[near])) < level
        for side in ("prev", "next")
    )


def _dust_blobs(
    cur: torch.Tensor,
    prev: torch.Tensor,
    nxt: torch.Tensor,
    mask: torch.Tensor,
    found: dict,
    settings: DustSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Which candidate blobs are defects (by label), and the label image."""
    count, labels, stats = blobs(mask)
    h, w = labels.shape
    planes = {
        "cur": _plane(cur),
        "prev": _plane(prev),
        "next": _plane(nxt),
        "warped_prev": _plane(found["prev"]),
        "warped_next": _plane(found["next"]),
    }
    moves = {
        side: found[f"to_{side}"][0].to("cpu", torch.float32).numpy() for side in ("prev", "next")
    }
    dust = np.zeros(count, dtype=bool)
    for i in range(1, count):
        bx, by, bw, bh, area = (int(v) for v in stats[i])
        scratch = min(bw, bh) <= SCRATCH_WIDTH
        if area > MAX_BLOB_SHARE * h * w and not scratch:
            continue
        box = (bx, by, bw, bh)
        if not stands_apart(labels, i, box, planes["cur"], settings.contrast * APART):
            continue
        if not well_tracked(labels, i, box, planes, settings.agree / 2):
            continue
        weight = (labels[by : by + bh, bx : bx + bw] == i).astype(np.float32)
        dust[i] = not is_picture(box, weight, planes, moves)
    return dust, labels


def repaired_frame(
    prev: torch.Tensor,
    cur: torch.Tensor,
    nxt: torch.Tensor,
    flows: Flows,
    settings: DustSettings,
    mend: bool = True,
) -> tuple[torch.Tensor, int]:
    """``cur`` with its one-frame defects replaced (left as it is without ``mend``), and
    how many were found."""
    mask, found = candidates(prev, cur, nxt, flows, settings)
    if not bool(mask.any()) or float(mask.float().mean()) > MAX_SHARE:
        return cur, 0
    dust, labels = _dust_blobs(cur, prev, nxt, mask, found, settings)
    if not dust.any() or not mend:
        return cur, int(dust.sum())
    h, w = labels.shape
    replace = torch.from_numpy(dust[labels]).to(mask.device).view(1, 1, h, w).float()
    # A scratch judged inside goes on into the edge strip where it stands out there too.
    reach = _extreme(replace, EDGE_PX, True) > 0
    replace = torch.maximum(replace, (reach & found["edges"]).float())
    # One pixel more all round: a speck's soft edge differs less than the threshold.
    replace = _extreme(replace, 1, True) > 0
    fill = ((found["prev"] + found["next"]) / 2).to(cur.dtype)
    return torch.where(replace, fill, cur), int(dust.sum())


def despeckled(
    frames: Iterable[torch.Tensor], settings: DustSettings = DustSettings(), mend: bool = True
) -> Iterator[tuple[torch.Tensor, int]]:
    """The frames (1, C, H, W) of a stretch of film with one-frame defects replaced, each
    with the number of defects found in it (``mend=False``: counted only, the frames left as
    they are). Flows are estimated only around frames where something stands out, once per
    pair of frames; each frame's ``Near`` measures once."""
    pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # i: flows (i-1 → i, i → i-1)
    nears: dict[int, Near] = {}

    def pair(i: int, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if i not in pairs:
            pairs[i] = pair_flow(a, b)
        return pairs[i]

    def measured(i: int, frame: torch.Tensor) -> Near:
        if i not in nears:
            nears[i] = near(frame)
        return nears[i]

    for index, (window, at) in enumerate(windows(linked(frames), 1)):
        cur = window[at].frame
        for old in [k for k in pairs if k < index]:
            del pairs[old]
        for old in [k for k in nears if k < index - 1]:
            del nears[old]
        if at == 0 or at + 1 >= len(window) or window[at].cut or window[at + 1].cut:
            yield cur, 0  # the film's first or last frame, or next to a cut: one neighbour
            continue
        prev, nxt = window[at - 1].frame, window[at + 1].frame
        around = measured(index - 1, prev), measured(index, cur), measured(index + 1, nxt)
        if nothing_stands_out(*around, settings):
            yield cur, 0
            continue
        from_prev, to_prev = pair(index, prev, cur)
        to_next, from_next = pair(index + 1, cur, nxt)
        flows = Flows(to_prev, from_prev, to_next, from_next)
        yield repaired_frame(prev, cur, nxt, flows, settings, mend)


def despeckle(frames: torch.Tensor, settings: DustSettings = DustSettings()) -> torch.Tensor:
    """Remove one-frame defects from (T, C, H, W) consecutive frames."""
    return torch.cat([f for f, _ in despeckled(frames.split(1), settings)])
