"""Fine-tune the cross-encoder assistant on LLM labels, then score every labelled pair (soft labels).

Input ``keyphrase [SEP] category [SEP] title`` (``keyphrase_pipeline.models.text.cross_text``), one logit, binary
cross-entropy (sentence-transformers ``CrossEncoderTrainer`` + ``BinaryCrossEntropyLoss``). Trained on the
train split of the LLM labels; F1/precision/recall/AUC reported on the stable held-out split. The
version goes to ``registry/cross/<ds>-<hash>/`` (``CROSS_LATEST`` switched) or to ``--out DIR``::

    model/               CrossEncoder (sentence-transformers format)
    soft_labels.parquet  text_hash, pair_key, item_id, keyphrase_id, split, label, score (P(relevant))
    metrics.json  train_config.json  data.json  MODEL_CARD.md  curves.png  history.json  calibration.png

Budget from the data (``keyphrase_pipeline.models.training.plan_budget``: ``train.epochs``, held-out AUC checkpoints, early
stopping; ``train.cross_max_steps`` caps it, the demo passes 150). CPU by default, GPU with bf16/fp16 when
one is visible (``keyphrase_pipeline.models.devices.resolve_device``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, commit_dir, ds_str, tmp_sibling, write_parquet_file_atomic
from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.cross_encoder import build_cross, predict_pairs, save_cross
from keyphrase_pipeline.models.devices import (
    precision_name,
    require_one_training_device,
    resolve_device,
    trainer_precision,
)
from keyphrase_pipeline.models.metrics import binary_metrics, has_both_classes, threshold_metrics
from keyphrase_pipeline.models.text import cross_text
from keyphrase_pipeline.models.training import (
    VersionRecords,
    best_step,
    budget_arguments,
    calibration_plot,
    heldout_evaluator,
    plan_budget,
    progress_callback,
    quiet_trainer,
    stop_reason,
    warm_step_cap,
    with_step_cap,
)

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings
    from keyphrase_pipeline.models.training import VersionRecords

log = logging.getLogger(__name__)


# ---- the stage ---------------------------------------------------------------------------------------
def _config(settings: Settings, base: str) -> dict:
    t = settings.train
    return {"kind": "cross", "base_model": base, "init_from": t.cross_init_from, "max_steps": t.cross_max_steps,
            "epochs": t.epochs,
            "batch_size": t.batch_size, "learning_rate": t.cross_learning_rate or t.learning_rate,
            "warmup_ratio": t.warmup_ratio, "max_length": t.cross_max_length, "pos_weight": t.cross_pos_weight,
            "evals_per_epoch": t.evals_per_epoch, "early_stopping_patience": t.early_stopping_patience,
            "max_train_minutes": t.max_train_minutes, "seed": t.seed, "test_fraction": t.test_fraction}


def _pairs_dataset(frame, target):
    """(query, document, label) rows for the CrossEncoderTrainer (``keyphrase_pipeline.models.text.cross_text``)."""
    from datasets import Dataset

    q, d = zip(*[cross_text(k, c, ti) for ti, c, k in zip(frame["title"], frame["category"], frame["keyphrase"])])
    return Dataset.from_dict({"query": list(q), "document": list(d), "label": [float(x) for x in target]})


def _loss(settings: Settings, model, labels):
    """Binary cross-entropy; with ``train.cross_pos_weight`` positives weighted by negatives/positives
    (sentence-transformers' reranker guidance for unbalanced pairs)."""
    import torch
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    y = np.asarray(labels, dtype=float) >= 0.5
    if settings.train.cross_pos_weight and 0 < y.sum() < len(y):
        return BinaryCrossEntropyLoss(model, pos_weight=torch.tensor((~y).sum() / y.sum()))
    return BinaryCrossEntropyLoss(model)


def _fit(settings: Settings, model, train, test, target, tmp: str, device: str, lr: float):
    """Train ``model`` in place within the planned budget; returns (trainer result, progress, budget, evaluator)."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    t = settings.train
    budget = plan_budget(len(train), t.batch_size, t.epochs, t.cross_max_steps, t.warmup_ratio, t.evals_per_epoch,
                         t.max_train_minutes, has_heldout=has_both_classes(test["label"]))
    log.info("cross-encoder budget: %s", budget.reason)
    evaluator = None
    if budget.eval_steps:
        evaluator = heldout_evaluator(
            lambda m: predict_pairs(m, test["title"].tolist(), test["category"].tolist(), test["keyphrase"].tolist()),
            test["label"])
    extra, callbacks = budget_arguments(budget, t.early_stopping_patience)
    args = CrossEncoderTrainingArguments(
        output_dir=str(Path(tmp) / "_trainer"), per_device_train_batch_size=t.batch_size, learning_rate=lr,
        seed=t.seed, data_seed=t.seed, report_to=[], disable_tqdm=True, **extra, **trainer_precision(device))
    progress = progress_callback()
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=_pairs_dataset(train, target),
                                  loss=_loss(settings, model, target), evaluator=evaluator,
                                  callbacks=[progress, *callbacks])
    quiet_trainer(trainer)
    result = trainer.train()
    stopped = stop_reason(result.global_step, budget, callbacks)
    log.info("cross-encoder training stopped: %s (%d of %d planned steps)", stopped, result.global_step, budget.max_steps)
    return result, progress, budget, evaluator, stopped


def _soft_labels(model, allp, tmp: str):
    """P(relevant) for every labelled pair (train and test: the test scores give the evaluator's rho), written to
    ``soft_labels.parquet``; returns (float32 ``np.ndarray`` of shape ``(len(allp),)``, seconds it took)."""

    t_pred = time.perf_counter()
    scores = predict_pairs(model, allp["title"].tolist(), allp["category"].tolist(), allp["keyphrase"].tolist())
    pred_s = time.perf_counter() - t_pred
    soft = allp[["text_hash", "pair_key", "item_id", "keyphrase_id", "split", "label", "title", "category", "keyphrase"]].copy()
    soft["score"] = scores.astype("float32")
    write_parquet_file_atomic(soft, layout.version_file(tmp, "soft_labels"))
    return scores, pred_s


def _heldout_metrics(allp, scores, tmp: str, version: str) -> tuple[dict, dict, float | None]:
    """(metrics, held-out metrics, decision threshold or None) of ``scores`` on the held-out and train splits,
    and the held-out calibration plot (``calibration.png``)."""

    is_test = (allp["split"] == "test").to_numpy()
    if has_both_classes(allp["label"][is_test]):
        heldout = threshold_metrics(allp["label"][is_test], scores[is_test])
        threshold = heldout["threshold"]
    else:  # no threshold can be chosen on one class: none is stored (kp score then writes no label)
        log.warning("the held-out split has %d pair(s) of one class: no decision threshold stored", int(is_test.sum()))
        heldout, threshold = binary_metrics(allp["label"][is_test], scores[is_test], 0.5), None
    metrics = {"heldout": heldout, "heldout_at_0.5": binary_metrics(allp["label"][is_test], scores[is_test], 0.5),
               "threshold": threshold,
               "train_fit": binary_metrics(allp["label"][~is_test], scores[~is_test],
                                           0.5 if threshold is None else threshold)}
    metrics["calibration"] = calibration_plot(allp["label"][is_test], scores[is_test],
                                              layout.version_file(tmp, "calibration"),
                                              f"cross-encoder {version}: held-out calibration", threshold)
    return metrics, heldout, threshold


def _training_record(result, evaluator, budget, train_s: float, n_pairs: int, pred_s: float, stopped: str) -> dict:
    """Loss, steps, why it stopped (``stopped``: ``models.training.stop_reason``), best step, budget, held-out
    history and speeds of the training run."""

    return {"train_loss": float(result.training_loss), "steps": int(result.global_step),
            "stop_reason": stopped,
            "best_step": best_step(evaluator), "budget": budget.as_dict(),
            "heldout_history": evaluator.history if evaluator else [],
            "train_seconds": round(train_s, 1), "steps_per_s": round(result.global_step / max(train_s, 1e-9), 3),
            "predict_pairs_per_s": round(n_pairs / max(pred_s, 1e-9), 1)}


def _records(config: dict, ds: str, version: str, device: str, budget, snapshot: dict, metrics: dict,
             history: list[dict], heldout: dict, threshold: float | None) -> VersionRecords:
    """The version folder's records (``models.training.VersionRecords``) of a trained cross-encoder."""

    created = dt.datetime.now(dt.UTC).isoformat()
    held_out = ("Held-out pairs (no threshold: one class)" if threshold is None else
                f"Held-out pairs (threshold {threshold:.4f}, chosen there for max F1)")
    return VersionRecords(
        title=f"Cross-encoder assistant {version}",
        train_config={**config, "ds": ds, "version": version, "device": device, "budget": budget.as_dict(),
                      "created_at": created},
        data=snapshot, metrics=metrics, history=history,
        card={"What": "Reads `keyphrase [SEP] category [SEP] title` (no category: `keyphrase [SEP] title`), outputs "
                      "P(relevant). Trained with binary cross-entropy on judged pairs; teacher of the bi-encoder "
                      "student.",
              held_out: heldout, "Budget": budget.reason, "Training": config, "Data": snapshot})


def _advance_latest(settings: Settings, version: str) -> None:
    """Point ``CROSS_LATEST`` at ``version`` unless it already points at a cross-encoder of a later day (a rerun or a
    backfill of an earlier day never moves the teacher of later days backwards; ``warm_start_version`` gives a
    backfill its own day's teacher)."""

    try:
        latest = registry.latest_cross(settings)
    except registry.UnreadablePointerError:
        latest = None  # a damaged pointer is what this write repairs
    later, day = registry.version_day(latest), registry.version_day(version)
    if latest and latest != version and registry.exists(settings, latest, "cross") and later and day and later > day:
        log.info("CROSS_LATEST stays %s (a later day than %s)", latest, version)
        return
    registry.set_latest_cross(settings, version)


def run(settings: Settings, ds: str, labels: str | None = None, out: str | None = None) -> dict:
    """Train the assistant for ``ds``; return its metrics (version, path, held-out metrics, timings).

    The budget comes from the data (``keyphrase_pipeline.models.training.plan_budget``: epochs over the training split, the
    best checkpoint by held-out AUC, early stopping, step and wall-clock caps). The decision threshold that
    maximises F1 on the held-out split is stored with the model (``kp_model.json``, ``metrics.json``) and
    used by ``kp score``. Without ``out`` the version is committed to the registry and becomes ``CROSS_LATEST``
    (unless that is of a later day: a backfill never moves it backwards). Label-store labels that teach nothing
    (``training_data.label_balance``: one class, or a judge that does not tell CTR positives from random pairs)
    train nothing: the stats say ``skipped`` and why, ``version`` is None and ``CROSS_LATEST`` stays;
    a version already in the registry (a rerun with the same inputs) is reused, never rewritten
    (``registry.reusable``; the stats have ``reused`` True).

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD; ``train.base_model`` is not a directory; the lake is not
            local (registry) and no ``out`` is given.
        DataError: (exit 3) what ``training_data.load_training_data`` raises: no or too few labels, an unreadable
            or invalid ``labels`` file, a held-out split without test or train pairs; with ``out``, label-store
            labels that teach nothing (``training_data.label_balance``).
        SchemaError: (exit 3) the label store breaks contract ``llm_labels``.

    Training errors (torch, out of memory) propagate unchanged (exit 1); the temp directory is then removed
    and nothing is committed."""
    from keyphrase_pipeline.labels.training_data import label_balance, load_training_data

    ds = ds_str(ds)
    device = require_one_training_device(resolve_device(settings.train.device))  # fails here, before any work
    t0 = time.perf_counter()
    data = load_training_data(settings, ds, labels=labels, need_ctr=False, need_sr=False)
    train, test = data.llm_train, data.llm_test
    balance = label_balance(settings, data)
    if not balance["usable"] and out:  # asked for a model in a folder: nothing there would surprise the next step
        raise DataError(f"no cross-encoder written to {out}: {balance['why']}")
    if not balance["usable"]:  # labels that teach nothing: nothing to learn, CROSS_LATEST stays
        latest = registry.latest_cross(settings)
        log.warning("cross-encoder for %s not trained: %s; CROSS_LATEST stays %s", ds, balance["why"], latest)
        stats = {"version": None, "path": None, "skipped": True, "why": balance["why"], "label_balance": balance,
                 "cross_latest": latest, "train_rows": len(train), "test_rows": len(test),
                 "seconds": round(time.perf_counter() - t0, 1)}
        Lake.from_settings(settings).write_run_stats(ds, "train_cross", stats)
        return stats
    base = resolve_base_model(settings.train.base_model)
    start = registry.start_model_dir(settings, "cross", ds, base, warm=settings.train.cross_init_from == "latest")
    settings = warm_step_cap(settings, "cross_max_steps", "warm_cross_max_steps", warm=start != base)
    config = _config(settings, base)
    snapshot = {**data.snapshot, "start_model": start} if start != base else data.snapshot
    version = registry.version_id(ds, config, snapshot)
    reused = None if out else registry.reusable(settings, version, "cross")
    if reused:  # a rerun with the same inputs: the same model (maybe a student's teacher already), never rewritten
        _advance_latest(settings, version)
        stats = {**reused, "train_rows": len(train), "test_rows": len(test),
                 "seconds": round(time.perf_counter() - t0, 1)}
        Lake.from_settings(settings).write_run_stats(ds, "train_cross", stats)
        return stats
    final = registry.target_dir(settings, version, "cross", out)
    tmp = tmp_sibling(final)
    os.makedirs(tmp, exist_ok=True)
    log.info("cross-encoder %s: %d train / %d test pairs, start %s, device %s", version, len(train), len(test), start,
             device)
    try:
        import torch
        from transformers import set_seed

        set_seed(settings.train.seed)
        torch.manual_seed(settings.train.seed)
        model = build_cross(settings, start)
        target = train["p"] if data.snapshot.get("source") == "file" else train["label"]
        t_train = time.perf_counter()
        result, progress, budget, evaluator, stopped = _fit(settings, model, train, test, target, tmp, device,
                                                   config["learning_rate"])
        train_s = time.perf_counter() - t_train

        scores, pred_s = _soft_labels(model, data.llm, tmp)
        metrics, heldout, threshold = _heldout_metrics(data.llm, scores, tmp, version)
        metrics.update(_training_record(result, evaluator, budget, train_s, len(data.llm), pred_s, stopped))
        save_cross(model, layout.version_model_dir(tmp), threshold=threshold)
        from keyphrase_pipeline.models.training import write_version_records

        write_version_records(tmp, _records(config, ds, version, device, budget, snapshot, metrics, progress.history,
                                            heldout, threshold))
        import shutil

        shutil.rmtree(Path(tmp) / "_trainer", ignore_errors=True)
        commit_dir(tmp, final)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out:
        _advance_latest(settings, version)
    stats = {"version": version if not out else None, "path": final, "train_rows": len(train),
             "test_rows": len(test), **{k: v for k, v in metrics.items()
                                        if k not in ("train_fit", "heldout_history", "calibration")},
             "device": device, "precision": precision_name(device),
             "seconds": round(time.perf_counter() - t0, 1)}
    Lake.from_settings(settings).write_run_stats(ds, "train_cross", stats)
    log.info("cross-encoder %s: held-out F1 %.3f P %.3f R %.3f AUC %s at threshold %s (best step %s of %d)", version,
             heldout["f1"], heldout["precision"], heldout["recall"], heldout["auc"], threshold, metrics["best_step"],
             result.global_step)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="logical date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--labels", default=None, help="parquet/CSV with title, category, keyphrase, label (instead of the label store)")
    parser.add_argument("--out", default=None, help="write the model here instead of the registry")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override train.cross_max_steps (default -1: train.epochs over the data, early stopping)")


def main(settings: Settings, args) -> int:
    """``kp train-cross``: ``run`` for ``--ds`` (default: today, UTC); prints the stats as indented JSON and returns 0.

    Raises ConfigError (exit 2) for a ``--max-steps`` of 0 or below -1.
    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    ds = args.ds or dt.datetime.now(dt.UTC).date().isoformat()

    settings = with_step_cap(settings, "cross_max_steps", args.max_steps)
    stats = run(settings, ds, labels=args.labels, out=args.out)
    print(json.dumps(stats, indent=2, default=str))
    return 0
