"""bench/rerank_recommend.py: how it grades served lists against the truth, its paired intervals, its table and the
refusals before any work (the run itself needs a `make demo` lake: its committed result is checked where a doc
cites it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from testsupport import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("rerank_recommend", "rerank_recommend_bench")


def test_grade_counts_relevant_rows_per_item_and_skips_items_with_nothing_to_find(bench):
    recs = pd.DataFrame({"item_id": [2, 2, 2, 1, 1, 3], "rank": [3, 1, 2, 1, 2, 1],  # item 2 read in rank order 3, 1, 2
                         "keyphrase_id": [31, 10, 30, 5, 6, 7]})
    relevant = {1: np.array([6]), 2: np.array([10, 30, 99]), 3: np.array([], dtype=np.int64)}
    g = bench.grade(recs, relevant)
    assert g["items"].tolist() == [1, 2]  # item 3 has no relevant keyphrase: not graded
    assert g["p@1"].tolist() == [0.0, 1.0]  # item 2's rank 1 is keyphrase 10, whatever the row order
    assert g["p@5"].tolist() == pytest.approx([1 / 5, 2 / 5])  # a short list is divided by k all the same
    assert g["recall@20"].tolist() == pytest.approx([1.0, 2 / 3])


def test_paired_gives_the_mean_difference_and_an_interval_around_it(bench):
    base = np.zeros(400)
    other = np.r_[np.ones(100), np.zeros(300)]
    d = bench.paired(base, other)
    assert d["mean"] == 0.25 and d["ci95"][0] < 0.25 < d["ci95"][1] and d["ci95"][1] - d["ci95"][0] < 0.2
    same = bench.paired(base, base)
    assert same == {"mean": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match="no graded item"):
        bench.paired(np.zeros(0), np.zeros(0))


def test_the_table_shows_each_depth_against_the_baseline(bench):
    metrics = {m: 0.5 for m in ("p@1", "p@5", "p@10", "p@20", "recall@20")}
    runs = [{"depth": 0, "seconds": 60, "metrics": metrics, "stats": {"rerank_depth": 0}},
            {"depth": 20, "seconds": 300, "metrics": {**metrics, "p@5": 0.6},
             "stats": {"rerank_pairs_per_s": 251.4},
             "vs_depth_0": {m: {"mean": 0.1 if m == "p@5" else 0.0, "ci95": [0.05, 0.15]} for m in metrics}}]
    table = bench.markdown_table({"runs": runs}).splitlines()
    assert table[2].startswith("| 0 (off) | 60 |  | 0.500 |")
    assert table[3].startswith("| 20 | 300 | 251 | 0.500 (+0.000, +0.050 to +0.150) | 0.600 (+0.100, +0.050 to +0.150)")


def test_refuses_without_a_demo_lake_or_with_a_negative_depth(bench, tmp_path, capsys):
    assert bench.main(["--lake", str(tmp_path)]) == 2
    assert "no demo lake" in capsys.readouterr().err
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "CHAMPION").write_text("v1")
    assert bench.main(["--lake", str(tmp_path), "--depths", "-5"]) == 2
    assert "--depths must be >= 0" in capsys.readouterr().err


def test_the_servings_doc_table_and_figures_are_the_committed_result(bench):
    """docs/SERVING.md's table is ``markdown_table`` of bench/results/rerank/demo_recommend.json, and the prose's
    figures are that file's."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    result = json.loads((repo / "bench/results/rerank/demo_recommend.json").read_text())
    doc = (repo / "docs/SERVING.md").read_text()
    table = doc.split("<!-- rerank recommend table -->\n")[1].split("\n<!-- /rerank recommend table -->")[0]
    assert table == bench.markdown_table(result)
    assert result["simulated"] and [r["depth"] for r in result["runs"]][0] == 0
    rates = [r["stats"]["rerank_pairs_per_s"] for r in result["runs"] if r["depth"]]
    assert f"{min(rates):.0f} to {max(rates):.0f} pairs/s" in doc
    assert all(r["items_graded"] == result["runs"][0]["items_graded"] for r in result["runs"])
    assert f"{result['runs'][0]['items_graded']:,} items" in doc
    hours = 1e8 / (sum(rates) / len(rates)) / 3600  # depth 100 on 1,000,000 items
    assert f"about {round(hours, -1):.0f} hours" in doc
    d20 = next(r for r in result["runs"] if r["depth"] == 20)
    pace = d20["stats"]["rerank_pairs"] / d20["seconds"]  # wall-clock pairs/s of the depth-20 run
    assert f"({pace:.0f} pairs/s, search and writes included) that is about {7200 * pace / 1e6:.1f} million pairs, " \
        f"about {round(7200 * pace / 20, -3):,.0f} items at depth 20" in doc
    p5 = d20["vs_depth_0"]["p@5"]
    assert f"precision@5 +{p5['mean']:.3f} at depth\n20" in doc


def test_the_servings_hybrid_table_is_the_committed_result(bench):
    """docs/SERVING.md's table of the hybrid score through kp recommend is ``markdown_table`` of
    bench/results/hybrid/demo_recommend.json (``--setting hybrid_depth``), and its pairs count is that file's."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    result = json.loads((repo / "bench/results/hybrid/demo_recommend.json").read_text())
    doc = (repo / "docs/SERVING.md").read_text()
    table = doc.split("<!-- hybrid recommend table -->\n")[1].split("\n<!-- /hybrid recommend table -->")[0]
    assert result["setting"] == "hybrid_depth" and result["simulated"] and table == bench.markdown_table(result)
    assert f"{result['runs'][1]['stats']['hybrid_pairs']:,} pairs" in doc
