"""The embedding service: per-item results, batching, the cached session, the CLI."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from smarttags import settings
from smarttags.adapters import backbone, embedder
from smarttags.entrypoints import cli
from smarttags.errors import CorruptImage, ImageTooLarge, ModelError, UnsupportedImage


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> settings.Settings:
    s = settings.load(data_dir=tmp_path_factory.mktemp("embedder-data"), backbone={"name": "efficientnet-lite0"})
    backbone.build(s)
    return s


def jpeg(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **kw)
    return buf.getvalue()


def photos() -> list[bytes]:
    return [jpeg(img) for img in (skdata.chelsea(), skdata.coffee(), skdata.astronaut())]


def test_embeddings_are_unit_float32(built):
    e = embedder.load_embedder(built)
    out = e.embed_bytes(photos())
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (1280,) for v in out)
    norms = [float(np.linalg.norm(v)) for v in out]
    assert norms == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert e.dim == 1280 and e.backbone_id == f"efficientnet-lite0:{backbone.build(built).sha256}"


def test_the_backbone_id_needs_no_read_of_the_model(built, tmp_path):
    """load_embedder names the backbone from the checksum file beside the model; the model is read
    (checked against that checksum, then loaded) when first run, so a tampered file never runs."""
    found = backbone.build(built)
    fresh = embedder.load_embedder(built)
    assert fresh.backbone_id == found.backbone_id and not fresh.loaded
    fresh.embed_arrays([np.zeros((224, 224, 3), np.uint8)])
    assert fresh.loaded
    copy = tmp_path / found.path.name
    shutil.copy(found.path, copy)
    shutil.copy(found.path.with_name(found.path.name + ".sha256"), tmp_path)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # tampered after its checksum was written
    copy.write_bytes(bytes(raw))
    custom = settings.load(data_dir=tmp_path / "data", backbone={"name": "efficientnet-lite0", "onnx_file": str(copy)})
    lazy = embedder.load_embedder(custom)
    assert lazy.backbone_id == found.backbone_id and lazy.input_size == 224 and not lazy.loaded
    with pytest.raises(ModelError, match="does not match"):
        lazy.embed_arrays([np.zeros((224, 224, 3), np.uint8)])
    assert not lazy.loaded
    # A preset's cache tampered with after its id was read is rebuilt before it runs, as by build().
    cache = settings.load(data_dir=tmp_path / "cache", backbone={"name": "efficientnet-lite0"})
    shutil.copytree(found.path.parent, tmp_path / "cache" / "models")
    early = embedder.load_embedder(cache)
    spoiled = tmp_path / "cache" / "models" / found.path.name
    spoiled.write_bytes(spoiled.read_bytes()[:-10])
    early.embed_arrays([np.zeros((224, 224, 3), np.uint8)])
    assert early.loaded and backbone.verify(spoiled) == found.sha256


def test_one_bad_file_does_not_fail_its_batch(built):
    good = photos()
    items = [good[0], b"", good[1], b"\x1aE\xdf\xa3" + bytes(64), good[2][:2000], good[2]]  # [3]: a video
    e = embedder.Embedder(built.backbone.model_copy(update={"batch_size": 2}), backbone.build(built).path)
    out = e.embed_bytes(items)
    assert [type(r).__name__ for r in out] == [
        "ndarray",
        "CorruptImage",
        "ndarray",
        "UnsupportedImage",
        "CorruptImage",
        "ndarray",
    ]
    assert isinstance(out[1], CorruptImage) and out[1].reason == "corrupt: zero bytes"
    assert isinstance(out[3], UnsupportedImage) and out[3].content_type == "video/x-matroska"
    # same results as embedding the good ones alone, in order
    alone = e.embed_bytes(good)
    for got, want in zip([out[0], out[2], out[5]], alone, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    e.close()


def test_max_pixels_setting_reaches_the_decoder(built):
    small = built.backbone.model_copy(update={"max_pixels": 10_000})
    e = embedder.Embedder(small, backbone.build(built).path)
    (result,) = e.embed_bytes([jpeg(skdata.chelsea())])
    assert isinstance(result, ImageTooLarge)


def test_all_bad_and_empty_batches(built):
    e = embedder.load_embedder(built)
    assert e.embed_bytes([]) == []
    out = e.embed_bytes([b"", b"x"])
    assert all(isinstance(r, CorruptImage) for r in out)
    assert e.embed_arrays([]).shape == (0, 1280)


def test_batches_agree_with_single_images(built):
    e = embedder.load_embedder(built)
    pixels = [e.decode(b) for b in photos()]
    together = e.embed_arrays(pixels)
    one_by_one = np.stack([e.embed_arrays([p])[0] for p in pixels])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_one_session_per_process(built):
    a = embedder.load_embedder(built)
    b = embedder.load_embedder(built)
    assert a is not b and a.session is b.session
    cores = len(os.sched_getaffinity(0))
    assert a.threads == cores
    opts = a.session.get_session_options()
    assert opts.intra_op_num_threads == cores
    pinned = embedder.Embedder(built.backbone.model_copy(update={"threads": 1}), backbone.build(built).path)
    assert pinned.session is not a.session
    assert pinned.session.get_session_options().intra_op_num_threads == 1


def test_a_session_can_be_handed_in(built):
    path = backbone.build(built).path
    session = embedder.get_session(path, backbone.verify(path), 1)
    e = embedder.Embedder(built.backbone, path, session=session)
    assert e.session is session
    assert e.embed_arrays([np.zeros((8, 8, 3), dtype=np.uint8)]).shape == (1, 1280)


def test_cli_backbone_build(built, monkeypatch, capsys):
    monkeypatch.setenv("SMARTTAGS_DATA_DIR", str(built.data_dir))
    monkeypatch.setenv("SMARTTAGS_BACKBONE__NAME", "efficientnet-lite0")
    assert cli.main(["backbone", "build"]) == 0
    path, sha = capsys.readouterr().out.split("\n")[:2]
    found = backbone.build(built)
    assert path == str(found.path) and sha == f"sha256 {found.sha256}"


def test_cli_embed_json(built, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SMARTTAGS_DATA_DIR", str(built.data_dir))
    monkeypatch.setenv("SMARTTAGS_BACKBONE__NAME", "efficientnet-lite0")
    good = tmp_path / "cat.jpg"
    good.write_bytes(jpeg(skdata.chelsea()))
    bad = tmp_path / "movie.mp4"
    bad.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(32))
    assert cli.main(["embed", str(good), str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    first, second = report["results"]
    assert first["dim"] == 1280 and first["norm"] == pytest.approx(1.0, abs=1e-5)
    assert second["error"] == "UnsupportedImage" and second["content_type"] == "video/mp4"
    assert report["backbone_id"].startswith("efficientnet-lite0:")
