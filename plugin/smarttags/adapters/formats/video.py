"""Video (MP4, MOV, WebM, MKV, AVI...; H.264, H.265, VP9, AV1...) with PyAV: sampled frames, never all.

``sample`` seeks to one point every ``every`` seconds (spread evenly when that would be more than
``max_frames``) and decodes only the keyframe at or before it: the decoder is told to skip every
non-key frame, so a sample costs one intra-frame decode however long the video is. Encoders put
keyframes at scene cuts, so the keyframes found are also where the picture changes; a keyframe
reached twice is kept once. Each frame is scaled by FFmpeg straight to the long side asked for.
The declared resolution is checked against ``max_pixels`` before anything is decoded.

Not imported by ``adapters.formats`` nor by the image path: PyAV (about 100 MB with FFmpeg) is not
in the image Lambda package; the video path wires this module where it runs (the ``video`` extra).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import IO

import av
from PIL import Image

from smarttags.adapters.formats.source import target
from smarttags.errors import CorruptImage, ImageError, ImageTooLarge, UnsupportedImage

log = logging.getLogger(__name__)

EVERY_SECONDS = 5.0  # one sample per this many seconds...
MAX_FRAMES = 24  # ...and never more than this many per video
# The errors FFmpeg raises on a broken or hostile file (av.FFmpegError covers InvalidDataError & co).
_ERRORS = (av.FFmpegError, ValueError, IndexError, OverflowError, EOFError)


@dataclass(frozen=True)
class Frame:
    """One sampled frame: where it is (seconds from the start) and its picture (RGB, long side ~size)."""

    seconds: float
    image: Image.Image


@dataclass(frozen=True)
class Video:
    """What a video says about itself and the frames sampled from it (the first is the poster)."""

    content_type: str | None
    codec: str
    width: int
    height: int
    duration: float  # seconds; 0.0 when the container does not say
    frames: tuple[Frame, ...]
    title: str | None = None


def sample(
    data: bytes | IO[bytes],
    *,
    size: int,
    max_pixels: int,
    content_type: str | None = None,
    every: float = EVERY_SECONDS,
    max_frames: int = MAX_FRAMES,
) -> Video:
    """Keyframes of the video ``data`` (bytes, or a seekable reader FFmpeg reads only what it needs of),
    one every ``every`` seconds at most ``max_frames``; raises ImageError."""
    if isinstance(data, bytes) and not data:
        raise CorruptImage("zero bytes", content_type=content_type)
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            return _sample(container, size, max_pixels, content_type, every, max_frames)
    except av.error.MemoryError:  # FFmpeg's ENOMEM: the file asked for more than it could have
        raise ImageTooLarge("FFmpeg could not allocate what the file declares", content_type=content_type) from None
    except (ImageError, MemoryError):
        raise
    except _ERRORS as exc:
        raise CorruptImage(f"not a readable video: {exc}", content_type=content_type) from None
    except Exception as exc:  # as for stills: a library bug on hostile bytes fails this file only
        log.warning("video decoder failed unexpectedly: %s: %s", type(exc).__name__, exc)
        raise CorruptImage(f"decoder failed: {type(exc).__name__}: {exc}", content_type=content_type) from None


def _sample(
    container: av.container.InputContainer,
    size: int,
    max_pixels: int,
    content_type: str | None,
    every: float,
    max_frames: int,
) -> Video:
    if not container.streams.video:
        raise UnsupportedImage("no video stream (audio only?)", content_type=content_type)
    stream = container.streams.video[0]
    codec = stream.codec_context
    if codec is None:
        raise UnsupportedImage("no decoder for this video's codec", content_type=content_type)
    width, height = codec.width, codec.height
    if width <= 0 or height <= 0:
        raise CorruptImage(f"empty video ({width}x{height})", content_type=content_type)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height} pixels per frame is over the limit of {max_pixels}",
            content_type=content_type,
        )
    codec.skip_frame = "NONKEY"  # decode keyframes only: what makes a sample cost one frame
    duration = _duration(container, stream)
    out_size = target(width, height, size)
    frames: list[Frame] = []
    seen: set[int] = set()
    time_base = stream.time_base or Fraction(1, 1)
    for seconds in sample_times(duration, every, max_frames):
        frame = _keyframe_at(container, stream, seconds)
        if frame is None or frame.pts is None or frame.pts in seen:
            continue
        seen.add(frame.pts)
        when = float(frame.pts * time_base) - _start(stream)
        # FFmpeg's swscale converts and shrinks in one pass, straight from the decoder's YUV planes.
        rgb = frame.reformat(width=out_size[0], height=out_size[1], format="rgb24").to_ndarray()
        frames.append(Frame(seconds=max(0.0, when), image=Image.fromarray(rgb)))
    if not frames:
        raise CorruptImage("no decodable keyframe", content_type=content_type)
    title = container.metadata.get("title") or None
    # The format's name (av1), not the decoder's (libdav1d).
    return Video(content_type, codec.codec.canonical_name, width, height, duration, tuple(frames), title)


def sample_times(duration: float, every: float, max_frames: int) -> list[float]:
    """Where to sample: 0, every, 2*every... before ``duration``, or ``max_frames`` spread evenly over it."""
    if duration <= 0 or max_frames <= 1:
        return [0.0]
    count = min(max_frames, max(1, math.ceil(duration / every)))
    step = duration / count if count == max_frames else every
    return [i * step for i in range(count)]


def _keyframe_at(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seconds: float
) -> av.VideoFrame | None:
    """The keyframe at or before ``seconds`` (the first one decodable after seeking there)."""
    assert stream.time_base is not None
    pts = int(Fraction(seconds).limit_denominator(1000) / stream.time_base) + (stream.start_time or 0)
    container.seek(pts, stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        return frame
    return None


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _start(stream: av.video.stream.VideoStream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
