"""The benches' model: random heads over the real backbone, every threshold 0.5, saved and activated.
Tagging costs the same whatever the weights, so a bench needs no training. Imported by the benches
that tag (upload.py, cost.py, backfill.py) as ``from bench_model import activate_model`` (a bench runs
as ``python bench/NAME.py``, so this directory is on the path)."""

from __future__ import annotations

from typing import Any

import numpy as np
from smarttags.core.heads import Heads, TagFit


def activate_model(services: Any, embedder: Any, *, tags: int = 20, seed: int = 0, scale: float = 3.0) -> str:
    """Save and activate a model of ``tags`` heads (``bench:t0``...) for ``embedder``'s backbone; returns
    its version. Another ``seed`` makes another model over the same backbone (a model change)."""
    rng = np.random.default_rng(seed)
    names = tuple(f"bench:t{i}" for i in range(tags))
    heads = Heads(
        names,
        rng.normal(size=(embedder.dim, tags)).astype(np.float32) * scale,
        np.zeros(tags, np.float32),
        np.full(tags, 0.5, np.float32),
    )
    manifest = services.models.save(
        heads,
        [TagFit(t, 30, 1, 0.5, 1, 1, 1, 1) for t in names],
        backbone_id=embedder.backbone_id,
        backbone_sha256=embedder.sha256,
        training_fingerprint=f"bench-{seed}",
        folders=[],
    )
    services.models.activate(manifest.version)
    return str(manifest.version)
