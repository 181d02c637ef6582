"""PDF, SVG, camera RAW and PSB (adapters/formats): each decodes to its picture and its facts, and every
hostile input (bombs, entity tricks, external references, truncated and mutated bytes) is a typed error."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from PIL import Image
from smarttags.adapters import formats, imaging
from smarttags.errors import CorruptImage, ImageError, ImageTooLarge, UnsupportedImage

from tests import images

MAX = 100_000_000
RED, GREEN, BLUE, WHITE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), imaging.GREY


def prepare(data: bytes, size: int = 64, max_pixels: int = MAX) -> np.ndarray:
    return imaging.prepare(data, size, max_pixels=max_pixels)


def close(pixel, expected, tol=8) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int)) <= tol))


def mutations(data: bytes, count: int, seed: int):
    """Truncations, flipped bytes and spliced garbage of ``data``: what a fuzzer would try first."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        out = bytearray(data)
        if i % 3 == 0:
            out = out[: int(rng.integers(1, len(out)))]
        elif i % 3 == 1:
            for _ in range(int(rng.integers(1, 12))):
                out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
        else:
            at = int(rng.integers(0, len(out)))
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        yield bytes(out)


def assert_fuzz_safe(data: bytes, count: int = 120, seed: int = 0) -> None:
    """Every mutation decodes or raises an ImageError: nothing else, ever.

    Pillow's UserWarnings on broken TIFF tags (a mutated DNG that no longer reads as RAW) are errors only
    under pytest's filterwarnings; in production they are warnings, so they are ignored here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for mutated in mutations(data, count, seed):
            for read in (lambda d: prepare(d, 32), imaging.read_metadata):
                with contextlib.suppress(ImageError):
                    read(mutated)


# --- PDF ----------------------------------------------------------------------------------------


def test_pdf_page_one_is_rendered_with_its_title_and_text():
    data = images.pdf((1, 0, 0), title="Spring catalogue", text="Red summer dress", size=(400, 300))
    arr = prepare(data, 64)
    assert close(arr[32, 32], RED) and close(arr[3, 32], GREY)  # letterboxed: 400x300 is wide
    assert close(arr[20, 4], WHITE)  # the page itself is white paper
    meta = imaging.read_metadata(data)
    assert (meta.format, meta.content_type, meta.decoder) == ("PDF", "application/pdf", "pypdfium2")
    assert (meta.width, meta.height) == (400, 300)  # the page's size in points
    assert meta.title == "Spring catalogue" and meta.description == "Red summer dress"
    assert meta.keywords == ("dress", "summer")


def test_pdf_without_a_title_is_named_by_its_first_line():
    meta = imaging.read_metadata(images.pdf(title=None, text="Autumn lookbook 2026"))
    assert meta.title == "Autumn lookbook 2026"


def test_pdf_is_rendered_at_the_size_asked_for_not_its_own():
    img = imaging.open_image(images.pdf(size=(6000, 3000)), max_pixels=MAX, size=224)
    assert img.size == (224, 112)


def test_pdf_of_thousands_of_pages_reads_page_one_only():
    data = images.pdf((0, 0, 1), pages=5000)
    assert close(prepare(data)[32, 32], BLUE)
    assert imaging.read_metadata(data).title == "Spring catalogue"


def test_pdf_with_a_huge_image_is_refused_before_rendering():
    data = images.pdf(image_px=(100_000, 100_000))
    with pytest.raises(ImageTooLarge) as err:
        prepare(data)
    assert "100000x100000" in err.value.reason and err.value.content_type == "application/pdf"
    with pytest.raises(ImageTooLarge):  # also when a form XObject draws it
        prepare(images.pdf(image_px=(100_000, 100_000), nested=True))
    assert close(prepare(images.pdf(image_px=(100, 100), nested=True))[32, 32], (0, 0, 0))  # drawn: black


def test_pdf_page_rotation_is_applied():
    data = images.pdf(size=(400, 300)).replace(b"/MediaBox", b"/Rotate 90 /MediaBox")
    assert imaging.open_image(data, max_pixels=MAX, size=224).size == (168, 224)
    meta = imaging.read_metadata(data)
    assert (meta.width, meta.height) == (300, 400)


def test_pdf_needing_a_password_is_unsupported():
    # A standard security handler whose user-password hash the empty password does not match.
    crypt = b"/Encrypt << /Filter /Standard /V 1 /R 2 /Length 40 /P -4 /O <%s> /U <%s> >> /ID [<%s> <%s>] " % (
        b"11" * 32,
        b"22" * 32,
        b"33" * 16,
        b"33" * 16,
    )
    data = images.pdf().replace(b"trailer\n<< ", b"trailer\n<< " + crypt)
    with pytest.raises(UnsupportedImage) as err:
        prepare(data)
    assert err.value.reason == "unsupported: encrypted PDF (a password is needed)"


def test_pdf_garbage_and_empty_documents_are_corrupt():
    with pytest.raises(CorruptImage) as err:
        prepare(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    assert err.value.reason.startswith("corrupt: not a readable PDF") and err.value.content_type == "application/pdf"
    with pytest.raises(CorruptImage):
        prepare(images.pdf(pages=0))


def test_pdf_page_too_complex_to_draw_in_time_is_refused_and_the_renderer_recovers():
    from smarttags.adapters.formats import pdf

    small = images.pdf_form_bomb(levels=2)  # 100 rectangles: drawn like any page
    assert close(np.asarray(pdf.decode(small, pdf.CONTENT_TYPE, 64, MAX).convert("RGB"))[32, 32], RED)
    bomb = images.pdf_form_bomb(levels=7)  # 4 KB, 10 million rectangles: PDFium alone would never return
    assert len(bomb) < 5000
    with pytest.raises(ImageTooLarge) as err:
        pdf.decode(bomb, pdf.CONTENT_TYPE, 64, MAX, seconds=1.0)
    assert err.value.reason == "too_large: page 1 is not drawn within 1 s (too complex)"
    assert err.value.content_type == "application/pdf"
    # The stuck child was killed; the next PDF gets a fresh one.
    assert close(prepare(images.pdf((0, 0, 1)))[32, 32], BLUE)


def test_pdf_mutations_never_crash():
    assert_fuzz_safe(images.pdf())


# --- SVG ----------------------------------------------------------------------------------------


def test_svg_is_drawn_at_the_target_size_with_its_title():
    data = images.svg("red", width="300", height="150", title="Acme logo")
    img = imaging.open_image(data, max_pixels=MAX, size=224)
    assert img.size == (224, 112)
    arr = prepare(data, 64)
    assert close(arr[32, 32], RED) and close(arr[20, 4], WHITE) and close(arr[4, 32], GREY)
    meta = imaging.read_metadata(data)
    assert (meta.format, meta.content_type, meta.decoder) == ("SVG", "image/svg+xml", "resvg")
    assert (meta.width, meta.height, meta.title) == (300, 150, "Acme logo")


def test_svg_sizes_in_units_and_from_the_viewbox():
    assert imaging.read_metadata(images.svg(width="8cm", height="4cm")).width == 302  # 96 dpi
    meta = imaging.read_metadata(images.svg(width="100%", height="100%"))
    assert (meta.width, meta.height) == (300, 150)  # the viewBox
    assert close(prepare(images.svg(width="8cm", height="4cm"))[32, 32], RED)


def test_svg_transparency_is_composited_on_grey_like_any_png():
    data = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle cx="5" cy="5" r="2"/></svg>'
    arr = prepare(data, 64)
    assert close(arr[2, 2], GREY) and close(arr[32, 32], (0, 0, 0))


def test_svg_does_not_read_files_it_references(tmp_path, monkeypatch):
    # resvg itself would draw these (absolute and relative paths are read from disk): they must be dropped.
    Image.new("RGB", (8, 8), BLUE).save(tmp_path / "secret.png")
    monkeypatch.chdir(tmp_path)
    for href in (
        str(tmp_path / "secret.png"),
        "secret.png",
        f"file://{tmp_path}/secret.png",
        "http://127.0.0.1:9/x.png",
    ):
        for attr in ("href", "xlink:href"):
            extra = f'<image {attr}="{href}" x="0" y="0" width="300" height="150"/>'
            arr = prepare(images.svg("red", extra=extra))
            assert close(arr[32, 32], RED), (href, attr)  # still the red rectangle, no blue picture over it


def test_svg_data_urls_and_internal_references_still_work():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), BLUE).save(buffer, "PNG")
    import base64

    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    extra = f'<image href="{url}" x="0" y="0" width="300" height="150"/>'
    assert close(prepare(images.svg("red", extra=extra))[32, 32], BLUE)
    extra = '<defs><rect id="g" width="300" height="150" fill="lime"/></defs><use xlink:href="#g"/>'
    assert close(prepare(images.svg("red", extra=extra))[32, 32], GREEN)


def test_svg_embedded_picture_bombs_and_nested_svgs_are_not_drawn():
    import base64

    bomb = base64.b64encode(images.bomb_png(60_000, 60_000)).decode()
    extra = f'<image href="data:image/png;base64,{bomb}" width="300" height="150"/>'
    with pytest.raises(ImageTooLarge):
        prepare(images.svg("red", extra=extra))
    bomb = base64.b64encode(images.bomb_png(2_000, 1_000)).decode()  # under Pillow's guard, over ours
    extra = f'<image href="data:image/png;base64,{bomb}" width="300" height="150"/>'
    with pytest.raises(ImageTooLarge) as err:
        prepare(images.svg("red", extra=extra), max_pixels=1_000_000)
    assert "2000x1000" in err.value.reason
    inner = base64.b64encode(images.svg("blue", extra="")).decode()
    extra = f'<image href="data:image/svg+xml;base64,{inner}" x="0" y="0" width="300" height="150"/>'
    assert close(prepare(images.svg("red", extra=extra))[32, 32], RED)  # dropped, not drawn


def test_svg_external_entities_are_refused():
    for system in ("file:///etc/passwd", "http://127.0.0.1:9/evil.dtd"):
        data = (
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{system}">]>'
            '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><text>&x;</text></svg>'
        ).encode()
        with pytest.raises(UnsupportedImage) as err:
            prepare(data)
        assert "external" in err.value.reason and err.value.content_type == "image/svg+xml"


def test_svg_billion_laughs_is_stopped_by_the_parser():
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
    )
    data = (
        f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><text>&j;</text></svg>'
    ).encode()
    with pytest.raises(CorruptImage) as err:
        prepare(data)
    assert "amplification" in err.value.reason


def test_svg_internal_entities_of_design_tools_are_fine():
    data = (
        b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [<!ENTITY ns_svg "http://www.w3.org/2000/svg">]>'
        b'<svg xmlns="&ns_svg;" width="10" height="10"><rect width="10" height="10" fill="blue"/></svg>'
    )
    assert close(prepare(data)[32, 32], BLUE)


def test_svg_use_bomb_is_refused_before_drawing():
    levels = ['<rect id="l0" width="1" height="1"/>']
    for i in range(1, 7):  # 10^6 rectangles once expanded
        levels.append(f'<g id="l{i}">' + f'<use xlink:href="#l{i - 1}"/>' * 10 + "</g>")
    data = images.svg(extra="<defs>" + "".join(levels) + '</defs><use xlink:href="#l6"/>')
    with pytest.raises(ImageTooLarge) as err:
        prepare(data)
    assert "nested <use>" in err.value.reason


def test_svg_use_cycles_are_refused_before_drawing():
    extra = '<defs><g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g></defs><use href="#a"/>'
    with pytest.raises(CorruptImage) as err:
        prepare(images.svg("red", extra=extra))
    assert "cycle" in err.value.reason


def test_svg_is_sniffed_past_a_long_prolog_within_a_bounded_scan():
    body = images.svg("red")
    doctype = b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
    comment = b"<!-- " + b"Generator: a design tool that writes a long licence > here. " * 300 + b"-->"  # 18 KB
    subset = b'<!DOCTYPE svg [<!ENTITY ns_svg "http://www.w3.org/2000/svg"> <!-- ] > -->]>'
    for prolog in (
        comment,  # no XML declaration at all
        b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n' + comment + b"\n" + doctype + b"\n",
        b"<?xml-stylesheet href='#s'?>" + subset + b"\n" + comment,
    ):
        data = prolog + body
        assert len(prolog) > 1024 and imaging.sniff(data) == "image/svg+xml"
        assert close(prepare(data)[32, 32], RED)
    assert imaging.sniff(b"<svg:svg xmlns:svg='http://www.w3.org/2000/svg'/>") == "image/svg+xml"
    # The scan is bounded: a root past the first 64 KiB is not looked for (the file is not parsed to find it).
    far = b"<!-- " + b"x" * imaging.SVG_SCAN + b" -->" + body
    assert imaging.sniff(far) is None
    assert imaging.sniff(b"<!-- just a comment -->" + b"<html><body/></html>") is None
    assert imaging.sniff(b"<svgfoo/>") is None
    hostile = b"<!DOCTYPE svg [" + b"<!-- --> '' " * 5000 + b"<html/>"  # no match: no backtracking blow-up
    assert imaging.sniff(hostile) is None


def test_not_an_svg_and_broken_xml_are_corrupt():
    with pytest.raises(CorruptImage) as err:
        prepare(b'<?xml version="1.0"?><html><svg xmlns="http://www.w3.org/2000/svg"/></html>')
    assert "not an SVG" in err.value.reason
    with pytest.raises(CorruptImage):
        prepare(images.svg()[:-20])


def test_svg_mutations_never_crash():
    assert_fuzz_safe(images.svg(extra='<circle cx="5" cy="5" r="4" fill="blue"/>'))


# --- camera RAW ---------------------------------------------------------------------------------


def test_dng_without_a_preview_is_demosaiced_at_half_size():
    data = images.dng(RED, size=(64, 48))
    img = imaging.open_image(data, max_pixels=MAX, size=224)
    assert img.size == (32, 24)  # half size: no interpolation
    r, g, b = prepare(data)[32, 32]
    assert r > 200 and g < 60 and b < 120
    meta = imaging.read_metadata(data)
    assert (meta.format, meta.content_type) == ("RAW", "image/x-adobe-dng")
    assert (meta.width, meta.height, meta.decoder) == (64, 48, "rawpy (half-size demosaic)")


def test_dng_jpeg_preview_is_decoded_with_dct_scaling():
    data = images.dng(RED, preview=Image.new("RGB", (1600, 1200), BLUE), jpeg_preview=True)
    img = imaging.open_image(data, max_pixels=MAX, size=224)
    assert img.size == (400, 300)  # JPEG draft: 1/4 scale, the smallest not below what was asked for
    assert close(prepare(data)[32, 32], BLUE)
    assert imaging.read_metadata(data).decoder == "rawpy (embedded preview)"


def test_dng_preview_is_used_when_large_enough():
    # The preview is blue and the sensor red: which one we see tells which path ran.
    data = images.dng(RED, preview=Image.new("RGB", (300, 200), BLUE))
    assert close(prepare(data)[32, 32], BLUE)
    assert imaging.read_metadata(data).decoder == "rawpy (embedded preview)"
    small = images.dng(RED, preview=Image.new("RGB", (40, 30), BLUE))  # a thumbnail below 64 px
    assert prepare(small)[32, 32][0] > 200
    assert imaging.read_metadata(small).decoder == "rawpy (half-size demosaic)"


def test_dng_orientation_is_applied():
    for preview in (None, Image.new("RGB", (300, 200), BLUE)):
        data = images.dng(RED, preview=preview, orientation=6)
        meta = imaging.read_metadata(data)
        assert (meta.width, meta.height) == (48, 64)
        arr = prepare(data)
        assert close(arr[32, 2], GREY) and not close(arr[2, 32], GREY)  # tall now: padded left and right


def test_raw_sensor_over_max_pixels_is_refused_from_the_header():
    with pytest.raises(ImageTooLarge) as err:
        prepare(images.dng(size=(64, 48)), max_pixels=1000)
    assert err.value.reason == "too_large: 64x48 = 3072 sensor pixels is over the limit of 1000"


def test_tiff_based_raw_is_told_from_plain_tiff_by_its_tags():
    assert formats.refine(images.dng(), "image/tiff") == "image/x-adobe-dng"
    plain = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(plain, "TIFF", tiffinfo={271: "NIKON CORPORATION"})
    assert formats.refine(plain.getvalue(), "image/tiff") == "image/tiff"  # a camera's TIFF, no SubIFDs
    assert close(prepare(plain.getvalue())[32, 32], RED)
    nef = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(nef, "TIFF", tiffinfo={271: "NIKON CORPORATION", 330: (8,)})
    assert formats.refine(nef.getvalue(), "image/tiff") == "image/x-nikon-nef"
    with pytest.raises(ImageError) as err:  # a NEF without sensor data: LibRaw refuses it
        prepare(nef.getvalue())
    assert err.value.content_type == "image/x-nikon-nef"


@pytest.mark.parametrize(
    "data",
    [
        b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(64),
        b"FUJIFILMCCD-RAW 0201" + bytes(64),
        b"IIU\x00\x18\x00\x00\x00" + bytes(64),
        b"\x00\x00\x00\x18ftypcrx " + bytes(64),
    ],
    ids=["cr2", "raf", "rw2", "cr3"],
)
def test_raw_headers_without_data_are_typed_errors(data):
    with pytest.raises((CorruptImage, UnsupportedImage)) as err:
        prepare(data)
    assert err.value.content_type == imaging.sniff(data)


def test_raw_mutations_never_crash():
    assert_fuzz_safe(images.dng(preview=Image.new("RGB", (80, 60), BLUE)), count=90)
    assert_fuzz_safe(images.dng(), count=90, seed=1)


# --- PSB ----------------------------------------------------------------------------------------


def test_psb_composite_decodes():
    data = images.psb(Image.new("RGB", (50, 40), GREEN))
    assert data[:6] == b"8BPS\x00\x02"
    assert close(prepare(data)[32, 32], GREEN)
    meta = imaging.read_metadata(data)
    assert (meta.format, meta.decoder, meta.width, meta.height) == ("PSB", "psd-tools", 50, 40)


def test_psb_without_a_composite_says_why():
    with pytest.raises(UnsupportedImage) as err:
        prepare(images.psb(Image.new("RGB", (50, 40), GREEN), composite=False))
    assert "Maximize compatibility" in err.value.reason


def test_psd_without_a_composite_says_why_instead_of_tagging_a_blank():
    green = Image.new("RGB", (50, 40), GREEN)
    assert close(prepare(images.psb(green, version=1))[32, 32], GREEN)  # Pillow reads a real composite
    with pytest.raises(UnsupportedImage) as err:
        prepare(images.psb(green, version=1, composite=False))
    assert (
        err.value.reason
        == "unsupported: PSD saved without 'Maximize compatibility': the file has no flattened composite"
    )
    assert err.value.content_type == "image/vnd.adobe.photoshop"


def test_psb_bomb_is_refused_from_the_header():
    header = b"8BPS\x00\x02" + bytes(6) + b"\x00\x03" + (300_000).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03"
    with pytest.raises(ImageTooLarge):
        prepare(header + bytes(64))


def test_psb_truncated_is_corrupt():
    data = images.psb(Image.new("RGB", (50, 40), GREEN))
    with pytest.raises(CorruptImage):
        prepare(data[: len(data) // 2])
    with pytest.raises(CorruptImage):
        prepare(data[:20])


def test_psb_and_psd_mutations_never_crash():
    assert_fuzz_safe(images.psb(Image.new("RGB", (20, 16), GREEN)))
    assert_fuzz_safe(images.psb(Image.new("RGB", (20, 16), GREEN), version=1, composite=False), seed=1)
