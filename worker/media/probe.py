"""Probe a film: what its container and streams hold, and where each video frame lies in time."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error

from shared.errors import InvalidInput, UnsupportedMedia

# Larger than any real film frame (16K) but small enough to refuse decompression bombs.
MAX_SIDE = 16384
MAX_PIXELS = 16384 * 8640

# libavcodec's AVFieldOrder values, by name.
_FIELD_ORDER = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


@dataclass(frozen=True)
class ColorTags:
    """Colour metadata as libavutil's enum values (2 = unspecified, range 0 = unspecified;
    chroma location 0 = unspecified, 1 = left (MPEG-2), 2 = centre (JPEG))."""

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0
    chroma_location: int = 0


@dataclass(frozen=True)
class AudioInfo:
    """One audio stream of the source."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    language: str | None


@dataclass(frozen=True)
class MediaInfo:
    """What a film holds: its container, its first video stream and its audio streams."""

    path: str
    container: str
    video_index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    sar: Fraction
    rotation: int
    fps: Fraction
    time_base: Fraction
    start: Fraction
    duration: Fraction
    frame_count: int
    interlaced: bool
    field_order: str
    color: ColorTags
    audio: tuple[AudioInfo, ...] = field(default_factory=tuple)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) after applying the rotation metadata, as a player shows it."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True)
class FrameIndex:
    """Presentation times of every video frame (sorted, unique) and which are keyframes."""

    time_base: Fraction
    pts: array[int]
    keyframes: frozenset[int]
    end_pts: int

    def __len__(self) -> int:
        return len(self.pts)


def open_input(path: str | Path) -> av.container.InputContainer:
    """Open a media file for reading, turning FFmpeg's errors into ones that name the problem."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UnsupportedMedia(f"{path.name}: the file is empty")
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as err:
        raise UnsupportedMedia(
            f"{path.name}: not a video file we can read, or truncated ({ffmpeg_reason(err)})"
        ) from None


def video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The film's picture: the first video stream that is not cover art or a still."""
    stills = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    for stream in container.streams.video:
        if not stream.disposition & stills:
            return stream
    raise UnsupportedMedia(f"{Path(container.name).name}: no video stream in this file")


def probe(path: str | Path) -> MediaInfo:
    """Describe the film at ``path``; decodes one frame to check it really plays."""
    with open_input(path) as container:
        # A picture (PNG, JPEG, …) opens as a one-frame video; it is not a film.
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            raise UnsupportedMedia(
                f"{Path(path).name}: this is a still image ({container.format.name}), not a "
                "film; send a video file"
            )
        stream = video_stream(container)
        ctx = stream.codec_context
        if ctx is None or not _decodable(stream):
            raise UnsupportedMedia(
                f"{Path(path).name}: unsupported video codec {_codec_name(stream)!r}"
            )
        width, height = ctx.width, ctx.height
        _check_size(Path(path).name, width, height)
        first = _first_frame(container, stream, Path(path).name)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        fps = _rate(stream)
        start = _start(stream, container, tb)
        duration = _duration(stream, container, tb, start)
        frames = stream.frames or max(1, round(duration * fps))
        pix_fmt = first.format.name
        field_order = _FIELD_ORDER.get(int(ctx.field_order), "unknown")
        interlaced = bool(first.interlaced_frame) or field_order not in ("unknown", "progressive")
        sar = Fraction(stream.sample_aspect_ratio or ctx.sample_aspect_ratio or 1)
        return MediaInfo(
            path=str(path),
            container=container.format.name,
            video_index=stream.index,
            codec=ctx.codec.canonical_name,
            width=first.width,
            height=first.height,
            pix_fmt=pix_fmt,
            bit_depth=av.VideoFormat(pix_fmt).components[0].bits,
            sar=sar if sar > 0 else Fraction(1),
            rotation=round(first.rotation) % 360,
            fps=fps,
            time_base=tb,
            start=start,
            duration=duration,
            frame_count=frames,
            interlaced=interlaced,
            field_order=field_order,
            color=ColorTags(
                primaries=int(first.color_primaries),
                transfer=int(first.color_trc),
                matrix=int(first.colorspace),
                range=int(first.color_range),
            ),
            audio=tuple(_audio_info(s) for s in container.streams.audio),
        )


