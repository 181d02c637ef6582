"""``ObjectStore.read``: small objects whole in one GET, large ones through ``RangedObject`` (ranged
GETs of one version, a bounded cache), and what that saves: the bytes fetched for a JPEG whose
embedded preview is decoded, and the memory a 200 MB JPEG takes to tag (measured in a subprocess)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from smarttags.adapters import imaging
from smarttags.adapters.s3 import BLOCK_BYTES, CACHE_BYTES, WHOLE_BYTES, ObjectStore, RangedObject
from smarttags.errors import ImageTooLarge, NotFound, ServiceUnavailable
from smarttags.settings import Settings

from tests import images
from tests.fakes import FakeS3Client

ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 100_000_000


def store_with(**objects: bytes | Path) -> tuple[ObjectStore, FakeS3Client]:
    client = FakeS3Client()
    for key, data in objects.items():
        client.put(key, data)
    return ObjectStore(client, "bucket"), client


def test_a_small_object_comes_whole_in_one_get() -> None:
    store, client = store_with(small=b"x" * 1000)
    data, info = store.read("small")
    assert data == b"x" * 1000 and info.size == 1000 and client.requests == 1


def test_a_large_object_reads_like_a_file_with_bounded_cache() -> None:
    payload = np.random.default_rng(0).integers(0, 256, 40 << 20, dtype=np.uint8).tobytes()
    store, client = store_with(big=payload)
    data, info = store.read("big")
    assert not isinstance(data, bytes) and info.size == len(payload)
    rng = np.random.default_rng(1)
    for _ in range(200):  # random seeks and reads, across block and read-ahead boundaries
        at, n = int(rng.integers(0, len(payload))), int(rng.integers(0, 3 << 20))
        data.seek(at)
        assert data.read(n) == payload[at : at + n]
    data.seek(0)
    before = client.requests
    assert data.read() == payload
    assert client.requests - before <= 40 // 8 + 4  # a streaming read: GETs of up to 8 MiB, not one per block
    raw = data.raw  # type: ignore[attr-defined]
    assert isinstance(raw, RangedObject)
    assert len(raw._blocks) * BLOCK_BYTES <= CACHE_BYTES


def test_sequential_reads_double_the_read_ahead() -> None:
    payload = bytes(64 << 20)
    store, client = store_with(big=payload)
    data, _ = store.read("big")
    while data.read(64 << 10):
        pass
    # 4 MiB first, then 2, 4, 8, 8, ... MiB: 1 + 3 + 6 = 10 GETs for 64 MiB.
    assert client.requests == 10 and client.served == len(payload)


def test_an_object_over_the_cap_is_refused_without_reading_its_body() -> None:
    store, client = store_with(big=bytes(10 << 20))
    with pytest.raises(ImageTooLarge, match="over the limit of 1048576"):
        store.read("big", max_bytes=1 << 20)
    assert client.requests == 1


def test_an_object_replaced_while_read_is_gone() -> None:
    store, client = store_with(big=bytes(10 << 20))
    data, _ = store.read("big")
    client.put("big", bytes(10 << 20))  # a new upload: its own event tags it
    data.seek(8 << 20)
    with pytest.raises(NotFound, match="replaced while being read"):
        data.read(10)


def test_s3_failing_mid_decode_is_a_service_error_not_a_bad_file() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    data = images_jpeg(noise)
    assert len(data) > WHOLE_BYTES
    store, client = store_with(photo=data)
    content, _ = store.read("photo")
    picture = imaging.open_picture(content, max_pixels=MAX_PIXELS, size=224)  # the header came first
    client.down = True
    with pytest.raises(ServiceUnavailable):
        picture.pixels(224)  # retried later, never recorded as a corrupt file


def images_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_a_jpeg_with_an_embedded_preview_fetches_the_header_and_the_preview_only() -> None:
    rng = np.random.default_rng(0)
    primary = Image.fromarray(rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8))  # 24 MP of noise
    preview = Image.new("RGB", (1920, 1280), (200, 30, 30))  # same aspect; red, to see which was decoded
    data = images.jpeg_with_preview(primary, preview)
    store, client = store_with(photo=data)
    content, _ = store.read("photo")
    picture = imaging.open_picture(content, max_pixels=MAX_PIXELS, size=224)
    assert (picture.facts.width, picture.facts.height) == (6000, 4000)  # the facts are the primary's
    assert picture.facts.decoder == "pillow (embedded thumbnail)"
    pixels = picture.pixels(224)
    assert np.abs(pixels[112, 112].astype(int) - (200, 30, 30)).max() < 12
    # The first GET (4 MiB) and the preview's block: the primary image's data is never fetched.
    assert client.served <= WHOLE_BYTES + 2 * BLOCK_BYTES < len(data) // 3  # 5 of 21.5 MB here
    assert np.abs(imaging.prepare(data, 224, max_pixels=MAX_PIXELS)[112, 112].astype(int) - (200, 30, 30)).max() < 12
    # Facts alone (what `smarttags ingest` reads): the first GET is all.
    client.served = 0
    assert imaging.read_metadata(store.read("photo")[0]).width == 6000
    assert client.served == WHOLE_BYTES


def test_a_letterboxed_or_too_small_preview_is_not_used() -> None:
    primary = Image.new("RGB", (3000, 2000), (30, 30, 200))
    for preview in (Image.new("RGB", (1920, 1080), "red"), Image.new("RGB", (150, 100), "red")):
        data = images.jpeg_with_preview(primary, preview)
        picture = imaging.open_picture(data, max_pixels=MAX_PIXELS, size=224)
        assert picture.facts.decoder == "pillow"
        assert np.abs(picture.pixels(224)[112, 112].astype(int) - (30, 30, 200)).max() < 12


def test_large_tiff_raw_and_pdf_are_read_from_a_spooled_file() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "TIFF", compression="tiff_lzw")
    for data in (buffer.getvalue(), images.dng(size=(3000, 2000)), images.pdf(pages=30_000)):
        assert len(data) > WHOLE_BYTES  # so it is read through a RangedObject
        store, _ = store_with(obj=data)
        content, _ = store.read("obj")
        whole = imaging.open_picture(data, max_pixels=MAX_PIXELS, size=64)
        read = imaging.open_picture(content, max_pixels=MAX_PIXELS, size=64)
        assert read.facts == whole.facts
        assert np.array_equal(read.pixels(64), whole.pixels(64))


_MEASURE = """
import json, sys
from pathlib import Path
from smarttags.adapters import imaging
from smarttags.adapters.s3 import ObjectStore
from tests import images
from tests.fakes import FakeS3Client

