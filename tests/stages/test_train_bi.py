"""The bi-encoder student: multi-task data, single-dataset batches, losses lowering, label mixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distill_helpers import DS, make_pairs, tiny_settings, trained_world, write_lake_inputs
from testsupport import make_settings


def test_proportional_sampler_gives_single_dataset_batches(tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        MultiDatasetBatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    from keyphrase_pipeline.models.bi_encoder import build_student
    from keyphrase_pipeline.models.losses import TaskLosses
    from keyphrase_pipeline.stages.train_bi import build_task_losses

    w = trained_world(make_settings)
    model = build_student(w["settings"], w["base"])
    sizes = {"ctr": 48, "llm": 96, "kd": 16}
    data = {name: Dataset.from_dict({"item": [f"{name} item {i}" for i in range(n)],
                                     "keyphrase": [f"{name} kp {i}" for i in range(n)],
                                     **({"label": [float(i % 2) for i in range(n)]} if name != "ctr" else {})})
            for name, n in sizes.items()}
    losses = build_task_losses(model, list(data), "pearson", [32, 16], TaskLosses())
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=8,
                                                multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
                                                report_to=[], use_cpu=True, seed=1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=losses)
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler
    counts = {k: 0 for k in sizes}
    concat = loader.dataset
    for batch in sampler:
        names = {concat[i]["item"].split()[0] for i in batch}
        assert len(names) == 1  # every batch from one dataset
        counts[names.pop()] += 1
    assert counts == {k: n // 8 for k, n in sizes.items()}  # in proportion to size: all of each dataset


def _contrastive(model, df, dim=16):
    from keyphrase_pipeline.models.bi_encoder import score_pairs

    d = 1 - score_pairs(model, df["title"].tolist(), df["category"].tolist(), df["keyphrase"].tolist(), dim=dim)
    y = df["label"].to_numpy()
    return float(np.mean(0.5 * (y * d ** 2 + (1 - y) * np.maximum(0.5 - d, 0) ** 2)))


def test_student_trained_multitask_lowers_the_loss():
    from keyphrase_pipeline.labels.training_data import load_training_data
    from keyphrase_pipeline.models.bi_encoder import load_student

    w = trained_world(make_settings)
    st = w["student"]
    assert st["label_mix"] == "llm+ctr+kd" and st["kd_loss"] == "pearson" and st["cross_version"] == w["cross"]["version"]
    assert set(st["task_rows"]) == {"ctr", "llm", "kd"} and st["steps"] == w["settings"].train.bi_max_steps
    d = Path(st["path"])
    cfg = json.loads((d / "train_config.json").read_text())
    assert cfg["matryoshka_dims"] == [32, 16] and cfg["serve_dim"] == 16  # read by the ONNX export
    history = json.loads((d / "history.json").read_text())
    assert {"ctr", "llm", "kd"} <= {t for h in history for t in h.get("tasks", {})}  # per-task losses logged
    assert (d / "curves.png").read_bytes()[:4] == b"\x89PNG"
    train = load_training_data(w["settings"], DS).llm_train
    before = _contrastive(load_student(w["base"], "cpu"), train)
    after = _contrastive(load_student(str(d / "model"), "cpu"), train)
    assert after < 0.7 * before, (before, after)


def test_label_mixes_and_kd_choices(tmp_path):
    from keyphrase_pipeline.core.errors import ConfigError, DataError
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=2)
    write_lake_inputs(s, w["pairs"])
    cross_dir = w["cross"]["path"]
    ctr_only = train_bi.run(s, DS, label_mix="ctr")
    assert ctr_only["device"] == "cpu" and ctr_only["precision"] == "fp32"  # where it trained (models.devices)
    assert set(ctr_only["task_rows"]) == {"ctr"}
    mse = train_bi.run(s, DS, cross=cross_dir, label_mix="llm+kd", kd_loss="mse")
    assert set(mse["task_rows"]) == {"llm", "kd"} and mse["kd_loss"] == "mse"
    assert mse["version"] != ctr_only["version"]
    # no cross-encoder anywhere: the kd task is skipped, the labels still train
    no_kd = train_bi.run(s, DS, label_mix="llm+kd")
    assert set(no_kd["task_rows"]) == {"llm"} and no_kd["tasks_skipped"] == ["kd"]
    with pytest.raises(ConfigError):
        train_bi.run(s, DS, kd_loss="kl")
    with pytest.raises(ConfigError):
        train_bi.run(s, DS, cross=str(tmp_path / "nowhere"))
    s2 = tiny_settings(make_settings, tmp_path / "lake2", w["base"], bi_max_steps=2)
    write_lake_inputs(s2, w["pairs"], ctr=False)
    with pytest.raises(DataError, match="no training data"):
        train_bi.run(s2, DS, label_mix="ctr")


def test_labels_file_with_cross_dir_scores_missing_pairs(tmp_path):
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=2)
    f = tmp_path / "mine.parquet"
    make_pairs(60, seed=11).to_parquet(f, index=False)  # texts the cross-encoder never scored
    out = tmp_path / "student"
    fig = train_bi.run(s, DS, labels=str(f), cross=w["cross"]["path"], out=str(out), label_mix="llm+kd")
    assert fig["version"] is None and set(fig["task_rows"]) == {"llm", "kd"}
    assert (out / "model" / "kp_model.json").exists()
    assert not (tmp_path / "lake" / "registry" / "students").exists()


def test_batches_never_repeat_a_keyphrase(tmp_path):
    """MNRL treats every other keyphrase of a batch as a negative: a repeated keyphrase would be its own false
    negative. The student's batches (NO_DUPLICATES sampler) hold each text at most once."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    from keyphrase_pipeline.models.bi_encoder import build_student
    from keyphrase_pipeline.models.losses import TaskLosses
    from keyphrase_pipeline.stages.train_bi import build_task_losses, training_arguments

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"])
    # CTR positives as they come: popular keyphrases are positive for many items
    items = [f"item {i}" for i in range(200)]
    kps = [f"keyphrase {i % 12}" for i in range(200)]
    tasks = {"ctr": Dataset.from_dict({"item": items, "keyphrase": kps})}
    model = build_student(s)
    losses = build_task_losses(model, list(tasks), "pearson", [32, 16], TaskLosses())
    trainer = SentenceTransformerTrainer(model=model, train_dataset=tasks, loss=losses,
                                         args=training_arguments(s, str(tmp_path / "t"), "cpu", max_steps=5))
    batches = 0
    for batch in trainer.get_train_dataloader():
        texts = [tuple(x) for x in batch["keyphrase_input_ids"].tolist()]
        assert len(texts) == len(set(texts)), "a keyphrase repeated inside one batch"
        batches += 1
    assert batches >= 200 // 16


