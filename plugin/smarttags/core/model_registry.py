"""Model artifacts: versioned heads plus a manifest in S3, an active pointer, and applying thresholds.

Layout under the models prefix:
    <version>/heads.npz        weights (dim x tags), bias, thresholds
    <version>/manifest.json    version, backbone, tags, thresholds, metrics, fingerprint, sha256 of files
    active.json                {"version": ..., "history": [older active versions, newest first]}
A model whose files fail their sha256 is never activated or loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from smarttags.core.asset import SmartTag
from smarttags.core.heads import Heads, TagFit
from smarttags.core.ports import Embedder, Store
from smarttags.errors import ImageError, ModelError, NotFound

log = logging.getLogger(__name__)

HEADS_FILE = "heads.npz"
MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "active.json"
_VERSION = re.compile(r"^\d{8}T\d{6}Z(-[a-z0-9]+)?$")


@dataclass(frozen=True)
class Manifest:
    version: str
    backbone_id: str
    backbone_sha256: str
    tags: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, dict[str, float]]
    training_fingerprint: str
    created_at: str
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    folders: list[str] = field(default_factory=list)
    # Tags whose heads were not retrained but kept from the model active before -> the model they were
    # trained in (one active model serves the whole taxonomy).
    carried_over: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mean_average_precision(self) -> float | None:
        """The mean of the tags' cross-validated average precision, or None if no tag has one."""
        aps = [float(m["average_precision"]) for m in self.metrics.values() if m.get("average_precision") is not None]
        return sum(aps) / len(aps) if aps else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Model:
    manifest: Manifest
    heads: Heads

    @property
    def version(self) -> str:
        return self.manifest.version


# Enough decimals that distinct float32 scores do not tie (4 made near-equal tags rank by name).
SCORE_DECIMALS = 6
# A score this far below its tag's threshold or nearer is kept as a near miss (the tag page's and the
# review queue's "just below"), at most MAX_NEAR per asset, so the document stays small.
NEAR_MARGIN = 0.15
MAX_NEAR = 8


def apply_thresholds(
    tags: Iterable[str],
    scores: NDArray[np.floating],
    thresholds: NDArray[np.floating],
    *,
    model_version: str,
    rejected: Iterable[str] = (),
    promoted: Iterable[str] = (),
    max_tags: int = 20,
) -> list[SmartTag]:
    """The smart tags one asset gets: scores at or over their tag's threshold, minus what a moderator
    rejected, plus what a moderator promoted (kept whatever its score), plus the parents of those (a child
    tag implies its parent), promoted first, then best first."""
    rejected_set = set(rejected)
    promoted_set = set(promoted) - rejected_set
    chosen: dict[str, SmartTag] = {}
    for tag, score, threshold in zip(tags, scores.tolist(), thresholds.tolist(), strict=True):
        if tag not in rejected_set and (tag in promoted_set or score >= threshold):
            chosen[tag] = SmartTag(tag, round(float(score), SCORE_DECIMALS), model_version, threshold=float(threshold))
    for tag in promoted_set - chosen.keys():
        chosen[tag] = SmartTag(tag, 1.0, model_version)
    threshold_of = dict(zip(tags, (float(t) for t in thresholds.tolist()), strict=True))
    # A child implies its parent (the nearest ancestor the model knows and no moderator removed), at the
    # parent's own score or the child's confidence, whichever is higher; deepest first, so it carries up.
    score_of = dict(zip(tags, scores.tolist(), strict=True))
    for tag in sorted(score_of, key=lambda t: -t.count("/")):
        if tag not in chosen:
            continue
        up = _parent(tag)
        while up and (up not in score_of or up in rejected_set):
            up = _parent(up)
        if up:
            held = chosen[up].confidence if up in chosen else round(float(score_of[up]), SCORE_DECIMALS)
            chosen[up] = SmartTag(up, max(held, chosen[tag].confidence), model_version, threshold=threshold_of[up])
    ranked = sorted(chosen.values(), key=lambda s: (s.tag not in promoted_set, -s.confidence, s.tag))
    return ranked[:max_tags]


