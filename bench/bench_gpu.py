"""GPU benchmark: each stage's frames/s at 720×540 → 3840×2160 and 60 fps, an overlapped
chunk end to end, peak GPU memory, and the projection for the whole Lumière film.

    .venv/bin/python bench/bench_gpu.py                 # CUDA when there is one, else the CPU
    .venv/bin/python bench/bench_gpu.py --budget 200 --no-compile

On CUDA: decode (PyAV, colour conversion on the GPU), upscale (``faithful`` and ``detailed``
in fp16 and bf16, and ``faithful`` under ``torch.compile``), interpolate (``motion``) and
encode (NVENC where it opens, else x264 at the size's preset), each alone, synchronised,
after a warm-up; then one chunk of the film end to end, its stages overlapped and one
after another. Source frames are 4:3 and pillarboxed in the 16:9 frame (``fit=pad``).

The film: 800 frames at 16 fps (50 s) become 3000 frames at 60 fps, 2200 of them made by
the interpolator. Its projection is each stage's share at the rates measured here: one
after another they add up; overlapped the slowest sets the pace, divided by how close the
measured chunk came to it. Without CUDA the same runs at 240×180 → 1280×720 (the same ×4
and pillarbox, 1/9 of the pixels) on the CPU and the projection multiplies each stage by 9
(its pixel count): a rough figure, labelled as such. Optional measurements are skipped
once ``--budget`` seconds are spent, so one run stays under five minutes.
"""

from __future__ import annotations

import argparse
import datetime
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.errors import ModelUnavailable  # noqa: E402
from worker.media.decode import decode_range  # noqa: E402
from worker.media.encode import VideoSpec, VideoWriter  # noqa: E402
from worker.media.probe import probe  # noqa: E402
from worker.pipeline import Options, plan_file, process_chunk  # noqa: E402
from worker.stages.interpolate import TimedFrame, get_interpolator  # noqa: E402
from worker.stages.upscale import get_upscaler  # noqa: E402

OUT = ROOT / "bench" / "out"
FILM_FRAMES, FILM_FPS, OUT_FPS = 800, 16, 60
FILM_OUT = FILM_FRAMES * OUT_FPS // FILM_FPS  # 3000
GOAL_S = 600  # the issue's goal: the film in under 10 minutes on one GPU
NO_REPAIR = dict.fromkeys(("degrain", "deflicker", "dust", "stabilise", "deinterlace"), "off")


@dataclass(frozen=True)
class Setup:
    """Where and at what size the stages run, and how the figures scale to the film's."""

    device: torch.device
    source: tuple[int, int]  # (width, height)
    target: tuple[int, int]
    frames: int  # source frames per measurement
    precisions: tuple[str, ...]
    scale_to_film: float  # 4K pixels over these pixels

    @property
    def size(self) -> tuple[int, int]:
        """The target as (H, W), as the stages take it."""
        return self.target[1], self.target[0]


@dataclass
class Figure:
    """One measurement: frames per second of what (source, in-between or output frames)."""

    stage: str
    what: str
    fps: float
    peak_mib: float
    note: str = ""


