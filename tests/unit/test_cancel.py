"""Stopping midway: the stages ask ``should_stop`` between tiles, windows, times and layers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.clips import make_clip
from tests.models_fixture import real_models_dir
from worker.cancel import Cancelled, checked_layers, never
from worker.pipeline import Options, plan_file, process_chunk
from worker.stages.interpolate import get_interpolator
from worker.stages.upscale import get_upscaler
from worker.stages.video_sr import VideoUpscaler, WindowGrid

CPU = torch.device("cpu")


class StopAfter:
    """A ``should_stop`` that turns true on its ``n``-th call; it notes when it was asked."""

    def __init__(self, n: float = float("inf")) -> None:
        self.n = n
        self.asked: list[float] = []

    def __call__(self) -> bool:
        self.asked.append(time.perf_counter())
        return len(self.asked) >= self.n


@pytest.fixture(scope="module")
def models() -> Path:
    return real_models_dir()


def test_layers_are_checked_in_the_block_and_its_thread_only() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3))
    x = torch.rand(1, 3, 16, 16)
    stop = StopAfter(3)
    with checked_layers(net, stop), pytest.raises(Cancelled):
        net(x)
    assert len(stop.asked) == 3  # the root, the first conv, then stopped before the ReLU
    always = StopAfter(1)
    with checked_layers(net, always):
        # Another thread sharing the (cached) network is not this chunk's to stop.
        other = threading.Thread(target=net, args=(x,))
        other.start()
        other.join()
    assert always.asked == []
    net(x)  # the hooks are gone
    assert len(stop.asked) == 3 and always.asked == []
    with checked_layers(net, never):
        net(x)


def test_a_network_upscaler_stops_inside_a_tile(models: Path) -> None:
    frame = torch.rand(1, 3, 120, 160)
    # Real-ESRGAN ×4 in one 256 px tile: about a second on two CPU cores, warmed.
    get_upscaler("detailed", CPU, models_dir=models, tile=256)(frame, (480, 640))
    whole = StopAfter()
    get_upscaler("detailed", CPU, models_dir=models, tile=256, should_stop=whole)(frame, (480, 640))
    # Asked before each of its hundreds of layers, never long apart: the watcher polls
    # every 0.2 s and the README promises a cancel within a second.
    assert len(whole.asked) > 100
    gaps = [b - a for a, b in zip(whole.asked, whole.asked[1:], strict=False)]
    assert max(gaps) < 0.5, f"{max(gaps):.2f} s without a check"

    mid = StopAfter(len(whole.asked) // 2)
    upscaler = get_upscaler("detailed", CPU, models_dir=models, tile=256, should_stop=mid)
    with pytest.raises(Cancelled):
        upscaler(frame, (480, 640))
    assert len(mid.asked) == len(whole.asked) // 2
    # Its hooks are gone from the cached network: the next chunk's upscaler runs to the end.
    get_upscaler("detailed", CPU, models_dir=models, tile=256)(frame, (480, 640))
    assert len(mid.asked) == len(whole.asked) // 2


def test_a_tiled_upscaler_stops_within_one_tile(models: Path) -> None:
    frame = torch.rand(1, 3, 96, 128)
    whole = StopAfter()
    get_upscaler("faithful", CPU, models_dir=models, tile=32, should_stop=whole)(frame, (192, 256))
    tiles = 3 * 4  # 96 × 128 in 32 px tiles
    per_tile = len(whole.asked) // tiles
    assert per_tile > 1 and len(whole.asked) == per_tile * tiles
    # Turned true in the first tile's layers: the second tile never starts.
    stop = StopAfter(per_tile // 2)
    with pytest.raises(Cancelled):
        get_upscaler("faithful", CPU, models_dir=models, tile=32, should_stop=stop)(
            frame, (192, 256)
        )
    assert len(stop.asked) == per_tile // 2


def test_basicvsr_stops_inside_a_window(models: Path) -> None:
    clip = torch.rand(12, 3, 24, 32)
    grid = WindowGrid(core=4, margin=2)
    whole = StopAfter()
    done = VideoUpscaler(CPU, models, grid=grid, should_stop=whole)(clip, (96, 128))
    assert done.shape == (12, 3, 96, 128)
    per_window = len(whole.asked) // 3
    stop = StopAfter(per_window // 2)
    windows = VideoUpscaler(CPU, models, grid=grid, should_stop=stop).stream(clip, (96, 128))
    with pytest.raises(Cancelled):
        next(windows)
    assert len(stop.asked) == per_window // 2


def test_motion_interpolation_stops_between_times() -> None:
    # A picture and the same panned by a pixel: not a scene cut, so the times are warped.
    picture = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = [picture, picture.roll(1, dims=-1)]
    src = [F.avg_pool2d(o, 2) for o in out]
    stop = StopAfter(2)
    interpolator = get_interpolator("motion", CPU, should_stop=stop)
    with pytest.raises(Cancelled):
        interpolator(src[0], src[1], out[0], out[1], [0.25, 0.5, 0.75])
    assert len(stop.asked) == 2


def test_a_stopped_chunk_leaves_no_file(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", seconds=1.0)
    (plan,) = plan_file(clip.path, 10.0)
    options = Options(upscaler="lanczos", interpolator="blend", scale=2, fps="48")
    out = tmp_path / "chunk.mp4"
    written: list[int] = []
    with pytest.raises(Cancelled):
        process_chunk(
            clip.path, plan, options, out, on_progress=written.append, should_stop=StopAfter(10)
        )
    assert 0 < written[-1] < 48  # of the chunk's 48 frames
    assert list(tmp_path.iterdir()) == [clip.path]
