"""Run the restoration pipeline: decode → upscale → interpolate → encode per chunk, then join.

``process_chunk`` and ``join_chunks`` are the entry points the Celery tasks call with local
paths; ``process_file`` does a whole film in one process (``lumiere process``). Frames
stream through the stages a small batch at a time, so memory does not grow with the film.
A chunk stops midway, raising ``worker.cancel.Cancelled``, once its ``should_stop`` turns
true: it is asked before each frame and, inside the stages, between tiles and layers.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch

from shared.errors import InvalidInput, ProcessingError, UnsupportedMedia
from shared.logs import get_logger
from shared.options import MAX_HEIGHT, MAX_WIDTH
from shared.options import Options as Options  # what the pipeline runs, one model
from worker.cancel import ShouldStop, check, never
from worker.film_repair import Reader, grained, plan_repair, repaired_reader
from worker.media.colors import LEFT, coding_for, planar_format
from worker.media.decode import SourceFrame, decode_range
from worker.media.encode import (
    VideoSpec,
    VideoWriter,
    chunk_muxer,
    container_for,
    even_size,
    pixel_format,
)
from worker.media.mux import AudioSource, VideoPart, join
from worker.media.probe import (
    ColorTags,
    MediaInfo,
    check_complete,
    is_lossy_video,
    open_input,
    probe,
    scan_frames,
)
from worker.overlap import Overlap, timed
from worker.plan import ChunkPlan, plan_chunks
from worker.preview import busy_moment, preview_plans
from worker.report import ChunkReport, brightness_of
from worker.retime import Slot, first_output_time, output_count, slots
from worker.stages.cadence import detect_cadence, is_scene_cut, thumbnail
from worker.stages.interpolate import Interpolator, TimedFrame, get_interpolator
from worker.stages.repair import RepairPlan
from worker.stages.upscale import Upscaler, get_upscaler, source_denoise
from worker.stages.video_sr import VideoUpscaler

log = get_logger(__name__)

# Frames decoded either side of a chunk to judge its edge frames' repeats and cadence: a
# cadence is accepted only over three of its periods, and 24 fps shown at 25 repeats one
# frame in 25, so a second and a half (worker.stages.cadence).
CADENCE_CONTEXT_S = Fraction(3, 2)
# Frames decoded either side for interpolators that look at neighbours: half a second
# holds the nearest frame at any film rate.
NEIGHBOUR_CONTEXT_S = Fraction(1, 2)
MAX_OUTPUT_SIDE = max(MAX_WIDTH, MAX_HEIGHT)
# Frames the decoder may run ahead of the upscaler (source-sized, a few MB each): a window's
# worth of BasicVSR, or a batch's when the batch is bigger.
DECODE_AHEAD = 16
# Source frames' worth of output frames ready for the encoder (a frame's share at 60 fps
# from 16 fps film is four pictures, 400 MB at 4K on a CPU).
OUTPUT_AHEAD = 2

# Called with the number of output frames done so far; raising cancels the work.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class Target:
    """The output picture and timeline a film's options resolve to."""

    codec: str
    width: int
    height: int
    sar: Fraction
    fps: Fraction | None
    time_base: Fraction
    rate: Fraction
    bit_depth: int
    pix_fmt: str
    color: ColorTags


@dataclass
class ChunkResult:
    """What one chunk produced, with the seconds each stage was busy (its own work, not
    waiting for the others) and ``wall``, the chunk's elapsed seconds: the stages overlap,
    so ``wall`` is less than their sum.

    ``frames_in`` counts the source frames that went through the stages: the frames either
    side that interpolation looks at included, repeats dropped before upscaling not.
    ``encoder`` is the FFmpeg encoder that wrote the chunk (``h264_nvenc``, ``libx264``…).
    ``report`` is what the chunk measured of its frames (``worker.report``).
    """

    index: int
    path: str
    frames_in: int = 0
    frames_out: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "upscale", "interpolate", "encode"), 0.0)
    )
    encoder: str = ""
    device: str = ""
    report: ChunkReport = field(default_factory=ChunkReport)

    def report_dict(self) -> dict[str, Any]:
        """What the chunk measured, with its counts, stage times, device and encoder: the
        part of the film's report this chunk contributes (``worker.report.merge``)."""
        return {
            **self.report.to_dict(),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "device": self.device,
            "encoder": self.encoder,
        }


