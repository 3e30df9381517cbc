"""Small synthetic test films made with PyAV: a moving pattern and, optionally, a sine tone."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from worker.media.probe import tag_duration

# Pixel formats that each encoder accepts for 8- and 10-bit clips.
_PIX_FMT = {
    ("libx264", 8): "yuv420p",
    ("libx264", 10): "yuv420p10le",
    ("libx265", 8): "yuv420p",
    ("libx265", 10): "yuv420p10le",
    ("mpeg4", 8): "yuv420p",
    ("mjpeg", 8): "yuvj420p",
    ("prores_ks", 10): "yuv422p10le",
    ("prores_ks", 8): "yuv422p10le",
    ("ffv1", 8): "yuv420p",
    ("ffv1", 10): "yuv420p10le",
}


@dataclass
class Clip:
    """What a generated clip holds, for tests to compare against."""

    path: Path
    frames: int
    pts: list[int]
    time_base: Fraction
    duration: Fraction
    width: int
    height: int
    audio_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def pattern(index: int, time: float, width: int, height: int) -> np.ndarray:
    """An RGB uint8 frame: a gradient, a square moving with time and the index as bars."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = 64
    side = max(4, min(width, height) // 4)
    left = int((time * width * 0.5) % max(width - side, 1))
    top = (height - side) // 2
    img[top : top + side, left : left + side] = (255, 255, 255)
    return img


def make_clip(
    path: Path,
    *,
    codec: str = "libx264",
    width: int = 64,
    height: int = 48,
    fps: Fraction | int | str = 24,
    seconds: float = 1.0,
    bit_depth: int = 8,
    audio: str | None = None,
    audio_streams: int = 1,
    languages: tuple[str, ...] = (),
    sample_rate: int = 48000,
    audio_seconds: float | None = None,
    vfr: bool = False,
    rotation: int = 0,
    sar: Fraction | None = None,
    color: tuple[int, int, int] | None = None,
    interlaced: bool = False,
    gop: int | None = None,
    time_base: Fraction | None = None,
    container_format: str | None = None,
    shot_fps: Fraction | int | None = None,
) -> Clip:
    """Write a clip of ``seconds`` at ``fps``; ``vfr`` alternates 1- and 2-tick frame gaps.

    ``shot_fps`` films the motion at that lower rate and transfers it to ``fps`` the way
    old films were: each frame shows the latest original frame, so some repeat.
    """
    rate = Fraction(fps)
    frames = round(seconds * rate)
    tb = time_base or (Fraction(1, 1000) if vfr else 1 / rate)
    if vfr:
        # Alternate one and two nominal frame durations: a clearly variable rate.
        times = []
        t = Fraction(0)
        for i in range(frames):
            times.append(t)
            t += (1 if i % 3 else 2) / rate
        end = t
    else:
        times = [i / rate for i in range(frames)]
        end = frames / rate
    pts = [round(t / tb) for t in times]
    pix_fmt = _PIX_FMT[(codec, bit_depth)]
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream)
        ctx = stream.codec_context
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.time_base = tb
        ctx.time_base = tb
        options: dict[str, str] = {}
        if codec == "libx264":
            options = {"preset": "ultrafast"}
            if interlaced:
                options["x264-params"] = "interlaced=1"
        elif codec == "libx265":
            options = {"preset": "ultrafast", "x265-params": "log-level=error"}
        elif codec == "prores_ks":
            options = {"profile": "1"}
        stream.options = dict(options)
        if gop is not None:
            ctx.gop_size = gop
        if sar is not None:
            ctx.sample_aspect_ratio = sar
        if color is not None:
            ctx.color_primaries, ctx.color_trc, ctx.colorspace = color
            ctx.color_range = 1
        if rotation:
            stream.set_display_rotation(rotation)
        astreams = []
        for k in range(audio_streams if audio else 0):
            a = out.add_stream(audio or "", rate=sample_rate)
            assert isinstance(a, av.AudioStream)
            a.layout = "stereo"
            if k < len(languages):
                a.metadata["language"] = languages[k]
            astreams.append(a)
        for i, (t, p) in enumerate(zip(times, pts, strict=True)):
            shot = float(t) if shot_fps is None else math.floor(t * shot_fps) / float(shot_fps)
            frame = av.VideoFrame.from_ndarray(pattern(i, shot, width, height), "rgb24")
            frame = frame.reformat(
                format=pix_fmt,
                dst_colorspace=(color[2] if color else None),
                dst_color_range=1 if pix_fmt != "yuvj420p" else 2,
            )
            frame.pts = p
            frame.time_base = tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        a_seconds = float(end) if audio_seconds is None else audio_seconds
        for k, a in enumerate(astreams):
            _write_tone(out, a, a_seconds, 440.0 * (k + 1))
    return Clip(
        path=path,
        frames=frames,
        pts=pts,
        time_base=tb,
        duration=end,
        width=width,
        height=height,
        audio_seconds=a_seconds if audio else None,
    )


