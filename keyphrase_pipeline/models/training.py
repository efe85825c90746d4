"""Training parts both models share (sentence-transformers keeps these in ``base/``): the training budget,
a held-out evaluator that picks the best checkpoint, a wall-clock cap, the trainer's precision, progress
logging, loss curves, a calibration plot and the model card. The stages ``keyphrase_pipeline/stages/train_cross.py`` and
``keyphrase_pipeline/stages/train_bi.py`` call these; metrics are in ``keyphrase_pipeline/models/metrics.py``.

The budget comes from the data, not from a demo: ``train.epochs`` (the cross-encoder) or ``train.bi_epochs``
(the student) passes over the labelled set, evaluated on the held-out split ``train.evals_per_epoch`` times an
epoch, capped by ``train.max_train_minutes`` and the model's step cap (``-1``: none). The cross-encoder keeps
its best checkpoint by held-out ROC AUC (``load_best_model_at_end``) and stops early after
``train.early_stopping_patience`` evaluations without gain; the student does the same with
``train.bi_checkpoint=best``, and by default (``last``) runs every planned step and keeps the last. This is
the Hugging Face ``Trainer``'s own machinery (``EarlyStoppingCallback``, ``metric_for_best_model``),
which sentence-transformers' trainers inherit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.models.metrics import threshold_metrics

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

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
                evals_per_epoch: int, max_minutes: float, has_heldout: bool, keep: str = "best") -> Budget:
    """Steps from the data: ``ceil(train_rows / batch_size) * epochs``, then capped by ``step_cap`` (> 0).

    Args:
        train_rows: training examples per epoch (for multi-task training: all tasks' rows together).
        step_cap: the model's step cap; ``-1`` means epochs decide.
        keep: ``best`` (the checkpoint with the best held-out AUC, early stopping) or ``last`` (every planned step
            runs and the last is kept; the held-out AUC is still evaluated, for the curve); only the log line differs
            here, ``budget_arguments`` acts on it.
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
        reason += (f", held-out AUC every {eval_steps} steps, best checkpoint kept" if keep == "best" else
                   f", held-out AUC every {eval_steps} steps (the curve), last step kept")
    elif evals_per_epoch > 0:
        reason += ", NO held-out evaluation (the held-out split is empty or has one class): last step kept"
    return Budget(max_steps=steps, steps_per_epoch=per_epoch, epochs=round(steps / per_epoch, 3),
                  eval_steps=eval_steps, warmup_steps=int(round(warmup_ratio * steps)), max_minutes=max_minutes,
                  reason=reason)


def with_step_cap(settings: Settings, field: str, max_steps: int | None):
    """``settings`` with ``train.<field>`` set to a command line's ``--max-steps`` (None: unchanged).

    Raises ConfigError (exit 2) for 0 or a value below -1 (-1: the epochs over the data decide)."""
    if max_steps is None:
        return settings
    if max_steps == 0 or max_steps < -1:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError("--max-steps must be positive or -1")
    return settings.with_overrides(**{f"train.{field}": max_steps})


def warm_step_cap(settings: Settings, field: str, warm_field: str, warm: bool):
    """``settings`` with ``train.<field>`` (the step cap) set to ``train.<warm_field>`` when the model starts from
    an earlier version (``warm``) and that cap is set (> 0); otherwise ``settings`` unchanged. A warm start
    needs fewer steps than one from the base encoder (the demo: 60 cross-encoder and 100 student steps instead
    of 150 and 250), and never runs more than a cold start would: a smaller ``train.<field>`` (e.g. a test's
    few steps) wins."""
    cap, cold = getattr(settings.train, warm_field), getattr(settings.train, field)
    if not warm or cap <= 0 or 0 < cold <= cap:
        return settings
    return settings.with_overrides(**{f"train.{field}": cap})


def budget_arguments(budget: Budget, patience: int, keep: str = "best") -> tuple[dict, list]:
    """(training-argument kwargs, extra callbacks) that make a trainer follow ``budget``: with ``keep`` ``best`` the
    best checkpoint by held-out AUC is loaded at the end and training stops after ``patience`` evaluations without
    a better one (0: never early); with ``last`` the held-out AUC is evaluated for the curve only, nothing is
    saved on the way and the last step is the model."""
    from transformers import EarlyStoppingCallback

    kwargs = {"max_steps": budget.max_steps, "warmup_steps": budget.warmup_steps,
              "logging_steps": max(1, budget.max_steps // 20)}
    callbacks: list = [wall_clock_cap(budget.max_minutes, keep)] if budget.max_minutes > 0 else []
    if budget.eval_steps and keep == "last":
        kwargs.update(eval_strategy="steps", eval_steps=budget.eval_steps, save_strategy="no")
    elif budget.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=budget.eval_steps, save_strategy="steps",
                      save_steps=budget.eval_steps, save_total_limit=1, load_best_model_at_end=True,
                      metric_for_best_model="eval_heldout_auc", greater_is_better=True)
        if patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    else:
        kwargs["save_strategy"] = "no"
    return kwargs, callbacks


def wall_clock_cap(minutes: float, keep: str = "best"):
    """A TrainerCallback that stops training once ``minutes`` of wall time have passed, with a held-out evaluation
    of that step. ``keep`` (``best`` or ``last``, as ``budget_arguments``): with ``best`` that step is also saved as
    a checkpoint to choose from; with ``last`` nothing is saved (the model in memory is the one kept)."""
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
                    log.warning("wall-clock cap of %g min reached at step %d: stopping (%s kept)", minutes,
                                state.global_step, "the best checkpoint" if keep == "best" else "this last step")
                self.fired = True
                control.should_training_stop = True
                if args.eval_strategy != "no":
                    control.should_evaluate = True
                    control.should_save = keep == "best"   # a checkpoint to choose from; 'last' keeps the model as it is
            return control

    return WallClockCap()


def stop_reason(steps: int, budget: Budget, callbacks) -> str:
    """Why a training run ended, stored with the model (``metrics.json``) and logged: ``"wall_clock_cap"`` (the
    ``wall_clock_cap`` callback among ``callbacks`` fired), ``"early_stopping"`` (fewer than ``budget.max_steps``
    steps ran otherwise: the held-out AUC stopped improving, ``EarlyStoppingCallback``) or ``"budget"`` (every
    planned step ran). ``steps``: the trainer's ``global_step``."""
    if any(getattr(c, "fired", False) for c in callbacks):
        return "wall_clock_cap"
    return "early_stopping" if steps < budget.max_steps else "budget"


def heldout_evaluator(score_fn: Callable[[object], np.ndarray], labels, name: str = "heldout"):
    """A sentence-transformers evaluator: ROC AUC (primary), best-F1 and its threshold on held-out pairs.

    Args:
        score_fn: ``score_fn(model) -> np.ndarray`` of float scores, shape ``(n,)``, one per held-out pair.
        labels: 0/1 per held-out pair, shape ``(n,)``.
    Returns:
        a ``BaseEvaluator`` whose call returns ``{"<name>_auc", "<name>_f1", "<name>_threshold"}`` (AUC 0.0 when
        the held-out labels have one class) and appends each evaluation to ``.history``.
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


def best_step(evaluator) -> int | None:
    """The step of the best held-out AUC in a ``heldout_evaluator``'s history (the checkpoint kept), or None."""
    if not evaluator or not evaluator.history:
        return None
    return int(max(evaluator.history, key=lambda h: h["auc"] or 0.0)["step"])


def calibration_plot(y_true, scores, path: str, title: str, threshold: float | None = None, bins: int = 10) -> dict:
    """Reliability diagram (share of positives per score bin, ``sklearn.calibration.calibration_curve``
    over min-max scaled scores) as a PNG; returns the bins as a dict.

    ``y_true``: 0/1 ``(n,)``; ``scores``: float ``(n,)`` on any scale. Writes ``path`` (overwritten). Returns
    ``{"score_range": [lo, hi], "mean_scaled_score": [...], "share_relevant": [...]}``; the bin lists are empty
    when the labels have one class. OSError when ``path`` cannot be written."""
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


def progress_callback(task_losses=None, logger=None):
    """A transformers TrainerCallback logging steps, loss (per task when known) and examples/s."""
    from transformers import TrainerCallback

    out_log = logger or log

    class Progress(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.history: list[dict] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs:
                return
            elapsed = max(time.perf_counter() - (self.t0 or time.perf_counter()), 1e-9)
            rec = {"step": state.global_step, "loss": float(logs["loss"]),
                   "steps_per_s": state.global_step / elapsed,
                   "examples_per_s": state.global_step * args.per_device_train_batch_size / elapsed}
            if task_losses is not None:
                rec["tasks"] = task_losses.pop_means()
            self.history.append(rec)
            tasks = " ".join(f"{k}={v:.4f}" for k, v in (rec.get("tasks") or {}).items())
            out_log.info("step %d/%d loss %.4f %s| %.2f steps/s %.1f examples/s", state.global_step, state.max_steps,
                     rec["loss"], tasks + " " if tasks else "", rec["steps_per_s"], rec["examples_per_s"])

    return Progress()


def save_curves(history: list[dict], path: str, title: str) -> None:
    """Training loss (and per-task losses) against step, as a PNG (matplotlib, Agg backend).

    ``history``: ``progress_callback`` records (``step``, ``loss``, optional ``tasks``); an empty history gives
    empty axes. Writes ``path`` (overwritten)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = [h["step"] for h in history]
        ax.plot(steps, [h["loss"] for h in history], label="loss (all)", linewidth=2)
        names = sorted({k for h in history for k in (h.get("tasks") or {})})
        for name in names:
            pts = [(h["step"], h["tasks"][name]) for h in history if name in (h.get("tasks") or {})]
            if pts:
                ax.plot(*zip(*pts), label=name, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    if history:   # no lines, no legend (matplotlib warns "No artists with labels found to put in legend")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def quiet_trainer(trainer) -> None:
    """Our callback logs progress; drop transformers' stdout printer (stdout is for the JSON result)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def write_card(path: str, title: str, sections: dict) -> None:
    """MODEL_CARD.md at ``path``: a title, then one section per key (a dict becomes a key/value table)."""
    lines = [f"# {title}", ""]
    for head, body in sections.items():
        lines += [f"## {head}", ""]
        if isinstance(body, dict):
            lines += ["| key | value |", "|---|---|"]
            lines += [f"| {k} | {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v} |" for k, v in body.items()]
        else:
            lines.append(str(body))
        lines.append("")
    Path(path).write_text("\n".join(lines))


@dataclasses.dataclass
class VersionRecords:
    """What a trained version's folder records beside its ``model/`` (``core.layout.VERSION_FILES``).

    ``title``: the model card's title, and the curves' caption with ``curves_note``; ``train_config``
    (``train_config.json``: the training configuration with ``ds``, ``version``, ``device``, ``created_at``),
    ``data`` (``data.json``: the training data snapshot), ``metrics`` (``metrics.json``), ``history``
    (``history.json`` and ``curves.png``: the ``progress_callback`` records), ``card`` (``MODEL_CARD.md``'s
    sections after the title, in order)."""

    title: str
    train_config: dict
    data: dict
    metrics: dict
    history: list[dict]
    card: dict
    curves_note: str = ""


def write_version_records(directory: str, records: VersionRecords) -> None:
    """Write ``train_config.json``, ``data.json``, ``metrics.json``, ``history.json``, ``curves.png`` and
    ``MODEL_CARD.md`` of ``records`` into ``directory`` (a version's hidden temp folder: committed whole later)."""

    def dump(name: str, value) -> None:
        Path(layout.version_file(directory, name)).write_text(json.dumps(value, indent=2, default=str))

    dump("train_config", records.train_config)
    dump("data", records.data)
    dump("metrics", records.metrics)
    dump("history", records.history)
    save_curves(records.history, layout.version_file(directory, "curves"), records.title + records.curves_note)
    write_card(layout.version_file(directory, "card"), records.title, records.card)
