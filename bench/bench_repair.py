"""Old-film repair, file to file: real footage made old on purpose, restored by
``lumiere process`` beside the strongest FFmpeg chains a skilled user would write.

The clean original of each sample clip (bench_fidelity's: a centre crop kept in FFV1) is
shrunk ×2 (area) and its luma made old in Python, one damage at a time and all together:
grey (every copy); film grain σ 6 (Gaussian, new every frame); flicker (each frame's gain
and offset jittered, σ 6 % and 3 grey levels); dust and scratches (dark and bright specks,
a line now and then, each in one frame); gate weave (the whole frame moved by whole pixels,
up to 2 either way); and an interlaced copy (two frames' fields woven into one frame, at
half the rate). All together is grain, dust, weave and flicker. Each copy is kept
losslessly (FFV1) and restored ×2, to the clean original's size:

* ours: ``lumiere process --scale 2 --upscaler lanczos --codec ffv1``, the repair options at
  their defaults (``auto``: what a user gets); all together also with the default upscaler;
* FFmpeg: per damage, the chains a skilled user would try (hqdn3d, nlmeans; deflicker;
  tmedian; deshake; bwdif, yadif; all together: deflicker, a denoiser, tmedian, deshake),
  each then ``scale=…:flags=lanczos``; FFmpeg's figure is its best-scoring chain.

Scores are luma PSNR of the stored Y planes against the clean original's, frames aligned by
time (the interlaced copy against the frames its first fields came from); the flicker index
(grey levels) and the weave (px of the source) of the input and of each output, measured as
repair measures them (worker.stages.deflicker.flicker, worker.stages.weave.weave); seconds
per frame of each child, start-up included. A clean copy goes through ``auto`` and through
every part off: the difference is what ``auto`` costs a clean film. Last, each part's own
speed per frame at 854×480, in this process. Files stay under bench/out/repair/CLIP/, the
results go to bench/out/repair.json; the exit status is 1 when one of our runs failed.

    .venv/bin/python -m bench.bench_repair            # ~5 min on 2 CPU cores
    .venv/bin/python -m bench.bench_repair --quick    # one clip, ~2 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from bench.bench_fidelity import (
    OUT,
    START,
    Clip,
    Result,
    Sample,
    decode,
    fmt,
    machine,
    ours,
    parse_size,
    prepare,
    run_ffmpeg,
    timing,
)
from bench.bench_interpolate import VIDEOS, psnr

GRAIN_SIGMA = 6.0
FLICKER_GAIN, FLICKER_OFFSET = 0.06, 3.0
WEAVE_PX = 2
LANCZOS = "scale={w}:{h}:flags=lanczos"
# A skilled user's FFmpeg chains per damage (then Lanczos ×2); the best one is the figure.
NLMEANS = "nlmeans=s=6:p=7:r=15"
HQDN3D = "hqdn3d=6:4.5:9:6.75"
DEFLICKER = "deflicker=size=7:mode=am"
DESHAKE = "deshake=rx=16:ry=16:edge=clamp"
PEERS = {
    "grain": [HQDN3D, NLMEANS],
    "flicker": [DEFLICKER, "deflicker=size=7:mode=median"],
    "dust": ["tmedian=radius=1", "null"],
    "weave": [DESHAKE, "deshake=rx=16:ry=16:edge=clamp:search=exhaustive"],
    "interlace": ["bwdif=mode=send_frame:parity=tff:deint=all", "yadif=mode=send_frame:parity=tff"],
    "all": [
        f"{DEFLICKER},{NLMEANS},tmedian=radius=1,{DESHAKE}",
        f"{DEFLICKER},{NLMEANS},{DESHAKE}",
        f"{DEFLICKER},{HQDN3D},{DESHAKE}",
    ],
}
OFF = ["--degrain", "off", "--deflicker", "off", "--dust", "off", "--stabilise", "off"]
OFF += ["--deinterlace", "off"]
FULL = {"size": (256, 144), "frames": 36}
QUICK = {"size": (256, 144), "frames": 24}

Damage = Callable[[list[np.ndarray], np.random.Generator], list[np.ndarray]]


def grain(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Gaussian grain of σ GRAIN_SIGMA grey levels, new every frame."""
    return [f + rng.normal(0.0, GRAIN_SIGMA, f.shape) for f in frames]


