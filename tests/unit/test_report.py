"""The quality report: what the workers measured of a film, checked on planted events."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.clips import PLANTED_CUT, PLANTED_OCCLUSION, make_planted_clip
from tests.unit.test_process import run_cli
from worker.report import LISTED, LOW_CONFIDENCE, ChunkReport, flicker_index, merge

# Film repair would judge the synthetic shots; this is about what the report finds.
REPAIR_OFF = [f"--{part}" for part in ("degrain", "deflicker", "dust", "stabilise", "deinterlace")]
FRAME = 1 / 48  # an output frame


def report_of(tmp_path: Path, chunk_seconds: float) -> dict:
    clip = make_planted_clip(tmp_path / "planted.mp4")
    report = tmp_path / f"report-{chunk_seconds:g}.json"
    args = [clip, tmp_path / "out.mp4", "--fps", 48, "--scale", 1, "--quiet"]
    args += ["--chunk-seconds", chunk_seconds, "--report", report]
    args += [x for part in REPAIR_OFF for x in (part, "off")]
    code, text = run_cli(*args, "--interpolator", "motion")
    assert code == 0, text
    found = json.loads(report.read_text())
    for moment in found["low_confidence"]:  # each with its picture beside the report
        assert (tmp_path / moment["thumbnail"]).read_bytes()[:3] == b"\xff\xd8\xff"
    return found


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict]:
    folder = tmp_path_factory.mktemp("report")
    return {seconds: report_of(folder, seconds) for seconds in (1.0, 100.0)}


def test_the_report_names_the_planted_cut_repeats_and_occlusion(
    reports: dict[float, dict], tmp_path_factory: pytest.TempPathFactory
) -> None:
    report = reports[1.0]
    # The cut, once, at its time (the unique frames are re-timed on the 16 fps clock).
    assert len(report["cuts"]) == 1 and abs(report["cuts"][0] - PLANTED_CUT) < FRAME
    # Every third frame at 24 fps repeats the one before: 16 fps shown 2:1.
    planted = [
        i / 24 for i in range(48) if i and math.floor(i * 2 / 3) == math.floor((i - 1) * 2 / 3)
    ]
    assert report["cadence"]["patterns"] == ["2:1"]
    assert report["cadence"]["original_fps"] == [16.0]
    assert report["cadence"]["repeats_dropped"] == pytest.approx(planted)
    # The one moment listed is the occlusion; everywhere else the warped frames agree.
    (moment,) = report["low_confidence"]
    low, high = PLANTED_OCCLUSION
    assert low <= moment["time"] <= high and moment["confidence"] < LOW_CONFIDENCE
    elsewhere = [
        p["confidence"] for p in report["confidence"] if not low - FRAME < p["time"] < high + FRAME
    ]
    assert min(elsewhere) > 0.95
    assert report["stages"]["devices"] == ["cpu"]
    assert report["stages"]["interpolate"]["fps"] > 0
    # Shot by shot: the cut starts the second; the repeats and the unsure moment fall in
    # the shots they were in.
    first, second = report["shots"]
    assert first["start"] == 0 and abs(second["start"] - PLANTED_CUT) < FRAME
    assert first["end"] < second["start"]
    before = sum(t < second["start"] for t in planted)
    assert (first["repeats_dropped"], second["repeats_dropped"]) == (before, len(planted) - before)
    unsure = first if moment["time"] < second["start"] else second
    sure = second if unsure is first else first
    assert unsure["least_confidence"] < LOW_CONFIDENCE < sure["least_confidence"]


def test_the_report_does_not_depend_on_where_chunks_are_cut(reports: dict[float, dict]) -> None:
    chunked, whole = reports[1.0], reports[100.0]
    for key in ("cuts", "cadence", "confidence", "shots"):
        assert chunked[key] == whole[key], key
    # The same moments, their pictures in each run's own folder.
    for a, b in zip(chunked["low_confidence"], whole["low_confidence"], strict=True):
        assert (a["time"], a["confidence"]) == (b["time"], b["confidence"])
        assert Path(a["thumbnail"]).name == Path(b["thumbnail"]).name


def test_a_moment_is_listed_once_and_the_least_sure_are_kept() -> None:
    report = ChunkReport()
    picture = torch.zeros(1, 3, 8, 8)
    for time, sure in [(0.40, 0.5), (0.45, 0.3), (0.50, 0.6), (2.0, 0.7), (3.0, 0.99)]:
        report.made(Fraction(time), sure, picture)
    # One moment around 0.45 s (its least sure frame), one at 2 s; 0.99 is sure enough.
    assert [(m.time, m.confidence) for m in report.moments] == [(0.45, 0.3), (2.0, 0.7)]
    for k in range(LISTED + 3):
        report.made(Fraction(10 + k), 0.8 - k / 100, picture)
    assert len(report.moments) == LISTED
    assert max(m.confidence for m in report.moments) < 0.8 - 3 / 100 + 1e-9
    chunk = {**report.to_dict(), "frames_in": 1, "frames_out": 1, "seconds": {}, "device": "cpu"}
    merged = merge([{**chunk, "encoder": "libx264"}], {})
    times = [m["time"] for m in merged["low_confidence"]]
    assert times == sorted(times) and len(times) == LISTED


def test_flicker_reads_what_changes_from_frame_to_frame_not_a_fade() -> None:
    steady, fade = [0.5] * 24, [0.2 + 0.02 * i for i in range(24)]
    # Each frame's exposure new, σ 2 grey levels: what a worn shutter does.
    flicker = list(0.5 + np.random.default_rng(3).normal(0, 2 / 255, 96))
    assert flicker_index(steady) == 0.0
    assert flicker_index(fade) < 0.01
    assert 1.8 < flicker_index(flicker) < 2.6


def test_each_shot_reports_its_flicker_before_and_after_repair(tmp_path: Path) -> None:
    from tests.clips import write_frames

    rng = np.random.default_rng(2)
    texture = cv2.GaussianBlur(rng.random((72, 96)).astype(np.float32), (0, 0), 2)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 0.5 + 0.25
    gains = 1 + 0.05 * rng.standard_normal(36)  # a worn shutter: each frame's exposure new
    frames = np.stack([np.clip(texture * g * 255, 0, 255) for g in gains]).astype(np.uint8)
    clip = write_frames(tmp_path / "flicker.mkv", np.repeat(frames[..., None], 3, axis=3))
    for deflicker, name in (("on", "on.json"), ("off", "off.json")):
        args = [clip, tmp_path / "out.mkv", "--scale", 1, "--quiet", "--report", tmp_path / name]
        args += [x for part in REPAIR_OFF if part != "--deflicker" for x in (part, "off")]
        code, text = run_cli(*args, "--deflicker", deflicker)
        assert code == 0, text
    on, off = (json.loads((tmp_path / n).read_text())["shots"] for n in ("on.json", "off.json"))
    # Deflickered: measured as decoded and as upscaled, much less after. Without repair the
    # two are one measure. (Undeflickered, this flicker also reads as cuts: off has shots.)
    (shot,) = on
    assert shot["flicker_before"] > 4 and shot["flicker"] < shot["flicker_before"] / 3
    assert all(s["flicker_before"] == s["flicker"] for s in off)
