"""The network upscalers: registry, provisioning errors, geometry, colour, precision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.models import models as models_cli
from shared.errors import ModelUnavailable
from tests.models_fixture import real_models_dir
from worker.models.catalog import CATALOG
from worker.models.ncnn_graph import NcnnGraph, parse_param
from worker.models.store import sha256_file, write_manifest
from worker.stages.upscale import (
    UPSCALERS,
    NetworkUpscaler,
    area_resize,
    area_resize_matmul,
    check_models,
    get_upscaler,
    is_monochrome,
    plan_factors,
)

CPU = torch.device("cpu")
PHOTO = "waifu2x/models-upconv_7_photo/scale2.0x_model"


def picture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth colour picture with an edge, (1, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(3, generator=g) * 6
    chans = [0.5 + 0.3 * torch.sin(5 * xx + 2 * yy + p) for p in phase]
    return (torch.stack(chans) + 0.2 * (xx > 0.5))[None].clamp(0, 1)


@pytest.fixture(scope="module")
def models() -> Path:
    return real_models_dir()


def test_registry_offers_each_family_the_two_modes_and_lanczos() -> None:
    assert {"faithful", "detailed", "lanczos", *CATALOG} <= set(UPSCALERS)
    for name in ("realesrgan-x4plus", "realesr-animevideov3", "waifu2x-photo", "realcugan"):
        assert name in UPSCALERS


def test_missing_weights_raise_model_unavailable_not_a_fallback(tmp_path: Path) -> None:
    for name in ("faithful", "detailed", "realcugan"):
        with pytest.raises(ModelUnavailable, match="lumiere models fetch"):
            get_upscaler(name, CPU, models_dir=tmp_path / "empty")


def test_health_check_names_what_is_missing(tmp_path: Path, models: Path) -> None:
    check_models(models)  # the provisioned directory passes
    with pytest.raises(ModelUnavailable, match=r"realesrgan-x4plus.*lumiere models fetch"):
        check_models(tmp_path, ["detailed"])


def test_a_corrupted_weight_file_is_refused(tmp_path: Path, models: Path) -> None:
    for suffix in (".param", ".bin"):
        target = tmp_path / f"{PHOTO}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(models / f"{PHOTO}{suffix}", target)
    manifest = {f"{PHOTO}{s}": sha256_file(tmp_path / f"{PHOTO}{s}") for s in (".param", ".bin")}
    write_manifest(tmp_path, manifest)
    with (tmp_path / f"{PHOTO}.bin").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelUnavailable, match="checksum"):
        get_upscaler("waifu2x-photo", CPU, models_dir=tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["files"] == manifest


def test_cli_lists_models_and_verify_fails_clearly_without_them(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(models_cli, ["list", "--models-dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in CATALOG)
    assert "missing" in listed.output
    checked = runner.invoke(models_cli, ["verify", "--models-dir", str(tmp_path)])
    assert checked.exit_code == 1
    assert "lumiere models fetch" in checked.output


def test_plan_uses_the_smallest_native_factor_that_reaches_the_target() -> None:
    assert plan_factors((2,), 1.0) == ()
    assert plan_factors((2,), 1.5) == (2,)
    assert plan_factors((2,), 4.0) == (2, 2)
    assert plan_factors((2, 3, 4), 2.7) == (3,)
    assert plan_factors((2, 3, 4), 3.9) == (4,)
    assert plan_factors((4,), 2.0) == (4,)
    # 720×540 to 2160 lines: ×4 (2160/540), reached by two ×2 passes of a ×2-only net.
    assert plan_factors((2,), 2160 / 540) == (2, 2)


def test_area_resize_matches_opencv_area_and_keeps_the_mean() -> None:
    x = picture(40, 60)
    theirs = cv2.resize(x[0].permute(1, 2, 0).numpy(), (24, 16), interpolation=cv2.INTER_AREA)
    # The GPU path (matrix products) and the CPU path (OpenCV) are the same filter.
    for resize in (area_resize, area_resize_matmul):
        ours = resize(x, (16, 24))[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        odd = resize(x, (27, 41))
        assert odd.shape == (1, 3, 27, 41)
        assert abs(float(odd.mean()) - float(x.mean())) < 2e-3


def test_exact_size_and_aspect_ratio_by_pad_or_crop(models: Path) -> None:
    frames = picture(27, 36)  # 4:3, like 720×540
    target = (54, 96)  # 16:9, like 2160×3840
    stretch = get_upscaler("faithful", CPU, models_dir=models)(frames, target)
    assert stretch.shape == (1, 3, *target)
    padded = get_upscaler("faithful", CPU, models_dir=models, fit="pad")(frames, target)
    assert padded.shape == (1, 3, *target)
    # 4:3 content 54 high is 72 wide: 12 black columns either side, none inside.
    assert float(padded[..., :12].abs().max()) == 0.0
    assert float(padded[..., -12:].abs().max()) == 0.0
    assert float(padded[..., 12:84].mean()) > 0.2
    cropped = get_upscaler("faithful", CPU, models_dir=models, fit="crop")(frames, target)
    assert cropped.shape == (1, 3, *target)
    assert float(cropped.amin(dim=(1, 2)).amax()) > 0.0  # no black bars


def test_black_and_white_film_stays_black_and_white(models: Path) -> None:
    gray = picture(24, 32).mean(dim=1, keepdim=True).expand(2, 3, -1, -1).contiguous()
    assert is_monochrome(gray)
    for name in ("realesr-animevideov3", "faithful"):
        out = get_upscaler(name, CPU, models_dir=models)(gray, (48, 64))
        assert is_monochrome(out, tolerance=0.0)
        # And the picture is still the picture, not a flat grey.
        assert float(out.std()) > 0.05


def test_ten_bit_input_keeps_ten_bit_precision(models: Path) -> None:
    # Flat patches at adjacent 10-bit codes must come out distinguishable and in place
    # (bf16 compute, 8 significant bits, merges them: bit_depth=10 avoids it).
    codes = torch.tensor([700.0, 701.0, 702.0, 703.0]) / 1023
    frames = codes.repeat_interleave(16)[None, None, None, :].expand(1, 3, 24, -1).contiguous()
    up = get_upscaler("faithful", CPU, models_dir=models, bit_depth=10)
    assert isinstance(up, NetworkUpscaler) and up.compute == torch.float32
    out = up(frames, (48, 128))
    steps = out[0, 0, 24, 16::32].diff() * 1023
    # Each patch sits one code above the last (the net's own small level bias cancels).
    assert float((steps - 1).abs().max()) < 0.25


def test_batch_of_frames_matches_one_by_one(models: Path) -> None:
    frames = torch.cat([picture(20, 20, seed) for seed in range(3)])
    up = get_upscaler("realcugan", CPU, models_dir=models, precision="fp32", batch=3)
    single = get_upscaler("realcugan", CPU, models_dir=models, precision="fp32", batch=1)
    torch.testing.assert_close(up(frames, (40, 40)), single(frames, (40, 40)), atol=1e-5, rtol=0)


def test_tiny_random_graph_runs_through_the_interpreter() -> None:
    text = "\n".join(
        [
            "7767517",
            "4 4",
            "Input in 0 1 data",
            "Convolution c1 1 1 data a 0=8 1=3 4=1 5=1 6=216 9=2 -23310=1,0.1",
            "Convolution c2 1 1 a b 0=12 1=3 4=1 5=1 6=864",
            "PixelShuffle ps 1 1 b out 0=2",
        ]
    )
    graph = NcnnGraph(parse_param(text)).eval()
    with torch.inference_mode():
        out = graph(torch.rand(2, 3, 10, 14))
    assert out.shape == (2, 3, 20, 28)


def test_a_lossy_source_gets_the_model_meant_for_compression_a_lossless_one_none(
    tmp_path: Path, models: Path
) -> None:
    from tests.clips import make_clip
    from worker.media.probe import probe
    from worker.pipeline import Options, chunk_upscaler

    lossy, lossless = tmp_path / "a.mp4", tmp_path / "b.mkv"
    make_clip(lossy)
    make_clip(lossless, codec="ffv1")
    chosen = {}
    for path in (lossy, lossless):
        for upscaler in ("faithful", "realcugan"):
            options = Options(scale=2, upscaler=upscaler)
            made = chunk_upscaler(options, probe(path), CPU, lambda: False)
            assert isinstance(made, NetworkUpscaler)
            chosen[path.suffix, upscaler] = made.denoise
    # waifu2x's noise0 for H.264; Real-CUGAN keeps its own default (-1, "conservative").
    assert chosen == {
        (".mp4", "faithful"): 0,
        (".mkv", "faithful"): -1,
        (".mp4", "realcugan"): -1,
        (".mkv", "realcugan"): -1,
    }
    # A level the job names wins.
    options = Options(scale=2, upscaler="faithful", denoise=2)
    assert chunk_upscaler(options, probe(lossless), CPU, lambda: False).denoise == 2  # type: ignore[attr-defined]


def test_only_the_first_of_chained_passes_denoises(models: Path) -> None:
    upscaler = get_upscaler("faithful", CPU, models_dir=models, denoise=1)
    used = []
    real_pass = upscaler._pass  # type: ignore[attr-defined]

    def recording(frames: torch.Tensor, variant: object) -> torch.Tensor:
        used.append(variant.denoise)  # type: ignore[attr-defined]
        return real_pass(frames, variant)

    upscaler._pass = recording  # type: ignore[attr-defined]
    out = upscaler(picture(16, 24), (64, 96))
    assert out.shape[-2:] == (64, 96) and used == [1, -1]
