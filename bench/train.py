"""Training at scale: the fit of many tags on many stored embeddings, its time and its peak memory.

Runs what ``Trainer`` runs once the embeddings are read (``guidelines.check`` and ``train_heads`` under
threadpoolctl's limit of ``training.blas_threads``) on synthetic embeddings: one cluster direction per tag,
every asset carrying one to three tags, unit vectors of the backbone's size. Prints the seconds of each
phase, the peak RSS of the process (``resource.getrusage``), and the whole fit over one plain fit of every
tag on all rows measured in the same run (the cross-validation multiplies that baseline: C is chosen on a
sample of rows and tags, then the full set is cross-validated at that C, each fold warm-started).
Run: .venv/bin/python bench/train.py [--assets 50000] [--tags 200] [--dim 1280] [--folds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from smarttags.core import guidelines
from smarttags.core.heads import _Whitened, balanced_weights, fit_logistic, train_heads
from threadpoolctl import threadpool_limits


def synthetic(assets: int, tags: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(tags, dim)).astype(np.float32)
    labels = np.zeros((assets, tags), np.float32)
    for row in range(assets):
        labels[row, rng.choice(tags, size=int(rng.integers(1, 4)), replace=False)] = 1.0
    x = labels @ centres + rng.normal(size=(assets, dim)).astype(np.float32) * 4.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=50_000)
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--dim", type=int, default=1280, help="EfficientNet-Lite0's embedding size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="training.blas_threads")
    args = parser.parse_args()
    started = time.perf_counter()
    x, y = synthetic(args.assets, args.tags, args.dim)
    made = time.perf_counter() - started
    print(
        f"{args.assets} embeddings x {args.dim} dims, {args.tags} tags: made in {made:.1f} s"
        f", RSS {peak_rss_mib():.0f} MiB"
    )
    tags = [f"bench:t{i}" for i in range(args.tags)]
    with threadpool_limits(limits=args.threads):
        started = time.perf_counter()
        white = _Whitened.of(x.astype(np.float64))
        penalty = np.broadcast_to((1.0 / white.sigma**2)[:, None], (white.sigma.size, args.tags))
        fit_logistic(white.z, y.astype(np.float64), balanced_weights(y.astype(np.float64)), penalty)
        baseline = time.perf_counter() - started
        print(f"baseline, one fit of every tag on all rows (C=1): {baseline:.1f} s")
        started = time.perf_counter()
        findings = guidelines.check(x, y, tags)
        checked = time.perf_counter() - started
        print(f"guidelines.check (near-duplicates, outliers): {checked:.1f} s, {len(findings.duplicates)} pairs")
        started = time.perf_counter()
        _, fits = train_heads(x, y, tags, folds=args.folds)
        fitted = time.perf_counter() - started
    mean_ap = float(np.mean([f.average_precision for f in fits]))
    print(
        f"train_heads (C on a sample of rows and tags, final fit, {args.folds} folds at that C): {fitted:.1f} s,"
        f" mean CV AP {mean_ap:.3f}, C {fits[0].c}"
    )
    print(f"total fit {checked + fitted:.1f} s = {(checked + fitted) / baseline:.1f} x the baseline fit")
    print(f"peak RSS {peak_rss_mib():.0f} MiB ({peak_rss_mib() / 1024:.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
