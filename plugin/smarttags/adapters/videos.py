"""The tagger's video path (``core.ports.Videos``): sniffing without PyAV, sampling with it.

``is_video`` decides from the bytes (``imaging.sniff``) and needs no PyAV, so a process without the
``video`` extra (the image Lambda) still knows a video when it sees one and can forward it. ``open``
imports ``adapters/formats/video.py`` (PyAV) only when it runs. The poster (the first sampled
keyframe) is stored as the admin's thumbnail of the asset version, at the key and size
``adapters/thumbnails.py`` uses, so the admin shows it without PyAV or a second download.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from smarttags.adapters import imaging, thumbnails
from smarttags.adapters.formats.source import Blob
from smarttags.adapters.imaging import ImageMetadata
from smarttags.core.ports import Store
from smarttags.errors import UnsupportedImage

if TYPE_CHECKING:
    from smarttags.adapters.formats.video import Video

log = logging.getLogger(__name__)

NOT_INSTALLED = "video support is not installed (pip install 'smarttags[video]')"


@dataclass(frozen=True)
class Clip:
    """A sampled video (``core.ports.Clip``): facts, frame times, the frames at their sampled size."""

    facts: ImageMetadata
    duration: float
    times: Sequence[float]
    images: Sequence[Image.Image]

    def frames(self, size: int) -> list[np.ndarray[Any, Any]]:
        return [imaging.prepare_array(np.asarray(img.convert("RGB")), size) for img in self.images]

    def poster(self) -> bytes:
        """The first sampled keyframe as the admin's thumbnail JPEG."""
        return thumbnails.encode(self.images[0].convert("RGB"))


def is_video(data: bytes | IO[bytes]) -> bool:
    """Whether the bytes are a video container (MP4/MOV/M4V/3GP, Matroska/WebM, AVI, FLV, MPEG-PS)."""
    return (imaging.sniff(Blob.of(data).head) or "").startswith("video/")


def can_sample() -> bool:
    """PyAV is installed (the ``video`` extra)."""
    return importlib.util.find_spec("av") is not None


def open_clip(data: bytes | IO[bytes], *, max_pixels: int, size: int | None = None) -> Clip:
    """Sample the video (keyframes, bounded; ``formats.video.sample``): a large one through its ranged
    reader, so only the container's index and the sampled keyframes are fetched; raises an ImageError."""
    blob = Blob.of(data)
    content_type = imaging.sniff(blob.head)
    if not can_sample():
        raise UnsupportedImage(NOT_INSTALLED, content_type=content_type)
    from smarttags.adapters.formats import video  # PyAV: only where videos are sampled

    # Frames are drawn at least at the thumbnail's size: the first one is also the poster.
    sampled = video.sample(
        blob.reader() if blob.size else b"",
        size=max(size or 0, thumbnails.SIZE),
        max_pixels=max_pixels,
        content_type=content_type,
    )
    return _clip(sampled)


def _clip(sampled: Video) -> Clip:
    facts = ImageMetadata(
        width=sampled.width,
        height=sampled.height,
        format=sampled.codec.upper(),
        content_type=sampled.content_type,
        decoder="pyav",
        title=sampled.title,
        media="video",
        duration=round(sampled.duration, 3),
    )
    frames = sorted(sampled.frames, key=lambda f: f.seconds)
    return Clip(facts, sampled.duration, tuple(f.seconds for f in frames), tuple(f.image for f in frames))


def read_facts(data: bytes, *, max_pixels: int) -> ImageMetadata:
    """``imaging.read_metadata`` that also reads videos (training's folder sync): a video's facts come
    from sampling its first keyframe only."""
    if not is_video(data):
        return imaging.read_metadata(data, max_pixels=max_pixels)
    content_type = imaging.sniff(data)
    if not can_sample():
        raise UnsupportedImage(NOT_INSTALLED, content_type=content_type)
    from smarttags.adapters.formats import video

    sampled = video.sample(data, size=16, max_pixels=max_pixels, content_type=content_type, max_frames=1)
    return _clip(sampled).facts


class Videos:
    """``core.ports.Videos``: the poster goes to ``posters`` (SmartTags' own bucket) under ``prefix``."""

    def __init__(self, posters: Store | None, prefix: str) -> None:
        self._posters = posters
        self._prefix = prefix

    @property
    def can_sample(self) -> bool:
        return can_sample()

    def is_video(self, data: bytes | IO[bytes]) -> bool:
        return is_video(data)

    def open(self, data: bytes | IO[bytes], *, max_pixels: int, size: int | None = None) -> Clip:
        return open_clip(data, max_pixels=max_pixels, size=size)

    def keep_poster(self, clip: Any, asset_id: str, etag: str) -> None:
        """Store the poster as the asset version's thumbnail (a new ETag gets a new key, as for images)."""
        if self._posters is None or not isinstance(clip, Clip):
            return
        key = thumbnails.thumbnail_key(self._prefix, asset_id, etag)
        self._posters.put_bytes(key, clip.poster(), content_type="image/jpeg")
