"""Safe image decoding: bytes in, a model-sized RGB array (or a typed ImageError) out.

The format is decided from the bytes (``sniff``), never from the key's extension or the uploader's
Content-Type. Decodes JPEG (incl. MPO), PNG, GIF and WebP (first frame), TIFF (first page), BMP,
AVIF and PSD (the flattened composite) with Pillow, HEIC/HEIF (incl. 10-bit) with pillow-heif, PDF,
SVG, camera RAW and PSB with the decoders of ``adapters.formats``, and nothing else: Pillow's other
plugins (EPS calls Ghostscript, for one) are never offered the bytes.
Every failure becomes an ``ImageError`` subclass with a reason:

* ``UnsupportedImage`` for formats we recognise by their magic bytes but do not decode (video,
  JPEG 2000, JPEG XL, Office, audio, archives, fonts...), with their content type;
* ``CorruptImage`` for empty, truncated or garbled input and for anything that is not an image;
* ``ImageTooLarge`` when the header announces more than ``max_pixels`` pixels — checked right after
  ``Image.open`` has read the header, before a single pixel buffer is allocated.

``prepare`` keeps the whole picture: it scales the long side to the model's input size and pads the
short side with neutral grey (letterboxing; no centre crop). Large JPEGs are decoded with DCT scaling
(``Image.draft``) straight to about the size needed, which is what makes 12 MP photos cheap; a HEIC
decodes its embedded thumbnail, and a JPEG its MPF large thumbnail (cameras write one), instead of the
primary image when that covers the size needed.
Input is bytes or a seekable reader (``adapters.s3.RangedObject``): decoders read what they need from
it (see ``formats.Blob``), so a large object is never held whole in memory where the library allows.
``read_metadata`` reads size, format and embedded title/description/keywords (XMP, IPTC, EXIF)
from the header only. A ``Picture`` (``open_picture``) gives both from one open of the bytes.
"""

from __future__ import annotations

import logging
import re
import struct
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any, TypeVar

import numpy as np
import pillow_heif
from PIL import Image, IptcImagePlugin, UnidentifiedImageError

from smarttags.adapters import formats
from smarttags.adapters.formats import Blob
from smarttags.errors import CorruptImage, ImageTooLarge, SmartTagsError, UnsupportedImage
from smarttags.errors import ImageError as ImageError  # re-exported: callers catch it from here

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# HEIF is not in Pillow itself; pillow-heif adds it as an ordinary Pillow plugin (header-only open,
# 8-bit output even for 10-bit files). AVIF is Pillow's own reader (Pillow >= 11.3 wheels).
pillow_heif.register_heif_opener()

# The formats we decode. Multi-picture JPEGs (many phones) open through "JPEG" as format "MPO".
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF", "HEIF", "PSD")
_DECODED_TYPES = {
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/tiff",
    "image/bmp",
    "image/avif",
    "image/heic",
    "image/heif",
    "image/vnd.adobe.photoshop",
}
# The library that decodes each Pillow format, recorded on the asset next to the detected format.
_DECODERS = {"HEIF": "pillow-heif"}
GREY = (128, 128, 128)  # the neutral grey of padding and of transparent areas
_EXIF_ORIENTATION = 0x0112
_EXIF_IMAGE_DESCRIPTION = 0x010E
_TIFF_DNG_VERSION = 50706
# MPF image types that are the primary image scaled down (CIPA DC-007), i.e. safe to tag instead of it.
_MPF_PREVIEWS = ("Large Thumbnail (VGA Equivalent)", "Large Thumbnail (Full HD Equivalent)")
_XMP_SCAN = 4 << 20  # bytes searched for an XMP packet the decoder did not find
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# --- sniffing ----------------------------------------------------------------------------------

