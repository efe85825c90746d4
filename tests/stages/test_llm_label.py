import pandas as pd
import pytest
from labelling_helpers import CountingJudge, make_pairs, write_pairs

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import check_pandas
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels import store as label_store
from keyphrase_pipeline.labels.store import read_done, read_staging, staging_files
from keyphrase_pipeline.stages import llm_label, merge_labels

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


@pytest.mark.parametrize("per_call, calls", [(None, 1), (8, 4)])
def test_a_judge_that_batches_a_shard_itself_gets_it_in_one_call(s, per_call, calls):
    """The vllm backend (``pairs_per_call`` None): all 25 pairs in one verdicts call, one staged file; a set
    size stages the shard in parts of it."""
    write_pairs(s, DS, make_pairs(25), shard_size=100)
    judge = CountingJudge(s)
    judge.pairs_per_call = per_call
    out = llm_label.run(s, DS, 0, judge=judge)
    assert out["judged"] == 25 and judge.calls == calls and out["batches"] == calls
    assert len(staging_files(Lake.from_settings(s), DS, 0)) == calls


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
        merge_labels.run(s, DS)

    judge = CountingJudge(s)
    r1 = llm_label.run(s, DS, 1, judge=judge)
    assert r1["already_labelled"] == 20 and r1["judged"] == 10
    r0 = llm_label.run(s, DS, 0, judge=judge)
    assert r0["judged"] == 30
    assert judge.scored == 40  # 60 pairs, 20 paid before the crash, none twice

    stats = merge_labels.run(s, DS)
    assert stats["rows"] == 60 and stats["duplicates_in_staging"] == 0
    stored = label_store.read_labels(s)
    assert len(stored) == 60 and stored["pair_key"].is_unique
    assert set(stored["keyphrase_id"]) == set(range(60))


def test_store_dedupes_across_days_and_read_labels(s):
    d1, d2 = "2026-10-11", "2026-10-12"
    write_pairs(s, d1, make_pairs(20), shard_size=10)
    llm_label.run_all(s, d1, judge=CountingJudge(s))
    st1 = merge_labels.run(s, d1)
    assert st1["rows"] == 20

    # day 2 selects 10 old pairs again (e.g. no store anti-join upstream) and 15 new ones
    write_pairs(s, d2, make_pairs(25, start=10), shard_size=10)
    judge = CountingJudge(s)
    out = llm_label.run_all(s, d2, judge=judge)
    assert judge.scored == 15 and out["judged"] == 15
    st2 = merge_labels.run(s, d2)
    assert st2["rows"] == 15 and st2["store_days"] == 2

    all_labels = label_store.read_labels(s)
    assert len(all_labels) == 35 and all_labels["pair_key"].is_unique
    assert all_labels.groupby("ds").size().to_dict() == {d1: 20, d2: 15}
    assert len(label_store.read_labels(s, upto_ds=d1)) == 20
    # merging day 2 again replaces its partition: same rows, no growth
    assert merge_labels.run(s, d2)["rows"] == 15
    assert len(label_store.read_labels(s)) == 35


