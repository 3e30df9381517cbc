"""Previews: a stretch of a film restored with the job's settings, frame for frame as the
whole job restores it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from shared.errors import InvalidInput
from tests.clips import audio_spans, decoded_frames, make_clip, pattern, video_end
from worker.pipeline import Options, plan_file, process_file
from worker.retime import first_output_time

FAST = {"upscaler": "lanczos", "codec": "ffv1", "scale": 1}


@pytest.mark.parametrize("interpolator", ["motion", "blend"])
def test_a_preview_has_the_full_jobs_frames_at_its_times(tmp_path: Path, interpolator: str) -> None:
    clip = make_clip(tmp_path / "film.mkv", seconds=4.0, fps=24, audio="flac")
    full, preview = tmp_path / "full.mkv", tmp_path / "preview.mkv"
    options = Options(**FAST, interpolator=interpolator, fps="60", chunk_seconds=1)
    process_file(clip.path, full, options)
    start, seconds = Fraction(3, 2), 2
    cut = options.model_copy(update={"preview_start": "1.5", "preview_seconds": seconds})
    process_file(clip.path, preview, cut)
    whole, part = decoded_frames(full), decoded_frames(preview)
    first = round(first_output_time(start, Fraction(60)) * 60)
    # 2 s at 60 fps, and the same pixels as the whole job's frames there (FFV1: lossless).
    assert len(part) == seconds * 60
    assert all(np.array_equal(a, b) for a, b in zip(part, whole[first:], strict=False))
    # The preview starts at zero, its sound as long as its picture.
    ((sound_start, sound_end),) = audio_spans(preview)
    assert abs(sound_start) < Fraction(1, 60) and abs(sound_end - video_end(preview)) < Fraction(
        1, 60
    )


def test_auto_previews_a_moment_with_motion(tmp_path: Path) -> None:
    path = tmp_path / "still-then-moving.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(72):
            t = max(i / 24, 1.5)  # still for 1.5 s, then the square moves
            frame = av.VideoFrame.from_ndarray(pattern(i if t > 1.5 else 0, t, 64, 48), "rgb24")
            frame.pts = i
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    (plan,) = plan_file(path, 10, preview=("auto", 1.0))
    assert plan.start >= Fraction(3, 2) - Fraction(1, 24)
    assert plan.frames == 24 and plan.more_after == (plan.stop < 3)


def test_a_preview_past_the_end_is_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "film.mp4", seconds=1.0)
    with pytest.raises(InvalidInput, match="past the film's end"):
        plan_file(clip.path, 10, preview=("5", 1.0))
