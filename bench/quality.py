"""Tagging quality on public-domain clip art: our trainer against a reference linear probe.

Data: every picture of Debian's ``openclipart-png``; labels are its folders and their parents
(``food/fruit/apple.png`` is ``food`` and ``food/fruit``), several where a picture is linked into
several folders. Tags with at least 40 pictures are kept. Embeddings come from the configured backbone
(cached under data_dir/bench/). Over 5 fixed random 60/40 splits, with all training positives and with at
most 30 per tag, it prints macro average precision and macro F1 of

  ours   smarttags.core.heads.train_heads (thresholds chosen by cross-validation)
  probe  scikit-learn LogisticRegression(class_weight="balanced"), C by 3-fold CV, threshold 0.5

on the same embeddings and splits, and our F1 against the best F1 any threshold reaches on the test split.
It also sets the cross-validated macro AP that our training reports (folds with near-duplicates grouped,
as ``smarttags train`` makes them) against the macro AP measured on the held-out split, and says for each
goal (AP >= probe + 0.03, F1 >= 0.95 x oracle, CV within 0.01 of held-out) whether it is met.
Run: .venv/bin/python bench/quality.py [--splits 5] [--max-images N]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from smarttags import settings as settings_mod
from smarttags.adapters.embedder import load_embedder
from smarttags.core.guidelines import near_duplicates
from smarttags.core.heads import average_precision, choose_threshold, train_heads
from smarttags.core.training import duplicate_groups
from smarttags.errors import ImageError

ROOT = Path("/usr/share/openclipart/png")
MIN_PER_TAG = 40
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def labelled_files() -> tuple[list[Path], list[set[str]]]:
    labels: dict[Path, set[str]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.png")):
        folder = path.parent.relative_to(ROOT)
        if folder.parts and folder.parts[0] == "unsorted":
            continue
        target = path.resolve()
        for depth in range(1, len(folder.parts) + 1):
            labels[target].add("/".join(folder.parts[:depth]))
    files = sorted(labels)
    return files, [labels[f] for f in files]


def embeddings(files: list[Path], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    settings = settings_mod.load()
    embedder = load_embedder(settings)
    key = hashlib.sha256((embedder.backbone_id + "\n".join(map(str, files))).encode()).hexdigest()[:16]
    path = cache / f"openclipart-{key}.npz"
    if path.is_file():
        data = np.load(path)
        return data["x"], data["ok"]
    started = time.perf_counter()
    x = np.zeros((len(files), embedder.dim), dtype=np.float32)
    ok = np.zeros(len(files), dtype=bool)
    for i, result in enumerate(embedder.iter_embed(files, lambda p: p.read_bytes())):
        if not isinstance(result, ImageError):
            x[i], ok[i] = result, True
        if i % 500 == 0:
            print(f"  embedded {i}/{len(files)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, ok=ok)
    return x, ok


def cap_positives(y: np.ndarray, rows: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """A subset of training rows with at most ``cap`` positives per tag (rows kept whole)."""
    counts = np.zeros(y.shape[1])
    keep = []
    for row in rng.permutation(rows):
        if np.all(counts + y[row] <= cap):
            keep.append(row)
            counts += y[row]
    return np.array(sorted(keep))


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegressionCV

    # scikit-learn 1.9 announces changes of defaults on every fit; the defaults used here are stated.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")

    scores = np.zeros((x_test.shape[0], y_train.shape[1]))
    for j in range(y_train.shape[1]):
        # Default scoring (accuracy) picks C, as a plain "C by 3-fold CV" probe does.
        model = LogisticRegressionCV(Cs=list(C_GRID), cv=3, class_weight="balanced", max_iter=2000, n_jobs=2)
        model.fit(x_train, y_train[:, j])
        scores[:, j] = model.predict_proba(x_test)[:, 1]
    return scores


def f1_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    tp = float((predicted & (y > 0.5)).sum())
    denominator = float(predicted.sum() + (y > 0.5).sum())
    return 2 * tp / denominator if denominator else 0.0


def evaluate(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> tuple[float, float, float]:
    tags = [j for j in range(y.shape[1]) if y[:, j].sum() > 0]
    ap = np.mean([average_precision(y[:, j], scores[:, j]) for j in tags])
    f1 = np.mean([f1_at(y[:, j], scores[:, j], thresholds[j]) for j in tags])
    best = np.mean([choose_threshold(y[:, j], scores[:, j])[3] for j in tags])
    return float(ap), float(f1), float(best)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--max-images", type=int, default=0, help="use a random subset (quick runs)")
    args = parser.parse_args()
    files, label_sets = labelled_files()
    if args.max_images:
        pick = np.random.default_rng(0).permutation(len(files))[: args.max_images]
        files, label_sets = [files[i] for i in sorted(pick)], [label_sets[i] for i in sorted(pick)]
    x, ok = embeddings(files, settings_mod.load().data_dir / "bench")
    counts: dict[str, int] = defaultdict(int)
    for labels, good in zip(label_sets, ok, strict=True):
        for label in labels if good else ():
            counts[label] += 1
    tags = sorted(t for t, c in counts.items() if c >= MIN_PER_TAG)
    rows = np.flatnonzero(ok)
    y = np.array([[1.0 if t in label_sets[i] else 0.0 for t in tags] for i in rows])
    x = x[rows]
    print(f"{len(rows)} pictures, {len(tags)} tags with >= {MIN_PER_TAG} pictures, {x.shape[1]}-d embeddings")
    results: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    cross_validated: dict[str, list[float]] = defaultdict(list)
    timings: dict[str, float] = defaultdict(float)
    for split in range(args.splits):
        rng = np.random.default_rng(1000 + split)
        order = rng.permutation(len(rows))
        train, test = order[: int(0.6 * len(rows))], order[int(0.6 * len(rows)) :]
        for regime, train_rows in (("all", train), ("30", cap_positives(y, train, 30, rng))):
            usable = [j for j in range(len(tags)) if 5 <= y[train_rows, j].sum() < len(train_rows)]
            xt, yt = x[train_rows], y[train_rows][:, usable]
            started = time.perf_counter()
            groups = duplicate_groups([str(files[rows[i]]) for i in train_rows], near_duplicates(xt))
            heads, fits = train_heads(xt, yt, [tags[j] for j in usable], groups=groups)
            timings[f"ours-{regime}"] += time.perf_counter() - started
            ours = evaluate(y[test][:, usable], heads.scores(x[test]), heads.thresholds)
            cross_validated[regime].append(float(np.mean([f.average_precision for f in fits])))
            started = time.perf_counter()
            probe_scores = probe(xt, yt, x[test])
            timings[f"probe-{regime}"] += time.perf_counter() - started
            reference = evaluate(y[test][:, usable], probe_scores, np.full(len(usable), 0.5))
            results[f"ours-{regime}"].append(ours)
            results[f"probe-{regime}"].append(reference)
            print(
                f"split {split} {regime:>3}: ours AP {ours[0]:.4f} F1 {ours[1]:.4f} (best {ours[2]:.4f})"
                f" | probe AP {reference[0]:.4f} F1 {reference[1]:.4f}"
                f" | ours CV AP {cross_validated[regime][-1]:.4f}"
            )
    summary = []
    for regime in ("all", "30"):
        ours = np.mean(results[f"ours-{regime}"], axis=0)
        ref = np.mean(results[f"probe-{regime}"], axis=0)
        print(
            f"{regime:>3} positives: ours macro AP {ours[0]:.4f}, probe {ref[0]:.4f}; "
            f"ours macro F1 {ours[1]:.4f} vs best-threshold F1 {ours[2]:.4f}; probe F1 {ref[1]:.4f}; "
            f"fit time ours {timings[f'ours-{regime}']:.0f} s, probe {timings[f'probe-{regime}']:.0f} s"
        )
        summary.append(f"AP ratio ({regime}) {ours[0] / ref[0]:.3f}, F1/best ({regime}) {ours[1] / ours[2]:.3f}")
        cv = float(np.mean(cross_validated[regime]))
        goals = [
            ("macro AP - probe", f"{ours[0] - ref[0]:+.4f}", ours[0] - ref[0] >= 0.03, ">= +0.03"),
            ("macro F1 / oracle F1", f"{ours[1] / ours[2]:.3f}", ours[1] / ours[2] >= 0.95, ">= 0.95"),
            ("CV macro AP - held-out", f"{cv - ours[0]:+.4f}", abs(cv - ours[0]) <= 0.01, "within 0.01"),
        ]
        for name, value, met, goal in goals:
            print(f"{regime:>3} positives: {name} {value} (goal {goal}: {'met' if met else 'MISSED'})")
    print("ratios: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
