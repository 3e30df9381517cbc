"""Interpolate stage: the registry of frame interpolators, the baselines and ``motion``.

An interpolator sees a pair of neighbouring source frames twice: at source resolution
(``src0``, ``src1``, where motion is cheap to estimate) and after upscaling (``out0``,
``out1``, the pixels to warp). It returns one output-resolution frame per time in (0, 1).
``motion`` (alias ``dain``) estimates flow once per pair and warps once per time, so a
24 -> 60 fps conversion costs one flow per source pair however many times fall in it.
It asks ``should_stop`` before each time (a 4K time took 0.6 s on two CPU cores), and
keeps, per frame it made, how sure it was (``take_confidence``).
The pipeline hands ``between`` each pair in order, with the frames either side; an
interpolator that estimates per pair keeps those estimates itself, while they are needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from worker.cancel import ShouldStop, check, never
from worker.stages.cadence import is_scene_cut
from worker.stages.flow import FLOW_PRESETS, bidirectional_flow, flow_frame, resize_flow
from worker.stages.splat import (
    backwarp,
    choose_motion,
    fill_holes,
    median_flow,
    softsplat,
    within_frame,
)


# eq=False: frames are told apart by identity (a tensor has no single truth value).
@dataclass(frozen=True, eq=False)
class TimedFrame:
    """A source frame on its way through the stages: its place among the chunk's frames
    (0, 1, 2, …), its time in the film (seconds), its picture at source resolution and
    upscaled."""

    index: int
    time: Fraction
    src: torch.Tensor
    out: torch.Tensor


def evenly_spaced(a: TimedFrame, b: TimedFrame, c: TimedFrame) -> bool:
    """Whether three frames are evenly spaced in time (within 10%), as motion over four
    frames assumes; a variable frame rate or a dropped frame is not."""
    return abs((c.time - b.time) - (b.time - a.time)) <= (b.time - a.time) / 10


class Interpolator(Protocol):
    """Makes in-between frames of one pair of neighbouring frames.

    Interpolators that ``uses_neighbours`` model motion over four frames: ``between`` is
    given the frames either side of the pair too (None at a film's ends), and the caller
    decodes one frame more either side of a chunk for them. ``prepare`` and ``__call__``
    are the parts, for a caller that keeps the per-pair estimates itself.
    """

    name: str
    uses_neighbours: bool

    def between(
        self,
        left: TimedFrame,
        right: TimedFrame,
        times: Sequence[float],
        before: TimedFrame | None = None,
        after: TimedFrame | None = None,
    ) -> list[torch.Tensor]:
        """Frames (1, 3, H, W) at each ``t`` in ``times`` from ``left`` (t=0) to ``right``;
        pairs come in the film's order."""
        ...

    def prepare(self, src0: torch.Tensor, src1: torch.Tensor) -> Any:
        """What the interpolator estimates once per pair of source frames."""
        ...

    def take_confidence(self) -> list[float | None]:
        """For each frame made since the last call, in order: the share of the picture (0-1)
        where the two source frames, warped to its time, agree; ``None`` where a cut was
        held. Interpolators that warp nothing (the baselines) give an empty list."""
        ...

    def __call__(
        self,
        src0: torch.Tensor,
        src1: torch.Tensor,
        out0: torch.Tensor,
        out1: torch.Tensor,
        times: Sequence[float],
        *,
        pair: Any = None,
        before: Any = None,
        after: Any = None,
    ) -> list[torch.Tensor]:
        """Frames (1, 3, H, W) at each ``t`` in ``times`` between ``out0`` (t=0) and ``out1``."""
        ...


class _Classical:
    """Baselines look at the pair alone, and warp nothing to be unsure of."""

    uses_neighbours = False
    __call__: Callable[..., list[torch.Tensor]]

    def prepare(self, src0: torch.Tensor, src1: torch.Tensor) -> None:
        return None

    def take_confidence(self) -> list[float | None]:
        return []

    def between(
        self,
        left: TimedFrame,
        right: TimedFrame,
        times: Sequence[float],
        before: TimedFrame | None = None,
        after: TimedFrame | None = None,
    ) -> list[torch.Tensor]:
        """Frames at ``times`` from ``left`` to ``right``, from the pair alone."""
        return self(left.src, right.src, left.out, right.out, times)


class BlendInterpolator(_Classical):
    """Linear cross-fade: the classical baseline (ghosts on motion, never morphs)."""

    name = "blend"

    def __call__(self, src0, src1, out0, out1, times, **context):
        return [torch.lerp(out0, out1, float(t)) for t in times]


class RepeatInterpolator(_Classical):
    """Nearest frame in time: what a plain frame-rate conversion does."""

    name = "repeat"

    def __call__(self, src0, src1, out0, out1, times, **context):
        return [out0.clone() if t < 0.5 else out1.clone() for t in times]


CutMode = Literal["hold", "blend"]


@dataclass(frozen=True)
class PairFlow:
    """What one pair of source frames yields once, at the flow's size."""

    cut: bool
    src0: torch.Tensor
    src1: torch.Tensor
    f01: torch.Tensor
    f10: torch.Tensor
    # Per pixel, how badly its flow explains the other frame (mean absolute difference):
    # high where the pixel is covered in the other frame, or the flow is wrong.
    err0: torch.Tensor
    err1: torch.Tensor


def clamp_length(vectors: torch.Tensor, limit: float) -> torch.Tensor:
    """Shorten (1, 2, h, w) vectors longer than ``limit`` to that length."""
    # hypot, not norm(dim=1): a norm over a 2-long axis is a slow path on the CPU (12x).
    length = torch.hypot(vectors[:, :1], vectors[:, 1:]).clamp_min(1e-6)
    return vectors * (length.clamp(max=limit) / length)


class MotionInterpolator:
    """Flow-projected warping in the manner of DAIN, with photometric ordering for depth.

    Per pair: bidirectional DIS flow at source resolution (once), and a consistency score
    per pixel (how well its flow explains the other frame). Per time ``t``: both flows are
    softmax-splatted to ``t``, so where surfaces collide the consistent (nearer, unoccluded)
    one wins, as depth decides in DAIN; holes are filled from coarser levels; per patch the
    projected or a raw flow is kept, whichever aligns the pair best at ``t``. With the pairs
    either side, motion is quadratic (QVI's idea: things speed up and slow down, and an
    in-between frame is not half-way along a curved path). The motion field is scaled to
    the output size and both output frames are backward-warped along it (bicubic) and
    fused by temporal distance.
    """

    name = "motion"
    uses_neighbours = True

    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        on_cut: CutMode = "hold",
        flow: str = "medium",
        max_flow_width: int = 480,
        cut_threshold: float = 0.62,
        sharpness: float = 40.0,
        max_curve: float = 1.0,
        should_stop: ShouldStop = never,
    ) -> None:
        if on_cut not in ("hold", "blend"):
            raise ValueError(f"on_cut must be 'hold' or 'blend', not {on_cut!r}")
        self.device = device
        self.dtype = dtype
        self.on_cut = on_cut
        self.flow_settings = FLOW_PRESETS[flow]
        self.max_flow_width = max_flow_width
        self.cut_threshold = cut_threshold
        self.sharpness = sharpness
        self.max_curve = max_curve
        self.should_stop = should_stop
        self._last_input: tuple[torch.Tensor, torch.Tensor] | None = None
        # The pairs ``between`` prepared, by their first frame's index (with that frame, so
        # another film's frame of the same index is not taken for it).
        self._pairs: dict[int, tuple[torch.Tensor, PairFlow]] = {}
        self._confidence: list[float | None] = []

    def take_confidence(self) -> list[float | None]:
        taken, self._confidence = self._confidence, []
        return taken

    def between(
        self,
        left: TimedFrame,
        right: TimedFrame,
        times: Sequence[float],
        before: TimedFrame | None = None,
        after: TimedFrame | None = None,
    ) -> list[torch.Tensor]:
        """Frames at ``times`` from ``left`` to ``right``; the pairs either side bend the
        motion where the four frames are evenly spaced in time."""
        # Pairs come in order: one that starts before ``before`` is not asked for again.
        for index in [i for i in self._pairs if i < left.index - 1]:
            del self._pairs[index]
        context = {"pair": self._pair(left, right)}
        if before is not None and evenly_spaced(before, left, right):
            context["before"] = self._pair(before, left)
        if after is not None and evenly_spaced(left, right, after):
            context["after"] = self._pair(right, after)
        return self(left.src, right.src, left.out, right.out, times, **context)

    def _pair(self, first: TimedFrame, second: TimedFrame) -> PairFlow:
        """``prepare`` once per pair: each pair serves three times, as the pair and as the
        neighbour of the pairs either side."""
        kept = self._pairs.get(first.index)
        if kept is None or kept[0] is not first.src:
            kept = (first.src, self.prepare(first.src, second.src))
            self._pairs[first.index] = kept
        return kept[1]

    def prepare(self, src0: torch.Tensor, src1: torch.Tensor) -> PairFlow:
        """Flow both ways between two source frames, each pixel's error, and whether a cut."""
        src0, src1 = self._flow_input(src0), self._flow_input(src1)
        cut = is_scene_cut(src0, src1, self.cut_threshold)
        f01, f10 = bidirectional_flow(src0, src1, self.flow_settings)
        err0 = (src0 - backwarp(src1, f01)).abs().mean(1, keepdim=True)
        err1 = (src1 - backwarp(src0, f10)).abs().mean(1, keepdim=True)
        return PairFlow(cut, src0, src1, f01, f10, err0, err1)

    def _flow_input(self, src: torch.Tensor) -> torch.Tensor:
        """A source frame as flow sees it: float32, contiguous, at most max_flow_width wide.

        Pairs are prepared in order, so each frame comes twice (as the second frame of one
        pair and the first of the next): the last result is kept for that second time.
        Frames are never changed in place, so identity is a safe key.
        """
        if self._last_input is not None and self._last_input[0] is src:
            return self._last_input[1]
        # Contiguous: decoded frames often arrive channels-last (a permuted view), which
        # sends resizing and sampling down slow paths (2-4x here).
        small = src.to(self.device, torch.float32).contiguous()
        small = flow_frame(small, self.max_flow_width)
        self._last_input = (src, small)
        return small

    def __call__(
        self,
        src0: torch.Tensor,
        src1: torch.Tensor,
        out0: torch.Tensor,
        out1: torch.Tensor,
        times: Sequence[float],
        *,
        pair: PairFlow | None = None,
        before: PairFlow | None = None,
        after: PairFlow | None = None,
    ) -> list[torch.Tensor]:
        """Frames (1, 3, H, W) at each ``t`` in ``times`` between ``out0`` and ``out1``."""
        if not times:
            return []
        out0, out1 = (o.to(self.device, self.dtype).contiguous() for o in (out0, out1))
        pair = pair or self.prepare(src0, src1)
        if pair.cut:
            return self._across_cut(out0, out1, times)
        # Acceleration of each frame's pixels, in flow pixels per (pair interval)², from the
        # flow to the frame before frame 0 and the one after frame 1. None where unknown.
        accel0 = None if _unusable(before, pair) else pair.f01 + before.f10  # type: ignore[union-attr]
        accel1 = None if _unusable(after, pair) else pair.f10 + after.f01  # type: ignore[union-attr]
        # Ordering score: a pixel whose flow lands on a matching colour is visible in both
        # frames; one that lands on something else is being covered, so it should lose.
        metric0, metric1 = -self.sharpness * pair.err0, -self.sharpness * pair.err1
        grey0, grey1 = pair.src0.mean(1, keepdim=True), pair.src1.mean(1, keepdim=True)
        size = (out0.shape[-2], out0.shape[-1])
        frames = []
        for t in (float(t) for t in times):
            check(self.should_stop)
            # Motion (in frame 0 -> 1 terms) of whatever is at each pixel at time t; both
            # directions vote in one softmax so the more consistent surface wins.
            sum0, weight0 = softsplat(pair.f01, pair.f01 * t, metric0)
            sum1, weight1 = softsplat(-pair.f10, pair.f10 * (1.0 - t), metric1)
            motion = fill_holes(sum0 + sum1, weight0 + weight1)
            # Where the projection is off (thin or fast parts, flow smoothed over an edge),
            # the raw flows sampled in place often align the two frames better at t.
            motion = choose_motion(grey0, grey1, [motion, pair.f01, -pair.f10], t)
            # The choice flips patch by patch and leaves isolated wrong vectors: a 5x5 median
            # (twice) removes them and keeps motion edges (a Gaussian instead gained nothing).
            motion = median_flow(median_flow(motion))
            to0, to1 = motion * -t, motion * (1.0 - t)
            # On a curved path x(t) = x + v t + a t^2 / 2 the point at t lies off the chord by
            # t (1 - t) a / 2. Capped at a pixel of the flow's size: a bigger bend is more
            # often a flow error than a real swerve (uncapped lost 0.1 dB on fast footage).
            bend = t * (1.0 - t) / 2.0
            if accel0 is not None:
                to0 = to0 + clamp_length(backwarp(accel0, to0) * bend, self.max_curve)
            if accel1 is not None:
                to1 = to1 + clamp_length(backwarp(accel1, to1) * bend, self.max_curve)
            # Once more after the bend: each pixel's acceleration is noisy too. (Both medians:
            # +0.04 dB on the benchmark.)
            to0, to1 = median_flow(to0), median_flow(to1)
            self._confidence.append(agreement(grey0, grey1, to0, to1))
            # Weighted by temporal distance, except where a warp reads from beyond the
            # frame's edge (what a pan brings in): it has no picture there, the other frame
            # has. Weighting by splat coverage (an occlusion mask) measured 0.3-0.4 dB worse
            # on real footage: the ordering above already decides which surface is sampled,
            # and coverage is noisy where DIS flow is smooth.
            weight0, weight1 = (1.0 - t) * within_frame(to0), t * within_frame(to1)
            total = weight0 + weight1
            # Where both read from outside (a corner leaving both frames), temporal distance.
            share1 = torch.where(total > 1e-6, weight1 / total.clamp_min(1e-6), t)
            share1 = F.interpolate(share1, size=size, mode="bilinear", align_corners=False)
            # Bicubic: a warp shifts by fractions of a pixel, and bilinear sampling blurs
            # texture there (measured +0.33 dB over bilinear on the benchmark footage).
            warped0 = backwarp(out0, resize_flow(to0, size), "bicubic")
            warped1 = backwarp(out1, resize_flow(to1, size), "bicubic")
            frames.append(torch.lerp(warped0, warped1, share1.to(self.dtype)))
        return frames

    def _across_cut(
        self, out0: torch.Tensor, out1: torch.Tensor, times: Sequence[float]
    ) -> list[torch.Tensor]:
        self._confidence += [None] * len(times)
        if self.on_cut == "blend":
            return [torch.lerp(out0, out1, float(t)) for t in times]
        # Frame 0 is on screen until time 1, where the new shot starts: holding it puts the
        # cut exactly where the source has it, in step with the sound.
        return [out0.clone() for _ in times]


