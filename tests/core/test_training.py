import numpy as np
import pytest
from smarttags.core import heads as training


def _data(seed=0, n=400, d=48, t=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.normal(size=(d, t))
    y = ((x - x.mean(0)) @ w * 6 + rng.normal(size=(n, t)) > 1.0).astype(float)
    return x, y


def _reference_fit(x, y, c, iters=4000):
    """Plain Newton's method on one tag, straight from the objective: an independent check."""
    n, d = x.shape
    s = training.balanced_weights(y[:, None])[:, 0]
    xb = np.c_[x, np.ones(n)]
    beta = np.zeros(d + 1)
    reg = np.r_[np.full(d, 1.0 / (c * n)), 0.0]
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ beta))
        grad = xb.T @ (s * (p - y)) / n + reg * beta
        hess = (xb * (s * p * (1 - p))[:, None]).T @ xb / n + np.diag(reg)
        beta -= np.linalg.solve(hess, grad)
    return beta[:-1], beta[-1]


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_whitened_solver_matches_newton(c):
    x, y = _data()
    white = training._Whitened.of(x)
    penalty = np.broadcast_to((1.0 / (c * white.sigma**2))[:, None], (white.sigma.size, y.shape[1]))
    a, b = training.fit_logistic(white.z, y, training.balanced_weights(y), penalty, max_iter=2000, tol=1e-10)
    w, bias = white.to_weights(a, b)
    for j in range(y.shape[1]):
        w_ref, b_ref = _reference_fit(x, y[:, j], c)
        np.testing.assert_allclose(w[:, j], w_ref, atol=2e-4 * max(1, np.abs(w_ref).max()))
        assert bias[j] == pytest.approx(b_ref, abs=2e-4 * max(1, abs(b_ref)))


def test_average_precision_matches_the_step_definition():
    labels = np.array([1, 0, 1, 0, 0, 1], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # Precision at each positive: 1/1, 2/3, 3/6 -> mean over positives.
    assert training.average_precision(labels, scores) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert np.isnan(training.average_precision(np.zeros(3), np.ones(3)))


def test_threshold_policies():
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 1], dtype=float)
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.5, 0.4, 0.3, 0.2])
    thr, p, r, _ = training.choose_threshold(labels, scores, "f1")
    assert (p, r) == (0.75, 0.75) and 0.5 < thr < 0.8
    thr, p, r, _ = training.choose_threshold(labels, scores, "precision", target_precision=1.0)
    assert p == 1.0 and r == 0.5 and 0.85 < thr < 0.9


def test_train_heads_learns_and_reports_cross_validated_metrics():
    x_all, y_all = _data(seed=1, n=900)
    x, y, x_test, y_test = x_all[:600], y_all[:600], x_all[600:], y_all[600:]
    heads, fits = training.train_heads(x, y, ["a:x", "a:y", "a:z"], folds=3)
    assert heads.weights.shape == (48, 3) and heads.weights.dtype == np.float32
    scores = heads.scores(x_test)
    for j, fit in enumerate(fits):
        assert fit.average_precision > 0.7
        assert training.average_precision(y_test[:, j], scores[:, j]) > 0.7
        assert 0 < fit.threshold < 1 and fit.c in training.DEFAULT_C_GRID


def test_folds_spread_rare_positives():
    labels = np.zeros((50, 2))
    labels[:5, 0] = 1
    labels[5:30, 1] = 1
    folds = training._folds(labels, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(50))
    assert [int(labels[f, 0].sum()) for f in folds] == [1, 1, 1, 1, 1]


def test_folds_keep_a_group_together_and_follow_the_keys_not_the_order():
    rng = np.random.default_rng(3)
    labels = (rng.random((60, 3)) > 0.6).astype(float)
    keys = [f"picture-{i // 3}" for i in range(60)]  # 20 shoots of 3 near-duplicates
    folds = training._folds(labels, 4, seed=0, groups=keys)
    fold_of = {i: f for f, rows in enumerate(folds) for i in rows.tolist()}
    assert all(len({fold_of[i] for i in range(60) if keys[i] == key}) == 1 for key in set(keys))
    order = rng.permutation(60)
    shuffled = training._folds(labels[order], 4, seed=0, groups=[keys[i] for i in order])
    again = {int(order[i]): f for f, rows in enumerate(shuffled) for i in rows.tolist()}
    assert again == fold_of


def test_unknown_labels_weigh_nothing():
    x, y = _data(seed=2, n=300)
    known = np.ones_like(y)
    known[:100, 0] = 0  # tag 0 unknown on a third of the rows
    scrambled = y.copy()
    scrambled[:100, 0] = 1 - scrambled[:100, 0]  # so their label must not matter
    _, fits = training.train_heads(x, y, ["a:x", "a:y", "a:z"], folds=3, known=known)
    _, fits_scrambled = training.train_heads(x, scrambled, ["a:x", "a:y", "a:z"], folds=3, known=known)
    assert fits[0].positives == int(y[100:, 0].sum())
    assert fits[0].average_precision == pytest.approx(fits_scrambled[0].average_precision)
    assert training.balanced_weights(y, known)[:100, 0].tolist() == [0.0] * 100