def _write_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, hz: float
) -> None:
    """Encode a stereo sine tone of ``seconds`` in blocks of 1024 samples."""
    rate = stream.rate
    formats = stream.codec_context.codec.audio_formats or []
    fmt = formats[0].name if formats else "fltp"
    total = round(seconds * rate)
    done = 0
    while done < total:
        n = min(1024, total - done)
        t = (np.arange(done, done + n) / rate).astype(np.float64)
        wave = 0.3 * np.sin(2 * math.pi * hz * t)
        planar = np.stack([wave, wave])
        frame = _audio_frame(planar, fmt)
        frame.sample_rate = rate
        frame.pts = done
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
        done += n
    out.mux(stream.encode())


def _audio_frame(planar: np.ndarray, fmt: str) -> av.AudioFrame:
    """An AudioFrame in the encoder's sample format from a (2, n) float array."""
    data: np.ndarray
    if fmt == "s16":
        data = (planar.T * 32767).astype(np.int16).reshape(1, -1)
    elif fmt == "s16p":
        data = (planar * 32767).astype(np.int16)
    elif fmt == "s32":
        data = (planar.T * 2**31 * 0.999).astype(np.int32).reshape(1, -1)
    elif fmt == "s32p":
        data = (planar * 2**31 * 0.999).astype(np.int32)
    elif fmt == "fltp":
        data = planar.astype(np.float32)
    elif fmt == "flt":
        data = planar.T.astype(np.float32).reshape(1, -1)
    else:
        raise ValueError(f"tone generator does not handle sample format {fmt}")
    return av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")


def make_audio(
    path: Path,
    *,
    codec: str = "pcm_s16le",
    seconds: float = 1.0,
    hz: float = 660.0,
    sample_rate: int = 44100,
) -> Path:
    """Write an audio-only file holding a tone (a soundtrack to add to a silent film)."""
    with av.open(str(path), "w") as out:
        a = out.add_stream(codec, rate=sample_rate)
        assert isinstance(a, av.AudioStream)
        a.layout = "stereo"
        _write_tone(out, a, seconds, hz)
    return path


def decoded_pts(path: Path) -> tuple[list[int], Fraction]:
    """Presentation times of every decoded video frame, and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream) if frame.pts is not None]
        return pts, Fraction(stream.time_base or 1)


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every video frame as an RGB uint8 array (as a player would convert it)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def video_end(path: Path) -> Fraction:
    """When the picture ends: the last frame's time plus its duration, in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or 1)
        timed = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None]
        pts, duration = max(timed)
        if duration:
            return (pts + duration) * tb
        # Matroska keeps intra-only codecs' durations only in the track's DURATION tag.
        tagged = tag_duration(stream.metadata.get("DURATION"))
        assert tagged is not None, f"{path.name}: no way to tell when the picture ends"
        return tagged


def audio_spans(path: Path) -> list[tuple[Fraction, Fraction]]:
    """(first sample, end of last sample) in seconds of each audio stream, from decoding."""
    spans = []
    with av.open(str(path)) as container:
        for index in range(len(container.streams.audio)):
            container.seek(0)
            stream = container.streams.audio[index]
            first: Fraction | None = None
            end = Fraction(0)
            for frame in container.decode(stream):
                start = (frame.pts or 0) * Fraction(frame.time_base or 1)
                first = start if first is None else first
                end = start + Fraction(frame.samples, frame.sample_rate)
            spans.append((first or Fraction(0), end))
    return spans


def sound_times(path: Path, index: int = 0, level: float = 0.01) -> tuple[float, float]:
    """When audio track ``index`` is first and last louder than ``level`` (of full scale),
    in seconds on the file's timeline, from decoding."""
    loud: list[float] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="fltp")
        for frame in container.decode(container.streams.audio[index]):
            start = float((frame.pts or 0) * Fraction(frame.time_base or 1))
            for piece in resampler.resample(frame):
                hits = np.flatnonzero(np.abs(piece.to_ndarray()).max(axis=0) > level)
                if hits.size:
                    loud += [
                        start + hits[0] / piece.sample_rate,
                        start + hits[-1] / piece.sample_rate,
                    ]
    if not loud:
        raise AssertionError(f"{path.name}: audio track {index} is silent")
    return min(loud), max(loud)


