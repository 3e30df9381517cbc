"""Join encoded chunk files without re-encoding and mux audio in sync with the picture.

Chunk files start at time zero; each is shifted to its place on the film's timeline. Audio
is stream-copied where the container takes the codec; otherwise lossless sound (PCM, FLAC,
ALAC…) is re-encoded losslessly (FLAC, or ALAC in MOV) and lossy sound to AAC; it is
trimmed at the end of the picture. Packets of all streams are interleaved by time as they
are read, so memory stays flat however long the film.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from shared.errors import ProcessingError, UnsupportedMedia
from worker.media.encode import MUXERS
from worker.media.probe import ColorTags, ffmpeg_reason, is_lossless_audio, open_input

# Audio codecs each container takes as they are; anything else becomes AAC.
COPYABLE_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {
        "aac",
        "mp3",
        "ac3",
        "eac3",
        "alac",
        "pcm_s16le",
        "pcm_s16be",
        "pcm_s24le",
        "pcm_s24be",
        "pcm_f32le",
        "pcm_f32be",
    },
    "mkv": {
        "aac",
        "mp3",
        "ac3",
        "eac3",
        "alac",
        "opus",
        "flac",
        "vorbis",
        "dts",
        "truehd",
        "pcm_s16le",
        "pcm_s16be",
        "pcm_s24le",
        "pcm_s32le",
        "pcm_f32le",
    },
}
# The lossless codec each container takes, for lossless sound it cannot take as it is.
LOSSLESS_TARGET = {"mp4": "flac", "mkv": "flac", "mov": "alac"}


# What the web preset's players all decode; any other sound becomes AAC there.
WEB_AUDIO = frozenset({"aac", "mp3"})
# AAC's bit rate per channel when we encode it (transparent for most music at 96 kb/s).
AAC_BITS_PER_CHANNEL = 96_000


def audio_target(
    codec: str, container: str, *, web: bool = False, exact: bool = False
) -> str | None:
    """The codec sound in ``codec`` gets in ``container``: ``None`` to copy it as it is.

    ``web``: only AAC and MP3 are kept, the rest becomes AAC. ``exact``: re-encoded even
    where it could be copied, so that it can be placed, trimmed and padded to the sample
    (lossless sound stays lossless)."""
    if web:
        return None if codec in WEB_AUDIO and not exact else "aac"
    if codec in COPYABLE_AUDIO[container] and not exact:
        return None
    return LOSSLESS_TARGET[container] if is_lossless_audio(codec) else "aac"


# MP4/MOV keep audio packets this close before the film start (the encoder's priming lives
# there; edit lists hide it). Matroska cannot store negative times: its muxer would delay
# every stream instead, so there audio starts at the first packet at or after zero.
PRIMING = {"mp4": Fraction(1, 10), "mov": Fraction(1, 10), "mkv": Fraction(0)}
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Samples of silence encoded at a time when a soundtrack is padded.
SILENCE_BLOCK = 4096
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


@dataclass(frozen=True)
class VideoPart:
    """A chunk file and where its time zero falls on the film's timeline (seconds)."""

    path: str
    offset: Fraction


@dataclass(frozen=True)
class AudioSource:
    """An audio stream to mux; ``origin`` is its file's time (seconds) at the film's start.
    A ``pad``ded one fills the picture's whole length: silence where it has no sound."""

    path: str
    stream_index: int
    origin: Fraction
    pad: bool = False


# (time in seconds for interleaving, tie-breaker, packet)
_Item = tuple[float, int, av.Packet]


