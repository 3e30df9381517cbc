"""Which RGB<->YUV matrix and range to use, from a stream's colour tags."""

from __future__ import annotations

from av.video.reformatter import Colorspace

# libavutil AVColorSpace values -> swscale's matrix choices.
_MATRIX = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,
    6: Colorspace.SMPTE170M,
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,
    10: Colorspace.BT2020,
}
_JPEG_FORMATS = ("yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p")


def guessed_matrix(matrix: int, height: int) -> int:
    """The AVColorSpace a player assumes: the tag, else BT.709 for HD and BT.601 for SD."""
    if matrix in _MATRIX:
        return matrix
    return 1 if height >= 720 else 6


def src_matrix(matrix: int, height: int) -> Colorspace:
    """The swscale matrix for a stream tagged ``matrix`` (guessed from the height if unset)."""
    return _MATRIX[guessed_matrix(matrix, height)]


def src_range(range_: int, pix_fmt: str) -> int:
    """The colour range to read with: the tag, else full for JPEG formats, else limited."""
    if range_ in (1, 2):
        return range_
    return 2 if pix_fmt in _JPEG_FORMATS else 1
