"""Video super-resolution stage: BasicVSR ×4 over temporal windows on a fixed frame grid.

Frames are (3, h, w) float RGB; values a little outside [0, 1] are clamped before the
network. Sizing: the network always runs ×4; a target up to ×4 (×2 included) is then
reached by an exact area resize, a larger one by a bicubic resize of the ×4 output (the
net has no ×8); a target no larger than the source skips the network.

Windows: window ``k`` of a :class:`WindowGrid` outputs the frames ``[k·core, (k+1)·core)``
(its core) and reads ``margin`` frames more on either side, clipped to the film. Windows
sit on the film's absolute frame indices, not on where a chunk starts, so every frame comes
from the one window in which it is most central and its output depends only on its index
and the film: a chunk that decodes :meth:`WindowGrid.context` frames either side of its
own gives bit-identical frames to an unchunked run (same device, dtype and tile size).
Memory is one window's, whatever the sequence length.

Tiles: windows larger than the tile are cut spatially (``worker.stages.tiling``) into
whole-window tiles with ``overlap`` px of context, cross-faded. The automatic tile follows
the device's *total* memory, not its free memory, so that every chunk of a film is cut
alike; a CUDA out-of-memory retries that window with half the tile (which changes that
window's pixels slightly).

Stopping: ``should_stop`` is asked before each window and before every layer of the
network (a window's recurrence runs seconds to minutes on a CPU); a true answer raises
``worker.cancel.Cancelled``.

Precision: fp16 on GPUs, fp32 on CPUs (see :class:`VideoUpscaler`); SPyNet and the warps
always run in fp32. Measured on 2 idle-ish CPU cores, fp32, one 16-frame window from
160×90: ~0.9 s per output frame at ×2 or ×4, ~0.35 GB above the loaded model; from
320×180, 3.6 s and 1.2 GB.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from shared.errors import ModelUnavailable
from worker.cancel import ShouldStop, check, checked_layers, never
from worker.devices import keep_freed_memory, total_memory_bytes
from worker.models.basicvsr_arch import BasicVSR, blocks_in, convert_basicsr_state
from worker.models.catalog import VideoModelSpec, get_video_spec
from worker.models.store import FETCH_HINT, verify_files
from worker.stages.tiling import run_tiled
from worker.stages.upscale import Fit, area_resize, fit_size, is_monochrome, place, to_gray

DEFAULT_MODEL = "basicvsr-vimeo90k-bi"
Precision = Literal["auto", "fp32", "bf16", "fp16"]
_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Context (input px) each spatial tile reads beyond its core on every inner side.
DEFAULT_OVERLAP = 16
# Below this a tile is mostly context: an out-of-memory there is not a tiling problem.
MIN_TILE = 64
# Elements alive per input pixel: ~3000 while a frame is rebuilt (256 channels at 2×, 64
# at 4×), plus per frame of the window its input and per kept frame its stored features
# and ×4 output. Measured peaks stay under this with the 1.5 margin below.
_RECONSTRUCT_ELEMENTS = 3000
_KEPT_ELEMENTS = 64 + 3 * 16
_WINDOW_ELEMENTS = 3 + 3


@dataclass(frozen=True)
class WindowGrid:
    """Temporal windows on a fixed grid of absolute frame indices (see the module doc)."""

    # Bikes, 48 frames ×4, luma PSNR vs one 48-frame window: (8, 4) -0.17 dB, (8, 6) -0.07,
    # (16, 6) -0.06, (16, 8) -0.04, for 1.5×, 1.75×, 1.38× and 1.5× its trunk steps per frame.
    core: int = 16
    margin: int = 8

    def __post_init__(self) -> None:
        if self.core < 1 or self.margin < 0:
            raise ValueError(f"a window needs core ≥ 1 and margin ≥ 0, got {self}")

    @property
    def length(self) -> int:
        """Frames a window reads away from the film's ends."""
        return self.core + 2 * self.margin

    def window(self, k: int, total: int | None = None) -> range:
        """The frames window ``k`` reads, clipped to the film (``total`` frames, if known)."""
        stop = (k + 1) * self.core + self.margin
        return range(
            max(0, k * self.core - self.margin), stop if total is None else min(stop, total)
        )

    def context(self, start: int, stop: int, total: int | None = None) -> tuple[int, int]:
        """Frames to decode before ``start`` and after ``stop`` to output ``[start, stop)``.

        Decoding ``[start - before, stop + after)`` (the film's end cuts it short where it
        comes first) lets frames ``start … stop-1`` come out as in an unchunked run.
        """
        if stop <= start:
            return (0, 0)
        first = self.window(start // self.core, total).start
        last = self.window((stop - 1) // self.core, total).stop
        return (start - first, max(0, last - stop))


_lock = threading.Lock()
_cache: dict[tuple[Path, str, str, torch.dtype], BasicVSR] = {}


def load_video_network(
    models_dir: Path, spec: VideoModelSpec, device: torch.device, dtype: torch.dtype
) -> BasicVSR:
    """The network of ``spec``, checksummed and loaded on first use, then cached per process."""
    key = (models_dir.resolve(), spec.name, str(device), dtype)
    with _lock:
        if key not in _cache:
            _cache[key] = _load(models_dir, spec, device, dtype)
        return _cache[key]


def clear_cache() -> None:
    """Forget every loaded video network (tests, or to free memory)."""
    with _lock:
        _cache.clear()


def _load(
    models_dir: Path, spec: VideoModelSpec, device: torch.device, dtype: torch.dtype
) -> BasicVSR:
    if not models_dir.is_dir():
        raise ModelUnavailable(
            f"no models directory at {models_dir} (model {spec.name}); {FETCH_HINT}"
        )
    verify_files(models_dir, [spec.weights])
    state = torch.load(models_dir / spec.weights, map_location="cpu", weights_only=True)
    params = convert_basicsr_state(state)
    net = BasicVSR(blocks=blocks_in(params))
    net.load_state_dict(params)
    net = net.eval().requires_grad_(False).to(device).cast_features(dtype)
    if device.type == "cpu":
        keep_freed_memory()
    return net


class VideoUpscaler:
    """BasicVSR on a sequence of frames, windowed in time and tiled in space."""

    name = "basicvsr"

    def __init__(
        self,
        device: torch.device,
        models_dir: Path,
        model: str = DEFAULT_MODEL,
        precision: Precision = "auto",
        grid: WindowGrid | None = None,
        tile: int = 0,
        overlap: int = DEFAULT_OVERLAP,
        fit: Fit = "stretch",
        monochrome: Literal["auto", "yes", "no"] = "auto",
        # Accepted like the image upscalers' option; fp16 keeps 10-bit precision anyway.
        bit_depth: int = 8,
        should_stop: ShouldStop = never,
    ) -> None:
        if fit not in ("stretch", "pad", "crop"):
            raise ValueError(f"fit must be stretch, pad or crop, not {fit!r}")
        self.spec = get_video_spec(model)
        self.device = torch.device(device)
        # Measured against fp32 on real clips (×4, 32 frames): fp16 0.02 codes mean, same
        # PSNR (activations stay under 10, far from fp16's limit); bf16 0.11–0.25 codes and
        # -0.02 to -0.09 dB, most of what BasicVSR gains over Lanczos on soft live action.
        # So fp16 on GPUs (any bit depth); fp32 on CPUs, where fp16 is emulated (100× slower)
        # and bf16, though 1.6× faster on AVX-512-BF16 cores, costs that; ask for it by name.
        if precision != "auto":
            self.compute = _PRECISIONS[precision]
        else:
            self.compute = torch.float16 if self.device.type == "cuda" else torch.float32
        self.grid = grid or WindowGrid()
        self.tile = tile
        self.overlap = overlap
        self.fit: Fit = fit
        self.monochrome = monochrome
        self.should_stop = should_stop
        self.models_dir = models_dir
        # Load (and checksum) now so a missing model fails the job before any decoding.
        self._network()

    def _network(self) -> BasicVSR:
        return load_video_network(self.models_dir, self.spec, self.device, self.compute)

    def context(self, start: int, stop: int, total: int | None = None) -> tuple[int, int]:
        """Frames to decode either side of ``[start, stop)``: :meth:`WindowGrid.context`."""
        return self.grid.context(start, stop, total)

    def __call__(
        self,
        frames: torch.Tensor,
        size: tuple[int, int],
        *,
        first: int = 0,
        start: int | None = None,
        stop: int | None = None,
        total: int | None = None,
    ) -> torch.Tensor:
        """``frames`` (T, 3, h, w), film frames ``first …``, as (n, 3, H, W): see :meth:`stream`."""
        return torch.cat(
            list(self.stream(frames, size, first=first, start=start, stop=stop, total=total))
        )

    def stream(
        self,
        frames: Iterable[torch.Tensor],
        size: tuple[int, int],
        *,
        first: int = 0,
        start: int | None = None,
        stop: int | None = None,
        total: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Upscaled film frames ``start … stop-1`` at ``size`` = (H, W), a window at a time.

        ``frames`` yields (3, h, w) or (n, 3, h, w) tensors: the film's frames from index
        ``first`` on, in order. Defaults: ``start = first``; ``stop`` = where the input
        ends. The input must start at or before ``start - context()[0]`` (or at 0) and run
        to ``stop + context()[1]`` or the film's end: where it ends sooner, the film is
        taken to end there, unless ``total`` (the film's frame count) says otherwise, in
        which case that is an error. Yields (n, 3, H, W) batches; at most one window of
        input frames is held at a time.
        """
        start = first if start is None else start
        if start < first:
            raise ValueError(f"output starts at frame {start}, before the input's first {first}")
        source = _single_frames(frames)
        buffer: list[torch.Tensor] = []
        at = first  # film index of buffer[0]
        ended = False
        done = start  # the next frame to output
        while stop is None or done < stop:
            check(self.should_stop)
            k = done // self.grid.core
            want = self.grid.window(k, total)
            if want.start < first:
                raise ValueError(
                    f"window {k} reads frames from {want.start}; the input starts at {first}"
                )
            # Drop what this window does not read (and skip input before it).
            while at < want.start and not ended:
                if buffer:
                    buffer.pop(0)
                elif next(source, None) is None:
                    ended = True
                    break
                at += 1
            while not ended and at + len(buffer) < want.stop:
                frame = next(source, None)
                if frame is None:
                    ended = True
                else:
                    buffer.append(frame.to(self.device, torch.float32).clamp(0.0, 1.0))
            end = at + len(buffer)
            if total is not None and end < want.stop:
                raise ValueError(f"the input ends at frame {end}; window {k} needs {want.stop}")
            hi = min((k + 1) * self.grid.core, end, end if stop is None else stop)
            if hi <= done:
                break  # the input (the film) has ended
            window = torch.stack(buffer[want.start - at : end - at])
            with torch.inference_mode():
                yield self._window(window, range(done - want.start, hi - want.start), size)
            done = hi
        if stop is not None and done < stop:
            raise ValueError(f"the input ends at frame {done}, before the output's stop {stop}")

    def _window(self, window: torch.Tensor, keep: range, size: tuple[int, int]) -> torch.Tensor:
        """Kept frames of one window (T, 3, h, w), upscaled to ``size``."""
        src = (window.shape[-2], window.shape[-1])
        content = fit_size(src, size, self.fit)
        needed = max(content[0] / src[0], content[1] / src[1])
        mono = self.monochrome == "yes" or (self.monochrome == "auto" and is_monochrome(window))
        x = to_gray(window) if mono else window
        # No enlargement: the network would only be undone by the resize.
        out = x[keep.start : keep.stop] if needed <= 1 else self._upscale(x, keep)
        if out.shape[-2] >= content[0] and out.shape[-1] >= content[1]:
            out = area_resize(out, content).to(self.device)
        else:
            out = F.interpolate(out, size=content, mode="bicubic", align_corners=False)
        if mono:
            out = to_gray(out)
        return place(out.clamp_(0.0, 1.0), size)

    def _upscale(self, x: torch.Tensor, keep: range) -> torch.Tensor:
        """BasicVSR ×4 of frames ``keep`` of the window ``x`` (T, 3, h, w), tile by tile."""
        net = self._network()
        t, _, h, w = x.shape
        n = len(keep)

        def run(piece: torch.Tensor) -> torch.Tensor:
            # The tiler sees the window as one image of 3·T channels; the net, as a sequence.
            ph, pw = piece.shape[-2:]
            out = net(piece.reshape(1, t, 3, ph, pw), keep)
            return out.reshape(1, n * 3, ph * 4, pw * 4)

        tile = self.tile or self._auto_tile(t, n)
        flat = x.reshape(1, t * 3, h, w)
        while True:
            try:
                with checked_layers(net, self.should_stop):
                    out = run_tiled(run, flat, 4, tile, self.overlap)
                return out.reshape(n, 3, h * 4, w * 4)
            except torch.cuda.OutOfMemoryError:
                # Retry smaller: the estimate is a guess and the GPU may be shared.
                if tile <= MIN_TILE:
                    raise
                tile //= 2
                torch.cuda.empty_cache()

    def _auto_tile(self, frames: int, kept: int) -> int:
        """Largest square tile whose window fits a share of the device's total memory."""
        share = 0.5 if self.device.type == "cuda" else 0.25
        itemsize = 4 if self.compute == torch.float32 else 2
        elements = _RECONSTRUCT_ELEMENTS + kept * _KEPT_ELEMENTS + frames * _WINDOW_ELEMENTS
        per_pixel = elements * itemsize * 1.5
        side = (
            int(math.sqrt(total_memory_bytes(self.device) * share / per_pixel)) - 2 * self.overlap
        )
        return max(MIN_TILE, min(side, 2048))


def _single_frames(frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Each (3, h, w) frame of an iterable of frames or (n, 3, h, w) batches, in order."""
    for item in frames:
        if item.dim() == 3:
            yield item
        elif item.dim() == 4:
            yield from item
        else:
            raise ValueError(f"frames must be (3, h, w) or (n, 3, h, w), got {tuple(item.shape)}")