def join(
    parts: Sequence[VideoPart],
    output: str | Path,
    container: str,
    audio: Sequence[AudioSource] = (),
    end: Fraction | None = None,
    color: ColorTags | None = None,
    sar: Fraction | None = None,
    web: bool = False,
) -> None:
    """Write the parts' video packets back to back with the audio, trimmed at ``end``
    (``web``: the sound as AAC or MP3, see ``audio_target``)."""
    if not parts:
        raise ProcessingError("nothing to join: no chunk files")
    with ExitStack() as stack:
        out = stack.enter_context(av.open(str(output), "w", format=MUXERS[container]))
        first = stack.enter_context(av.open(parts[0].path))
        template = first.streams.video[0]
        vstream = out.add_stream_from_template(template)
        vstream.time_base = template.time_base
        if color is not None:
            # Not every codec carries colour in its bitstream (FFV1 doesn't): tag the stream.
            ctx = vstream.codec_context
            ctx.color_primaries, ctx.color_trc = color.primaries, color.transfer
            ctx.colorspace, ctx.color_range = color.matrix, color.range
        if sar is not None:
            # Containers take the aspect from the stream; ProRes and FFV1 chunks lose it.
            vstream.codec_context.sample_aspect_ratio = sar
        if template.codec_context.name == "hevc" and container in ("mp4", "mov"):
            # Apple players need the parameter sets out of band ('hvc1'), as we write them.
            vstream.codec_tag = "hvc1"
        sources: list[Iterator[_Item]] = [_video_packets(parts, template, vstream)]
        for order, src in enumerate(audio, start=1):
            inp = stack.enter_context(open_input(src.path))
            stream = inp.streams[src.stream_index]
            if not isinstance(stream, av.AudioStream):
                raise ProcessingError(f"{src.path}: stream {src.stream_index} is not audio")
            codec = stream.codec_context.codec.canonical_name
            target = audio_target(codec, container, web=web, exact=src.pad)
            if target is None:
                ostream = out.add_stream_from_template(stream)
                ostream.time_base = stream.time_base
                sources.append(
                    _copy_audio(inp, stream, ostream, src.origin, end, PRIMING[container], order)
                )
            else:
                ostream = _encoder_stream(out, stream, target)
                sources.append(
                    _transcode_audio(inp, stream, ostream, src, end, PRIMING[container], order)
                )
            if stream.language:
                ostream.metadata["language"] = stream.language
        for _, _, packet in heapq.merge(*sources, key=lambda item: (item[0], item[1])):
            out.mux(packet)


def _video_packets(
    parts: Sequence[VideoPart], template: av.VideoStream, ostream: av.VideoStream
) -> Iterator[_Item]:
    """Every chunk's packets in turn, shifted by the chunk's offset; opens one file at a time."""
    ref = template.codec_context
    for number, part in enumerate(parts):
        with av.open(part.path) as inp:
            stream = inp.streams.video[0]
            ctx = stream.codec_context
            same = (ctx.name, ctx.width, ctx.height, ctx.pix_fmt, ctx.extradata) == (
                ref.name,
                ref.width,
                ref.height,
                ref.pix_fmt,
                ref.extradata,
            )
            if not same:
                raise ProcessingError(
                    f"chunk {number} was encoded differently from chunk 0 "
                    f"({ctx.name} {ctx.width}x{ctx.height} {ctx.pix_fmt}); re-run it"
                )
            shift = _Shift(_time_base(stream), part.offset)
            for packet in inp.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's end-of-stream marker
                yield shift.apply(packet, ostream), 0, packet


def _copy_audio(
    inp: av.container.InputContainer,
    stream: av.AudioStream,
    ostream: av.AudioStream,
    origin: Fraction,
    end: Fraction | None,
    lead: Fraction,
    order: int,
) -> Iterator[_Item]:
    """Audio packets as they are, moved so ``origin`` is time zero; those past ``end`` dropped."""
    tb = _time_base(stream)
    shift = _Shift(tb, -origin)
    try:
        for packet in inp.demux(stream):
            if packet.pts is None:
                continue
            start = packet.pts * tb - origin
            if end is not None and start >= end:
                break
            if start < -lead or (lead and start + (packet.duration or 0) * tb <= -lead):
                continue
            yield shift.apply(packet, ostream), order, packet
    except av.error.FFmpegError as err:
        raise UnsupportedMedia(
            f"{Path(inp.name).name}: audio is unreadable ({ffmpeg_reason(err)})"
        ) from None


class _Shift:
    """Moves packets by ``offset`` seconds exactly, in a time base fine enough for it."""

    def __init__(self, time_base: Fraction, offset: Fraction) -> None:
        ticks = offset / time_base
        self.step = ticks.denominator
        self.ticks = ticks.numerator
        self.time_base = time_base / ticks.denominator

    def apply(self, packet: av.Packet, stream: av.stream.Stream) -> float:
        """Shift ``packet`` and send it to ``stream``; returns its decode time for interleaving."""
        packet.time_base = self.time_base
        if packet.pts is not None:
            packet.pts = packet.pts * self.step + self.ticks
        if packet.dts is not None:
            packet.dts = packet.dts * self.step + self.ticks
        packet.duration = (packet.duration or 0) * self.step
        packet.stream = stream
        stamp = packet.dts if packet.dts is not None else packet.pts
        return float((stamp or 0) * self.time_base)


def _time_base(stream: av.stream.Stream) -> Fraction:
    """A stream's time base (every stream read from a file has one)."""
    if stream.time_base is None:
        raise ProcessingError(f"stream {stream.index} has no time base")
    return Fraction(stream.time_base)


