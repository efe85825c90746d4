"""A judge that says the same to every pair (SmolLM2-135M says no to all): its labels train nothing, the student
falls back to what else it has, and the gate keeps the champion (training_data.label_balance)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from distill_helpers import DS, make_pairs, tiny_settings, trained_world, write_lake_inputs
from testsupport import make_settings


def _balance(labels, source="lake", share=0.02, p=None, sources=None, min_auc=0.75):
    from keyphrase_pipeline.labels.training_data import TrainingData, label_balance

    s = make_settings("/tmp/kp-unused-lake", train={"min_label_class_share": share, "min_judge_ctr_auc": min_auc})
    frame = pd.DataFrame({"label": labels})
    if p is not None:
        frame = frame.assign(p=p, source=sources)
    data = TrainingData(llm=frame, ctr=None, sr=None, snapshot={"source": source})
    return label_balance(s, data)


def test_a_judge_that_does_not_tell_clicked_pairs_from_random_ones_is_refused():
    """Two classes yet noise (a weak LLM at a threshold tuned to its base rate): the judge's P(yes) hardly ranks the
    pairs drawn from CTR positives above random pairs (SmolLM2-135M: AUC 0.60; a judge worth training on: 0.9+)."""
    import numpy as np

    rng = np.random.default_rng(0)
    sources = ["ctr_positive"] * 100 + ["random"] * 100 + ["hard_negative"] * 50
    noise = rng.uniform(0.1, 0.4, 250)
    weak = _balance((noise >= 0.25).astype(int), p=noise, sources=sources)
    assert weak["usable"] is False and 0.4 < weak["ctr_auc"] < 0.6 and "min_judge_ctr_auc 0.75" in weak["why"]
    good_p = np.r_[rng.uniform(0.6, 1.0, 100), rng.uniform(0.0, 0.4, 100), rng.uniform(0, 1, 50)]
    good = _balance((good_p >= 0.5).astype(int), p=good_p, sources=sources)
    assert good["usable"] is True and good["ctr_auc"] == 1.0
    assert _balance((noise >= 0.25).astype(int), p=noise, sources=sources, min_auc=0.0)["usable"] is True  # off
    few = _balance((noise[:60] >= 0.25).astype(int), p=noise[:60], sources=["ctr_positive"] * 30 + ["random"] * 30)
    assert few["usable"] is True and few["ctr_auc"] is None  # under 50 of each source: no check
    assert _balance((noise >= 0.25).astype(int), p=noise, sources=sources, source="file")["usable"] is True


def test_label_balance_by_hand():
    assert _balance([0] * 100)["usable"] is False and "0.0% of the 100 stored pairs" in _balance([0] * 100)["why"]
    assert _balance([1] * 100)["usable"] is False  # a judge that says yes to everything teaches nothing either
    assert _balance([1] + [0] * 99)["usable"] is False  # 1% < 2%
    ok = _balance([1] * 3 + [0] * 97)
    assert ok["usable"] is True and ok["why"] is None and ok["smaller_class_share"] == 0.03
    assert _balance([0] * 100, share=0.0)["usable"] is True  # the check off
    assert _balance([0] * 100, source="file")["usable"] is True  # a user's file: load_training_data's own check
    assert _balance([])["usable"] is False


def _all_no_lake(tmp_path, **train):
    """A lake whose judge said no to every pair (P(yes) 0.2), with CTR positives from the pairs' true labels."""
    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], **train)
    pairs = make_pairs(240, seed=0, with_ids=True)
    write_lake_inputs(s, pairs)  # catalog, keyphrases, CTR positives
    write_lake_inputs(s, pairs.assign(label=0), ctr=False)  # the store: every label no
    return s


def test_one_sided_labels_train_no_cross_encoder_and_a_ctr_student_that_the_gate_keeps_out(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.stages import evaluate, train_bi, train_cross

    s = _all_no_lake(tmp_path)
    cross = train_cross.run(s, DS)
    assert cross["skipped"] is True and cross["version"] is None and "min_label_class_share" in cross["why"]
    assert registry.latest_cross(s) is None and cross["label_balance"]["positive_share"] == 0.0
    lake = Lake.from_settings(s)
    assert json.loads(open(lake.run_stats_path(DS, "train_cross")).read())["skipped"] is True

    first = train_bi.run(s, DS)  # default mix llm+ctr+kd: no llm task, no teacher for kd: CTR only
    assert set(first["task_rows"]) == {"ctr"} and first["label_mix"] == "ctr+kd"
    assert first["label_balance"]["usable"] is False
    got = evaluate.run(s, DS, candidate=first["version"])
    assert got["promoted"] and "first model" in got["reason"]  # nothing to keep: the first model serves

    second = train_bi.run(s.with_overrides(**{"train.seed": 7}), DS)
    assert second["version"] != first["version"]
    got = evaluate.run(s, DS, candidate=second["version"])
    assert not got["promoted"] and "cannot compare" in got["reason"] and registry.champion(s) == first["version"]
    assert got["test_set"]["label_balance"]["usable"] is False
    assert evaluate.run(s, DS, candidate=second["version"], force_promote=True)["promoted"]


def test_llm_only_mix_on_one_sided_labels_is_a_data_error(tmp_path):
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.stages import train_bi

    s = _all_no_lake(tmp_path)
    with pytest.raises(DataError, match="nothing left to train on"):
        train_bi.run(s, DS, label_mix="llm")


def test_the_check_off_trains_on_one_sided_labels(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import train_cross

    s = _all_no_lake(tmp_path, min_label_class_share=0.0)
    cross = train_cross.run(s, DS)
    assert cross.get("skipped") is None and registry.latest_cross(s) == cross["version"]


def test_an_explicit_out_folder_is_a_data_error_not_an_empty_success(tmp_path):
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.stages import train_cross

    s = _all_no_lake(tmp_path)
    with pytest.raises(DataError, match="no cross-encoder written to .*min_label_class_share"):
        train_cross.run(s, DS, out=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_labels_under_the_share_pick_neither_checkpoint_nor_threshold(tmp_path):
    """A minority class under the share yet present in the held-out split: the student must not be steered by labels
    declared unusable (no held-out evaluation, no stored threshold)."""
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], min_label_class_share=0.45, evals_per_epoch=2)
    pairs = make_pairs(240, seed=0, with_ids=True)
    write_lake_inputs(s, pairs)
    pairs.loc[pairs.index[pairs["label"] == 1][::3], "label"] = 0  # a third of the relevant ones said no: 33% yes
    write_lake_inputs(s, pairs, ctr=False)
    got = train_bi.run(s, DS, label_mix="ctr")
    assert got["label_balance"]["usable"] is False and 0.3 < got["label_balance"]["positive_share"] < 0.45
    assert got["threshold"] is None and got["heldout"] is None and got["best_step"] is None
    assert "NO held-out evaluation" in got["budget"]["reason"]
