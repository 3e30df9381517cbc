"""Exact colour: a pass-through reproduces the stored Y, U and V planes, whatever the coding."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from worker.media.colors import (
    Coding,
    downsample_chroma,
    planes_to_rgb,
    read_planes,
    rgb_to_planes,
    upsample_chroma,
    write_planes,
)
from worker.media.decode import decode_range
from worker.media.probe import probe
from worker.pipeline import Options, process_file

# (pix_fmt, width, height, (matrix, range) tags or None for an untagged stream)
CASES = {
    "sd-untagged-limited-8bit": ("yuv420p", 96, 72, None),
    "sd-601-limited-8bit": ("yuv420p", 96, 72, (6, 1)),
    "sd-601-full-8bit": ("yuv420p", 96, 72, (6, 2)),
    "jpeg-untagged-full-8bit": ("yuvj420p", 96, 72, None),
    "hd-709-limited-8bit": ("yuv420p", 1280, 720, (1, 1)),
    "hd-untagged-limited-8bit": ("yuv420p", 1280, 720, None),
    "hd-709-limited-10bit": ("yuv420p10le", 1280, 720, (1, 1)),
    "sd-601-full-10bit": ("yuv420p10le", 96, 72, (6, 2)),
    "uhd-2020-limited-10bit-422": ("yuv422p10le", 128, 96, (9, 1)),
    "sd-601-limited-8bit-444": ("yuv444p", 96, 72, (6, 1)),
    "odd-size-untagged-8bit": ("yuv420p", 67, 37, None),
}


def planes_for(pix_fmt: str, width: int, height: int, seed: int) -> list[np.ndarray]:
    """Random-textured planes over the whole code range: smooth areas, sharp edges and
    colours outside the RGB cube, which a pass-through must not clip."""
    rng = np.random.default_rng(seed)
    probe = av.VideoFrame(width, height, pix_fmt)
    top = 2 ** probe.format.components[0].bits - 1
    planes = []
    for plane in probe.planes:
        y, x = np.mgrid[0 : plane.height, 0 : plane.width]
        ramp = (x / max(plane.width - 1, 1) + y / max(plane.height - 1, 1)) / 2
        noise = rng.integers(0, top + 1, (plane.height, plane.width))
        block = (x // 8 + y // 8) % 3 == 0  # sharp-edged blocks of pure noise
        values = np.where(block, noise, ramp * top)
        planes.append(np.rint(values).astype(np.uint16 if top > 255 else np.uint8))
    return planes


def write_clip(
    path: Path, pix_fmt: str, width: int, height: int, tags: tuple[int, int] | None
) -> None:
    """A 3-frame clip of these planes: lossless FFV1, or MJPEG for the JPEG formats."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg" if pix_fmt.startswith("yuvj") else "ffv1", rate=24)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if tags is not None:
            stream.codec_context.colorspace, stream.codec_context.color_range = tags
        for i in range(3):
            planes = planes_for(pix_fmt, width, height, seed=i)
            frame = write_planes(planes, pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def decoded_planes(path: Path) -> tuple[str, list[list[np.ndarray]]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return frames[0].format.name, [[p.copy() for p in read_planes(f)] for f in frames]


@pytest.mark.parametrize("case", sorted(CASES))
def test_pass_through_keeps_every_plane(tmp_path: Path, case: str) -> None:
    pix_fmt, width, height, tags = CASES[case]
    source = tmp_path / "in.mkv"
    write_clip(source, pix_fmt, width, height, tags)
    _, stored = decoded_planes(source)
    out = tmp_path / "out.mkv"
    process_file(source, out, Options(scale=1, codec="ffv1", upscaler="lanczos", chunk_seconds=1))
    out_fmt, frames = decoded_planes(out)
    assert out_fmt == pix_fmt.replace("yuvj", "yuv")
    assert len(frames) == len(stored)
    for want, got in zip(stored, frames, strict=True):
        for plane, (a, b) in enumerate(zip(want, got, strict=True)):
            diff = b.astype(np.int64) - a.astype(np.int64)
            if pix_fmt.startswith("yuvj") and plane:
                # JPEG's centred chroma is re-sited to the MPEG-2 siting players assume for
                # the untagged output: resampled a quarter sample over, so not exact; on the
                # smooth ramps (away from the noise blocks) it stays within a code.
                y, x = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
                near_block = (x // 8 + y // 8) % 3 == 0
                for shift in (-1, 1):  # resampling reaches one sample either side
                    near_block |= np.roll(near_block, shift, axis=1)
                assert np.abs(diff[~near_block]).max() <= 1, (case, plane)
            else:
                assert np.abs(diff).max() == 0, (case, plane, np.abs(diff).max(), diff.mean())


def test_rgb_and_grey_sources_keep_their_levels(tmp_path: Path) -> None:
    # An RGB film (PNG frames) and an untagged grey one: full range, as FFmpeg reads them.
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, :16] = (245, 200, 10)
    rgb[:, 16:] = (255, 0, 128)
    grey = np.where(np.arange(32) < 16, 10, 245).astype(np.uint8)[None].repeat(16, 0)
    for name, codec, frame in (
        ("rgb.mov", "png", av.VideoFrame.from_ndarray(rgb, "rgb24")),
        ("grey.mkv", "ffv1", av.VideoFrame.from_ndarray(grey, "gray")),
    ):
        path = tmp_path / name
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=24)
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = 32, 16, frame.format.name
            frame.pts = 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        image = next(decode_range(path, probe(path))).image[0].permute(1, 2, 0).numpy()
        want = rgb if frame.format.name == "rgb24" else np.stack([grey] * 3, axis=-1)
        assert np.abs(image * 255 - want).max() < 1e-3, name


def test_output_keeps_the_source_range_tag(tmp_path: Path) -> None:
    source = tmp_path / "in.mkv"
    write_clip(source, "yuvj420p", 64, 48, None)
    out = tmp_path / "out.mkv"
    process_file(source, out, Options(scale=1, codec="ffv1", upscaler="lanczos", chunk_seconds=1))
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
    assert int(frame.color_range) == 2  # full range, as the JPEG-format source was


@pytest.mark.parametrize("cosited", [True, False])
def test_chroma_down_inverts_up(cosited: bool) -> None:
    c = torch.rand(7, 9, dtype=torch.float64)
    for axis, length in ((-1, 18), (-2, 14), (-1, 17), (-2, 13)):
        up = upsample_chroma(c, axis, cosited, length)
        assert torch.allclose(downsample_chroma(up, axis, cosited), c, atol=1e-12)


@pytest.mark.parametrize("cosited", [True, False])
def test_chroma_upsampling_is_exact_on_a_ramp(cosited: bool) -> None:
    # A chroma ramp is a straight line in the picture; resampling it must stay one.
    c = torch.arange(8, dtype=torch.float64)[None].repeat(3, 1)
    up = upsample_chroma(c, -1, cosited, 16)[:, 4:-4]  # away from the repeated edges
    steps = up.diff(dim=-1)
    assert torch.allclose(steps, torch.full_like(steps, 0.5))


def test_rgb_matches_the_standard_matrices() -> None:
    # BT.709 limited range: Y 235 / U V 128 is white, Y 16 black; pure red per the spec.
    coding = Coding("yuv444p", matrix=1, full_range=False)
    planes = [torch.tensor([[235.0, 16.0, 63.0]]), torch.tensor([[128.0, 128.0, 102.0]])]
    planes.append(torch.tensor([[128.0, 128.0, 240.0]]))
    rgb = planes_to_rgb(planes, coding)[:, 0]
    assert torch.allclose(rgb[:, 0], torch.ones(3), atol=1e-6)
    assert torch.allclose(rgb[:, 1], torch.zeros(3), atol=1e-6)
    assert torch.allclose(rgb[:, 2], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)
    back = rgb_to_planes(planes_to_rgb(planes, coding), coding)
    for a, b in zip(planes, back, strict=True):
        assert torch.equal(a, b)
