"""Pipeline benchmark: each stage alone against a whole chunk, its stages one after another
(before) and overlapped (after), in the same run; peak memory; FFmpeg as a peer.

Runs ``process_file`` on a 10 s and a 60 s synthetic clip, each run in its own process (so
the peak resident memory is that run's alone), alternately one-thread and overlapped,
``--repeats`` times, and keeps each mode's fastest run: the machine is shared, and a busy
neighbour slows a run, never speeds it up.

A stage alone is its busy time in the one-thread runs (the fastest of them), as the output
frames per second it would allow if it were the only work; a chunk end to end is output
frames over the chunks' wall time. The issue's target (#19): overlapped, a chunk runs at
≥ 90 % of its slowest stage alone. FFmpeg's command line does the same job (Lanczos scale,
blending frame-rate conversion, x264) as a peer.

    .venv/bin/python bench/bench_pipeline.py [--width 160 --height 120 --scale 2 --fps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STAGES = ("decode", "upscale", "interpolate", "encode")
# The film-repair parts measure the film before its chunks run; off here, where the stages
# after them are measured (``--repair auto`` keeps them).
REPAIR_PARTS = ("degrain", "deflicker", "dust", "stabilise", "deinterlace")
TARGET = 0.9


def child(args: argparse.Namespace) -> None:
    """Run the pipeline once in this process and print its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch

    from worker.pipeline import Options, pick_device, process_file

    if args.threads:
        torch.set_num_threads(args.threads)
    repair = {} if args.repair == "auto" else dict.fromkeys(REPAIR_PARTS, "off")
    options = Options(
        scale=args.scale,
        fps=args.fps,
        upscaler=args.upscaler,
        interpolator=args.interpolator,
        preset=args.preset,
        crf=args.crf,
        chunk_seconds=args.chunk_seconds,
        **repair,
    )
    device = pick_device()
    overlap = args.overlap == "on"
    cpu = time.process_time()  # every thread of the process: x264's, torch's, the stages'
    result = process_file(args.source, args.output, options, device=device, overlap=overlap)
    cpu = time.process_time() - cpu
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "encoder": result.chunks[0].encoder,
                "frames_in": result.frames_in,
                "frames_out": result.frames_out,
                "seconds": result.seconds,
                "cpu_seconds": cpu,
                "stages": result.stage_seconds(),
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(args: argparse.Namespace, source: Path, output: Path, overlap: str) -> dict:
    """The pipeline's figures for one clip, from a fresh process."""
    flags = {
        "scale": args.scale,
        "fps": args.fps,
        "upscaler": args.upscaler,
        "interpolator": args.interpolator,
        "preset": args.preset,
        "crf": args.crf,
        "chunk-seconds": args.chunk_seconds,
        "threads": args.threads,
        "repair": args.repair,
        "overlap": overlap,
    }
    cmd = [sys.executable, __file__, "--child", str(source), str(output)]
    for name, value in flags.items():
        cmd += [f"--{name}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_ffmpeg(args: argparse.Namespace, source: Path, output: Path) -> dict:
    """The same job done by FFmpeg's command line: wall time and peak memory."""
    import imageio_ffmpeg

    vf = f"scale=iw*{args.scale:g}:ih*{args.scale:g}:flags=lanczos,framerate=fps={args.fps}"
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-i",
        str(source),
        "-vf",
        vf,
        "-c:v",
        "libx264",
        "-preset",
        args.preset,
        "-crf",
        str(args.crf),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "copy",
        str(output),
    ]
    # A wrapper process so RUSAGE_CHILDREN holds FFmpeg's peak alone.
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True); "
        "print(time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True
    )
    seconds, peak = map(float, done.stdout.split())
    return {"seconds": seconds, "peak_mib": peak}


def make_source(seconds: float, args: argparse.Namespace) -> Path:
    """A synthetic clip (moving pattern and tone), made once and kept in bench/out."""
    sys.path.insert(0, str(ROOT))
    from tests.clips import make_clip

    path = OUT / f"src_{seconds:g}s_{args.width}x{args.height}.mp4"
    if not path.exists():
        make_clip(
            path,
            width=args.width,
            height=args.height,
            fps=24,
            seconds=seconds,
            audio="aac",
            codec="libx264",
        )
    return path


def measure(args: argparse.Namespace, seconds: float) -> dict:
    """One clip: the fastest one-thread and overlapped runs (taken in turns), each stage's
    least busy time in the one-thread runs, and the peer."""
    source = make_source(seconds, args)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(run_child(args, source, OUT / f"lumiere_{seconds:g}s.mp4", mode))
    best = {mode: min(done, key=lambda r: r["stages"]["wall"]) for mode, done in runs.items()}
    alone = {s: min(r["stages"][s] for r in runs["off"]) for s in STAGES}
    peer = None if args.no_peer else run_ffmpeg(args, source, OUT / f"ffmpeg_{seconds:g}s.mp4")
    return {
        "seconds": seconds,
        "before": best["off"],
        "after": best["on"],
        "alone": alone,
        "peer": peer,
    }


