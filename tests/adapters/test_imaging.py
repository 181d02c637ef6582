"""Safe decoding: every bad input gets its typed error; every supported mode/format decodes right."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from smarttags.adapters import imaging
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

from tests.images import pdf, psd

MAX = 100_000_000
OOXML_DOC = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), imaging.GREY


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(color, size=(32, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def heic_10bit(colour, size) -> bytes:
    import pillow_heif

    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint16)
    pixels[:, :] = [c * 257 for c in colour]
    heif = pillow_heif.from_bytes(mode="RGB;16", size=size, data=pixels.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=-1)  # 16-bit input is stored as 10-bit
    return buf.getvalue()


def prepare(data: bytes, size: int = 32, max_pixels: int = MAX) -> np.ndarray:
    return imaging.prepare(data, size, max_pixels=max_pixels)


def close(pixel, expected, tol=6) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int)) <= tol))


# --- bad inputs ----------------------------------------------------------------------------------


def test_zero_bytes_is_corrupt():
    with pytest.raises(CorruptImage) as err:
        prepare(b"")
    assert err.value.reason == "corrupt: zero bytes"


def test_truncated_jpeg_is_corrupt():
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    with pytest.raises(CorruptImage) as err:
        prepare(data[: len(data) // 2])
    assert "truncated" in err.value.reason
    assert err.value.content_type == "image/jpeg"


def test_corrupt_bytes_are_corrupt():
    rng = np.random.default_rng(0)
    with pytest.raises(CorruptImage) as err:
        prepare(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert err.value.reason.startswith("corrupt: not an image")


def test_garbage_after_a_jpeg_signature_is_corrupt():
    with pytest.raises(CorruptImage) as err:
        prepare(b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 4)
    assert err.value.reason.startswith("corrupt:")


def test_text_file_is_corrupt():
    with pytest.raises(CorruptImage) as err:
        prepare(b"name,keywords\nsunset.jpg,beach;sea\n" * 10)
    assert err.value.reason == "corrupt: not an image (no known format signature)"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64), "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  " + bytes(64), "video/quicktime"),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(64), "video/x-msvideo"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "application/postscript"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), "image/jp2"),
        (b"PK\x03\x04" + bytes(26) + b"[Content_Types].xml" + bytes(40) + b"word/document.xml", OOXML_DOC),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "application/x-ole-storage"),
        (b"PK\x03\x04" + bytes(26) + b"photos/a.jpg" + bytes(64), "application/zip"),
        (b"\x1f\x8b\x08\x00" + bytes(64), "application/gzip"),
        (b"ID3\x04\x00" + bytes(64), "audio/mpeg"),
        (b"fLaC" + bytes(64), "audio/flac"),
        (b"OggS\x00\x02" + bytes(64), "audio/ogg"),
        (b"\x00\x01\x00\x00\x00\x0c\x00\x80" + bytes(64), "font/ttf"),
        (b"wOF2\x00\x01\x00\x00" + bytes(64), "font/woff2"),
    ],
    ids=[
        *("mp4", "mov", "avi", "eps", "jp2"),
        *("docx", "doc", "zip", "gzip", "mp3", "flac", "ogg", "ttf", "woff2"),
    ],
)
def test_formats_we_do_not_decode_are_unsupported(data, content_type):
    with pytest.raises(UnsupportedImage) as err:
        prepare(data)
    assert err.value.content_type == content_type
    assert err.value.reason.startswith("unsupported: ")
    assert content_type in err.value.reason


def test_psd_composite_decodes_and_a_truncated_psd_is_corrupt():
    data = psd(solid(BLUE, (40, 20)))
    assert close(prepare(data)[16, 16], BLUE)
    meta = imaging.read_metadata(data)
    assert (meta.format, meta.content_type, meta.decoder, meta.width) == (
        "PSD",
        "image/vnd.adobe.photoshop",
        "pillow",
        40,
    )
    with pytest.raises(CorruptImage):
        prepare(data[: len(data) // 2])


def test_psd_bomb_is_refused_from_the_header():
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 300_000, 300_000, 8, 3) + bytes(14)
    with pytest.raises(ImageTooLarge):
        prepare(header)


def test_heic_including_10_bit_decodes_with_pillow_heif():
    for data in (encode(solid(RED, (64, 48)), "HEIF", quality=95), heic_10bit(RED, (64, 48))):
        assert imaging.sniff(data) == "image/heic"
        assert close(prepare(data)[16, 16], RED, tol=12)
        meta = imaging.read_metadata(data)
        assert (meta.format, meta.decoder, meta.width, meta.height) == ("HEIF", "pillow-heif", 64, 48)


def halves(size=(800, 600)) -> Image.Image:
    """Red on the left half, blue on the right: a letterboxed decode shows which side is which."""
    img = solid(RED, size)
    img.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return img


def test_heic_decodes_its_embedded_thumbnail_when_it_covers_the_backbone_size():
    data = encode(halves(), "HEIF", quality=90, thumbnails=[320])  # as phones write them
    picture = imaging.open_picture(data, max_pixels=MAX, size=224)
    facts = picture.facts
    assert (facts.decoder, facts.width, facts.height) == ("pillow-heif (embedded thumbnail)", 800, 600)
    arr = picture.pixels(224)
    assert arr.shape == (224, 224, 3)
    assert close(arr[112, 20], RED, tol=12) and close(arr[112, 204], BLUE, tol=12)
    assert close(arr[5, 112], GREY) and close(arr[218, 112], GREY)  # 224x168 letterboxed, nothing cropped
    # Metadata alone (no size) and a thumbnail smaller than the backbone's input decode the primary image.
    assert imaging.read_metadata(data).decoder == "pillow-heif"
    small = encode(halves(), "HEIF", quality=90, thumbnails=[160])
    assert imaging.open_picture(small, max_pixels=MAX, size=224).facts.decoder == "pillow-heif"
    assert close(prepare(small, 224)[112, 20], RED, tol=12)


def test_heic_pixels_larger_than_the_thumbnail_come_from_the_primary_image():
    stripes = np.zeros((600, 800, 3), dtype=np.uint8)
    stripes[:, (np.arange(800) // 4) % 2 == 0] = 255  # 4 px black and white columns
    data = encode(Image.fromarray(stripes), "HEIF", quality=90, thumbnails=[320])
    picture = imaging.open_picture(data, max_pixels=MAX, size=224)
    assert picture.facts.decoder == "pillow-heif (embedded thumbnail)"
    arr = picture.pixels(640)  # over the thumbnail's 320 px: the primary image is opened again
    assert arr.shape == (640, 640, 3)
    # Drawn from 800 px the stripes stay 3.2 px wide and mostly pure black or white (0.75 measured);
    # the 320 px thumbnail stretched to 640 px would leave them 1.3 px wide, half grey (0.375 measured).
    row = arr[320, 100:540, 1].astype(int)
    assert float(np.mean((row < 40) | (row > 215))) >= 0.6


def test_heic_and_avif_over_max_pixels_are_refused_from_the_header():
    for fmt in ("HEIF", "AVIF"):
        with pytest.raises(ImageTooLarge):
            prepare(encode(solid(RED, (100, 100)), fmt), max_pixels=1000)


def test_avif_and_animated_webp_decode():
    assert close(prepare(encode(solid(GREEN), "AVIF", quality=95))[16, 16], GREEN, tol=12)
    frames = [solid(RED), solid(BLUE)]
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert close(prepare(webp)[16, 16], RED)  # the first frame


def test_the_bytes_decide_the_format_not_the_name():
    # What a ".jpg" key holds is whatever its bytes say: a HEIC is decoded as HEIC, a PDF is a PDF.
    assert imaging.read_metadata(encode(solid(RED), "HEIF")).format == "HEIF"
    assert imaging.read_metadata(pdf()).format == "PDF"
    with pytest.raises(CorruptImage) as err:
        prepare(b"%PDF-1.7\n" + bytes(64))
    assert err.value.content_type == "application/pdf"


def test_tiff_multipage_lzw_deflate_jpeg_compressed():
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "jpeg"):
        data = encode(solid(GREEN), "TIFF", compression=compression, save_all=True, append_images=[solid(RED)])
        assert close(prepare(data)[16, 16], GREEN, tol=8), compression  # the first page


def test_a_tiff_with_a_dng_version_goes_to_the_raw_decoder_not_pillow():
    ifd = {50706: b"\x01\x04\x00\x00"}  # DNGVersion on an RGB TIFF: LibRaw has no sensor data to read
    data = encode(solid(RED), "TIFF", tiffinfo=ifd)
    with pytest.raises((UnsupportedImage, CorruptImage)) as err:
        prepare(data)
    assert err.value.content_type == "image/x-adobe-dng"


def test_over_max_pixels_is_refused_from_the_header():
    data = encode(solid(RED, (100, 100)), "PNG")
    with pytest.raises(ImageTooLarge) as err:
        prepare(data, max_pixels=1000)
    assert err.value.reason == "too_large: 100x100 = 10000 pixels is over the limit of 1000"
    assert err.value.content_type == "image/png"


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_decompression_bomb_is_refused_before_allocating():
    # 60000 x 60000 RGB would be 10.8 GB; the header alone says so, and nothing is decoded.
    data = _png_header_only(60000, 60000)
    with pytest.raises(ImageTooLarge):
        prepare(data, max_pixels=MAX)
    with pytest.raises(ImageTooLarge):
        imaging.read_metadata(data, max_pixels=MAX)


def test_pillows_own_bomb_error_is_translated():
    # Over twice Pillow's global limit: Pillow refuses inside Image.open, before our own check.
    with pytest.raises(ImageTooLarge) as err:
        prepare(_png_header_only(60000, 60000), max_pixels=1 << 40)
    assert "decompression-bomb" in err.value.reason


# --- formats and modes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {})],
)
def test_formats_decode_to_their_colour(fmt, kw):
    arr = prepare(encode(solid(GREEN), fmt, **kw))
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert close(arr[16, 16], GREEN)


def test_gif_first_frame():
    frames = [solid(RED).convert("P"), solid(BLUE).convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close(prepare(data)[16, 16], RED)


def test_cmyk_jpeg_and_tiff():
    cyan = solid((255, 0, 0, 0), mode="CMYK")
    for fmt in ("JPEG", "TIFF"):
        arr = prepare(encode(cyan, fmt))
        assert close(arr[16, 16], (0, 255, 255), tol=8), fmt


def test_palette_with_transparency_is_composited_on_grey():
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (16, 0, 32, 32))  # right half: palette index 1 (green); left: index 0 (transparent red)
    for fmt in ("PNG", "GIF"):
        arr = prepare(encode(img, fmt, transparency=0))
        assert close(arr[16, 4], GREY, tol=0), fmt
        assert close(arr[16, 28], GREEN, tol=0), fmt


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_alpha_is_composited_on_grey(mode):
    rgba = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    rgba.paste((255, 255, 255, 255), (16, 0, 32, 32))
    img = rgba.convert(mode)
    arr = imaging.prepare_array(np.asarray(imaging.to_rgb(img)), 32)
    assert close(arr[16, 4], GREY, tol=0)
    assert close(arr[16, 28], (255, 255, 255), tol=0)


def test_half_transparent_white_over_grey():
    img = Image.new("LA", (32, 32), (255, 128))
    arr = prepare(encode(img, "PNG"))
    assert close(arr[16, 16], (192, 192, 192), tol=2)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_greyscale_keeps_its_range(mode):
    values = np.zeros((32, 32), dtype=np.uint16)
    values[:, 16:] = 65535
    values[:, :16] = 32896  # 128 * 257
    img = Image.fromarray(values).convert(mode) if mode == "I" else Image.fromarray(values)
    assert img.mode == mode
    data = encode(img, "PNG" if mode == "I;16" else "TIFF")  # Pillow writes mode I as TIFF only
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    arr = prepare(data)
    assert close(arr[16, 4], (128, 128, 128), tol=1)
    assert close(arr[16, 28], (255, 255, 255), tol=0)
    assert close(imaging.prepare_array(np.asarray(imaging.to_rgb(img)), 32)[16, 4], (128,) * 3, tol=1)


def test_16_bit_tiff():
    values = np.full((32, 32), 65535, dtype=np.uint16)
    arr = prepare(encode(Image.fromarray(values), "TIFF"))
    assert close(arr[16, 16], (255, 255, 255), tol=0)


def _red_top_blue_bottom(width=64, height=32) -> Image.Image:
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width, height // 2))
    return img


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise: the red top becomes the right side
    data = encode(_red_top_blue_bottom(), "JPEG", exif=exif.tobytes(), quality=95)
    arr = prepare(data, size=64)
    assert close(arr[32, 40], RED, tol=30)
    assert close(arr[32, 24], BLUE, tol=30)
    assert close(arr[32, 4], GREY, tol=0)  # portrait now: grey bars left and right
    meta = imaging.read_metadata(data)
    assert (meta.width, meta.height, meta.orientation) == (32, 64, 6)


def test_pad_to_square_keeps_the_whole_image():
    img = Image.new("RGB", (64, 32), RED)
    img.paste(BLUE, (0, 0, 4, 32))  # a 4-px blue edge on the left must survive (no centre crop)
    arr = prepare(encode(img, "PNG"), size=32)
    assert close(arr[0, 16], GREY, tol=0) and close(arr[31, 16], GREY, tol=0)  # grey bars top, bottom
    assert close(arr[7, 16], GREY, tol=0) and close(arr[8, 16], RED, tol=0)  # 16 rows of image, centred
    assert close(arr[23, 16], RED, tol=0) and close(arr[24, 16], GREY, tol=0)
    assert close(arr[16, 0], BLUE, tol=0) and close(arr[16, 31], RED, tol=0)  # both ends kept


def test_large_jpeg_uses_dct_scaling_and_stays_correct():
    img = Image.new("RGB", (4000, 3000), GREEN)
    img.paste(RED, (0, 0, 2000, 3000))
    data = encode(img, "JPEG", quality=90)
    opened = imaging.open_image(data, max_pixels=MAX)
    opened.draft("RGB", (299, 224))
    assert opened.size == (500, 375)  # 1/8 scale: what prepare asks Pillow for
    arr = prepare(data, size=224)
    assert close(arr[112, 50], RED, tol=8) and close(arr[112, 170], GREEN, tol=8)
    assert close(arr[10, 112], GREY, tol=0)


def test_prepare_array_letterboxes_and_passes_through():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    out = imaging.prepare_array(arr, 40)
    assert out.shape == (40, 40, 3) and close(out[0, 0], GREY, tol=0) and close(out[20, 20], (0, 0, 0))
    same = np.zeros((40, 40, 3), dtype=np.uint8)
    assert imaging.prepare_array(same, 40) is same
    with pytest.raises(ValueError):
        imaging.prepare_array(np.zeros((4, 4, 3), dtype=np.float32), 4)


# --- metadata ------------------------------------------------------------------------------------

XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
    b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Harbour at dawn</rdf:li></rdf:Alt></dc:title>'
    b'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Boats in the fog</rdf:li></rdf:Alt>'
    b"</dc:description>"
    b"<dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>boat</rdf:li></rdf:Bag></dc:subject>"
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    b'<?xpacket end="w"?>'
)


def _iptc_app13(records: list[tuple[int, bytes]]) -> bytes:
    iim = b"".join(b"\x1c\x02" + bytes([ds]) + struct.pack(">H", len(v)) + v for ds, v in records)
    if len(iim) % 2:
        iim += b"\x00"
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def _app1_xmp(packet: bytes) -> bytes:
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_with(*segments: bytes, exif: Image.Exif | None = None) -> bytes:
    kw = {"exif": exif.tobytes()} if exif is not None else {}
    data = encode(solid(RED, (40, 30)), "JPEG", **kw)
    return data[:2] + b"".join(segments) + data[2:]


def test_metadata_from_xmp_iptc_and_exif():
    exif = Image.Exif()
    exif[0x010E] = "EXIF description"
    data = _jpeg_with(
        _app1_xmp(XMP),
        _iptc_app13([(25, b"boat"), (25, "caf\u00e9".encode()), (5, b"IPTC title"), (120, b"IPTC caption")]),
        exif=exif,
    )
    meta = imaging.read_metadata(data)
    assert (meta.width, meta.height, meta.format, meta.content_type) == (40, 30, "JPEG", "image/jpeg")
    assert meta.title == "Harbour at dawn"
    assert meta.description == "Boats in the fog"
    assert meta.keywords == ("harbour", "boat", "café")


def test_metadata_falls_back_to_iptc_then_exif():
    exif = Image.Exif()
    exif[0x010E] = "EXIF description"
    meta = imaging.read_metadata(_jpeg_with(_iptc_app13([(25, b"sea"), (5, b"IPTC title")]), exif=exif))
    assert meta.title == "IPTC title"
    assert meta.description == "EXIF description"
    assert meta.keywords == ("sea",)


def test_metadata_from_png_xmp():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode("utf-8"))
    meta = imaging.read_metadata(encode(solid(RED, (20, 10)), "PNG", pnginfo=info))
    assert (meta.width, meta.height, meta.format) == (20, 10, "PNG")
    assert meta.keywords == ("harbour", "boat")


def test_hostile_xmp_is_ignored_not_expanded():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><t>&b;</t></x:xmpmeta>'
    )
    meta = imaging.read_metadata(_jpeg_with(_app1_xmp(bomb)))
    assert meta.title is None and meta.keywords == ()


def test_metadata_of_bad_input_raises_typed_errors():
    with pytest.raises(CorruptImage):
        imaging.read_metadata(b"")
    with pytest.raises(CorruptImage):
        imaging.read_metadata(b"%PDF-1.4\n")
    with pytest.raises(UnsupportedImage):
        imaging.read_metadata(b"\x1aE\xdf\xa3" + bytes(64))  # a Matroska video


def test_sniff_names_supported_formats_too():
    assert imaging.sniff(encode(solid(RED), "PNG")) == "image/png"
    assert imaging.sniff(encode(solid(RED), "WEBP")) == "image/webp"
    assert imaging.sniff(b"hello") is None


def _samples() -> list[bytes]:
    img = Image.effect_noise((48, 40), 50).convert("RGB")
    return [
        encode(img, "JPEG"),
        encode(img, "PNG"),
        encode(img.convert("P"), "GIF"),
        encode(img, "WEBP"),
        encode(img, "TIFF"),
        encode(img, "BMP"),
        encode(img.convert("RGBA"), "PNG"),
        encode(img, "HEIF"),
        encode(img, "AVIF"),
        psd(img),
    ]


def test_mutated_files_only_ever_raise_image_errors():
    # A small fuzz: flipped bytes and cut files must end as a picture or as an ImageError, never else.
    rng = np.random.default_rng(1)
    outcomes = {"ok": 0, "error": 0}
    for sample in _samples():
        for _ in range(40):
            raw = bytearray(sample)
            for pos in rng.integers(0, len(raw), rng.integers(1, 8)):
                raw[pos] = int(rng.integers(0, 256))
            cut = bytes(raw[: int(rng.integers(len(raw) // 2, len(raw) + 1))])
            try:
                assert prepare(cut).shape == (32, 32, 3)
                outcomes["ok"] += 1
            except imaging.ImageError:
                outcomes["error"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 40 * len(_samples())