def setup_for(device: torch.device) -> Setup:
    if device.type == "cuda":
        return Setup(device, (720, 540), (3840, 2160), 32, ("fp16", "bf16"), 1.0)
    return Setup(device, (240, 180), (1280, 720), 4, ("auto",), 9.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak GPU memory since the last reset; on the CPU, the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_run(device: torch.device, work: Callable[[], int]) -> tuple[float, float]:
    """(items per second, peak MiB) of ``work``, which returns how many items it made."""
    sync(device)
    reset_peak(device)
    started = time.perf_counter()
    count = work()
    sync(device)
    return count / (time.perf_counter() - started), peak_mib(device)


def source_clip(setup: Setup, seconds: float) -> Path:
    """A synthetic 16 fps film clip at the setup's source size, made once in bench/out."""
    from tests.clips import make_clip

    width, height = setup.source
    path = OUT / f"gpu_src_{width}x{height}_{seconds:g}s.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        make_clip(path, width=width, height=height, fps=FILM_FPS, seconds=seconds)
    return path


def bench_decode(setup: Setup, clip: Path) -> tuple[Figure, list[torch.Tensor]]:
    """Decode to float RGB on the device; returns the frames for the next stages."""
    info = probe(clip)
    frames: list[torch.Tensor] = []

    def work() -> int:
        frames.clear()
        frames.extend(f.image for f in decode_range(clip, info, device=setup.device))
        return len(frames)

    work()  # warm: the file cache, the colour kernels
    fps, peak = timed_run(setup.device, work)
    return Figure("decode", "source", fps, peak), frames[: setup.frames]


def bench_upscale(
    setup: Setup, frames: list[torch.Tensor], name: str, batch: int = 4, **extra: Any
) -> Figure:
    """One upscaler over the frames in batches of four (the pipeline's default batch; a
    video upscaler takes them as one clip, in its windows)."""
    label = f"{name} {extra.get('precision', 'auto')}" + (
        " compiled" if extra.get("compile") else ""
    )
    try:
        upscaler = get_upscaler(name, setup.device, fit="pad", bit_depth=8, **extra)
    except ModelUnavailable as err:
        return Figure(f"upscale {label}", "source", math.nan, math.nan, f"skipped: {err}")
    clips = [torch.cat(frames[i : i + batch]) for i in range(0, len(frames), batch)]

    def work() -> int:
        with torch.inference_mode():
            for clip in clips:
                upscaler(clip, setup.size)
        return sum(c.shape[0] for c in clips)

    try:
        started = time.perf_counter()
        with torch.inference_mode():
            upscaler(clips[0], setup.size)  # warm (and compile)
            sync(setup.device)
        warm = time.perf_counter() - started
        fps, peak = timed_run(setup.device, work)
    except torch.cuda.OutOfMemoryError as err:
        return Figure(f"upscale {label}", "source", math.nan, math.nan, f"out of memory: {err}")
    return Figure(f"upscale {label}", "source", fps, peak, f"first batch {warm:.1f} s")


def film_times(k: int) -> list[float]:
    """The in-between times (0 < t < 1) of the 60 fps output between film frames k, k+1."""
    left, right = Fraction(k, FILM_FPS), Fraction(k + 1, FILM_FPS)
    ticks = range(math.ceil(left * OUT_FPS), math.ceil(right * OUT_FPS))
    return [float((Fraction(j, OUT_FPS) - left) * FILM_FPS) for j in ticks if j / OUT_FPS > left]


def bench_interpolate(setup: Setup, frames: list[torch.Tensor]) -> Figure:
    """``motion`` over consecutive pairs with their neighbours, as the pipeline calls it."""
    with torch.inference_mode():
        outs = [F.interpolate(f, size=setup.size, mode="bilinear") for f in frames]
    timed = [
        TimedFrame(i, Fraction(i, FILM_FPS), f, o)
        for i, (f, o) in enumerate(zip(frames, outs, strict=True))
    ]
    interpolator = get_interpolator("motion", setup.device)

    def pairs(first: int, last: int) -> Iterator[int]:
        for k in range(first, last):
            before = timed[k - 1] if k else None
            after = timed[k + 2] if k + 2 < len(timed) else None
            times = film_times(k)
            interpolator.between(timed[k], timed[k + 1], times, before, after)
            yield len(times)

    with torch.inference_mode():
        sum(pairs(0, 2))  # warm
        fps, peak = timed_run(setup.device, lambda: sum(pairs(2, len(timed) - 1)))
    return Figure("interpolate motion", "in-between", fps, peak)


def bench_encode(setup: Setup, frames: list[torch.Tensor]) -> Figure:
    """H.264 at the target size from frames on the device, the flush included."""
    rate = Fraction(OUT_FPS)
    width, height = setup.target
    spec = VideoSpec("h264", width, height, 1 / rate, rate)
    with torch.inference_mode():
        pictures = [F.interpolate(f, size=setup.size, mode="bilinear") for f in frames[:8]]
    count = max(setup.frames, 24)
    encoder = ""

    def work() -> int:
        nonlocal encoder
        with VideoWriter(OUT / "gpu_encode.mp4", spec, "mp4") as writer:
            encoder = writer.encoder.name
            for pts in range(count):
                writer.write(pictures[pts % len(pictures)], pts, 1)
        return count

    fps, peak = timed_run(setup.device, work)
    return Figure(f"encode {encoder}", "output", fps, peak, f"preset {writer_preset(spec)}")


def writer_preset(spec: VideoSpec) -> str:
    from worker.media.encode import choose_encoder

    return str(choose_encoder(spec).options.get("preset"))


def bench_chunk(setup: Setup, clip: Path, overlap: bool) -> tuple[Figure, dict[str, float]]:
    """The film clip's one chunk with the default stages, end to end."""
    width, height = setup.target
    options = Options(
        width=width, height=height, fit="pad", fps=str(OUT_FPS), repeats="keep", **NO_REPAIR
    )
    (plan,) = plan_file(clip, 600.0)
    out = OUT / f"gpu_chunk_{overlap}.mp4"
    process_chunk(clip, plan, options, out, device=setup.device, overlap=overlap)  # warm
    reset_peak(setup.device)
    result = process_chunk(clip, plan, options, out, device=setup.device, overlap=overlap)
    label = "overlapped" if overlap else "one thread"
    fps = result.frames_out / result.seconds["wall"]
    busy = ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
    note = f"{result.encoder}; seconds: {busy}"
    return Figure(f"chunk {label}", "output", fps, peak_mib(setup.device), note), result.seconds


def film_shares(setup: Setup, figures: list[Figure]) -> dict[str, float]:
    """Seconds each stage would spend on the whole film at the measured rates (scaled to
    4K from a small CPU run); the upscaler as the workers run it (not compiled)."""
    rate = {
        f.stage.split()[0]: f.fps for f in figures if f.stage.startswith(("decode", "in", "en"))
    }
    eager = [
        f.fps
        for f in figures
        if f.stage.startswith("upscale faithful") and "compiled" not in f.stage
    ]
    rate["upscale"] = max((r for r in eager if not math.isnan(r)), default=math.nan)
    work = {
        "decode": FILM_FRAMES,
        "upscale": FILM_FRAMES,
        "interpolate": FILM_OUT - FILM_FRAMES,
        "encode": FILM_OUT,
    }
    return {stage: work[stage] / rate[stage] * setup.scale_to_film for stage in work}


def chunk_efficiency(
    one_thread: dict[str, float] | None, overlapped: dict[str, float]
) -> float | None:
    """How close the overlapped chunk came to its slowest stage alone (1.0: the pace of it);
    None when the one-thread chunk was not run."""
    if one_thread is None:
        return None
    slowest = max(one_thread[s] for s in ("decode", "upscale", "interpolate", "encode"))
    return min(1.0, slowest / overlapped["wall"])


def report(setup: Setup, figures: list[Figure], efficiency: float | None) -> None:
    width, height = setup.source
    print(f"\n{'stage':34}{'frames/s':>10}{'of':>12}{'peak MiB':>10}  note")
    for f in figures:
        print(f"{f.stage:34}{f.fps:>10.2f}{f.what:>12}{f.peak_mib:>10.0f}  {f.note}")
    shares = film_shares(setup, figures)
    label = (
        ""
        if setup.scale_to_film == 1
        else (
            f"  [CPU PROJECTION: measured at {width}x{height} -> "
            f"{setup.target[0]}x{setup.target[1]}, each stage x{setup.scale_to_film:g} for "
            "4K's pixels; rough]"
        )
    )
    print(
        f"\nThe film: {FILM_FRAMES} frames at {FILM_FPS} fps -> {FILM_OUT} at {OUT_FPS} fps, "
        f"4K{label}"
    )
    for stage, seconds in shares.items():
        print(f"  {stage:14}{seconds / 60:8.1f} min")
    slowest = max(shares, key=lambda s: shares[s])
    one_after = sum(shares.values())
    overlapped = shares[slowest] / (efficiency or 1.0)
    reached = (
        "the one-thread chunk was skipped: the ideal"
        if efficiency is None
        else f"the measured chunk ran at {efficiency:.0%} of its slowest stage"
    )
    print(f"  one after another {one_after / 60:6.1f} min")
    print(f"  overlapped        {overlapped / 60:6.1f} min  (paced by {slowest}; {reached})")
    verdict = "meets" if overlapped <= GOAL_S else f"misses by {(overlapped - GOAL_S) / 60:.1f} min"
    print(f"  goal {GOAL_S // 60} min on one GPU: {verdict}")


def describe(device: torch.device) -> str:
    today = datetime.date.today().isoformat()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{today}, {name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    import os

    return f"{today}, no CUDA: CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def measure(setup: Setup, args: argparse.Namespace) -> tuple[list[Figure], float | None]:
    """Every stage alone, then the chunk; optional runs only while the budget lasts."""
    started = time.perf_counter()

    def time_left(share: float) -> bool:
        return time.perf_counter() - started < args.budget * share

    clip = source_clip(setup, (setup.frames + 4) / FILM_FPS)
    decoded, frames = bench_decode(setup, clip)
    figures = [decoded]
    for precision in setup.precisions:
        figures.append(bench_upscale(setup, frames, "faithful", precision=precision))
    last = setup.precisions[-1]
    if setup.device.type == "cuda" and not args.no_compile and time_left(0.3):
        figures.append(bench_upscale(setup, frames, "faithful", precision=last, compile=True))
    # Real-ESRGAN compiles its CPU kernels for minutes on a first run: GPUs only, unless asked.
    if (setup.device.type == "cuda" or args.all) and time_left(0.45):
        figures.append(bench_upscale(setup, frames, "detailed", precision=last))
    if setup.device.type == "cuda" and time_left(0.55):
        figures.append(bench_upscale(setup, frames, "basicvsr", batch=len(frames)))
    figures.append(bench_interpolate(setup, frames))
    figures.append(bench_encode(setup, frames))
    chunk_clip = source_clip(setup, 2.0 if setup.device.type == "cuda" else 0.5)
    overlapped, seconds = bench_chunk(setup, chunk_clip, overlap=True)
    figures.append(overlapped)
    one_thread = None
    if time_left(0.75):
        single, one_thread = bench_chunk(setup, chunk_clip, overlap=False)
        figures.append(single)
    return figures, chunk_efficiency(one_thread, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:1 or cpu")
    parser.add_argument("--budget", type=float, default=240, help="seconds for optional runs")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--all", action="store_true", help="the slow CPU runs too (detailed)")
    args = parser.parse_args()
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    setup = setup_for(device)
    print(f"bench_gpu: {describe(device)}")
    started = time.perf_counter()
    figures, efficiency = measure(setup, args)
    report(setup, figures, efficiency)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
