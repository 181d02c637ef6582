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


# --- documents: PDF, SVG, camera RAW, PSB, all written here from scratch ------------------------------


def pdf(
    colour: tuple[float, float, float] = (1, 0, 0),
    *,
    title: str | None = "Spring catalogue",
    text: str = "Red summer dress",
    pages: int = 1,
    size: tuple[int, int] = (400, 300),
    image_px: tuple[int, int] | None = None,
    circle: bool = False,
    nested: bool = False,
) -> bytes:
    """A PDF whose page 1 is white with a ``colour`` rectangle or ``circle`` like ``picture``'s (and
    ``text``); ``pages`` copies of it.

    ``image_px`` adds an image XObject declaring that many pixels (its data is one byte: a bomb's header),
    drawn by the page or (``nested``) by a form XObject the page draws.
    """
    w, h = size
    shape = _ellipse(w, h) if circle else f"{w * 0.2} {h * 0.2} {w * 0.6} {h * 0.6} re f\n"
    content = f"{colour[0]} {colour[1]} {colour[2]} rg " + shape
    if text:
        content += f"0 g BT /F1 12 Tf 10 10 Td ({text}) Tj ET\n"
    if image_px:
        content += f"q {w} 0 0 {h} 0 0 cm /Im1 Do Q\n"
    objects: list[bytes] = []  # object n is objects[n - 1]
    first_page = 6
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    stream = content.encode()
    objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    image = b""
    if image_px:
        iw, ih = image_px
        image = (
            f"<< /Type /XObject /Subtype /Image /Width {iw} /Height {ih} /ColorSpace /DeviceGray "
            f"/BitsPerComponent 8 /Length 1 >>\nstream\n\x00\nendstream".encode()
        )
    if image_px and nested:  # object 5 is a form drawing the image, which comes last
        draw = b"/Im1 Do"
        objects.append(
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /Im1 %d 0 R >> >> "
            b"/Length %d >>\nstream\n%s\nendstream" % (first_page + pages + 1, len(draw), draw)
        )
    elif image_px:
        objects.append(image)
    else:
        objects.append(b"<< >>")
    resources = "/Font << /F1 3 0 R >>" + (" /XObject << /Im1 5 0 R >>" if image_px else "")
    for _ in range(pages):
        page = f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents 4 0 R /Resources << {resources} >> >>"
        objects.append(page.encode())
    info = len(objects) + 1
    objects.append(f"<< /Title ({title}) /Keywords (dress, summer) >>".encode() if title else b"<< >>")
    if image_px and nested:
        objects.append(image)
    return _pdf_file(objects, b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b" /Info %d 0 R" % info)


def _pdf_file(objects: list[bytes], header: bytes, trailer: bytes = b"") -> bytes:
    """Numbered objects (the first is the catalogue), their cross-reference table and the trailer."""
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, trailer)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _ellipse(w: float, h: float) -> str:
    """A filled ellipse in the box ``picture`` draws its circle in, as four Bezier curves."""
    cx, cy, rx, ry, k = w / 2, h / 2, w * 0.3, h * 0.3, 0.5523
    return (
        f"{cx + rx} {cy} m {cx + rx} {cy + k * ry} {cx + k * rx} {cy + ry} {cx} {cy + ry} c "
        f"{cx - k * rx} {cy + ry} {cx - rx} {cy + k * ry} {cx - rx} {cy} c "
        f"{cx - rx} {cy - k * ry} {cx - k * rx} {cy - ry} {cx} {cy - ry} c "
        f"{cx + k * rx} {cy - ry} {cx + rx} {cy - k * ry} {cx + rx} {cy} c f\n"
    )


