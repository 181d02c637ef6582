"""SVG with resvg (resvg-py): drawn to fit the backbone's size, with no file or network access.

The bytes are parsed with defusedxml first: external entities and DTDs that fetch anything are
refused, and expat's own amplification limit stops entity bombs (billion laughs); the internal
entities design tools write (Illustrator's ``&ns_svg;``) still work. Then every ``href`` that is not
a fragment (``#id``) or a ``data:`` URL is removed, because resvg would read ``<image href="/etc/...">``
from the disk (it never fetches http); embedded ``data:`` pictures stay when Pillow reads their header
and it is within ``max_pixels`` (resvg would decode a bomb at full size); embedded SVGs go. Nested
``<use>`` that would expand past ``MAX_NODES`` elements, or that forms a cycle, is refused before
drawing. What resvg gets is the re-serialised, cleaned tree; it draws it inside a ``size`` x ``size``
box, aspect kept. Title and description come from the root's <title> and <desc>.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import resvg_py
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from PIL import Image, UnidentifiedImageError

from smarttags.adapters.formats.source import Blob, Source, finish
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

CONTENT_TYPE = "image/svg+xml"
MAX_NODES = 200_000  # elements after <use> expansion; resvg's own limit (1M) costs ~0.4 s to reach
_SVG = "{http://www.w3.org/2000/svg}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_HREFS = ("href", _XLINK_HREF)
_UNITS = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")
_SPACE = re.compile(r"\s+")


def decode(data: bytes | Blob, content_type: str, size: int, max_pixels: int) -> Image.Image:
    """The SVG ``data`` drawn inside a ``size`` x ``size`` box (RGBA: transparency is kept)."""
    root = _parse(Blob.of(data).whole())  # XML is parsed from memory
    _strip_external_refs(root, max_pixels)
    _check_expansion(root)
    width, height = _intrinsic_size(root)
    try:
        png = resvg_py.svg_to_bytes(svg_string=ET.tostring(root, encoding="unicode"), width=size, height=size, dpi=96)
    except ValueError as exc:  # resvg reports every problem (bad size, node limit) as ValueError
        raise CorruptImage(f"resvg cannot draw it: {exc}", content_type=CONTENT_TYPE) from None
    img = Image.open(io.BytesIO(bytes(png)), formats=("PNG",))
    img.load()
    source = Source(
        format="SVG",
        content_type=CONTENT_TYPE,
        decoder="resvg",
        width=width,
        height=height,
        title=_text(root.find(f"{_SVG}title")),
        description=_text(root.find(f"{_SVG}desc")),
    )
    return finish(img, source)


def _parse(data: bytes) -> ET.Element:
    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=False, forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsupportedImage(f"SVG with external references refused: {exc!r}", content_type=CONTENT_TYPE) from None
    except ET.ParseError as exc:  # also expat's "limit on input amplification factor" (entity bombs)
        raise CorruptImage(f"not well-formed XML: {exc}", content_type=CONTENT_TYPE) from None
    if root.tag != f"{_SVG}svg":
        raise CorruptImage(f"the root element is {root.tag!r}, not an SVG <svg>", content_type=CONTENT_TYPE)
    return root


def _strip_external_refs(root: ET.Element, max_pixels: int) -> None:
    for element in root.iter():
        for name in _HREFS:
            value = (element.get(name) or "").strip()
            if not value or value.startswith("#"):
                continue
            if not (value.startswith("data:") and _embedded_picture_ok(value, max_pixels)):
                del element.attrib[name]


def _embedded_picture_ok(url: str, max_pixels: int) -> bool:
    """Whether resvg may draw a data: URL: a raster picture Pillow can size, within ``max_pixels``.

    resvg decodes embedded pictures at full size itself, so their header is checked here; an embedded
    SVG is dropped (it would escape this sanitising), and so is anything Pillow cannot identify.
    """
    header, _, payload = url[5:].partition(",")
    if "svg" in header.lower() or not header.lower().endswith(";base64"):
        return False
    try:
        raw = base64.b64decode(payload, validate=False)
        with Image.open(io.BytesIO(raw), formats=("PNG", "JPEG", "GIF", "WEBP")) as picture:
            width, height = picture.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's guard fired first
        raise ImageTooLarge(
            "an embedded picture is over the decompression-bomb limit", content_type=CONTENT_TYPE
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, binascii.Error):
        return False
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"an embedded picture is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            content_type=CONTENT_TYPE,
        )
    return True


def _check_expansion(root: ET.Element) -> None:
    """Refuse nested <use> that would expand past MAX_NODES (counted once per id, no drawing)."""
    by_id = {e.get("id"): e for e in root.iter() if e.get("id")}
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def expanded(element: ET.Element) -> int:
        key = id(element)
        if key in sizes:
            return sizes[key]
        if key in visiting:  # resvg would expand a <use> cycle until its node limit
            raise CorruptImage("SVG <use> references form a cycle", content_type=CONTENT_TYPE)
        visiting.add(key)
        total = 1
        for child in _children_and_uses(element, by_id):
            total += expanded(child)
            if total > MAX_NODES:
                break
        visiting.discard(key)
        sizes[key] = total
        return total

    # Depth is bounded by expat's nesting and <use> chains by the id count; recursion stays shallow.
    if expanded(root) > MAX_NODES:
        raise ImageTooLarge(f"SVG expands to over {MAX_NODES} elements (nested <use>)", content_type=CONTENT_TYPE)


def _children_and_uses(element: ET.Element, by_id: dict[str | None, ET.Element]) -> Iterator[ET.Element]:
    yield from element
    if element.tag == f"{_SVG}use":
        for name in _HREFS:
            ref = (element.get(name) or "").strip()
            target = by_id.get(ref[1:]) if ref.startswith("#") else None
            if target is not None:
                yield target
                return


def _intrinsic_size(root: ET.Element) -> tuple[int, int]:
    """The declared size in CSS px: width/height, else the viewBox, else resvg's default 100x100."""
    width, height = _length(root.get("width")), _length(root.get("height"))
    box = _view_box(root.get("viewBox"))
    if width and height:
        return _whole(width), _whole(height)
    if box:
        if width:
            return _whole(width), _whole(width * box[1] / box[0])
        if height:
            return _whole(height * box[0] / box[1]), _whole(height)
        return _whole(box[0]), _whole(box[1])
    return 100, 100


def _length(value: str | None) -> float | None:
    match = _LENGTH.match(value or "")
    if not match or match.group(2) not in _UNITS:
        return None  # "100%", "auto", garbage
    number = float(match.group(1)) * _UNITS[match.group(2)]
    return number if 0 < number < 1e9 else None


def _view_box(value: str | None) -> tuple[float, float] | None:
    parts = re.split(r"[\s,]+", (value or "").strip())
    try:
        w, h = float(parts[2]), float(parts[3])
    except (IndexError, ValueError):
        return None
    return (w, h) if 0 < w < 1e9 and 0 < h < 1e9 else None


def _whole(value: float) -> int:
    return max(1, round(value))


def _text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    return _SPACE.sub(" ", "".join(element.itertext())).strip()[:1000] or None