def flicker(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Each frame's exposure off by a random gain and offset."""
    return [f * (1 + rng.normal(0, FLICKER_GAIN)) + rng.normal(0, FLICKER_OFFSET) for f in frames]


def dust(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Specks (dark or bright, 1-3 px radius) and now and then a scratch, one frame each."""
    out = []
    for i, f in enumerate(frames):
        f = f.copy()
        h, w = f.shape
        for _ in range(rng.poisson(2.0)):
            centre = (int(rng.integers(4, w - 4)), int(rng.integers(4, h - 4)))
            axes = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            value = 16.0 if rng.random() < 0.6 else 235.0
            cv2.ellipse(f, centre, axes, float(rng.integers(0, 180)), 0, 360, value, -1)
        if i % 8 == 5:
            x, top = int(rng.integers(4, w - 4)), int(rng.integers(0, h // 2))
            f[top : top + int(rng.integers(h // 3, h)), x] = 230.0
        out.append(f)
    return out


def weave(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Each frame moved by whole pixels, up to WEAVE_PX either way; edges repeated."""
    out = []
    for f in frames:
        dx, dy = (float(v) for v in rng.integers(-WEAVE_PX, WEAVE_PX + 1, 2))
        move = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        out.append(cv2.warpAffine(f, move, f.shape[::-1], borderMode=cv2.BORDER_REPLICATE))
    return out


def interlace(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Frames 2n and 2n + 1 woven into one: the top field from the first (shown first)."""
    woven = []
    for a, b in zip(frames[0::2], frames[1::2], strict=False):
        f = a.copy()
        f[1::2] = b[1::2]
        woven.append(f)
    return woven


def all_together(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Dust and grain on the film, the film weaving in the gate, the lamp flickering."""
    return flicker(weave(grain(dust(frames, rng), rng), rng), rng)


DAMAGES: dict[str, Damage] = {
    "grain": grain,
    "flicker": flicker,
    "dust": dust,
    "weave": weave,
    "interlace": interlace,
    "all": all_together,
}


def write_grey(path: Path, planes: list[np.ndarray], rate: Fraction) -> Path:
    """Luma planes (float, grey levels) as a grey 4:2:0 FFV1 file at ``rate``."""
    h, w = planes[0].shape
    chroma = np.full((h // 4, w), 128, np.uint8)  # each 4:2:0 chroma plane, as from_ndarray lays it
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = 1 / rate
        for i, plane in enumerate(planes):
            y = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma, chroma]), "yuv420p")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def measures(clip: Clip, scale: float) -> Result:
    """Flicker index (grey levels) and weave (px of the source) of a decoded clip."""
    from worker.stages.deflicker import flicker as flicker_index
    from worker.stages.weave import weave as weave_px

    planes = [
        torch.from_numpy(clip.y[k].astype(np.float32) / 255)[None, None] for k in sorted(clip.y)
    ]
    return {"flicker": flicker_index(planes), "weave": weave_px(planes) / scale}


def score(path: Path, sample: Sample, scale: float) -> Result:
    """Luma PSNR against the clean original at the frames present, and the two measures."""
    clip = decode(path, sample.rate)
    present = [k for k in sorted(clip.y) if k in sample.truth.y]
    if not present or clip.y[present[0]].shape != sample.truth.y[present[0]].shape:
        return {"error": "no output frame lines up with the clean original"}
    values = [psnr(clip.y[k], sample.truth.y[k]) for k in present]
    return {"psnr_y": float(np.mean(values)), "frames": len(present), **measures(clip, scale)}


def chose(log: Path) -> str:
    """What ``auto`` chose, from the ``repair:`` line ``lumiere process`` prints."""
    lines = [t for t in log.read_text(errors="replace").splitlines() if t.startswith("repair:")]
    return lines[-1].removeprefix("repair:").strip() if lines else ""


def run_ours(sample: Sample, src: Path, stem: str, extra: list[str], frames: int) -> Result:
    """Restore ``src`` ×2 with ``lumiere process`` and score it."""
    out = sample.work / f"ours_{stem}.mkv"
    cmd = [str(src), str(out), "--scale", "2", "--codec", "ffv1", *extra]
    mine = ours(cmd, sample.log(out.stem), frames)
    if "error" not in mine:
        mine.update(score(out, sample, 2.0))
        mine["auto"] = chose(sample.log(out.stem))
    return mine


def run_peers(sample: Sample, src: Path, part: str, frames: int) -> Result:
    """Every FFmpeg chain for ``part`` (then Lanczos ×2): the best one's figures, with all
    chains' PSNR."""
    best: Result = {}
    tried = {}
    for i, chain in enumerate(PEERS[part]):
        out = sample.work / f"ffmpeg_{part}_{i}.mkv"
        vf = f"{chain},{LANCZOS.format(w=sample.width, h=sample.height)}"
        run = run_ffmpeg(sample.log(out.stem), "-i", str(src), "-vf", vf, "-c:v", "ffv1", str(out))
        scored = {**timing(run, frames), **score(out, sample, 2.0), "chain": chain}
        tried[chain] = scored.get("psnr_y")
        if scored.get("psnr_y", -math.inf) > best.get("psnr_y", -math.inf):
            best = scored
    return {**best, "tried": tried}


def bench_clip(name: str, args: argparse.Namespace) -> Result:
    """Every damage on one clip, ours beside FFmpeg's best, and the clean pass-through."""
    sample = prepare(name, args.size, args.frames, START[name], "repair")
    rng = np.random.default_rng(sorted(VIDEOS).index(name))
    clean = [sample.truth.y[k].astype(np.float32) for k in sorted(sample.truth.y)]
    small = [
        cv2.resize(y, (sample.width // 2, sample.height // 2), interpolation=cv2.INTER_AREA)
        for y in clean
    ]
    n = len(small)
    print(f"  {name}: {sample.width}×{sample.height} from ×½, {n} frames", flush=True)
    lanczos = ["--upscaler", "lanczos"]
    src = write_grey(sample.work / "in_clean.mkv", small, sample.rate)
    auto, off = (
        run_ours(sample, src, "clean_auto", lanczos, n),
        run_ours(sample, src, "clean_off", [*lanczos, *OFF], n),
    )
    results: Result = {"clean": {"auto": auto, "off": off, "truth": measures(sample.truth, 1.0)}}
    for part, damage in DAMAGES.items():
        planes = damage([f.astype(np.float64) for f in small], rng)
        rate = sample.rate / 2 if part == "interlace" else sample.rate
        src = write_grey(sample.work / f"in_{part}.mkv", planes, rate)
        frames = len(planes)
        entry: Result = {
            "input": score_input(src, sample),
            "ffmpeg": run_peers(sample, src, part, frames),
        }
        entry["ours"] = run_ours(sample, src, part, lanczos, frames)
        if part == "all" and args.upscaler not in ("", "lanczos"):
            up = ["--upscaler", args.upscaler]
            entry["ours_upscaler"] = run_ours(sample, src, f"all_{args.upscaler}", up, frames)
            entry["ours_upscaler"]["upscaler"] = args.upscaler
        results[part] = entry
        print(
            f"    {part}: {entry['ours'].get('error', 'ok')} ({entry['ours'].get('auto', '')})",
            flush=True,
        )
    return results


def score_input(src: Path, sample: Sample) -> Result:
    """The damaged copy itself, Lanczos ×2 (what doing nothing scores), and its measures."""
    out = src.with_name(src.stem + "_lanczos.mkv")
    vf = LANCZOS.format(w=sample.width, h=sample.height)
    run_ffmpeg(sample.log(out.stem), "-i", str(src), "-vf", vf, "-c:v", "ffv1", str(out))
    scored = score(out, sample, 2.0)
    scored.update(measures(decode(src, sample.rate), 1.0))
    return scored


def speed(sample: Sample, frames: int) -> Result:
    """Seconds per frame of each part (and of the analysis) at 854×480, in this process."""
    from shared.config import get_settings
    from worker.models.loader import load_denoiser
    from worker.stages.repair import RepairPlan, analyse, repaired

    rng = np.random.default_rng(0)
    clean = [sample.truth.y[k].astype(np.float64) for k in sorted(sample.truth.y)][:frames]
    big = [cv2.resize(y, (854, 480), interpolation=cv2.INTER_LANCZOS4) for y in clean]
    planes = all_together(big, rng)
    grey = torch.from_numpy(np.clip(np.stack(planes), 0, 255).astype(np.float32) / 255)
    video = grey[:, None].repeat(1, 3, 1, 1)
    network = load_denoiser(get_settings().resolved_models_dir(), torch.device("cpu"))
    plans = {
        "deinterlace": RepairPlan(deinterlace="tff"),
        "deflicker": RepairPlan(deflicker=True),
        "degrain (FFDNet σ 6)": RepairPlan(degrain=GRAIN_SIGMA),
        "dust": RepairPlan(dust=True),
        "stabilise": RepairPlan(stabilise=True),
    }
    spent: Result = {}
    with torch.inference_mode():
        for name, plan in plans.items():
            started = time.perf_counter()
            for _ in repaired(video.split(1), plan, network):
                pass
            spent[name] = (time.perf_counter() - started) / len(planes)
        started = time.perf_counter()
        analyse([video])
        spent["analysis (per sampled frame)"] = (time.perf_counter() - started) / len(planes)
    return spent


def row(part: str, clip: str, a: Result, b: Result, i: Result, note: str) -> str:
    """One table row: input, ours and FFmpeg's PSNR, the measures, speed and a note."""
    diff = a["psnr_y"] - b["psnr_y"] if "psnr_y" in a and "psnr_y" in b else None
    flick = "/".join(fmt(x.get("flicker"), ".1f", 4) for x in (i, a, b))
    wv = "/".join(fmt(x.get("weave"), ".2f", 5) for x in (i, a, b))
    dbs = " ".join(fmt(x.get("psnr_y"), ".2f", 6) for x in (i, a, b))
    speeds = f"{fmt(a.get('s_per_frame'), '.3f', 7)} {fmt(b.get('s_per_frame'), '.3f', 6)}"
    measured = f"{flick:>14s} {wv:>17s} {speeds}"
    return f"{part:10s} {clip:13s} {dbs} {fmt(diff, '+.2f', 6)} {measured}  {note}"


def print_table(results: dict[str, Result]) -> list[Result]:
    """Print one row per clip and damage, then the means over clips; return the means."""
    head = (
        f"{'damage':10s} {'clip':13s} {'input':>6s} {'ours':>6s} {'ffmpeg':>6s} {'Δ dB':>6s} "
        f"{'flicker i/o/ff':>14s} {'weave px i/o/ff':>17s} {'s/frame':>7s} {'ff s/f':>6s}"
        "  auto chose | FFmpeg's best chain"
    )
    print("\n" + head + "\n" + "-" * len(head))
    means = []
    for part in DAMAGES:
        scores = []
        for clip, res in results.items():
            e = res[part]
            a, b, i = e["ours"], e["ffmpeg"], e["input"]
            scores.append([x.get("psnr_y", math.nan) for x in (i, a, b)])
            note = a.get("error") or f"{a.get('auto', '')} | {b.get('chain', '')}"
            print(row(part, clip, a, b, i, note))
            if "psnr_y" in e.get("ours_upscaler", {}):
                print(
                    row(part, f"  {e['ours_upscaler']['upscaler']}", e["ours_upscaler"], b, i, "")
                )
        i_v, a_v, b_v = np.nanmean(np.array(scores), axis=0)
        means.append({"damage": part, "input": i_v, "ours": a_v, "ffmpeg": b_v, "delta": a_v - b_v})
    print("-" * len(head))
    for m in means:
        dbs = " ".join(fmt(m[k], ".2f", 6) for k in ("input", "ours", "ffmpeg"))
        print(f"{m['damage']:10s} {'mean':13s} {dbs} {fmt(m['delta'], '+.2f', 6)}")
    return means


def print_clean(results: dict[str, Result]) -> None:
    """The clean copy through ``auto`` and with every part off."""
    print("\nclean copy ×2 (Lanczos): auto against every part off")
    for clip, res in results.items():
        auto, off = res["clean"]["auto"], res["clean"]["off"]
        loss = off.get("psnr_y", math.nan) - auto.get("psnr_y", math.nan)
        dbs = f"auto {fmt(auto.get('psnr_y'), '.3f', 7)}  off {fmt(off.get('psnr_y'), '.3f', 7)}"
        print(f"  {clip:13s} {dbs}  loss {fmt(loss, '.3f', 6)} dB  auto chose: {auto.get('auto')}")


def main() -> None:
    """Prepare, run every damage on every clip, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one clip")
    parser.add_argument("--clips", nargs="+", choices=list(VIDEOS))
    parser.add_argument("--size", type=parse_size, help="clean crop WxH (multiple of 8)")
    parser.add_argument("--frames", type=int, help="frames per clip")
    parser.add_argument("--upscaler", default="", help="also run all together with this upscaler")
    parser.add_argument(
        "--speed-frames", type=int, default=6, help="frames timed at 480p (0: none)"
    )
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    args.size, args.frames = args.size or preset["size"], args.frames or preset["frames"]
    args.clips = args.clips or (["carphone"] if args.quick else list(VIDEOS))
    started = time.perf_counter()
    info = machine()
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"bench_repair  {date}")
    print(
        f"machine: {info['host']}, {info['cpu']}, {info['cores']} cores; lumiere {info['commit']}"
    )
    results = {name: bench_clip(name, args) for name in args.clips}
    means = print_table(results)
    print_clean(results)
    spent: Result = {}
    if args.speed_frames:
        first = args.clips[0]
        spent = speed(
            prepare(first, args.size, args.frames, START[first], "repair"), args.speed_frames
        )
        print("\nspeed at 854×480, s/frame: " + ", ".join(f"{k} {v:.3f}" for k, v in spent.items()))
    total = time.perf_counter() - started
    print(f"\n{total:.0f} s in all; load average {os.getloadavg()[0]:.1f} ({info['cores']} cores)")
    report = {"date": date, "machine": info, "args": vars(args), "seconds": total}
    report |= {"clips": results, "means": means, "speed_480p": spent}
    (OUT / "repair.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {OUT / 'repair.json'}")
    ours_runs = [e.get("ours", {}) for r in results.values() for e in r.values()]
    ours_runs += [r["clean"][k] for r in results.values() for k in ("auto", "off")]
    if any("error" in run for run in ours_runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
