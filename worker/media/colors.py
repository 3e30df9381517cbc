"""Exact YUV <-> RGB: the stream's own matrix, range, depth and chroma siting, in float.

Decoding turns a frame's stored planes into float RGB with no 8-bit intermediate and no
clipping; encoding inverts every step. Because both matrices are exact inverses and nothing
is clipped in between, a frame no stage changed comes back with its Y, U and V codes as they
were, and luma stays linear through the RGB stages (so a linear resize of RGB is the same
resize of Y, as FFmpeg does it per plane).

Chroma siting decides how the half-resolution chroma is brought to full resolution and back:

- co-sited (MPEG-2/H.264 4:2:0 and 4:2:2 horizontally): a chroma sample lies on an even luma
  sample. Up: the sample itself there, a 4-tap cubic half-way between; down: the sample at
  the even position. Down(up(c)) = c exactly.
- centred (4:2:0 vertically, JPEG in both directions): a chroma sample lies between two luma
  samples. Up: c ∓ g/4 at the two, with g the centred slope (c[k+1] − c[k−1]) / 2, which is
  exact on ramps; down: the mean of the two, which is again exactly c.

Chroma location tags are not readable or writable through PyAV, so siting follows the
conventions: JPEG formats (yuvj*) are centred, every other 4:2:0 is MPEG-2 ("left"); the
output, untagged, is written with MPEG-2 siting, which is what players assume.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import torch

from worker.media.probe import ColorTags

# libavutil AVColorSpace -> (Kr, Kb) of the luma equation Y = Kr R + Kg G + Kb B.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (= BT.601)
    6: (0.299, 0.114),  # SMPTE 170M (= BT.601)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance, approximated by the NCL matrix
}
_JPEG_FORMATS = ("yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p")
# AVChromaLocation values.
LEFT, CENTER = 1, 2


def guessed_matrix(matrix: int, height: int) -> int:
    """The AVColorSpace a player assumes: the tag, else BT.709 for HD and BT.601 for SD."""
    if matrix in _KR_KB:
        return matrix
    return 1 if height >= 720 else 6


def src_range(range_: int, pix_fmt: str) -> int:
    """The colour range to read with: the tag, else full for JPEG and grey formats (as
    FFmpeg reads them), else limited."""
    if range_ in (1, 2):
        return range_
    return 2 if pix_fmt in _JPEG_FORMATS or pix_fmt.startswith(("gray", "ya")) else 1


def chroma_location(pix_fmt: str) -> int:
    """The chroma siting a decoder assumes for an untagged stream of this format."""
    return CENTER if pix_fmt in _JPEG_FORMATS else LEFT


@dataclass(frozen=True)
class Coding:
    """How one stream codes its pixels: the planes' layout and what their numbers mean."""

    pix_fmt: str
    matrix: int
    full_range: bool
    chroma_location: int = LEFT

    @property
    def bits(self) -> int:
        return int(av.VideoFormat(self.pix_fmt).components[0].bits)

    @property
    def gray(self) -> bool:
        return len(av.VideoFormat(self.pix_fmt).components) == 1

    @property
    def subsampling(self) -> tuple[int, int]:
        """(x, y) chroma subsampling factors: (2, 2) for 4:2:0, (2, 1) for 4:2:2."""
        if self.gray:
            return 1, 1
        fmt = av.VideoFormat(self.pix_fmt, 64, 64)
        luma, chroma = fmt.components[0], fmt.components[1]
        return luma.width // chroma.width, luma.height // chroma.height

    def levels(self) -> tuple[float, float, float, float]:
        """(luma offset, luma scale, chroma offset, chroma scale) in code values."""
        bits = self.bits
        if self.full_range:
            top = float(2**bits - 1)
            return 0.0, top, float(2 ** (bits - 1)), top
        step = float(2 ** (bits - 8))
        return 16 * step, 219 * step, 128 * step, 224 * step


def coding_for(pix_fmt: str, tags: ColorTags, height: int) -> Coding:
    """The coding of a stream of ``pix_fmt`` with these tags (guesses where untagged)."""
    location = tags.chroma_location or chroma_location(pix_fmt)
    return Coding(
        pix_fmt=pix_fmt,
        matrix=guessed_matrix(tags.matrix, height),
        full_range=src_range(tags.range, pix_fmt) == 2,
        chroma_location=location,
    )