@dataclass
class FileResult:
    """What ``process_file`` produced."""

    path: str
    chunks: list[ChunkResult]
    frames_in: int
    frames_out: int
    seconds: float
    join_seconds: float = 0.0
    # What repair did to the film (decided once, from a sample of it).
    repair: RepairPlan | None = None

    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent in each stage over all chunks, and in the final join."""
        total = dict.fromkeys(("decode", "upscale", "interpolate", "encode"), 0.0)
        for chunk in self.chunks:
            for stage, spent in chunk.seconds.items():
                total[stage] = total.get(stage, 0.0) + spent
        return {**total, "join": self.join_seconds}


def pick_device(name: str = "auto") -> torch.device:
    """The device to run stages on: CUDA when there is one (or asked for), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_target(info: MediaInfo, options: Options) -> Target:
    """Output size, aspect, timing and colour for this film and these options."""
    src_w, src_h = info.upright_size
    if options.width is not None and options.height is not None:
        width, height = options.width, options.height
    elif options.width is not None:
        width, height = options.width, round(options.width * src_h / src_w)
    elif options.height is not None:
        width, height = round(options.height * src_w / src_h), options.height
    else:
        scale = options.scale or 1.0
        width, height = round(src_w * scale), round(src_h * scale)
    codec = options.codec_for(info.bit_depth)
    pix_fmt = pixel_format(codec, info.pix_fmt, web=options.output_preset == "web")
    width, height = even_size(codec, pix_fmt, width, height)
    if max(width, height) > MAX_OUTPUT_SIDE:
        raise InvalidInput(f"output {width}x{height} is too large (at most {MAX_OUTPUT_SIDE})")
    sar = info.sar if info.rotation % 180 == 0 else 1 / info.sar
    if options.fit == "sar":
        # Keep the shape the viewer sees: a non-uniform resize changes the sample aspect.
        sar = (sar * Fraction(src_w, src_h) / Fraction(width, height)).limit_denominator(1000)
    fps = options.target_fps()
    source = coding_for(info.pix_fmt, info.color, info.height)
    rgb_source = planar_format(info.pix_fmt) is None
    color = ColorTags(
        primaries=info.color.primaries,
        transfer=info.color.transfer,
        # Tag the matrix we convert with, so players don't guess differently at the new size.
        matrix=source.matrix,
        # The source's range, so unchanged pixels keep their codes; RGB sources become
        # limited-range YUV like any video, and ProRes (whose MOV files players read as
        # limited) gets limited range too.
        range=2 if source.full_range and not rgb_source and codec != "prores" else 1,
        # PyAV cannot tag chroma siting, and players assume MPEG-2's ("left") for untagged
        # video: JPEG-sited chroma is re-sited to it.
        chroma_location=LEFT,
    )
    return Target(
        codec=codec,
        width=width,
        height=height,
        sar=sar,
        fps=fps,
        time_base=(1 / fps) if fps else info.time_base,
        rate=fps or info.fps,
        bit_depth=info.bit_depth,
        pix_fmt=pix_fmt,
        color=color,
    )


def chunk_offset(plan: ChunkPlan, fps: Fraction | None) -> Fraction:
    """Film time (seconds) of the chunk file's time zero: its first output frame."""
    return first_output_time(plan.start, fps)


def output_tick(plan: ChunkPlan, target: Target) -> int:
    """The chunk file's time zero as a tick of the film's output time base."""
    return round(chunk_offset(plan, target.fps) / target.time_base)


def context_ticks(info: MediaInfo, time_base: Fraction, seconds: Fraction) -> int:
    """Time-base ticks decoded either side of a chunk: ``seconds``, or three frames of a
    very slow film, whichever is longer."""
    if info.fps:
        seconds = max(seconds, 3 / info.fps)
    return math.ceil(seconds / time_base)


@dataclass(frozen=True)
class Retiming:
    """A cadence found in a chunk: the frames to decode (pts, inclusive), each unique one's
    time on the original clock, and what was found (for the report)."""

    first_pts: int
    last_pts: int
    true_time: dict[int, Fraction]
    pattern: str
    original_fps: float
    # Film times (seconds) of the repeats dropped in the chunk's own time.
    dropped: tuple[float, ...]


