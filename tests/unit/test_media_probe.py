"""Probing real-world shapes of film: codecs, containers, sizes, depths, rates, metadata."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.clips import Clip, make_clip
from worker.media.probe import probe, reductions, scan_frames
from worker.pipeline import Options, process_file

CASES: dict[str, dict[str, Any]] = {
    "h264.mp4": dict(codec="libx264", audio="aac"),
    "hevc10.mkv": dict(codec="libx265", bit_depth=10, fps=Fraction(30000, 1001), audio="flac"),
    "mpeg4.avi": dict(codec="mpeg4", fps=25),
    "prores.mov": dict(codec="prores_ks", bit_depth=10, audio="pcm_s16le", audio_streams=2),
    "mjpeg.avi": dict(codec="mjpeg", width=80, height=60),
    "ffv1odd.mkv": dict(codec="ffv1", bit_depth=10, width=65, height=49),
}
EXPECT = {
    "h264.mp4": ("h264", 8, ["aac"]),
    "hevc10.mkv": ("hevc", 10, ["flac"]),
    "mpeg4.avi": ("mpeg4", 8, []),
    "prores.mov": ("prores", 10, ["pcm_s16le", "pcm_s16le"]),
    "mjpeg.avi": ("mjpeg", 8, []),
    "ffv1odd.mkv": ("ffv1", 10, []),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    folder = tmp_path_factory.mktemp("probe")
    return {name: make_clip(folder / name, **kw) for name, kw in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_probe_describes_codec_size_depth_rate_and_audio(clips: dict[str, Clip], name: str) -> None:
    clip = clips[name]
    info = probe(clip.path)
    codec, depth, audio = EXPECT[name]
    assert info.codec == codec
    assert (info.width, info.height) == (clip.width, clip.height)
    assert info.bit_depth == depth
    assert info.fps == Fraction(CASES[name].get("fps", 24))
    assert abs(info.duration - clip.duration) <= 1 / info.fps
    assert abs(info.frame_count - clip.frames) <= 1
    assert [a.codec for a in info.audio] == audio
    assert all(a.channels == 2 and a.sample_rate == 48000 for a in info.audio)
    assert not info.interlaced and info.rotation == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_scan_finds_every_frame_time(clips: dict[str, Clip], name: str) -> None:
    clip = clips[name]
    index = scan_frames(clip.path)
    times = [p * index.time_base for p in index.pts]
    assert len(times) == clip.frames
    written = [p * clip.time_base for p in clip.pts]
    # Matroska keeps milliseconds: compare within half a tick of its clock.
    assert all(
        abs(a - b) <= index.time_base / 2 + Fraction(1, 2000)
        for a, b in zip(times, written, strict=True)
    )
    assert abs(index.end_pts * index.time_base - clip.duration) <= Fraction(1, 1000)


def test_variable_frame_rate_times_are_read_not_counted(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "vfr.mp4", vfr=True, seconds=1.0, time_base=Fraction(1, 90000))
    index = scan_frames(clip.path)
    assert list(index.pts) == clip.pts
    gaps = {b - a for a, b in zip(clip.pts, clip.pts[1:], strict=False)}
    assert len(gaps) == 2  # really variable


def test_rotation_aspect_colour_and_interlacing_are_reported(tmp_path: Path) -> None:
    clip = make_clip(
        tmp_path / "meta.mp4",
        width=64,
        height=48,
        rotation=90,
        sar=Fraction(4, 3),
        color=(5, 6, 5),
        interlaced=True,
    )
    info = probe(clip.path)
    assert info.rotation == 90
    assert info.upright_size == (48, 64)
    assert info.sar == Fraction(4, 3)
    assert (info.color.primaries, info.color.transfer, info.color.matrix) == (5, 6, 5)
    assert info.color.range == 1
    assert info.interlaced and info.field_order in ("tt", "bb")


def test_a_result_says_what_it_keeps_less_of(tmp_path: Path) -> None:
    source = make_clip(
        tmp_path / "master.mov", codec="prores_ks", bit_depth=10, seconds=0.5, audio="pcm_s24le"
    ).path
    fast = {"scale": 1, "upscaler": "lanczos", "interpolator": "blend", "preset": "ultrafast"}
    web = tmp_path / "web.mp4"
    process_file(source, web, Options(**fast, codec="h264"))
    said = reductions(probe(source), probe(web))
    assert [s.split(" (")[0] for s in said] == ["bit depth 10 → 8", "chroma 4:2:2 → 4:2:0"]
    archive = tmp_path / "archive.mkv"
    process_file(source, archive, Options(**fast, codec="ffv1"))
    assert reductions(probe(source), probe(archive)) == []
