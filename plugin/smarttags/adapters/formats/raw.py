"""Camera RAW (DNG, CR2/CR3, NEF, ARW, RAF, ORF, RW2, PEF, SRW...) with rawpy (LibRaw).

The embedded preview is used when it is at least the size asked for: a JPEG decoded by Pillow with
DCT scaling straight to about that size, which is what makes a 45 MP RAW cost about what a JPEG does.
Without one (or with only a tiny thumbnail) the sensor data is demosaiced at half size (LibRaw's
``half_size``: no interpolation, a quarter of the pixels). The sensor size read from the header is
checked against ``max_pixels`` before anything is unpacked. The camera's orientation is applied.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import rawpy
from PIL import Image, UnidentifiedImageError

from smarttags.adapters.formats.source import Blob, Source, finish
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

CONTENT_TYPES = (
    "image/x-adobe-dng",
    "image/x-canon-cr2",
    "image/x-canon-cr3",
    "image/x-nikon-nef",
    "image/x-sony-arw",
    "image/x-fuji-raf",
    "image/x-olympus-orf",
    "image/x-panasonic-rw2",
    "image/x-pentax-pef",
    "image/x-samsung-srw",
    "image/x-minolta-mrw",
    "image/x-sigma-x3f",
)
# LibRaw's flip: 3 = upside down, 5 = turn 90 degrees counterclockwise, 6 = clockwise.
_TURN = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def decode(data: bytes | Blob, content_type: str, size: int, max_pixels: int) -> Image.Image:
    """The RAW ``data`` as an RGB image: its preview when large enough, else a half-size demosaic."""
    blob = Blob.of(data)
    if blob.in_memory:
        return _open(lambda raw: raw.open_buffer(io.BytesIO(blob.whole())), content_type, size, max_pixels)
    with blob.path() as path:  # a large file: LibRaw reads what it needs (the preview) from a spooled copy
        return _open(lambda raw: raw.open_file(path), content_type, size, max_pixels)


def _open(opener: Callable[[rawpy.RawPy], None], content_type: str, size: int, max_pixels: int) -> Image.Image:
    raw = rawpy.RawPy()
    try:
        opener(raw)
    except rawpy.LibRawFileUnsupportedError:
        raise UnsupportedImage("a camera RAW LibRaw cannot read", content_type=content_type) from None
    except rawpy.LibRawError as exc:
        raise CorruptImage(f"unreadable camera RAW: {exc}", content_type=content_type) from None
    try:
        return _decode(raw, content_type, size, max_pixels)
    except rawpy.LibRawTooBigError:
        raise ImageTooLarge("LibRaw refused the image as too big", content_type=content_type) from None
    except rawpy.LibRawError as exc:
        raise CorruptImage(f"cannot decode camera RAW: {exc}", content_type=content_type) from None
    finally:
        raw.close()


def _decode(raw: rawpy.RawPy, content_type: str, size: int, max_pixels: int) -> Image.Image:
    sizes = raw.sizes
    if sizes.raw_width * sizes.raw_height > max_pixels:
        raise ImageTooLarge(
            f"{sizes.raw_width}x{sizes.raw_height} = {sizes.raw_width * sizes.raw_height} sensor pixels "
            f"is over the limit of {max_pixels}",
            content_type=content_type,
        )
    if sizes.width <= 0 or sizes.height <= 0:
        raise CorruptImage(f"empty image ({sizes.width}x{sizes.height})", content_type=content_type)
    img, decoder = _preview(raw, size, max_pixels), "rawpy (embedded preview)"
    if img is None:
        # postprocess applies the flip itself; the half-size demosaic has a quarter of the pixels.
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        img, decoder = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), "rawpy (half-size demosaic)"
    else:
        method = _TURN.get(sizes.flip)
        img = img if method is None else img.transpose(method)
    width, height = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
    return finish(img, Source("RAW", content_type, decoder, width, height))


def _preview(raw: rawpy.RawPy, size: int, max_pixels: int) -> Image.Image | None:
    """The embedded preview, decoded to about ``size``, if there is one at least that large."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        pixels = np.asarray(thumb.data)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or max(pixels.shape[:2]) < size:
            return None
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]))
    try:
        img = Image.open(io.BytesIO(bytes(thumb.data)), formats=("JPEG",))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None  # a broken preview: the sensor data may still be fine
    width, height = img.size
    if max(width, height) < size or width * height > max_pixels:
        return None
    img.draft("RGB", (max(1, width * size // max(width, height)), max(1, height * size // max(width, height))))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError):
        return None
    return img.convert("RGB")