def svg(colour: str = "red", *, width: str = "300", height: str = "150", extra: str = "", title: str = "Logo") -> bytes:
    """A white SVG with a ``colour`` rectangle in its middle; ``extra`` is inserted before the end."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}" viewBox="0 0 300 150"><title>{title}</title>'
        f'<rect width="300" height="150" fill="white"/><rect x="60" y="30" width="180" height="90" fill="{colour}"/>'
        f"{extra}</svg>"
    ).encode()


def dng(
    colour: tuple[int, int, int] = (255, 0, 0),
    size: tuple[int, int] = (64, 48),
    preview: Image.Image | None = None,
    orientation: int = 1,
    jpeg_preview: bool = False,
) -> bytes:
    """A DNG (written with tifffile): an RGGB mosaic of one ``colour``, and an optional preview as IFD0,
    uncompressed RGB or (``jpeg_preview``) a baseline JPEG as cameras write it."""
    import numpy as np
    import tifffile

    width, height = size
    level = [round(c / 255 * 4000) + 50 for c in colour]
    mosaic = np.zeros((height, width), np.uint16)
    mosaic[0::2, 0::2] = level[0]
    mosaic[0::2, 1::2] = level[1]
    mosaic[1::2, 0::2] = level[1]
    mosaic[1::2, 1::2] = level[2]
    cfa = [
        (33421, "H", 2, (2, 2), False),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), False),  # CFAPattern: RGGB
        (50710, "B", 3, (0, 1, 2), False),  # CFAPlaneColor
        (50717, "I", 1, 4095, False),  # WhiteLevel
    ]
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    dng_tags = [
        (50706, "B", 4, (1, 4, 0, 0), False),  # DNGVersion
        (50708, "s", 0, "SmartTags Test", False),  # UniqueCameraModel
        (50721, "2i", 9, identity, False),  # ColorMatrix1
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), False),  # AsShotNeutral
        (271, "s", 0, "SmartTags", False),  # Make
        (272, "s", 0, "Test", False),  # Model
        (274, "H", 1, orientation, False),  # Orientation
    ]
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        if preview is None:
            tiff.write(mosaic, photometric=32803, extratags=dng_tags + cfa, subfiletype=0)
        elif not jpeg_preview:
            rgb = np.asarray(preview.convert("RGB"))
            tiff.write(rgb, photometric="rgb", extratags=dng_tags, subfiletype=1, subifds=1)
            tiff.write(mosaic, photometric=32803, extratags=cfa, subfiletype=0)
        else:
            # tifffile encodes JPEG only through imagecodecs: write the JPEG's bytes as a 1-row strip,
            # then turn IFD0's tags into those of a JPEG-compressed YCbCr preview.
            encoded = io.BytesIO()
            preview.convert("RGB").save(encoded, "JPEG", quality=90)
            strip = np.frombuffer(encoded.getvalue(), np.uint8).reshape(1, -1)
            tiff.write(strip, photometric="minisblack", extratags=dng_tags, subfiletype=1, subifds=1)
            tiff.write(mosaic, photometric=32803, extratags=cfa, subfiletype=0)
    if not jpeg_preview or preview is None:
        return buffer.getvalue()
    width, height = preview.size
    return _patch_ifd0(buffer.getvalue(), {256: width, 257: height, 259: 7, 262: 6, 277: 3, 278: height})


def _patch_ifd0(data: bytes, values: dict[int, int]) -> bytes:
    """Overwrite inline SHORT/LONG values of IFD0 entries of a little-endian TIFF."""
    out = bytearray(data)
    (offset,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, offset)
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", out, at)
        if tag in values:
            struct.pack_into(
                "<HH" if kind == 3 else "<I", out, at + 8, *((values[tag], 0) if kind == 3 else (values[tag],))
            )
    return bytes(out)


def psb(image: Image.Image, *, composite: bool = True, version: int = 2) -> bytes:
    """A PSB (version 2, written with psd-tools; or a PSD, version 1); ``composite=False`` as if saved
    without maximize compatibility."""
    from psd_tools import PSDImage
    from psd_tools.constants import Compression, Resource
    from psd_tools.psd.image_resources import ImageResource, VersionInfo

    document = PSDImage.frompil(image.convert("RGB"), compression=Compression.RAW)
    document._record.header.version = version
    if not composite:
        info = VersionInfo(has_composite=False, writer="Adobe Photoshop", reader="Adobe Photoshop")
        key = Resource.VERSION_INFO
        document._record.image_resources[key] = ImageResource(key=key, data=info)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_form_bomb(levels: int = 7, fan: int = 10) -> bytes:
    """A PDF of a few KB whose page draws form 0 ``fan`` times, each form the next one ``fan`` times,
    ``levels`` deep: ``fan ** levels`` red rectangles, which PDFium expands while loading the page."""
    names = " ".join(f"/F{k} {5 + k} 0 R" for k in range(levels))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 300] /Contents 4 0 R "
        f"/Resources << /XObject << {names} >> >> >>".encode(),
    ]
    for k in range(levels + 1):  # object 4 is the page's content, then form 0, 1, ...
        body = " ".join([f"q 0.9 0 0 0.9 5 5 cm /F{k} Do Q"] * fan) if k < levels else "1 0 0 rg 0 0 400 300 re f"
        stream = body.encode()
        head = (
            "<< "
            if k == 0
            else f"<< /Type /XObject /Subtype /Form /BBox [0 0 400 300] /Resources << /XObject << {names} >> >> "
        )
        objects.append(f"{head}/Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    return _pdf_file(objects, b"%PDF-1.7\n")


def jpeg_with_preview(primary: Image.Image, preview: Image.Image, *, quality: int = 90) -> bytes:
    """A JPEG as cameras write it: the primary image, then an MPF "Large Thumbnail (Full HD
    Equivalent)" frame (Pillow writes MPO frames as "Undefined"; the entry's type is patched)."""
    buffer = io.BytesIO()
    primary.save(buffer, "MPO", save_all=True, append_images=[preview], quality=quality)
    data = bytearray(buffer.getvalue())
    tiff = data.index(b"MPF\x00") + 4  # the MP index IFD, little-endian, offsets from here
    (count,) = struct.unpack_from("<H", data, tiff + 8)
    for at in range(tiff + 10, tiff + 10 + 12 * count, 12):
        tag, _kind, _n, offset = struct.unpack_from("<HHII", data, at)
        if tag == 0xB002:  # the MP entries, 16 bytes each: attribute (type) first
            data[tiff + offset + 16 : tiff + offset + 20] = struct.pack("<L", 0x010002)
    return bytes(data)


def video(
    scenes: list[Image.Image], *, seconds: int = 2, fps: int = 5, size: tuple[int, int] = (320, 240), fmt: str = "mp4"
) -> bytes:
    """An H.264 video (PyAV encodes it): ``seconds`` of each picture, a keyframe at every scene's start."""
    import av  # the video extra; only the video tests need it

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = seconds * fps
        for scene in scenes:
            frame = av.VideoFrame.from_image(scene.convert("RGB").resize(size))
            for _ in range(seconds * fps):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def empty_video() -> bytes:
    """A Matroska file with its header and video track and not one frame (zero length): a real video
    cut where its first cluster starts."""
    data = video([Image.new("RGB", (64, 48), "white")], seconds=1, size=(64, 48), fmt="matroska")
    return data[: data.index(b"\x1f\x43\xb6\x75")]
