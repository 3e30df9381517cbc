"""On a GPU out-of-memory the upscaler retries with smaller tiles instead of failing.

No GPU here: the CUDA allocator's failure is injected where a tile is run, which is exactly
what a device with too little free memory does; everything else is the real network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models_fixture import real_models_dir
from worker.stages import upscale
from worker.stages.upscale import get_upscaler

CPU = torch.device("cpu")


def test_out_of_memory_halves_the_tile_until_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    models: Path = real_models_dir()
    frames = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    reference = get_upscaler("faithful", CPU, models_dir=models, tile=256)(frames, (192, 256))

    real_run_tiled = upscale.run_tiled
    tiles: list[int] = []

    def short_of_memory(fn, x, scale, tile, overlap, align=1):  # type: ignore[no-untyped-def]
        tiles.append(tile)
        if tile > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_run_tiled(fn, x, scale, tile, overlap, align)

    monkeypatch.setattr(upscale, "run_tiled", short_of_memory)
    result = get_upscaler("faithful", CPU, models_dir=models, tile=256)(frames, (192, 256))
    assert tiles == [256, 128, 64]
    # Smaller tiles, same picture (the tiles are feathered together).
    assert (result - reference).abs().max().item() < 2e-2


def test_out_of_memory_at_the_smallest_tile_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    models = real_models_dir()

    def never_fits(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(upscale, "run_tiled", never_fits)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        get_upscaler("faithful", CPU, models_dir=models, tile=128)(
            torch.rand(1, 3, 32, 32), (64, 64)
        )
