"""Decoders for the formats Pillow cannot open: PDF, SVG, camera RAW and PSB, one module each.

Each decoder takes the file (a ``Blob``: bytes, or a reader fetching what is read), the long side the
caller needs and the pixel limit, and returns an 8-bit RGB (or RGBA) Pillow image already drawn at
about that size (a PDF page rendered at that scale, an SVG drawn at that size, a RAW's embedded
preview), never the source's full resolution where the library allows. What the source says about
itself rides along in ``img.info[SOURCE]`` (a ``Source``): its own size, detected format and content
type, the library used, and its text (a PDF's title, an SVG's <title>).

``decode`` is the one entry point ``imaging.open_image`` calls; it returns None for formats these
decoders do not handle, so Pillow gets them. Every failure is an ``ImageError`` subclass: a library's
own exceptions are translated in its module, and anything else a library raises on hostile bytes is
still a ``CorruptImage`` here, never a crash of the batch. ``video.py`` is not dispatched from here:
a video is many frames, not one picture, and PyAV is not in the image Lambda package.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import IO

from PIL import Image

from smarttags.adapters.formats import pdf, psb, raw, svg
from smarttags.adapters.formats.source import MODES, SOURCE, Blob, Source
from smarttags.errors import CorruptImage, SmartTagsError, UnsupportedImage

__all__ = ["DEFAULT_SIZE", "Blob", "Source", "decode", "refine", "source_of"]

log = logging.getLogger(__name__)

DEFAULT_SIZE = 256  # the long side drawn when the caller did not say (metadata only)

# (file, content_type, size, max_pixels) -> an image drawn with its long side at about ``size``
Decoder = Callable[[Blob, str, int, int], Image.Image]
_DECODERS: dict[str, Decoder] = {
    "application/pdf": pdf.decode,
    "image/svg+xml": svg.decode,
    "image/vnd.adobe.photoshop-large": psb.decode,
    **dict.fromkeys(raw.CONTENT_TYPES, raw.decode),
}


def decode(
    data: bytes | IO[bytes] | Blob, content_type: str | None, *, size: int | None, max_pixels: int
) -> Image.Image | None:
    """The image drawn by the decoder for ``content_type`` (refined from the bytes); None if none is ours."""
    blob = Blob.of(data)
    content_type = refine(blob, content_type)
    if content_type == "image/vnd.adobe.photoshop" and psb.lacks_composite(blob):  # Pillow would read a blank
        raise UnsupportedImage(f"PSD {psb.NO_COMPOSITE}", content_type=content_type)
    decoder = _DECODERS.get(content_type or "")
    if decoder is None or content_type is None:
        return None
    try:
        img = decoder(blob, content_type, size or DEFAULT_SIZE, max_pixels)
    except (SmartTagsError, MemoryError):  # ours: a bad file, or S3 failing mid-read (retried)
        raise
    except Exception as exc:
        # A library bug on hostile bytes is this file's problem only: one bad file never fails a batch.
        log.warning("%s decoder failed unexpectedly: %s: %s", content_type, type(exc).__name__, exc)
        raise CorruptImage(f"decoder failed: {type(exc).__name__}: {exc}", content_type=content_type) from None
    if img.mode not in MODES or SOURCE not in img.info:
        raise AssertionError(f"the {content_type} decoder must return RGB(A) with its Source")  # a bug, not input
    return img


def source_of(img: Image.Image) -> Source | None:
    """The Source of an image drawn by one of these decoders; None for a Pillow-opened image."""
    value = img.info.get(SOURCE)
    return value if isinstance(value, Source) else None


# --- camera RAW inside TIFF containers ---------------------------------------------------------

_TIFF_MAKE, _TIFF_SUBIFDS, _TIFF_DNG_VERSION = 271, 330, 50706
# Makers whose RAW files are TIFFs with the raw data in a SubIFD (IFD0 is a small preview).
_RAW_MAKES = {
    b"NIKON": "image/x-nikon-nef",
    b"SONY": "image/x-sony-arw",
    b"PENTAX": "image/x-pentax-pef",
    b"RICOH": "image/x-pentax-pef",
    b"SAMSUNG": "image/x-samsung-srw",
}


def refine(data: bytes | IO[bytes] | Blob, content_type: str | None) -> str | None:
    """Tell camera RAW (DNG, NEF, ARW, PEF, SRW) from plain TIFF by IFD0's tags; other types unchanged."""
    if content_type != "image/tiff":
        return content_type
    return _tiff_raw_type(Blob.of(data)) or content_type


def _tiff_raw_type(blob: Blob) -> str | None:
    order = "<" if blob.head[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", blob.head, 4)
        (count,) = struct.unpack_from(order + "H", blob.read_at(offset, 2))
        count = min(count, 512)  # a real IFD0 has a few dozen entries
        entries = blob.read_at(offset + 2, 12 * count)
        tags: dict[int, tuple[int, int, int]] = {}
        for i in range(count):
            tag, kind, n, value = struct.unpack_from(order + "HHII", entries, 12 * i)
            tags[tag] = (kind, n, value)
    except struct.error:
        return None  # truncated: let Pillow say what is wrong with it
    if _TIFF_DNG_VERSION in tags:
        return "image/x-adobe-dng"
    if _TIFF_SUBIFDS not in tags or _TIFF_MAKE not in tags:
        return None
    kind, n, value = tags[_TIFF_MAKE]
    make = blob.read_at(value, min(n, 64)) if n > 4 else struct.pack(order + "I", value)[:n]
    word = make.split(b"\x00")[0].strip().split(b" ")[0].upper()
    return _RAW_MAKES.get(word)
