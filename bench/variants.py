"""Embedding variants of the clip-art dev set for bench/quality.py: one pass per backbone, cached.

For each preset backbone (Lite0 at 224 px, Lite2 at 260 px) every picture is decoded as the product
decodes it (``Embedder.decode``: letterboxed, EXIF-oriented) and run twice in one batch, as is and
mirrored left-right. The graph is the product's ONNX file with two more outputs (bench only; the
product's graph is not changed): the head's feature map before global pooling and the last block's
output. From them each pass keeps several poolings, unnormalised (quality.py normalises):

  avg      global average of the head's map: the product's embedding (before L2 normalisation)
  gem      generalised mean, p = 3 (a pooling known to help retrieval with frozen CNN features)
  max      global max of the head's map
  grid     2 x 2 region averages of the head's map, concatenated (a spatial pyramid's second level)
  block    global average of the last block's output (a lower level's features)

each for the picture as is (``*``) and mirrored (``flip_*``; no flipped grid). A composite preset
(``efficientnet-lite0+lite2``, one graph, one 260 px input) keeps ``avg``, its ``embedding`` output as
the product makes it (each part's pooled features L2-normalised, concatenated), and ``gem``, each part's
GeM of its head's map, normalised and concatenated the same way; both also mirrored. Saved as
data_dir/bench/variants-<backbone>-<key>.npz with ``ok`` (decoded) per picture.
Run: nice -n 10 .venv/bin/python bench/variants.py [--backbone efficientnet-lite0] [--max-images N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from smarttags import settings as settings_mod
from smarttags.adapters import backbone as backbone_mod
from smarttags.adapters.embedder import Embedder, available_cores
from smarttags.errors import ImageError

POOLINGS = ("avg", "gem", "max", "grid", "block")
FLIPPED = ("avg", "gem", "max", "block")
COMPOSITE_POOLINGS = ("avg", "gem")


def cache_path(cache: Path, name: str, files: list[Path]) -> Path:
    key = hashlib.sha256((name + backbone_mod.BUILDER_VERSION + "\n".join(map(str, files))).encode()).hexdigest()
    return cache / f"variants-{name}-{key[:16]}.npz"


def bench_graph(model_path: Path, out: Path) -> Path:
    """The product's ONNX file with the head's map and the last block's output as extra outputs."""
    import onnx

    if out.is_file():
        return out
    model = onnx.load(str(model_path))
    graph = model.graph
    pool = next(n for n in graph.node if n.op_type == "GlobalAveragePool")
    head_map = pool.input[0]
    head_conv = next(n for n in graph.node if head_map in n.output or n.output[0] == head_map)
    # The head is Clip(Conv(block_out)); walk back from the Clip to its Conv's input.
    producers = {o: n for n in graph.node for o in n.output}
    conv = producers[head_conv.input[0]] if head_conv.op_type == "Clip" else head_conv
    block_out = conv.input[0]
    for name in (head_map, block_out):
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def composite_graph(model_path: Path, out: Path) -> Path:
    """A composite's ONNX file with each part's head map (the input of its GlobalAveragePool) as outputs."""
    import onnx

    if out.is_file():
        return out
    model = onnx.load(str(model_path))
    for node in [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def gem(head: np.ndarray) -> np.ndarray:
    return np.power(np.mean(np.power(np.maximum(head, 1e-6), 3.0), axis=(2, 3)), 1.0 / 3.0)


def composite_pooled(embedding: np.ndarray, heads: list[np.ndarray]) -> dict[str, np.ndarray]:
    from smarttags.adapters.embedder import normalise

    return {"avg": embedding, "gem": np.concatenate([normalise(gem(h)) for h in heads], axis=1)}


def pooled(head: np.ndarray, block: np.ndarray) -> dict[str, np.ndarray]:
    """The poolings of a batch: head (N, C, H, W), block (N, C', H, W)."""
    _, _, h, w = head.shape
    hh, ww = (h + 1) // 2, (w + 1) // 2  # overlapping halves when odd (7 -> 4 + 4)
    cells = [head[:, :, i : i + hh, j : j + ww].mean(axis=(2, 3)) for i in (0, h - hh) for j in (0, w - ww)]
    return {
        "avg": head.mean(axis=(2, 3)),
        "gem": gem(head),
        "max": head.max(axis=(2, 3)),
        "grid": np.concatenate(cells, axis=1),
        "block": block.mean(axis=(2, 3)),
    }


def run(name: str, files: list[Path], cache: Path) -> Path:
    target = cache_path(cache, name, files)
    if target.is_file():
        return target
    settings = settings_mod.load()
    settings = settings.model_copy(update={"backbone": settings.backbone.model_copy(update={"name": name})})
    built = backbone_mod.build(settings, name)
    import onnxruntime as ort

    composite = name in backbone_mod.COMPOSITES
    make_graph = composite_graph if composite else bench_graph
    graph = make_graph(built.path, cache / f"{built.path.stem}-bench.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    session = ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
    embedder = Embedder(
        settings.backbone,
        built.path,
        sha256=built.sha256,
        name=name,
        input_size=built.input_size,
        embedding_dim=built.embedding_dim,
    )
    # A composite: the product's embedding and the parts' head maps; a preset: its two extra maps.
    names = [o.name for o in session.get_outputs()]
    names = [names[0], *names[2:]] if composite else names[2:]
    poolings, flipped_poolings = (COMPOSITE_POOLINGS, COMPOSITE_POOLINGS) if composite else (POOLINGS, FLIPPED)
    out: dict[str, list[np.ndarray]] = {k: [] for k in poolings}
    out.update({f"flip_{k}": [] for k in flipped_poolings})
    ok = np.zeros(len(files), dtype=bool)
    started = time.perf_counter()

    def decode(path: Path) -> Any:
        try:
            return embedder.normalise_one(embedder.decode(path.read_bytes()))
        except ImageError as exc:
            return exc

    def batches(size: int) -> Iterator[list[tuple[int, Any]]]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            batch: list[tuple[int, Any]] = []
            for i, result in enumerate(pool.map(decode, files)):
                batch.append((i, result))
                if len(batch) == size:
                    yield batch
                    batch = []
            if batch:
                yield batch

    dims: dict[str, int] = {}
    for batch in batches(16):
        good = [(i, t) for i, t in batch if not isinstance(t, ImageError)]
        if good:
            tensor = np.stack([t for _, t in good])
            both = np.concatenate([tensor, tensor[:, :, :, ::-1]])  # mirrored: flip the width axis
            results = session.run(names, {"input": np.ascontiguousarray(both)})
            n = len(good)
            if composite:
                plain = composite_pooled(results[0][:n], [r[:n] for r in results[1:]])
                flipped = composite_pooled(results[0][n:], [r[n:] for r in results[1:]])
            else:
                head, block = results
                plain, flipped = pooled(head[:n], block[:n]), pooled(head[n:], block[n:])
            for k in poolings:
                dims[k] = plain[k].shape[1]
            for row, (i, _) in enumerate(good):
                ok[i] = True
                for k in poolings:
                    out[k].append(plain[k][row])
                for k in flipped_poolings:
                    out[f"flip_{k}"].append(flipped[k][row])
        for _, t in batch:
            if isinstance(t, ImageError):
                for k in out:
                    out[k].append(np.full(dims.get(k.removeprefix("flip_"), 1), np.nan, np.float32))
        done = batch[-1][0] + 1
        if done % 512 < 16:
            print(f"  {name}: {done}/{len(files)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    # Rows of failed pictures were appended in batch order, not file order: rebuild in file order.
    arrays = _in_order(out, ok, dims)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(target, ok=ok, seconds=np.array(time.perf_counter() - started), **arrays)
    print(f"{name}: {ok.sum()}/{len(files)} pictures in {time.perf_counter() - started:.0f} s -> {target}")
    return target


def _in_order(out: dict[str, list[np.ndarray]], ok: np.ndarray, dims: dict[str, int]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for k, rows in out.items():
        good = iter(r for r in rows if not np.isnan(r).any())
        dim = dims[k.removeprefix("flip_")]
        full = np.zeros((ok.size, dim), np.float32)
        for i in np.flatnonzero(ok):
            full[i] = next(good)
        arrays[k] = full
    return arrays


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from quality import labelled_files

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet-lite0", choices=sorted(backbone_mod.preset_names()))
    parser.add_argument("--max-images", type=int, default=0)
    args = parser.parse_args()
    files, _ = labelled_files()
    if args.max_images:
        files = files[: args.max_images]
    run(args.backbone, files, settings_mod.load().data_dir / "bench")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