def original_times(
    source: str | Path, info: MediaInfo, plan: ChunkPlan, context: int = 0
) -> Retiming | None:
    """Where a cadence of repeats runs through the chunk: the range to decode and, per unique
    frame's pts, its time on the original clock (seconds from the film start).

    None when no frames repeat on a cycle: a freeze or a still shot is the film, not the
    transfer, and keeps its frames. Each chunk judges its own frames with a second and a
    half of context either side, so its edge frames are judged as in an unchunked run.
    ``context`` more unique frames are kept either side for interpolators that look at
    neighbours.
    """
    tb = plan.time_base
    margin = context_ticks(info, tb, CADENCE_CONTEXT_S)
    first = max(plan.start_pts - margin, plan.film_start_pts)
    last = plan.stop_pts if plan.last else plan.stop_pts + margin
    shown, thumbs = [], []
    for frame in decode_range(source, info, first, last, torch.device("cpu")):
        shown.append(frame.pts)
        thumbs.append(thumbnail(frame.image))
    gaps = [b - a for a, b in itertools.pairwise(shown)]
    # The original clock is counted in frames: a variable rate or a lost frame would put
    # everything after it off time, so such a stretch keeps its frames as they are.
    if not gaps or max(gaps) - min(gaps) > min(gaps) / 10:
        return None
    cadence = detect_cadence(thumbs, float(info.fps))
    if not cadence.has_repeats or cadence.original_fps == cadence.fps:
        return None
    film_start = plan.film_start_pts * tb
    origin = shown[0] * tb - film_start
    times: list[tuple[int, Fraction]] = []
    for index, offset in zip(cadence.unique, cadence.unique_times, strict=True):
        seen = shown[index] * tb - film_start
        true = origin + Fraction(offset).limit_denominator(1_000_000)
        # The first frame may not start later than it is shown, or the chunk's first output
        # times (the film's, for chunk 0) would have no frame before them.
        times.append((shown[index], min(true, seen) if not times else true))
    # Upscale only the frames the chunk's output times fall between (and ``context`` more):
    # the rest of the margin was for judging repeats.
    begin = max((i for i, (_, at) in enumerate(times) if at <= plan.start), default=0)
    end = min((i for i, (_, at) in enumerate(times) if at >= plan.stop), default=len(times) - 1)
    dropped = tuple(
        float(pts * tb - film_start)
        for pts, repeat in zip(shown, cadence.repeats, strict=True)
        if repeat and plan.start_pts <= pts < plan.stop_pts
    )
    log.info(
        "cadence",
        chunk=plan.index,
        original_fps=cadence.original_fps,
        pattern=cadence.pattern,
        dropped=len(dropped),
    )
    kept = dict(times[max(begin - context, 0) : end + 1 + context])
    return Retiming(first, last, kept, cadence.pattern, cadence.original_fps, dropped)


def nearest_outside(frames: Iterator[Any], start: int, stop: int) -> Iterator[Any]:
    """Decoded frames from ``start`` to ``stop`` (pts) and the one frame either side."""
    before = None
    for frame in frames:
        if frame.pts < start:
            before = frame
            continue
        if before is not None:
            yield before
            before = None
        yield frame
        if frame.pts > stop:
            return


Clock = dict[str, float]


def upscaled_in_batches(
    decoded: Iterator[SourceFrame],
    upscaler: Upscaler,
    size: tuple[int, int],
    batch: int,
    clock: Clock,
) -> Iterator[tuple[SourceFrame, torch.Tensor]]:
    """Each decoded frame with its upscaled picture, ``batch`` frames at a time through a
    frame-by-frame upscaler (frames already at ``size`` pass untouched). The decoder's time
    is its own (the caller's ``timed``): here it may be a wait for the decode thread."""
    while True:
        frames = list(itertools.islice(decoded, batch))
        if not frames:
            return
        started = time.perf_counter()
        src = torch.cat([f.image for f in frames])
        with torch.inference_mode():
            out = src if src.shape[-2:] == size else upscaler(src, size)
        clock["upscale"] += time.perf_counter() - started
        yield from ((f, out[i : i + 1]) for i, f in enumerate(frames))


@dataclass(frozen=True)
class _Stamp:
    pts: int