def test_student_worse_than_its_start_keeps_the_start_model(tmp_path, monkeypatch):
    """When no checkpoint beats the start encoder on the held-out pairs (here: the evaluator is rigged so
    every checkpoint ranks the pairs exactly backwards, AUC 0), the student saved is the start encoder
    itself, and it says so."""
    import numpy as np

    import keyphrase_pipeline.models.training as training
    from keyphrase_pipeline.models.bi_encoder import load_student, score_pairs
    from keyphrase_pipeline.stages import train_bi

    real = training.heldout_evaluator

    def rigged(score_fn, labels, name="heldout"):
        backwards = -np.asarray(labels, dtype=float)
        return real(lambda m: backwards + 0 * np.asarray(score_fn(m)), labels, name)

    monkeypatch.setattr(training, "heldout_evaluator", rigged)
    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=12, evals_per_epoch=8)
    write_lake_inputs(s, w["pairs"])
    f = train_bi.run(s, DS, cross=w["cross"]["path"])
    assert f["kept_start_model"] is True and f["best_step"] is None and f["start_heldout_auc"] > 0
    assert f["stop_reason"] in ("budget", "early_stopping")
    pairs = w["pairs"].head(20)
    args = (pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist())
    saved = score_pairs(load_student(str(Path(f["path"]) / "model"), "cpu"), *args, dim=16)
    base = score_pairs(load_student(w["base"], "cpu"), *args, dim=16)
    np.testing.assert_allclose(saved, base, atol=1e-5)
    # the same run without the rigging trains as usual
    monkeypatch.setattr(training, "heldout_evaluator", real)
    g = train_bi.run(s.with_overrides(**{"train.seed": 7}), DS, cross=w["cross"]["path"])
    assert g["start_heldout_auc"] is not None and "kept_start_model" in g