def near_misses(
    model: Model,
    scores: Mapping[str, float],
    *,
    chosen: Iterable[str],
    rejected: Iterable[str] = (),
    margin: float = NEAR_MARGIN,
    limit: int = MAX_NEAR,
) -> list[SmartTag]:
    """The tags that fell short of their threshold by at most ``margin``: not applied, not rejected by a
    moderator, nearest their threshold first, at most ``limit`` (pure)."""
    skip = set(chosen) | set(rejected)
    near = [
        SmartTag(tag, round(float(scores[tag]), SCORE_DECIMALS), model.version, threshold=float(threshold))
        for tag, threshold in zip(model.heads.tags, model.heads.thresholds.tolist(), strict=True)
        if tag not in skip and tag in scores and threshold - margin <= scores[tag] < threshold
    ]
    near.sort(key=lambda t: (t.margin or 0.0, t.tag))
    return near[:limit]


def _parent(tag: str) -> str | None:
    """``ns:a/b`` -> ``ns:a``; a top-level tag has none (the taxonomy's rule, from the id alone)."""
    namespace, _, path = tag.partition(":")
    head, sep, _ = path.rpartition("/")
    return f"{namespace}:{head}" if sep else None


def score_embedding(
    model: Model,
    embedding: NDArray[np.floating],
    *,
    rejected: Iterable[str] = (),
    promoted: Iterable[str] = (),
    max_tags: int = 20,
) -> tuple[list[SmartTag], dict[str, float]]:
    """One embedding through the model: the smart tags it gets, and every tag's score."""
    scores = model.heads.scores(embedding[None, :])[0]
    chosen = apply_thresholds(
        model.heads.tags,
        scores,
        model.heads.thresholds,
        model_version=model.version,
        rejected=rejected,
        promoted=promoted,
        max_tags=max_tags,
    )
    return chosen, dict(zip(model.heads.tags, (float(v) for v in scores.tolist()), strict=True))


@dataclass(frozen=True)
class Prediction:
    tags: list[SmartTag]  # what the asset would get
    scores: dict[str, float]  # every tag's score


def predict(
    model: Model, embedder: Embedder, images: Sequence[bytes], *, max_tags: int = 20
) -> list[Prediction | ImageError]:
    """A dry run: the tags the model gives each image, scored as the tagger scores; nothing is written.
    An image that cannot be decoded gives its ImageError in its place."""
    return [
        result if isinstance(result, ImageError) else Prediction(*score_embedding(model, result, max_tags=max_tags))
        for result in embedder.embed_bytes(images)
    ]


