"""``lumiere process``: the offline command, its errors, progress and bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from cli.process import process
from tests.clips import (
    audio_spans,
    decoded_pts,
    make_audio,
    make_clip,
    make_empty_video,
    make_odd_stream,
    sound_times,
    video_end,
)
from tests.models_fixture import real_models_dir
from worker.media.probe import ColorTags, MediaInfo, probe
from worker.pipeline import Options, process_file, resolve_target

# The classical stages: these tests are about the media plumbing, not the networks.
FAST = {"upscaler": "lanczos", "interpolator": "blend"}


def write_text(path: Path, text: str) -> Path:
    """A text file dressed as a film."""
    path.write_text(text)
    return path


def run_cli(*args: object, classical: bool = True) -> tuple[int, str]:
    """Invoke the command as a user would; returns (exit code, everything printed).

    ``classical`` picks the Lanczos/blend baselines unless the test names its own stages:
    these tests are about the plumbing; test_process_defaults_to_the_ai_stages runs the
    networks."""
    argv = [str(a) for a in args]
    if classical and "--upscaler" not in argv:
        argv += ["--upscaler", "lanczos"]
    if classical and "--interpolator" not in argv:
        argv += ["--interpolator", "blend"]
    result = CliRunner().invoke(process, argv)
    return result.exit_code, result.output


def test_process_defaults_to_the_ai_stages(tmp_path: Path) -> None:
    real_models_dir()
    clip = make_clip(tmp_path / "film.mp4", seconds=0.5, width=48, height=32, fps=12)
    out = tmp_path / "restored.mp4"
    code, text = run_cli(clip.path, out, "--scale", "2", "--fps", "24", classical=False)
    assert code == 0, text
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (96, 64)
        assert sum(1 for _ in container.decode(video)) == 12
    help_text = " ".join(CliRunner().invoke(process, ["--help"]).output.split())
    assert "[default: faithful]" in help_text and "[default: motion]" in help_text


def test_process_upscales_interpolates_and_keeps_sound(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "film.mov", seconds=1.5, width=80, height=60, audio="aac")
    out = tmp_path / "restored.mkv"
    code, text = run_cli(
        clip.path,
        out,
        "--scale",
        2,
        "--fps",
        "30000/1001",
        "--upscaler",
        "lanczos",
        "--interpolator",
        "blend",
        "--codec",
        "h264",
        "--crf",
        23,
        "--preset",
        "ultrafast",
        "--chunk-seconds",
        1,
    )
    assert code == 0, text
    assert "frames" in text and "Traceback" not in text
    info = probe(out)
    assert (info.codec, info.width, info.height, info.pix_fmt) == ("h264", 160, 120, "yuv420p")
    pts, _ = decoded_pts(out)
    assert len(pts) == 45  # ceil(1.5 s * 29.97)
    assert [a.codec for a in info.audio] == ["aac"]
    ((start, end),) = audio_spans(out)
    assert abs(start) < Fraction(1001, 30000)
    assert abs(end - video_end(out)) < Fraction(1001, 30000)


def test_width_and_height_and_an_added_soundtrack(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "silent.avi", codec="mjpeg", seconds=1.0)
    track = make_audio(tmp_path / "score.wav", seconds=2.0)
    out = tmp_path / "talkie.mp4"
    code, text = run_cli(
        clip.path,
        out,
        "--width",
        100,
        "--height",
        76,
        "--fps",
        50,
        "--audio",
        track,
        "--audio-offset",
        0.5,
        "--preset",
        "ultrafast",
        "--quiet",
    )
    assert code == 0, text
    info = probe(out)
    assert (info.width, info.height, info.fps) == (100, 76, 50)
    assert [a.codec for a in info.audio] == ["flac"]  # PCM does not go in MP4 as is: FLAC does
    # Half a second late, and padded / cut to the picture's one second.
    assert abs(sound_times(out)[0] - 0.5) < 0.005
    ((start, end),) = audio_spans(out)
    assert abs(start) < Fraction(1, 50) and abs(end - video_end(out)) < Fraction(1, 50)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_text(p, "just some text, honest"), "not a video file"),
        (lambda p: make_audio(p.with_suffix(".wav")), "no video stream"),
        (lambda p: make_empty_video(p.with_suffix(".avi")), "zero frames"),
        (
            lambda p: make_odd_stream(p.with_suffix(".mp4"), "evc", 64, 48),
            "unsupported video codec",
        ),
        (
            lambda p: make_odd_stream(p.with_suffix(".mkv"), "ffv1", 16000, 12000),
            "absurd picture size",
        ),
        (lambda p: p.with_name("missing.mp4"), "no such file"),
    ],
)
def test_bad_input_is_named_without_a_traceback(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    source = make(tmp_path / "bad.mp4")
    code, text = run_cli(source, tmp_path / "out.mp4", "--quiet")
    assert code != 0
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_truncated_files_are_named(tmp_path: Path, suffix: str) -> None:
    clip = make_clip(tmp_path / f"whole{suffix}", seconds=3.0)
    data = clip.path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    code, text = run_cli(cut, tmp_path / "out.mp4", "--quiet")
    assert code != 0 and "truncated" in text and "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", 2, "--width", 100], "either scale or width"),
        (["--fps", "fast"], "not a frame rate"),
        (["--upscaler", "nope"], "'nope' is not one of"),
        (["--codec", "ffv1"], "ffv1 does not go in mp4"),
        (["--audio-mode", "add"], "needs an audio file"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, args: list[object], message: str) -> None:
    clip = make_clip(tmp_path / "in.mp4", seconds=0.2)
    code, text = run_cli(clip.path, tmp_path / "out.mp4", "--quiet", *args)
    assert code != 0 and message in text and "Traceback" not in text


def test_progress_counts_up_and_can_cancel(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", seconds=2.5)
    seen: list[int] = []
    result = process_file(
        clip.path,
        tmp_path / "out.mp4",
        Options(**FAST, fps="30", preset="ultrafast", chunk_seconds=1),
        on_progress=seen.append,
    )
    assert seen == sorted(seen) and seen[-1] == result.frames_out == 75

    def stop(done: int) -> None:
        if done > 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_file(
            clip.path,
            tmp_path / "never.mp4",
            Options(**FAST, fps="30", preset="ultrafast", chunk_seconds=1),
            on_progress=stop,
        )
    # Nothing half-written is left behind: no output, no chunk folder, no partial file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


PEAK = textwrap.dedent(
    """
    import resource, sys
    from worker.pipeline import Options, process_file
    process_file(sys.argv[1], sys.argv[2], Options(upscaler="lanczos", interpolator="blend",
                 scale=2, fps="48", preset="ultrafast", chunk_seconds=2))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_peak_memory_does_not_grow_with_the_film(tmp_path: Path) -> None:
    peaks = []
    for seconds in (1.0, 6.0):
        clip = make_clip(tmp_path / f"{seconds:g}.mp4", seconds=seconds, width=240, height=180)
        done = subprocess.run(
            [sys.executable, "-c", PEAK, str(clip.path), str(tmp_path / f"o{seconds:g}.mp4")],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        peaks.append(int(done.stdout.split()[-1]) / 1024)  # MiB
    # 6 s holds 288 frames of 480x360 float RGB: 240 MiB if they were all kept at once.
    assert peaks[1] - peaks[0] < 40, peaks


def fake_info(width: int, height: int, **changes: object) -> MediaInfo:
    """A probe result for resolve_target, without a file."""
    info = MediaInfo(
        path="film.mp4",
        container="mp4",
        video_index=0,
        codec="h264",
        width=width,
        height=height,
        pix_fmt="yuv420p",
        bit_depth=8,
        sar=Fraction(1),
        rotation=0,
        fps=Fraction(24),
        time_base=Fraction(1, 12288),
        start=Fraction(0),
        duration=Fraction(10),
        frame_count=240,
        interlaced=False,
        field_order="progressive",
        color=ColorTags(),
    )
    return replace(info, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("info", "options", "size", "sar"),
    [
        (fake_info(65, 49), Options(**FAST, scale=2), (130, 98), Fraction(1)),
        (fake_info(65, 49), Options(**FAST, scale=1), (64, 48), Fraction(65 * 48, 49 * 64)),
        (fake_info(65, 49), Options(**FAST, scale=1, codec="ffv1"), (65, 49), Fraction(1)),
        (
            fake_info(720, 480, sar=Fraction(8, 9)),
            Options(**FAST, scale=2),
            (1440, 960),
            Fraction(8, 9),
        ),
        # A non-uniform size keeps the shape the viewer sees by changing the pixel aspect.
        (fake_info(640, 480), Options(**FAST, width=1280, height=720), (1280, 720), Fraction(3, 4)),
        (fake_info(640, 480), Options(**FAST, width=1000), (1000, 750), Fraction(1)),
        (fake_info(640, 480, rotation=90), Options(**FAST, height=1280), (960, 1280), Fraction(1)),
    ],
)
def test_output_size_and_aspect(
    info: MediaInfo, options: Options, size: tuple[int, int], sar: Fraction
) -> None:
    target = resolve_target(info, options)
    assert (target.width, target.height) == size
    assert target.sar == sar.limit_denominator(1000)
    # Unset colour is written as the matrix the picture was converted with (BT.601 for SD).
    assert target.color.matrix == 6 and target.color.range == 1


@pytest.mark.parametrize("fit", ["pad", "crop", "sar"])
def test_another_shape_is_padded_cropped_or_kept_in_the_aspect(tmp_path: Path, fit: str) -> None:
    # 4:3 source into a 16:9 frame, e.g. 720x540 film to 3840x2160.
    clip = make_clip(tmp_path / "film.mp4", seconds=0.3, width=64, height=48)
    out = tmp_path / f"{fit}.mp4"  # H.264 in MP4 carries the sample aspect ratio
    code, text = run_cli(clip.path, out, "--width", "128", "--height", "72", "--fit", fit)
    assert code == 0, text
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        frame = next(container.decode(video)).to_ndarray(format="rgb24")
        sar = video.sample_aspect_ratio
    assert frame.shape[:2] == (72, 128)
    side_bars = frame[:, :8].max()  # the pattern is never black; a pad bar is
    if fit == "pad":
        # 96x72 of picture centred: 16-px black bars left and right, square pixels.
        assert side_bars <= 20 and frame[:, 20:108].max() > 100
        assert sar in (None, Fraction(1))
    elif fit == "crop":
        assert side_bars > 100 and sar in (None, Fraction(1))
    else:
        # Stretched to fill, the picture's 4:3 shape kept in the sample aspect ratio.
        assert side_bars > 100 and sar == Fraction(3, 4)
