"""Encoding the result: codecs, containers, pixel formats, timestamps and colour tags."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from shared.errors import InvalidInput
from shared.options import parse_fps
from tests.clips import decoded_pts, make_clip, video_end
from worker.media.encode import container_for, pixel_format
from worker.media.probe import probe
from worker.pipeline import Options, process_file
from worker.retime import output_count

CASES = [
    ("h264", "mp4", "60", 8),
    ("h264", "mkv", "59.94", 8),
    ("h264", "mov", "30000/1001", 8),
    ("h265", "mp4", "50", 10),
    ("h265", "mkv", None, 8),
    ("ffv1", "mkv", "48", 10),
    ("prores", "mov", "25", 8),
    ("prores", "mkv", None, 10),
]

# The classical stages: these tests are about the media plumbing, not the networks.
FAST = {"upscaler": "lanczos", "interpolator": "blend"}


@pytest.mark.parametrize(("codec", "container", "fps", "depth"), CASES)
def test_output_codec_format_and_timestamps(
    tmp_path: Path, codec: str, container: str, fps: str | None, depth: int
) -> None:
    source = make_clip(
        tmp_path / "in.mp4",
        codec="libx264",
        bit_depth=depth,
        width=64,
        height=48,
        seconds=0.5,
        color=(1, 1, 1),
        sar=Fraction(16, 15),
    )
    out = tmp_path / f"out.{container}"
    options = Options(**FAST, scale=2, fps=fps, codec=codec, preset="ultrafast", chunk_seconds=1)
    process_file(source.path, out, options)
    info = probe(out)
    assert info.codec == {"h264": "h264", "h265": "hevc", "ffv1": "ffv1", "prores": "prores"}[codec]
    assert info.pix_fmt == pixel_format(codec, "yuv420p10le" if depth > 8 else "yuv420p")
    assert (info.width, info.height) == (128, 96)
    if container != "mkv" or codec in ("h264", "h265"):
        # Matroska's muxer reads the aspect only from a stream field PyAV cannot set; H.26x
        # carry it in the bitstream. FFV1/ProRes in MKV lose it (a known limit, see README).
        assert info.sar == Fraction(16, 15)
    assert (info.color.primaries, info.color.transfer, info.color.matrix) == (1, 1, 1)
    assert info.color.range == 1
    pts, tb = decoded_pts(out)
    if fps is None:
        # Source timing kept: one output frame per source frame, at its time.
        expected = [p * source.time_base for p in source.pts]
    else:
        rate = parse_fps(fps)
        expected = [k / rate for k in range(output_count(source.duration, rate))]
        # Matroska keeps no rate, only millisecond times: its reader estimates the rate.
        assert abs(info.fps - rate) < (Fraction(1, 100) if container == "mkv" else 1e-9)
    assert len(pts) == len(expected)
    # Matroska stores milliseconds: allow half of its tick, exact elsewhere.
    slack = Fraction(1, 2000) if container == "mkv" else Fraction(0)
    assert all(abs(p * tb - e) <= slack for p, e in zip(pts, expected, strict=True))
    step = 1 / parse_fps(fps) if fps else Fraction(1, 24)
    assert abs(video_end(out) - expected[-1] - step) <= slack + Fraction(1, 1000)


def test_h265_in_mp4_is_tagged_for_apple_players(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", seconds=0.3)
    out = tmp_path / "out.mp4"
    process_file(source.path, out, Options(**FAST, codec="h265", preset="ultrafast"))
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"


def test_crf_changes_the_size(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", seconds=0.5, width=96, height=64)
    sizes = []
    for crf in (12, 40):
        out = tmp_path / f"crf{crf}.mp4"
        process_file(source.path, out, Options(**FAST, crf=crf, preset="ultrafast", audio="none"))
        sizes.append(out.stat().st_size)
    assert sizes[0] > sizes[1] * 1.5


@pytest.mark.parametrize(
    ("name", "container", "codec", "message"),
    [
        ("a.mp4", None, "ffv1", "ffv1 does not go in mp4"),
        ("a.mp4", None, "prores", "prores does not go in mp4"),
        ("a.webm", None, "h264", "cannot tell the container"),
        ("a.mp4", "avi", "h264", "unknown container"),
        ("a.mp4", None, "vp9", "unknown codec"),
    ],
)
def test_impossible_outputs_are_refused(
    name: str, container: str | None, codec: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        container_for(Path(name), container, codec)


@pytest.mark.parametrize(
    ("preset", "depth", "audio", "name", "expect"),
    [
        # auto keeps a deep film deep (10-bit H.265), and an 8-bit one plays everywhere.
        # (4:2:2 becomes 4:2:0 there, reported with the job; PCM that MP4 can't hold, FLAC.)
        ("auto", 10, "pcm_s24le", "out.mp4", ("hevc", "yuv420p10le", "flac")),
        ("auto", 8, "aac", "out.mp4", ("h264", "yuv420p", "aac")),
        # web: 8-bit 4:2:0 H.264 and AAC, whatever came in.
        ("web", 10, "pcm_s24le", "out.mp4", ("h264", "yuv420p", "aac")),
        # archive: lossless picture at the source's depth and chroma, lossless sound.
        ("archive", 10, "pcm_s24le", "out.mkv", ("ffv1", "yuv422p10le", "pcm_s24le")),
    ],
)
def test_output_presets_keep_what_they_say(
    tmp_path: Path, preset: str, depth: int, audio: str, name: str, expect: tuple[str, ...]
) -> None:
    codec = "prores_ks" if depth > 8 else "libx264"
    source = make_clip(tmp_path / "in.mov", codec=codec, bit_depth=depth, seconds=0.5, audio=audio)
    out = tmp_path / name
    options = Options(**FAST, scale=1, output_preset=preset)  # type: ignore[arg-type]
    process_file(source.path, out, options.model_copy(update={"preset": "ultrafast"}))
    info = probe(out)
    assert (info.codec, info.pix_fmt, info.audio[0].codec) == expect
    assert info.bit_depth == (8 if preset == "web" else depth)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_preset": "web", "codec": "ffv1"}, "output_preset web writes h264 or h265"),
        ({"output_preset": "archive", "codec": "h264"}, "writes ffv1 or prores"),
        ({"output_preset": "archive", "crf": 20}, "crf applies to h264 and h265 only"),
    ],
)
def test_a_codec_the_preset_does_not_write_is_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Options(**options)  # type: ignore[arg-type]
