"""Per-tag linear heads on frozen embeddings: fit, choose regularisation and thresholds by cross-validation.

Pure numpy. All tags are fitted at once as one matrix problem: the features are centred and whitened by a
thin SVD, so every tag's L2-regularised, class-balanced logistic regression is well conditioned and a
preconditioned gradient method with Barzilai-Borwein steps converges in a few dozen matrix products.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
DEFAULT_C_GRID: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass(frozen=True)
class TagFit:
    """What cross-validation learned about one tag."""

    tag: str
    positives: int
    c: float
    threshold: float
    precision: float
    recall: float
    f1: float
    average_precision: float


@dataclass(frozen=True)
class Heads:
    """Linear heads: ``scores = sigmoid(X @ weights + bias)``, one column per tag."""

    tags: tuple[str, ...]
    weights: NDArray[np.float32]  # (dim, tags)
    bias: NDArray[np.float32]  # (tags,)
    thresholds: NDArray[np.float32]  # (tags,)

    def scores(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        logits = np.asarray(embeddings, dtype=np.float32) @ self.weights + self.bias
        return _sigmoid(logits).astype(np.float32)


def _sigmoid(x: NDArray[np.floating]) -> NDArray[np.floating]:
    out: NDArray[np.floating] = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


def balanced_weights(labels: FloatArray, known: FloatArray | None = None) -> FloatArray:
    """Per-sample, per-tag weights n / (2 * class count), as scikit-learn's class_weight="balanced";
    counted over the rows whose label is ``known`` for the tag (the others weigh 0)."""
    known = np.ones_like(labels) if known is None else known
    n = known.sum(axis=0)
    pos = (labels * known).sum(axis=0)
    neg = n - pos
    w_pos = np.where(pos > 0, n / (2.0 * np.maximum(pos, 1)), 0.0)
    w_neg = np.where(neg > 0, n / (2.0 * np.maximum(neg, 1)), 0.0)
    out: FloatArray = np.where(labels > 0.5, w_pos, w_neg) * known
    return out


@dataclass(frozen=True)
class _Whitened:
    mean: FloatArray  # (d,)
    basis: FloatArray  # (d, r): V
    sigma: FloatArray  # (r,)
    z: NDArray[np.float32]  # (n, r): U * sqrt(n), so z.T @ z / n = I

    @classmethod
    def of(cls, x: FloatArray) -> _Whitened:
        mean = x.mean(axis=0)
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        keep = s > s[0] * 1e-6 if s.size else s > 0
        n = x.shape[0]
        # z in float32: fit_logistic multiplies in float32 anyway, and it is the largest array held.
        return cls(mean=mean, basis=vt[keep].T, sigma=s[keep], z=(u[:, keep] * np.sqrt(n)).astype(np.float32))

    def project(self, x: FloatArray) -> FloatArray:
        """New rows into the whitened coordinates of the training rows."""
        out: FloatArray = (x - self.mean) @ self.basis / self.sigma * np.sqrt(self.z.shape[0])
        return out

    def from_weights(self, w: FloatArray, bias: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Raw weights and bias -> coefficients in these whitened coordinates (inverse of to_weights)."""
        a = (self.basis.T @ w) * (self.sigma / np.sqrt(self.z.shape[0]))[:, None]
        return a, bias + self.mean @ w

    def to_weights(self, a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Coefficients in whitened space -> weights and bias on raw (uncentred) embeddings."""
        w = self.basis @ (a / self.sigma[:, None]) * np.sqrt(self.z.shape[0])
        return w, b - self.mean @ w


def fit_logistic(
    z: NDArray[np.floating],
    labels: FloatArray,
    sample_weights: FloatArray,
    penalty: FloatArray,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: tuple[FloatArray, FloatArray] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Minimise, for every column t at once,
    mean_i(s_it * logloss(y_it, z_i . a_t + b_t)) + 1/2 * sum_k penalty_kt * a_kt^2.

    ``z`` must be whitened (z.T @ z / n = I); then the diagonal preconditioner below is close to the
    inverse Hessian and Barzilai-Borwein steps converge quickly.
    """
    n, r = z.shape
    t = labels.shape[1]
    # The two matrix products per step are all the cost: float32 runs them 2.5x faster (measured on
    # one core) and whitened coordinates need no more precision; the iterates stay float64.
    z32 = z if z.dtype == np.float32 else z.astype(np.float32)
    a, b = (init[0].copy(), init[1].copy()) if init is not None else (np.zeros((r, t)), np.zeros(t))
    curvature = 0.25 * sample_weights.mean(axis=0)  # logistic Hessian <= 1/4 per sample
    precond_a = 1.0 / (curvature[None, :] + penalty)
    precond_b = 1.0 / np.maximum(curvature, 1e-12)

    def gradient(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        logits = (z32 @ a.astype(np.float32)).astype(np.float64) + b
        residual = sample_weights * (_sigmoid(logits) - labels) / n
        return (z32.T @ residual.astype(np.float32)).astype(np.float64) + penalty * a, residual.sum(axis=0)

    ga, gb = gradient(a, b)
    step = np.ones(t)
    for iteration in range(max_iter):
        da = -step * precond_a * ga
        db = -step * precond_b * gb
        a_new, b_new = a + da, b + db
        ga_new, gb_new = gradient(a_new, b_new)
        # Barzilai-Borwein step in the preconditioned metric, per column, kept in a safe range.
        sy = (da * (ga_new - ga)).sum(axis=0) + db * (gb_new - gb)
        ss = (da * da / precond_a).sum(axis=0) + db * db / precond_b
        step = np.clip(np.where(sy > 0, ss / np.maximum(sy, 1e-300), 1.0), 1e-3, 1e3)
        a, b, ga, gb = a_new, b_new, ga_new, gb_new
        size = np.sqrt((ga * ga * precond_a).sum(axis=0) + gb * gb * precond_b)
        if float(size.max()) < tol:
            log.debug("logistic fit converged after %d iterations", iteration + 1)
            break
    return a, b


def average_precision(
    labels: NDArray[np.floating], scores: NDArray[np.floating], weights: NDArray[np.floating] | None = None
) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's definition); with
    ``weights``, each row counts that much (the importance weights of a shifted target)."""
    w = np.ones_like(labels, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    positives = float((labels * w).sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order]
    s = scores[order]
    wo = w[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tp = np.cumsum(y * wo)[distinct]
    fp = np.cumsum((1 - y) * wo)[distinct]
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def choose_threshold(
    labels: NDArray[np.floating],
    scores: NDArray[np.floating],
    policy: Literal["f1", "precision"] = "f1",
    target_precision: float = 0.9,
    weights: NDArray[np.floating] | None = None,
) -> tuple[float, float, float, float]:
    """The threshold that maximises F1 (or the lowest reaching the target precision), each row
    counting its weight (1 without ``weights``).

    Returns (threshold, precision, recall, f1) at that threshold.
    """
    w = np.ones_like(labels, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    positives = float((labels * w).sum())
    if positives == 0:
        return 1.0, 0.0, 0.0, 0.0
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order]
    s = scores[order]
    wo = w[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tp = np.cumsum(y * wo)[distinct]
    predicted = np.cumsum(wo)[distinct]
    precision = tp / np.maximum(predicted, 1e-300)
    recall = tp / positives
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if policy == "precision":
        ok = np.flatnonzero(precision >= target_precision)
        best = int(ok[-1]) if ok.size else int(np.argmax(precision))
    else:
        best = int(np.argmax(f1))
    cut = s[distinct[best]]
    # Halfway to the next lower score, so a score equal to the cut is accepted.
    below = s[distinct[best] + 1] if distinct[best] + 1 < s.size else cut - 1e-3
    threshold = float((cut + below) / 2.0)
    return threshold, float(precision[best]), float(recall[best]), float(f1[best])


def _rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _folds(labels: FloatArray, k: int, seed: int, groups: Sequence[str] | None = None) -> list[NDArray[np.intp]]:
    """Fold index lists that spread each tag's positives evenly (greedy multi-label stratification).

    Rows with the same group key (one picture's near-duplicates) go to the same fold, and the order in
    which groups are placed comes from a hash of the key, so the folds depend on what the pictures are,
    not on the order the index returned them in."""
    n = labels.shape[0]
    keys = list(groups) if groups is not None else [str(i) for i in range(n)]
    if len(keys) != n:
        raise ValueError("one group key per row")
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    names = sorted(members, key=lambda g: _rank(g, seed))
    group_labels = np.array([labels[members[g]].max(axis=0) for g in names]).reshape(len(names), labels.shape[1])
    # Rarest tags first, so their few positives land in different folds.
    rarity = group_labels.sum(axis=0)
    rare = (
        np.where(group_labels > 0.5, rarity[None, :], np.inf).min(axis=1) if labels.shape[1] else np.zeros(len(names))
    )
    order = np.argsort(rare, kind="stable")
    assignment = np.empty(n, dtype=np.intp)
    counts = np.zeros((k, labels.shape[1]))
    sizes = np.zeros(k)
    for g in order:
        rows = members[names[g]]
        row = group_labels[g]
        load = counts @ row if row.any() else sizes
        fold = int(np.lexsort((sizes, load))[0])
        assignment[rows] = fold
        counts[fold] += labels[rows].sum(axis=0)
        sizes[fold] += len(rows)
    return [np.flatnonzero(assignment == f) for f in range(k)]


def out_of_fold_logits(
    x: FloatArray,
    y: FloatArray,
    weighed: FloatArray,
    fold_list: Sequence[NDArray[np.intp]],
    c_grid: Sequence[float],
    *,
    init: tuple[FloatArray, FloatArray] | None = None,
) -> FloatArray:
    """Each row's logit from the model fitted without its fold, for every C of the grid (ascending):
    shape (C values, rows, tags). ``weighed`` is the known mask times the row weights. ``init`` (raw
    weights and bias, e.g. the fit on all rows) starts each fold's first fit: a fold's model is
    close to it, so it converges in fewer steps."""
    n, t = y.shape
    oof = np.zeros((len(c_grid), n, t))
    for held_out in fold_list:
        train = np.setdiff1d(np.arange(n), held_out)
        white = _Whitened.of(x[train])
        weights = balanced_weights(y[train], weighed[train])
        z_test = white.project(x[held_out])
        previous = white.from_weights(*init) if init is not None else None
        for ci, c in enumerate(sorted(c_grid)):
            penalty = np.broadcast_to(1.0 / (c * white.sigma**2)[:, None], (white.sigma.size, t))
            # Along the path of weaker regularisation each solution starts from the previous one.
            previous = fit_logistic(white.z, y[train], weights, penalty, init=previous)
            oof[ci, held_out] = z_test @ previous[0] + previous[1]
    return oof


def shift_weights(
    x: NDArray[np.floating], target: NDArray[np.floating], *, c: float = 0.1, clip: float = 20.0
) -> FloatArray:
    """Importance weights p_target(x) / p_train(x) of the training rows ``x``, for unlabelled rows
    ``target`` drawn as the pictures to be tagged are (covariate shift, label shift included).

    A class-balanced, strongly regularised logistic classifier tells target rows from training rows;
    with balanced classes its odds estimate the density ratio. Weights are clipped to [1/clip, clip]
    (a few rows must not carry the estimate) and scaled to mean 1."""
    xs = np.asarray(x, dtype=np.float64)
    xt = np.asarray(target, dtype=np.float64)
    both = np.concatenate([xs, xt])
    domain = np.r_[np.zeros(len(xs)), np.ones(len(xt))][:, None]
    white = _Whitened.of(both)
    penalty = (1.0 / (c * white.sigma**2))[:, None]
    a, b = fit_logistic(white.z, domain, balanced_weights(domain), penalty)
    odds = np.exp(np.clip(white.z[: len(xs)] @ a + b, -np.log(clip), np.log(clip)))[:, 0]
    out: FloatArray = odds / odds.mean()
    return out


def _platt(logits: FloatArray, labels: FloatArray) -> tuple[float, float]:
    """(slope, intercept) of the 1-d logistic fit labels ~ logits (Newton; a tiny ridge keeps it finite)."""
    beta = np.array([1.0, 0.0])
    design = np.c_[logits, np.ones_like(logits)]
    for _ in range(50):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - labels) + 1e-3 * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(beta[0]), float(beta[1])


def prior_shift_weights(y: FloatArray, oof: FloatArray, library: FloatArray, mask: FloatArray) -> FloatArray:
    """Per row and tag, the weight that moves each tag's training prevalence to the library's
    (rows x tags): positives pi'/pi, negatives (1 - pi')/(1 - pi).

    pi' is estimated from the unlabelled library by EM on calibrated posteriors (Saerens, Latinne and
    Decaestecker 2002): the out-of-fold logits are calibrated to the training prevalence (Platt), the
    library's posteriors re-weighted to the current pi' until it no longer moves."""
    n, t = y.shape
    out = np.ones((n, t))
    for j in range(t):
        r = mask[:, j] > 0.5
        prior = float(y[r, j].mean())
        if not 0 < prior < 1:
            continue
        slope, intercept = _platt(oof[r, j], y[r, j])
        p = _sigmoid(slope * library[:, j] + intercept)
        new = prior
        for _ in range(200):
            up, down = new / prior, (1 - new) / (1 - prior)
            posterior = up * p / (up * p + down * (1 - p))
            moved = float(np.clip(posterior.mean(), 1e-4, 1 - 1e-4))
            if abs(moved - new) < 1e-6:
                new = moved
                break
            new = moved
        out[:, j] = np.where(y[:, j] > 0.5, new / prior, (1 - new) / (1 - prior))
    return out


def _evaluate(
    y: FloatArray,
    oof: FloatArray,
    rows: list[NDArray[np.intp]],
    weights: FloatArray,  # (rows, tags)
    fold_list: Sequence[NDArray[np.intp]],
    policy: Literal["f1", "precision"],
    target_precision: float,
) -> tuple[int, list[tuple[float, float, float, float]]]:
    """The C to keep (best mean out-of-fold AP over all rows) and, per tag, figures free of that
    choice and of the threshold's: each fold is scored at the C and with the threshold chosen on
    the other folds' out-of-fold predictions, so no row helps choose what it is judged by.

    Returns (index of the kept C, [(precision, recall, f1, average precision)] per tag)."""
    n, t = y.shape
    c_count = oof.shape[0]

    def mean_ap(keep: NDArray[np.bool_]) -> NDArray[np.float64]:
        aps = np.full((t, c_count), np.nan)
        for j in range(t):
            r = rows[j][keep[rows[j]]]
            if y[r, j].sum() > 0:
                aps[j] = [average_precision(y[r, j], oof[ci, r, j], weights[r, j]) for ci in range(c_count)]
        with np.errstate(all="ignore"):
            means = np.nanmean(aps, axis=0) if t else np.zeros(c_count)
        return np.nan_to_num(means, nan=-1.0)

    best = int(np.argmax(mean_ap(np.ones(n, dtype=bool))))
    honest = np.zeros((n, t))
    predicted = np.zeros((n, t), dtype=bool)
    for held_out in fold_list:
        others = np.ones(n, dtype=bool)
        others[held_out] = False
        chosen = int(np.argmax(mean_ap(others)))
        honest[held_out] = oof[chosen, held_out]
        for j in range(t):
            r = rows[j][others[rows[j]]]
            cut, *_ = choose_threshold(y[r, j], oof[chosen, r, j], policy, target_precision, weights[r, j])
            predicted[held_out, j] = oof[chosen, held_out, j] >= cut
    out: list[tuple[float, float, float, float]] = []
    for j in range(t):
        r = rows[j]
        w, truth, guess = weights[r, j], y[r, j] > 0.5, predicted[r, j]
        tp, fp, fn = float(w[truth & guess].sum()), float(w[~truth & guess].sum()), float(w[truth & ~guess].sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        out.append((precision, recall, f1, average_precision(y[r, j], honest[r, j], w)))
    return best, out


def _sample(keys: Sequence[str], size: int, seed: int) -> NDArray[np.intp]:
    """``size`` rows or a little more, whole groups, picked by a hash of the group key (deterministic)."""
    order = sorted(range(len(keys)), key=lambda i: (_rank(keys[i], seed + 1), i))
    picked: list[int] = []
    last = None
    for i in order:
        if len(picked) >= size and keys[i] != last:
            break
        picked.append(i)
        last = keys[i]
    return np.array(sorted(picked), dtype=np.intp)


def train_heads(
    embeddings: NDArray[np.floating],
    labels: NDArray[np.floating],
    tags: list[str] | tuple[str, ...],
    *,
    policy: Literal["f1", "precision"] = "f1",
    target_precision: float = 0.9,
    folds: int = 5,
    seed: int = 0,
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    known: NDArray[np.floating] | None = None,
    groups: Sequence[str] | None = None,
    sample_weight: NDArray[np.floating] | None = None,
    target: NDArray[np.floating] | None = None,
    shift: Literal["prior", "density"] = "prior",
    select_rows: int = 3000,
    select_tags: int = 32,
) -> tuple[Heads, list[TagFit]]:
    """Fit one head per tag. One regularisation strength C for all tags, the one whose out-of-fold
    predictions reach the best mean average precision (per-tag choices overfit the few positives of
    small tags: on the clip-art benchmark a shared C gave higher macro AP with 30 positives per tag and
    no loss with all of them); each tag's threshold comes from its own out-of-fold predictions.

    The figures reported (``TagFit``) are free of those choices: each fold is judged at the C and the
    threshold chosen without it (``_evaluate``). With more than ``select_rows`` rows, C is chosen on a
    sample of that many (whole near-duplicate groups) and the full set is cross-validated at that C
    only, each fold starting from the fit on all rows: the cost is about three fits, not 36.

    ``target``: unlabelled embeddings drawn as the pictures to be tagged are (the library), when the
    training set is drawn differently (a few hand-picked examples per tag). The figures and the
    thresholds are then weighed so they hold for the target, not the training set: by each tag's
    prevalence in the library (``prior_shift_weights``, ``shift="prior"``) or by a density ratio of
    the embeddings (``shift_weights``, ``shift="density"``).

    ``known`` (rows x tags, 1 or 0) says which labels are known: a picture outside the training folders
    whose smart tag a moderator removed is a negative for that tag only. ``groups`` gives each row a key
    (near-duplicates share one) that decides its cross-validation fold. ``sample_weight`` (rows) weighs
    each row in the fit and in the positives counted (a video's frames: 1/n each, one picture together);
    thresholds are chosen on every row's out-of-fold score."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n, t = y.shape
    mask = np.ones_like(y) if known is None else np.asarray(known, dtype=np.float64)
    row_weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    weighed = mask * row_weight[:, None]  # the class balance counts weighted rows
    if n != x.shape[0] or t != len(tags) or mask.shape != y.shape or row_weight.shape != (n,):
        raise ValueError("embeddings, labels and tags disagree in size")
    keys = list(groups) if groups is not None else [str(i) for i in range(n)]
    grid = sorted(c_grid)

    def folds_of(rows: NDArray[np.intp]) -> list[NDArray[np.intp]]:
        yk = (y * mask)[rows]
        k = max(2, min(folds, int(yk.sum(axis=0).min()) if t else folds, len(rows)))
        return _folds(yk, k, seed, [keys[i] for i in rows])

    tag_rows = [np.flatnonzero(mask[:, j] > 0.5) for j in range(t)]
    fold_list = folds_of(np.arange(n))
    white = _Whitened.of(x)
    plain = np.ones((n, t))

    def final_fit(c: float) -> tuple[FloatArray, FloatArray]:
        penalty = np.broadcast_to((1.0 / (c * white.sigma**2))[:, None], (white.sigma.size, t))
        return white.to_weights(*fit_logistic(white.z, y, balanced_weights(y, weighed), penalty))

    if n > select_rows:
        # C from a sample's full grid; the whole set cross-validated at that C only.
        # and on at most ``select_tags`` tags (by a hash of their names): C is shared, its choice
        # needs many rows and tags, not every one.
        part = _sample(keys, select_rows, seed)
        ranked = sorted(range(t), key=lambda j: _rank(tags[j], seed))[:select_tags]
        some = np.array([j for j in ranked if 0 < (y[part, j] * mask[part, j]).sum() < len(part)] or ranked)
        ys, ms, ws = y[part][:, some], mask[part][:, some], weighed[part][:, some]
        part_rows = [np.flatnonzero(ms[:, j] > 0.5) for j in range(len(some))]
        part_folds = _folds(ys * ms, folds, seed, [keys[i] for i in part])
        part_oof = out_of_fold_logits(x[part], ys, ws, part_folds, grid)
        chosen, _ = _evaluate(ys, part_oof, part_rows, np.ones_like(ys), part_folds, policy, target_precision)
        c_kept = grid[chosen]
        w, bias = final_fit(c_kept)
        oof = out_of_fold_logits(x, y, weighed, fold_list, [c_kept], init=(w, bias))
    else:
        oof = out_of_fold_logits(x, y, weighed, fold_list, grid)
        chosen, _ = _evaluate(y, oof, tag_rows, plain, fold_list, policy, target_precision)
        c_kept = grid[chosen]
        w, bias = final_fit(c_kept)
    best_oof = oof[chosen] if oof.shape[0] > 1 else oof[0]
    evaluation = plain
    if target is not None and len(target) > 0:
        if shift == "density":
            evaluation = np.repeat(shift_weights(x, target)[:, None], t, axis=1)
        else:
            library = np.asarray(target, dtype=np.float64) @ w + bias
            evaluation = prior_shift_weights(y, best_oof, library, mask)
    _, figures = _evaluate(y, oof, tag_rows, evaluation, fold_list, policy, target_precision)
    fits: list[TagFit] = []
    thresholds = np.empty(t)
    for j, tag in enumerate(tags):
        r = tag_rows[j]
        threshold_logit, *_ = choose_threshold(y[r, j], best_oof[r, j], policy, target_precision, evaluation[r, j])
        thresholds[j] = float(_sigmoid(np.array([threshold_logit]))[0])
        precision, recall, f1, ap = figures[j]
        fits.append(
            TagFit(
                tag=tag,
                positives=round(float((y[r, j] * row_weight[r]).sum())),
                c=c_kept,
                threshold=float(thresholds[j]),
                precision=precision,
                recall=recall,
                f1=f1,
                average_precision=ap,
            )
        )
    heads = Heads(
        tags=tuple(tags),
        weights=w.astype(np.float32),
        bias=bias.astype(np.float32),
        thresholds=thresholds.astype(np.float32),
    )
    return heads, fits


def combine(first: Heads, second: Heads) -> Heads:
    """One set of heads with the tags of both (``first`` wins where both have a tag), sorted by tag."""
    columns = {tag: (first, j) for j, tag in enumerate(first.tags)}
    for j, tag in enumerate(second.tags):
        columns.setdefault(tag, (second, j))
    if first.weights.shape[0] != second.weights.shape[0]:
        raise ValueError("heads of different embedding sizes cannot be combined")
    tags = sorted(columns)
    return Heads(
        tags=tuple(tags),
        weights=np.stack([columns[t][0].weights[:, columns[t][1]] for t in tags], axis=1).astype(np.float32),
        bias=np.array([columns[t][0].bias[columns[t][1]] for t in tags], np.float32),
        thresholds=np.array([columns[t][0].thresholds[columns[t][1]] for t in tags], np.float32),
    )


def select(heads: Heads, tags: Sequence[str]) -> Heads:
    """The heads of these tags only."""
    columns = [heads.tags.index(t) for t in tags]
    return Heads(
        tags=tuple(tags),
        weights=heads.weights[:, columns],
        bias=heads.bias[columns],
        thresholds=heads.thresholds[columns],
    )