def test_warm_start_from_an_earlier_days_champion(tmp_path):
    """``train.init_from=champion``: the student of a later day starts from the champion under the warm step cap
    (recorded in data.json and train_config.json); the day's own promoted student is never its start (rerun)."""
    import shutil

    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], init_from="champion", warm_bi_max_steps=3)
    registry.set_champion(s, w["student"]["version"], "day 1")
    later = "2026-10-12"
    write_lake_inputs(s, w["pairs"], ds=later)
    a = train_bi.run(s, later, cross=w["cross"]["path"])
    record = json.loads((Path(a["path"]) / "data.json").read_text())
    assert record["start_model"] == layout.model_dir(s, w["student"]["version"])
    assert json.loads((Path(a["path"]) / "train_config.json").read_text())["max_steps"] == 3 and a["steps"] == 3
    registry.set_champion(s, a["version"], "day 2")
    b = train_bi.run(s, later, cross=w["cross"]["path"])
    assert b["version"] == a["version"]
    # the day the champion was trained has no earlier champion: base encoder, ordinary cap
    c = train_bi.run(s, DS, cross=w["cross"]["path"], out=str(tmp_path / "c"))
    assert json.loads((tmp_path / "c" / "data.json").read_text())["start_model"] == w["base"] and c["steps"] == 40


def test_a_backfill_never_distils_from_a_later_days_cross_encoder(tmp_path):
    """Without --cross the teacher is CROSS_LATEST, unless it is from a day after the one trained: then the newest
    cross-encoder up to that day, here none, so no kd task (before: the later day's teacher)."""
    import shutil

    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], bi_max_steps=2)
    assert registry.latest_cross(s) == w["cross"]["version"]  # trained for DS
    earlier = "2026-10-08"
    write_lake_inputs(s, w["pairs"], ds=earlier)
    back = train_bi.run(s, earlier, out=str(tmp_path / "back"))
    assert back["cross_version"] is None and "kd" not in back["task_rows"]
    same_day = train_bi.run(s, DS, out=str(tmp_path / "same"))  # the day's own cross-encoder is its teacher
    assert same_day["cross_version"] == w["cross"]["version"] and "kd" in same_day["task_rows"]


def test_matryoshka_serve_weight_reaches_every_task_loss(tmp_path, monkeypatch):
    from keyphrase_pipeline.models.bi_encoder import build_student
    from keyphrase_pipeline.models.losses import TaskLosses
    from keyphrase_pipeline.stages import train_bi
    from keyphrase_pipeline.stages.train_bi import build_task_losses, matryoshka_weights

    w = trained_world(make_settings)
    settings = w["settings"].with_overrides(**{"train.matryoshka_serve_weight": 3.0})
    assert settings.serve.dim == 16 and list(settings.train.matryoshka_dims) == [32, 16]
    assert matryoshka_weights(settings) == [1.0, 3.0]
    assert matryoshka_weights(w["settings"]) == [1.0, 1.0]
    model = build_student(settings, w["base"])
    losses = build_task_losses(model, ["llm", "kd"], "pearson", [32, 16], TaskLosses(),
                               dim_weights=matryoshka_weights(settings))
    for recorded in losses.values():
        assert list(recorded.loss.matryoshka_weights) == [1.0, 3.0]
    # a run passes the setting on, and records it
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return build_task_losses(*args, **kwargs)

    monkeypatch.setattr(train_bi, "build_task_losses", spy)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=1, matryoshka_serve_weight=2.5)
    write_lake_inputs(s, w["pairs"])
    f = train_bi.run(s, DS, cross=w["cross"]["path"])
    assert seen["dim_weights"] == [1.0, 2.5]
    assert json.loads((Path(f["path"]) / "train_config.json").read_text())["matryoshka_serve_weight"] == 2.5


def test_kd_list_loss_margin_mse_trains_and_is_recorded(tmp_path, monkeypatch):
    """``train.kd_list_loss=margin_mse``: the kd_list task trains with MarginMSELoss (under MatryoshkaLoss, on a
    real tiny student), and train_config.json records it; the default is the listwise KL."""
    from sentence_transformers.sentence_transformer import losses as st_losses

    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    built, calls = {}, []
    real = train_bi.build_task_losses

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        built.update(out)
        inner = out["kd_list"].loss  # the MatryoshkaLoss the trainer calls on kd_list batches
        forward = inner.forward
        inner.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
        return out

    monkeypatch.setattr(train_bi, "build_task_losses", spy)
    for kind, cls in (("margin_mse", st_losses.MarginMSELoss), ("kl", st_losses.DistillKLDivLoss)):
        built.clear()
        calls.clear()
        # mostly lists, so that kd_list batches are drawn in a few steps (the proportional sampler)
        s = tiny_settings(make_settings, tmp_path / f"lake-{kind}", w["base"], bi_max_steps=6, kd_list_ratio=20.0,
                          kd_extra_ratio=0.0, label_mix="kd")
        if kind != "kl":
            s = s.with_overrides(**{"train.kd_list_loss": kind})
        write_lake_inputs(s, w["pairs"])
        f = train_bi.run(s, DS, cross=w["cross"]["path"])
        assert isinstance(built["kd_list"].loss.loss, cls) and calls, kind  # built, and kd_list batches trained
        assert json.loads((Path(f["path"]) / "train_config.json").read_text())["kd_list_loss"] == kind