def upscaled_in_windows(
    source: str | Path,
    info: MediaInfo,
    upscaler: VideoUpscaler,
    size: tuple[int, int],
    span: tuple[int, int],
    keep: Callable[[Iterator[Any]], Iterator[Any]],
    device: torch.device,
    clock: Clock,
    stages: Overlap,
    reader: Reader | None = None,
) -> Iterator[tuple[SourceFrame, torch.Tensor]]:
    """The frames ``keep`` picks from those in ``span`` (pts, inclusive), with their
    pictures upscaled by a video upscaler. It reads windows of consecutive frames placed by
    their index in the film, so the frames either side that its windows need are decoded
    too (and repeats are read as they are: every window stays where an unchunked run has
    it)."""
    index = scan_frames(source).pts
    lo, hi = span
    wanted = [s.pts for s in keep(_Stamp(p) for p in index if lo <= p <= hi)]
    if not wanted:
        return
    position = {p: i for i, p in enumerate(index)}
    start, stop = position[wanted[0]], position[wanted[-1]] + 1
    before, after = upscaler.context(start, stop, len(index))
    first, last = start - before, min(stop + after, len(index)) - 1
    pictures: dict[int, torch.Tensor] = {}
    wanted_set = set(wanted)

    def read() -> Iterator[torch.Tensor]:
        expected = first
        frames = reader or partial(decode_range, source, info, device=device)
        for frame in frames(index[first], index[last]):
            if frame.pts != index[expected]:
                raise UnsupportedMedia(
                    f"{Path(source).name}: frame {expected} does not decode where the "
                    "file's index puts it; the file is damaged"
                )
            expected += 1
            if frame.pts in wanted_set:
                pictures[frame.pts] = frame.image
            yield frame.image[0]

    waited = {"decode": 0.0}
    decoded = stages.ahead(timed(read(), clock, "decode"), DECODE_AHEAD, "decode")
    decoded = timed(decoded, waited, "decode")
    started = time.perf_counter()
    at = start
    outputs = upscaler.stream(decoded, size, first=first, start=start, stop=stop, total=len(index))
    for out in outputs:
        # The network's time, not the decoder's (done here, or waited for in its thread).
        clock["upscale"] += time.perf_counter() - started - waited["decode"]
        waited["decode"] = 0.0
        for i in range(out.shape[0]):
            pts = index[at + i]
            if pts in wanted_set:
                yield SourceFrame(pts, pictures.pop(pts)), out[i : i + 1]
        at += out.shape[0]
        started = time.perf_counter()


@dataclass(frozen=True)
class SourceSpan:
    """The source frames a chunk reads (pts, inclusive) and where it places them in time."""

    plan: ChunkPlan
    first_pts: int
    last_pts: int
    # With repeats dropped: each unique frame's pts and its time on the original clock.
    true_time: dict[int, Fraction] | None = None
    # Whether the one frame either side of the chunk is kept, for motion over four frames.
    neighbours: bool = False
    # The cadence whose repeats were dropped, if any.
    retiming: Retiming | None = None

    def keep(self, frames: Iterator[Any]) -> Iterator[Any]:
        """The decoded frames the chunk's output needs (anything with a ``pts``)."""
        if self.true_time is not None:
            # Repeats are dropped before upscaling: fewer frames to upscale, too.
            return (f for f in frames if f.pts in self.true_time)
        if self.neighbours:
            return nearest_outside(frames, self.plan.start_pts, self.plan.stop_pts)
        return frames

    def time_of(self, pts: int) -> Fraction:
        """A kept frame's time in the film (seconds from the film's first frame)."""
        if self.true_time is not None:
            return self.true_time[pts]
        tb = self.plan.time_base
        return pts * tb - self.plan.film_start_pts * tb


def source_span(
    source: str | Path, info: MediaInfo, plan: ChunkPlan, *, drop_repeats: bool, neighbours: bool
) -> SourceSpan:
    """The chunk's frames, and for an interpolator that looks at neighbours a margin either
    side; with ``drop_repeats``, the unique frames of a cadence when the chunk has one."""
    # Motion over four frames needs one more frame either side of the chunk: decode it from
    # the margin, so a chunked run sees what an unchunked one does.
    margin = context_ticks(info, plan.time_base, NEIGHBOUR_CONTEXT_S) if neighbours else 0
    first_pts = max(plan.start_pts - margin, plan.film_start_pts)
    last_pts = plan.stop_pts if plan.last else plan.stop_pts + margin
    if drop_repeats:
        found = original_times(source, info, plan, context=int(neighbours))
        if found is not None:
            return SourceSpan(
                plan, found.first_pts, found.last_pts, found.true_time, neighbours, found
            )
    return SourceSpan(plan, first_pts, last_pts, neighbours=neighbours)


