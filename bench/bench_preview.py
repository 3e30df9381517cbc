"""Preview benchmark: a few seconds of a film against the whole film, through `lumiere process`.

Restores a synthetic 480p film whole and as a preview (``--preview-start auto``, so the
preview pays for finding its busy moment), both to FFV1, and prints each run's wall time, the
ratio, and whether the preview's frames are the whole film's frames at its times. Issue #18
asks for a 3 s preview of a 60 s film at x2 / 60 fps in under a tenth of the full job's time.

    .venv/bin/python -m bench.bench_preview [--seconds 60 --upscaler faithful --interpolator motion]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from bench.bench_pipeline import OUT, ROOT

# The command as users run it (the venv's entry point is this same function).
LUMIERE = [sys.executable, "-c", "from cli.main import main; main()", "process"]


def make_film(seconds: float, width: int, height: int) -> Path:
    """A moving synthetic film with sound, made once and kept in bench/out."""
    sys.path.insert(0, str(ROOT))
    from tests.clips import make_clip

    path = OUT / f"preview_src_{seconds:g}s_{width}x{height}.mp4"
    if not path.exists():
        make_clip(path, width=width, height=height, fps=24, seconds=seconds, audio="aac")
    return path


def run(source: Path, output: Path, args: argparse.Namespace, *extra: str) -> float:
    """Wall seconds of one `lumiere process` run."""
    cmd = [*LUMIERE, str(source), str(output), "--scale", "2", "--fps", "60", "--quiet"]
    cmd += ["--upscaler", args.upscaler, "--interpolator", args.interpolator, "--codec", "ffv1"]
    started = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the film")
    parser.add_argument("--preview-seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--upscaler", default="lanczos")
    parser.add_argument("--interpolator", default="motion")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    film = make_film(args.seconds, args.width, args.height)
    whole_path, part_path = OUT / "preview_whole.mkv", OUT / "preview_part.mkv"
    whole = run(film, whole_path, args)
    part = run(
        film,
        part_path,
        args,
        "--preview-start",
        "auto",
        "--preview-seconds",
        str(args.preview_seconds),
    )
    a, b = frames(whole_path), frames(part_path)
    # The preview's first frame is one of the whole film's; from there they must agree.
    first = next((k for k, f in enumerate(a) if np.array_equal(f, b[0])), None)
    same = first is not None and all(
        np.array_equal(x, y) for x, y in zip(b, a[first:], strict=False)
    )
    print(
        f"{args.width}x{args.height} 24 fps, {args.seconds:g} s -> x2 at 60 fps, "
        f"{args.upscaler} + {args.interpolator}, FFV1"
    )
    print(f"{'whole film':28}{whole:10.1f} s  ({len(a)} frames)")
    print(f"{f'preview of {args.preview_seconds:g} s (auto)':28}{part:10.1f} s  ({len(b)} frames)")
    print(f"{'preview / whole':28}{part / whole:10.3f}   (target < 0.1)")
    print(f"{'frames identical':28}{'yes' if same else 'NO':>10}   (from output frame {first})")


if __name__ == "__main__":
    main()
