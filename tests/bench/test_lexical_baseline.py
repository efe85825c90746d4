"""bench/lexical_baseline.py: the hybrid score's lexical features fitted on the untrained encoder's cosine, on
``kp eval-labels``' split, and its table beside the served students."""

from __future__ import annotations

import numpy as np
import pytest
from testsupport import load_bench, make_settings


def test_world_baseline_grades_half_b_with_the_fit_of_half_a(tmp_path):
    from keyphrase_pipeline.commands.eval_labels import load_pairs, split_by_keyphrase
    from keyphrase_pipeline.models.metrics import auc_or_none
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    bench = load_bench("lexical_baseline", "lexical_baseline")
    model = build_tiny_encoder(tmp_path / "model", hidden=32, seed=1)
    s = make_settings(tmp_path / "lake", train={"base_model": model, "matryoshka_dims": [32, 16]}, serve={"dim": 16})
    row = bench.world_baseline(s, "attr", 400)
    pairs = load_pairs(None, "attr", 400).reset_index(drop=True)
    in_a = split_by_keyphrase(pairs["keyphrase"].tolist())
    assert row["split"] == {"a_pairs": int(in_a.sum()), "b_pairs": int((~in_a).sum())}
    assert set(row["auc"]) == set(bench.MODELS) and set(row["truth_auc"]) == set(bench.MODELS)
    assert row["hybrid"]["pairs"] == in_a.sum()  # fitted on half A only
    assert row["hybrid"]["features_version"] == 2
    # attr writes pack counts two ways (2 pk, 2 Pack): some pairs' features are not version 1's
    from keyphrase_pipeline.models.lexical_match import match_features

    texts = (pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist())
    changed = (np.abs(match_features(*texts) - match_features(*texts, version=1)).max(axis=1) > 0).mean()
    assert 0 < row["features_changed_vs_v1"] == pytest.approx(changed, abs=1e-4)
    # the lexical term is graded on B: a random tiny encoder's cosine orders B worse than words found do
    assert row["auc"]["zero_shot_hybrid"] > row["auc"]["zero_shot_cut"] + 0.05
    words = pairs.apply(lambda r: np.mean([w in r["title"].lower() for w in r["keyphrase"].lower().split()]), axis=1)
    b = ~in_a
    assert abs(row["auc"]["lexical_only"] - auc_or_none(pairs["label"][b].to_numpy(int), words[b].to_numpy())) < 0.05


def test_the_table_puts_the_served_students_beside_the_zero_shot_hybrid():
    bench = load_bench("lexical_baseline", "lexical_baseline")
    auc = {"zero_shot": 0.70, "zero_shot_cut": 0.69, "zero_shot_hybrid": 0.75, "lexical_only": 0.72}
    v1 = {"worlds": [{"world": "w", "auc": auc}, {"world": "v", "auc": auc}]}  # before versions were recorded
    v2 = {"features_version": 2, "worlds": [{"world": "w", "auc": {**auc, "zero_shot_hybrid": 0.76}}]}
    runs = {("w", 1): {"teacher": [0.79, 0.81], "student": [0.80, 0.82]}, ("w", 2): {"teacher": [0.8], "student": [0.83]}}
    lines = bench.markdown_table([v2, v1], runs).splitlines()
    assert lines[2] == "| w | v1 | 0.7000 | 0.6900 | 0.7500 | 0.7200 | 0.8000 | 0.8100 (2 seeds) | +0.0600 |"
    assert lines[3] == "| w | v2 | 0.7000 | 0.6900 | 0.7600 | 0.7200 | 0.8000 | 0.8300 (1 seed) | +0.0700 |"
    assert lines[4] == "| v | v1 | 0.7000 | 0.6900 | 0.7500 | 0.7200 | not run | not run |  |"


def test_a_files_version_is_its_own_or_its_fits():
    bench = load_bench("lexical_baseline", "lexical_baseline")
    assert bench._version({"features_version": 2, "worlds": []}) == 2
    assert bench._version({"worlds": [{"hybrid": {"features_version": 2}}, {"hybrid": None}]}) == 2
    assert bench._version({"worlds": [{"hybrid": {}}]}) == 1 and bench._version({"worlds": []}) == 1
    with pytest.raises(ValueError, match="versions"):
        bench._version({"worlds": [{"hybrid": {"features_version": 2}}, {"hybrid": {"features_version": 1}}]})


def test_the_docs_table_is_the_committed_baseline_beside_the_committed_hybrid_runs():
    """docs/TRAINING.md's table is generated from bench/results/hybrid/: the baseline file and every kp eval-labels
    file there; the baseline's split is eval-labels' split of the same world (same pair counts)."""
    import json
    from pathlib import Path

    bench = load_bench("lexical_baseline", "lexical_baseline")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- lexical baseline table -->\n", "\n<!-- /lexical baseline table -->"
    runs = bench.served_runs()
    results = [json.loads(p.read_text()) for p in bench.RESULTS]
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(results, runs)
    assert {("attr", 1), ("alt", 1)} <= set(runs)
    assert [bench._version(r) for r in results] == [1, 2]
    for path in sorted(bench.RESULTS[0].parent.glob("*.json")):
        run = json.loads(path.read_text())
        if "per_seed" in run:
            for result in results:
                row = next(r for r in result["worlds"] if r["world"] == run["world"])
                assert row["split"] == {k: run["split"][k] for k in ("a_pairs", "b_pairs")}, path.name


def test_a_judged_pairs_file_is_split_and_graded_the_same_way(tmp_path):
    """--labels FILE: the file's pairs as kp eval-labels reads them, no truth to grade against."""
    from distill_helpers import make_pairs

    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    bench = load_bench("lexical_baseline", "lexical_baseline")
    model = build_tiny_encoder(tmp_path / "model", hidden=32, seed=1)
    s = make_settings(tmp_path / "lake", train={"base_model": model, "matryoshka_dims": [32, 16]}, serve={"dim": 16})
    pairs = make_pairs(200, seed=2)
    pairs["keyphrase"] = pairs["keyphrase"] + " " + (pairs.index % 40).astype(str)
    pairs.to_csv(tmp_path / "judged.csv", index=False)
    row = bench.world_baseline(s, None, 0, labels=str(tmp_path / "judged.csv"))
    assert row["labels"] == str(tmp_path / "judged.csv") and row["truth_auc"] is None
    assert row["split"]["a_pairs"] + row["split"]["b_pairs"] == 200 and row["auc"]["zero_shot_hybrid"] is not None
    assert bench.markdown_table([{"features_version": 2, "worlds": [row]}]).splitlines()[2].startswith("| judged.csv | v2 | ")