def upscaled_frames(
    source: str | Path,
    info: MediaInfo,
    span: SourceSpan,
    upscaler: Upscaler,
    size: tuple[int, int],
    batch: int,
    device: torch.device,
    clock: Clock,
    stages: Overlap,
    reader: Reader | None = None,
) -> Iterator[tuple[SourceFrame, torch.Tensor]]:
    """The span's kept frames with their upscaled pictures: a video upscaler reads windows
    of frames placed in the film, a frame upscaler takes the kept frames ``batch`` at a time.
    The decoder and the upscaler each run in a thread of ``stages``; the upscaler keeps up
    to one batch (window) of frames ready: the frames of one come out at once, and room for
    them all lets the next start while they are read."""
    if isinstance(upscaler, VideoUpscaler) and size != info.upright_size[::-1]:
        pts = (span.first_pts, span.last_pts)
        windows = upscaled_in_windows(
            source, info, upscaler, size, pts, span.keep, device, clock, stages, reader
        )
        return stages.ahead(windows, upscaler.grid.core, "upscale")
    read = reader or partial(decode_range, source, info, device=device)
    decoded = span.keep(read(span.first_pts, span.last_pts))
    decoded = stages.ahead(timed(decoded, clock, "decode"), max(DECODE_AHEAD, batch), "decode")
    upscaled = upscaled_in_batches(decoded, upscaler, size, batch, clock)
    return stages.ahead(upscaled, batch, "upscale")


def timed_frames(
    pairs: Iterator[tuple[SourceFrame, torch.Tensor]],
    span: SourceSpan,
    should_stop: ShouldStop,
    result: ChunkResult,
) -> Iterator[TimedFrame]:
    """The upscaled frames placed in film time, counted in ``result``; ``should_stop`` is
    asked before each. A cut between two frames is reported (at the second's time) by the
    chunk that owns the first: every chunk decodes the next one's first frame, so each cut
    is found once, wherever the chunks are cut."""
    plan, previous = span.plan, None
    for index, (frame, out) in enumerate(pairs):
        check(should_stop)
        result.frames_in += 1
        current = TimedFrame(index, span.time_of(frame.pts), frame.image, out)
        owner = previous is not None and plan.start <= previous.time < plan.stop
        if owner and previous and is_scene_cut(previous.src, current.src):
            result.report.cuts.append(float(current.time))
        if plan.start <= current.time < plan.stop:
            result.report.saw(current.time, brightness_of(current.src), frame.pts)
        previous = current
        yield current


# A pair of neighbouring frames (left, right) with the frames either side: (before, left,
# right, after), None past the chunk's frames.
Neighbourhood = tuple[TimedFrame | None, TimedFrame, TimedFrame | None, TimedFrame | None]


def neighbourhoods(frames: Iterable[TimedFrame]) -> Iterator[Neighbourhood]:
    """Each frame as the left of a pair, in order; the last frame comes alone (no right).

    A pair comes once the frame after it is known: motion over four frames looks at it."""
    seen: list[TimedFrame] = []
    for current in frames:
        seen = [*seen[-3:], current]
        if len(seen) >= 3:
            yield (seen[-4] if len(seen) == 4 else None), seen[-3], seen[-2], current
    if len(seen) >= 2:
        yield (seen[-3] if len(seen) >= 3 else None), seen[-2], seen[-1], None
    if seen:
        yield None, seen[-1], None, None


def in_between(
    interpolator: Interpolator | None,
    should_stop: ShouldStop,
    result: ChunkResult,
    around: Neighbourhood,
    times: Sequence[float],
) -> list[torch.Tensor]:
    """The interpolated frames at ``times`` (0 < t < 1) of ``around``'s pair, each with the
    interpolator's confidence reported; none after the last frame, or without one."""
    before, left, right, after = around
    if not times or right is None or interpolator is None:
        return []
    check(should_stop)
    started = time.perf_counter()
    with torch.inference_mode():
        made = interpolator.between(left, right, times, before, after)
    result.seconds["interpolate"] += time.perf_counter() - started
    for t, frame, sure in zip(times, made, interpolator.take_confidence(), strict=False):
        if sure is not None:
            moment = left.time + Fraction(t).limit_denominator(1_000_000) * (right.time - left.time)
            result.report.made(moment, sure, frame)
    return made


class OutputFrame(NamedTuple):
    """A frame to encode, with its pts and duration in the output's time base."""

    image: torch.Tensor
    pts: int
    duration: int


