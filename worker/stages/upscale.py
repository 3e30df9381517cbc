"""Upscale stage: the registry of upscalers, the pretrained networks and the Lanczos baseline.

An upscaler takes a batch (N, 3, h, w) and returns it at exactly (N, 3, H, W). Network
upscalers run at the smallest native factor (or chain of two) that reaches the target, then
resize exactly with an area filter; ``fit`` keeps the aspect ratio by padding or cropping.

Users pick a mode: ``faithful`` (default; highest PSNR, restores what is there) or
``detailed`` (GAN-sharp, invents plausible texture), or any model by name. Options:
``denoise`` (-1 none … 3 strongest), ``tile`` (0 = from free memory), ``overlap``,
``batch``, ``fit`` (stretch/pad/crop), ``monochrome`` (auto/yes/no), ``precision``,
``bit_depth`` (10 keeps 10-bit precision), ``compile``, ``sync_pooling``, ``models_dir``,
``should_stop`` (asked before every layer: one tile can take seconds on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from worker.cancel import ShouldStop, checked_layers, never
from worker.devices import autocast, compute_dtype, free_memory_bytes, to_device
from worker.models.catalog import CATALOG, VIDEO_MODELS, ModelSpec, Variant, get_spec
from worker.models.loader import LoadedNetwork, load_network
from worker.models.ncnn_graph import PoolRecord
from worker.models.store import read_manifest, verify
from worker.stages.tiling import is_tiled, run_tiled

if TYPE_CHECKING:
    from worker.stages.video_sr import VideoUpscaler


class Upscaler(Protocol):
    """Anything that brings a batch of frames to an exact size."""

    name: str

    def __call__(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return ``frames`` (N, 3, h, w) resized to ``size`` = (H, W)."""
        ...


