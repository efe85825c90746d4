"""Evaluation metrics and the promotion gate (both ways, forced, manual)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from distill_helpers import DS, trained_world
from testsupport import make_settings

from keyphrase_pipeline.core import layout


def test_best_f1_cut_and_crossfit_hand_cases():
    from keyphrase_pipeline.models.metrics import best_f1_cut
    from keyphrase_pipeline.stages.evaluate import crossfit_predictions

    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    # cut after 0.8: F1 = 2*2/(2+3) = 0.8; after 0.6: 2*3/(4+3) = 0.857 -> threshold between 0.6 and 0.2
    assert best_f1_cut(y, s) == pytest.approx(0.4)
    assert best_f1_cut(np.array([0, 1]), np.array([0.5, 0.5])) < 0.5  # ties go together
    y2 = np.tile([1, 0], 50)
    s2 = np.where(y2 == 1, 0.8, 0.3) + np.linspace(0, 0.01, 100)
    pred, thr = crossfit_predictions(y2, s2, [f"h{i}" for i in range(100)])
    assert (pred == y2).all() and len(thr) == 2 and all(0.3 < t < 0.8 for t in thr)


def _lake_copy(tmp_path, review=None):
    """The trained tiny world's lake copied; ``review``: ``review.*`` settings (default: the gate alone, no person
    asked: the gate's own tests; the review tests pass theirs)."""
    w = trained_world(make_settings)
    root = tmp_path / "lake"
    shutil.copytree(w["lake"], root)
    return w, make_settings(root, train=w["settings"].train.model_dump(), serve={"dim": 16},
                            review=review or {"approval": False})


def _register_random(settings, w, version=f"{DS}-deadbeef"):

    d = Path(layout.registry_version_dir(settings, version))
    shutil.copytree(w["random"], d / "model")
    (d / "train_config.json").write_text(json.dumps({"ds": DS, "created_at": "2026-10-10T09:00:00", "label_mix": "none"}))
    return version


def test_first_model_is_promoted_with_metrics(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path)
    fig = evaluate.run(s, DS)
    v = w["student"]["version"]
    assert fig["promoted"] and fig["version"] == v and "first model" in fig["reason"]
    assert registry.champion(s) == v
    m = fig["metrics"]
    assert m["dim"] == 16 and m["llm"]["n"] == w["cross"]["test_rows"]
    assert m["llm"]["f1"] > 0.8 and m["llm"]["auc"] > 0.85  # the trained student learned the synonyms
    assert m["rho_cross"] is not None and m["rho_cross"] > 0.5
    stored = json.loads((Path(layout.registry_version_dir(s, v)) / "metrics.json").read_text())
    assert stored["eval"]["llm"]["f1"] == m["llm"]["f1"] and "training" in stored
    assert json.loads((tmp_path / "lake" / "runs" / f"ds={DS}" / "evaluate.json").read_text())["promoted"] is True


def test_gate_both_ways_force_and_manual(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.commands import promote
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path)
    good = w["student"]["version"]
    broken = _register_random(s, w)
    # a better challenger replaces a broken champion
    registry.set_champion(s, broken, "setup")
    fig = evaluate.run(s, DS, candidate=good)
    assert fig["promoted"] and registry.champion(s) == good
    assert fig["champion_metrics"]["llm"]["f1"] < fig["metrics"]["llm"]["f1"]
    # a broken challenger (random weights) is refused; the champion stays; the reason is recorded
    fig = evaluate.run(s, DS, candidate=broken)
    assert not fig["promoted"] and registry.champion(s) == good
    assert "champion kept" in fig["reason"]
    promo = json.loads((Path(layout.registry_version_dir(s, broken)) / "promotion.json").read_text())
    assert promo["promoted"] is False and promo["reason"] == fig["reason"] and promo["champion_before"] == good
    stats = json.loads((tmp_path / "lake" / "runs" / f"ds={DS}" / "evaluate.json").read_text())
    assert stats["promoted"] is False and stats["reason"] == fig["reason"]
    # forced
    fig = evaluate.run(s, DS, candidate=broken, force_promote=True)
    assert fig["promoted"] and registry.champion(s) == broken and "forced" in fig["reason"]
    # manual override back
    out = promote.run(s, good, reason="rollback after incident")
    assert out["previous"] == broken and registry.champion(s) == good
    promo_good = json.loads((Path(layout.registry_version_dir(s, good)) / "promotion.json").read_text())
    assert promo_good["reason"] == "manual: rollback after incident"
    from keyphrase_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError):
        promote.run(s, "2026-01-01-00000000")


