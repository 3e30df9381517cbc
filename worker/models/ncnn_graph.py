"""A PyTorch interpreter for the ncnn graphs the super-resolution wheels ship.

Why an interpreter rather than one ``*_arch.py`` per family: the 40-odd shipped graphs
(RRDBNet, SRVGG, waifu2x upconv_7 / cunet, Real-CUGAN ×2/×3/×4) are built from the same
14 ncnn layer types, and each ``.param`` already states the exact wiring, crop offsets and
activation slopes the weights were exported with. Reading that wiring keeps every model
bit-for-bit faithful to the reference runtime (see tests/unit/test_sr_port.py), with one
small tested module instead of five hand-transcribed architectures that could drift.
The result is an ordinary ``nn.Module`` of ``nn.Conv2d`` layers, so autocast,
channels_last and ``torch.compile`` apply unchanged.

On CPUs, oneDNN's bf16 direct convolution already runs at the cores' peak, yet ncnn beats
it with Winograd convolutions (fewer multiplies per output). :meth:`NcnnGraph.use_winograd`
swaps the wide 3×3 layers for :class:`WinogradConv2d`, which does the same.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAGIC = 7767517
# The 4-byte tags ncnn writes in front of a weight array (ModelBin "type 0" reads).
_TAG_FP16 = 0x01306B47
_TAG_FP32_RAW = 0x0002C056
_TAG_FP32 = 0x00000000

SUPPORTED_LAYERS = frozenset(
    {
        "Input",
        "Split",
        "Convolution",
        "Deconvolution",
        "PReLU",
        "InnerProduct",
        "Pooling",
        "BinaryOp",
        "Eltwise",
        "Concat",
        "Crop",
        "Scale",
        "Interp",
        "PixelShuffle",
    }
)


class NcnnFormatError(ValueError):
    """The .param/.bin pair is malformed or uses a layer this interpreter does not know."""


ParamValue = int | float | list[int] | list[float]
# Per global-pooling layer: the (N, C) means seen in each tile and the area they cover.
PoolRecord = dict[str, list[tuple[torch.Tensor, int]]]


@dataclass(frozen=True)
class Layer:
    """One line of a .param file."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, ParamValue] = field(default_factory=dict)

    def integer(self, key: int, default: int = 0) -> int:
        """Integer parameter ``key``."""
        value = self.params.get(key, default)
        assert isinstance(value, int | float)
        return int(value)

    def real(self, key: int, default: float = 0.0) -> float:
        """Float parameter ``key``."""
        value = self.params.get(key, default)
        assert isinstance(value, int | float)
        return float(value)

    def array(self, key: int) -> list[float]:
        """Array parameter ``key`` (written as ``-233xx=n,v1,…``); empty when absent."""
        value = self.params.get(key, [])
        return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def _number(text: str) -> int | float:
    return float(text) if re.search(r"[.eE]", text) else int(text)


