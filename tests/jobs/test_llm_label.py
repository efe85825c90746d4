import pandas as pd
import pytest

from keyphrase_pipeline.jobs import label_store, llm_label
from keyphrase_pipeline.jobs.label_store import read_done, read_staging, staging_files
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import check_pandas
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake
from labelling_helpers import CountingJudge, make_pairs, write_pairs

DS = "2026-10-12"


@pytest.fixture
def s(settings):
    # chunk = batch_size * concurrency = 10 pairs per staged batch file
    return settings.with_overrides(**{"judge.batch_size": 5, "judge.concurrency": 2})


def test_labels_a_shard_in_batches_then_rerun_calls_the_judge_zero_times(s):
    write_pairs(s, DS, make_pairs(25), shard_size=100)
    lake = Lake.from_settings(s)
    judge = CountingJudge(s)
    out = llm_label.run(s, DS, 0, judge=judge)
    assert out["judged"] == 25 and out["batches"] == 3 and judge.calls == 3
    assert len(staging_files(lake, DS, 0)) == 3
    rows = read_staging(lake, DS)
    check_pandas(rows, "llm_labels")
    assert len(rows) == 25 and rows["pair_key"].is_unique
    assert (rows["label"] == (rows["p_yes"] >= s.judge.threshold)).all()
    assert set(rows["judge"]) == {"fake"} and set(rows["judge_model"]) == {"fake-judge-v1"}
    assert read_done(lake, DS, 0)["judged"] == 25

    again = CountingJudge(s)
    out2 = llm_label.run(s, DS, 0, judge=again)
    assert out2["skipped"] and out2["judged"] == 0 and again.calls == 0
    # even with the _DONE marker gone, every pair is found in staging: still nothing paid twice
    import os

    os.remove(layout.done_marker(lake, DS, 0))
    out3 = llm_label.run(s, DS, 0, judge=again)
    assert out3["judged"] == 0 and out3["already_labelled"] == 25 and again.calls == 0
    assert len(read_staging(lake, DS)) == 25


def test_crash_mid_shard_then_rerun_loses_nothing_and_duplicates_nothing(s):
    shards = write_pairs(s, DS, make_pairs(60), shard_size=30)
    assert shards == [0, 1]
    lake = Lake.from_settings(s)
    dying = CountingJudge(s, fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        llm_label.run(s, DS, 1, judge=dying)
    assert read_done(lake, DS, 1) is None
    assert len(read_staging(lake, DS)) == 20  # the two finished batches survived
    with pytest.raises(DataError, match=r"shard\(s\) \[0, 1\]"):
        label_store.run(s, DS)

    judge = CountingJudge(s)
    r1 = llm_label.run(s, DS, 1, judge=judge)
    assert r1["already_labelled"] == 20 and r1["judged"] == 10
    r0 = llm_label.run(s, DS, 0, judge=judge)
    assert r0["judged"] == 30
    assert judge.scored == 40  # 60 pairs, 20 paid before the crash, none twice

    stats = label_store.run(s, DS)
    assert stats["rows"] == 60 and stats["duplicates_in_staging"] == 0
    stored = label_store.read_labels(s)
    assert len(stored) == 60 and stored["pair_key"].is_unique
    assert set(stored["keyphrase_id"]) == set(range(60))


def test_store_dedupes_across_days_and_read_labels(s):
    d1, d2 = "2026-10-11", "2026-10-12"
    write_pairs(s, d1, make_pairs(20), shard_size=10)
    llm_label.run_all(s, d1, judge=CountingJudge(s))
    st1 = label_store.run(s, d1)
    assert st1["rows"] == 20

    # day 2 selects 10 old pairs again (e.g. no store anti-join upstream) and 15 new ones
    write_pairs(s, d2, make_pairs(25, start=10), shard_size=10)
    judge = CountingJudge(s)
    out = llm_label.run_all(s, d2, judge=judge)
    assert judge.scored == 15 and out["judged"] == 15
    st2 = label_store.run(s, d2)
    assert st2["rows"] == 15 and st2["store_days"] == 2

    all_labels = label_store.read_labels(s)
    assert len(all_labels) == 35 and all_labels["pair_key"].is_unique
    assert all_labels.groupby("ds").size().to_dict() == {d1: 20, d2: 15}
    assert len(label_store.read_labels(s, upto_ds=d1)) == 20
    # merging day 2 again replaces its partition: same rows, no growth
    assert label_store.run(s, d2)["rows"] == 15
    assert len(label_store.read_labels(s)) == 35


def test_merge_stats_and_ctr_agreement(s):
    write_pairs(s, DS, make_pairs(30), shard_size=15)
    llm_label.run_all(s, DS, judge=CountingJudge(s))
    lake = Lake.from_settings(s)
    staged = read_staging(lake, DS)
    pos = staged.iloc[:8]
    ctr = pd.DataFrame({"item_id": pos["item_id"].astype("int64"), "keyphrase_id": pos["keyphrase_id"].astype("int64"),
                        "impressions": 100, "clicks": 10, "ctr": 0.1, "label": 1})
    ctr["label"] = ctr["label"].astype("int32")
    import os

    os.makedirs(lake.path("ctr_labels", ds=DS), exist_ok=True)
    ctr.to_parquet(lake.path("ctr_labels", ds=DS) + "/part-0.parquet", index=False)

    st = label_store.run(s, DS)
    assert st["rows"] == 30 and sum(st["p_yes_hist"]) == 30
    assert st["yes_rate"] == pytest.approx(staged["label"].mean(), abs=1e-4)
    assert st["ctr_positive_pairs_judged"] == 8
    assert st["agreement_ctr_positive"] == pytest.approx(pos["label"].mean(), abs=1e-4)
    assert sum(v["rows"] for v in st["by_source"].values()) == 30
    saved = lake.read_json(lake.run_stats_path(DS, "llm_labels"))
    assert saved["rows"] == 30 and saved["stage"] == "llm_labels"


def test_new_pairs_run_reopens_done_shards(s):
    write_pairs(s, DS, make_pairs(10), shard_size=10, run_id="first")
    assert llm_label.run(s, DS, 0, judge=CountingJudge(s))["judged"] == 10
    write_pairs(s, DS, make_pairs(10, start=10), shard_size=10, run_id="second")
    judge = CountingJudge(s)
    out = llm_label.run(s, DS, 0, judge=judge)
    assert not out["skipped"] and out["judged"] == 10
    assert label_store.run(s, DS)["rows"] == 20  # both runs' labels of the day are kept


def test_unknown_shard_and_missing_pairs_are_clear_errors(s):
    with pytest.raises(DataError, match="select-pairs"):
        llm_label.run(s, DS, 0, judge=CountingJudge(s))
    write_pairs(s, DS, make_pairs(5), shard_size=10)
    with pytest.raises(DataError, match="no shard 3"):
        llm_label.run(s, DS, 3, judge=CountingJudge(s))


def test_cli_merge_labels_exit_codes(s, monkeypatch, capsys):
    from keyphrase_pipeline.core import cli
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", s.lake_root)
    get_settings.cache_clear()
    try:
        write_pairs(s, DS, make_pairs(12), shard_size=6)
        assert cli.main(["merge-labels", "--ds", DS]) == 3  # shards not labelled: DataError
        llm_label.run_all(s, DS, judge=CountingJudge(s))
        assert cli.main(["merge-labels", "--ds", DS]) == 0
        assert '"rows": 12' in capsys.readouterr().out
        assert cli.main(["label", "--ds", DS, "--shard", "0"]) == 0  # already done: skipped, judge not needed
    finally:
        get_settings.cache_clear()
