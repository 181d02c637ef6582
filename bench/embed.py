"""Benchmark of the embedding path on this machine (a script, not a test; about a minute).

    .venv/bin/python bench/embed.py [--data-dir var] [--n 64] [--decode-only] [--backbone NAME]
    .venv/bin/python bench/embed.py --against efficientnet-lite0   # the backbone's cost per image only

Prints ms/image for: the backbone alone (batch 1 and 32), decoding alone, end to end (bytes ->
embedding, batches of 32) on small PNGs and on 4000x3000 JPEGs, and a naive pipeline (full decode,
then resize, then the backbone) on the same JPEGs. The last line holds the ratios, with their goals:
naive/ours on large JPEGs >= 5; end-to-end / (decode + backbone) on large JPEGs <= 1.1; end-to-end /
backbone on small PNGs <= 1.5. Decode-only lines per still format (12 MP: JPEG, HEIC with and without an
embedded thumbnail, AVIF, WebP, TIFF LZW, 16-bit and CMYK TIFF, PSD; 24 MP HEIC with and without a
thumbnail) and per drawn format (a 20-page PDF, an SVG, 45 MP RAW with and without a preview, PSB) give
their ratio to the 12 MP JPEG; every fixture is generated at bench time (the DNGs with tifffile, as the
tests write them). A minute of 1080p video (frames sampled and embedded) against one 12 MP JPEG end to
end, goal <= 20. ``--decode-only`` prints the per-format decode lines alone.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from smarttags import settings
from smarttags.adapters import imaging
from smarttags.adapters.embedder import Embedder, load_embedder


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, in seconds (first run also warms caches)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def photos() -> list[np.ndarray]:
    return [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]


def large_jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(min(count, 8)):  # 8 distinct 12 MP photos, repeated: generating them is the slow part
        base = Image.fromarray(photos()[i % 4]).resize((4000, 3000), Image.Resampling.BILINEAR)
        noisy = np.asarray(base, dtype=np.int16) + rng.integers(-12, 13, (3000, 4000, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(count)]


def _saved(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def per_format_decode_ms(size: int, max_pixels: int) -> dict[str, float]:
    """Decode ms/image to the backbone's size of one photo saved in each still format (12 MP unless named)."""
    import tifffile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import images  # the test suite's fixture writers (PSD)

    photo = Image.fromarray(photos()[0]).resize((4000, 3000), Image.Resampling.BILINEAR)
    big = Image.fromarray(photos()[0]).resize((6000, 4000), Image.Resampling.BILINEAR)  # 24 MP, as phones shoot
    wide = io.BytesIO()  # 16-bit RGB, Deflate: what raw converters and scanners write
    tifffile.imwrite(wide, np.asarray(photo).astype(np.uint16) * 257, photometric="rgb", compression="zlib")
    encoded = {
        "JPEG": _saved(photo, "JPEG", quality=90),
        "HEIF": _saved(photo, "HEIF", quality=80),
        "HEIC+thumbnail": _saved(photo, "HEIF", quality=80, thumbnails=[320]),  # as phones write them
        "AVIF": _saved(photo, "AVIF", speed=10),
        "WEBP": _saved(photo, "WEBP", quality=80),
        "TIFF LZW": _saved(photo, "TIFF", compression="tiff_lzw"),
        "TIFF 16-bit": wide.getvalue(),
        "TIFF CMYK": _saved(photo.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        "PSD": images.psd(photo),  # the flattened composite, raw planar
        "HEIC 24 MP": _saved(big, "HEIF", quality=80),
        "HEIC 24 MP+thumb": _saved(big, "HEIF", quality=80, thumbnails=[320]),
    }
    return {
        fmt: timed(lambda d=data: imaging.prepare(d, size, max_pixels=max_pixels), 2) * 1000.0
        for fmt, data in encoded.items()
    }


def document_decode_ms(size: int, max_pixels: int) -> dict[str, float]:
    """Decode ms/image to the backbone's size of the formats adapters/formats draws (fixtures as in tests)."""
    import pypdfium2 as pdfium

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import images  # the test suite's fixture writers (DNG, PSB)

    photo = Image.fromarray(photos()[1])
    buf = io.BytesIO()
    photo.resize((4000, 3000), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    doc = pdfium.PdfDocument.new()
    for _ in range(20):  # a 20-page catalogue, a 12 MP photo on every page
        page = doc.new_page(842, 595)
        picture = pdfium.PdfImage.new(doc)
        picture.load_jpeg(io.BytesIO(jpeg), inline=False)
        picture.set_matrix(pdfium.PdfMatrix().scale(842, 595))
        page.insert_obj(picture)
        page.gen_content()
    buf = io.BytesIO()
    doc.save(buf)
    rng = np.random.default_rng(0)
    shapes = "".join(
        f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{r:.0f}" fill="#{c:06x}" opacity="0.7"/>'
        for x, y, r, c in zip(
            rng.uniform(0, 1920, 2000),
            rng.uniform(0, 1080, 2000),
            rng.uniform(5, 80, 2000),
            rng.integers(0, 1 << 24, 2000),
            strict=True,
        )
    )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="1920" height="1080">{shapes}</svg>'.encode()
    full = photo.resize((8256, 5504), Image.Resampling.BILINEAR)  # 45 MP, as a Nikon Z7 writes it
    encoded = {
        "PDF 20 pages": buf.getvalue(),
        "SVG 2000 shapes": svg,
        "RAW 45 MP, JPEG preview": images.dng(size=(8256, 5504), preview=full, jpeg_preview=True),
        "RAW 45 MP, no preview": images.dng(size=(8256, 5504)),
        "PSB 12 MP": images.psb(photo.resize((4000, 3000), Image.Resampling.BILINEAR)),
    }
    return {
        name: timed(lambda d=data: imaging.prepare(d, size, max_pixels=max_pixels), 2) * 1000.0
        for name, data in encoded.items()
    }


def video_minute(seconds: int = 60, fps: int = 24, gop: int = 48) -> bytes:
    """``seconds`` of 1080p H.264 panning over the test photos, a keyframe every ``gop`` frames (2 s)."""
    import av

    canvas = np.concatenate([np.asarray(Image.fromarray(p).resize((1920, 1080))) for p in photos()], axis=1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.gop_size = gop
        span = canvas.shape[1] - 1920
        for i in range(seconds * fps):
            x = int(span * i / (seconds * fps))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[:, x : x + 1920]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def small_pngs(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        img = photos()[i % 4]
        y, x = (i * 7) % (img.shape[0] - 256), (i * 13) % (img.shape[1] - 256)
        buf = io.BytesIO()
        Image.fromarray(img[y : y + 256, x : x + 256]).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def naive_prepare(data: bytes, size: int) -> np.ndarray:
    """The textbook way: decode every pixel, then one resize of the full image, then pad."""
    img = Image.open(io.BytesIO(data)).convert("RGB")  # full 12 MP decode
    scale = size / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), imaging.GREY)
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


def print_decode_lines(size: int, max_pixels: int) -> dict[str, float]:
    """Print each format's decode ms; returns the per-format figures (the video line compares to JPEG)."""
    decode_ms = per_format_decode_ms(size, max_pixels)
    jpeg = decode_ms["JPEG"]
    for fmt, took in decode_ms.items():
        name = fmt if "MP" in fmt else f"{fmt} 12 MP"
        print(f"decode only  {name:23}: {took:7.2f} ms/image ({took / jpeg:.1f} x 12 MP JPEG)")
    for name, took in document_decode_ms(size, max_pixels).items():
        print(f"decode only  {name:23}: {took:7.2f} ms/image ({took / jpeg:.1f} x 12 MP JPEG)")
    return decode_ms


def costs(embedder: Embedder, small: list[bytes], big: list[bytes]) -> dict[str, float]:
    """Seconds per image: the backbone alone (batch 1, batch 32), end to end on small PNGs and large JPEGs."""
    batch32 = embedder.to_tensor([embedder.decode(b) for b in small[:32]])
    session = embedder.session
    feed = session.get_inputs()[0].name
    return {
        "backbone batch 1": timed(lambda: [session.run(None, {feed: batch32[i : i + 1]}) for i in range(32)]) / 32,
        "backbone batch 32": timed(lambda: session.run(None, {feed: batch32})) / 32,
        "end to end small PNGs": timed(lambda: embedder.embed_bytes(small), 2) / len(small),
        "end to end 4000x3000 JPEG": timed(lambda: embedder.embed_bytes(big), 2) / len(big),
    }


def compare(embedder: Embedder, other: Embedder, n: int, rounds: int = 3) -> None:
    """The two backbones' costs, measured in turns (the best of each round) so load hits both alike."""
    big, small = large_jpegs(n), small_pngs(n)
    best: dict[str, dict[str, float]] = {embedder.name: {}, other.name: {}}
    for _ in range(rounds):
        for e in (embedder, other):
            for key, value in costs(e, small, big).items():
                best[e.name][key] = min(best[e.name].get(key, float("inf")), value)
    print(f"{'ms/image':<26} {embedder.name:>26} {other.name:>26}  ratio")
    for key, value in best[embedder.name].items():
        base = best[other.name][key]
        print(f"{key:<26} {value * 1000:26.2f} {base * 1000:26.2f}  {value / base:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="var", type=Path)
    parser.add_argument("--n", default=64, type=int, help="images per measured set (a multiple of 32)")
    parser.add_argument("--decode-only", action="store_true", help="only the per-format decode lines")
    parser.add_argument("--backbone", help="the preset to measure (default: the settings' backbone)")
    parser.add_argument("--against", help="only the cost per image against this preset (e.g. efficientnet-lite0)")
    args = parser.parse_args()

    s = settings.load(data_dir=args.data_dir)
    if args.backbone:
        s = s.model_copy(update={"backbone": s.backbone.model_copy(update={"name": args.backbone})})
    embedder = load_embedder(s)
    if args.against:
        other = s.model_copy(update={"backbone": s.backbone.model_copy(update={"name": args.against})})
        compare(embedder, load_embedder(other), args.n)
        return
    size = embedder.input_size
    n = args.n
    print(f"model {embedder.backbone_id[:40]}..., {size}px, {embedder.threads} threads, batch {s.backbone.batch_size}")
    if args.decode_only:
        print_decode_lines(size, s.backbone.max_pixels)
        return

    t0 = time.perf_counter()
    big, small = large_jpegs(n), small_pngs(n)
    print(
        f"generated {n} 4000x3000 JPEGs ({sum(map(len, big)) / n / 1e6:.1f} MB each) and {n} 256px PNGs "
        f"in {time.perf_counter() - t0:.1f}s"
    )

    pixels = [embedder.decode(b) for b in small[:32]]
    batch32 = embedder.to_tensor(pixels)
    session = embedder.session
    feed = session.get_inputs()[0].name
    backbone_1 = timed(lambda: [session.run(None, {feed: batch32[i : i + 1]}) for i in range(32)]) / 32
    backbone_32 = timed(lambda: session.run(None, {feed: batch32})) / 32

    decode_big = timed(lambda: [imaging.prepare(b, size, max_pixels=s.backbone.max_pixels) for b in big[:16]], 2) / 16
    decode_small = timed(lambda: [imaging.prepare(b, size, max_pixels=s.backbone.max_pixels) for b in small], 2) / n

    e2e_big = timed(lambda: embedder.embed_bytes(big), 2) / n
    e2e_small = timed(lambda: embedder.embed_bytes(small), 2) / n

    def naive() -> None:
        for start in range(0, 16, 8):
            embedder.embed_arrays([naive_prepare(b, size) for b in big[start : start + 8]])

    naive_big = timed(naive, 1) / 16

    ms = 1000.0
    print(f"backbone only       batch 1: {backbone_1 * ms:7.2f} ms/image")
    print(f"backbone only      batch 32: {backbone_32 * ms:7.2f} ms/image")
    print(f"decode only     small PNGs : {decode_small * ms:7.2f} ms/image")
    print(f"decode only   4000x3000 JPG: {decode_big * ms:7.2f} ms/image")
    print(f"end to end      small PNGs : {e2e_small * ms:7.2f} ms/image")
    print(f"end to end    4000x3000 JPG: {e2e_big * ms:7.2f} ms/image")
    print(f"naive (full decode) 4000x3000 JPG: {naive_big * ms:7.2f} ms/image")
    decode_ms = print_decode_lines(size, s.backbone.max_pixels)
    from smarttags.adapters import videos

    minute = video_minute()

    def video_decode() -> None:  # the tagger's sampling: keyframes only, drawn at the backbone's size
        videos.open_clip(minute, max_pixels=s.backbone.max_pixels, size=size).frames(size)

    def video_tags() -> None:  # and the frames embedded in one batch: what tagging a video costs
        embedder.embed_arrays(videos.open_clip(minute, max_pixels=s.backbone.max_pixels, size=size).frames(size))

    frames = len(videos.open_clip(minute, max_pixels=s.backbone.max_pixels, size=size).times)
    video_decode_s = timed(video_decode, 2)
    print(
        f"decode+sample 1 min 1080p H.264 ({frames} keyframes): {video_decode_s * ms:7.2f} ms per video "
        f"({video_decode_s * ms / decode_ms['JPEG']:.1f} x one 12 MP JPEG decode)"
    )
    one_image = timed(lambda: embedder.embed_bytes(big[:1]), 3)
    video_s = timed(video_tags, 2)
    print(f"1 min 1080p H.264 ({len(minute) / 1e6:.1f} MB, {frames} frames): {video_s * ms:7.2f} ms per video")
    r_video = video_s / one_image
    print(f"RATIO video minute / one 12 MP JPEG end to end = {r_video:.1f} (goal <= 20)")
    r_naive = naive_big / e2e_big
    r_big = e2e_big / (decode_big + backbone_32)
    r_small = e2e_small / backbone_32
    print(
        f"RATIOS naive/ours(large)={r_naive:.1f} (goal >=5) | "
        f"e2e/(decode+backbone)(large)={r_big:.2f} (goal <=1.1) | "
        f"e2e/backbone(small)={r_small:.2f} (goal <=1.5)"
    )


if __name__ == "__main__":
    main()
