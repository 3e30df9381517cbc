"""Chunk seams, joining without re-encoding, and audio kept in sync."""

from __future__ import annotations

import json
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.clips import (
    audio_spans,
    decoded_frames,
    decoded_pts,
    make_audio,
    make_clip,
    sound_times,
    video_end,
)
from worker.media.probe import probe
from worker.pipeline import Options, join_chunks, plan_file, process_chunk, process_file
from worker.plan import ChunkPlan

# The classical stages: these tests are about the media plumbing, not the networks.
FAST = {"upscaler": "lanczos", "interpolator": "blend"}


def packets(path: Path, kind: str = "video", index: int = 0) -> list[bytes]:
    """Payloads of one stream's packets, in file order."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[index]
        return [bytes(p) for p in container.demux(stream) if p.size]


@pytest.mark.parametrize(
    ("fps", "vfr"), [("60", False), ("30000/1001", True), (None, True), ("18", False)]
)
def test_chunked_output_equals_the_unchunked_run(
    tmp_path: Path, fps: str | None, vfr: bool
) -> None:
    clip = make_clip(
        tmp_path / "in.mp4",
        seconds=3.2,
        vfr=vfr,
        audio="aac",
        time_base=Fraction(1, 90000) if vfr else None,
    )
    runs = {}
    for seconds in (1.0, 100.0):
        out = tmp_path / f"out{seconds:g}.mkv"
        # FFV1 is lossless: any missing, doubled or misplaced frame shows in the pixels.
        result = process_file(
            clip.path, out, Options(**FAST, fps=fps, codec="ffv1", chunk_seconds=seconds)
        )
        runs[seconds] = (out, len(result.chunks))
    (chunked, n), (whole, one) = runs[1.0], runs[100.0]
    assert n >= 3 and one == 1
    assert decoded_pts(chunked) == decoded_pts(whole)
    a, b = decoded_frames(chunked), decoded_frames(whole)
    assert len(a) == len(b)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert video_end(chunked) == video_end(whole)


def test_motion_over_four_frames_is_seamless_across_chunks(tmp_path: Path) -> None:
    """Each chunk decodes one frame beyond either edge, so the pairs at a seam see the same
    neighbours as in one long run: the pixels are identical."""
    clip = make_clip(tmp_path / "in.mp4", seconds=3.2, width=96, height=64)
    outputs = []
    for seconds in (1.0, 100.0):
        out = tmp_path / f"motion{seconds:g}.mkv"
        options = Options(
            upscaler="lanczos", interpolator="motion", fps="60", codec="ffv1", chunk_seconds=seconds
        )
        process_file(clip.path, out, options)
        outputs.append(decoded_frames(out))
    chunked, whole = outputs
    assert len(chunked) == len(whole) == 193  # 77 frames at 24 fps, shown at 60
    assert all(np.array_equal(x, y) for x, y in zip(chunked, whole, strict=True))


def test_tasks_can_run_chunks_in_any_order_and_join_by_copy(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", seconds=3.0, audio="aac")
    options = Options(**FAST, scale=2, fps="50", preset="ultrafast", chunk_seconds=1.0)
    # What a task receives: plans and options as JSON.
    plans = [
        ChunkPlan.from_dict(json.loads(json.dumps(asdict(p)))) for p in plan_file(clip.path, 1.0)
    ]
    options = Options.from_dict(json.loads(json.dumps(options.to_dict())))
    files = [tmp_path / f"{p.index:05d}.mp4" for p in plans]
    seen: list[int] = []
    for plan, path in reversed(list(zip(plans, files, strict=True))):
        result = process_chunk(clip.path, plan, options, path, on_progress=seen.append)
        assert result.frames_out == seen[-1] and path.exists()
    out = join_chunks(clip.path, plans, files, tmp_path / "out.mp4", options)
    # The joined stream is the chunks' packets, byte for byte: nothing was re-encoded.
    assert packets(out) == [b for f in files for b in packets(f)]
    pts, tb = decoded_pts(out)
    assert [p * tb for p in pts] == [Fraction(k, 50) for k in range(150)]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_source_audio_is_copied_when_the_container_takes_it(tmp_path: Path, container: str) -> None:
    clip = make_clip(
        tmp_path / "in.mp4", seconds=2.0, audio="aac", audio_streams=2, languages=("fra", "eng")
    )
    out = tmp_path / f"out.{container}"
    process_file(clip.path, out, Options(**FAST, fps="25", preset="ultrafast", chunk_seconds=1))
    # Every track is kept, in order, with its language.
    assert [(a.codec, a.language) for a in probe(out).audio] == [("aac", "fra"), ("aac", "eng")]
    for k in range(2):
        with av.open(str(clip.path)) as source:
            stream = source.streams.audio[k]
            timed = [(p.pts, bytes(p)) for p in source.demux(stream) if p.size]
        # MP4 keeps the encoder's priming packet (before zero); Matroska cannot, so drops it.
        expected = [b for pts, b in timed if container == "mp4" or (pts or 0) >= 0]
        assert packets(out, "audio", k) == expected
    assert decoded_pts(out)[0][0] == 0


@pytest.mark.parametrize(
    ("source", "audio", "output", "codec", "expect"),
    [
        ("in.mov", "pcm_s16le", "out.mp4", "h264", "flac"),
        ("in.mkv", "flac", "out.mov", "prores", "alac"),
        ("in.mkv", "flac", "out.mp4", "h264", "flac"),
        ("in.avi", "mp3", "out.mov", "h264", "mp3"),
        ("in.mkv", "libopus", "out.mov", "prores", "aac"),
    ],
)
def test_audio_stays_in_sync_to_the_last_frame(
    tmp_path: Path, source: str, audio: str, output: str, codec: str, expect: str
) -> None:
    vcodec = "mpeg4" if source.endswith(".avi") else "libx264"
    clip = make_clip(tmp_path / source, codec=vcodec, seconds=2.3, audio=audio)
    out = tmp_path / output
    process_file(
        clip.path,
        out,
        Options(**FAST, fps="59.94", codec=codec, preset="ultrafast", chunk_seconds=1),
    )
    info = probe(out)
    assert [a.codec for a in info.audio] == [expect]
    frame = 1 / info.fps
    ((start, end),) = audio_spans(out)
    assert abs(start) < frame
    assert abs(end - video_end(out)) < frame


def test_a_soundtrack_replaces_or_joins_the_sound(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "silent.mp4", seconds=2.0)
    long_track = make_audio(tmp_path / "score.wav", seconds=3.5, sample_rate=44100)
    out = tmp_path / "sound.mp4"
    process_file(
        clip.path,
        out,
        Options(**FAST, audio="replace", audio_file=str(long_track), preset="ultrafast"),
    )
    info = probe(out)
    # PCM that MP4 cannot carry stays lossless: FLAC, at its own rate.
    assert [(a.codec, a.sample_rate) for a in info.audio] == [("flac", 44100)]
    ((start, end),) = audio_spans(out)
    # A longer soundtrack is cut where the picture ends.
    assert abs(start) < Fraction(1, 24) and abs(end - video_end(out)) < Fraction(1, 24)

    voiced = make_clip(tmp_path / "voiced.mkv", seconds=2.0, audio="flac")
    short = make_audio(tmp_path / "short.flac", codec="flac", seconds=1.0)
    out = tmp_path / "both.mkv"
    process_file(
        voiced.path, out, Options(**FAST, audio="add", audio_file=str(short), preset="ultrafast")
    )
    assert [a.codec for a in probe(out).audio] == ["flac", "flac"]
    spans = audio_spans(out)
    assert abs(spans[0][1] - 2) < Fraction(1, 24)
    # A shorter soundtrack is padded with silence to the picture's length, not stretched.
    assert abs(spans[1][1] - 2) < Fraction(1, 24)
    first, last = sound_times(out, 1)
    assert first < 0.01 and abs(last - 1) < 0.01


def _samples(path: Path) -> np.ndarray:
    """Every audio sample of the first track, as signed 32-bit integers (channels, n)."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s32p")
        decoded = [
            f.to_ndarray() for frame in container.decode(audio=0) for f in resampler.resample(frame)
        ]
    return np.concatenate(decoded, axis=1)


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_s24le"])
def test_lossless_sound_that_mp4_cannot_carry_comes_back_sample_exact(
    tmp_path: Path, codec: str
) -> None:
    clip = make_clip(tmp_path / "in.mov", seconds=2.0, audio=codec)
    out = tmp_path / "out.mp4"
    process_file(clip.path, out, Options(**FAST, scale=1, preset="ultrafast"))
    assert [a.codec for a in probe(out).audio] == ["flac"]
    source, kept = _samples(clip.path), _samples(out)
    # The picture ends within a frame of the sound; every sample up to there is the same.
    n = min(source.shape[1], kept.shape[1])
    assert n > source.shape[1] - 48000 // 24
    assert np.array_equal(source[:, :n], kept[:, :n])


