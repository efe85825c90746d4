"""Metrics of binary relevance predictions, shared by training, evaluation and the label tools.

Arrays in, plain floats out (JSON-ready). scikit-learn computes F1/precision/recall/AUC; the two
threshold pickers differ on purpose: ``best_f1_threshold`` returns a score of the data (stored with a
model, ``kp score`` predicts ``score >= threshold``), ``best_f1_cut`` the midpoint between neighbouring
scores (the evaluator's cross-fitted predictions).
"""

from __future__ import annotations

import numpy as np


def has_both_classes(labels) -> bool:
    """True when ``labels`` (0/1) hold at least one of each class: AUC and an F1-best threshold need both."""
    return len(np.unique(np.asarray(labels).astype(int))) == 2


def best_f1_threshold(y_true, scores) -> float:
    """The score threshold that maximises F1 (``sklearn.metrics.precision_recall_curve``); predictions are
    ``scores >= threshold``. 0.5 when only one class is present.

    ``y_true``: 0/1 array ``(n,)``; ``scores``: float array ``(n,)`` (cosine or probability: any scale). Returns
    one of the scores. sklearn raises ValueError when the lengths differ."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true).astype(int)
    if not has_both_classes(y):
        return 0.5
    p, r, t = precision_recall_curve(y, np.asarray(scores, dtype=float))
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    return float(t[int(np.argmax(f1))])


def binary_metrics(y_true, scores, threshold: float) -> dict:
    """F1/precision/recall at ``threshold`` (``scores >= threshold``), ROC AUC (None with one class), the
    number of pairs and of positives (the class balance). scikit-learn's metrics.

    ``y_true``: 0/1 ``(n,)``; ``scores``: float ``(n,)``. Returns ``{f1, precision, recall, n, positives, threshold,
    auc}`` as plain numbers (0.0 where undefined). ValueError from sklearn when the lengths differ."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    return {**prf(y, (s >= threshold).astype(int)), "threshold": float(threshold), "auc": auc_or_none(y, s)}


def threshold_metrics(y_true, scores) -> dict:
    """``binary_metrics`` at the F1-maximising threshold of these same pairs."""
    return binary_metrics(y_true, scores, best_f1_threshold(y_true, scores))


def best_f1_cut(y, s) -> float:
    """The cut maximising F1 on (y, s): the midpoint between neighbouring scores, ties kept together.

    Unlike ``best_f1_threshold`` (a score of the data itself, for storing with a model), a cut never
    equals a score, so it moves predictions only when a score crosses it (the evaluator's cross-fitting).
    Returns the max score + 1e-6 when there is no positive, 0.5 for no pairs."""
    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=float)
    if len(s) == 0 or y.sum() == 0:
        return float(np.max(s) + 1e-6) if len(s) else 0.5
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ys) + 1)
    f1 = 2 * tp / (k + ys.sum())
    # only cut where the next score differs (ties go together)
    valid = np.r_[ss[1:] < ss[:-1], True]
    f1 = np.where(valid, f1, -1)
    i = int(np.argmax(f1))
    return float((ss[i] + ss[i + 1]) / 2) if i + 1 < len(ss) else float(ss[i] - 1e-6)


def prf(y, pred) -> dict:
    """F1/precision/recall of 0/1 predictions ``pred`` against 0/1 ``y``, the number of pairs and of positives."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    y = np.asarray(y).astype(int)
    return {"f1": float(f1_score(y, pred, zero_division=0)), "precision": float(precision_score(y, pred, zero_division=0)),
            "recall": float(recall_score(y, pred, zero_division=0)), "n": int(len(y)), "positives": int(y.sum())}


def auc_or_none(y, s) -> float | None:
    """ROC AUC of scores ``s`` against 0/1 ``y``; None when ``y`` has one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def log_odds(p, eps: float = 1e-6) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities ``p`` (e.g. a cross-encoder's P(relevant)) clipped to [eps, 1 - eps]
    first, computed as ``log(p) - log1p(-p)``: float64 ``(n,)``, finite for any p in [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def pearson(a, b) -> float | None:
    """Pearson r of two equal-length arrays; None with fewer than 2 values or a constant one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
