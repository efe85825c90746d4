"""bench/ctr_cost.py: the CTR model stage's time per step and peak memory by size; here --quick (two tiny sizes) so
the script cannot rot."""

from __future__ import annotations

import json

from testsupport import load_bench


def test_quick_run_measures_each_size_in_its_own_process(tmp_path):
    cost = load_bench("ctr_cost", "ctr_cost")
    out = tmp_path / "ctr_cost.json"
    lines = cost.main(["--quick", "--out", str(out)])
    assert [x["name"] for x in lines] == ["tiny", "tiny, 4x pairs"]
    for x in lines:
        assert x["steps"] == 10 and x["peak_rss_mb"] > 100 and x["seconds_per_step"] > 0 and x["heldout_rows"] > 0
    assert lines[1]["training_rows"] > 3 * lines[0]["training_rows"]  # the second size has 4x the pairs
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
