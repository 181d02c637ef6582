"""The model's read side without services: mean AP of a manifest, and predict's dry run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from smarttags.core.heads import Heads
from smarttags.core.model_registry import Manifest, Model, Prediction, predict, score_embedding
from smarttags.errors import CorruptImage, ImageError


def _manifest(metrics: dict[str, dict[str, Any]]) -> Manifest:
    return Manifest("v1", "backbone", "sha", sorted(metrics), {}, metrics, "fp", "2026-12-03T00:00:00Z")


def test_mean_average_precision_over_the_tags_that_have_one() -> None:
    manifest = _manifest({"a": {"average_precision": 0.5}, "b": {"average_precision": 1.0}, "c": {}})
    assert manifest.mean_average_precision == 0.75
    assert _manifest({}).mean_average_precision is None
    assert "mean_average_precision" not in manifest.to_json()  # derived, never stored


class TwoPixelEmbedder:
    """Bytes b"x,y" become the embedding (x, y); anything else is a corrupt image."""

    backbone_id = "two-pixel"
    sha256 = "0"

    def embed_bytes(self, items: Sequence[bytes]) -> list[Any]:
        out: list[Any] = []
        for data in items:
            try:
                out.append(np.array([float(v) for v in data.decode().split(",")], dtype=np.float32))
            except ValueError:
                out.append(CorruptImage("not two numbers"))
        return out


def test_predict_scores_as_the_tagger_does_and_keeps_bad_images_in_place() -> None:
    heads = Heads(
        tags=("left", "right"),
        weights=np.array([[4.0, -4.0], [-4.0, 4.0]], dtype=np.float32),
        bias=np.zeros(2, dtype=np.float32),
        thresholds=np.array([0.5, 0.5], dtype=np.float32),
    )
    model = Model(_manifest({}), heads)
    results = predict(model, TwoPixelEmbedder(), [b"1,0", b"junk", b"0,1"], max_tags=5)  # type: ignore[arg-type]
    assert isinstance(results[1], ImageError)
    first, third = results[0], results[2]
    assert isinstance(first, Prediction) and isinstance(third, Prediction)
    assert [t.tag for t in first.tags] == ["left"] and [t.tag for t in third.tags] == ["right"]
    tags, scores = score_embedding(model, np.array([1.0, 0.0], dtype=np.float32), max_tags=5)
    assert (first.tags, first.scores) == (tags, scores)


def test_a_child_tag_implies_its_parent_at_the_childs_confidence_or_higher() -> None:
    from smarttags.core.model_registry import apply_thresholds

    tags = ["plants:trees", "plants:trees/oak", "plants:trees/oak/old", "plants:flowers", "animals:cats"]
    scores = np.array([0.2, 0.3, 0.9, 0.4, 0.1])
    thresholds = np.array([0.5, 0.5, 0.5, 0.5, 0.5])
    chosen = {t.tag: t.confidence for t in apply_thresholds(tags, scores, thresholds, model_version="m")}
    # The grandchild carries both ancestors; a parent scored higher keeps its own score.
    assert chosen == {"plants:trees/oak/old": 0.9, "plants:trees/oak": 0.9, "plants:trees": 0.9}
    scores = np.array([0.95, 0.3, 0.9, 0.4, 0.1])
    chosen = {t.tag: t.confidence for t in apply_thresholds(tags, scores, thresholds, model_version="m")}
    assert chosen["plants:trees"] == 0.95 and chosen["plants:trees/oak"] == 0.9
    # A removed parent is skipped (never re-added); the next ancestor up still follows the child.
    ranked = apply_thresholds(
        tags, scores * 0 + [0.1, 0.1, 0.8, 0.1, 0.1], thresholds, model_version="m", rejected=["plants:trees/oak"]
    )
    assert [t.tag for t in ranked] == ["plants:trees", "plants:trees/oak/old"]
    # At equal confidence the parent ranks first, so a cut at max_tags never keeps a child without it.
    first = np.array([0.2, 0.3, 0.9, 0.4, 0.1])
    assert [t.tag for t in apply_thresholds(tags, first, thresholds, model_version="m", max_tags=1)] == ["plants:trees"]