def test_student_budget_counts_bi_epochs_not_the_cross_encoders_epochs(tmp_path):
    """``train.bi_epochs`` sets the student's passes over its rows; ``train.epochs`` is the cross-encoder's."""
    import math

    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=-1, epochs=100, bi_epochs=0.5)
    write_lake_inputs(s, w["pairs"])
    f = train_bi.run(s, DS, cross=w["cross"]["path"])
    rows = sum(f["task_rows"].values())
    assert f["steps"] == max(1, round(math.ceil(rows / s.train.batch_size) * 0.5))
    assert json.loads((Path(f["path"]) / "train_config.json").read_text())["epochs"] == 0.5


def test_cut_rotation_is_fitted_kept_only_when_it_helps_and_served(tmp_path, monkeypatch):
    """``train.cut_rotation``: after training the student is rotated (models.cut_rotation) when the held-out AUC at
    serve.dim does not drop; the saved model carries it, so scoring at serve.dim sees it; a rotation that hurts is
    not kept; off, nothing is fitted."""
    import shutil

    import numpy as np

    from keyphrase_pipeline.models import cut_rotation
    from keyphrase_pipeline.models.bi_encoder import load_student
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], bi_max_steps=5)
    s = s.with_overrides(**{"train.hybrid_score": False})  # the held-out AUC below is the rotation's alone
    good = train_bi.run(s, DS, cross=w["cross"]["path"], out=str(tmp_path / "good"))
    rec = good["cut_rotation"]
    assert rec["pairs"] > 0 and rec["heldout_auc_after"] is not None
    assert rec["applied"] == (rec["heldout_auc_after"] > rec["heldout_auc_before"])
    saved = cut_rotation.rotation_of(load_student(str(tmp_path / "good" / "model"), "cpu"))
    assert (saved is not None) == rec["applied"]
    assert good["heldout"]["auc"] == pytest.approx(max(rec["heldout_auc_before"], rec["heldout_auc_after"]), abs=1e-6)

    real = cut_rotation.fit_rotation
    monkeypatch.setattr(cut_rotation, "fit_rotation", lambda a, b: real(a, b)[:, ::-1].copy())  # least agreeing first
    bad = train_bi.run(s.with_overrides(**{"train.seed": 3}), DS, cross=w["cross"]["path"], out=str(tmp_path / "bad"))
    assert bad["cut_rotation"]["heldout_auc_after"] < bad["cut_rotation"]["heldout_auc_before"]
    assert bad["cut_rotation"]["applied"] is False
    assert cut_rotation.rotation_of(load_student(str(tmp_path / "bad" / "model"), "cpu")) is None
    off = train_bi.run(s.with_overrides(**{"train.cut_rotation": False}), DS, cross=w["cross"]["path"],
                       out=str(tmp_path / "off"))
    assert off["cut_rotation"] == {"applied": False, "why": "off (train.cut_rotation)"}
    model = load_student(str(tmp_path / "off" / "model"), "cpu")
    few = make_pairs(60, seed=5)  # 30 relevant pairs: fewer than 4 x serve.dim (64), the basis would be arbitrary
    same, record, _ = train_bi._rotate_before_cut(s, model, few, lambda m: np.zeros(len(few)), few)
    assert same is model and record["applied"] is False and "fewer than the 64" in record["why"]
    full = s.with_overrides(**{"serve.dim": 32})
    assert "no cut to rotate" in train_bi._rotate_before_cut(full, model, few, None, few)[1]["why"]
    assert np.isfinite(off["heldout"]["auc"])