def test_read_labels_with_a_cap_reads_only_the_newest_days(s, monkeypatch):
    """train.max_llm_labels: the newest labels only, and store days older than needed are never read."""
    days = ["2026-10-11", "2026-10-12", "2026-10-13"]
    for i, d in enumerate(days):
        write_pairs(s, d, make_pairs(10, start=10 * i), shard_size=10)
        llm_label.run_all(s, d, judge=CountingJudge(s))
        merge_labels.run(s, d)
    read = []
    real = label_store._read_store_day
    monkeypatch.setattr(label_store, "_read_store_day", lambda lake, d, cols=None: read.append(d) or real(lake, d, cols))

    capped = label_store.read_labels(s, max_rows=15)
    assert read == ["2026-10-13", "2026-10-12"]  # newest first, the oldest day not read
    assert len(capped) == 15 and capped["pair_key"].is_unique
    assert capped.groupby("ds").size().to_dict() == {"2026-10-12": 5, "2026-10-13": 10}
    assert list(capped["ds"]) == sorted(capped["ds"])  # oldest first, as without a cap
    assert set(range(20, 30)) <= set(capped["keyphrase_id"]) <= set(range(10, 30))

    read.clear()
    assert len(label_store.read_labels(s)) == 30 and len(read) == 3
    s2 = s.model_copy(update={"train": s.train.model_copy(update={"max_llm_labels": 12})})
    from keyphrase_pipeline.labels.training_data import read_llm_labels

    df, used = read_llm_labels(s2, "2026-10-13")
    assert len(df) == 12 and used == ["2026-10-12", "2026-10-13"]


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

    st = merge_labels.run(s, DS)
    assert st["rows"] == 30 and sum(st["p_yes_hist"]) == 30
    assert st["yes_rate"] == pytest.approx(staged["label"].mean(), abs=1e-4)
    assert st["ctr_positive_pairs_judged"] == 8
    assert st["agreement_ctr_positive"] == pytest.approx(pos["label"].mean(), abs=1e-4)
    assert sum(v["rows"] for v in st["by_source"].values()) == 30
    saved = lake.read_json(lake.run_stats_path(DS, "merge_labels"))
    assert saved["rows"] == 30 and saved["stage"] == "merge_labels"
    # where each shard's judge ran (Judge.runs_on) reaches the day's stats: one entry per kind
    assert [read_done(lake, DS, sh)["judge_device"] for sh in (0, 1)] == ["here", "here"]
    assert st["judge_devices"] == ["here"]


def test_new_pairs_run_reopens_done_shards(s):
    write_pairs(s, DS, make_pairs(10), shard_size=10, run_id="first")
    assert llm_label.run(s, DS, 0, judge=CountingJudge(s))["judged"] == 10
    write_pairs(s, DS, make_pairs(10, start=10), shard_size=10, run_id="second")
    judge = CountingJudge(s)
    out = llm_label.run(s, DS, 0, judge=judge)
    assert not out["skipped"] and out["judged"] == 10
    assert merge_labels.run(s, DS)["rows"] == 20  # both runs' labels of the day are kept


def test_unknown_shard_and_missing_pairs_are_clear_errors(s):
    with pytest.raises(DataError, match="select-pairs"):
        llm_label.run(s, DS, 0, judge=CountingJudge(s))
    write_pairs(s, DS, make_pairs(5), shard_size=10)
    with pytest.raises(DataError, match="no shard 3"):
        llm_label.run(s, DS, 3, judge=CountingJudge(s))


