"""Embedding service: image bytes in, float32 L2-normalised embeddings out, one ONNX session per process.

The session is created lazily and cached at module level, keyed by model path, sha256 and thread count,
so a warm Lambda (or a long-lived worker) loads the model once. Threads are pinned to the cores this
process may use. Decoding runs in a small thread pool a batch ahead of inference, so Pillow (which
releases the GIL) works while onnxruntime runs the previous batch. Results are per item: one bad file
yields its ``ImageError`` and the rest of its batch is embedded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from smarttags.adapters import backbone as backbone_mod
from smarttags.adapters import imaging
from smarttags.errors import ImageError, ModelError
from smarttags.settings import BackboneSettings, Settings

log = logging.getLogger(__name__)

Embedding = np.ndarray[Any, np.dtype[np.float32]]
Pixels = np.ndarray[Any, np.dtype[np.uint8]]

_SESSIONS: dict[tuple[str, str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def available_cores() -> int:
    """The cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_session(model_path: Path, sha256: str, threads: int) -> Any:
    """The process-wide onnxruntime session for this model file, created on first use."""
    key = (str(Path(model_path).resolve()), sha256, threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a CNN is one chain of ops
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Our decode threads share these cores: spinning ORT workers would steal their time
            # (measured: ~10% faster end to end on 12 MP JPEGs with 2 cores, no loss on the backbone).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
                raise ModelError(f"onnxruntime cannot load {model_path}: {exc}") from exc
            _SESSIONS[key] = session
            log.info("loaded %s with %d threads", model_path, threads)
        return session


def clear_sessions() -> None:
    """Forget the cached sessions (tests; a process that switches models)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


class Embedder:
    """Runs one ONNX image encoder. ``session`` may be handed in (tests, or a shared session)."""

    def __init__(
        self,
        settings_backbone: BackboneSettings,
        model_path: Path,
        *,
        sha256: str | None = None,
        name: str | None = None,
        input_size: int | None = None,
        embedding_dim: int | None = None,
        session: Any = None,
        check: Callable[[], backbone_mod.BackboneFile] | None = None,
    ) -> None:
        self.settings = settings_backbone
        self.model_path = Path(model_path)
        # Verify before first use: a tampered or half-written file must never be run. A ``sha256``
        # read from the checksum file comes with ``check``, run when the session is first made: it
        # verifies the file (a preset's tampered cache is rebuilt) and must name the same file.
        self.sha256 = sha256 or backbone_mod.verify(self.model_path)
        self._check = check
        self.name = name or settings_backbone.name
        self.input_size = input_size or backbone_mod.input_size_for(settings_backbone)
        self._dim = embedding_dim or backbone_mod.embedding_dim_for(settings_backbone)
        self.threads = settings_backbone.threads or available_cores()
        self._session = session
        self._mean = np.asarray(settings_backbone.mean, dtype=np.float32) * 255.0
        self._inv_std = 1.0 / (np.asarray(settings_backbone.std, dtype=np.float32) * 255.0)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._input_name: str | None = None

    # --- the session ---

    @property
    def loaded(self) -> bool:
        """Whether the ONNX session is made (the backbone id and sizes never need it)."""
        return self._input_name is not None

    @property
    def session(self) -> Any:
        if self._input_name is None:
            if self._session is None and self._check is not None:
                checked = self._check()
                if (checked.path, checked.sha256) != (self.model_path, self.sha256):
                    raise ModelError(f"backbone file {self.model_path} changed since {self.backbone_id} was read")
                self._check = None
            session = self._session or get_session(self.model_path, self.sha256, self.threads)
            self._check_contract(session)  # before keeping it: a failed check must fail every call
            self._session = session
        return self._session

    def _check_contract(self, session: Any) -> None:
        inputs = session.get_inputs()
        wanted = self.settings.input_name
        match = [i for i in inputs if i.name == wanted] if wanted else inputs[:1]
        if not match:
            raise ModelError(f"{self.model_path} has no input named {wanted!r}")
        self._input_name = match[0].name
        outputs = {o.name: o for o in session.get_outputs()}
        if self.settings.output_name not in outputs:
            raise ModelError(
                f"{self.model_path} has no output named {self.settings.output_name!r} (it has {', '.join(outputs)})"
            )
        shape = outputs[self.settings.output_name].shape
        last = shape[-1] if shape else None
        if isinstance(last, int) and last != self.dim:
            raise ModelError(f"{self.model_path}: output dimension {last}, settings say {self.dim}")

    @property
    def dim(self) -> int:
        """The embedding size: a preset's own (a composite concatenates its parts'), or the setting."""
        return self._dim

    @property
    def backbone_id(self) -> str:
        """Names the exact encoder: stored beside every embedding so models are never mixed."""
        return f"{self.name}:{self.sha256}"

    # --- arrays ---

    def normalise_one(self, pixels: Pixels) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One ``(size, size, 3)`` uint8 image as CHW float32, normalised with the configured mean/std
        (given on a 0..1 scale). Decode threads call this, so it runs beside inference."""
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
        chw -= self._mean[:, None, None]
        chw *= self._inv_std[:, None, None]
        return chw

    def to_tensor(self, pixels: Sequence[Pixels]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """NCHW float32 input for uint8 RGB arrays of any size (letterboxed to the input size)."""
        return np.stack([self.normalise_one(imaging.prepare_array(p, self.input_size)) for p in pixels])

    def _run_tensor(self, batch: np.ndarray[Any, Any], names: list[str]) -> list[np.ndarray[Any, Any]]:
        session = self.session
        return [np.asarray(r) for r in session.run(names, {self._input_name: batch})]

    def run(self, pixels: Sequence[Pixels], outputs: Sequence[str] | None = None) -> list[np.ndarray[Any, Any]]:
        """Raw model outputs for a batch of uint8 RGB arrays (any size; letterboxed to the input size)."""
        if not pixels:
            return [np.zeros((0, self.dim), dtype=np.float32) for _ in outputs or [self.settings.output_name]]
        return self._run_tensor(self.to_tensor(pixels), list(outputs or [self.settings.output_name]))

    def embed_arrays(self, pixels: Sequence[Pixels]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """``(N, dim)`` float32, each row L2-normalised, for uint8 RGB arrays."""
        out: list[np.ndarray[Any, Any]] = []
        size = self.settings.batch_size
        for start in range(0, len(pixels), size):
            (raw,) = self.run(pixels[start : start + size])
            out.append(raw.reshape(raw.shape[0], -1))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(np.concatenate(out))

    def logits(self, pixels: Sequence[Pixels]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """ImageNet logits ``(N, 1000)``; only preset backbones have them."""
        names = {o.name for o in self.session.get_outputs()}
        if backbone_mod.LOGITS_OUTPUT not in names:
            raise ModelError(f"{self.backbone_id} has no {backbone_mod.LOGITS_OUTPUT!r} output")
        (raw,) = self.run(pixels, [backbone_mod.LOGITS_OUTPUT])
        return raw.astype(np.float32)

    # --- bytes ---

    def decode(self, data: bytes) -> Pixels:
        """One input's bytes as model-sized pixels (raises ImageError)."""
        return imaging.prepare(data, self.input_size, max_pixels=self.settings.max_pixels)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.decode_workers, thread_name_prefix="smarttags-decode"
                )
            return self._pool

    def embed_bytes(self, items: Sequence[bytes]) -> list[Embedding | ImageError]:
        """One result per item, in order: an L2-normalised embedding, or the ImageError that item raised."""
        return list(self.iter_embed(items, lambda data: data))

    def iter_embed(self, items: Iterable[Any], load: Callable[[Any], bytes]) -> Iterator[Embedding | ImageError]:
        """Like ``embed_bytes`` over any items, ``load`` turning each into bytes inside the decode pool
        (e.g. a file read or an S3 GET), so fetching and decoding overlap inference too."""
        pool = self._executor()
        batch_size = self.settings.batch_size
        # Keep up to two batches decoding ahead of the one being run: overlap without hoarding memory.
        pending: deque[Future[np.ndarray[Any, np.dtype[np.float32]]]] = deque()
        source = iter(items)
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < 2 * batch_size:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    return
                pending.append(pool.submit(self._load_and_decode, load, item))

        fill()
        while pending:
            results: list[np.ndarray[Any, np.dtype[np.float32]] | ImageError] = []
            while pending and len(results) < batch_size:
                future = pending.popleft()
                fill()
                try:
                    results.append(future.result())
                except ImageError as exc:
                    results.append(exc)
            good = [r for r in results if not isinstance(r, ImageError)]
            vectors: list[Embedding] = []
            if good:
                (raw,) = self._run_tensor(np.stack(good), [self.settings.output_name])
                vectors = list(normalise(raw.reshape(raw.shape[0], -1)))
            embedded = iter(vectors)
            for r in results:
                yield r if isinstance(r, ImageError) else next(embedded)

    def _load_and_decode(self, load: Callable[[Any], bytes], item: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.normalise_one(self.decode(load(item)))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def normalise(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out: np.ndarray[Any, np.dtype[np.float32]] = (v / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def load_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for; builds the preset backbone first if it is not built. The
    model file is read (checked against its checksum file, then loaded) only when first run."""
    found = backbone_mod.locate(settings)
    return Embedder(
        settings.backbone,
        found.path,
        sha256=found.sha256,
        name=found.name,
        input_size=found.input_size,
        embedding_dim=found.embedding_dim,
        check=lambda: backbone_mod.resolve(settings),
    )
