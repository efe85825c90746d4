"""bench/judge_ablation.py: docs/LABELLING.md's table of what the student gets from each judge is what the committed
result file generates, and that file holds every judge's 3-seed ablation."""

from __future__ import annotations

import json
from pathlib import Path

from testsupport import load_bench

REPO = Path(__file__).resolve().parents[2]


def _bench():
    return load_bench("judge_ablation", "judge_ablation_bench")


def test_the_docs_table_is_generated_from_the_committed_result():
    bench = _bench()
    result = json.loads(bench.RESULT.read_text())
    assert result["simulated_world"] is True and len(result["runs"]) >= 3
    for run in result["runs"]:
        assert set(run["arms"]) == {"ctr", "llm+ctr+kd"}
        assert all(arm["seeds"] == [1, 2, 3] for arm in run["arms"].values())
        assert (REPO / run["report"]).exists(), run["report"]
    doc = (REPO / "docs" / "LABELLING.md").read_text()
    start, end = "<!-- judge ablation table -->\n", "\n<!-- /judge ablation table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(result)


def test_the_table_by_hand():
    bench = _bench()
    arm = {"precision@5": 0.6, "precision@5_sd": 0.01, "recall@20": 0.7, "recall@20_sd": 0.02,
           "recall@20_tail": 0.75, "recall@20_tail_sd": 0.03, "seeds": [1, 2, 3]}
    judge = {"auc": 0.9, "yes_rate": 0.5, "agreement": 0.89, "ece": 0.02}
    table = bench.markdown_table({"runs": [{"name": "j", "judge": judge, "arms": {"ctr": arm}}]})
    assert table.splitlines()[-1] == "| j | 0.900 / 0.500 / 0.890 / 0.020 | ctr | 0.600 ± 0.010 | 0.700 ± 0.020 | 0.750 ± 0.030 |"
