"""The cross-encoder assistant stage (tiny random encoder, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from distill_helpers import DS, make_pairs, tiny_settings, trained_world, write_lake_inputs
from testsupport import make_settings


def test_cross_version_in_registry_with_soft_labels_and_metrics():
    from keyphrase_pipeline.artifacts import registry

    w = trained_world(make_settings)
    cross = w["cross"]
    assert registry.latest_cross(w["settings"]) == cross["version"]
    d = Path(cross["path"])
    for name in ("model", "soft_labels.parquet", "metrics.json", "train_config.json", "data.json", "MODEL_CARD.md",
                 "curves.png"):
        assert (d / name).exists(), name
    assert (d / "curves.png").read_bytes()[:4] == b"\x89PNG"
    soft = pd.read_parquet(d / "soft_labels.parquet")
    assert len(soft) == len(w["pairs"]) and soft["text_hash"].is_unique
    assert soft["score"].between(0, 1).all() and set(soft["split"]) == {"train", "test"}
    held = json.loads((d / "metrics.json").read_text())["heldout"]
    assert held["n"] == cross["test_rows"] and held["n"] + cross["train_rows"] == len(w["pairs"])
    # it learned: the synonym task is unsolvable by token overlap, yet the held-out AUC is high
    assert held["auc"] > 0.8
    stats = json.loads((w["lake"] / "runs" / f"ds={DS}" / "train_cross.json").read_text())
    assert stats["version"] == cross["version"]


def test_rerun_replaces_version_and_cli_with_labels_file(tmp_path, monkeypatch):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.stages import train_cross

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], cross_max_steps=3)
    write_lake_inputs(s, make_pairs(80, seed=5, with_ids=True), ctr=False)
    a = train_cross.run(s, DS)
    b = train_cross.run(s, DS)
    assert a["version"] == b["version"] and len(registry.list_versions(s, "cross")) == 1

    pairs = tmp_path / "mine.csv"
    make_pairs(60, seed=9).to_csv(pairs, index=False)
    for k, v in {"KP_LAKE_ROOT": str(tmp_path / "lake2"), "KP_TRAIN__BASE_MODEL": w["base"],
                 "KP_TRAIN__MATRYOSHKA_DIMS": "[32, 16]", "KP_SERVE__DIM": "16", "KP_TRAIN__MIN_ROWS": "20",
                 "KP_TRAIN__DEVICE": "cpu", "KP_TRAIN__BATCH_SIZE": "8"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        out = tmp_path / "mycross"
        assert cli.main(["train-cross", "--labels", str(pairs), "--out", str(out), "--ds", DS, "--max-steps", "2"]) == 0
        assert (out / "model" / "kp_model.json").exists() and (out / "soft_labels.parquet").exists()
        assert not (tmp_path / "lake2" / "registry" / "CROSS_LATEST").exists()  # --out: the registry is untouched
        bad = tmp_path / "bad.csv"
        make_pairs(60).drop(columns=["label"]).to_csv(bad, index=False)
        assert cli.main(["train-cross", "--labels", str(bad), "--ds", DS]) == 3
    finally:
        get_settings.cache_clear()


def test_budget_from_the_data_and_the_best_heldout_checkpoint_is_kept(tmp_path, monkeypatch):
    """Epochs decide the steps (no step cap), the held-out AUC is measured during training, and the model
    saved is the best checkpoint, not the last one: the evaluator is rigged so that only its FIRST
    evaluation looks good; the saved model must then score like the model of that first evaluation."""
    import math

    import numpy as np

    import keyphrase_pipeline.models.training as training
    from keyphrase_pipeline.stages import train_cross

    real = training.heldout_evaluator

    def rigged(score_fn, labels, name="heldout"):
        calls = {"n": 0}

        def worse_after_first(model):
            s = np.asarray(score_fn(model), dtype=float)
            calls["n"] += 1
            if calls["n"] > 1:   # later evaluations look random, so the first checkpoint is the best
                s = np.random.default_rng(calls["n"]).permutation(s)
            return s
        ev = real(worse_after_first, labels, name)
        rigged.evaluator = ev
        return ev

    monkeypatch.setattr(train_cross, "heldout_evaluator", rigged)  # where it is used: imported by name
    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], cross_max_steps=-1, epochs=3, evals_per_epoch=2,
                      early_stopping_patience=0)
    write_lake_inputs(s, make_pairs(160, seed=3, with_ids=True), ctr=False)
    f = train_cross.run(s, DS)
    assert f["device"] == "cpu" and f["precision"] == "fp32"  # where it trained (models.devices)
    per_epoch = math.ceil(f["train_rows"] / 16)
    assert f["budget"]["max_steps"] == 3 * per_epoch and f["steps"] == 3 * per_epoch
    assert f["stop_reason"] == "budget"  # no early stopping (patience 0): every planned step ran
    hist = rigged.evaluator.history
    assert len(hist) >= 4 and f["best_step"] == hist[0]["step"] == f["budget"]["eval_steps"]
    # the saved model is the first checkpoint: its held-out AUC is the one measured at the first evaluation
    assert f["heldout"]["auc"] == pytest.approx(hist[0]["auc"], abs=1e-5)
    assert abs(f["heldout"]["auc"] - hist[-1]["auc"]) > 1e-3  # (and the last evaluation was different)
    marker = json.loads((Path(f["path"]) / "model" / "kp_model.json").read_text())
    assert marker["threshold"] == pytest.approx(f["threshold"]) == pytest.approx(f["heldout"]["threshold"])
    assert (Path(f["path"]) / "calibration.png").read_bytes()[:4] == b"\x89PNG"


def test_heldout_with_one_class_stores_no_threshold(tmp_path):
    """A small file whose held-out keyphrases are all relevant: no threshold can be chosen there, so none is
    stored (kp score then writes no predicted_label), and the budget says there was no held-out evaluation."""
    from keyphrase_pipeline.labels.training_data import in_test_split
    from keyphrase_pipeline.stages import train_cross

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], cross_max_steps=2, evals_per_epoch=2)
    df = make_pairs(120, seed=4)
    df["keyphrase"] = df["keyphrase"] + " " + (df.index % 30).astype(str)
    test = in_test_split(df["keyphrase"].str.lower().tolist(), s.train.test_fraction)
    df.loc[test, "label"] = 1
    f = tmp_path / "one_class_heldout.csv"
    df.to_csv(f, index=False)
    fig = train_cross.run(s, DS, labels=str(f), out=str(tmp_path / "c"))
    assert fig["threshold"] is None and "NO held-out evaluation" in fig["budget"]["reason"]
    assert "threshold" not in json.loads((tmp_path / "c" / "model" / "kp_model.json").read_text())


DS2 = "2026-10-12"


def _day_two_lake(tmp_path, w, **train):
    """A copy of the trained world's lake plus a second day of labels (other pairs, other ids) on DS2."""
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(w["lake"], lake)
    s = tiny_settings(make_settings, lake, w["base"], **train)
    pairs = make_pairs(240, seed=7, with_ids=True)
    pairs["item_id"] += 10_000
    pairs["keyphrase_id"] += 10_000
    write_lake_inputs(s, pairs, ds=DS2, ctr=False)
    return s