@pytest.mark.parametrize("offset", [0.5, -0.5])
def test_audio_offset_moves_the_soundtrack_and_it_still_fills_the_picture(
    tmp_path: Path, offset: float
) -> None:
    clip = make_clip(tmp_path / "silent.mp4", seconds=2.0)
    score = make_audio(tmp_path / "score.flac", codec="flac", seconds=1.5)
    out = tmp_path / "moved.mp4"
    options = Options(**FAST, scale=1, audio_file=str(score), audio="replace", audio_offset=offset)
    process_file(clip.path, out, options.model_copy(update={"preset": "ultrafast"}))
    first, last = sound_times(out)
    # Later by half a second, or its first half second cut; sample-exact (FLAC stays FLAC).
    assert abs(first - max(offset, 0)) < 0.005
    assert abs(last - (1.5 + offset)) < 0.005
    ((start, end),) = audio_spans(out)
    assert abs(start) < Fraction(1, 24) and abs(end - video_end(out)) < Fraction(1, 24)


def test_audio_offset_without_a_soundtrack_moves_the_films_own_tracks(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mkv", seconds=2.0, audio="flac")
    outs = {}
    for offset in (0.0, 0.25):
        outs[offset] = tmp_path / f"out{offset}.mkv"
        process_file(
            clip.path,
            outs[offset],
            Options(**FAST, scale=1, codec="ffv1", audio_offset=offset),
        )
    assert abs(sound_times(outs[0.25])[0] - sound_times(outs[0.0])[0] - 0.25) < 0.005