def slowest_stage(row: dict) -> str:
    """The stage that took longest alone: the pace a chunk cannot beat."""
    alone: dict[str, float] = row["alone"]
    return max(STAGES, key=lambda stage: alone[stage])


def report(args: argparse.Namespace, rows: list[dict]) -> None:
    """The table: stages alone, a chunk end to end before and after, the whole film."""
    first = rows[0]["after"]
    print(
        f"{args.width}x{args.height} 24 fps -> x{args.scale:g} at {args.fps} fps, "
        f"{args.upscaler} + {args.interpolator}, {first['encoder']} {args.preset} crf "
        f"{args.crf}, device {first['device']}, torch threads {first['threads']}, "
        f"{os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}), best of {args.repeats}"
    )
    clips = [f"{r['seconds']:g} s clip" for r in rows]
    print(f"{'':34}" + "".join(f"{c:>14}" for c in clips))

    def line(label: str, values: list[str]) -> None:
        print(f"{label:34}" + "".join(f"{v:>14}" for v in values))

    def fps(row: dict, seconds: float) -> float:
        return row["after"]["frames_out"] / max(seconds, 1e-9)

    line("source frames", [str(r["after"]["frames_in"]) for r in rows])
    line("output frames", [str(r["after"]["frames_out"]) for r in rows])
    for stage in STAGES:
        line(f"{stage} alone, out fps", [f"{fps(r, r['alone'][stage]):.0f}" for r in rows])
    slowest = [slowest_stage(r) for r in rows]
    line("slowest stage alone", slowest)
    for mode, label in (("before", "one thread (before)"), ("after", "overlapped (after)")):
        line(f"chunk {label}, out fps", [f"{fps(r, r[mode]['stages']['wall']):.1f}" for r in rows])
        line(
            f"  / slowest stage (target {TARGET:.2f})",
            [
                f"{r['alone'][s] / r[mode]['stages']['wall']:.2f}"
                for r, s in zip(rows, slowest, strict=True)
            ],
        )
    # Whatever overlaps, the work must fit on the cores: the one-thread run's CPU seconds
    # (every thread's) spread over all of them is as fast as the film can go here.
    cores = os.cpu_count() or 1
    line(
        "CPU ceiling (all cores), out fps",
        [f"{fps(r, r['before']['cpu_seconds'] / cores):.1f}" for r in rows],
    )
    line(
        "  best ratio the cores allow",
        [
            f"{r['alone'][s] / (r['before']['cpu_seconds'] / cores):.2f}"
            for r, s in zip(rows, slowest, strict=True)
        ],
    )
    line(
        "  whole film overlapped / ceiling",
        [f"{r['before']['cpu_seconds'] / cores / r['after']['seconds']:.2f}" for r in rows],
    )
    for stage in STAGES:  # contention: stages sharing the cores are busy longer than alone
        line(f"{stage} busy s, overlapped", [f"{r['after']['stages'][stage]:.2f}" for r in rows])
    for mode in ("before", "after"):
        line(f"whole film {mode}, out fps", [f"{fps(r, r[mode]['seconds']):.1f}" for r in rows])
        line(f"peak RSS {mode}, MiB", [f"{r[mode]['peak_mib']:.0f}" for r in rows])
    line("join s", [f"{r['after']['stages']['join']:.2f}" for r in rows])
    if not args.no_peer:
        line("ffmpeg CLI out fps", [f"{fps(r, r['peer']['seconds']):.1f}" for r in rows])
        line("ffmpeg CLI peak MiB", [f"{r['peer']['peak_mib']:.0f}" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "OUTPUT"))
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--fps", default="60")
    parser.add_argument("--upscaler", default="lanczos")
    parser.add_argument("--interpolator", default="blend")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--repair", choices=("off", "auto"), default="off")
    parser.add_argument("--overlap", choices=("on", "off"), default="on", help="child only")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, fastest kept")
    parser.add_argument("--lengths", default="10,60", help="clip lengths in seconds")
    parser.add_argument("--no-peer", action="store_true", help="skip the FFmpeg peer")
    args = parser.parse_args()
    if args.child:
        args.source, args.output = args.child
        child(args)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [measure(args, float(x)) for x in args.lengths.split(",")]
    report(args, rows)


if __name__ == "__main__":
    main()
