"""Pipeline benchmark: frames per second per stage and end to end, and peak memory.

Runs ``process_file`` on a 10 s and a 60 s synthetic clip (each in its own process, so the
peak resident memory is that run's alone) and FFmpeg's command line doing the same job
(Lanczos scale + blending frame-rate conversion + x264) as a peer, side by side.

    .venv/bin/python bench/bench_pipeline.py [--width 160 --height 120 --scale 2 --fps 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def child(args: argparse.Namespace) -> None:
    """Run the pipeline once in this process and print its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    from worker.pipeline import Options, pick_device, process_file

    options = Options(
        scale=args.scale,
        fps=args.fps,
        upscaler=args.upscaler,
        interpolator=args.interpolator,
        preset=args.preset,
        crf=args.crf,
        chunk_seconds=args.chunk_seconds,
    )
    device = pick_device()
    result = process_file(args.source, args.output, options, device=device)
    print(
        json.dumps(
            {
                "device": str(device),
                "frames_in": result.frames_in,
                "frames_out": result.frames_out,
                "seconds": result.seconds,
                "stages": result.stage_seconds(),
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(args: argparse.Namespace, source: Path, output: Path) -> dict:
    """The pipeline's figures for one clip, from a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(source),
        str(output),
        "--scale",
        str(args.scale),
        "--fps",
        args.fps,
        "--upscaler",
        args.upscaler,
        "--interpolator",
        args.interpolator,
        "--preset",
        args.preset,
        "--crf",
        str(args.crf),
        "--chunk-seconds",
        str(args.chunk_seconds),
    ]
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
    parser.add_argument("--lengths", default="10,60", help="clip lengths in seconds")
    parser.add_argument("--no-peer", action="store_true", help="skip the FFmpeg peer")
    args = parser.parse_args()
    if args.child:
        args.source, args.output = args.child
        child(args)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    lengths = [float(x) for x in args.lengths.split(",")]
    rows = []
    for seconds in lengths:
        source = make_source(seconds, args)
        started = time.perf_counter()
        ours = run_child(args, source, OUT / f"lumiere_{seconds:g}s.mp4")
        ours["wall"] = time.perf_counter() - started
        peer = None if args.no_peer else run_ffmpeg(args, source, OUT / f"ffmpeg_{seconds:g}s.mp4")
        rows.append((seconds, ours, peer))
    print(
        f"{args.width}x{args.height} 24 fps -> x{args.scale:g} at {args.fps} fps, "
        f"{args.upscaler} + {args.interpolator}, x264 {args.preset} crf {args.crf}, "
        f"device {rows[0][1]['device']}"
    )
    header = f"{'':24}" + "".join(f"{f'{s:g} s clip':>14}" for s, _, _ in rows)
    print(header)

    def line(label: str, values: list[str]) -> None:
        print(f"{label:24}" + "".join(f"{v:>14}" for v in values))

    line("source frames", [str(o["frames_in"]) for _, o, _ in rows])
    line("output frames", [str(o["frames_out"]) for _, o, _ in rows])
    for stage, count in (
        ("decode", "frames_in"),
        ("upscale", "frames_in"),
        ("interpolate", "frames_out"),
        ("encode", "frames_out"),
    ):
        line(
            f"{stage} fps", [f"{o[count] / max(o['stages'][stage], 1e-9):.0f}" for _, o, _ in rows]
        )
    line("join s", [f"{o['stages']['join']:.2f}" for _, o, _ in rows])
    line("end-to-end fps (out)", [f"{o['frames_out'] / o['seconds']:.1f}" for _, o, _ in rows])
    line("peak RSS MiB", [f"{o['peak_mib']:.0f}" for _, o, _ in rows])
    if not args.no_peer:
        line(
            "ffmpeg CLI fps (out)",
            [f"{o['frames_out'] / p['seconds']:.1f}" for _, o, p in rows if p],
        )
        line("ffmpeg CLI peak MiB", [f"{p['peak_mib']:.0f}" for _, _, p in rows if p])


if __name__ == "__main__":
    main()