def scan_frames(path: str | Path) -> FrameIndex:
    """Read every video packet (no decoding) to learn each frame's presentation time."""
    name = Path(path).name
    with open_input(path) as container:
        stream = video_stream(container)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        stamps = array("q")
        keys: set[int] = set()
        last_end: int | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise UnsupportedMedia(f"{name}: video packets carry no timestamps")
                stamps.append(pts)
                if packet.is_keyframe:
                    keys.add(pts)
                if packet.duration:
                    end = pts + packet.duration
                    last_end = end if last_end is None else max(last_end, end)
        except av.error.FFmpegError as err:
            raise UnsupportedMedia(
                f"{name}: the file is truncated or corrupt ({ffmpeg_reason(err)})"
            ) from None
        # Read while the container is open: the stream's memory goes with it (reading it
        # afterwards crashed the process on a one-frame file).
        rate = _rate(stream)
    if not stamps:
        raise UnsupportedMedia(f"{name}: the video stream has zero frames")
    # Packets arrive in decode order; B-frames make presentation order differ.
    ordered = array("q", sorted(set(stamps)))
    if len(ordered) > 1:
        gap = (ordered[-1] - ordered[0]) // (len(ordered) - 1)
    else:
        gap = max(1, round(1 / (rate * tb)))
    end = max(last_end or 0, ordered[-1] + max(gap, 1))
    return FrameIndex(time_base=tb, pts=ordered, keyframes=frozenset(keys), end_pts=end)


def check_complete(info: MediaInfo, index: FrameIndex) -> None:
    """Refuse a file whose frames stop well before the length its header announces."""
    found = (index.end_pts - index.pts[0]) * index.time_base
    if info.duration and found < info.duration * Fraction(9, 10) - Fraction(1, 2):
        raise UnsupportedMedia(
            f"{Path(info.path).name}: the file is truncated: its video stops at "
            f"{float(found):.1f} s of the {float(info.duration):.1f} s its header announces"
        )


def _first_frame(
    container: av.container.InputContainer, stream: av.VideoStream, name: str
) -> av.VideoFrame:
    """The first decodable frame, or an error saying why there is none."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as err:
        raise UnsupportedMedia(
            f"{name}: the video cannot be decoded, it is truncated or corrupt "
            f"({ffmpeg_reason(err)})"
        ) from None
    raise UnsupportedMedia(f"{name}: the video stream has zero frames")


def _decodable(stream: av.VideoStream) -> bool:
    """Whether FFmpeg has a decoder for the stream's codec."""
    try:
        return stream.codec_context.codec.is_decoder
    except (av.error.FFmpegError, ValueError, AttributeError):
        return False


def _codec_name(stream: av.VideoStream) -> str:
    """The stream's codec name, even when no decoder exists."""
    try:
        return stream.codec_context.name
    except (AttributeError, ValueError):
        return "unknown"


def _check_size(name: str, width: int, height: int) -> None:
    """Refuse sizes no film has; a zero or huge size means a broken or hostile file."""
    if width <= 0 or height <= 0:
        raise UnsupportedMedia(f"{name}: the video has no picture size ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InvalidInput(
            f"{name}: absurd picture size {width}x{height} (the limit is {MAX_SIDE} pixels "
            f"a side and {MAX_PIXELS // 1_000_000} megapixels)"
        )


