"""Small images made on the fly for tests: shapes in colours, bad files of every kind."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageDraw


def picture(colour: str, shape: str = "circle", size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    if fmt == "PSD":
        return psd(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def psd(image: Image.Image) -> bytes:
    """A minimal PSD (Pillow has no PSD writer): header, empty sections, raw planar composite."""
    width, height = image.size
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    planes = b"".join(band.tobytes() for band in image.convert("RGB").split())
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes


def truncated_jpeg() -> bytes:
    data = picture("red")
    return data[: len(data) // 3]


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A real PNG header announcing a huge image; refused before any pixel is allocated."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
