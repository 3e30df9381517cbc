"""A film's repair, between the media files and the stages: measure a sample of the film
once and plan its repair (``plan_repair``, at plan time), read a chunk's source frames
repaired (``repaired_reader``), and put grain back on the output frames (``grained``).

What the sample showed is kept with the film (``kept_findings``, ``read_findings``; stored
by ``worker.jobs``) under a name that says what was measured and how (``findings_name``),
so a film is measured once for its preview, its re-runs and the whole film after them.

A chunk's repaired frames depend on the frames ``RepairPlan.context`` either side, so the
reader decodes that many more beyond the range it is asked for (the film's ends excepted):
wherever the chunks are cut, every frame is repaired from the same frames.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Protocol, Self, TypeVar

import cv2
import torch

from shared.config import get_settings
from shared.logs import get_logger
from shared.options import JobOptions
from worker.media.decode import SourceFrame, decode_range
from worker.media.probe import MediaInfo, scan_frames
from worker.models.loader import load_denoiser
from worker.report import brightness_of
from worker.stages.denoise import add_grain
from worker.stages.interlace import SHOWN_FIRST
from worker.stages.repair import (
    ANALYSIS_VERSION,
    SAMPLE_LENGTH,
    Findings,
    RepairPlan,
    analyse,
    decide,
    repaired,
    sample_starts,
    summary,
    wanted_parts,
)

log = get_logger(__name__)

# Reads the source frames with first <= pts <= last.
Reader = Callable[[int, int], Iterator[SourceFrame]]
# Frame gaps may vary: decode half as much again as the context needs at the mean rate.
CONTEXT_SLACK = Fraction(3, 2)
# The ``grain`` option's levels as the grain's σ in grey levels at mid-grey.
GRAIN_SIGMA = {1: 2.0, 2: 4.0, 3: 6.0}
# The modules whose code decides what ``measure`` finds (the sample, its decoding, the
# measures): kept findings made by other code are measured again (``analysis_version``).
MEASURING = (
    __name__,
    "worker.media.decode",
    "worker.media.colors",
    "worker.stages.repair",
    "worker.stages.interlace",
    "worker.stages.denoise",
    "worker.stages.weave",
    "worker.stages.deflicker",
    "worker.stages.dust",
    "worker.stages.temporal",
    "worker.stages.flow",
    "worker.stages.splat",
)


def sample_runs(
    source: str | Path, info: MediaInfo, device: torch.device
) -> Iterator[torch.Tensor]:
    """Runs of consecutive frames (T, 3, H, W) spread evenly over the film, one at a time."""
    index = scan_frames(source).pts
    for start in sample_starts(len(index)):
        last = index[min(start + SAMPLE_LENGTH, len(index)) - 1]
        frames = [f.image for f in decode_range(source, info, index[start], last, device)]
        if frames:
            yield torch.cat(frames)


def measure(
    source: str | Path, info: MediaInfo, parts: frozenset[str], device: torch.device
) -> Findings:
    """What a sample of the film shows, for the repair ``parts``."""
    with torch.inference_mode():
        runs = sample_runs(source, info, device)
        return analyse(runs, SHOWN_FIRST.get(info.field_order), parts, float(info.fps or 0))


@functools.cache
def analysis_version() -> str:
    """What measures a film: ANALYSIS_VERSION and a digest of the MEASURING modules' code
    and of the versions of torch and OpenCV, which their numbers come from."""
    digest = hashlib.sha256(f"{torch.__version__} {cv2.__version__}".encode())
    for name in MEASURING:
        digest.update(Path(inspect.getfile(importlib.import_module(name))).read_bytes())
    return f"{ANALYSIS_VERSION}-{digest.hexdigest()[:16]}"


def findings_name(parts: frozenset[str]) -> str:
    """The name a film's findings for the repair ``parts`` are kept under (beside the film:
    ``shared.storage.analysis_key``)."""
    return f"repair-{'+'.join(sorted(parts))}-{analysis_version()}.json"


def kept_findings(found: Findings, checksum: str) -> bytes:
    """Findings as kept (JSON; floats exact, so the plan made from them is the same), with
    the sha256 of the film they measure."""
    return json.dumps(
        {"input_sha256": checksum, "analysis": analysis_version(), "found": asdict(found)}
    ).encode()


def read_findings(data: bytes, checksum: str) -> Findings:
    """Kept findings of the film whose sha256 is ``checksum``; ``ValueError`` when ``data``
    is not that (unreadable, of other code or of other bytes)."""
    kept = json.loads(data)
    if not isinstance(kept, dict) or kept.get("analysis") != analysis_version():
        raise ValueError("not findings of this analysis")
    if kept.get("input_sha256") != checksum:
        raise ValueError("findings of other bytes")
    return Findings.from_dict(kept.get("found"))


def plan_repair(
    source: str | Path,
    info: MediaInfo,
    options: JobOptions,
    device: torch.device | None = None,
    known: Findings | None = None,
) -> RepairPlan:
    """What repair does to this film: measured once, on a sample, for all its chunks
    (``known``: the findings of an earlier measure of this film for the same parts, which
    the plan is then made from)."""
    parts = wanted_parts(options)
    if not parts:
        return RepairPlan()
    started = time.perf_counter()
    device = device or torch.device("cpu")
    found = known if known is not None else measure(source, info, parts, device)
    plan = decide(options, found)
    log.info(
        "repair.plan",
        chose=summary(plan),
        cached=known is not None,
        seconds=round(time.perf_counter() - started, 3),
        **plan.to_dict(),
    )
    return plan


def context_ticks(info: MediaInfo, plan: RepairPlan, time_base: Fraction) -> int:
    """Time-base ticks either side that hold the plan's context frames."""
    fps = info.fps or Fraction(1)
    return math.ceil((plan.context + 1) * CONTEXT_SLACK / fps / time_base)


