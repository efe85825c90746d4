"""Training parts both models share: the training budget, a held-out evaluator that picks the best
checkpoint, a wall-clock cap, and the decision threshold stored with a model.

The budget comes from the data, not from a demo: ``train.epochs`` passes over the labelled set, evaluated
on the held-out split ``train.evals_per_epoch`` times an epoch, the best checkpoint by held-out ROC AUC
kept (``load_best_model_at_end``), stopped early after ``train.early_stopping_patience`` evaluations
without gain, and capped by ``train.max_train_minutes`` and the model's step cap (``-1``: none). This is
the Hugging Face ``Trainer``'s own machinery (``EarlyStoppingCallback``, ``metric_for_best_model``),
which sentence-transformers' trainers inherit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Budget:
    """How long a training run may go, and why (logged and stored in train_config.json)."""

    max_steps: int            # the trainer's max_steps (> 0)
    steps_per_epoch: int
    epochs: float             # the epochs that max_steps amounts to
    eval_steps: int           # evaluate (and checkpoint) every this many steps; 0 = no held-out evaluation
    warmup_steps: int
    max_minutes: float        # wall-clock cap (0 = none)
    reason: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_budget(train_rows: int, batch_size: int, epochs: float, step_cap: int, warmup_ratio: float,
                evals_per_epoch: int, max_minutes: float, has_heldout: bool) -> Budget:
    """Steps from the data: ``ceil(train_rows / batch_size) * epochs``, then capped by ``step_cap`` (> 0).

    Args:
        train_rows: training examples per epoch (for multi-task training: all tasks' rows together).
        step_cap: the model's step cap; ``-1`` means epochs decide.
    Returns:
        a Budget; ``eval_steps`` is 0 when there is no held-out data to evaluate on.
    """
    per_epoch = max(1, math.ceil(train_rows / batch_size))
    steps = max(1, int(round(per_epoch * epochs)))
    reason = f"{epochs:g} epoch(s) x {per_epoch} steps ({train_rows} rows / batch {batch_size})"
    if 0 < step_cap < steps:
        steps = step_cap
        reason += f", capped at {step_cap} steps"
    if max_minutes > 0:
        reason += f", at most {max_minutes:g} min"
    eval_steps = 0
    if has_heldout and evals_per_epoch > 0:
        eval_steps = max(1, min(steps, per_epoch // evals_per_epoch or 1))
        reason += f", held-out AUC every {eval_steps} steps, best checkpoint kept"
    elif evals_per_epoch > 0:
        reason += ", NO held-out evaluation (the held-out split is empty or has one class): last step kept"
    return Budget(max_steps=steps, steps_per_epoch=per_epoch, epochs=round(steps / per_epoch, 3),
                  eval_steps=eval_steps, warmup_steps=int(round(warmup_ratio * steps)), max_minutes=max_minutes,
                  reason=reason)


def budget_arguments(budget: Budget, patience: int) -> tuple[dict, list]:
    """(training-argument kwargs, extra callbacks) that make a trainer follow ``budget``."""
    from transformers import EarlyStoppingCallback

    kwargs = {"max_steps": budget.max_steps, "warmup_steps": budget.warmup_steps,
              "logging_steps": max(1, budget.max_steps // 20)}
    callbacks: list = [wall_clock_cap(budget.max_minutes)] if budget.max_minutes > 0 else []
    if budget.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=budget.eval_steps, save_strategy="steps",
                      save_steps=budget.eval_steps, save_total_limit=1, load_best_model_at_end=True,
                      metric_for_best_model="eval_heldout_auc", greater_is_better=True)
        if patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    else:
        kwargs["save_strategy"] = "no"
    return kwargs, callbacks


def wall_clock_cap(minutes: float):
    """A TrainerCallback that stops training once ``minutes`` of wall time have passed."""
    from transformers import TrainerCallback

    class WallClockCap(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.fired = False

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if self.t0 is not None and time.monotonic() - self.t0 > minutes * 60:
                if not self.fired:
                    log.warning("wall-clock cap of %g min reached at step %d: stopping (best checkpoint kept)",
                                minutes, state.global_step)
                self.fired = True
                control.should_training_stop = True
                if args.eval_strategy != "no":
                    control.should_evaluate = True
                    control.should_save = True
            return control

    return WallClockCap()


def heldout_evaluator(score_fn: Callable[[object], np.ndarray], labels, name: str = "heldout"):
    """A sentence-transformers evaluator: ROC AUC (primary), best-F1 and its threshold on held-out pairs.

    Args:
        score_fn: ``score_fn(model) -> np.ndarray`` of float scores, one per held-out pair.
        labels: 0/1 per held-out pair.
    """
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    y = np.asarray(labels).astype(int)

    class HeldOutPairs(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.name = name
            self.primary_metric = "auc"
            self.history: list[dict] = []

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            s = np.asarray(score_fn(model), dtype=float)
            m = threshold_metrics(y, s)
            self.history.append({"step": steps, "epoch": epoch, **m})
            log.info("held-out at step %s: AUC %.4f, best F1 %.4f at threshold %.4f", steps, m["auc"] or float("nan"),
                     m["f1"], m["threshold"])
            metrics = {"auc": m["auc"] if m["auc"] is not None else 0.0, "f1": m["f1"], "threshold": m["threshold"]}
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return HeldOutPairs()


def has_both_classes(labels) -> bool:
    """True when ``labels`` (0/1) hold at least one of each class: AUC and an F1-best threshold need both."""
    return len(np.unique(np.asarray(labels).astype(int))) == 2


def best_step(evaluator) -> int | None:
    """The step of the best held-out AUC in a ``heldout_evaluator``'s history (the checkpoint kept), or None."""
    if not evaluator or not evaluator.history:
        return None
    return int(max(evaluator.history, key=lambda h: h["auc"] or 0.0)["step"])


def best_f1_threshold(y_true, scores) -> float:
    """The score threshold that maximises F1 (``sklearn.metrics.precision_recall_curve``); predictions are
    ``scores >= threshold``. 0.5 when only one class is present."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true).astype(int)
    if not has_both_classes(y):
        return 0.5
    p, r, t = precision_recall_curve(y, np.asarray(scores, dtype=float))
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    return float(t[int(np.argmax(f1))])


def binary_metrics(y_true, scores, threshold: float) -> dict:
    """F1/precision/recall at ``threshold`` (``scores >= threshold``), ROC AUC (None with one class), the
    number of pairs and of positives (the class balance). scikit-learn's metrics."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    pred = (s >= threshold).astype(int)
    out = {"f1": float(f1_score(y, pred, zero_division=0)),
           "precision": float(precision_score(y, pred, zero_division=0)),
           "recall": float(recall_score(y, pred, zero_division=0)),
           "threshold": float(threshold), "n": int(len(y)), "positives": int(y.sum())}
    out["auc"] = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None
    return out


def threshold_metrics(y_true, scores) -> dict:
    """``binary_metrics`` at the F1-maximising threshold of these same pairs."""
    return binary_metrics(y_true, scores, best_f1_threshold(y_true, scores))


def calibration_plot(y_true, scores, path: str, title: str, threshold: float | None = None, bins: int = 10) -> dict:
    """Reliability diagram (share of positives per score bin, ``sklearn.calibration.calibration_curve``
    over min-max scaled scores) as a PNG; returns the bins as a dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    scaled = (s - lo) / max(hi - lo, 1e-12)
    frac_pos, mean_pred = calibration_curve(y, scaled, n_bins=bins, strategy="quantile") if 0 < y.sum() < len(y) \
        else (np.zeros(0), np.zeros(0))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.plot(mean_pred, frac_pos, marker="o")
    if threshold is not None:
        ax.axvline((threshold - lo) / max(hi - lo, 1e-12), color="red", linewidth=1, label=f"threshold {threshold:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel(f"score (scaled from [{lo:.2f}, {hi:.2f}])")
    ax.set_ylabel("share relevant")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"score_range": [lo, hi], "mean_scaled_score": [float(x) for x in mean_pred],
            "share_relevant": [float(x) for x in frac_pos]}