def test_cli_require_promotion_exit_code(tmp_path, monkeypatch):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.settings import get_settings

    w, s = _lake_copy(tmp_path)
    broken = _register_random(s, w)
    registry.set_champion(s, w["student"]["version"], "setup")
    monkeypatch.setenv("KP_LAKE_ROOT", s.lake_root)
    monkeypatch.setenv("KP_TRAIN__MATRYOSHKA_DIMS", "[32, 16]")
    monkeypatch.setenv("KP_SERVE__DIM", "16")
    monkeypatch.setenv("KP_TRAIN__TEST_FRACTION", str(s.train.test_fraction))
    monkeypatch.setenv("KP_TRAIN__MIN_ROWS", "20")
    get_settings.cache_clear()
    try:
        assert cli.main(["evaluate", "--ds", DS, "--candidate", broken, "--require-promotion"]) == 4
        assert cli.main(["promote", "--version", broken, "--reason", "test"]) == 0
        assert registry.champion(s) == broken
        assert cli.main(["promote", "--list"]) == 0
        assert cli.main(["promote", "--version", "nope"]) == 2
    finally:
        get_settings.cache_clear()


def test_world_truth_and_recall_at_k_by_exposure(tiny_world):
    """In a synthetic world: F1 against TRUE relevance and recall@K for tail vs head items."""
    import pandas as pd
    from distill_helpers import tiny_bases, tiny_settings, write_lake_inputs

    from keyphrase_pipeline.core.lake import Lake, read_parquet
    from keyphrase_pipeline.stages.evaluate import evaluate_model
    from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

    w = tiny_bases()
    s = tiny_settings(make_settings, Path(tiny_world.lake_root), w["base"], eval_k=1000, eval_max_items=30)
    lake = Lake.from_settings(s)
    ds = lake.partitions("catalog")[-1]
    world = World.load(s)
    catalog = read_parquet(lake.path("catalog", ds=ds))
    kps = read_parquet(lake.path("keyphrases"))
    items = catalog.sample(300, random_state=0, replace=True).reset_index(drop=True)
    kp = kps.sample(300, random_state=1, replace=True).reset_index(drop=True)
    pairs = pd.DataFrame({"title": items["title"], "category": items["category"], "keyphrase": kp["text"],
                          "item_id": items["item_id"], "keyphrase_id": kp["keyphrase_id"]})
    pairs["label"] = (simulated_p_yes(world, pairs["item_id"], pairs["keyphrase_id"], 0.9) >= 0.5).astype(int)
    pairs = pairs.drop_duplicates(["title", "category", "keyphrase"])
    write_lake_inputs(s, pairs, ds=ds, ctr=False)
    m = evaluate_model(s, w["base"], ds=ds)
    assert m["truth"]["n"] > 0 and 0 <= m["truth"]["f1"] <= 1
    assert 0.75 < m["truth"]["llm_label_agreement"] < 1.0  # the simulated judge errs ~10% of the time
    r = m["relevance_recall_at_k"]
    assert r["keyphrases"] == len(kps)
    for bucket in ("tail", "head"):
        assert 0 < r[bucket]["items"] <= 30
        assert r[bucket]["relevance_recall_at_k"] == pytest.approx(1.0)  # K covers every keyphrase: all found
    s5 = s.with_overrides(**{"train.eval_k": 5})
    r5 = evaluate_model(s5, w["base"], ds=ds)["relevance_recall_at_k"]
    assert all(0 <= r5[b]["relevance_recall_at_k"] <= 1 and 0 <= r5[b]["precision_at_k"] <= 1 for b in ("tail", "head"))


