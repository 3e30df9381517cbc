"""Giving a film sound: a soundtrack file sent with the job replaces or joins the film's own."""

from __future__ import annotations

from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.clips import make_clip, sound_times
from tests.conftest import run_cli, wait_job

FAST = {"upscaler": "lanczos", "interpolator": "blend", "scale": "1", "chunk_seconds": "1"}


def soundtrack(path: Path, seconds: float, rate: int = 44100) -> Path:
    """A FLAC file of a 440 Hz tone, ``seconds`` long."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        t = np.arange(round(seconds * rate)) / rate
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None]
        for start in range(0, samples.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                samples[:, start : start + 4096], format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def streams(path: Path) -> list[tuple[str, float]]:
    """(codec, seconds) of every stream, the video first."""
    with av.open(str(path)) as container:
        found = []
        for stream in container.streams:
            seconds = float((stream.duration or 0) * (stream.time_base or 0))
            if not seconds:  # some muxers leave the stream duration unset: decode to count
                last = [p for p in container.demux(stream) if p.pts is not None][-1]
                seconds = float((last.pts + last.duration) * stream.time_base)
                container.seek(0)
            found.append((stream.type, seconds))
        return found


@pytest.mark.parametrize(
    ("mode", "tracks", "offset"), [("replace", 1, 0.0), ("add", 2, 0.0), ("replace", 1, 0.5)]
)
def test_a_soundtrack_sent_with_the_job_is_in_the_film(
    client: httpx.Client, tmp_path: Path, mode: str, tracks: int, offset: float
) -> None:
    audio = "aac" if mode == "add" else None
    clip = make_clip(tmp_path / "film.mp4", width=48, height=32, fps=24, seconds=2, audio=audio)
    score = soundtrack(tmp_path / "score.flac", 2.0)
    with clip.path.open("rb") as film, score.open("rb") as sound:
        created = client.post(
            "/v1/jobs",
            files={"file": ("film.mp4", film), "audio": ("score.flac", sound)},
            data={**FAST, "audio": mode, "audio_offset": str(offset)},
        )
    assert created.status_code == 201, created.text
    job = wait_job(client, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    out = tmp_path / "out.mp4"
    redirect = client.get(f"/v1/jobs/{job['id']}/result")
    out.write_bytes(httpx.get(redirect.headers["location"], timeout=60).content)
    found = streams(out)
    assert [kind for kind, _ in found] == ["video"] + ["audio"] * tracks
    picture = found[0][1]
    # The soundtrack lasts as long as the picture, within a frame, and starts where asked.
    assert abs(found[-1][1] - picture) <= 1 / 24 + 1e-3, found
    assert abs(sound_times(out, tracks - 1)[0] - offset) < 0.005


def test_submit_adds_a_soundtrack(
    api_url: str, api_key: str, worker: str, tmp_path: Path, service_env: dict[str, str]
) -> None:
    clip = make_clip(tmp_path / "silent.mp4", width=48, height=32, fps=24, seconds=1)
    score = soundtrack(tmp_path / "score.flac", 1.0)
    out = tmp_path / "restored.mp4"
    env = {**service_env, "LUMIERE_API_URL": api_url, "LUMIERE_API_KEY": api_key}
    args = ["--upscaler", "lanczos", "--scale", "1", "--audio", str(score)]
    args += ["--audio-offset", "-0.25"]
    run_cli("submit", str(clip.path), *args, "--wait", "-o", str(out), env=env)
    assert [kind for kind, _ in streams(out)] == ["video", "audio"]
    # Its first quarter second cut: the tone stops a quarter second before its one second.
    assert abs(sound_times(out)[1] - 0.75) < 0.005
