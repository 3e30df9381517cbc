"""Load a catalogue network (or the denoiser) once per process, keyed by (file, device, dtype)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.errors import ModelUnavailable
from worker.devices import can_compile_cpu_kernels, keep_freed_memory
from worker.models.catalog import DENOISERS, FFDNET, ModelSpec, Variant
from worker.models.ffdnet_arch import FFDNet
from worker.models.ncnn_graph import NcnnGraph
from worker.models.store import FETCH_HINT, verify_files


@dataclass(frozen=True)
class LoadedNetwork:
    """A ready network and what the tiler needs to know to feed it."""

    # What to call: the graph, or its torch.compile wrapper.
    module: torch.nn.Module
    # The graph itself, for calls that pass pooled statistics (never compiled).
    graph: NcnnGraph
    variant: Variant
    # Elements alive at peak per input pixel (fp32 equivalents), for sizing tiles.
    elements_per_pixel: float


_lock = threading.Lock()
_cache: dict[tuple[Path, str, str, torch.dtype, bool], LoadedNetwork] = {}
_denoisers: dict[tuple[Path, str, str, torch.dtype], FFDNet] = {}


def load_network(
    models_dir: Path,
    spec: ModelSpec,
    variant: Variant,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
) -> LoadedNetwork:
    """The network for ``variant``, loaded and checksummed on first use, then cached."""
    key = (models_dir.resolve(), variant.stem, str(device), dtype, compile)
    with _lock:
        if key not in _cache:
            _cache[key] = _load(models_dir, spec, variant, device, dtype, compile)
        return _cache[key]


def clear_cache() -> None:
    """Forget every loaded network (tests, or to free memory)."""
    with _lock:
        _cache.clear()
        _denoisers.clear()


def _load(
    models_dir: Path,
    spec: ModelSpec,
    variant: Variant,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool,
) -> LoadedNetwork:
    files = [variant.stem + ".param", variant.stem + ".bin"]
    if not models_dir.is_dir():
        raise ModelUnavailable(
            f"no models directory at {models_dir} (model {spec.name}); {FETCH_HINT}"
        )
    verify_files(models_dir, files)
    graph = NcnnGraph.from_files(models_dir / files[0], models_dir / files[1])
    probe = 64
    per_pixel = graph.peak_elements(probe, probe) / (probe * probe)
    graph = graph.eval().requires_grad_(False).to(device)
    graph = graph.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if dtype != torch.float32:
        # Cast once here: autocast re-casts weights that need no grad on every call
        # (15 % of a waifu2x tile on CPU).
        graph.convs.to(dtype)
        graph.linears.to(dtype)
    if device.type == "cpu" and dtype == torch.bfloat16 and can_compile_cpu_kernels():
        # oneDNN's direct bf16 convolution is at the cores' peak already; only fewer
        # multiplies (Winograd, as ncnn does) go faster: 1.5–1.8× on the wide layers.
        graph.use_winograd(dtype)
    if device.type == "cpu":
        keep_freed_memory()
    module: torch.nn.Module = graph
    if compile:
        # Freezing lets Inductor pre-pack the conv weights for oneDNN and fuse the
        # activations into them; tiles share a few shapes, so static shapes suffice.
        module = torch.compile(graph, options={"freezing": True})  # type: ignore[assignment]
    return LoadedNetwork(module, graph, variant, per_pixel)


def load_denoiser(
    models_dir: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    name: str = FFDNET,
) -> FFDNet:
    """The denoiser ``name``, checksummed and loaded on first use, then cached."""
    key = (models_dir.resolve(), name, str(device), dtype)
    with _lock:
        if key not in _denoisers:
            _denoisers[key] = _load_denoiser(models_dir, name, device, dtype)
        return _denoisers[key]


def _load_denoiser(models_dir: Path, name: str, device: torch.device, dtype: torch.dtype) -> FFDNet:
    spec = DENOISERS[name]
    if not models_dir.is_dir():
        raise ModelUnavailable(f"no models directory at {models_dir} (model {name}); {FETCH_HINT}")
    verify_files(models_dir, [spec.weights])
    state = torch.load(models_dir / spec.weights, map_location="cpu", weights_only=True)
    net = FFDNet()
    net.load_state_dict(state, strict=True)
    # Channels-last: oneDNN's convolutions run ~1.5× faster that way on CPUs (480p, 2 cores).
    net = net.eval().requires_grad_(False).to(device, dtype)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cpu":
        keep_freed_memory()
    return net
