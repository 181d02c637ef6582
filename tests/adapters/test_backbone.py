"""The backbone builder: torch-free weights reader, the ONNX graph, its cache and checksum, accuracy."""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from skimage import data as skdata
from smarttags import settings
from smarttags.adapters import backbone
from smarttags.adapters.embedder import Embedder, load_embedder
from smarttags.errors import ModelError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLASS_NAMES = (Path(backbone.__file__).parents[1] / "data" / "imagenet_classes.txt").read_text().splitlines()
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="session")
def lite0_settings(tmp_path_factory) -> settings.Settings:
    data_dir = tmp_path_factory.mktemp("backbone-data")
    s = settings.load(data_dir=data_dir, backbone={"name": "efficientnet-lite0"})
    backbone.build(s)  # once per session; later builds hit the cache
    return s


@pytest.fixture(scope="session")
def lite0(lite0_settings) -> Embedder:
    return load_embedder(lite0_settings)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def top(logits: np.ndarray, k: int) -> list[str]:
    return [CLASS_NAMES[i] for i in np.argsort(-logits)[:k]]


# --- reading weights without torch --------------------------------------------------------------


def test_class_names_file_has_the_1000_imagenet_classes():
    assert len(CLASS_NAMES) == 1000
    assert CLASS_NAMES[281] == "tabby" and CLASS_NAMES[967] == "espresso" and CLASS_NAMES[968] == "cup"


def test_reads_the_pinned_legacy_weights():
    weights = backbone.read_state_dict(backbone.weights_path(backbone.PRESETS["efficientnet-lite0"]))
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_conv_stem.weight"].dtype == np.float32
    assert all(np.all(v >= 0) for k, v in weights.items() if k.endswith("running_var"))


