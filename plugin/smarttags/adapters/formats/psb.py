"""PSB (Photoshop "large document", version 2) with psd-tools: the flattened composite.

Pillow reads PSD (version 1) only. The header's size is checked against ``max_pixels`` before
psd-tools parses anything. Photoshop stores a real composite only when the file was saved with
"Maximize compatibility"; without it (the version-info image resource, 1057, says so) the file is
refused with that reason rather than tagged from a blank picture. ``lacks_composite`` reads that
resource for PSDs too, without psd-tools, before Pillow gets them. Layers are not composited here:
that needs psd-tools' ``composite`` extra (scipy, aggdraw), too heavy for the Lambda package.
"""

from __future__ import annotations

import struct

from PIL import Image
from psd_tools import PSDImage

from smarttags.adapters.formats.source import Blob, Source, finish
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

_HEADER = struct.Struct(">4sH6xHIIHH")  # signature, version, reserved, channels, height, width, depth, mode
_VERSION_INFO = 1057  # image resource: version (4 bytes), hasRealMergedData (1 byte), ...
NO_COMPOSITE = "saved without 'Maximize compatibility': the file has no flattened composite"


def decode(data: bytes | Blob, content_type: str, size: int, max_pixels: int) -> Image.Image:
    """The composite of the PSB ``data`` (full size: the format has no reduced decode)."""
    blob = Blob.of(data)
    if blob.size < _HEADER.size:
        raise CorruptImage("truncated PSB header", content_type=content_type)
    signature, version, _channels, height, width, _depth, _mode = _HEADER.unpack_from(blob.head)
    if signature != b"8BPS" or version != 2:
        raise CorruptImage("not a PSB header", content_type=content_type)
    if width <= 0 or height <= 0:
        raise CorruptImage(f"empty image ({width}x{height})", content_type=content_type)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}", content_type=content_type
        )
    try:
        psd = PSDImage.open(blob.reader())
        composite = psd.topil() if psd.has_preview() else None
    except (ValueError, struct.error, EOFError, OSError, IndexError, KeyError, AssertionError) as exc:
        raise CorruptImage(f"unreadable PSB: {type(exc).__name__}: {exc}", content_type=content_type) from None
    if composite is None:
        raise UnsupportedImage(f"PSB {NO_COMPOSITE}", content_type=content_type)
    return finish(composite, Source("PSB", content_type, "psd-tools", width, height))


def lacks_composite(data: bytes | Blob) -> bool:
    """Whether a PSD/PSB says (resource 1057) that its composite is not real; False when unsure."""
    blob = Blob.of(data)
    try:
        at = _HEADER.size
        (mode_length,) = struct.unpack(">I", blob.read_at(at, 4))
        at += 4 + mode_length
        (resources_length,) = struct.unpack(">I", blob.read_at(at, 4))
        at += 4
        end = min(at + resources_length, blob.size)
        while at + 12 <= end:
            head = blob.read_at(at, 7)
            if head[:4] != b"8BIM":
                break
            (resource,) = struct.unpack_from(">H", head, 4)
            name_length = head[6]
            at += 6 + (name_length + 2) // 2 * 2  # the Pascal name, padded to an even length
            (size,) = struct.unpack(">I", blob.read_at(at, 4))
            at += 4
            if resource == _VERSION_INFO:
                return bool(size >= 5 and blob.read_at(at + 4, 1) == b"\x00")
            at += (size + 1) // 2 * 2
    except (struct.error, IndexError):
        return False  # a broken header: the decoder will say what is wrong
    return False
