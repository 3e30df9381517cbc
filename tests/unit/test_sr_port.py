"""Each ported network agrees with ncnn's own CPU runtime on the same weights and input.

Coverage by layer type (every type the catalogue's graphs use):
- waifu2x upconv_7 photo: Convolution (+leaky ReLU), Deconvolution.
- waifu2x cunet: Split, Pooling, InnerProduct (ReLU, sigmoid), Scale, two-input Crop, Eltwise.
- Real-CUGAN SE ×2 / ×3 / ×4: BinaryOp mul/add, axis Crop, strided Convolution, PixelShuffle.
- Real-ESRGAN animevideov3 (SRVGG): PReLU, PixelShuffle, nearest Interp, BinaryOp add.
- Real-ESRGAN x4plus (RRDBNet): Concat, weighted Eltwise, nearest Interp ×2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models_fixture import real_models_dir
from worker.models.ncnn_graph import NcnnGraph, WinogradConv2d

ncnn = pytest.importorskip("ncnn")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return real_models_dir()


def natural_like(size: int, seed: int) -> np.ndarray:
    """A smooth picture with edges, values in [0, 1]: what the nets were trained on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        f = rng.uniform(1, 4, size=2)
        wave = 0.5 + 0.3 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + rng.uniform(0, 6))
        step = 0.15 * (xx + 0.3 * yy > rng.uniform(0.3, 0.7))
        channels.append(wave + step + rng.normal(0, 0.01, size=(size, size)))
    return np.clip(np.stack(channels), 0, 1).astype(np.float32)[None]


def ncnn_reference(param: Path, weights: Path, graph: NcnnGraph, image: np.ndarray) -> np.ndarray:
    net = ncnn.Net()
    opt = net.opt
    # Plain fp32 arithmetic on the CPU, the reference we hold the port to.
    opt.use_vulkan_compute = False
    opt.use_fp16_packed = False
    opt.use_fp16_storage = False
    opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = False
    opt.num_threads = 2
    net.load_param(str(param))
    net.load_model(str(weights))
    extractor = net.create_extractor()
    extractor.input(graph.input_blob, ncnn.Mat(np.ascontiguousarray(image[0])))
    status, out = extractor.extract(graph.output_blob)
    assert status == 0
    result = np.array(out).copy()[None]
    # The extractor must die before its net: the bindings do not order it for us.
    del out, extractor
    del net
    return result


@pytest.mark.parametrize(
    ("stem", "size"),
    [
        ("waifu2x/models-upconv_7_photo/noise1_scale2.0x_model", 40),
        ("waifu2x/models-cunet/scale2.0x_model", 64),
        ("realcugan/models-se/up2x-denoise2x", 64),
        ("realcugan/models-se/up3x-conservative", 64),
        ("realcugan/models-se/up4x-no-denoise", 64),
        ("realesrgan/realesr-animevideov3-x4", 32),
        ("realesrgan/realesrgan-x4plus", 24),
    ],
)
def test_port_matches_ncnn(models_dir: Path, stem: str, size: int) -> None:
    param, weights = models_dir / f"{stem}.param", models_dir / f"{stem}.bin"
    graph = NcnnGraph.from_files(param, weights).eval()
    image = natural_like(size, seed=size)
    with torch.inference_mode():
        ours = graph(torch.from_numpy(image)).numpy()
    theirs = ncnn_reference(param, weights, graph, image)
    assert ours.shape == theirs.shape
    # The outputs are pictures in [0, 1] (or residuals); no trivially-zero comparison.
    assert float(np.abs(theirs).max()) > 0.1
    assert float(np.abs(ours - theirs).max()) < TOLERANCE


@pytest.mark.parametrize(("in_ch", "out_ch", "pad", "slope"), [(64, 96, 0, 0.1), (64, 64, 1, None)])
def test_winograd_convolution_matches_direct_in_fp32(
    in_ch: int, out_ch: int, pad: int, slope: float | None
) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_ch, out_ch, 3, padding=pad).eval()
    x = torch.rand(2, in_ch, 13, 18)  # sizes that are not multiples of the 4×4 blocks
    with torch.inference_mode():
        direct = conv(x)
        if slope is not None:
            direct = torch.nn.functional.leaky_relu(direct, slope)
        ours = WinogradConv2d(conv, slope, torch.float32)(x)
    assert ours.shape == direct.shape
    assert float((ours - direct).abs().max()) < TOLERANCE


def test_winograd_bf16_upconv7_stays_within_a_code_of_fp32(models_dir: Path) -> None:
    stem = "waifu2x/models-upconv_7_photo/noise1_scale2.0x_model"
    param, weights = models_dir / f"{stem}.param", models_dir / f"{stem}.bin"
    reference = NcnnGraph.from_files(param, weights).eval()
    fast = NcnnGraph.from_files(param, weights).eval()
    fast.convs.to(torch.bfloat16)
    fast.use_winograd(torch.bfloat16)
    assert sum(isinstance(c, WinogradConv2d) for c in fast.convs.values()) == 3
    image = torch.from_numpy(natural_like(64, seed=3))
    with torch.inference_mode():
        expected = reference(image).clamp(0, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = fast(image).float().clamp(0, 1)
    codes = (ours - expected).abs() * 255
    # Direct bf16 convolution alone is ~0.5 codes off on average here; Winograd adds ~0.15.
    assert float(codes.mean()) < 1.0
    assert float(codes.max()) < 8.0