def ffmpeg_frames(
    path: Path,
    width: int,
    height: int,
    matrix: int = 6,
    full_range: bool = False,
    rotation: int = 0,
) -> np.ndarray:
    """Frames as FFmpeg decodes them and zimg converts them to float RGB, with the given
    AVColorSpace matrix and range, then turned upright: a reference-quality peer,
    (N, H, W, 3) for the upright ``width`` × ``height``."""
    import subprocess

    import imageio_ffmpeg

    names = {1: "709", 5: "470bg", 6: "170m", 7: "240m", 9: "2020_ncl"}
    stored_w, stored_h = (height, width) if rotation % 180 else (width, height)
    # zimg wants whole chroma samples: odd sizes have their chroma brought to full size
    # by swscale (exact arithmetic, bicubic) first.
    convert = "format=yuv444p16le," if stored_w % 2 or stored_h % 2 else ""
    convert += f"zscale=min={names[matrix]}:rin={'full' if full_range else 'limited'}:f=spline36"
    # Rotating first would move the chroma siting, so the peer turns the RGB result instead.
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-noautorotate", "-i", str(path)]
    cmd += ["-sws_flags", "bicubic+accurate_rnd+full_chroma_int+full_chroma_inp"]
    cmd += ["-fps_mode", "passthrough", "-vf", f"{convert},format=gbrpf32le"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "gbrpf32le", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    gbr = np.frombuffer(raw, np.float32).reshape(-1, 3, stored_h, stored_w)
    rgb = gbr[:, [2, 0, 1]].transpose(0, 2, 3, 1)
    return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90, axes=(1, 2)))


def make_odd_stream(path: Path, codec: str, width: int, height: int, packets: int = 3) -> Path:
    """A file whose video stream claims ``codec`` and a size, holding junk packets."""
    with av.open(str(path), "w") as out:
        stream = out.add_mux_stream(codec, rate=24, width=width, height=height)
        stream.time_base = Fraction(1, 24)
        for i in range(packets):
            packet = av.Packet(bytes(range(64)))
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 24)
            packet.is_keyframe = True
            out.mux(packet)
    return path


def make_empty_video(path: Path) -> Path:
    """A file with a video stream and not one frame in it (AVI keeps such a stream)."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
    return path


# What make_planted_clip plants, in seconds of the film (frame times at 24 fps).
PLANTED_CUT = 1.0
PLANTED_OCCLUSION = (0.375, 0.5)


def make_planted_clip(path: Path, seconds: float = 2.0) -> Path:
    """A 24 fps clip of motion filmed at 16 fps (so every third frame repeats: a 2:1
    cadence), a textured shot panning a pixel a film frame, a pale bar rushing across it
    (40 px a frame: too fast for flow, a hard occlusion) during ``PLANTED_OCCLUSION``, and a
    cut to a shot of other colours at ``PLANTED_CUT``."""
    import cv2

    w, h, fps, shot_fps = 128, 96, 24, 16

    def texture(seed: int) -> np.ndarray:
        base = np.random.default_rng(seed).random((h // 4 + 2, w // 4 + 2, 3))
        return np.clip(cv2.resize(base.astype(np.float32), (w + 64, h + 8)), 0, 1)

    shots = (texture(1) * (0.5, 0.6, 0.9), 0.3 + 0.7 * texture(2)[..., ::-1] * (1.0, 0.8, 0.4))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(round(seconds * fps)):
            k = math.floor(i * shot_fps / fps)  # the film frame shown
            shot = k / shot_fps
            image = shots[shot >= PLANTED_CUT][:h, k : k + w].copy()
            if PLANTED_OCCLUSION[0] <= shot < PLANTED_OCCLUSION[1]:
                left = int((shot - PLANTED_OCCLUSION[0]) * shot_fps * 40) - 20
                image[:, max(left, 0) : max(left + 20, 0)] = (0.9, 0.85, 0.8)
            frame = av.VideoFrame.from_ndarray((image * 255 + 0.5).astype(np.uint8), "rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_frames(path: Path, frames: np.ndarray, fps: int = 24, codec: str = "ffv1") -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as a clip (FFV1: losslessly, so a test sees its
    own pixels back, to the YUV 4:4:4 conversion's rounding)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), "rgb24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path