def repaired_reader(
    source: str | Path,
    info: MediaInfo,
    plan: RepairPlan | None,
    device: torch.device,
    clock: dict[str, float],
    before: dict[int, float] | None = None,
) -> Reader:
    """A reader of the source's frames, repaired as ``plan`` says (plain decoding without
    one). Its own seconds go to ``clock["repair"]`` and come off ``clock["decode"]``, which
    the caller's timing of the reader counts them in. ``before`` gets each decoded frame's
    brightness (``worker.report.brightness_of``) by pts, as it was before repair."""
    if plan is None or not plan.active:
        return lambda first, last: decode_range(source, info, first, last, device)
    active, network = plan, None
    if plan.degrain:
        network = load_denoiser(get_settings().resolved_models_dir(), device)

    def read(first: int, last: int) -> Iterator[SourceFrame]:
        margin = context_ticks(info, active, info.time_base)
        decoded = decode_range(source, info, first - margin, last + margin, device)
        shown: deque[int] = deque()
        decoding = [0.0]  # of the seconds below, those spent decoding

        def images() -> Iterator[torch.Tensor]:
            while True:
                started = time.perf_counter()
                frame = next(decoded, None)
                decoding[0] += time.perf_counter() - started
                if frame is None:
                    return
                shown.append(frame.pts)
                if before is not None:
                    before[frame.pts] = brightness_of(frame.image)
                yield frame.image

        stream = repaired(images(), active, network)
        try:
            while True:
                started, decoding[0] = time.perf_counter(), 0.0
                with torch.inference_mode():
                    image = next(stream, None)
                spent = time.perf_counter() - started - decoding[0]
                clock["repair"] = clock.get("repair", 0.0) + spent
                clock["decode"] = clock.get("decode", 0.0) - spent
                if image is None or shown[0] > last:
                    return
                pts = shown.popleft()
                if pts >= first:
                    yield SourceFrame(pts, image)
        finally:
            close = getattr(decoded, "close", None)
            if close is not None:
                close()

    return read


class Shown(Protocol):
    """An output frame (a NamedTuple): its picture and its pts in the output's time base."""

    @property
    def image(self) -> torch.Tensor: ...

    @property
    def pts(self) -> int: ...

    def _replace(self, *, image: torch.Tensor = ...) -> Self: ...


F = TypeVar("F", bound=Shown)


def grained(outputs: Iterator[list[F]], amount: int, origin: int) -> Iterator[list[F]]:
    """The output frames with film grain of ``amount`` (0: none) added; each frame's grain
    is seeded by its tick in the film (``origin``: the chunk's first), so it is the same
    wherever the chunks are cut."""
    if not amount:
        yield from outputs
        return
    sigma = GRAIN_SIGMA[amount]
    for frames in outputs:
        yield [f._replace(image=add_grain(f.image, sigma, 0, first=origin + f.pts)) for f in frames]
