"""Old-film repair on tiny planted films: each part mends the damage planted for it and
leaves alone what is picture (a fade, a cut, a pan, a fast object); ``auto`` leaves a clean
film as it is; a chunked run repairs every frame as an unchunked one does."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.clips import decoded_frames, make_clip, write_frames
from worker.film_repair import (
    analysis_version,
    findings_name,
    kept_findings,
    plan_repair,
    read_findings,
)
from worker.media.probe import probe
from worker.pipeline import Options, process_file
from worker.stages import deflicker, dust, interlace, weave
from worker.stages.repair import Findings, RepairPlan, analyse, decide, one_thread

H, W = 72, 96
FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": 1, "codec": "ffv1"}
OFF = {"deflicker": "off", "dust": "off", "stabilise": "off", "deinterlace": "off"}


def scene(frames: int, pan: float = 0.0, seed: int = 0, level: float = 0.0) -> torch.Tensor:
    """A grey textured picture (T, 3, H, W) panning ``pan`` px a frame to the left."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((H + 40, W + 200)).astype(np.float32), (0, 0), 3)
    big = (big - big.min()) / (big.max() - big.min()) * 0.6 + 0.2 + level
    out = []
    for t in range(frames):
        move = np.float32([[1, 0, -(20 + pan * t)], [0, 1, -20]])
        out.append(cv2.warpAffine(big, move, (W, H), flags=cv2.INTER_CUBIC))
    return torch.from_numpy(np.stack(out))[:, None].repeat(1, 3, 1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def means(frames: torch.Tensor) -> np.ndarray:
    return frames.mean(dim=(1, 2, 3)).numpy() * 255


def test_deflicker_flattens_flicker_keeps_a_fade_and_resets_at_a_cut() -> None:
    rng = np.random.default_rng(1)
    shot = scene(24, pan=0.5)
    fade = torch.linspace(1.0, 0.55, 12).view(-1, 1, 1, 1)
    gains = torch.from_numpy(1 + 0.08 * rng.standard_normal(12)).float().view(-1, 1, 1, 1)
    clean = torch.cat([shot[:12], shot[12:] * fade, scene(12, seed=5, level=0.15)])
    damaged = torch.cat([clean[:12] * gains, clean[12:]])
    out = deflicker.deflicker(damaged)
    before, after = deflicker.flicker(damaged[:12].split(1)), deflicker.flicker(out[:12].split(1))
    assert before > 5 and after < before / 4
    assert psnr(out[:12], clean[:12]) > psnr(damaged[:12], clean[:12]) + 4
    # The fade is a trend, kept (clear of the flickering frames' window).
    assert np.abs(means(out[17:24]) - means(clean[17:24])).max() < 0.5
    # The cut ends the fade's window: the new shot keeps its own brightness.
    assert np.abs(means(out[24:]) - means(clean[24:])).max() < 0.5


def test_dust_is_replaced_and_a_fast_small_object_kept() -> None:
    clean = scene(10, pan=1.0)
    for t in range(10):  # a small bright object crossing 9 px a frame: faster than the flow
        clean[t, :, 40:44, 8 + 9 * t : 12 + 9 * t] = 1.0
    damaged = clean.clone()
    damaged[3, :, 20:24, 30:33] = 0.02  # a dark speck
    damaged[5, :, 60:62, 70:73] = 0.98  # a bright one
    damaged[7, :, 4:H, 50:52] = 0.9  # a scratch down the frame
    cleaned = list(dust.despeckled(damaged.split(1)))
    out = torch.cat([frame for frame, _ in cleaned])
    assert [n for _, n in cleaned] == [0, 0, 0, 1, 0, 1, 0, 1, 0, 0]
    # Counted only (as the analysis counts): the same defects, the frames left as they are.
    counted = list(dust.despeckled(damaged.split(1), mend=False))
    assert [n for _, n in counted] == [n for _, n in cleaned]
    assert torch.equal(torch.cat([frame for frame, _ in counted]), damaged)
    assert (out[3, :, 20:24, 30:33] - clean[3, :, 20:24, 30:33]).abs().max() < 0.05
    assert (out[5, :, 60:62, 70:73] - clean[5, :, 60:62, 70:73]).abs().max() < 0.05
    assert (out[7, :, 8:H, 50:52] - clean[7, :, 8:H, 50:52]).abs().max() < 0.05
    # Nothing else changed: the object is where it was, in every frame.
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[[3, 5, 7]] = False
    assert torch.equal(out[untouched], clean[untouched])


def test_weave_is_removed_and_a_steady_pan_kept() -> None:
    rng = np.random.default_rng(2)
    clean = scene(24, pan=1.0)
    shifts = rng.integers(-2, 3, size=(24, 2))
    woven = torch.cat([weave.shift(clean[i : i + 1], *map(float, shifts[i])) for i in range(24)])
    out = weave.stabilise(woven)
    assert weave.weave(woven.split(1)) > 1.0
    assert weave.weave(out.split(1)) < weave.weave(woven.split(1)) / 3
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # the weave's border strip
    assert psnr(out[inner], clean[inner]) > psnr(woven[inner], clean[inner]) + 4
    assert torch.equal(weave.stabilise(clean), clean)


def woven_fields(progressive: torch.Tensor, bottom_first: bool = False) -> torch.Tensor:
    """Pairs of progressive frames woven into interlaced ones: the first field from the
    first frame of each pair, the other field from the second."""
    first, second = (1, 0) if bottom_first else (0, 1)
    out = progressive[0::2].clone()
    out[:, :, second::2] = progressive[1::2, :, second::2]
    out[:, :, first::2] = progressive[0::2, :, first::2]
    return out


@pytest.mark.parametrize("bottom_first", [False, True], ids=["tff", "bff"])
def test_interlace_is_found_with_its_field_order_and_deinterlaced(bottom_first: bool) -> None:
    progressive = scene(24, pan=3.0)
    woven = woven_fields(progressive, bottom_first)
    order = "bff" if bottom_first else "tff"
    found = analyse([woven], parts=["deinterlace"])
    assert found.combed >= 0.9 and found.field_order == order
    assert analyse([progressive], parts=["deinterlace"]).combed == 0.0
    out = interlace.deinterlace(woven, order)
    truth = progressive[0::2]
    assert psnr(out, truth) > psnr(woven, truth) + 10


def test_a_clean_film_passes_auto_unchanged(tmp_path: Path) -> None:
    found = analyse([scene(12, pan=1.0), scene(12, pan=0.3, seed=3)])
    assert not decide(Options(), found).active, found
    clip = make_clip(tmp_path / "clean.mp4", seconds=1.0)
    assert not plan_repair(clip.path, probe(clip.path), Options()).active
    outputs = []
    for repair in ({}, OFF):
        out = tmp_path / f"out{len(outputs)}.mkv"
        process_file(clip.path, out, Options(**FAST, **repair, degrain="off" if repair else "auto"))
        outputs.append(decoded_frames(out))
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))


