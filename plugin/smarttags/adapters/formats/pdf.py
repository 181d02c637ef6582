"""PDF with pypdfium2 (Google's PDFium): the first page rendered at the backbone's size, plus its text.

Only page 1 is ever loaded, so a document of thousands of pages costs what a one-page one does. Before
rendering, the page's image objects are checked against ``max_pixels`` from their dictionaries (PDFium
decodes embedded images at full size, whatever the render scale). The title is the document's /Title,
else the first line of page 1's text; the description its /Subject, else the start of that text.

PDFium cannot be interrupted: loading a page expands its form XObjects eagerly (a 4 KB file of forms
that draw forms ten times, seven deep, is ten million objects) and rendering has no usable time limit. So
pages are drawn in a child process (``_serve``, started once and reused) capped at ``MEMORY_BYTES``
of address space; one that is not done within ``RENDER_SECONDS`` is killed and replaced, and the file
is refused as too large. A crash of PDFium on hostile bytes kills only the child. Requests go through
one lock: one child, one page at a time (PDFium is not thread-safe anyway).
"""

from __future__ import annotations

import atexit
import os
import pickle
import re
import resource
import selectors
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from smarttags.adapters.formats.source import Blob, Source, finish
from smarttags.errors import CorruptImage, ImageError, ImageTooLarge, UnsupportedImage

CONTENT_TYPE = "application/pdf"
MAX_TEXT = 1000  # characters of page 1's text kept as the description
RENDER_SECONDS = 10.0  # to load, check and draw page 1, child's start-up excluded
MEMORY_BYTES = 2 << 30  # the child's address space (RLIMIT_AS): a page past it fails, not the host
_MAX_OBJECTS = 10_000  # image-size checks per page; past that the page is refused as too complex
_SPACE = re.compile(r"\s+")
_ERRORS: dict[str, type[ImageError]] = {e.__name__: e for e in (CorruptImage, ImageTooLarge, UnsupportedImage)}
_FRAME = struct.Struct(">Q")


def decode(
    data: bytes | Blob, content_type: str, size: int, max_pixels: int, *, seconds: float = RENDER_SECONDS
) -> Image.Image:
    """Page 1 of the PDF ``data``, its long side rendered at ``size`` px, with the document's text."""
    blob = Blob.of(data)
    if blob.in_memory:
        mode, dims, pixels, source = _RENDERER.render((blob.whole(), size, max_pixels), seconds)
    else:  # a large file: PDFium reads what page 1 needs from a spooled copy, by name
        with blob.path() as path:
            mode, dims, pixels, source = _RENDERER.render((path, size, max_pixels), seconds)
    return finish(Image.frombytes(mode, dims, pixels), source)


class _Renderer:
    """The child process that draws pages; killed and replaced when a page overruns its time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None

    def render(
        self, request: tuple[bytes | str, int, int], seconds: float
    ) -> tuple[str, tuple[int, int], bytes, Source]:
        with self._lock:
            child = self._started()
            assert child.stdin is not None and child.stdout is not None
            try:
                _write(child.stdin, request)
                answer = _read(child.stdout, time.monotonic() + seconds)
            except TimeoutError:
                self._stop()
                raise ImageTooLarge(
                    f"page 1 is not drawn within {seconds:g} s (too complex)", content_type=CONTENT_TYPE
                ) from None
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._stop()  # PDFium crashed or ran out of its memory on these bytes
                raise CorruptImage(f"the PDF renderer died on it ({exc})", content_type=CONTENT_TYPE) from None
        if answer[0] == "error":
            raise _ERRORS[answer[1]](answer[2], content_type=CONTENT_TYPE)
        return answer[1], answer[2], answer[3], answer[4]

    def _started(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            if self._child is None:
                atexit.register(self._stop)  # once: the child must not outlive us
            self._child = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import _serve; _serve({MEMORY_BYTES})"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        return self._child

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            for pipe in (self._child.stdin, self._child.stdout):
                if pipe is not None:
                    pipe.close()
            self._child = None


_RENDERER = _Renderer()


def _write(pipe: IO[bytes], message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_FRAME.pack(len(body)) + body)
    pipe.flush()


def _read(pipe: IO[bytes], deadline: float) -> Any:
    """One framed message from the child, or TimeoutError once ``deadline`` has passed."""
    fd = pipe.fileno()  # read with os.read only: the pipe's own buffer stays empty
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)

        def exactly(n: int) -> bytes:
            buf = bytearray()
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise TimeoutError
                chunk = os.read(fd, min(n - len(buf), 1 << 20))
                if not chunk:
                    raise EOFError("the renderer exited")
                buf += chunk
            return bytes(buf)

        (length,) = _FRAME.unpack(exactly(_FRAME.size))
        return pickle.loads(exactly(length))  # our own child's answer


# --- the child -----------------------------------------------------------------------------------


def _serve(memory: int) -> None:
    """Answer framed (data or a file name, size, max_pixels) requests on stdin with the page drawn, until stdin ends."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing else may write into the answers
    while True:
        head = inp.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        data, size, max_pixels = pickle.loads(inp.read(_FRAME.unpack(head)[0]))
        answer: tuple[Any, ...]
        try:
            img, source = _draw(data, size, max_pixels)
            answer = ("ok", img.mode, img.size, img.tobytes(), source)
        except ImageError as exc:
            answer = ("error", type(exc).__name__, exc.detail)
        except Exception as exc:  # a library bug on hostile bytes: this file's problem only
            answer = ("error", "CorruptImage", f"decoder failed: {type(exc).__name__}: {exc}")
        _write(out, answer)


def _draw(data: bytes | str, size: int, max_pixels: int) -> tuple[Image.Image, Source]:
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


def _first_page(doc: pdfium.PdfDocument, size: int, max_pixels: int) -> tuple[Image.Image, Source]:
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
    return img, source


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
