"""Checks of a training set against the training guidelines, before any model is fitted.

Each check is a pure function over embeddings and labels, so it is tested on small arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DUPLICATE_SIMILARITY = 0.985  # cosine similarity above which two images count as the same picture
OUTLIER_Z = 3.5  # robust z-score (median/MAD) below which an image is far from its tag
IMBALANCE_RATIO = 20.0


@dataclass(frozen=True)
class Findings:
    outliers: dict[str, list[int]]  # tag -> row indices far from the rest of the tag
    duplicates: list[tuple[int, int]]  # near-identical rows
    imbalanced: list[str]  # tags with far fewer images than the largest tag
    always_together: list[tuple[str, str]]  # tags that never appear apart (completeness hint)


def coherence_outliers(
    embeddings: NDArray[np.floating], labels: NDArray[np.floating], tags: Sequence[str]
) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for j, tag in enumerate(tags):
        rows = np.flatnonzero(labels[:, j] > 0.5)
        if rows.size < 5:
            continue
        members = embeddings[rows]
        centroid = members.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        similarity = members @ centroid
        median = float(np.median(similarity))
        spread = 1.4826 * float(np.median(np.abs(similarity - median))) + 1e-6
        far = rows[(median - similarity) / spread > OUTLIER_Z]
        if far.size:
            found[tag] = sorted(int(i) for i in far)
    return found


def near_duplicates(embeddings: NDArray[np.floating], *, block: int = 2048) -> list[tuple[int, int]]:
    """Pairs (i < j) of near-identical images, computed in blocks to bound memory."""
    x = np.asarray(embeddings, dtype=np.float32)
    pairs: list[tuple[int, int]] = []
    for start in range(0, x.shape[0], block):
        sims = x[start : start + block] @ x.T
        rows, cols = np.nonzero(sims > DUPLICATE_SIMILARITY)
        pairs.extend((start + int(r), int(c)) for r, c in zip(rows, cols, strict=True) if start + r < c)
    return pairs


def imbalanced(labels: NDArray[np.floating], tags: Sequence[str]) -> list[str]:
    counts = labels.sum(axis=0)
    if counts.size == 0 or counts.max() == 0:
        return []
    return [tag for tag, c in zip(tags, counts.tolist(), strict=True) if 0 < c * IMBALANCE_RATIO < counts.max()]


def always_together(labels: NDArray[np.floating], tags: Sequence[str], *, min_count: int = 3) -> list[tuple[str, str]]:
    positive = labels > 0.5
    pairs = []
    for a in range(len(tags)):
        for b in range(a + 1, len(tags)):
            if positive[:, a].sum() >= min_count and np.array_equal(positive[:, a], positive[:, b]):
                pairs.append((tags[a], tags[b]))
    return pairs


def check(embeddings: NDArray[np.floating], labels: NDArray[np.floating], tags: Sequence[str]) -> Findings:
    return Findings(
        outliers=coherence_outliers(embeddings, labels, tags),
        duplicates=near_duplicates(embeddings),
        imbalanced=imbalanced(labels, tags),
        always_together=always_together(labels, tags),
    )