# ---- a person decides close or risky promotions (review.*) --------------------------------------------------------
def test_review_reasons_close_calls_either_way_and_risky_promotions_only():
    from keyphrase_pipeline.stages.evaluate import review_reasons

    s = make_settings(Path("/tmp/unused"), train={"promote_tolerance": 0.01},
                      review={"margin_band": 0.005, "agreement_drop": 0.1, "topk_changed_share": 0.5})
    champ = {"llm": {"f1": 0.80}, "rho_cross": 0.9}

    def m(f1, rho=0.9):
        return {"llm": {"f1": f1}, "rho_cross": rho}

    # threshold 0.79: within 0.005 either side is close; the gate's own answer does not matter
    assert review_reasons(s, m(0.794), champ, True, None)[0].startswith("close call")
    assert review_reasons(s, m(0.786), champ, False, None)[0].startswith("close call")
    assert review_reasons(s, m(0.80), champ, True, None) == []  # a clear win
    assert review_reasons(s, m(0.70), champ, False, None) == []  # a clear loss
    # risky promotions: agreement with the cross-encoder drops, or the top-K changes a lot
    assert "agreement" in review_reasons(s, m(0.85, rho=0.75), champ, True, None)[0]
    assert review_reasons(s, m(0.85, rho=0.85), champ, True, None) == []
    topk = {"changed_share": 0.6, "items": 10, "k": 5}
    assert "top-K changes" in review_reasons(s, m(0.85), champ, True, topk)[0]
    assert review_reasons(s, m(0.85), champ, True, {**topk, "changed_share": 0.4}) == []
    # the judge and the cross-encoder drift apart since the champion was evaluated
    drift = {**m(0.85), "judge_cross_auc": 0.70}
    assert "agree less" in review_reasons(s, drift, champ, True, None, judge_cross_then=0.85)[0]
    assert review_reasons(s, drift, champ, True, None, judge_cross_then=0.75) == []
    assert review_reasons(s, drift, champ, True, None, judge_cross_then=None) == []
    # a clear loss stays automatic whatever the agreement or the top-K
    assert review_reasons(s, m(0.70, rho=0.1), champ, False, topk, judge_cross_then=0.99) == []


def test_a_close_call_waits_for_a_person_then_approve_promotes(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.stages import evaluate

    # every comparison is a close call with a band of 1.0
    w, s = _lake_copy(tmp_path, review={"margin_band": 1.0, "topk_items": 20, "topk_keyphrases": 50})
    good = w["student"]["version"]
    broken = _register_random(s, w)
    registry.set_champion(s, broken, "setup")
    fig = evaluate.run(s, DS, candidate=good)
    assert not fig["promoted"] and registry.champion(s) == broken  # nothing moves while it waits
    assert fig["review"]["needed"] and fig["review"]["pending"] and fig["review"]["gate_would_promote"]
    assert "awaiting a person's approval" in fig["reason"] and "close call" in fig["reason"]
    topk = fig["review"]["topk_change"]
    assert topk["items"] == 20 and topk["keyphrases"] == 50 and 0 <= topk["changed_share"] <= 1
    promo = json.loads((Path(layout.registry_version_dir(s, good)) / "promotion.json").read_text())
    assert promo["promoted"] is False and promo["review"]["pending"] is True
    out = evaluate.apply_review(s, DS, "approve", reviewer="ana", at="2026-10-10T10:00:00+00:00")
    assert out["promoted"] and registry.champion(s) == good and out["champion_after"] == good
    assert out["reason"].startswith("approved by ana at 2026-10-10T10:00:00+00:00")
    assert out["review"]["decision"] == {"decision": "approve", "reviewer": "ana", "at": "2026-10-10T10:00:00+00:00",
                                         "timed_out": False}
    promo = json.loads((Path(layout.registry_version_dir(s, good)) / "promotion.json").read_text())
    assert promo["promoted"] is True and promo["review"]["pending"] is False
    stats = json.loads((tmp_path / "lake" / "runs" / f"ds={DS}" / "evaluate.json").read_text())
    assert stats["promoted"] is True and stats["review"]["decision"]["reviewer"] == "ana"
    history = (Path(s.lake_root) / "registry" / "champion_history.jsonl").read_text()
    assert "approved by ana" in history
    # the same answer again (a cleared task re-run), or a timeout after it, changes nothing
    assert evaluate.apply_review(s, DS, "approve", reviewer="ana")["review"]["decision"]["reviewer"] == "ana"
    assert evaluate.apply_review(s, DS, None)["review"]["decision"]["decision"] == "approve"
    # another person's other answer is refused, naming who decided
    from keyphrase_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="already decided: approve by ana"):
        evaluate.apply_review(s, DS, "reject", reviewer="bo")
    assert registry.champion(s) == good


def test_an_approval_does_not_override_a_champion_changed_while_it_waited(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.commands import promote
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path, review={"margin_band": 1.0, "topk_items": 0})
    good, broken = w["student"]["version"], _register_random(s, w)
    third = _register_random(s, w, version=f"{DS}-cafe0000")
    registry.set_champion(s, broken, "setup")
    assert evaluate.run(s, DS, candidate=good)["review"]["pending"]
    promote.run(s, third, reason="incident fix")  # someone moves the champion meanwhile
    out = evaluate.apply_review(s, DS, "approve", reviewer="ana")
    assert not out["promoted"] and registry.champion(s) == third
    assert "the champion changed while the promotion waited" in out["reason"] and third in out["reason"]


@pytest.mark.parametrize("decision, reviewer, expect", [("reject", "bo", "rejected by bo"),
                                                        (None, None, "no answer within")])