class LanczosUpscaler:
    """Classical Lanczos-4 resize (OpenCV): the fast baseline, never an AI stand-in."""

    name = "lanczos"

    def __init__(self, fit: Fit = "stretch") -> None:
        self.fit: Fit = fit

    def __call__(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = fit_size((frames.shape[-2], frames.shape[-1]), size, self.fit)
        # OpenCV works on HWC arrays; it resizes up to 4 channels at once, so 3 is fine.
        images = frames.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
        out = np.stack(
            [cv2.resize(img, (width, height), interpolation=cv2.INTER_LANCZOS4) for img in images]
        )
        # Not clipped: luma stays linear in RGB, so this is Lanczos on the Y plane as FFmpeg
        # scales it; the encoder clamps the codes.
        result = torch.from_numpy(out).permute(0, 3, 1, 2)
        return to_device(place(result, size), frames.device).to(frames.dtype)


Fit = Literal["stretch", "pad", "crop"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Benchmarked default for old live-action film (bench/bench_upscale.py, 10 real images and
# video frames): waifu2x's photo net beats Lanczos on every one, +2.4 dB at ×2 and, chained,
# +1.6 dB at ×4; it restores what was there instead of inventing texture, which archive
# footage needs. CUNet scores +0.1–0.3 dB more but costs 2–2.6× as much and its
# squeeze-excitation layers make tiles disagree slightly; upconv_7 is tile-exact.
FAITHFUL_MODEL = "waifu2x-photo"
# GAN-trained: sharper, plausible detail, lower PSNR. For users who want "crisp".
DETAILED_MODEL = "realesrgan-x4plus"
MODES = {"faithful": FAITHFUL_MODEL, "detailed": DETAILED_MODEL}
# What `basicvsr` means: the weights that scored best on the file-to-file benchmark.
VIDEO_DEFAULT = "basicvsr-vimeo90k-bi"
# Channel spread (0–1 scale) under which a frame counts as black and white; film scans
# of monochrome prints carry a little chroma noise and dye tint.
MONO_TOLERANCE = 3 / 255
# Largest automatic tile on CPUs for nets without global pooling (see _auto_tile).
CPU_TILE = 192
# BT.709 luma: output frames are HD/UHD.
_LUMA = (0.2126, 0.7152, 0.0722)


def area_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Exact area-average resize (each output pixel = mean of the input area it covers)."""
    h, w = frames.shape[-2:]
    if (h, w) == tuple(size):
        return frames
    if frames.device.type == "cpu":
        # OpenCV's INTER_AREA is the same filter, banded: a dense matrix product would
        # cost ~140 GFLOP per 4K frame on the CPU.
        images = frames.detach().float().permute(0, 2, 3, 1).numpy()
        out = [cv2.resize(i, (size[1], size[0]), interpolation=cv2.INTER_AREA) for i in images]
        return torch.from_numpy(np.stack(out).reshape(-1, *size, images.shape[-1])).permute(
            0, 3, 1, 2
        )
    return area_resize_matmul(frames, size)


def area_resize_matmul(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area resize as two matrix products: fast on GPUs, any ratio, up or down."""
    h, w = frames.shape[-2:]
    rows = _area_matrix(h, size[0], frames.device)
    cols = _area_matrix(w, size[1], frames.device)
    return torch.einsum("oh,nchw,pw->ncop", rows, frames.float(), cols)


def _area_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) weights: overlap of each output cell with each input pixel, rows sum to 1."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(hi, pix + 1) - torch.maximum(lo, pix)).clamp_min(0)
    return (overlap / overlap.sum(1, keepdim=True)).to(device, torch.float32)


def plan_factors(scales: tuple[int, ...], needed: float, max_passes: int = 2) -> tuple[int, ...]:
    """Native passes whose product is the smallest that reaches ``needed`` (fewest on ties).

    Returns ``()`` when no enlargement is needed; when even ``max_passes`` passes of the
    largest scale fall short, returns those and the caller finishes with a resize.
    """
    if needed <= 1.0:
        return ()
    plans: list[tuple[int, ...]] = [(s,) for s in scales]
    if max_passes >= 2:
        plans += [(a, b) for a in scales for b in scales if a >= b]
    reaching = [p for p in plans if math.prod(p) >= needed - 1e-9]
    if not reaching:
        return (max(scales),) * max_passes
    return min(reaching, key=lambda p: (math.prod(p), len(p)))


def fit_size(src: tuple[int, int], size: tuple[int, int], fit: Fit) -> tuple[int, int]:
    """Size the content must reach inside a ``size`` frame under ``fit``."""
    (h, w), (th, tw) = src, size
    if fit == "stretch":
        return size
    ratio = min(th / h, tw / w) if fit == "pad" else max(th / h, tw / w)
    return (max(1, round(h * ratio)), max(1, round(w * ratio)))


def place(content: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre ``content`` in a black ``size`` frame, cropping what overflows."""
    h, w = content.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return content
    top, left = (h - th) // 2, (w - tw) // 2
    cropped = content[..., max(0, top) : max(0, top) + th, max(0, left) : max(0, left) + tw]
    ch, cw = cropped.shape[-2:]
    pad_t, pad_l = (th - ch) // 2, (tw - cw) // 2
    return F.pad(cropped, (pad_l, tw - cw - pad_l, pad_t, th - ch - pad_t))


def is_monochrome(frames: torch.Tensor, tolerance: float = MONO_TOLERANCE) -> bool:
    """Whether every pixel of the batch has (nearly) equal R, G and B."""
    spread = frames.amax(dim=1) - frames.amin(dim=1)
    return bool(spread.amax() <= tolerance)


def to_gray(frames: torch.Tensor) -> torch.Tensor:
    """Luma replicated to three channels: a black-and-white film stays untinted."""
    weights = torch.tensor(_LUMA, device=frames.device, dtype=frames.dtype)
    luma = torch.einsum("nchw,c->nhw", frames, weights)[:, None]
    return luma.expand(-1, 3, -1, -1).contiguous()


class NetworkUpscaler:
    """A pretrained super-resolution network, tiled, batched, on any device."""

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device,
        models_dir: Path,
        denoise: int = -1,
        precision: Precision = "auto",
        tile: int = 0,
        overlap: int = 0,
        batch: int = 0,
        fit: Fit = "stretch",
        monochrome: Literal["auto", "yes", "no"] = "auto",
        compile: bool = False,
        max_passes: int = 2,
        bit_depth: int = 8,
        sync_pooling: bool = True,
        should_stop: ShouldStop = never,
    ) -> None:
        if fit not in ("stretch", "pad", "crop"):
            raise ValueError(f"fit must be stretch, pad or crop, not {fit!r}")
        self.name = spec.name
        self.spec = spec
        self.device = torch.device(device)
        if precision != "auto":
            self.compute = _PRECISIONS[precision]
        elif bit_depth > 8:
            # bf16 keeps 8 significant bits: features quantised that coarsely move flat
            # areas by ±2 10-bit codes. fp16 (11 bits) on GPUs, fp32 on CPUs keep them.
            self.compute = torch.float16 if self.device.type == "cuda" else torch.float32
        else:
            self.compute = compute_dtype(self.device)
        self.denoise = denoise
        self.tile = tile
        self.overlap = overlap
        self.batch = batch or (4 if self.device.type == "cuda" else 1)
        self.fit: Fit = fit
        self.monochrome = monochrome
        self.max_passes = max_passes
        self.compile = compile
        self.sync_pooling = sync_pooling
        self.should_stop = should_stop
        self.models_dir = models_dir
        # Load (and checksum) the native-scale nets now so a missing model fails the job
        # before any frame is decoded, not halfway through a film.
        for scale in spec.scales:
            self._network(spec.variant(scale, denoise))

    def _network(self, variant: Variant) -> LoadedNetwork:
        return load_network(
            self.models_dir, self.spec, variant, self.device, self.compute, self.compile
        )

    def __call__(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        src = (frames.shape[-2], frames.shape[-1])
        content = fit_size(src, size, self.fit)
        needed = max(content[0] / src[0], content[1] / src[1])
        mono = self.monochrome == "yes" or (self.monochrome == "auto" and is_monochrome(frames))
        # The networks were trained on [0, 1] images; decoded video may stray just outside.
        x = to_device(frames, self.device).to(torch.float32).clamp(0.0, 1.0)
        if mono:
            x = to_gray(x)
        for n, scale in enumerate(plan_factors(self.spec.scales, needed, self.max_passes)):
            # Compression and noise are in the source: a later pass enlarges the first's
            # clean output, and denoising it again would only soften it.
            x = self._pass(x, self.spec.variant(scale, self.denoise if n == 0 else -1))
        if x.shape[-2] >= content[0] and x.shape[-1] >= content[1]:
            x = area_resize(x, content)
        else:
            # Beyond what chained passes reach: finish the enlargement classically.
            x = F.interpolate(x, size=content, mode="bicubic", align_corners=False)
        if mono:
            x = to_gray(x)
        return place(x.clamp_(0.0, 1.0), size).to(frames.device, frames.dtype)

    def _pass(self, frames: torch.Tensor, variant: Variant) -> torch.Tensor:
        net = self._network(variant)
        tile = self.tile or self._auto_tile(net, frames)
        outputs = []
        # Hooks would break a compiled graph at every layer: compiled nets (bench only; the
        # workers never compile) are stopped between frames.
        with checked_layers(net.graph, never if self.compile else self.should_stop):
            for start in range(0, frames.shape[0], self.batch):
                chunk = frames[start : start + self.batch]
                outputs.append(self._pass_chunk(net, chunk, tile))
        return torch.cat(outputs)

    def _overlap(self, variant: Variant) -> int:
        # Context each tile needs: the U-Nets (prepad 18) differ by ~0.4 codes on average
        # from an untiled run at 16 px and ~0.24 at 36; waifu2x upconv_7 is exact at 16.
        return self.overlap or max(16, 2 * variant.prepad)

    def _pass_chunk(self, net: LoadedNetwork, chunk: torch.Tensor, tile: int) -> torch.Tensor:
        v = net.variant
        overlap = self._overlap(v)
        while True:
            try:
                with torch.inference_mode():
                    fn = partial(_forward, net, self.device, self.compute)
                    h, w = chunk.shape[-2:]
                    pooling = self.sync_pooling and net.graph.pooling_layers
                    if pooling and is_tiled(h, w, tile, v.align):
                        fn = partial(fn, pooled=self._frame_pooling(net, chunk, tile, overlap))
                    return run_tiled(fn, chunk, v.scale, tile, overlap, v.align)
            except torch.cuda.OutOfMemoryError:
                # Retry smaller: the budget estimate is a guess and other jobs share the GPU.
                if tile <= 64:
                    raise
                tile //= 2
                torch.cuda.empty_cache()

    def _frame_pooling(
        self, net: LoadedNetwork, chunk: torch.Tensor, tile: int, overlap: int
    ) -> dict[str, torch.Tensor]:
        """Frame-wide squeeze-excitation means: the area-weighted mean over all tiles.

        Without this each tile of Real-CUGAN / CUNet rescales its channels by its own
        statistics and tiles differ by up to 28 8-bit codes; a first pass that only
        gathers the statistics costs one more run but makes the tiles agree.
        """
        record: PoolRecord = {}
        fn = partial(_forward, net, self.device, self.compute, record=record)
        run_tiled(fn, chunk, net.variant.scale, tile, overlap, net.variant.align)
        pooled = {}
        for name, seen in record.items():
            total = sum(area for _, area in seen)
            pooled[name] = sum(mean.float() * (area / total) for mean, area in seen)
        # (Iterating, so later layers see synced upstream means, measured no better.)
        return pooled  # type: ignore[return-value]

    def _auto_tile(self, net: LoadedNetwork, frames: torch.Tensor) -> int:
        """Largest tile whose activations fit in a share of the free memory."""
        free = free_memory_bytes(self.device)
        # The CPU is shared with decode/encode and other workers: take at most a quarter.
        budget = free * (0.6 if self.device.type == "cuda" else 0.25)
        itemsize = 4 if self.compute == torch.float32 else 2
        per_pixel = net.elements_per_pixel * itemsize * min(self.batch, frames.shape[0]) * 1.5
        side = int(math.sqrt(budget / per_pixel)) - 2 * self._overlap(net.variant)
        if self.device.type == "cpu" and not net.graph.pooling_layers:
            # Past ~200 px the activations leave the CPU caches and every layer slows:
            # a 480p waifu2x frame took 0.81 s in 192 px tiles, 1.22 s whole. Nets with
            # global pooling stay whole: tiled, they need a second, statistics-only pass.
            side = min(side, CPU_TILE)
        return max(64, min(side, 2048))


def _forward(
    net: LoadedNetwork,
    device: torch.device,
    compute: torch.dtype,
    tile: torch.Tensor,
    pooled: dict[str, torch.Tensor] | None = None,
    record: PoolRecord | None = None,
) -> torch.Tensor:
    """One tile through the network: pad as the net expects, run, crop to scale × tile."""
    v = net.variant
    h, w = tile.shape[-2:]
    extra_h, extra_w = (-h) % v.align, (-w) % v.align
    padded = F.pad(tile, (v.prepad, v.prepad + extra_w, v.prepad, v.prepad + extra_h), "replicate")
    padded = padded.contiguous(memory_format=torch.channels_last)
    with autocast(device, compute):
        if pooled is None and record is None:
            out = net.module(padded)
        else:
            out = net.graph(padded, pooled=pooled, record=record)
    out = out.float()
    offset = 0 if v.valid else v.prepad * v.scale
    out = out[..., offset : offset + h * v.scale, offset : offset + w * v.scale]
    if v.add_nearest:
        out = out + F.interpolate(tile, scale_factor=v.scale, mode="nearest")
    return out


def _models_dir(options: dict[str, object]) -> Path:
    """The ``models_dir`` option, taken out of ``options``, else the settings' folder."""
    given = options.pop("models_dir", None)
    if given is None:
        from shared.config import get_settings

        return get_settings().resolved_models_dir()
    return Path(str(given))


def _network_factory(
    model: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> NetworkUpscaler:
    """Registry factory: ``dtype`` is the frames' dtype; ``precision`` picks the compute."""
    models_dir = _models_dir(options)
    return NetworkUpscaler(get_spec(model), device, models_dir, **options)  # type: ignore[arg-type]


def _video_factory(
    model: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> VideoUpscaler:
    """Registry factory for the video networks (worker.stages.video_sr, imported here late:
    it builds on this module)."""
    from worker.stages.video_sr import VideoUpscaler

    models_dir = _models_dir(options)
    options.pop("denoise", None)  # BasicVSR has no denoise levels
    return VideoUpscaler(device, models_dir, model, **options)  # type: ignore[arg-type]


# name -> factory(device, dtype, **options). AI upscalers register here (see worker/models);
# those that ignore an option (Lanczos: ``should_stop``, it is fast) take it all the same.
UpscalerFactory = Callable[..., Upscaler]
UPSCALERS: dict[str, UpscalerFactory] = {
    "lanczos": lambda device, dtype, fit="stretch", **options: LanczosUpscaler(fit),
    **{name: partial(_network_factory, name) for name in CATALOG},
    **{name: partial(_video_factory, name) for name in VIDEO_MODELS},
    "basicvsr": partial(_video_factory, VIDEO_DEFAULT),
    # The two modes users pick from; see FAITHFUL_MODEL / DETAILED_MODEL for why.
    **{mode: partial(_network_factory, model) for mode, model in MODES.items()},
}


def source_denoise(upscaler: str, lossy: bool) -> int:
    """The denoise level of ``upscaler``'s network when the job names none: for a source a
    lossy codec stored, the level its family meant for light compression
    (``ModelSpec.compressed_denoise``); none for a lossless one."""
    spec = CATALOG.get(MODES.get(upscaler, upscaler))
    return spec.compressed_denoise if spec is not None and lossy else -1


def model_facts(name: str, models_dir: Path | None = None) -> dict[str, object]:
    """The model behind upscaler ``name`` and its weight files' sha256 (as verified when
    they were fetched), for the report; ``{}`` for the classical one."""
    model = {**MODES, "basicvsr": VIDEO_DEFAULT}.get(name, name)
    spec = CATALOG.get(model) or VIDEO_MODELS.get(model)
    if spec is None:
        return {}
    manifest = read_manifest(models_dir or _models_dir({}))
    return {"model": model, "files": {f: manifest.get(f) for f in spec.files()}}


def check_models(models_dir: Path, upscalers: Iterable[str] = tuple(MODES)) -> None:
    """Worker health check: ``ModelUnavailable`` unless each upscaler's weights verify."""
    for name in upscalers:
        if name != "lanczos":
            verify(models_dir, [get_spec(MODES.get(name, name))])


def get_upscaler(
    name: str, device: torch.device, dtype: torch.dtype = torch.float32, **options: object
) -> Upscaler:
    """Build the upscaler called ``name``; unknown names raise ``KeyError`` with the choices."""
    try:
        factory = UPSCALERS[name]
    except KeyError:
        raise KeyError(f"unknown upscaler {name!r}; choose one of {sorted(UPSCALERS)}") from None
    return factory(device=device, dtype=dtype, **options)