def parse_param(text: str) -> list[Layer]:
    """Parse the text form of an ncnn .param file."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise NcnnFormatError("not an ncnn .param file (bad magic number)")
    layer_count = int(lines[1][0])
    layers = []
    for tokens in lines[2 : 2 + layer_count]:
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        if kind not in SUPPORTED_LAYERS:
            raise NcnnFormatError(f"layer {name}: unsupported ncnn layer type {kind}")
        inputs = tuple(tokens[4 : 4 + n_in])
        outputs = tuple(tokens[4 + n_in : 4 + n_in + n_out])
        params: dict[int, ParamValue] = {}
        for item in tokens[4 + n_in + n_out :]:
            key_text, value_text = item.split("=", 1)
            key = int(key_text)
            if key <= -23300:
                # Array values: "-233xx=count,v1,v2,…" for parameter id xx.
                values = [_number(v) for v in value_text.split(",")[1:]]
                params[-key - 23300] = values
            else:
                params[key] = _number(value_text)
        layers.append(Layer(kind, name, inputs, outputs, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"expected {layer_count} layers, found {len(layers)}")
    return layers


class _WeightReader:
    """Reads arrays from a .bin in layer order, as ncnn's ModelBin does."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def _take(self, count: int, dtype: str, itemsize: int) -> np.ndarray:
        end = self.offset + count * itemsize
        if end > len(self.data):
            raise NcnnFormatError("the .bin ends before every layer got its weights")
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset = end
        return array.astype(np.float32)

    def raw(self, count: int) -> np.ndarray:
        """An untagged fp32 array (biases, PReLU slopes)."""
        return self._take(count, "<f4", 4)

    def tagged(self, count: int) -> np.ndarray:
        """A weight array led by its type tag: fp16 (padded to 4 bytes) or fp32."""
        (tag,) = np.frombuffer(self.data, dtype="<u4", count=1, offset=self.offset)
        self.offset += 4
        if tag == _TAG_FP16:
            array = self._take(count, "<f2", 2)
            self.offset += (-count * 2) % 4
            return array
        if tag in (_TAG_FP32, _TAG_FP32_RAW):
            return self._take(count, "<f4", 4)
        raise NcnnFormatError(f"unsupported weight encoding tag {int(tag):#010x} (int8?)")

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise NcnnFormatError(
                f".bin has {len(self.data) - self.offset} bytes left after the last layer"
            )


def _act(x: torch.Tensor, kind: int, params: list[float]) -> torch.Tensor:
    # In place: ``x`` is the fresh output of the layer this activation is fused into, so
    # nobody else holds it, and a 4K-tile activation map is not worth copying.
    if kind == 0:
        return x
    if kind == 1:
        return F.relu(x, inplace=True)
    if kind == 2:
        return F.leaky_relu(x, params[0] if params else 0.0, inplace=True)
    if kind == 4:
        return torch.sigmoid(x)
    raise NcnnFormatError(f"unsupported fused activation type {kind}")


def _module_key(name: str) -> str:
    return "l_" + re.sub(r"\W", "_", name)


