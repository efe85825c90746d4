"""kp demo's own logic (the DAG runs it drives are tested in tests/dags): the per-day stats it reads
from the lake, the table it prints, and its argument handling."""

from __future__ import annotations

import argparse

import pytest


def test_day_row_reads_the_stage_stats(settings):
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.deploy.demo import day_row

    lake = Lake.from_settings(settings)
    ds = "2026-10-12"
    lake.write_run_stats(ds, "select_pairs", {"pairs": 300})
    lake.write_run_stats(ds, "merge_labels", {"new_rows": 290, "yes_rate": 0.41})
    lake.write_run_stats(ds, "evaluate", {"promoted": False, "reason": "F1 0.70 < champion 0.74 - 0.01"})
    lake.write_run_stats(ds, "index", {"recall": 1.0})
    states = {"__run__": "success", "train.train_bi": "success", "train.evaluate": "success"}
    row = day_row(lake, ds, states, 90.0)
    assert row["pairs_selected"] == 300 and row["labels_new"] == 290 and row["yes_rate"] == pytest.approx(0.41)
    assert row["trained"] is True and row["promoted"] is False and "champion" in row["promotion_reason"]
    assert row["index_recall"] == 1.0 and row["minutes"] == 1.5 and row["items_embedded"] is None
    # a day without training reports no promotion decision
    row = day_row(lake, ds, {"__run__": "success", "train.train_bi": "skipped", "train.evaluate": "skipped"}, 30)
    assert row["trained"] is False and row["promoted"] is None


def test_print_summary_says_the_judge_is_simulated(capsys):
    from keyphrase_pipeline.deploy.demo import print_summary

    summary = {"days": [{"ds": "2026-10-12", "state": "success", "minutes": 2.0, "yes_rate": 0.5}],
               "judge": "the LLM judge is the SIMULATED annotator", "champion": "v1", "serving_version": "s1",
               "outputs": {"serving": "/lake/serving"}, "minutes_total": 2.0}
    print_summary(summary)
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "2026-10-12" in out and "0.500" in out and "/lake/serving" in out


def test_arguments_and_bad_days(settings):
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.deploy import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    a = p.parse_args(["--days", "2", "--scale", "tiny", "--no-retrain-last"])
    assert (a.days, a.scale, a.no_retrain_last) == (2, "tiny", True)
    with pytest.raises(ConfigError):
        demo.run(settings, days=0)