def placed(
    places: Sequence[Slot],
    left: TimedFrame,
    right: TimedFrame | None,
    made: Sequence[torch.Tensor],
    plan: ChunkPlan,
    target: Target,
) -> list[OutputFrame]:
    """The output frames at ``places``: ``left``'s picture where a place falls on it (t=0),
    else the next interpolated one."""
    origin = chunk_offset(plan, target.fps)
    # At a target rate a frame lasts one tick; else until the next source frame.
    shown = (right.time if right else plan.stop) - left.time
    duration = int(1 if target.fps else shown / target.time_base)
    pending = iter(made)
    frames = []
    for place in places:
        image = left.out if place.t == 0 else next(pending)
        ticks = (place.time - origin) / target.time_base
        if ticks.denominator != 1:
            raise ProcessingError(f"output time {place.time} is off the time base")
        frames.append(OutputFrame(image, int(ticks), duration))
    return frames


Interpolate = Callable[[Neighbourhood, Sequence[float]], list[torch.Tensor]]


def retimed(
    frames: Iterator[TimedFrame], plan: ChunkPlan, target: Target, interpolate: Interpolate
) -> Iterator[list[OutputFrame]]:
    """Per source frame, the output frames from its time up to the next source frame's (or
    the chunk's end): the frame itself where an output time falls on it, in-betweens else."""
    for around in neighbourhoods(frames):
        _, left, right, _ = around
        if right is None and not plan.last and left.time < plan.stop:
            log.warning("chunk_ends_early", chunk=plan.index, at=float(left.time))
        places = slots(left.time, right.time if right else None, plan.start, plan.stop, target.fps)
        made = interpolate(around, [float(s.t) for s in places if s.t > 0])
        yield placed(places, left, right, made, plan, target)


def write_outputs(
    outputs: Iterator[list[OutputFrame]],
    writer: VideoWriter,
    result: ChunkResult,
    on_progress: ProgressCallback | None,
    should_stop: ShouldStop = never,
) -> None:
    """Encode the output frames, counted in ``result``; progress is reported after each
    source frame's share, then ``should_stop`` asked: the stages before run ahead, so the
    frames they have queued are not all encoded first."""
    for frames in outputs:
        started = time.perf_counter()
        for frame in frames:
            writer.write(frame.image, frame.pts, frame.duration)
            result.frames_out += 1
        result.seconds["encode"] += time.perf_counter() - started
        if frames and on_progress is not None:
            on_progress(result.frames_out)
        check(should_stop)


def chunk_upscaler(
    options: Options, info: MediaInfo, device: torch.device, should_stop: ShouldStop
) -> Upscaler:
    """The upscaler the options name, for the source's bit depth, stopping when asked."""
    extra: dict[str, object] = {
        "bit_depth": info.bit_depth,
        "fit": "stretch" if options.fit == "sar" else options.fit,
        "should_stop": should_stop,
    }
    lossy = is_lossy_video(info.codec)
    denoise = options.denoise
    extra["denoise"] = source_denoise(options.upscaler, lossy) if denoise is None else denoise
    return get_upscaler(options.upscaler, device, torch.float32, **extra)


def video_spec(options: Options, target: Target) -> VideoSpec:
    """What a chunk file is encoded as."""
    return VideoSpec(
        codec=target.codec,
        width=target.width,
        height=target.height,
        time_base=target.time_base,
        rate=target.rate,
        pix_fmt=target.pix_fmt,
        crf=options.crf,
        preset=options.preset,
        color=target.color,
        sar=target.sar,
    )


