"""Thumbnails for the admin: one JPEG per asset version, made once and kept in S3.

They are kept in SmartTags' own bucket (``aws.own_bucket``), not beside the originals: a write to the
asset bucket would raise an S3 notification and a tagging run. Key: ``<thumbnails_prefix><asset_id>/
<etag>.jpg``, so a changed object (new ETag) gets a new thumbnail and an unchanged one is never decoded
twice. Decoding goes through the hardened ``smarttags.adapters.imaging`` (bomb limit, format allow-list,
EXIF orientation). An object that is missing, or is not an image we decode, has no thumbnail: ``get``
returns None and the caller shows a placeholder. A video's thumbnail is its poster frame, stored at the
same key by the tagger when it samples the video (``adapters/videos.py``): the admin needs no PyAV.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from PIL import Image

from smarttags.adapters import imaging
from smarttags.adapters.s3 import ObjectStore
from smarttags.errors import ImageError, NotFound, RequestError

log = logging.getLogger(__name__)

SIZE = 256
QUALITY = 82
# Originals larger than this are not downloaded for a thumbnail.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_\-]")


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    etag: str  # of the thumbnail object: stable per asset version, usable as an HTTP ETag


def thumbnail_key(prefix: str, asset_id: str, etag: str) -> str:
    return f"{prefix}{_SAFE.sub('_', asset_id)}/{_SAFE.sub('_', etag) or 'none'}.jpg"


def render(data: bytes, *, size: int = SIZE, max_pixels: int) -> bytes:
    """A ``size`` x ``size`` JPEG of the image (letterboxed), or an ImageError."""
    return encode(Image.fromarray(imaging.prepare(data, size, max_pixels=max_pixels)))


def encode(img: Image.Image, size: int = SIZE) -> bytes:
    """A thumbnail JPEG of an RGB picture, letterboxed to ``size`` (a video's poster is made by this too)."""
    buffer = io.BytesIO()
    imaging.fit_square(img, size).save(buffer, format="JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


class Thumbnails:
    def __init__(
        self, store: ObjectStore, cache: ObjectStore, prefix: str, *, max_pixels: int, size: int = SIZE
    ) -> None:
        self._store = store  # the originals
        self._cache = cache  # the thumbnails
        self._prefix = prefix
        self._max_pixels = max_pixels
        self._size = size

    def get(self, asset_id: str, key: str, etag: str) -> Thumbnail | None:
        """The thumbnail of this version of the asset, made now if it does not exist yet."""
        thumb_key = thumbnail_key(self._prefix, asset_id, etag)
        try:
            data, info = self._cache.get_bytes(thumb_key)
            return Thumbnail(data, info.etag)
        except NotFound:
            pass
        try:
            original, _ = self._store.get_bytes(key, max_bytes=MAX_SOURCE_BYTES)
            data = render(original, size=self._size, max_pixels=self._max_pixels)
        except (NotFound, ImageError, RequestError) as exc:
            log.info("no thumbnail for s3://%s/%s: %s", self._store.bucket, key, exc)
            return None
        stored_etag = self._cache.put_bytes(thumb_key, data, content_type="image/jpeg")
        return Thumbnail(data, stored_etag)
