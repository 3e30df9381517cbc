"""Still frames for the dashboard's before/after: one frame of a film at a given time, as JPEG."""

from __future__ import annotations

from pathlib import Path

import av
import cv2


def still_at(path: str | Path, seconds: float, max_side: int = 1280) -> bytes:
    """The first frame shown at or after ``seconds`` (from the film's start), as JPEG bytes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        start = stream.start_time or 0
        if time_base is None:
            raise ValueError(f"{path}: video stream without a time base")
        target = start + int(seconds / time_base)
        container.seek(target, stream=stream, backward=True)
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.pts is not None and frame.pts >= target:
                break
        if chosen is None:
            raise ValueError(f"{path}: no frame to show")
        rgb = chosen.to_ndarray(format="rgb24")
    height, width = rgb.shape[:2]
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        rgb = cv2.resize(  # type: ignore[assignment]
            rgb, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
        )
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()