def process_chunk(
    source: str | Path,
    plan: ChunkPlan,
    options: Options,
    output: str | Path,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: ShouldStop = never,
    device: torch.device | None = None,
    info: MediaInfo | None = None,
    overlap: bool = True,
    repair: RepairPlan | None = None,
) -> ChunkResult:
    """Decode the chunk's source frames, upscale, interpolate and encode them to ``output``.

    A flat pipeline that the writer pulls a frame at a time: the span's source frames,
    upscaled, placed in time, retimed (interpolated between), written. Decode, upscale and
    interpolate each run in their own thread, a few frames ahead of the next stage (the
    same frames come out; ``overlap=False`` runs them one after another in this thread).
    ``repair`` is the film's repair plan (``plan_repair``); without one it is planned
    here, from the same sample of the whole film, so every chunk gets the same plan."""
    started = time.perf_counter()
    info = info or probe(source)
    device = device or pick_device()
    target = resolve_target(info, options)
    output = Path(output)
    result = ChunkResult(index=plan.index, path=str(output), device=str(device))
    upscaler = chunk_upscaler(options, info, device, should_stop)
    interpolator = (
        get_interpolator(options.interpolator, device, should_stop=should_stop)
        if target.fps
        else None
    )
    neighbours = interpolator is not None and interpolator.uses_neighbours
    drop = bool(target.fps) and options.repeats == "drop"
    span = source_span(source, info, plan, drop_repeats=drop, neighbours=neighbours)
    if span.retiming is not None:
        result.report.found_cadence(span.retiming.pattern, span.retiming.original_fps)
        result.report.repeats += span.retiming.dropped
    size, clock = (target.height, target.width), result.seconds
    repair = repair if repair is not None else plan_repair(source, info, options, device)
    interpolate = partial(in_between, interpolator, should_stop, result)
    spec, part = video_spec(options, target), output.with_name(output.name + ".part")
    try:
        # Leaving the block, however, stops and joins every stage thread.
        with Overlap(overlap) as stages, VideoWriter(part, spec, chunk_muxer(spec.codec)) as writer:
            before = result.report.levels_before if repair.active else None
            read = repaired_reader(source, info, repair, device, clock, before)
            upscaled = upscaled_frames(
                source, info, span, upscaler, size, options.batch, device, clock, stages, read
            )
            frames = timed_frames(upscaled, span, should_stop, result)
            outputs = retimed(frames, plan, target, interpolate)
            outputs = grained(outputs, options.grain, output_tick(plan, target))
            outputs = stages.ahead(outputs, OUTPUT_AHEAD, "interpolate")
            write_outputs(outputs, writer, result, on_progress, should_stop)
            if not result.frames_in:
                raise UnsupportedMedia(
                    f"{Path(source).name}: no frames decoded for chunk {plan.index} "
                    f"(from {float(plan.start):.2f} s); the file is truncated or corrupt"
                )
        result.encoder = writer.encoder.name
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)
    result.seconds["wall"] = time.perf_counter() - started
    return result


def join_chunks(
    source: str | Path,
    plans: Sequence[ChunkPlan],
    chunk_files: Sequence[str | Path],
    output: str | Path,
    options: Options,
    *,
    info: MediaInfo | None = None,
) -> Path:
    """Concatenate chunk files (no re-encoding) and mux the audio the options ask for. The
    result starts at the first chunk's first frame: the film's, or a preview's."""
    require_soundtrack(options)
    if len(plans) != len(chunk_files) or not plans:
        raise ProcessingError(f"{len(chunk_files)} chunk files for {len(plans)} chunks")
    info = info or probe(source)
    output = Path(output)
    target = resolve_target(info, options)
    container = container_for(output, options.container, target.codec)
    fps = options.target_fps()
    plans = sorted(plans, key=lambda p: p.index)
    origin = chunk_offset(plans[0], fps)  # film time of the result's first frame
    film_start = plans[0].film_start_pts * plans[0].time_base
    duration = plans[-1].stop
    end = (output_count(duration, fps) / fps if fps else duration) - origin
    parts = [
        VideoPart(str(path), chunk_offset(plan, fps) - origin)
        for plan, path in zip(plans, chunk_files, strict=True)
    ]
    audio = sound_sources(source, info, film_start, options, origin)
    part = output.with_name(output.name + ".part")
    try:
        join(
            parts,
            part,
            container,
            audio,
            end=end,
            color=target.color,
            sar=target.sar,
            web=options.output_preset == "web",
        )
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)
    return output


def require_soundtrack(options: Options) -> None:
    """Refuse ``audio=replace``/``add`` without a soundtrack file."""
    if options.audio in ("replace", "add") and not options.audio_file:
        raise InvalidInput(f"audio mode {options.audio!r} needs an audio file")


def sound_sources(
    source: str | Path,
    info: MediaInfo,
    film_start: Fraction,
    options: Options,
    origin: Fraction = Fraction(0),
) -> list[AudioSource]:
    """The tracks the result gets: the film's own (keep, add) and the soundtrack (replace,
    add), in that order, each from ``origin`` (film seconds: a preview's start; there the
    film's own sound is cut to the sample too). The film's first frame is at ``film_start``
    in the source file. ``audio_offset`` moves the soundtrack, or with none the film's own
    tracks; the soundtrack is padded or trimmed to the picture."""
    offset = Fraction(options.audio_offset).limit_denominator(1_000_000)
    soundtrack = options.audio in ("replace", "add") and options.audio_file
    own_shift = Fraction(0) if soundtrack else offset
    audio = []
    if options.audio in ("keep", "add"):
        at = film_start + origin - own_shift
        audio += [AudioSource(str(source), a.index, at, pad=bool(origin)) for a in info.audio]
    if soundtrack:
        audio.append(_soundtrack(options.audio_file or "", offset - origin))
    return audio