def test_last_checkpoint_runs_every_step_and_keeps_the_last_one(tmp_path, monkeypatch, caplog):
    """``train.bi_checkpoint=last`` (the default): a held-out curve that peaks at its first evaluation (a noisy split)
    neither stops training nor picks that early checkpoint; the last step is kept and is on the curve. 'best' on the
    same curve keeps the first evaluation and stops early. A last step below the start model is still refused."""
    import numpy as np

    import keyphrase_pipeline.models.training as training
    from keyphrase_pipeline.stages import train_bi

    real = training.heldout_evaluator

    def peaks_first(score_fn, labels, name="heldout"):
        y = np.asarray(labels, dtype=float)
        calls = []

        def scores(m):
            calls.append(1)
            out = y.copy()
            if len(calls) > 1:   # every later checkpoint ranks one positive below one negative
                out[np.argmax(y)], out[np.argmin(y)] = 0.0, 1.0
            return out + 0 * np.asarray(score_fn(m))
        return real(scores, labels, name)

    monkeypatch.setattr(training, "heldout_evaluator", peaks_first)
    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=17, evals_per_epoch=8,
                      early_stopping_patience=1)
    write_lake_inputs(s, w["pairs"])
    best = train_bi.run(s.with_overrides(**{"train.bi_checkpoint": "best"}), DS, cross=w["cross"]["path"])
    assert best["checkpoint"] == "best" and best["stop_reason"] == "early_stopping" and best["best_step"] < best["steps"]
    caplog.set_level("INFO", logger="keyphrase_pipeline.stages.train_bi")
    last = train_bi.run(s, DS, cross=w["cross"]["path"])   # the default
    base = Path(w["base"])   # the log names the start model by its folder and the one above it, not just "model"
    assert f"held-out AUC of the start model ({base.parent.name}/{base.name}):" in caplog.text
    assert last["checkpoint"] == "last" and last["stop_reason"] == "budget" and last["steps"] == 17
    assert last["best_step"] == 17 and not last["kept_start_model"]
    metrics = json.loads((Path(last["path"]) / "metrics.json").read_text())
    assert last["budget"]["eval_steps"] > 1 and metrics["heldout_history"][-1]["step"] == 17 and len(metrics["heldout_history"]) > 2

    def backwards(score_fn, labels, name="heldout"):
        return real(lambda m: -np.asarray(labels, dtype=float) + 0 * np.asarray(score_fn(m)), labels, name)

    monkeypatch.setattr(training, "heldout_evaluator", backwards)
    refused = train_bi.run(s.with_overrides(**{"train.seed": 3}), DS, cross=w["cross"]["path"])
    assert refused["kept_start_model"] is True and refused["best_step"] is None


