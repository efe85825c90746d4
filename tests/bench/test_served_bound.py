"""bench/served_bound.py: how far the hybrid score's refits and an average of the teachers can take the served score on
half B, with the models a ``kp eval-labels --keep`` run kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distill_helpers import make_pairs, tiny_bases, tiny_settings
from testsupport import load_bench, make_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "TRAINING.md"


def _pairs(n: int, w_feature: float, seed: int):
    """Cosines, full-size cosines, features and labels where relevance is cosine + ``w_feature`` x the first feature."""
    rng = np.random.default_rng(seed)
    cos = rng.normal(0.5, 0.1, n)
    feat = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.integers(0, 3, n)])
    y = (cos + w_feature * feat[:, 0] + rng.normal(0, 0.05, n) > 0.5 + w_feature * 0.5).astype(int)
    return cos, cos + rng.normal(0, 0.2, n), feat, y


def test_the_fit_on_half_b_bounds_the_fit_on_half_a():
    """Half A's pairs weigh the lexical feature little, half B's much: the refit on half A ranks half B worse than the
    fit on half B itself, and both better than the cosine alone; at full size the (noisier) full cosines are graded."""
    bench = load_bench("served_bound", "served_bound")
    cos_a, full_a, feat_a, y_a = _pairs(3000, 0.05, 1)
    cos_b, full_b, feat_b, y_b = _pairs(3000, 0.3, 2)
    r = bench.hybrid_bounds(cos_a, cos_b, full_a, full_b, feat_a, feat_b, y_a, y_b)
    assert r["cosine"] < r["refit_half_a"] < r["oracle_half_b"]
    assert r["oracle_half_b"] - r["refit_half_a"] > 0.01
    assert r["full_dim_refit_half_a"] < r["refit_half_a"] - 0.05  # graded on full_b, 0.2 of noise added
    from keyphrase_pipeline.models.lexical_match import fit_hybrid

    h = fit_hybrid(cos_a, feat_a, y_a)
    from sklearn.metrics import roc_auc_score

    assert r["refit_half_a"] == pytest.approx(roc_auc_score(y_b, cos_b + h.bonus(feat_b)), abs=1e-4)
    # a fit that gives the cosine no positive weight is no hybrid score: no figure
    r = bench.hybrid_bounds(-cos_a, cos_b, full_a, full_b, feat_a, feat_b, y_a, y_b)
    assert r["refit_half_a"] is None and r["oracle_half_b"] is not None


def test_the_teachers_are_averaged_in_logits():
    bench = load_bench("served_bound", "served_bound")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 4000)
    y = np.where(rng.uniform(size=4000) < 0.1, 1 - truth, truth)   # 10% of the labels flipped

    def teacher():  # each errs on its own: their mean errs less
        return 1 / (1 + np.exp(-(truth * 2.0 - 1 + rng.normal(0, 1.5, 4000))))

    probs = {1: teacher(), 2: teacher(), 3: teacher()}
    r = bench.teacher_ensemble(probs, y, truth)
    assert r["seeds"] == [1, 2, 3] and set(r["auc"]) == {"1", "2", "3"}
    assert r["ensemble_auc"] > max(r["auc"].values()) and r["ensemble_truth_auc"] > max(r["truth_auc"].values())
    mean = np.mean([np.log(p / (1 - p)) for p in probs.values()], axis=0)
    from sklearn.metrics import roc_auc_score

    assert r["ensemble_auc"] == pytest.approx(roc_auc_score(y, mean), abs=1e-4)
    two = (np.log(probs[1] / (1 - probs[1])) + np.log(probs[3] / (1 - probs[3]))) / 2
    assert set(r["pairs_auc"]) == {"1+2", "1+3", "2+3"} and r["pairs_auc"]["1+3"] == pytest.approx(roc_auc_score(y, two), abs=1e-4)
    assert bench.teacher_ensemble(probs, y * 0.8 + 0.1)["auc"] == r["auc"]  # probability labels are cut at 0.5
    one = bench.teacher_ensemble({7: probs[1]}, y)
    assert one["ensemble_auc"] == one["auc"]["7"] and "truth_auc" not in one
    with pytest.raises(ValueError, match="no teachers"):
        bench.teacher_ensemble({}, y)


def test_the_table():
    bench = load_bench("served_bound", "served_bound")
    result = {"world": "w", "bar": 0.05, "students": [
        {"seed": 1, "zero_shot_auc": 0.78, "cosine": 0.81, "served": 0.83, "refit_half_a": 0.8301,
         "oracle_half_b": 0.834, "full_dim_refit_half_a": None}],
        "teachers": {"seeds": [1, 2], "auc": {"1": 0.82, "2": 0.81}, "ensemble_auc": 0.825, "pairs_auc": {"1+2": 0.824},
                     "truth_auc": {"1": 0.96, "2": 0.95}, "ensemble_truth_auc": 0.97}}
    lines = bench.markdown_table([result, {**result, "world": None, "labels": "/x/mine.csv",
                                           "teachers": {"seeds": [1], "auc": {"1": 0.8}, "ensemble_auc": 0.8}}]).splitlines()
    assert lines[2] == "| w | 1 | 0.8300 | 0.8100 | 0.8300 | 0.8301 | 0.8340 | — |"
    assert lines[3].startswith("| mine.csv | 1 |")
    assert lines[7] == "| w | 1, 2 | 0.8200, 0.8100 | 0.8250 | 1+2: 0.8240 | 0.9600, 0.9500 -> 0.9700 |"
    assert lines[8] == "| mine.csv | 1 | 0.8000 | 0.8000 | — | no truth |"


def test_measure_rebuilds_the_split_and_scores_the_kept_models(tmp_path):
    """A kept ``kp eval-labels`` run (tiny encoder, a labels file, two seeds): the student scored here as served is the
    run's own figure, each teacher's AUC is the run's, and a result file of another split is refused."""
    from keyphrase_pipeline.commands import eval_labels

    bench = load_bench("served_bound", "served_bound")
    s = tiny_settings(make_settings, tmp_path / "lake", tiny_bases()["base"], cross_max_steps=4, bi_max_steps=4)
    pairs = make_pairs(200, seed=2)
    pairs["keyphrase"] = pairs["keyphrase"] + " " + (pairs.index % 40).astype(str)
    path = tmp_path / "judged.csv"
    pairs.to_csv(path, index=False)
    run = eval_labels.run(s, labels=str(path), seeds=[1, 2], keep=str(tmp_path / "keep"))
    r = bench.measure(s, None, str(path), 0, tmp_path / "keep", [run])
    assert [x["seed"] for x in r["students"]] == [1, 2] and r["simulated"] is False and r["serve_dim"] == s.serve.dim
    for row, seed_run in zip(r["students"], run["per_seed"]):
        assert row["served"] == pytest.approx(seed_run["metrics"]["student"]["auc"], abs=2e-4)
        assert row["teacher_auc"] == seed_run["metrics"]["cross"]["auc"]
        assert r["teachers"]["auc"][str(row["seed"])] == pytest.approx(seed_run["metrics"]["cross"]["auc"], abs=2e-4)
    assert "truth_auc" not in r["teachers"]  # a team's file has no truth
    # a teacher reused from elsewhere (kp eval-labels --cross DIR) is read from there
    import shutil

    shutil.move(tmp_path / "keep" / "cross-1", tmp_path / "elsewhere-1")
    shutil.move(tmp_path / "keep" / "cross-2", tmp_path / "elsewhere-2")
    reused = {**run, "config": {**run["config"], "cross_reused": str(tmp_path / "elsewhere-{seed}")}}
    assert bench.measure(s, None, str(path), 0, tmp_path / "keep", [reused])["teachers"] == r["teachers"]
    with pytest.raises(FileNotFoundError, match="no kept teacher of seed 1"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [run])
    with pytest.raises(ValueError, match="seed 1 is in two result files"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [reused, reused])
    cross_only = json.loads(json.dumps(reused))
    del cross_only["per_seed"][0]["metrics"]["student"]
    with pytest.raises(ValueError, match="no student"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [cross_only])
    # models that are not the run's (seed 2's student under seed 1's name) are refused
    swapped = json.loads(json.dumps(reused))
    swapped["per_seed"][0]["metrics"]["student"]["auc"] = swapped["per_seed"][1]["metrics"]["student"]["auc"] + 0.01
    with pytest.raises(ValueError, match="not the run's models"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [swapped])
    with pytest.raises(ValueError, match="is of alt, not of"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [{**reused, "world": "alt", "labels": None}])
    other = json.loads(json.dumps(run))
    other["split"]["a_pairs"] += 1
    with pytest.raises(ValueError, match="another world, file, --pairs or serve.dim"):
        bench.measure(s, None, str(path), 0, tmp_path / "keep", [other])
    with pytest.raises(FileNotFoundError, match="no kept student of seed 1"):
        bench.measure(s, None, str(path), 0, tmp_path / "nothing", [reused])


def test_the_docs_table_is_the_committed_files():
    """docs/TRAINING.md's table is generated from bench/results/hybrid/served_bound_*.json, and each committed row's
    figures agree with each other (the kept student reproduced its run's served AUC; ``measure`` refuses otherwise)."""
    bench = load_bench("served_bound", "served_bound")
    results = [json.loads(p.read_text()) for p in bench.RESULTS]
    assert {r["world"] for r in results} >= {"alt"} and all(r["simulated"] for r in results)
    doc = DOCS.read_text()
    start, end = "<!-- served bound table -->\n", "\n<!-- /served bound table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(results)
    for r in results:
        for s in r["students"]:
            assert s["served"] == pytest.approx(s["served_as_run"], abs=1e-4)
            assert s["cosine"] <= s["served"] <= s["oracle_half_b"]
