"""bench/cut_rotation.py: docs/TRAINING.md's table of the rotation before the cut is what the committed result
file generates."""

from __future__ import annotations

import json
from pathlib import Path

from testsupport import load_bench

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_table_is_generated_from_the_committed_result():
    bench = load_bench("cut_rotation", "cut_rotation_bench")
    result = json.loads(bench.RESULT.read_text())
    assert result["simulated"] is True and len(result["runs"]) >= 3
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- cut rotation table -->\n", "\n<!-- /cut rotation table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == bench.markdown_table(result)