# Two warped frames agree at a pixel when their greys, averaged over 3x3 (so grain and
# compression noise average out), differ by less than this: 10 codes of 255.
AGREE = 10 / 255


def agreement(
    grey0: torch.Tensor, grey1: torch.Tensor, to0: torch.Tensor, to1: torch.Tensor
) -> float:
    """The share of the picture seen by both frames where ``grey0`` and ``grey1``, warped
    along ``to0`` and ``to1`` to one moment, show the same thing: about 1 where the motion
    is found, less where something is uncovered, occluded or moves in a way flow missed."""
    seen = (within_frame(to0) > 0.5) & (within_frame(to1) > 0.5)
    difference = (backwarp(grey0, to0) - backwarp(grey1, to1)).abs()
    agree = (F.avg_pool2d(difference, 3, stride=1, padding=1) < AGREE) & seen
    return float(agree.sum() / seen.sum().clamp_min(1))


def _unusable(neighbour: PairFlow | None, pair: PairFlow) -> bool:
    """A neighbouring pair is no help across a cut, or at another flow size (a new shot)."""
    return neighbour is None or neighbour.cut or neighbour.f01.shape != pair.f01.shape


def _motion(device: torch.device, dtype: torch.dtype, **options: object) -> Interpolator:
    return MotionInterpolator(device, dtype, **options)  # type: ignore[arg-type]


# name -> factory(device, dtype, **options); the baselines ignore the options (``should_stop``
# too: they are fast).
InterpolatorFactory = Callable[..., Interpolator]
INTERPOLATORS: dict[str, InterpolatorFactory] = {
    "blend": lambda device, dtype, **options: BlendInterpolator(),
    "repeat": lambda device, dtype, **options: RepeatInterpolator(),
    "motion": _motion,
    # DAIN's job, done without its downloaded weights: an alias users recognise.
    "dain": _motion,
}


def get_interpolator(
    name: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> Interpolator:
    """Build the interpolator called ``name``; unknown names raise ``KeyError``."""
    try:
        factory = INTERPOLATORS[name]
    except KeyError:
        raise KeyError(
            f"unknown interpolator {name!r}; choose one of {sorted(INTERPOLATORS)}"
        ) from None
    return factory(device=device, dtype=dtype, **options)