def status(field):  # ru_maxrss would not do: exec keeps the parent's peak in it
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

imaging.prepare(images.picture("red"), 224, max_pixels=10**8)  # libraries loaded before the baseline
client = FakeS3Client()
client.put("big.jpg", Path(sys.argv[1]))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the resident size now
before = status("VmRSS")
content, info = ObjectStore(client, "bucket").%s("big.jpg")
picture = imaging.open_picture(content, max_pixels=10**8, size=224)
pixels = picture.pixels(224)
print(json.dumps({"size": info.size, "growth": status("VmHWM") - before, "served": client.served,
                  "shape": list(pixels.shape), "width": picture.facts.width}))
"""


def measure(path: Path, read: str) -> dict[str, int]:
    env = {"PYTHONPATH": f"{ROOT / 'plugin'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE % read, str(path)], capture_output=True, text=True, env=env, check=True
    ).stdout
    figures: dict[str, int] = json.loads(out)
    return figures


@pytest.mark.slow
def test_a_200_mb_jpeg_is_tagged_in_a_small_fraction_of_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (6000, 8000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG", quality=100, subsampling=0)  # ~200 MB, 48 MP
    del noise
    streamed, whole = measure(path, "read"), measure(path, "get_bytes")
    assert streamed["size"] > 150 << 20 and streamed["width"] == 8000 and streamed["shape"] == [224, 224, 3]
    assert streamed["served"] == streamed["size"]  # a baseline JPEG's every scan is read, streamed
    # Measured: 36 MiB (the 16 MiB block cache, the 1/8-scale decode, the XMP scan's 4 MiB, buffers)
    # against 192 MiB for the whole download (188 MB object), which the same measure sees.
    assert whole["growth"] > whole["size"]
    assert streamed["growth"] < 48 << 20, streamed


@pytest.mark.slow
def test_ranged_reads_on_real_s3(s3: Any, settings: Settings) -> None:
    """Against moto: ranges, a zero-byte object, the version pin of a versioned bucket and the ETag pin
    of an unversioned one (an overwrite mid-read is NotFound: the new upload has its own event)."""
    bucket = settings.aws.bucket
    s3.create_bucket(Bucket=bucket)
    store = ObjectStore(s3, bucket)
    payload = np.random.default_rng(0).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes()
    s3.put_object(Bucket=bucket, Key="big", Body=payload)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert store.read("empty")[0] == b""
    content, info = store.read("big")
    assert info.size == len(payload) and not isinstance(content, bytes)
    content.seek(7 << 20)
    assert content.read(100) == payload[7 << 20 : (7 << 20) + 100]
    s3.put_object(Bucket=bucket, Key="big", Body=payload[::-1])
    content.seek(5 << 20)
    with pytest.raises(NotFound, match="replaced while being read"):
        content.read(10)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="big", Body=payload)
    content, info = store.read("big")
    assert info.version_id
    s3.put_object(Bucket=bucket, Key="big", Body=payload[::-1])  # the version read stays readable
    content.seek(0)
    assert content.read() == payload
