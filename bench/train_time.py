"""Training time after embedding: N pictures x T tags (synthetic embeddings), as ``smarttags train`` fits them.

What is timed is what training does once the embeddings are there: the guideline check (near-duplicate
search over all pairs) and ``train_heads`` (above 3,000 rows: C chosen on a sample of rows and tags, one
final fit, then k folds at that C with near-duplicates grouped), under the threadpoolctl limit of the
``training.blas_threads`` setting. The same-run baseline is one plain fit of all heads at one C (no folds,
no grid); the ratio says what cross-validation costs.
Peak memory is tracemalloc's (numpy's arrays included) above what the embeddings take, and the
process's peak resident size.

Embeddings: T tag directions in the embedding space; each picture has 0-3 tags (one in ten none), is the
sum of its tags' directions plus noise, and is L2-normalised, as the backbone's embeddings are.
Run: .venv/bin/python bench/train_time.py [--pictures 10000] [--tags 60] [--dim 1280]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from smarttags import settings as settings_mod
from smarttags.core import guidelines
from smarttags.core.heads import balanced_weights, fit_logistic, train_heads
from smarttags.core.training import duplicate_groups
from threadpoolctl import threadpool_limits


def synthetic(pictures: int, tags: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(tags, dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    y = np.zeros((pictures, tags), dtype=np.float32)
    counts = rng.choice(4, size=pictures, p=[0.1, 0.5, 0.3, 0.1])
    for i, count in enumerate(counts):
        y[i, rng.choice(tags, size=count, replace=False)] = 1.0
    x = y @ directions + rng.normal(scale=0.6 / np.sqrt(dim) * 8, size=(pictures, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def whitened(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitened rows (z.T @ z / n = I) and each component's standard deviation, as fit_logistic wants."""
    centred = x.astype(np.float64) - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    keep = s > 1e-6 * s[0]
    return u[:, keep] * np.sqrt(len(x)), s[keep] / np.sqrt(len(x))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=60)
    parser.add_argument("--dim", type=int, default=1280, help="the embedding size (EfficientNet-Lite0: 1280)")
    args = parser.parse_args()
    training = settings_mod.load().training
    x, y = synthetic(args.pictures, args.tags, args.dim)
    names = [f"bench:t{j}" for j in range(args.tags)]
    print(
        f"{args.pictures} pictures x {args.tags} tags, {args.dim}-d, {int(y.sum(axis=0).min())}-"
        f"{int(y.sum(axis=0).max())} positives per tag, {training.cv_folds} folds, blas_threads {training.blas_threads}"
    )
    with threadpool_limits(limits=training.blas_threads):
        started = time.perf_counter()
        z, sigma = whitened(x)
        penalty = np.broadcast_to((1.0 / sigma**2)[:, None], (sigma.size, args.tags))  # C = 1
        fit_logistic(z, y.astype(np.float64), balanced_weights(y.astype(np.float64)), penalty)
        baseline = time.perf_counter() - started
        del z, penalty

        tracemalloc.start()
        started = time.perf_counter()
        findings = guidelines.check(x, y, names)
        checked = time.perf_counter() - started
        groups = duplicate_groups([str(i) for i in range(args.pictures)], findings.duplicates)
        _, fits = train_heads(
            x, y, names, folds=training.cv_folds, seed=training.seed, groups=groups, policy=training.threshold_policy
        )
        total = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"baseline, whitening and one plain fit of all heads: {baseline:.1f} s")
    print(
        f"training (guideline check {checked:.1f} s + train_heads {total - checked:.1f} s): {total:.1f} s, "
        f"ratio {total / baseline:.1f}x the baseline; macro CV AP {np.mean([f.average_precision for f in fits]):.3f}"
    )
    print(
        f"peak memory: {peak / 2**20:.0f} MiB traced while training ({x.nbytes / 2**20:.0f} MiB of embeddings); "
        f"process peak RSS {rss:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