def test_warm_start_from_the_previous_days_cross_encoder(tmp_path):
    """``train.cross_init_from=latest``: day 2 starts from day 1's cross-encoder (weights and head), under the warm
    step cap; a rerun of day 2 starts from day 1 again (not from its own output: same version id). With a
    vanishing learning rate the warm model scores day 1's pairs exactly as day 1's model did; a cold start
    (fresh head) does not."""
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.stages import train_cross

    w = trained_world(make_settings)
    s = _day_two_lake(tmp_path, w, cross_init_from="latest", warm_cross_max_steps=1, cross_max_steps=30,
                      cross_learning_rate=1e-12)
    warm = train_cross.run(s, DS2)
    day1 = w["cross"]["version"]
    record = json.loads((Path(warm["path"]) / "data.json").read_text())
    assert record["start_model"] == layout.model_dir(s, day1, "cross")
    config = json.loads((Path(warm["path"]) / "train_config.json").read_text())
    assert config["init_from"] == "latest" and config["max_steps"] == 1 and warm["steps"] == 1
    assert registry.latest_cross(s) == warm["version"]
    again = train_cross.run(s, DS2)
    assert again["version"] == warm["version"]
    assert json.loads((Path(again["path"]) / "data.json").read_text())["start_model"] == record["start_model"]
    train_cross.run(s.with_overrides(**{"train.cross_init_from": "base", "train.cross_max_steps": 1}), DS2,
                           out=str(tmp_path / "cold"))
    assert "start_model" not in json.loads((tmp_path / "cold" / "data.json").read_text())

    def day1_scores(path):
        soft = pd.read_parquet(Path(path) / "soft_labels.parquet").set_index("text_hash")["score"]
        return soft.loc[before.index].to_numpy()

    before = pd.read_parquet(Path(w["cross"]["path"]) / "soft_labels.parquet").set_index("text_hash")["score"]
    import numpy as np

    # (the tiny model's probabilities all sit near 0.5: the gaps are small but 100x apart)
    assert np.abs(day1_scores(warm["path"]) - before.to_numpy()).max() < 1e-5
    assert np.abs(day1_scores(tmp_path / "cold") - before.to_numpy()).max() > 1e-3


def test_warm_start_without_an_earlier_cross_encoder_starts_from_the_base(tmp_path):
    from keyphrase_pipeline.stages import train_cross

    s = tiny_settings(make_settings, tmp_path / "lake", trained_world(make_settings)["base"], cross_max_steps=2,
                      cross_init_from="latest", warm_cross_max_steps=1)
    write_lake_inputs(s, make_pairs(80, seed=5, with_ids=True), ctr=False)
    first = train_cross.run(s, DS)
    assert first["steps"] == 2  # cold: the ordinary cap
    assert "start_model" not in json.loads((Path(first["path"]) / "data.json").read_text())