def test_hybrid_score_is_fitted_kept_only_when_it_helps_stored_and_scored(tmp_path, monkeypatch):
    """``train.hybrid_score``: after the cut rotation, a logistic regression of the judged train pairs on the cosine
    at serve.dim and the lexical match features (models.lexical_match) is kept when it lifts the held-out AUC; the
    model's kp_model.json stores it, its threshold and held-out metrics are on its scale, and ``kp score`` serves it;
    one that hurts is not kept; off, nothing is fitted."""
    import re
    import shutil

    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.commands.score import BiScorer
    from keyphrase_pipeline.models import lexical_match
    from keyphrase_pipeline.models.bi_encoder import load_hybrid, load_student, read_marker, score_pairs, write_marker
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], bi_max_steps=5)
    few = train_bi.run(s.with_overrides(**{"train.hybrid_min_heldout_pairs": 100}), DS, cross=w["cross"]["path"],
                       out=str(tmp_path / "few"))  # the default minimum, above the tiny world's held-out split
    assert few["hybrid_score"]["applied"] is False and load_hybrid(tmp_path / "few") is None
    assert re.fullmatch(r"\d+ held-out pairs, fewer than the 100 needed to choose on \(train.hybrid_min_heldout_pairs\)",
                        few["hybrid_score"]["why"])
    good = train_bi.run(s, DS, cross=w["cross"]["path"], out=str(tmp_path / "good"))
    rec = good["hybrid_score"]
    assert rec["pairs"] > 0 and set(rec["weights"]) == set(lexical_match.FEATURES) and rec["cosine_weight"] > 0
    assert rec["features_version"] == lexical_match.FEATURES_VERSION == 2  # fitted, and so served, with version 2
    assert rec["heldout_pairs"] >= 10  # the held-out pairs the lift was judged on (tiny_settings' minimum)
    rotation = good["cut_rotation"]
    assert rec["heldout_auc_before"] == pytest.approx(max(rotation["heldout_auc_before"] or 0,
                                                          rotation["heldout_auc_after"] or 0), abs=1e-6)
    assert rec["applied"] == (rec["heldout_auc_after"] > rec["heldout_auc_before"])
    assert good["heldout"]["auc"] == pytest.approx(max(rec["heldout_auc_before"], rec["heldout_auc_after"]), abs=1e-6)
    assert (load_hybrid(tmp_path / "good") is not None) == rec["applied"]

    # one that hurts (a large weight on the keyphrase's words found: the tiny world's negatives share words): not kept
    hurts = lexical_match.HybridScore(1.0, (50.0, 0.0, 0.0))
    monkeypatch.setattr(lexical_match, "fit_hybrid", lambda *a, **k: hurts)
    bad = train_bi.run(s.with_overrides(**{"train.seed": 3}), DS, cross=w["cross"]["path"], out=str(tmp_path / "bad"))
    assert bad["hybrid_score"]["heldout_auc_after"] < bad["hybrid_score"]["heldout_auc_before"]
    assert bad["hybrid_score"]["applied"] is False and load_hybrid(tmp_path / "bad") is None
    assert bad["heldout"]["auc"] == pytest.approx(bad["hybrid_score"]["heldout_auc_before"], abs=1e-6)
    monkeypatch.undo()

    off = train_bi.run(s.with_overrides(**{"train.hybrid_score": False}), DS, cross=w["cross"]["path"],
                       out=str(tmp_path / "off"))
    assert off["hybrid_score"] == {"applied": False, "why": "off (train.hybrid_score)"}
    assert load_hybrid(tmp_path / "off") is None

    # kp score serves what kp_model.json stores: the cosine at serve.dim plus the bonus
    model_dir = tmp_path / "off" / "model"
    marker = read_marker(model_dir)
    assert "hybrid" not in marker
    helps = lexical_match.HybridScore(2.0, (1.0, 0.5, -0.2), pairs=10)
    write_marker(model_dir, **{**marker, "hybrid": helps.as_dict()})
    assert load_hybrid(tmp_path / "off") == helps  # found through the version directory too
    pairs = pd.DataFrame({"title": ["UGREEN 20W charger", "red mug"], "category": ["", "Kitchen"],
                          "keyphrase": ["ugreen 20w charger", "ugreen 20w charger"]})
    cos = score_pairs(load_student(str(model_dir), "cpu"), pairs["title"].tolist(), pairs["category"].tolist(),
                      pairs["keyphrase"].tolist(), dim=s.serve.dim)
    bonus = np.array([1.0 * 1 + 0.5 * 1 - 0.2 * 0, 1.0 * 0 + 0.5 * 0 - 0.2 * 1]) / 2.0  # all words / none, 20w missing
    np.testing.assert_allclose(BiScorer(s, str(model_dir)).score(pairs), cos + bonus, atol=1e-5)


def test_a_labels_file_without_ctr_is_not_warned_about(monkeypatch, caplog, tmp_path):
    """With a labels file the ctr task has no data by design: said at INFO, not as a warning; from the lake, a task
    without data is a warning."""
    from types import SimpleNamespace

    from keyphrase_pipeline.stages import train_bi

    monkeypatch.setattr(train_bi, "build_task_datasets", lambda *a, **k: {"llm": [1, 2]})
    s = make_settings(tmp_path / "lake")
    file_data = SimpleNamespace(snapshot={"source": "file", "labels_file": "/x.csv"})
    with caplog.at_level("INFO", logger="keyphrase_pipeline.stages.train_bi"):
        assert train_bi._tasks(s, DS, file_data, ["llm", "ctr"], None)[2] == ["ctr"]
    assert "tasks without data" not in caplog.text and "labels: ['ctr'] skipped" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="keyphrase_pipeline.stages.train_bi"):
        assert train_bi._tasks(s, DS, file_data, ["llm", "sr", "ctr", "kd"], None)[2] == ["sr", "ctr", "kd"]
    assert "labels: ['ctr', 'sr'] skipped" in caplog.text and "tasks without data, skipped: ['kd']" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="keyphrase_pipeline.stages.train_bi"):
        train_bi._tasks(s, DS, SimpleNamespace(snapshot={"source": "lake"}), ["llm", "ctr"], None)
    assert "tasks without data, skipped: ['ctr']" in caplog.text