def _fake_torch(monkeypatch) -> types.ModuleType:
    """Stand-ins named like torch's, so the stdlib pickler writes what torch.save would."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while saving")

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = FloatStorage
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def test_reads_the_zip_format(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    values = np.arange(12, dtype="<f4")

    class Tensor:
        def __reduce__(self):
            # a transposed (3, 4) view of a (4, 3) storage: offset 0, strides (1, 3)
            return (torch._utils._rebuild_tensor_v2, (StorageRef(), 0, (3, 4), (1, 3), False, OrderedDict()))

    class StorageRef:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 12) if isinstance(obj, StorageRef) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(OrderedDict([("w", Tensor())]))
    path = tmp_path / "tiny.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny/data.pkl", buf.getvalue())
        zf.writestr("tiny/data/0", values.tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    got = backbone.read_state_dict(path)
    np.testing.assert_array_equal(got["w"], values.reshape(4, 3).T)


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ModelError, match=r"refusing to load (__builtin__|builtins)\.print"):
        backbone.read_state_dict(path)
    legacy = tmp_path / "evil-legacy.pt"
    legacy.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ModelError, match="refusing"):
        backbone.read_state_dict(legacy)


def test_same_padding_is_tf_style():
    assert backbone._same_pads(224, 3, 2) == (0, 1)  # extra pixel bottom/right, like TF
    assert backbone._same_pads(56, 5, 2) == (1, 2)
    assert backbone._same_pads(14, 5, 1) == (2, 2)


def test_lite2_block_plan_scales_width_and_depth():
    plan = backbone.block_plan(1.1, 1.2)
    assert len(plan) == 1 + 3 + 3 + 4 + 4 + 5 + 1
    assert plan[0].inp == 32 and plan[-1].out == 352


# --- the graph and its cache ---------------------------------------------------------------------


def test_build_writes_a_checked_onnx_with_two_outputs_and_dynamic_batch(lite0_settings):
    built = backbone.build(lite0_settings)
    assert built.path.parent == lite0_settings.data_dir / "models"
    assert built.path.with_name(built.path.name + ".sha256").read_text().split()[0] == built.sha256
    model = onnx.load(str(built.path))
    outputs = {o.name: o for o in model.graph.output}
    assert set(outputs) == {"embedding", "logits"}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded


def test_build_is_cached(lite0_settings):
    first = backbone.build(lite0_settings)
    mtime = first.path.stat().st_mtime_ns
    again = backbone.build(lite0_settings)
    assert again == first and again.path.stat().st_mtime_ns == mtime


def test_tampered_onnx_file_is_refused(lite0_settings, tmp_path):
    built = backbone.build(lite0_settings)
    copy = tmp_path / built.path.name
    shutil.copy(built.path, copy)
    shutil.copy(built.path.with_name(built.path.name + ".sha256"), tmp_path)
    assert backbone.verify(copy) == built.sha256
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    copy.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="does not match"):
        backbone.verify(copy)
    with pytest.raises(ModelError, match="does not match"):
        Embedder(lite0_settings.backbone, copy)
    copy.with_name(copy.name + ".sha256").unlink()
    with pytest.raises(ModelError, match="no checksum file"):
        Embedder(lite0_settings.backbone, copy)


def test_a_tampered_cache_is_rebuilt(tmp_path, caplog):
    s = settings.load(data_dir=tmp_path, backbone={"name": "efficientnet-lite0"})
    built = backbone.build(s)
    built.path.write_bytes(built.path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="smarttags.adapters.backbone"):
        again = backbone.build(s)
    assert again.sha256 == built.sha256
    assert "fails its checksum" in caplog.text


# --- correctness ---------------------------------------------------------------------------------


def test_matches_the_independent_reference_embedding(lite0):
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_reference import reference_input
    finally:
        sys.path.remove(str(FIXTURES))
    (raw,) = lite0.run([reference_input()])
    expected = np.load(FIXTURES / "chelsea_lite0_embedding.npy")
    assert raw.shape == (1, 1280)
    np.testing.assert_allclose(raw[0], expected, atol=1e-3, rtol=0)


def test_chelsea_is_a_cat_and_coffee_is_espresso(lite0):
    cat, coffee = (lite0.decode(png(img)) for img in (skdata.chelsea(), skdata.coffee()))
    logits = lite0.logits([cat, coffee])
    assert logits.shape == (2, 1000)
    assert CATS & set(top(logits[0], 3)), top(logits[0], 5)
    assert {"espresso", "cup"} & set(top(logits[1], 3)), top(logits[1], 5)


def test_lite2_builds_and_classifies(tmp_path):
    s = settings.load(data_dir=tmp_path, backbone={"name": "efficientnet-lite2"})
    embedder = load_embedder(s)
    assert embedder.input_size == 260 and embedder.backbone_id.startswith("efficientnet-lite2:")
    logits = embedder.logits([embedder.decode(png(skdata.chelsea()))])
    assert CATS & set(top(logits[0], 3)), top(logits[0], 5)


def test_the_lite0_graph_is_the_one_every_lite0_model_was_trained_on(lite0_settings):
    """Lite0's sha256 is the backbone id of every stored Lite0 embedding and model: a change to the graph
    builder that touched it would make every existing deployment re-embed and retrain."""
    assert backbone.build(lite0_settings).sha256 == "9a0005e8c6ecdec0daff00d5af7f62b4f86191ff25dd6512b0d9c99511775f21"


# --- the composite: Lite0 + Lite2 in one graph ---------------------------------------------------


@pytest.fixture(scope="session")
def composite(lite0_settings) -> Embedder:
    s = lite0_settings.model_copy(update={"backbone": settings.BackboneSettings(name="efficientnet-lite0+lite2")})
    return load_embedder(s)


def test_the_composite_is_one_graph_with_one_input_and_a_2560_d_embedding(composite):
    assert composite.backbone_id.startswith("efficientnet-lite0+lite2:")
    assert composite.input_size == 260 and composite.dim == 2560
    model = onnx.load(str(composite.model_path))
    assert [i.name for i in model.graph.input] == ["input"]
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims == {"embedding": ["batch", 2560], "logits": ["batch", 1000]}
    assert [n.op_type for n in model.graph.node].count("GlobalAveragePool") == 2
    assert [n.op_type for n in model.graph.node].count("Resize") == 1  # Lite0's branch only
    out = composite.embed_bytes([png(skdata.chelsea()), png(skdata.coffee())])
    assert all(v.shape == (2560,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5 for v in out)


def test_the_composite_concatenates_its_parts_each_normalised(composite, lite0, tmp_path):
    """What bench/quality.py measured: normalise([normalise(Lite0), normalise(Lite2)]). Lite2's half is
    Lite2 exactly (same 260 px letterbox); Lite0's sees the letterbox resized to 224 in the graph, close
    to (not bit-equal with) Lite0 on its own 224 px letterbox."""
    lite2 = load_embedder(settings.load(data_dir=tmp_path, backbone={"name": "efficientnet-lite2"}))
    pictures = [png(skdata.chelsea()), png(skdata.coffee()), png(skdata.astronaut())]
    both = np.stack(composite.embed_bytes(pictures)) * np.sqrt(2.0)
    np.testing.assert_allclose(both[:, 1280:], np.stack(lite2.embed_bytes(pictures)), atol=1e-5)
    cosine = (both[:, :1280] * np.stack(lite0.embed_bytes(pictures))).sum(axis=1)
    assert np.all(cosine > 0.97), cosine
    np.testing.assert_allclose(np.linalg.norm(both[:, :1280], axis=1), 1.0, atol=1e-5)


def test_the_cli_builds_every_preset(composite, monkeypatch, capsys):
    from smarttags.entrypoints import cli

    monkeypatch.setenv("SMARTTAGS_DATA_DIR", str(composite.model_path.parents[1]))
    assert cli.main(["backbone", "build", "--name", "efficientnet-lite0+lite2"]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == [str(composite.model_path), f"sha256 {composite.sha256}"]
    build_parser = cli.build_parser()._subparsers._group_actions[0].choices["backbone"]
    choices = build_parser._subparsers._group_actions[0].choices["build"]._option_string_actions["--name"].choices
    assert sorted(choices) == sorted(backbone.preset_names())


def test_the_composite_classifies_with_lite2s_logits(composite):
    logits = composite.logits([composite.decode(png(skdata.chelsea()))])
    assert CATS & set(top(logits[0], 3)), top(logits[0], 5)


def test_preset_sizes_follow_the_name_unless_set():
    composite = settings.BackboneSettings(name="efficientnet-lite0+lite2")
    assert (backbone.input_size_for(composite), backbone.embedding_dim_for(composite)) == (260, 2560)
    lite2 = settings.BackboneSettings(name="efficientnet-lite2")
    assert (backbone.input_size_for(lite2), backbone.embedding_dim_for(lite2)) == (260, 1280)
    custom = settings.BackboneSettings(name="custom", onnx_file=Path("x.onnx"), embedding_dim=512, input_size=300)
    assert (backbone.input_size_for(custom), backbone.embedding_dim_for(custom)) == (300, 512)
    # Set explicitly on a preset, the setting is what the embedder checks the file against.
    assert backbone.embedding_dim_for(settings.BackboneSettings(name="efficientnet-lite0", embedding_dim=7)) == 7


# --- which backbone a deployment embeds with -----------------------------------------------------


def test_an_unset_backbone_follows_the_active_models():
    default = settings.load().backbone
    assert "name" not in default.model_fields_set
    followed = backbone.for_model(default, "efficientnet-lite0:9a00")
    assert followed.name == "efficientnet-lite0" and backbone.embedding_dim_for(followed) == 1280
    assert backbone.for_model(default, "efficientnet-lite0+lite2:1").name == "efficientnet-lite0+lite2"
    assert backbone.for_model(default, None) is default  # a new deployment: the default
    assert backbone.for_model(default, "custom:ab") is default  # cannot follow: the tagger says what to set


def test_a_set_backbone_is_never_overridden(monkeypatch):
    monkeypatch.setenv("SMARTTAGS_BACKBONE__NAME", "efficientnet-lite2")
    chosen = settings.load().backbone
    assert backbone.for_model(chosen, "efficientnet-lite0:9a00") is chosen
    monkeypatch.delenv("SMARTTAGS_BACKBONE__NAME")
    monkeypatch.setenv("SMARTTAGS_BACKBONE__THREADS", "1")  # another backbone setting leaves the name unset
    other = settings.load().backbone
    assert "name" not in other.model_fields_set
    assert backbone.for_model(other, "efficientnet-lite0:9a00").name == "efficientnet-lite0"
    assert backbone.for_model(other, "efficientnet-lite0:9a00").threads == 1


# --- bring your own encoder ----------------------------------------------------------------------


def _tiny_encoder(path: Path, output: str = "features") -> None:
    h = onnx.helper
    nodes = [
        h.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        h.make_node("Flatten", ["pooled"], [output], axis=1),
    ]
    graph = h.make_graph(
        nodes,
        "tiny",
        [h.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["n", 3, 32, 32])],
        [h.make_tensor_value_info(output, onnx.TensorProto.FLOAT, ["n", 3])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_custom_onnx_encoder(tmp_path):
    _tiny_encoder(tmp_path / "tiny.onnx")
    custom = {
        "name": "custom",
        "onnx_file": tmp_path / "tiny.onnx",
        "input_size": 32,
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "output_name": "features",
        "embedding_dim": 3,
    }
    embedder = load_embedder(settings.load(data_dir=tmp_path, backbone=custom))
    assert embedder.backbone_id == f"custom:{backbone.sha256_file(tmp_path / 'tiny.onnx')}"
    red = np.zeros((10, 10, 3), dtype=np.uint8)
    red[..., 0] = 255
    (vec,) = embedder.embed_arrays([red])
    np.testing.assert_allclose(vec, [1.0, 0.0, 0.0], atol=1e-6)  # a square: no grey padding
    assert vec.dtype == np.float32
    with pytest.raises(ModelError, match="logits"):
        embedder.logits([red])


def test_custom_encoder_contract_is_checked(tmp_path):
    _tiny_encoder(tmp_path / "tiny.onnx", output="other")
    custom = {"name": "custom", "onnx_file": tmp_path / "tiny.onnx", "embedding_dim": 3}
    embedder = load_embedder(settings.load(data_dir=tmp_path, backbone=custom))
    with pytest.raises(ModelError, match="no output named 'embedding'"):
        embedder.embed_arrays([np.zeros((32, 32, 3), dtype=np.uint8)])
    wrong_dim = {**custom, "output_name": "other", "embedding_dim": 4}
    embedder = load_embedder(settings.load(data_dir=tmp_path, backbone=wrong_dim))
    with pytest.raises(ModelError, match="output dimension 3"):
        embedder.embed_arrays([np.zeros((32, 32, 3), dtype=np.uint8)])
