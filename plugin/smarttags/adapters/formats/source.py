"""What every decoder in ``adapters.formats`` shares: the Blob it reads, the Source it attaches and
its size rule."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from PIL import Image

SOURCE = "smarttags.source"  # the img.info key holding the Source of a rendered image
MODES = ("RGB", "RGBA")  # what decoders return


HEAD_BYTES = 64 << 10  # what sniffing looks at (an SVG's root element must start within it)
_COPY_BYTES = 1 << 20


class Blob:
    """A file's bytes, whole in memory or behind a seekable reader (``adapters.s3.RangedObject``: S3
    ranged reads). Decoders read what they need of it: the header, an embedded preview, a stream
    decoded at reduced scale. A library that needs a real file (libtiff's compressed strips, LibRaw,
    PDFium) gets one spooled to disk, never the whole object in memory; one that decodes only from
    memory (libheif, libwebp, libavif, an SVG's XML) gets ``whole()``."""

    def __init__(self, data: bytes | IO[bytes]) -> None:
        self._bytes: bytes | None = None
        self._fp: IO[bytes] | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            self._bytes = bytes(data)
            self.size = len(self._bytes)
        elif isinstance(data, io.BytesIO):
            self._bytes = data.getvalue()
            self.size = len(self._bytes)
        else:
            self._fp = data
            self.size = data.seek(0, io.SEEK_END)
        self.head = self.read_at(0, HEAD_BYTES)

    @classmethod
    def of(cls, data: bytes | IO[bytes] | Blob) -> Blob:
        return data if isinstance(data, Blob) else cls(data)

    @property
    def in_memory(self) -> bool:
        return self._bytes is not None

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset``; the reader's position is left where it was (a lazily
        opened image reads on from there)."""
        if self._bytes is not None:
            return self._bytes[offset : offset + count]
        assert self._fp is not None
        here = self._fp.tell()
        try:
            self._fp.seek(offset)
            return self._fp.read(max(0, min(count, self.size - offset)))
        finally:
            self._fp.seek(here)

    def whole(self) -> bytes:
        """All of it in memory: for libraries that decode from memory only."""
        return self._bytes if self._bytes is not None else self.read_at(0, self.size)

    def reader(self) -> IO[bytes]:
        """A file positioned at the start, for a decoder to read and seek in."""
        if self._bytes is not None:
            return io.BytesIO(self._bytes)
        assert self._fp is not None
        self._fp.seek(0)
        return self._fp

    def on_disk(self) -> IO[bytes]:
        """A real file holding the bytes (deleted once closed or collected): copied from the reader in
        chunks, so memory holds one chunk. In-memory bytes stay as they are."""
        if self._fp is None:
            return self.reader()
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - the caller's image holds it open
        self._fp.seek(0)
        shutil.copyfileobj(self._fp, spool, _COPY_BYTES)
        spool.seek(0)
        return spool

    @contextmanager
    def path(self) -> Iterator[str]:
        """The name of a file on disk holding the bytes, for a library that opens files by name."""
        with tempfile.NamedTemporaryFile(prefix="smarttags-") as spool:
            if self._bytes is not None:
                spool.write(self._bytes)
            else:
                assert self._fp is not None
                self._fp.seek(0)
                shutil.copyfileobj(self._fp, spool, _COPY_BYTES)
            spool.flush()
            yield spool.name


@dataclass(frozen=True)
class Source:
    """What a rendered document says about itself; ``width``/``height`` are the source's own size."""

    format: str
    content_type: str
    decoder: str
    width: int
    height: int
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = field(default_factory=tuple)


def finish(img: Image.Image, source: Source) -> Image.Image:
    """``img`` as 8-bit RGB (or RGBA, composited later like any PNG) carrying ``source``."""
    out = img if img.mode in MODES else img.convert("RGBA" if "A" in img.getbands() else "RGB")
    out.info[SOURCE] = source
    out.format = source.format
    return out


def target(width: float, height: float, size: int) -> tuple[int, int]:
    """The (w, h) that puts a ``width`` x ``height`` source's long side at ``size``, aspect kept."""
    long_side = max(width, height)
    return max(1, round(width * size / long_side)), max(1, round(height * size / long_side))