def test_reject_or_no_answer_keeps_the_champion(tmp_path, decision, reviewer, expect):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path, review={"margin_band": 1.0, "topk_items": 0})
    good, broken = w["student"]["version"], _register_random(s, w)
    registry.set_champion(s, broken, "setup")
    with pytest.raises(ConfigError, match="approve"):
        evaluate.apply_review(s, DS, "maybe")
    assert evaluate.run(s, DS, candidate=good)["review"]["topk_change"] is None  # topk_items 0: not measured
    out = evaluate.apply_review(s, DS, decision, reviewer=reviewer)
    assert not out["promoted"] and registry.champion(s) == broken and expect in out["reason"]
    assert out["review"]["decision"]["timed_out"] is (decision is None)
    if decision is None:  # a person who answers after the timeout (the approval task cleared) is heard
        out = evaluate.apply_review(s, DS, "approve", reviewer="cy")
        assert out["promoted"] and registry.champion(s) == good and out["review"]["decision"]["reviewer"] == "cy"


def test_no_review_without_a_champion_or_when_forced_or_off(tmp_path):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path, review={"margin_band": 1.0, "topk_items": 0})
    good, broken = w["student"]["version"], _register_random(s, w)
    fig = evaluate.run(s, DS, candidate=good)  # the first model: nothing to compare with
    assert fig["promoted"] and not fig["review"]["needed"]
    with pytest.raises(ConfigError, match="no promotion waits"):
        evaluate.apply_review(s, DS, "approve")
    fig = evaluate.run(s, DS, candidate=broken, force_promote=True)
    assert fig["promoted"] and registry.champion(s) == broken and not fig["review"]["needed"]
    off = s.with_overrides(**{"review.approval": False})
    fig = evaluate.run(off, DS, candidate=good)
    assert fig["promoted"] and not fig["review"]["needed"]


def test_cli_answers_a_pending_review(tmp_path, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.stages import evaluate

    w, s = _lake_copy(tmp_path, review={"margin_band": 1.0, "topk_items": 0})
    good, broken = w["student"]["version"], _register_random(s, w)
    registry.set_champion(s, broken, "setup")
    assert evaluate.run(s, DS, candidate=good)["review"]["pending"]
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        assert cli.main(["evaluate", "--ds", DS, "--review", "approve", "--reviewer", "cy"]) == 0
        assert registry.champion(s) == good and "approved by cy" in capsys.readouterr().out
        assert cli.main(["evaluate", "--ds", "2026-01-01", "--review", "reject"]) == 2  # nothing waits that day
    finally:
        get_settings.cache_clear()


def test_the_llm_metrics_grade_the_student_as_served_with_its_hybrid_score(tmp_path):
    """A student with a hybrid score (models.lexical_match) is graded on cosine + bonus, the score kp score and
    kp recommend serve; its cosine alone gives another AUC."""
    from keyphrase_pipeline.labels.training_data import load_training_data
    from keyphrase_pipeline.models.bi_encoder import load_student, read_marker, score_pairs, write_marker
    from keyphrase_pipeline.models.lexical_match import HybridScore
    from keyphrase_pipeline.models.metrics import auc_or_none
    from keyphrase_pipeline.stages.evaluate import evaluate_model

    w, s = _lake_copy(tmp_path)
    model_dir = Path(layout.version_model_dir(layout.registry_version_dir(s, w["student"]["version"])))
    data = load_training_data(s, DS, need_ctr=False, need_sr=False)
    test = data.llm_test
    cos = score_pairs(load_student(str(model_dir), "cpu"), test["title"].tolist(), test["category"].tolist(),
                      test["keyphrase"].tolist(), dim=16)
    marker = {k: v for k, v in read_marker(model_dir).items() if k != "hybrid"}  # train-bi may have kept one
    write_marker(model_dir, **marker)
    before = evaluate_model(s, str(model_dir), data=data)["llm"]["auc"]
    assert before == pytest.approx(auc_or_none(test["label"].to_numpy(), cos))
    hybrid = HybridScore(1.0, (-1.0, 0.0, 0.0))  # large against the cosines' spread: it changes the order
    write_marker(model_dir, **{**marker, "hybrid": hybrid.as_dict()})
    want = hybrid.score(cos, test["title"].tolist(), test["category"].tolist(), test["keyphrase"].tolist())
    after = evaluate_model(s, str(model_dir), data=data)["llm"]["auc"]
    assert after == pytest.approx(auc_or_none(test["label"].to_numpy(), want)) and after != pytest.approx(before)
