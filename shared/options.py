"""What a job can ask for, torch-free: shared by the API, the CLI and the workers."""

from __future__ import annotations

from fractions import Fraction

from shared.errors import InvalidInput

# Decimal spellings of the NTSC-family rates mean n*1000/1001, as every tool reads them.
_NTSC_TOLERANCE = Fraction(1, 100)


def parse_fps(text: str | float | Fraction) -> Fraction:
    """Read a frame rate: ``60``, ``59.94`` (= 60000/1001), ``30000/1001``, ``23.976``…"""
    try:
        rate = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise InvalidInput(f"not a frame rate: {text!r} (try 60, 59.94 or 30000/1001)") from None
    if not 1 <= rate <= 1000:
        raise InvalidInput(f"frame rate {text} is out of range (1 to 1000 fps)")
    if rate.denominator != 1 and "/" not in str(text):
        ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
        if abs(ntsc - rate) < _NTSC_TOLERANCE:
            return ntsc
    return rate