def _soundtrack(path: str, offset: Fraction = Fraction(0)) -> AudioSource:
    """The first audio stream of ``path``, its start at the film's first frame plus
    ``offset`` seconds, padded to the picture's length."""
    with open_input(path) as container:
        if not container.streams.audio:
            raise UnsupportedMedia(f"{Path(path).name}: no audio stream in the soundtrack file")
        stream = container.streams.audio[0]
        start = (stream.start_time or 0) * Fraction(stream.time_base or 1)
        return AudioSource(path, stream.index, start - offset, pad=True)


def plan_file(
    source: str | Path,
    chunk_seconds: float,
    info: MediaInfo | None = None,
    preview: tuple[str, float] | None = None,
) -> list[ChunkPlan]:
    """Scan the film's frame times and cut it into chunks of about ``chunk_seconds``; a
    ``preview`` (start in seconds or ``auto``, length: ``Options.preview``) plans that
    stretch only."""
    index = scan_frames(source)
    info = info or probe(source)
    check_complete(info, index)
    if preview is None:
        return plan_chunks(
            index.pts, index.end_pts, index.time_base, chunk_seconds, index.keyframes
        )
    length = Fraction(preview[1]).limit_denominator(1000)
    if preview[0] == "auto":
        start = busy_moment(source, info, index, length)
    else:
        start = Fraction(preview[0]).limit_denominator(1000)
    return preview_plans(index, start, length, chunk_seconds)


def expected_frames(plans: Sequence[ChunkPlan], fps: Fraction | None) -> int:
    """How many frames the output will have (a preview's: those of its stretch)."""
    if fps is None:
        return sum(p.frames for p in plans)
    return output_count(plans[-1].stop, fps) - output_count(plans[0].start, fps)


def process_file(
    source: str | Path,
    output: str | Path,
    options: Options,
    *,
    on_progress: ProgressCallback | None = None,
    on_plan: Callable[[Sequence[ChunkPlan], int], None] | None = None,
    device: torch.device | None = None,
    work_dir: str | Path | None = None,
    overlap: bool = True,
) -> FileResult:
    """Process a whole film: plan, run every chunk, join; chunk files go in a temporary folder.
    ``overlap``: the chunks' stages run at once (see ``process_chunk``)."""
    started = time.perf_counter()
    output = Path(output)
    # The container takes every codec the preset may pick for this film (H.264/H.265).
    container_for(output, options.container, options.codec_for(8))
    require_soundtrack(options)
    if options.audio_file:
        _soundtrack(options.audio_file)
    info = probe(source)
    resolve_target(info, options)
    plans = plan_file(source, options.chunk_length(), info, options.preview())
    fps = options.target_fps()
    if on_plan is not None:
        on_plan(plans, expected_frames(plans, fps))
    device = device or pick_device()
    # Decided once for the film (interlacing included), so every chunk repairs alike.
    repair = plan_repair(source, info, options, device)
    work = Path(tempfile.mkdtemp(prefix=".lumiere-", dir=work_dir or output.parent))
    try:
        done = 0
        results = []
        files = []
        for plan in plans:
            path = work / f"{plan.index:05d}.{chunk_muxer(options.codec)}"
            base = done

            def progress(n: int, base: int = base) -> None:
                if on_progress is not None:
                    on_progress(base + n)

            result = process_chunk(
                source,
                plan,
                options,
                path,
                on_progress=progress,
                device=device,
                info=info,
                overlap=overlap,
                repair=repair,
            )
            done += result.frames_out
            results.append(result)
            files.append(path)
        joined = time.perf_counter()
        join_chunks(source, plans, files, output, options, info=info)
        joined = time.perf_counter() - joined
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FileResult(
        path=str(output),
        chunks=results,
        frames_in=sum(r.frames_in for r in results),
        frames_out=done,
        seconds=time.perf_counter() - started,
        join_seconds=joined,
        repair=repair,
    )
