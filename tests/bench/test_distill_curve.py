"""bench/distill_curve.py: docs/TRAINING.md's distillation table is what the committed sweep files generate,
and every sweep file is the attr world's split with one shared teacher and the settings its row names."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("distill_curve", REPO / "bench" / "distill_curve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["distill_curve"] = module
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_generated_from_the_committed_sweep(curve):
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    table = curve.sweep_table()
    start, end = "<!-- distill sweep table -->\n", "\n<!-- /distill sweep table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == table
    assert table.count("\n") >= 2 + 1 + 3  # header, zero-shot, teacher and every run


def test_sweep_files_share_a_split_and_a_teacher_and_carry_their_settings(curve):
    files = {stem: json.loads((REPO / "bench" / "results" / "distill_sweep" / f"{stem}.json").read_text())
             for stem, _ in curve.SWEEP if (REPO / "bench" / "results" / "distill_sweep" / f"{stem}.json").exists()}
    assert len(files) >= 3
    first = next(iter(files.values()))
    for stem, r in files.items():
        assert r["world"] == "attr" and r["simulated"] is True and r["split"] == first["split"], stem
        cross = r["per_seed"][0]["metrics"]["cross"]
        assert cross["auc"] == first["per_seed"][0]["metrics"]["cross"]["auc"], stem  # one shared teacher
        assert "truth" in r["per_seed"][0]["metrics"]["student"], stem
    assert files["attr_1_pointwise_1x"]["config"]["kd_list_ratio"] == 0.0
    assert files["attr_2_lists_5x"]["config"]["kd_list_ratio"] == 4.0
    assert files["attr_3_lists_5x_pearson"]["config"]["kd_list_pearson"] == 1.0
    if "attr_4_lists_20x" in files:
        assert files["attr_4_lists_20x"]["config"]["kd_list_ratio"] == 19.0