def new_version(now: datetime | None = None) -> str:
    """Sortable by time; the suffix keeps two models trained in the same second apart."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _heads_bytes(heads: Heads) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, weights=heads.weights, bias=heads.bias, thresholds=heads.thresholds)
    return buffer.getvalue()


class ModelStore:
    """Versioned models under one S3 prefix."""

    def __init__(self, store: Store, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return self._prefix + "/".join(parts)

    def save(
        self,
        heads: Heads,
        fits: list[TagFit],
        *,
        backbone_id: str,
        backbone_sha256: str,
        training_fingerprint: str,
        folders: list[str],
        version: str | None = None,
        carried_over: Mapping[str, str] | None = None,
        carried_metrics: Mapping[str, dict[str, float]] | None = None,
    ) -> Manifest:
        """Write a model; ``carried_over`` names the tags whose heads come from an earlier model (their
        ``carried_metrics`` are that model's)."""
        version = version or new_version()
        if not _VERSION.match(version):
            raise ModelError(f"invalid model version {version!r}")
        payload = _heads_bytes(heads)
        manifest = Manifest(
            version=version,
            backbone_id=backbone_id,
            backbone_sha256=backbone_sha256,
            tags=list(heads.tags),
            thresholds={t: float(v) for t, v in zip(heads.tags, heads.thresholds.tolist(), strict=True)},
            metrics={
                f.tag: {
                    "positives": f.positives,
                    "precision": f.precision,
                    "recall": f.recall,
                    "f1": f.f1,
                    "average_precision": f.average_precision,
                    "c": f.c,
                }
                for f in fits
            }
            | dict(carried_metrics or {}),
            training_fingerprint=training_fingerprint,
            created_at=datetime.now(UTC).isoformat(),
            files={HEADS_FILE: _sha256(payload)},
            folders=folders,
            carried_over=dict(carried_over or {}),
        )
        self._store.put_bytes(self._key(version, HEADS_FILE), payload)
        self._store.put_bytes(
            self._key(version, MANIFEST_FILE),
            json.dumps(manifest.to_json(), indent=2).encode(),
            content_type="application/json",
        )
        log.info("saved model %s with %d tags", version, len(heads.tags))
        return manifest

    def manifest(self, version: str) -> Manifest:
        data, _ = self._store.get_bytes(self._key(version, MANIFEST_FILE))
        try:
            return Manifest.from_json(json.loads(data))
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"model {version}: manifest is unreadable ({exc})") from None

    def list(self) -> list[Manifest]:
        versions = sorted({info.key[len(self._prefix) :].split("/", 1)[0] for info in self._store.list(self._prefix)})
        return [self.manifest(v) for v in versions if _VERSION.match(v)]

    def load(self, version: str) -> Model:
        """Load and verify a model; raises ModelError if any file fails its checksum."""
        manifest = self.manifest(version)
        try:
            payload, _ = self._store.get_bytes(self._key(version, HEADS_FILE))
        except NotFound:
            raise ModelError(f"model {version}: {HEADS_FILE} is missing") from None
        expected = manifest.files.get(HEADS_FILE)
        if expected != _sha256(payload):
            raise ModelError(f"model {version}: {HEADS_FILE} fails its sha256 check; refusing to load it")
        arrays = np.load(io.BytesIO(payload), allow_pickle=False)
        heads = Heads(
            tags=tuple(manifest.tags),
            weights=arrays["weights"].astype(np.float32),
            bias=arrays["bias"].astype(np.float32),
            thresholds=arrays["thresholds"].astype(np.float32),
        )
        if heads.weights.shape[1] != len(heads.tags):
            raise ModelError(f"model {version}: weights do not match its {len(heads.tags)} tags")
        return Model(manifest=manifest, heads=heads)

    def _pointer(self) -> dict[str, Any]:
        try:
            data, _ = self._store.get_bytes(self._key(ACTIVE_FILE))
        except NotFound:
            return {"version": None, "history": []}
        pointer: dict[str, Any] = json.loads(data)
        return pointer

    def active_version(self) -> str | None:
        version = self._pointer().get("version")
        return str(version) if version else None

    def load_active(self) -> Model:
        version = self.active_version()
        if version is None:
            raise NotFound("no model is active yet: train one with `smarttags train`")
        return self.load(version)

    def activate(self, version: str) -> Manifest:
        model = self.load(version)  # verifies every checksum before it becomes active
        pointer = self._pointer()
        current = pointer.get("version")
        history = [v for v in pointer.get("history", []) if v != version]
        if current and current != version:
            history.insert(0, current)
        self._write_pointer({"version": version, "history": history[:50]})
        log.info("activated model %s", version)
        return model.manifest

    def rollback(self) -> Manifest:
        """Re-activate the model that was active before the current one."""
        pointer = self._pointer()
        history: list[str] = list(pointer.get("history", []))
        while history:
            previous = history.pop(0)
            try:
                model = self.load(previous)
            except (ModelError, NotFound) as exc:
                log.warning("skipping model %s on rollback: %s", previous, exc)
                continue
            self._write_pointer({"version": previous, "history": history})
            return model.manifest
        raise NotFound("no earlier model to roll back to")

    def _write_pointer(self, pointer: dict[str, Any]) -> None:
        self._store.put_bytes(self._key(ACTIVE_FILE), json.dumps(pointer).encode(), content_type="application/json")