_FTYP_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"hevc": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevx": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"crx ": "image/x-canon-cr3",
    b"qt  ": "video/quicktime",
    b"M4V ": "video/x-m4v",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3g2a": "video/3gpp2",
}
_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"8BPS\x00\x02", "image/vnd.adobe.photoshop-large"),  # PSB: Pillow reads version 1 only
    (b"8BPS", "image/vnd.adobe.photoshop"),
    (b"%PDF", "application/pdf"),
    (b"%!PS", "application/postscript"),
    (b"\xc5\xd0\xd3\xc6", "application/postscript"),
    (b"\x1aE\xdf\xa3", "video/x-matroska"),
    (b"FLV\x01", "video/x-flv"),
    (b"\x00\x00\x01\xba", "video/mpeg"),
    (b"\x00\x00\x01\xb3", "video/mpeg"),
    (b"FUJIFILMCCD-RAW", "image/x-fuji-raf"),
    (b"FOVb", "image/x-sigma-x3f"),
    (b"\x00MRM", "image/x-minolta-mrw"),
    (b"IIRO\x08\x00", "image/x-olympus-orf"),
    (b"IIRS\x08\x00", "image/x-olympus-orf"),
    (b"MMOR\x00\x00", "image/x-olympus-orf"),
    (b"IIU\x00", "image/x-panasonic-rw2"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "image/jp2"),
    (b"\xff\x4f\xff\x51", "image/jp2"),
    (b"\xff\x0a", "image/jxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
    (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),  # legacy Office (.doc, .xls, .ppt)
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"\x00\x01\x00\x00\x00", "font/ttf"),
    (b"OTTO", "font/otf"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
)
# Office Open XML (and OpenDocument) files are zip archives; the first member's name tells them apart.
_ZIP_KINDS = (
    (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    (b"mimetypeapplication/vnd.oasis.opendocument.", "application/vnd.oasis.opendocument"),
)
# Content types we never hand to Pillow: it cannot decode them (or must not, like EPS).
_REFUSED_PREFIX = ("video/", "application/", "audio/", "font/")
_REFUSED = {
    "image/vnd.adobe.photoshop-large",
    "image/x-canon-cr2",
    "image/x-canon-cr3",
    "image/x-fuji-raf",
    "image/x-sigma-x3f",
    "image/x-minolta-mrw",
    "image/x-olympus-orf",
    "image/x-panasonic-rw2",
    "image/svg+xml",
    "image/jp2",
    "image/jxl",
    "image/vnd.microsoft.icon",
}


def sniff(data: bytes) -> str | None:
    """The content type announced by the first bytes, or None when we do not recognise them."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _FTYP_BRANDS.get(brand, "video/mp4")
    if head[:4] == b"RIFF":
        kind = head[8:12]
        return {b"WEBP": "image/webp", b"AVI ": "video/x-msvideo", b"WAVE": "audio/wav"}.get(
            kind, "application/octet-stream"
        )
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        # Canon CR2 is a TIFF with "CR" at byte 8; DNG, NEF and ARW are caught after opening.
        return "image/x-canon-cr2" if head[8:10] == b"CR" else "image/tiff"
    if head[:4] == b"PK\x03\x04":
        # Member names are stored uncompressed from byte 30 on: Office's (word/, xl/, ppt/) come first.
        window = data[30:4096]
        for marker, content_type in _ZIP_KINDS:
            if marker in window:
                return content_type
        return "application/zip"
    for prefix, content_type in _PREFIXES:
        if head.startswith(prefix):
            return content_type
    if _SVG_ROOT.match(data, 0, SVG_SCAN):
        return "image/svg+xml"
    window = data[:SVG_SCAN].lstrip(b"\xef\xbb\xbf \t\r\n")
    if window[:5].lower() == b"<?xml" and b"<svg" in window.lower():
        return "image/svg+xml"  # an SVG inside other XML: the decoder says what its root is instead
    return None


SVG_SCAN = 64 << 10  # an SVG's root element must start within this many bytes
# An optional BOM, then whitespace, the XML declaration and processing instructions, comments and a
# DOCTYPE (its internal subset skipped with its comments and quoted strings), then the root element:
# <svg or <x:svg.
# Atomic groups and possessive loops: a match that fails never backtracks into what it skipped.
_SVG_ROOT = re.compile(
    rb"(?:\xef\xbb\xbf)?(?>\s|<\?.*?\?>|<!--.*?-->"
    rb"|<!DOCTYPE(?>[^\[>\"']|\"[^\"]*\"|'[^']*')*+"
    rb"(?:\[(?>(?><!--.*?-->)|<(?!!--)|[^\]\"'<]|\"[^\"]*\"|'[^']*')*+\]\s*)?>)*+"
    rb"<(?:[A-Za-z_][\w.-]*:)?svg[\s/>]",
    re.DOTALL | re.IGNORECASE,
)


def _refused(content_type: str | None) -> bool:
    return content_type is not None and (content_type in _REFUSED or content_type.startswith(_REFUSED_PREFIX))


# --- opening -----------------------------------------------------------------------------------


def open_image(data: bytes | IO[bytes] | Blob, *, max_pixels: int, size: int | None = None) -> Image.Image:
    """Open ``data`` lazily (header only) and refuse what we must not decode. Pixels are not loaded.

    PDF, SVG, camera RAW and PSB are the exception: ``adapters.formats`` draws them right away with
    their long side at about ``size`` (what the caller will shrink to) and attaches their facts.
    """
    blob = Blob.of(data)
    if not blob.size:
        raise CorruptImage("zero bytes")
    content_type = sniff(blob.head)
    drawn = formats.decode(blob, content_type, size=size, max_pixels=max_pixels)
    if drawn is not None:
        return drawn
    if _refused(content_type):
        raise UnsupportedImage(f"{content_type} is not a supported image format", content_type=content_type)
    # libtiff decodes compressed strips from a file descriptor, or else reads the whole file into memory.
    spool = blob.on_disk() if content_type == "image/tiff" and not blob.in_memory else None
    try:
        img = _pillow_open(spool or blob.reader(), content_type)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    if spool is not None:
        weakref.finalize(img, spool.close)  # the copy on disk lives as long as the image reading it
    content_type = Image.MIME.get(img.format or "", content_type)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"empty image ({width}x{height})", content_type=content_type)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}",
            content_type=content_type,
        )
    if img.format == "TIFF" and _TIFF_DNG_VERSION in getattr(img, "tag_v2", {}):
        raise UnsupportedImage("DNG camera RAW is not supported", content_type="image/x-adobe-dng")
    return img


def _pillow_open(fp: IO[bytes], content_type: str | None) -> Image.Image:
    try:
        img = Image.open(fp, formats=DECODED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (its limit is global, ours is per setting); the warning is raised as an
        # error only where warnings are errors (tests), but it means the same thing.
        raise ImageTooLarge(f"refused by the decompression-bomb guard: {exc}", content_type=content_type) from None
    except UnidentifiedImageError:
        if content_type in _DECODED_TYPES:
            raise CorruptImage(f"not a valid {content_type} file", content_type=content_type) from None
        if content_type is not None and content_type != "application/octet-stream":
            raise UnsupportedImage(f"{content_type} could not be read", content_type=content_type) from None
        raise CorruptImage("not an image (no known format signature)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, zlib.error) as exc:
        raise CorruptImage(f"unreadable header: {exc}", content_type=content_type) from None
    return img


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or invalid."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not cost us the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --- pixels ------------------------------------------------------------------------------------


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image: alpha composited onto grey, 16-bit and float scaled, palettes/CMYK expanded."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples (PNG, TIFF): keep the top 8 bits rather than clipping at 255.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535) // 257
        return Image.fromarray(wide.astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        if arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, GREY)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _load(img: Image.Image) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(str(exc), content_type=_mime(img)) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, zlib.error) as exc:
        # Pillow reports truncation as OSError("image file is truncated ...").
        raise CorruptImage(f"cannot decode pixels: {exc}", content_type=_mime(img)) from None


def _mime(img: Image.Image) -> str | None:
    return Image.MIME.get(img.format or "")


def decoder_of(img: Image.Image) -> str:
    """The library that decodes an opened image (stored on the asset with the detected format)."""
    source = formats.source_of(img)
    return source.decoder if source is not None else _DECODERS.get(img.format or "", "pillow")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Letterbox: scale the long side to ``size`` and pad the rest with grey; nothing is cropped."""
    width, height = img.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new != img.size:
        # reducing_gap lets Pillow shrink big images by integer factors first: same result, faster.
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    if new == (size, size):
        return img
    canvas = Image.new("RGB", (size, size), GREY)
    canvas.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def prepare(data: bytes | IO[bytes], size: int, *, max_pixels: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Decode ``data`` into a ``(size, size, 3)`` uint8 RGB array, EXIF-oriented and letterboxed.

    Raises an ``ImageError`` subclass for anything that cannot become such an array.
    """
    return open_picture(data, max_pixels=max_pixels, size=size).pixels(size)


def _oriented(img: Image.Image, turn: int) -> Image.Image:
    method = _TRANSPOSE.get(turn)
    return img if method is None else img.transpose(method)


def prepare_array(pixels: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Letterbox an in-memory ``(H, W, 3)`` uint8 RGB array (or ``(H, W)`` grey) to ``(size, size, 3)``."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3) pixels, got shape {arr.shape}")
    if arr.shape == (size, size, 3):
        return arr
    img = Image.fromarray(np.ascontiguousarray(arr))
    return np.asarray(fit_square(to_rgb(img), size), dtype=np.uint8)


# --- metadata ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMetadata:
    """What the header tells: displayed size (after EXIF orientation), format and embedded text."""

    width: int
    height: int
    format: str
    content_type: str | None
    orientation: int = 1
    decoder: str = "pillow"
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = field(default_factory=tuple)
    media: str = "image"
    duration: float | None = None


_XMP_PACKET = re.compile(rb"<x:xmpmeta[\s>].*?</x:xmpmeta>", re.DOTALL)
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def read_metadata(data: bytes | IO[bytes], *, max_pixels: int = 1 << 62) -> ImageMetadata:
    """Size, format, title, description and keywords of an image, read without decoding its pixels."""
    return open_picture(data, max_pixels=max_pixels).facts


class Picture:
    """One image opened once: its facts read from the header, its pixels decoded on demand (the tagger
    needs both from one upload; ``prepare`` and ``read_metadata`` are this class used for one of them)."""

    def __init__(self, data: bytes | IO[bytes], *, max_pixels: int, size: int | None = None) -> None:
        blob = self._blob = Blob.of(data)
        self._max_pixels = max_pixels
        self._img = _guarded(blob, lambda: open_image(blob, max_pixels=max_pixels, size=size))
        facts = _guarded(blob, lambda: _facts(self._img, blob))
        # The facts (source size, text) are read first: drafting a thumbnail changes the image's size.
        self._drafted_for = (
            size if size is not None and _guarded(blob, lambda: _draft_thumbnail(self._img, size)) else None
        )
        self.facts = replace(facts, decoder=f"{facts.decoder} (embedded thumbnail)") if self._drafted_for else facts

    def pixels(self, size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """A ``(size, size, 3)`` uint8 RGB array, EXIF-oriented and letterboxed (once per picture: the
        decoded pixels replace the lazy image)."""
        if self._drafted_for is not None and size > self._drafted_for:
            # The thumbnail chosen at open covers the size given then, not this one: the full image does.
            self._img = _guarded(self._blob, lambda: open_image(self._blob, max_pixels=self._max_pixels))
            self._drafted_for = None
        return _guarded(self._blob, lambda: _pixels(self._img, self.facts.orientation, size))


def open_picture(data: bytes | IO[bytes], *, max_pixels: int, size: int | None = None) -> Picture:
    """Open ``data`` as a picture; raises an ``ImageError`` subclass for what is not a readable image.
    ``size`` is the pixels' size to come: formats drawn by ``adapters/formats`` (PDF, SVG, RAW) are
    drawn at about that size, so they are drawn once."""
    return Picture(data, max_pixels=max_pixels, size=size)


def _guarded(blob: Blob, step: Callable[[], _T]) -> _T:
    try:
        return step()
    except (SmartTagsError, MemoryError):  # ours: a bad file, or S3 failing mid-read (retried)
        raise
    except Exception as exc:
        # A decoder bug on hostile bytes (Pillow's plugins raise many types) is still this file's
        # problem only: one bad file must never fail the batch it is in.
        log.warning("decoder failed unexpectedly: %s: %s", type(exc).__name__, exc)
        raise CorruptImage(f"decoder failed: {type(exc).__name__}: {exc}", content_type=sniff(blob.head)) from None


def _pixels(img: Image.Image, turn: int, size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    if img.format in ("JPEG", "MPO") and max(img.size) > size:
        # DCT scaling: decode at 1/2, 1/4 or 1/8 scale, never below what the letterbox needs.
        img.draft("RGB", _covering(img.size, size))
    _load(img)
    try:
        rgb = fit_square(_oriented(to_rgb(img), turn), size)
    except (OSError, ValueError) as exc:
        raise CorruptImage(f"cannot convert pixels: {exc}", content_type=_mime(img)) from None
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise CorruptImage(f"unexpected decoded shape {arr.shape}", content_type=_mime(img))
    return arr


def _covering(source: tuple[int, int], size: int) -> tuple[int, int]:
    """The smallest (w, h) with the aspect of ``source`` whose long side is at least ``size``."""
    width, height = source
    long_side = max(width, height)
    return max(1, -(-width * size // long_side)), max(1, -(-height * size // long_side))


def _draft_thumbnail(img: Image.Image, size: int) -> bool:
    """Make a HEIF decode its smallest embedded thumbnail that still covers ``size`` instead of the
    primary image (phones embed one: a 24 MP HEIC then costs a 320 px decode). pillow-heif's ``draft``
    only picks a thumbnail that is a scaled copy (same mode, aspect, crop, rotation, colour profile).
    A JPEG with an MPF large thumbnail (cameras write a VGA or Full HD one) decodes that instead."""
    if max(img.size) <= size:
        return False
    if img.format == "MPO":
        return _seek_mpf_preview(img, size)
    if img.format != "HEIF":
        return False
    return img.draft("RGB", _covering(img.size, size)) is not None


def _seek_mpf_preview(img: Image.Image, size: int) -> bool:
    """Seek a multi-picture JPEG to its smallest large thumbnail that covers ``size`` with the primary
    image's aspect (a letterboxed one would tag its bars). Only the frames' headers are read: read over
    S3, the primary image's data is never fetched."""
    entries = getattr(img, "mpinfo", {}).get(0xB002, [])
    width, height = img.size
    best: tuple[int, int] | None = None  # (pixels, frame)
    for frame, entry in enumerate(entries):
        if frame == 0 or entry.get("Attribute", {}).get("MPType") not in _MPF_PREVIEWS:
            continue
        try:
            img.seek(frame)
        except (OSError, ValueError, EOFError, SyntaxError, struct.error):
            continue  # a broken preview: the primary image may still be fine
        w, h = img.size
        if min(w, h) and max(w, h) >= size and abs(w * height - h * width) <= 0.01 * width * h:
            best = min(best or (w * h, frame), (w * h, frame))
    if best is None:
        if entries:
            img.seek(0)
        return False
    img.seek(best[1])
    return True


def _facts(img: Image.Image, blob: Blob) -> ImageMetadata:
    """Text comes from XMP (dc:title, dc:description, dc:subject), IPTC (2:05 title, 2:120 caption,
    2:25 keywords) and EXIF ImageDescription, in that order of preference; keywords are merged."""
    source = formats.source_of(img)
    if source is not None:  # drawn by adapters/formats: its facts came with it (XMP still wins)
        xmp = _parse_xmp(_xmp_bytes(img, blob))
        return ImageMetadata(
            width=source.width,
            height=source.height,
            format=source.format,
            content_type=source.content_type,
            decoder=source.decoder,
            title=_first(xmp.get("title"), [source.title or ""]),
            description=_first(xmp.get("description"), [source.description or ""]),
            keywords=tuple(dict.fromkeys([*xmp.get("subject", []), *source.keywords])),
        )
    turn = orientation(img)
    width, height = img.size
    if turn in (5, 6, 7, 8):
        width, height = height, width
    xmp = _parse_xmp(_xmp_bytes(img, blob))
    iptc = _iptc(img)
    exif_description = _exif_description(img)
    keywords: list[str] = []
    for word in [*xmp.get("subject", []), *iptc.get("keywords", [])]:
        if word and word not in keywords:
            keywords.append(word)
    return ImageMetadata(
        width=width,
        height=height,
        format=img.format or "",
        content_type=_mime(img),
        orientation=turn,
        decoder=decoder_of(img),
        title=_first(xmp.get("title"), iptc.get("title")),
        description=_first(xmp.get("description"), iptc.get("description"), [exif_description or ""]),
        keywords=tuple(keywords),
    )


def _first(*candidates: list[str] | None) -> str | None:
    for values in candidates:
        for value in values or []:
            if value and value.strip():
                return value.strip()
    return None


def _xmp_bytes(img: Image.Image, blob: Blob) -> bytes | None:
    info = img.info
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = info.get(key)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if img.format == "TIFF":
        value = getattr(img, "tag_v2", {}).get(700)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    # XMP packets are stored uncompressed in every format we read: a bounded scan finds the rest.
    match = _XMP_PACKET.search(blob.read_at(0, _XMP_SCAN))
    return match.group(0) if match else None


def _parse_xmp(packet: bytes | None) -> dict[str, list[str]]:
    if not packet:
        return {}
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    start = packet.find(b"<x:xmpmeta")
    end = packet.rfind(b"</x:xmpmeta>")
    if start >= 0 and end > start:
        packet = packet[start : end + len(b"</x:xmpmeta>")]
    try:
        root = ElementTree.fromstring(packet)
    except (DefusedXmlException, SyntaxError, ValueError) as exc:  # ParseError is a SyntaxError
        log.info("ignoring unreadable XMP packet: %s", exc)
        return {}
    out: dict[str, list[str]] = {}
    for name in ("title", "description", "subject"):
        values: list[str] = []
        for element in root.iter(f"{{{_NS['dc']}}}{name}"):
            items = list(element.iter(f"{{{_NS['rdf']}}}li"))
            if items:
                values.extend((li.text or "").strip() for li in items)
            elif element.text and element.text.strip():
                values.append(element.text.strip())
        if values:
            out[name] = [v for v in values if v]
    # dc:title/description may also be attributes of rdf:Description (short form).
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for name in ("title", "description"):
            value = description.get(f"{{{_NS['dc']}}}{name}")
            if value:
                out.setdefault(name, []).append(value)
    return out


def _decode_iptc(value: bytes) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip()


def _iptc(img: Image.Image) -> dict[str, list[str]]:
    try:
        info = IptcImagePlugin.getiptcinfo(img)  # type: ignore[arg-type,no-untyped-call]
    except (OSError, SyntaxError, ValueError, IndexError, struct.error, TypeError) as exc:
        log.info("ignoring unreadable IPTC block: %s", exc)
        return {}
    if not info:
        return {}
    out: dict[str, list[str]] = {}
    for key, name in (((2, 25), "keywords"), ((2, 5), "title"), ((2, 120), "description")):
        value = info.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        out[name] = [_decode_iptc(v) for v in values if isinstance(v, bytes)]
    return out


def _exif_description(img: Image.Image) -> str | None:
    try:
        value = img.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    except Exception:  # a broken EXIF block must not cost us the rest
        return None
    if isinstance(value, bytes):
        value = _decode_iptc(value)
    return value.strip().strip("\x00") or None if isinstance(value, str) else None