def old_film(frames: int) -> np.ndarray:
    """A grey film (T, H, W, 3) uint8 panning, with flicker, weave and a speck a frame."""
    rng = np.random.default_rng(4)
    clean = scene(frames, pan=0.7)
    gains = 1 + 0.06 * rng.standard_normal(frames)
    out = []
    for t in range(frames):
        frame = weave.shift(clean[t : t + 1] * gains[t], *map(float, rng.integers(-2, 3, 2)))
        y, x = rng.integers(8, H - 8), rng.integers(8, W - 8)
        frame[..., y : y + 3, x : x + 3] = 0.05
        out.append(frame[0])
    return (torch.stack(out).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def test_chunks_repair_every_frame_as_one_run_does(tmp_path: Path) -> None:
    """Every part that looks along time, and the grain put back, are the same frame for frame
    whether the film runs as one chunk or as three."""
    film = write_frames(tmp_path / "old.mkv", old_film(72))
    repair = {"deflicker": "on", "dust": "on", "stabilise": "on", "deinterlace": "on", "grain": 2}
    runs = {}
    for seconds in (1.0, 100.0):
        out = tmp_path / f"out{seconds:g}.mkv"
        result = process_file(film, out, Options(**FAST, **repair, chunk_seconds=seconds))
        runs[seconds] = (decoded_frames(out), len(result.chunks))
    (chunked, n), (whole, one) = runs[1.0], runs[100.0]
    assert n >= 3 and one == 1
    assert len(chunked) == len(whole) == 72
    assert all(np.array_equal(a, b) for a, b in zip(chunked, whole, strict=True))
    untouched = decoded_frames(film)
    assert sum(not np.array_equal(a, b) for a, b in zip(whole, untouched, strict=True)) > 65


def test_a_plan_travels_as_json() -> None:
    plan = decide(Options(dust="on", deinterlace="on"), analyse([scene(6)]))
    assert RepairPlan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()
    assert plan.dust and plan.deinterlace == "tff" and not plan.deflicker
    assert plan.context == 1 + 1


def test_findings_are_kept_exactly_and_read_only_for_their_film() -> None:
    found = analyse([scene(12, pan=1.0), scene(12, pan=0.3, seed=3)], fps=24.0)
    data = kept_findings(found, "ab12")
    assert read_findings(data, "ab12") == found  # exactly: the same plan follows
    assert decide(Options(), read_findings(data, "ab12")) == decide(Options(), found)
    for other in (b"", b'{"found": ', b"[]", json.dumps({**json.loads(data), "analysis": "0"})):
        with pytest.raises(ValueError):
            read_findings(other if isinstance(other, bytes) else other.encode(), "ab12")
    with pytest.raises(ValueError, match="other bytes"):
        read_findings(data, "cd34")
    fields = asdict(found)
    for wrong in ({**fields, "noise": "1"}, {**fields, "extra": 1}, {"frames": 3}, None):
        with pytest.raises(ValueError):
            Findings.from_dict(wrong)
    # The names say what was measured, and by which code.
    assert findings_name(frozenset({"dust", "deflicker"})) != findings_name(frozenset({"dust"}))
    assert analysis_version() in findings_name(frozenset({"dust"}))


def test_the_analysis_runs_on_one_thread_of_its_own() -> None:
    threads, seen = torch.get_num_threads(), []
    ready, asked, told = threading.Event(), threading.Event(), threading.Event()

    def running() -> None:  # a thread already using torch keeps its threads meanwhile
        seen.append(torch.get_num_threads())
        ready.set()
        asked.wait(10)
        seen.append(torch.get_num_threads())
        told.set()

    other = threading.Thread(target=running)
    other.start()
    ready.wait(10)
    with one_thread():
        seen.append(torch.get_num_threads())
        asked.set()
        told.wait(10)
    other.join()
    assert seen == [threads, 1, threads] and torch.get_num_threads() == threads