def _encoder_stream(
    out: av.container.OutputContainer, stream: av.AudioStream, codec: str
) -> av.AudioStream:
    """An encoder for the source's channel layout: AAC at the nearest AAC rate, or a lossless
    codec at the source's own rate with as many bits per sample as the source has."""
    ctx = stream.codec_context
    rate = ctx.sample_rate
    if codec == "aac":
        rate = min(AAC_RATES, key=lambda r: abs(r - ctx.sample_rate))
    ostream = out.add_stream(codec, rate=rate)
    assert isinstance(ostream, av.AudioStream)
    # Files without a channel order ("2 channels") get the usual one for their count.
    ostream.layout = _LAYOUTS.get(ctx.channels, "7.1")
    ostream.time_base = Fraction(1, rate)
    if codec == "aac":
        ostream.bit_rate = AAC_BITS_PER_CHANNEL * min(ctx.channels, 8)
    else:
        # Sound decoded to more than 16 bits is kept at 24 (FLAC's and ALAC's usual most).
        deep = ctx.format.bytes > 2
        ostream.format = ("s32" if deep else "s16") + ("p" if codec == "alac" else "")
    return ostream


def _transcode_audio(
    inp: av.container.InputContainer,
    stream: av.AudioStream,
    ostream: av.AudioStream,
    src: AudioSource,
    end: Fraction | None,
    lead: Fraction,
    order: int,
) -> Iterator[_Item]:
    """Decode, resample to the encoder's rate and encode, trimmed to [0, end); a padded
    source gets silence before its first sound and after its last, up to ``end``."""
    rate = ostream.codec_context.sample_rate
    layout = ostream.codec_context.layout
    channels = len(layout.channels)
    # Samples are cut as planar floats (exact for up to 24-bit sound), then converted to
    # the encoder's own sample format.
    to_encoder = av.AudioResampler(format=ostream.codec_context.format.name, layout=layout.name)
    limit = None if end is None else round(end * rate)
    position: int | None = None  # next sample's index on the film's timeline

    def encode(samples: np.ndarray, begin: int) -> Iterator[_Item]:
        lo = max(begin, 0)
        hi = begin + samples.shape[1] if limit is None else min(begin + samples.shape[1], limit)
        if hi <= lo:
            return
        piece = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, lo - begin : hi - begin]),
            format="fltp",
            layout=layout.name,
        )
        piece.sample_rate, piece.pts, piece.time_base = rate, lo, Fraction(1, rate)
        for converted in to_encoder.resample(piece):
            for packet in ostream.encode(converted):
                if _keep(packet, lead):
                    yield _decode_time(packet), order, packet

    for samples, when in _resampled(inp, stream, rate, layout.name):
        if position is None:
            # The first frame fixes the start; later ones follow contiguously.
            position = round((when - src.origin) * rate)
            if src.pad:
                yield from _silence(encode, channels, 0, position)
        if limit is not None and position >= limit:
            break
        yield from encode(samples, position)
        position += samples.shape[1]
    if src.pad and limit is not None:
        yield from _silence(encode, channels, max(position or 0, 0), limit)
    for packet in ostream.encode(None):
        if _keep(packet, lead):
            yield _decode_time(packet), order, packet


def _silence(
    encode: Callable[[np.ndarray, int], Iterator[_Item]], channels: int, begin: int, stop: int
) -> Iterator[_Item]:
    """Silent samples from ``begin`` to ``stop`` on the film's timeline, a block at a time."""
    for lo in range(begin, stop, SILENCE_BLOCK):
        yield from encode(np.zeros((channels, min(SILENCE_BLOCK, stop - lo)), np.float32), lo)


def _keep(packet: av.Packet, lead: Fraction) -> bool:
    """Whether an encoded packet starts late enough for the container (see PRIMING)."""
    return packet.pts is None or packet.pts * (packet.time_base or 0) >= -lead


def _decode_time(packet: av.Packet) -> float:
    """An encoded packet's decode time in seconds, for interleaving."""
    stamp = packet.dts if packet.dts is not None else packet.pts
    return float((stamp or 0) * (packet.time_base or 0))


def _resampled(
    inp: av.container.InputContainer, stream: av.AudioStream, rate: int, layout: str
) -> Iterator[tuple[np.ndarray, Fraction]]:
    """Planar float samples (channels, n) and the source time of the first frame's start."""
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    first: Fraction | None = None
    try:
        for decoded in inp.decode(stream):
            if first is None:
                first = (decoded.pts or 0) * Fraction(decoded.time_base or _time_base(stream))
            for frame in resampler.resample(decoded):
                yield frame.to_ndarray(), first
        for frame in resampler.resample(None):
            yield frame.to_ndarray(), first or Fraction(0)
    except av.error.FFmpegError as err:
        raise UnsupportedMedia(
            f"{Path(inp.name).name}: audio is unreadable ({ffmpeg_reason(err)})"
        ) from None
