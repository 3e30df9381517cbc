"""Which encoder writes a chunk: NVENC where it opens, else x264/x265 (logged), with a preset
that follows the picture's size unless one is asked for."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from structlog.testing import capture_logs

from worker.media import encode
from worker.media.encode import VideoSpec, VideoWriter, choose_encoder


def spec(codec: str = "h264", size: tuple[int, int] = (1920, 1080), **extra: object) -> VideoSpec:
    width, height = size
    rate = Fraction(24)
    return VideoSpec(codec, width, height, 1 / rate, rate, **extra)  # type: ignore[arg-type]


@pytest.fixture
def fresh_probes() -> None:
    """Forget what earlier tests found, so this one probes (and logs) afresh."""
    encode.hardware_unusable.cache_clear()
    encode._log_fallback.cache_clear()


@pytest.mark.usefixtures("fresh_probes")
def test_without_nvenc_the_software_encoder_is_chosen_and_said_so() -> None:
    if encode.hardware_unusable("h264_nvenc", "yuv420p", 1920, 1080) is None:
        pytest.skip("NVENC opens on this machine")
    encode.hardware_unusable.cache_clear()
    with capture_logs() as logs:
        first = choose_encoder(spec("h264"))
        again = choose_encoder(spec("h264"))
    assert first == again and first.name == "libx264"
    fallbacks = [e for e in logs if e["event"] == "encoder.fallback"]
    assert len(fallbacks) == 1  # once per process and size, not per chunk
    assert fallbacks[0]["hardware"] == "h264_nvenc" and fallbacks[0]["used"] == "libx264"
    assert fallbacks[0]["reason"]
    with capture_logs() as logs:
        assert choose_encoder(spec("h265", (1280, 720))).name == "libx265"
    assert [e["hardware"] for e in logs if e["event"] == "encoder.fallback"] == ["hevc_nvenc"]


def test_the_probe_runs_once(monkeypatch: pytest.MonkeyPatch, fresh_probes: None) -> None:
    opened = []
    real = av.CodecContext.create

    def counting(name: str, mode: str) -> av.CodecContext:
        opened.append(name)
        return real(name, mode)

    monkeypatch.setattr(av.CodecContext, "create", counting)
    for _ in range(3):
        choose_encoder(spec("h264"))
    assert opened == ["h264_nvenc"]


def test_nvenc_where_it_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "hardware_unusable", lambda *args: None)
    chosen = choose_encoder(spec("h264", crf=20))
    assert chosen.name == "h264_nvenc" and chosen.pix_fmt == "yuv420p"
    assert chosen.options == {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "20"}
    deep = choose_encoder(spec("h265", pix_fmt="yuv420p10le", preset="veryfast"))
    assert (deep.name, deep.pix_fmt, deep.options["preset"]) == ("hevc_nvenc", "p010le", "p3")
    # FFV1 and ProRes have no hardware encoder; 4:4:4 is not what we feed NVENC.
    assert choose_encoder(spec("ffv1", pix_fmt="yuv444p")).name == "ffv1"
    assert choose_encoder(spec("h265", pix_fmt="yuv444p")).name == "libx265"


@pytest.mark.parametrize(
    ("codec", "size", "asked", "preset"),
    [
        ("h264", (1920, 1080), None, "medium"),
        ("h264", (3840, 2160), None, "faster"),
        ("h265", (2560, 1440), None, "faster"),
        ("h264", (3840, 2160), "slow", "slow"),  # asked for: it wins
        ("h265", (720, 540), "ultrafast", "ultrafast"),
    ],
)
def test_software_preset_follows_the_size_unless_asked(
    monkeypatch: pytest.MonkeyPatch, codec: str, size: tuple[int, int], asked: str, preset: str
) -> None:
    monkeypatch.setattr(encode, "hardware_unusable", lambda *args: "absent in this test")
    assert choose_encoder(spec(codec, size, preset=asked)).options["preset"] == preset


def test_the_writer_says_which_encoder_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoWriter(out, spec("h264", (64, 48), preset="ultrafast"), "mp4") as writer:
        for pts in range(3):
            writer.write(torch.rand(1, 3, 48, 64), pts)
    assert writer.encoder.name in ("libx264", "h264_nvenc")
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
