"""The quality report: what the workers measured of a film while they restored it.

Each chunk measures its own frames (``ChunkReport``): the cuts that start a shot there, the
repeats it dropped and the cadence they came from, and, for every frame the interpolator
made, a confidence: the share of the picture where the two frames warped to that moment
agree (``worker.stages.interpolate``). The least confident moments keep a small picture so
a user can look at them. The join merges the chunks' reports into the job's (``merge``).
Nothing in a report is claimed: every number comes from the film.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Frames whose warped pair agrees on less of the picture than this are listed as moments
# to check. Within a shot, with motion the flow follows, 0.95-1 of the picture agrees.
LOW_CONFIDENCE = 0.85
# How many moments the report lists, and how far apart (frames of one moment, once).
LISTED = 8
APART_S = 0.5
# A frame's brightness is the median of its GRID × GRID cells' means: light that changes
# everywhere moves it, a thing passing through a few cells barely does.
GRID = 4
# A shot's flicker: each frame's brightness against the median of this many frames either
# side (a fade or a slow change of light follows its neighbours and reads about 0).
FLICKER_RADIUS = 3
# The listed moments' pictures: this wide, as JPEG.
THUMB_WIDTH = 320
THUMB_QUALITY = 85


@dataclass(order=True)
class Moment:
    """A made frame the interpolator was unsure of: when, how sure, and what it looks like."""

    confidence: float
    time: float
    jpeg: bytes = field(default=b"", compare=False, repr=False)


@dataclass
class ChunkReport:
    """What one chunk measured of its own frames (times in seconds from the film's start)."""

    cuts: list[float] = field(default_factory=list)
    repeats: list[float] = field(default_factory=list)
    cadence: str | None = None
    original_fps: float | None = None
    confidence: list[tuple[float, float]] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    # Each source frame's brightness (0-1, ``brightness_of``) as the upscaler got it, and
    # where repair ran, as it was decoded (filled by pts in ``levels_before``).
    brightness: list[tuple[float, float]] = field(default_factory=list)
    brightness_before: list[tuple[float, float]] = field(default_factory=list)
    levels_before: dict[int, float] = field(default_factory=dict, repr=False)

    def saw(self, time: Fraction, level: float, pts: int) -> None:
        """Record a source frame's brightness at ``time``, and before repair if known."""
        at = round(float(time), 6)
        self.brightness.append((at, round(level, 5)))
        if pts in self.levels_before:
            self.brightness_before.append((at, round(self.levels_before.pop(pts), 5)))

    def found_cadence(self, pattern: str, original_fps: float) -> None:
        """Record the cadence whose repeats the chunk dropped."""
        self.cadence, self.original_fps = pattern, round(original_fps, 3)

    def made(self, time: Fraction, confidence: float, image: torch.Tensor) -> None:
        """Record a made frame. The least confident keep a thumbnail: of the frames of one
        moment (``APART_S``) the least sure only, and ``LISTED`` moments at most."""
        at, sure = round(float(time), 6), round(confidence, 4)
        self.confidence.append((at, sure))
        if sure >= LOW_CONFIDENCE:
            return
        near = [m for m in self.moments if abs(m.time - at) < APART_S]
        if any(m.confidence <= sure for m in near):
            return
        kept = [m for m in self.moments if m not in near]
        if len(kept) >= LISTED and sure >= max(m.confidence for m in kept):
            return
        kept.append(Moment(sure, at, thumbnail_jpeg(image)))
        self.moments = sorted(kept)[:LISTED]

    def thumbnails(self) -> dict[str, bytes]:
        """The kept moments' pictures by name (the time in milliseconds)."""
        return {thumb_name(m.time): m.jpeg for m in self.moments}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the moments without their pictures (see ``thumbnails``)."""
        data = asdict(self)
        del data["levels_before"]
        data["moments"] = [
            {"time": m.time, "confidence": m.confidence, "thumbnail": thumb_name(m.time)}
            for m in self.moments
        ]
        return data


def thumb_name(time: float) -> str:
    """The file name of a moment's picture."""
    return f"{round(time * 1000):09d}.jpg"


def thumbnail_jpeg(image: torch.Tensor) -> bytes:
    """A float RGB frame (1, 3, H, W) or (3, H, W) in [0, 1] as a small JPEG."""
    picture = image.detach().to("cpu", torch.float32)
    picture = picture[0] if picture.dim() == 4 else picture
    rgb: np.ndarray = (picture.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    h, w = rgb.shape[:2]
    if w > THUMB_WIDTH:
        size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
        rgb = np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def merge(
    chunks: list[dict[str, Any]], model: dict[str, Any], repair: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The film's report from its chunks' (``ChunkResult.report_dict``, any order), the
    upscaler's model facts (``worker.stages.upscale.model_facts``) and what repair found in
    the film and chose (``RepairPlan.to_dict``)."""
    confidence = sorted(point for c in chunks for point in c["confidence"])
    cadences = sorted({c["cadence"] for c in chunks if c["cadence"] not in (None, "1")})
    cuts = sorted(t for c in chunks for t in c["cuts"])
    brightness = sorted(p for c in chunks for p in c["brightness"])
    before = sorted(p for c in chunks for p in c.get("brightness_before", []))
    repeats = sorted(t for c in chunks for t in c["repeats"])
    return {
        "cuts": cuts,
        "shots": shots(cuts, brightness, confidence, repeats, before),
        "cadence": {
            "patterns": cadences,
            "original_fps": sorted({c["original_fps"] for c in chunks if c["original_fps"]}),
            "repeats_dropped": repeats,
        },
        "stages": stage_figures(chunks, model),
        "confidence": [{"time": t, "confidence": c} for t, c in confidence],
        "low_confidence": least_confident(m for c in chunks for m in c["moments"]),
        "brightness": [{"time": t, "mean": v} for t, v in brightness],
        "repair": repair,
    }


def brightness_of(image: torch.Tensor) -> float:
    """A frame's (1, 3, H, W) brightness, 0-1: the median of its GRID × GRID cells' means."""
    cells = F.adaptive_avg_pool2d(image.float().mean(dim=1, keepdim=True), GRID)
    return float(cells.flatten().median())


def flicker_index(values: list[float]) -> float:
    """Flicker in 8-bit grey levels: the RMS of each frame's mean brightness (0-1) less the
    median of its neighbours' (``FLICKER_RADIUS`` either side, not the frame itself). A
    shutter's flicker, new in every frame, reads a little over its own RMS (1.1-1.25×: the
    median's own spread); a steady picture or a fade reads 0."""
    if len(values) < 3:
        return 0.0
    b = np.asarray(values, dtype=np.float64)
    # Past the ends the shot goes on as it went (a fade keeps fading).
    padded = np.pad(b, FLICKER_RADIUS, mode="reflect", reflect_type="odd")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * FLICKER_RADIUS + 1)
    neighbours = np.delete(windows, FLICKER_RADIUS, axis=1)
    return float(np.sqrt(np.mean((b - np.median(neighbours, axis=1)) ** 2)) * 255)


def _time(point: tuple[float, float]) -> float:
    return point[0]


def _between(
    points: list[Any], start: float, stop: float, key: Callable[[Any], float] | None = None
) -> list[Any]:
    """The sorted ``points`` (by ``key``: their times) from ``start`` to before ``stop``."""
    return points[
        bisect.bisect_left(points, start, key=key) : bisect.bisect_left(points, stop, key=key)
    ]


def shots(
    cuts: list[float],
    brightness: list[tuple[float, float]],
    confidence: list[tuple[float, float]],
    repeats: list[float],
    before: list[tuple[float, float]] | None = None,
) -> list[dict[str, Any]]:
    """The film shot by shot (a shot starts at 0 and at each cut): its first and last source
    frames' times, its frames, the repeats dropped in it, its flicker (``flicker_index``) as
    decoded (``before``: the brightness before repair, where repair ran) and as the upscaler
    got it, and its made frames' confidence (mean, least)."""
    if not brightness:
        return []

    starts = [brightness[0][0], *cuts]
    found = []
    for start, stop in zip(starts, [*starts[1:], math.inf], strict=True):
        frames = _between(brightness, start, stop, _time)
        if not frames:
            continue
        sure = [c for _, c in _between(confidence, start, stop, _time)]
        flicker = flicker_index([v for _, v in frames])
        decoded = [v for _, v in _between(before or [], start, stop, _time)]
        found.append(
            {
                "start": frames[0][0],
                "end": frames[-1][0],
                "frames": len(frames),
                "repeats_dropped": len(_between(repeats, start, stop)),
                "flicker_before": round(flicker_index(decoded) if decoded else flicker, 3),
                "flicker": round(flicker, 3),
                "confidence": round(sum(sure) / len(sure), 4) if sure else None,
                "least_confidence": min(sure) if sure else None,
            }
        )
    return found


def least_confident(moments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to ``LISTED`` of the least confident moments, ``APART_S`` apart, in time order."""
    listed: list[dict[str, Any]] = []
    for moment in sorted(moments, key=lambda m: m["confidence"]):
        if len(listed) < LISTED and all(abs(moment["time"] - m["time"]) >= APART_S for m in listed):
            listed.append(moment)
    return sorted(listed, key=lambda m: m["time"])


def stage_figures(chunks: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, Any]:
    """Per stage, over all chunks: seconds busy and frames per second (of the frames the
    stage handles: source frames for decode and upscale, output frames after), the
    upscaler's model and checksums; the devices and encoders the chunks ran on."""
    frames_in = sum(c["frames_in"] for c in chunks)
    frames_out = sum(c["frames_out"] for c in chunks)
    seconds: dict[str, float] = {}
    for chunk in chunks:
        for stage, spent in chunk["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + spent
    figures: dict[str, Any] = {}
    for stage, spent in seconds.items():
        count = frames_in if stage in ("decode", "upscale", "repair") else frames_out
        figures[stage] = {
            "seconds": round(spent, 3),
            "fps": round(count / spent, 2) if spent > 0 else None,
        }
    figures.setdefault("upscale", {}).update(model)
    return {
        "frames_in": frames_in,
        "frames_out": frames_out,
        "devices": sorted({c["device"] for c in chunks if c["device"]}),
        "encoders": sorted({c["encoder"] for c in chunks if c["encoder"]}),
        **figures,
    }
