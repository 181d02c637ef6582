"""PDF with pypdfium2 (Google's PDFium): the first page rendered at the backbone's size, plus its text.

Only page 1 is ever loaded, so a document of thousands of pages costs what a one-page one does. Before
rendering, the page's image objects are checked against ``max_pixels`` from their dictionaries (PDFium
decodes embedded images at full size, whatever the render scale). The title is the document's /Title,
else the first line of page 1's text; the description its /Subject, else the start of that text.
PDFium is not thread-safe, even across documents: every call goes through one lock.
"""

from __future__ import annotations

import re
import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from smarttags.adapters.formats.source import Source, finish
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

CONTENT_TYPE = "application/pdf"
MAX_TEXT = 1000  # characters of page 1's text kept as the description
_MAX_OBJECTS = 10_000  # image-size checks per page; past that the page is refused as too complex
_LOCK = threading.Lock()
_SPACE = re.compile(r"\s+")


def decode(data: bytes, content_type: str, size: int, max_pixels: int) -> Image.Image:
    """Page 1 of the PDF ``data``, its long side rendered at ``size`` px, with the document's text."""
    with _LOCK:
        try:
            doc = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
                raise UnsupportedImage("encrypted PDF (a password is needed)", content_type=CONTENT_TYPE) from None
            raise CorruptImage(f"not a readable PDF: {exc}", content_type=CONTENT_TYPE) from None
        try:
            return _first_page(doc, size, max_pixels)
        finally:
            doc.close()


def _first_page(doc: pdfium.PdfDocument, size: int, max_pixels: int) -> Image.Image:
    if len(doc) < 1:
        raise CorruptImage("PDF without pages", content_type=CONTENT_TYPE)
    try:
        page = doc[0]
    except pdfium.PdfiumError as exc:
        raise CorruptImage(f"cannot load page 1: {exc}", content_type=CONTENT_TYPE) from None
    try:
        width, height = page.get_size()  # points (1/72 in), page rotation applied
        if not (width > 0 and height > 0):
            raise CorruptImage(f"page 1 has no area ({width}x{height} pt)", content_type=CONTENT_TYPE)
        _check_images(page, max_pixels)
        # pypdfium2 sizes the bitmap with ceil(): a hair under the exact scale keeps the long side at size.
        bitmap = page.render(scale=(size - 1e-6) / max(width, height), may_draw_forms=False)
        img = bitmap.to_pil()
        text = _page_text(page)
    finally:
        page.close()
    meta = doc.get_metadata_dict(skip_empty=True)
    title = _clean(meta.get("Title")) or _clean(text.split("\n", 1)[0])[:200] or None
    description = _clean(meta.get("Subject")) or _clean(text)[:MAX_TEXT] or None
    keywords = tuple(k for k in (_clean(k) for k in re.split(r"[,;]", meta.get("Keywords", ""))) if k)
    source = Source(
        format="PDF",
        content_type=CONTENT_TYPE,
        decoder="pypdfium2",
        width=round(width),
        height=round(height),
        title=title,
        description=description,
        keywords=keywords,
    )
    return finish(img, source)


def _check_images(page: pdfium.PdfPage, max_pixels: int) -> None:
    """Refuse a page whose embedded images (read from their dictionaries) are over ``max_pixels``."""
    for count, obj in enumerate(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=15)):
        if count >= _MAX_OBJECTS:
            raise ImageTooLarge(f"page 1 has over {_MAX_OBJECTS} images", content_type=CONTENT_TYPE)
        assert isinstance(obj, pdfium.PdfImage)
        try:
            w, h = obj.get_px_size()
        except pdfium.PdfiumError:
            continue  # an image PDFium cannot size is one it will not draw either
        if w * h > max_pixels:
            raise ImageTooLarge(
                f"an image on page 1 is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}",
                content_type=CONTENT_TYPE,
            )


def _page_text(page: pdfium.PdfPage) -> str:
    textpage = page.get_textpage()
    try:
        text: str = textpage.get_text_bounded()  # the whole page: its size is bounded by the page's content
    finally:
        textpage.close()
    return text.strip()


def _clean(value: str | None) -> str:
    return _SPACE.sub(" ", value or "").strip().strip("\x00")
