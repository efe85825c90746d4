"""bench/label_ceiling.py: how much AUC a model that knew a simulated world's truth scores against its noisy labels,
and what share of the room above the zero-shot encoder issue 25's bar asks on each world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testsupport import load_bench

DOCS = Path(__file__).resolve().parents[2] / "docs" / "TRAINING.md"


def test_the_ceiling_is_the_truth_graded_against_half_bs_labels():
    from sklearn.metrics import roc_auc_score

    from keyphrase_pipeline.commands.eval_labels import load_pairs, split_by_keyphrase

    bench = load_bench("label_ceiling", "label_ceiling")
    row = bench.world_ceiling("alt", 800)
    pairs = load_pairs(None, "alt", 800).reset_index(drop=True)
    b = pairs[~split_by_keyphrase(pairs["keyphrase"].tolist())]
    assert row["b_pairs"] == len(b) and row["b_label_noise"] == pytest.approx((b["label"] != b["truth"]).mean(), abs=1e-4)
    assert 0.10 < row["b_label_noise"] < 0.20  # alt flips 15% of its labels
    assert row["ceiling_auc"] == pytest.approx(roc_auc_score(b["label"], b["truth"]), abs=1e-4)
    # with balanced classes and a flip rate e independent of the truth, the ceiling is about 1 - e
    assert abs(row["ceiling_auc"] - (1 - row["b_label_noise"])) < 0.02


def test_the_table_gives_each_models_share_of_the_headroom():
    bench = load_bench("label_ceiling", "label_ceiling")
    result = {"worlds": [{"world": "w", "b_pairs": 100, "b_label_noise": 0.15, "ceiling_auc": 0.85, "zero_shot_auc": 0.75},
                         {"world": "v", "b_pairs": 50, "b_label_noise": 0.1, "ceiling_auc": 0.9, "zero_shot_auc": 0.7}]}
    runs = {("w", 1): {"teacher": [0.79, 0.81], "student": [0.82]}, ("w", 2): {"teacher": [0.8], "student": [0.8, 0.81]}}
    lines = bench.markdown_table(result, runs).splitlines()
    assert lines[2] == "| w | 100, 15.0% | 0.8500 | 0.7500 | 0.1000 | 0.8000, 50% | v1 | 0.8000, 50% | 0.8200, 70% (1 seed) |"
    assert lines[3] == "| w | 100, 15.0% | 0.8500 | 0.7500 | 0.1000 | 0.8000, 50% | v2 | 0.8000, 50% | 0.8050, 55% (2 seeds) |"
    assert lines[4] == "| v | 50, 10.0% | 0.9000 | 0.7000 | 0.2000 | 0.7500, 25% | — | not run | not run |"


def test_the_zero_shot_figure_must_come_from_the_same_split(tmp_path):
    bench = load_bench("label_ceiling", "label_ceiling")
    f = tmp_path / "baseline.json"
    f.write_text(json.dumps({"pairs": 6000, "worlds": [{"world": "alt", "auc": {"zero_shot": 0.7858}}]}))
    assert bench.zero_shot_aucs(f, 6000) == {"alt": 0.7858}
    with pytest.raises(ValueError, match="another split"):
        bench.zero_shot_aucs(f, 14000)


def test_the_docs_table_is_the_committed_file_beside_the_committed_runs():
    """docs/TRAINING.md's table is generated from bench/results/hybrid/label_ceiling.json and the kp eval-labels files
    of the hybrid table; the committed zero-shot figures are the lexical baseline's, and the committed ceilings are
    those of the worlds as drawn today."""
    bench = load_bench("label_ceiling", "label_ceiling")
    doc = DOCS.read_text()
    start, end = "<!-- label ceiling table -->\n", "\n<!-- /label ceiling table -->"
    result = json.loads(bench.RESULT.read_text())
    lexical = bench._lexical_baseline()
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(result, lexical.served_runs())
    zero = bench.zero_shot_aucs(lexical.RESULTS[-1], result["pairs"])
    assert {r["world"] for r in result["worlds"]} == {"attr", "alt", "demo", "listing", "open"}
    for row in result["worlds"]:
        assert row["zero_shot_auc"] == zero[row["world"]]
    alt = next(r for r in result["worlds"] if r["world"] == "alt")
    assert bench.world_ceiling("alt", result["pairs"]) == {k: alt[k] for k in ("world", "pairs", "b_pairs", "b_label_noise",
                                                                                 "ceiling_auc")}
