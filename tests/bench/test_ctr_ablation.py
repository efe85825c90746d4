"""bench/ctr_ablation.py: what each part of the CTR model buys. Here a --quick run on the tiny world (1 seed, two
configurations, 20 steps, the base encoder's embeddings), so the script cannot rot, and the docs' table."""

from __future__ import annotations

import json

import pytest
from testsupport import load_bench

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def ablation():
    return load_bench("ctr_ablation", "ctr_ablation")


def test_quick_run_reports_each_configuration_and_the_table(ablation, tmp_path, spark):
    out = tmp_path / "ctr_ablation.json"
    lines = ablation.main(["--quick", "--scale", "tiny", "--out", str(out)])
    runs = [x for x in lines if "config" in x]
    assert [x["config"] for x in runs] == ["ids_only", "+semantic_ids"]
    assert runs[0]["parts"] == ["item_bucket", "keyphrase_bucket"] and "item_codes" in runs[1]["parts"]
    for x in runs:
        assert x["simulated_world"] is True and "untrained base encoder" in x["semantics"]
        assert 0 < x["all_auc"] < 1 and x["all_log_loss"] > 0 and x["steps"] == 20 and x["cold_rows"] >= 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
    table = ablation.table(out)
    assert table.splitlines()[0].startswith("| configuration | AUC (all)") and "| ids_only |" in table
    assert "| position prior (no model) |" in table
    assert "untrained base encoder" in table and "1 seeds per configuration" in table
