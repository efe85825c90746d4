"""Rerunning a whole day (ctr-labels, select-pairs, label, merge) — what an Airflow "clear" of the day's DAG
run does — must give identical outputs and pay the judge for nothing more."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from reliability_helpers import DS

from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.labels.store import read_manifest, read_staging
from keyphrase_pipeline.stages import ctr_labels, llm_label, merge_labels, select_pairs
from keyphrase_pipeline.synthetic.simulated_judge import SimulatedJudge

pytestmark = pytest.mark.spark


class CountingSimulated(SimulatedJudge):
    def __init__(self, settings):
        super().__init__(settings)
        self.scored = 0

    def score(self, pairs):
        self.scored += len(pairs)
        return super().score(pairs)


def snapshot(s) -> dict:
    lake = Lake.from_settings(s)
    sort = lambda df, keys: df.sort_values(keys).reset_index(drop=True)  # noqa: E731
    manifest = read_manifest(lake, DS)
    return {
        "ctr_labels": sort(read_parquet(lake.path("ctr_labels", ds=DS)), ["item_id", "keyphrase_id"]),
        "pairs": sort(select_pairs.read_pairs(s, DS), ["pair_key"]),
        "run_id": manifest["run_id"],
        "staging": sort(read_staging(lake, DS), ["pair_key"]),
        "store": sort(read_parquet(lake.path("llm_store", ds=DS)), ["pair_key"]),
    }


def assert_same(a: dict, b: dict, keys) -> None:
    for k in keys:
        if isinstance(a[k], pd.DataFrame):
            pd.testing.assert_frame_equal(a[k], b[k], obj=k)
        else:
            assert a[k] == b[k], k


def label_and_merge(s) -> int:
    judge = CountingSimulated(s)
    llm_label.run_all(s, DS, judge=judge)
    merge_labels.run(s, DS)
    return judge.scored


def test_rerun_of_ctr_labels_label_and_merge_is_identical_and_free(pairs_world, spark):
    s = pairs_world
    paid = label_and_merge(s)
    first = snapshot(s)
    assert paid == len(first["pairs"]) == len(first["store"])

    ctr_labels.run(s, DS, spark=spark)
    assert label_and_merge(s) == 0  # every shard is done: the judge is not called again
    assert_same(first, snapshot(s), ["ctr_labels", "pairs", "run_id", "staging", "store"])
    stats = json.loads(open(Lake.from_settings(s).run_stats_path(DS, "merge_labels")).read())
    assert stats["rows"] == len(first["store"]) and stats["duplicates_in_staging"] == 0


def test_rerun_of_select_pairs_for_a_labelled_day_is_identical_and_free(pairs_world, spark):
    s = pairs_world
    label_and_merge(s)
    first = snapshot(s)

    select_pairs.run(s, DS, spark=spark)
    paid_again = label_and_merge(s)
    second = snapshot(s)
    assert paid_again == 0
    assert_same(first, second, ["pairs", "run_id", "store"])