def test_cli_merge_labels_exit_codes(s, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", s.lake_root)
    get_settings.cache_clear()
    try:
        write_pairs(s, DS, make_pairs(12), shard_size=6)
        assert cli.main(["merge-labels", "--ds", DS]) == 3  # shards not labelled: DataError
        llm_label.run_all(s, DS, judge=CountingJudge(s))
        assert cli.main(["merge-labels", "--ds", DS]) == 0
        assert '"rows": 12' in capsys.readouterr().out
        assert cli.main(["llm-label", "--ds", DS, "--shard", "0"]) == 0  # already done: skipped, judge not needed
    finally:
        get_settings.cache_clear()


# ---- issue 13: unambiguous pair_key, migration of v1 stores ------------------------------------------------------
def test_text_hash_fields_cannot_collide_and_plain_text_keeps_its_hash():
    """text_hash keys held-out splits, training dedupe and soft labels: text holding the old separator must not
    collide, and text without it (all cleaned text) must keep its v1 hash (stored soft labels, splits)."""
    import hashlib

    from keyphrase_pipeline.labels.store import text_hash

    assert text_hash("a\x1fb", "c", "k") != text_hash("a", "b\x1fc", "k")
    assert text_hash("red mug", "", "mug") == hashlib.sha1("red mug\x1f\x1fmug".encode()).hexdigest()
    assert text_hash(None, None, "k") == text_hash("", "", "k")
    from keyphrase_pipeline.labels.store import pair_key

    # a missing category read by pandas as NaN keys like Spark's null (coalesce to ""), not as "nan"
    assert pair_key("t", float("nan"), "k", "m", "v1") == pair_key("t", "", "k", "m", "v1")
    assert text_hash("t", float("nan"), "k") == text_hash("t", None, "k")
    # and a nullable column's null (pd.NA), as the model reads it (models.text.clean), not as the text "<NA>"
    import pandas as pd

    assert text_hash("t", pd.NA, "k") == text_hash("t", "", "k") != text_hash("t", "NA", "k")


def test_pair_key_fields_cannot_collide(s):
    """v1 joined the fields with \\x1f, which raw titles can hold: ("a\\x1fb", "c") and ("a", "b\\x1fc") collided,
    so the second pair was never judged (its 'label' was the first's)."""
    from keyphrase_pipeline.labels.store import legacy_pair_key, pair_key

    a, b = ("a\x1fb", "c", "k", "m", "v1"), ("a", "b\x1fc", "k", "m", "v1")
    assert legacy_pair_key(*a) == legacy_pair_key(*b)  # the v1 bug
    assert pair_key(*a) != pair_key(*b)
    assert pair_key("ab", "", "k", "m", "v1") != pair_key("a", "b", "k", "m", "v1")
    assert pair_key(None, "c", "k", "m", "v1") == pair_key("", "c", "k", "m", "v1")

    pairs = make_pairs(2)
    pairs["title"], pairs["category"], pairs["keyphrase"] = ["a\x1fb", "a"], ["c", "b\x1fc"], ["k", "k"]
    write_pairs(s, DS, pairs, shard_size=10)
    judge = CountingJudge(s)
    assert llm_label.run(s, DS, 0, judge=judge)["judged"] == 2 and judge.scored == 2
    assert merge_labels.run(s, DS)["rows"] == 2


@pytest.mark.spark
def test_spark_pair_key_column_matches_python(spark):
    from keyphrase_pipeline.labels.store import pair_key, pair_key_column

    rows = [("a\x1fb", "c", "k"), ("a", "b\x1fc", "k"), ("Nike \"Air\" 👟", None, "nike"), ("", "", "")]
    df = spark.createDataFrame(rows, "title string, category string, keyphrase string")
    got = [r["pk"] for r in df.select(pair_key_column("judge@abc", "v1").alias("pk")).collect()]
    assert got == [pair_key(t, c, k, "judge@abc", "v1") for t, c, k in rows]
    assert len(set(got)) == 4


def _make_v1_store(s, ds: str) -> int:
    """Label and merge ``ds``, then rewrite its store partition as a pre-v2 lake had it (v1 keys, no marker)."""
    from keyphrase_pipeline.labels.store import KEY_FIELDS, legacy_pair_key, write_label_table

    lake = Lake.from_settings(s)
    write_pairs(s, ds, make_pairs(20), shard_size=10)
    llm_label.run_all(s, ds, judge=CountingJudge(s))
    merge_labels.run(s, ds)
    df = label_store.read_labels(s).drop(columns="ds")
    df["pair_key"] = [legacy_pair_key(*f) for f in zip(*(df[c] for c in KEY_FIELDS))]
    write_label_table(df, lake.path("llm_store", ds=ds))
    import os

    os.remove(layout.pair_keys_marker(lake))
    assert label_store.pair_keys_version(lake) == 1
    return len(df)


def test_a_v1_store_is_migrated_once_and_its_labels_are_not_paid_again(s):
    d1, d2 = "2026-10-11", "2026-10-12"
    assert _make_v1_store(s, d1) == 20
    lake = Lake.from_settings(s)
    # day 2 selects 10 pairs labelled on day 1 (v1 keys in the store) and 15 new ones
    write_pairs(s, d2, make_pairs(25, start=10), shard_size=100)
    judge = CountingJudge(s)
    out = llm_label.run(s, d2, 0, judge=judge)
    assert judge.scored == 15 and out["already_labelled"] == 10  # the v1 labels were found again
    marker = lake.read_json(layout.pair_keys_marker(lake))
    assert marker["version"] == 2 and marker["rekeyed"] == 20 and marker["unverified"] == 0
    assert label_store.read_store_keys(lake) == set(label_store.row_pair_keys(label_store.read_labels(s)))
    assert merge_labels.run(s, d2)["rows"] == 15
    assert len(label_store.read_labels(s)) == 35
    assert label_store.ensure_pair_keys_current(s) is None  # once


def test_rows_staged_by_an_older_worker_count_as_labelled(s):
    """Staged batches with v1 keys (a worker still running the old code during the upgrade) are recognised:
    staged keys are recomputed from the rows' own columns."""
    from keyphrase_pipeline.core.lake import write_parquet_file_atomic
    from keyphrase_pipeline.labels.store import KEY_FIELDS, legacy_pair_key, to_label_frame

    write_pairs(s, DS, make_pairs(10), shard_size=100)
    lake = Lake.from_settings(s)
    llm_label.run(s, DS, 0, judge=CountingJudge(s))
    rows = read_staging(lake, DS)
    import os

    for f in staging_files(lake, DS, 0):
        os.remove(f)
    os.remove(layout.done_marker(lake, DS, 0))
    rows["pair_key"] = [legacy_pair_key(*f) for f in zip(*(rows[c] for c in KEY_FIELDS))]
    write_parquet_file_atomic(to_label_frame(rows), f"{layout.staging_dir(lake, DS, 0)}/{layout.batch_file_name(0)}")
    judge = CountingJudge(s)
    assert llm_label.run(s, DS, 0, judge=judge)["already_labelled"] == 10 and judge.calls == 0
    merged = merge_labels.run(s, DS)
    assert merged["rows"] == 10 and set(label_store.read_labels(s)["pair_key"]) == set(label_store.row_pair_keys(rows))


def test_legacy_local_model_labels_are_adopted_only_on_request(s, tmp_path):
    """A local model's v1 labels carry only the directory's name: the migration keeps them apart from the
    fingerprinted identity until the operator vouches for them (kp merge-labels --migrate-keys --adopt-legacy-model)."""
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.labels.judges.base import judge_model_id

    d1 = "2026-10-11"
    _make_v1_store(s, d1)
    lake = Lake.from_settings(s)
    model = tmp_path / "models" / "fake-judge-v1"  # the same NAME as the stored judge_model
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    t = s.with_overrides(**{"judge.backend": "transformers", "judge.model": str(model)})
    new_id = judge_model_id(t)
    assert new_id.startswith("fake-judge-v1@")
    assert label_store.ensure_pair_keys_current(t)["adopted"] == 0  # automatic migration: never adopts
    assert set(label_store.read_labels(t)["judge_model"]) == {"fake-judge-v1"}

    import os

    os.environ["KP_LAKE_ROOT"], os.environ["KP_JUDGE__BACKEND"], os.environ["KP_JUDGE__MODEL"] = s.lake_root, "transformers", str(model)
    get_settings.cache_clear()
    try:
        assert cli.main(["merge-labels", "--migrate-keys", "--adopt-legacy-model", "fake-judge-v1"]) == 0
    finally:
        for k in ("KP_LAKE_ROOT", "KP_JUDGE__BACKEND", "KP_JUDGE__MODEL"):
            os.environ.pop(k)
        get_settings.cache_clear()
    stored = label_store.read_labels(t)
    assert set(stored["judge_model"]) == {new_id} and len(stored) == 20
    assert label_store.read_store_keys(lake) == set(label_store.pair_keys(stored, new_id, "v1"))
    assert lake.read_json(layout.pair_keys_marker(lake))["adopted_from"] == {"fake-judge-v1": new_id}


def test_merging_a_day_the_judge_said_no_to_throughout_warns(s, caplog):
    """A judge that says no to every pair (SmolLM2-135M at 0.5): the merge says so on the day, before training
    refuses the labels (training_data.label_balance)."""
    import logging

    write_pairs(s, DS, make_pairs(25), shard_size=100)
    llm_label.run(s.with_overrides(**{"judge.threshold": 1.0}), DS, 0, judge=CountingJudge(s))
    with caplog.at_level(logging.WARNING, logger="keyphrase_pipeline.labels.store"):
        stats = merge_labels.run(s, DS)
    assert stats["yes_rate"] == 0.0 and "said no to 100.0% of the day's 25 pairs" in caplog.text