class NcnnGraph(nn.Module):
    """An ncnn graph run by PyTorch: one input blob (N, C, H, W), one output blob."""

    def __init__(self, layers: list[Layer], weights: bytes | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.convs = nn.ModuleDict()
        self.linears = nn.ModuleDict()
        self.prelus = nn.ParameterDict()
        reader = _WeightReader(weights) if weights is not None else None
        produced: set[str] = set()
        for layer in layers:
            self._build(layer, reader)
            produced.update(layer.outputs)
        if reader is not None:
            reader.finish()
        consumed = {blob for layer in layers for blob in layer.inputs}
        inputs = [layer.outputs[0] for layer in layers if layer.kind == "Input"]
        outputs = sorted(produced - consumed)
        if len(inputs) != 1 or len(outputs) != 1:
            raise NcnnFormatError(f"expected one input and one output, got {inputs} {outputs}")
        self.input_blob, self.output_blob = inputs[0], outputs[0]
        # Drop each blob after its last reader: RRDBNet's dense blocks otherwise keep
        # every intermediate map alive and triple the peak memory of a tile.
        self._last_use = {blob: i for i, layer in enumerate(layers) for blob in layer.inputs}

    @classmethod
    def from_files(cls, param: Path, weights: Path) -> NcnnGraph:
        """Load a .param/.bin pair."""
        return cls(parse_param(param.read_text()), weights.read_bytes())

    def _build(self, layer: Layer, reader: _WeightReader | None) -> None:
        key = _module_key(layer.name)
        if layer.kind in ("Convolution", "Deconvolution"):
            out_ch = layer.integer(0)
            kw = layer.integer(1)
            kh = layer.integer(11, kw)
            weight_count = layer.integer(6)
            in_ch = weight_count // (out_ch * kh * kw)
            stride = (layer.integer(13, layer.integer(3, 1)), layer.integer(3, 1))
            dilation = (layer.integer(12, layer.integer(2, 1)), layer.integer(2, 1))
            pad_l = layer.integer(4, 0)
            pads = (layer.integer(14, pad_l), layer.integer(16, layer.integer(14, pad_l)))
            pads_w = (pad_l, layer.integer(15, pad_l))
            if pads[0] != pads[1] or pads_w[0] != pads_w[1] or min(*pads, *pads_w) < 0:
                raise NcnnFormatError(f"layer {layer.name}: asymmetric padding unsupported")
            bias = layer.integer(5) == 1
            conv: nn.Module
            if layer.kind == "Convolution":
                conv = nn.Conv2d(
                    in_ch, out_ch, (kh, kw), stride, (pads[0], pad_l), dilation, 1, bias
                )
            else:
                conv = nn.ConvTranspose2d(
                    in_ch, out_ch, (kh, kw), stride, (pads[0], pad_l), 0, 1, bias, dilation
                )
            if reader is not None:
                w = torch.from_numpy(reader.tagged(weight_count)).view(out_ch, in_ch, kh, kw)
                # ncnn keeps deconvolution weights as (out, in, kh, kw); torch wants (in, out…).
                conv.weight.data.copy_(w if layer.kind == "Convolution" else w.transpose(0, 1))
                if bias:
                    conv.bias.data.copy_(torch.from_numpy(reader.raw(out_ch)))  # type: ignore[union-attr]
            if (
                isinstance(conv, nn.ConvTranspose2d)
                and conv.dilation == (1, 1)
                and stride[0] == stride[1]
            ):
                conv = SubPixelDeconv(conv)
            self.convs[key] = conv
        elif layer.kind == "InnerProduct":
            out_f, count = layer.integer(0), layer.integer(2)
            linear = nn.Linear(count // out_f, out_f, bias=layer.integer(1) == 1)
            if reader is not None:
                linear.weight.data.copy_(
                    torch.from_numpy(reader.tagged(count)).view(out_f, count // out_f)
                )
                if linear.bias is not None:
                    linear.bias.data.copy_(torch.from_numpy(reader.raw(out_f)))
            self.linears[key] = linear
        elif layer.kind == "PReLU":
            count = layer.integer(0, 1)
            slope = torch.full((count,), 0.25)
            if reader is not None:
                slope = torch.from_numpy(reader.raw(count))
            self.prelus[key] = nn.Parameter(slope, requires_grad=False)
        elif layer.kind == "Scale" and layer.integer(0) != -233:
            raise NcnnFormatError(f"layer {layer.name}: only two-input Scale is supported")
        elif layer.kind == "Pooling" and not (layer.integer(0) == 1 and layer.integer(4) == 1):
            raise NcnnFormatError(f"layer {layer.name}: only global average pooling is supported")

    def use_winograd(self, dtype: torch.dtype, min_channels: int = 64) -> None:
        """Run 3×3 stride-1 convolutions at least ``min_channels`` wide by Winograd.

        Narrower layers stay direct: their transforms cost more than the multiplies saved
        (measured on Zen 4: 1.8× faster at 128→256 channels, 1.5× at 64→128, slower at 32→64).
        """
        slopes = {0: None, 1: 0.0}
        for layer in self.layers:
            if layer.kind != "Convolution" or layer.integer(9) not in (0, 1, 2):
                continue
            key = _module_key(layer.name)
            conv = self.convs[key]
            if not (
                isinstance(conv, nn.Conv2d)
                and conv.kernel_size == (3, 3)
                and conv.stride == (1, 1)
                and conv.dilation == (1, 1)
                and conv.groups == 1
                and conv.padding[0] == conv.padding[1]
                and min(conv.in_channels, conv.out_channels) >= min_channels
            ):
                continue
            params = layer.array(10)
            slope = slopes.get(layer.integer(9), params[0] if params else 0.0)
            self.convs[key] = WinogradConv2d(conv, slope, dtype)

    def forward(
        self,
        x: torch.Tensor,
        pooled: Mapping[str, torch.Tensor] | None = None,
        record: PoolRecord | None = None,
    ) -> torch.Tensor:
        """Run the graph on ``x`` (N, C, H, W); values as the model was trained (0–1 RGB).

        ``record`` collects each global-pooling layer's (N, C) means and pooled area;
        ``pooled`` replaces them. Tiles of one frame use this to share frame-wide
        squeeze-excitation statistics, as ncnn's "sync gap" does.
        """
        return self._execute(x, None, pooled, record)

    @property
    def pooling_layers(self) -> tuple[str, ...]:
        """Names of the global-pooling layers (whose output depends on the whole input)."""
        return tuple(layer.name for layer in self.layers if layer.kind == "Pooling")

    def peak_elements(self, height: int, width: int) -> int:
        """Most tensor elements alive at once for one (1, C, height, width) input (meta run)."""
        peak = [0]
        first = next(iter(self.convs.values()))
        assert isinstance(first, nn.Conv2d | nn.ConvTranspose2d)
        channels = first.in_channels
        meta = NcnnGraph(self.layers).to("meta")
        meta._execute(torch.empty(1, channels, height, width, device="meta"), peak)
        return peak[0]

    def _execute(
        self,
        x: torch.Tensor,
        peak: list[int] | None,
        pooled: Mapping[str, torch.Tensor] | None = None,
        record: PoolRecord | None = None,
    ) -> torch.Tensor:
        blobs: dict[str, torch.Tensor] = {self.input_blob: x}
        for i, layer in enumerate(self.layers):
            if layer.kind == "Input":
                continue
            args = [blobs[name] for name in layer.inputs]
            if layer.kind == "Split":
                for name in layer.outputs:
                    blobs[name] = args[0]
            else:
                blobs[layer.outputs[0]] = self._run(layer, args)
            if layer.kind == "Pooling":
                if record is not None:
                    area = args[0].shape[-2] * args[0].shape[-1]
                    record.setdefault(layer.name, []).append((blobs[layer.outputs[0]], area))
                if pooled is not None:
                    blobs[layer.outputs[0]] = pooled[layer.name].to(args[0].dtype)
            if peak is not None:
                live = {id(t): t.numel() for t in blobs.values()}
                peak[0] = max(peak[0], sum(live.values()))
            for name in layer.inputs:
                if self._last_use.get(name) == i and name != self.output_blob:
                    blobs.pop(name, None)
        return blobs[self.output_blob]

    def _run(self, layer: Layer, args: list[torch.Tensor]) -> torch.Tensor:
        kind = layer.kind
        key = _module_key(layer.name)
        if kind in ("Convolution", "Deconvolution"):
            conv = self.convs[key]
            if isinstance(conv, WinogradConv2d):
                return conv(args[0])  # the activation is fused into it
            return _act(conv(args[0]), layer.integer(9), layer.array(10))
        if kind == "InnerProduct":
            return _act(self.linears[key](args[0]), layer.integer(9), layer.array(10))
        if kind == "PReLU":
            slope = self.prelus[key]
            return F.prelu(args[0], slope.to(args[0].dtype))
        if kind == "Pooling":
            # Global average pooling: ncnn yields a 1-D blob of channels, (N, C) here.
            return args[0].mean(dim=(2, 3))
        if kind in ("BinaryOp", "Scale"):
            a, b = (_broadcastable(t) for t in _pair(args))
            if kind == "Scale":
                return a * b
            op = layer.integer(0)
            if op == 0:
                return a + b
            if op == 1:
                return a - b
            if op == 2:
                return a * b
            if op == 3:
                return a / b
            raise NcnnFormatError(f"layer {layer.name}: unsupported BinaryOp {op}")
        if kind == "Eltwise":
            op, coeffs = layer.integer(0, 1), layer.array(1)
            if op != 1:
                raise NcnnFormatError(f"layer {layer.name}: only Eltwise sum is supported")
            if not coeffs:
                coeffs = [1.0] * len(args)
            total = args[0] * coeffs[0] if coeffs[0] != 1.0 else args[0]
            for arg, c in zip(args[1:], coeffs[1:], strict=True):
                total = total + (arg * c if c != 1.0 else arg)
            return total
        if kind == "Concat":
            if layer.integer(0, 0) != 0:
                raise NcnnFormatError(f"layer {layer.name}: only channel Concat is supported")
            return torch.cat(args, dim=1)
        if kind == "Crop":
            return _crop(layer, args)
        if kind == "Interp":
            mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}[layer.integer(0)]
            scale = (layer.real(1, 1.0), layer.real(2, 1.0))
            h, w = args[0].shape[-2:]
            size = (int(h * scale[0]), int(w * scale[1]))
            if mode == "nearest":
                return F.interpolate(args[0], size=size, mode="nearest")
            return F.interpolate(args[0], size=size, mode=mode, align_corners=False)
        if kind == "PixelShuffle":
            if layer.integer(1, 0) != 0:
                raise NcnnFormatError(f"layer {layer.name}: only PixelShuffle mode 0")
            return F.pixel_shuffle(args[0], layer.integer(0, 1))
        raise NcnnFormatError(f"layer {layer.name}: unsupported layer type {kind}")


# Winograd F(4×4, 3×3) (Lavin & Gray, 2016): each 4×4 output block comes from a 6×6 input
# patch with 36 multiplies per channel pair instead of 144. V = Bᵀ d B, U = G g Gᵀ,
# Y = Aᵀ (U ⊙ V) A; the ⊙ summed over input channels is one batched matrix product.
_WINO_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_WINO_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_WINO_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def _combine(coefficients: Sequence[float], terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ cᵢ·termᵢ, skipping zeros: the transforms are sparse small-integer matrices."""
    total: torch.Tensor | None = None
    for c, term in zip(coefficients, terms, strict=True):
        if c == 0:
            continue
        scaled = term if c == 1 else -term if c == -1 else term * c
        total = scaled if total is None else total + scaled
    assert total is not None
    return total


def _winograd_input(padded: torch.Tensor, tiles_h: int, tiles_w: int) -> torch.Tensor:
    """(N, H, W, C) padded input → (36, N·tiles, C): each 6×6 patch (stride 4) as Bᵀ d B."""
    n, _, _, c = padded.shape
    sn, sh, sw, sc = padded.stride()
    patches = padded.as_strided((6, 6, n, tiles_h, tiles_w, c), (sh, sw, sn, 4 * sh, 4 * sw, sc))
    rows = [_combine(b, patches) for b in _WINO_BT]
    v = torch.stack([_combine(b, row) for row in rows for b in _WINO_BT])
    return v.reshape(36, n * tiles_h * tiles_w, c)


def _winograd_output(
    m: torch.Tensor,
    n: int,
    tiles_h: int,
    tiles_w: int,
    height: int,
    width: int,
    bias: torch.Tensor,
    slope: torch.Tensor,
) -> torch.Tensor:
    """(36, N·tiles, K) products → (N, K, height, width) channels_last: Aᵀ M A + bias, leaky."""
    k = m.shape[-1]
    blocks = m.view(6, 6, n, tiles_h, tiles_w, k)
    rows = [_combine(a, blocks) for a in _WINO_AT]
    y = torch.stack([_combine(a, row) for row in rows for a in _WINO_AT])
    y = y.view(4, 4, n, tiles_h, tiles_w, k).permute(2, 3, 0, 4, 1, 5)
    y = y.reshape(n, 4 * tiles_h, 4 * tiles_w, k)[:, :height, :width] + bias
    y = torch.where(y >= 0, y, y * slope)
    return y.to(m.dtype).permute(0, 3, 1, 2)


@functools.cache
def _winograd_kernels() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    # Compiled, the transforms become one fused, vectorised pass each; eager they would be
    # ~40 separate elementwise passes and cost more than the multiplies they save.
    # Shapes are dynamic: every layer and tile size would otherwise compile anew (and
    # past torch._dynamo's recompile limit run eagerly, slower than direct convolution).
    # Hence also plain tensors for bias and slope: parameters and floats get specialised.
    with warnings.catch_warnings():
        # Inductor's first import loads torch.utils.mkldnn, whose class body still uses
        # the deprecated torch.jit.script_method: torch's code, nothing of ours to fix.
        warnings.filterwarnings(
            "ignore", r"`torch\.jit\.script_method` is deprecated", DeprecationWarning
        )
        return (
            torch.compile(_winograd_input, dynamic=True),
            torch.compile(_winograd_output, dynamic=True),
        )


class WinogradConv2d(nn.Module):
    """A 3×3 stride-1 convolution and its fused (leaky) ReLU, by Winograd F(4×4, 3×3).

    Transforms and products run in ``dtype`` (bf16 on CPU), accumulating in fp32 inside
    each fused pass; compared with direct bf16 convolution the error grows ~7× (still
    well below an 8-bit code on the catalogue's nets, see tests/unit/test_sr_port.py).
    """

    def __init__(self, conv: nn.Conv2d, slope: float | None, dtype: torch.dtype) -> None:
        super().__init__()
        g = torch.tensor(_WINO_G, dtype=torch.float64)
        weight = conv.weight.detach().to(torch.float64)  # (out, in, 3, 3)
        u = torch.einsum("ik,jl,ockl->ijco", g, g, weight)
        u = u.reshape(36, conv.in_channels, conv.out_channels)
        self.u = nn.Parameter(u.to(dtype).contiguous(), requires_grad=False)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.detach().float().clone())
        # Slope 1 is no activation, 0 a plain ReLU.
        self.register_buffer("slope", torch.tensor(1.0 if slope is None else slope))
        self.pad = int(conv.padding[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as the convolution (+ activation) it replaced, up to rounding."""
        n, _, h, w = x.shape
        out_h, out_w = h + 2 * self.pad - 2, w + 2 * self.pad - 2
        tiles_h, tiles_w = -(-out_h // 4), -(-out_w // 4)
        # NHWC so channels are the contiguous, vectorised axis; zero-pad to whole tiles.
        bottom = 4 * tiles_h + 2 - h - self.pad
        right = 4 * tiles_w + 2 - w - self.pad
        nhwc = x.to(self.u.dtype).permute(0, 2, 3, 1)
        padded = F.pad(nhwc, (0, 0, self.pad, right, self.pad, bottom))
        transform_in, transform_out = _winograd_kernels()
        m = torch.bmm(transform_in(padded, tiles_h, tiles_w), self.u)
        return transform_out(m, n, tiles_h, tiles_w, out_h, out_w, self.bias, self.slope)


class SubPixelDeconv(nn.Module):
    """A transposed convolution recast as convolution + pixel shuffle (same numbers).

    oneDNN has no fast channels_last bf16 deconvolution, and the generic fallback took
    ~10 % of waifu2x's time; each output phase is a plain convolution over the input.
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        (stride, _), (kh, kw) = deconv.stride, deconv.kernel_size
        # ncnn padding is always numeric; torch's type also admits "same"/"valid".
        ph, pw = (int(p) for p in deconv.padding)
        self.rows = _phase_taps(stride, kh, ph)
        self.cols = _phase_taps(stride, kw, pw)
        self.geometry = (stride, kh, kw, ph, pw)
        in_ch, out_ch = deconv.in_channels, deconv.out_channels
        rows, cols = self.rows, self.cols
        weight = torch.zeros(out_ch, stride, stride, in_ch, rows.size, cols.size)
        source = deconv.weight.detach()  # (in, out, kh, kw)
        for k_h, (a_h, t_h) in enumerate(rows.taps):
            for k_w, (a_w, t_w) in enumerate(cols.taps):
                weight[:, a_h, a_w, :, t_h, t_w] = source[:, :, k_h, k_w].T
        phases = out_ch * stride * stride
        self.conv = nn.Conv2d(in_ch, phases, (rows.size, cols.size), bias=False)
        self.conv.weight.data.copy_(weight.reshape(phases, in_ch, rows.size, cols.size))
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(out_ch)
        self.bias = nn.Parameter(bias.repeat_interleave(stride * stride), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as the transposed convolution it replaced."""
        h, w = x.shape[-2:]
        stride, kh, kw, ph, pw = self.geometry
        out_h, out_w = (h - 1) * stride + kh - 2 * ph, (w - 1) * stride + kw - 2 * pw
        steps_h, steps_w = -(-out_h // stride), -(-out_w // stride)
        # Zero-pad (or trim, when negative) so output step m reads inputs m + jmin … m + jmax.
        top, left = -self.rows.jmin, -self.cols.jmin
        bottom = steps_h + self.rows.size - 1 - (h + top)
        right = steps_w + self.cols.size - 1 - (w + left)
        y = self.conv(F.pad(x, (left, right, top, bottom)))
        y = y[..., :steps_h, :steps_w] + self.bias.to(y.dtype)[:, None, None]
        return F.pixel_shuffle(y, stride)[..., :out_h, :out_w]


@dataclass(frozen=True)
class _Taps:
    """Per kernel index: (output phase, tap in the recast kernel); the span's offset, size."""

    taps: tuple[tuple[int, int], ...]
    jmin: int
    size: int


def _phase_taps(stride: int, kernel: int, pad: int) -> _Taps:
    # Output o = stride·m + a gets input m + j through kernel index k when
    # stride·(m + j) + k − pad = o, i.e. j = (a + pad − k) / stride is an integer.
    found = []
    for k in range(kernel):
        a = (k - pad) % stride
        found.append((a, (a + pad - k) // stride))
    jmin = min(j for _, j in found)
    jmax = max(j for _, j in found)
    return _Taps(tuple((a, j - jmin) for a, j in found), jmin, jmax - jmin + 1)


def _pair(args: list[torch.Tensor]) -> list[torch.Tensor]:
    if len(args) != 2:
        raise NcnnFormatError("binary layers need exactly two inputs")
    return args


def _broadcastable(t: torch.Tensor) -> torch.Tensor:
    # A (N, C) vector from pooling/InnerProduct scales each channel of a (N, C, H, W) map.
    return t[:, :, None, None] if t.dim() == 2 else t


def _crop(layer: Layer, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    h, w = x.shape[-2:]
    if len(args) == 2:
        # Crop to the reference blob's size at offsets (woffset=0, hoffset=1).
        ref_h, ref_w = args[1].shape[-2:]
        top, left = layer.integer(1), layer.integer(0)
        return x[..., top : top + ref_h, left : left + ref_w]
    starts, ends, axes = layer.array(9), layer.array(10), layer.array(11)
    if not starts:
        raise NcnnFormatError(f"layer {layer.name}: only starts/ends/axes Crop is supported")
    bounds = {2: (0, h), 3: (0, w)}
    for start, end, axis in zip(starts, ends, axes, strict=True):
        dim = int(axis) + 4 if axis < 0 else int(axis) + 1  # ncnn axes skip the batch
        size = h if dim == 2 else w
        stop = int(end) if end > 0 else size + int(end)
        bounds[dim] = (int(start), stop)
    (t0, t1), (l0, l1) = bounds[2], bounds[3]
    return x[..., t0:t1, l0:l1]