def _rate(stream: av.VideoStream) -> Fraction:
    """The stream's average frame rate, falling back to the codec's nominal rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate < 1000:
            return Fraction(rate)
    return Fraction(25)


def _start(
    stream: av.VideoStream, container: av.container.InputContainer, tb: Fraction
) -> Fraction:
    """Time of the first frame, in seconds."""
    if stream.start_time is not None:
        return stream.start_time * tb
    if container.start_time is not None:
        return Fraction(container.start_time, av.time_base)
    return Fraction(0)


def _duration(
    stream: av.VideoStream, container: av.container.InputContainer, tb: Fraction, start: Fraction
) -> Fraction:
    """The video's length in seconds, from the stream or else the container."""
    if stream.duration:
        return stream.duration * tb
    tagged = tag_duration(stream.metadata.get("DURATION"))
    if tagged is not None:
        return tagged
    if container.duration:
        return max(Fraction(container.duration, av.time_base) - max(start, Fraction(0)), tb)
    return Fraction(0)


def tag_duration(text: str | None) -> Fraction | None:
    """Matroska's per-stream DURATION tag (``HH:MM:SS.nnnnnnnnn``) in seconds."""
    if not text:
        return None
    try:
        hours, minutes, secs = text.split(":")
        return (int(hours) * 60 + int(minutes)) * 60 + Fraction(secs)
    except ValueError:
        return None


def _audio_info(stream: av.AudioStream) -> AudioInfo:
    """Describe one audio stream."""
    ctx = stream.codec_context
    return AudioInfo(
        index=stream.index,
        codec=ctx.codec.canonical_name,
        sample_rate=ctx.sample_rate,
        channels=ctx.channels,
        layout=ctx.layout.name,
        language=stream.language,
    )


def ffmpeg_reason(err: Exception) -> str:
    """FFmpeg's error text without the errno and the file name."""
    text = getattr(err, "strerror", None) or str(err)
    return text.strip().rstrip(".").lower() or type(err).__name__


# Codecs that store every sample exactly: such sound is never re-encoded to a lossy codec.
LOSSLESS_AUDIO = {"flac", "alac", "truehd", "mlp", "wavpack", "tta", "ape"}
# Chroma layouts, from the most colour kept to the least.
CHROMA_RANK = {"4:4:4": 3, "4:2:2": 2, "4:2:0": 1, "4:1:1": 0, "none": -1}


def is_lossy_video(codec: str) -> bool:
    """Whether FFmpeg's descriptor of video ``codec`` says it loses detail (H.264, MPEG-2,
    ProRes…; FFV1, PNG and raw video do not). Unknown codecs count as lossy."""
    try:
        return bool(av.Codec(codec, "r").lossy)
    except (av.codec.codec.UnknownCodecError, ValueError):
        return True


def is_lossless_audio(codec: str) -> bool:
    """Whether sound in ``codec`` holds its samples exactly (PCM and the lossless codecs)."""
    return codec.startswith("pcm_") or codec in LOSSLESS_AUDIO


def chroma(pix_fmt: str) -> str:
    """A pixel format's chroma layout: 4:2:0, 4:2:2, 4:4:4 (RGB is full), none for grey."""
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    if len(fmt.components) < 3:
        return "none"  # grey: no colour to keep
    if not pix_fmt.startswith("yuv"):
        return "4:4:4"
    shrink = (fmt.width // fmt.components[1].width, fmt.height // fmt.components[1].height)
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (4, 1): "4:1:1"}[shrink]


def reductions(source: MediaInfo, result: MediaInfo) -> list[str]:
    """What the result keeps less of than the source — bit depth, colour detail, lossless
    sound — measured on both files and said in words a user can act on."""
    found = []
    if result.bit_depth < source.bit_depth:
        found.append(
            f"bit depth {source.bit_depth} → {result.bit_depth} ({result.codec}; codec ffv1, "
            "prores or h265 keep 10 bits)"
        )
    before, after = chroma(source.pix_fmt), chroma(result.pix_fmt)
    if CHROMA_RANK[after] < CHROMA_RANK[before]:
        found.append(f"chroma {before} → {after} ({result.codec}; codec ffv1 or prores keep it)")
    kept = [a.codec for a in result.audio]
    lossless = [a.codec for a in source.audio if is_lossless_audio(a.codec)]
    if lossless and kept and not any(is_lossless_audio(c) for c in kept):
        found.append(f"sound {lossless[0]} → {kept[0]} (lossy)")
    return found