def planar_format(pix_fmt: str) -> str | None:
    """The planar YUV (or grey) format whose planes we read for ``pix_fmt``: itself when it
    is one, a lossless re-layout for semi-planar ones (NV12, P010), None for RGB and
    palettes (read through swscale as 16-bit RGB)."""
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or fmt.is_big_endian:
        return None
    comps = fmt.components
    bits = int(comps[0].bits)
    suffix = "" if bits == 8 else ("10le" if bits <= 10 else "12le" if bits <= 12 else "16le")
    if len(comps) <= 2:
        return "gray" + suffix
    ratio = (comps[0].width // comps[1].width, comps[0].height // comps[1].height)
    layout = {(2, 2): "420", (2, 1): "422", (1, 1): "444", (1, 2): "440"}.get(ratio)
    if layout is None:
        return None
    name = f"yuv{layout}p{suffix}"
    if fmt.is_planar and (pix_fmt == name or pix_fmt.startswith(("yuvj", "yuva"))):
        return pix_fmt
    return name


# --- planes <-> arrays -------------------------------------------------------------------


def read_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The frame's planes as 2-D uint8/uint16 arrays (padding at line ends cut off)."""
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
    planes = []
    for plane in frame.planes[: 1 if len(frame.format.components) <= 2 else 3]:
        flat = np.frombuffer(memoryview(plane), dtype=dtype)
        rows = flat.reshape(plane.height, plane.line_size // dtype.itemsize)
        planes.append(rows[:, : plane.width])
    return planes


def write_planes(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    """A new frame of ``pix_fmt`` holding ``planes`` (luma first, full size)."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, planes, strict=False):
        padded = np.zeros((plane.height, plane.line_size // data.dtype.itemsize), data.dtype)
        padded[:, : plane.width] = data[: plane.height, : plane.width]
        plane.update(padded.tobytes())
    return frame


# --- chroma resampling (one axis at a time; axis -1 is x, -2 is y) ------------------------


def _padded(c: torch.Tensor, dim: int, by: int) -> torch.Tensor:
    """``c`` with its edge samples repeated ``by`` times at both ends of ``dim``."""
    first, last = c.narrow(dim, 0, 1), c.narrow(dim, c.shape[dim] - 1, 1)
    return torch.cat([first] * by + [c] + [last] * by, dim=dim)


def upsample_chroma(c: torch.Tensor, axis: int, cosited: bool, length: int) -> torch.Tensor:
    """Chroma at twice the density along ``axis``, cut to ``length`` samples."""
    dim = axis % c.dim()
    n = c.shape[dim]
    p = _padded(c, dim, 2)

    def at(offset: int) -> torch.Tensor:  # c[k + offset], edges repeated
        return p.narrow(dim, 2 + offset, n)

    if cosited:
        pair = (c, (9 * (c + at(1)) - at(-1) - at(2)) / 16)
    else:
        slope = (at(1) - at(-1)) / 8
        pair = (c - slope, c + slope)
    both = torch.stack(pair, dim=dim + 1)
    shape = list(c.shape)
    shape[dim] *= 2
    return both.reshape(shape).narrow(dim, 0, length)


def downsample_chroma(x: torch.Tensor, axis: int, cosited: bool) -> torch.Tensor:
    """Full-density chroma to half density along ``axis`` (the inverse of upsampling)."""
    dim = axis % x.dim()
    n = x.shape[dim]
    if cosited:
        return x.index_select(dim, torch.arange(0, n, 2, device=x.device))
    pairs = x.narrow(dim, 0, n - n % 2).unflatten(dim, (n // 2, 2)).mean(dim=dim + 1)
    if n % 2 == 0:
        return pairs
    # An odd length ends on one luma sample of the last chroma sample's pair: upsampling
    # put c - (c - previous) / 8 there, so c = (8 x - previous) / 7.
    last = x.narrow(dim, n - 1, 1)
    if n > 1:
        last = (8 * last - pairs.narrow(dim, n // 2 - 1, 1)) / 7
    return torch.cat([pairs, last], dim=dim)


def _siting(coding: Coding) -> tuple[bool, bool]:
    """Whether chroma is co-sited with luma along x and along y."""
    location = coding.chroma_location
    # AVChromaLocation: 1 left, 2 center, 3 topleft, 4 top, 5 bottomleft, 6 bottom.
    cosited_x = location in (1, 3, 5)
    cosited_y = location in (3, 4)
    return cosited_x, cosited_y


# --- planes <-> RGB ------------------------------------------------------------------------


def planes_to_rgb(planes: list[torch.Tensor], coding: Coding) -> torch.Tensor:
    """Float RGB (3, H, W) from float code-value planes, unclipped."""
    y_off, y_scale, c_off, c_scale = coding.levels()
    y = (planes[0] - y_off) / y_scale
    if coding.gray:
        return y.expand(3, *y.shape).clone()
    height, width = y.shape
    sx, sy = coding.subsampling
    cosited_x, cosited_y = _siting(coding)
    chroma = []
    for plane in planes[1:3]:
        c = (plane - c_off) / c_scale
        if sy == 2:
            c = upsample_chroma(c, -2, cosited_y, height)
        if sx == 2:
            c = upsample_chroma(c, -1, cosited_x, width)
        chroma.append(c)
    u, v = chroma
    kr, kb = _KR_KB[coding.matrix]
    r = y + 2 * (1 - kr) * v
    b = y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return torch.stack([r, g, b])


def rgb_to_planes(rgb: torch.Tensor, coding: Coding) -> list[torch.Tensor]:
    """Rounded, range-clamped code values (float) of each plane from float RGB (3, H, W)."""
    kr, kb = _KR_KB[coding.matrix]
    r, g, b = rgb.unbind(0)
    y = kr * r + (1 - kr - kb) * g + kb * b
    y_off, y_scale, c_off, c_scale = coding.levels()
    top = float(2**coding.bits - 1)
    planes = [(y * y_scale + y_off).round_().clamp_(0, top)]
    if coding.gray:
        return planes
    sx, sy = coding.subsampling
    cosited_x, cosited_y = _siting(coding)
    for c in ((b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))):
        if sx == 2:
            c = downsample_chroma(c, -1, cosited_x)
        if sy == 2:
            c = downsample_chroma(c, -2, cosited_y)
        planes.append((c * c_scale + c_off).round_().clamp_(0, top))
    return planes
