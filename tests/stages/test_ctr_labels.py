"""Stage 1 (keyphrase_pipeline/stages/ctr_labels.py): labels vs a plain pandas computation, window bounds, incremental reuse,
backfill, quarantine of each bad-input kind, bad-share limit, missing days, schema errors, atomic reruns."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.core.errors import DataError, SchemaError
from keyphrase_pipeline.core.lake import Lake, ds_range, read_parquet, write_parquet_atomic
from keyphrase_pipeline.stages import ctr_labels

pytestmark = pytest.mark.spark

END = "2026-10-10"
KEYS = ["event_id", "ts", "item_id", "keyphrase_id", "event"]


# ---------------------------------------------------------------------------------------------
# hand-made worlds
# ---------------------------------------------------------------------------------------------
def cfg(settings, ctr: dict | None = None, spark: dict | None = None):
    """The ``settings`` fixture (private empty lake) with CTR / Spark overrides."""
    over = {f"ctr.{k}": v for k, v in (ctr or {}).items()}
    over.update({f"spark.{k}": v for k, v in (spark or {}).items()})
    return settings.with_overrides(**over)


def clean_day(day: str, seed: int, n_pairs: int = 40, n_items: int = 12, n_kps: int = 15) -> pd.DataFrame:
    """Valid events of one day: each sampled pair gets 1..30 impressions and 0..impressions clicks."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(n_items * n_kps, size=n_pairs, replace=False)
    start = pd.Timestamp(day)
    rows = []
    for code in codes:
        item, kp = int(code // n_kps) + 1, int(code % n_kps) + 1
        imps = int(rng.integers(1, 31))
        clicks = int(rng.binomial(imps, rng.choice([0.01, 0.05, 0.2])))
        for j in range(imps + clicks):
            rows.append({
                "event_id": f"{day}-{item}-{kp}-{j}",
                "ts": start + pd.Timedelta(seconds=int(rng.integers(0, 86_400))),
                "item_id": item,
                "keyphrase_id": kp,
                "query": f"q{kp}",
                "event": "impression" if j < imps else "click",
                "position": int(rng.integers(1, 11)),
            })
    return _typed(pd.DataFrame(rows))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["ts"] = pd.to_datetime(df["ts"]).astype("datetime64[us]")
    df["item_id"] = df["item_id"].astype("Int64")
    df["keyphrase_id"] = df["keyphrase_id"].astype("Int64")
    df["position"] = df["position"].astype("Int32")
    return df


def write_events(settings, day: str, df: pd.DataFrame) -> None:
    write_parquet_atomic(df, Lake.from_settings(settings).path("events", ds=day))


def world(settings, days: list[str], seed: int = 0) -> dict[str, pd.DataFrame]:
    out = {}
    for i, d in enumerate(days):
        out[d] = clean_day(d, seed + i)
        write_events(settings, d, out[d])
    return out


# ---------------------------------------------------------------------------------------------
# the reference: a straightforward pandas implementation of the rules in docs/CTR.md
# ---------------------------------------------------------------------------------------------
def ref_classify(df: pd.DataFrame) -> pd.Series:
    reason = pd.Series([None] * len(df), index=df.index, dtype=object)
    reason[df[KEYS].isna().any(axis=1)] = "null_key"
    reason[reason.isna() & ~df["event"].isin(["impression", "click"])] = "unknown_event"
    reason[reason.isna() & (df["position"].isna() | (df["position"].fillna(0) <= 0))] = "bad_position"
    ok = df[reason.isna()].sort_values(["ts", "event", "item_id", "keyphrase_id", "position"], kind="stable")
    reason[ok.index[ok.duplicated("event_id", keep="first")]] = "duplicate_event_id"
    ok = df[reason.isna()]
    pair = [ok["item_id"], ok["keyphrase_id"]]
    imp = (ok["event"] == "impression").groupby(pair).transform("sum")
    clk = (ok["event"] == "click").groupby(pair).transform("sum")
    reason[ok.index[imp == 0]] = "click_without_impression"  # (such a pair has only clicks)
    reason[ok.index[(imp > 0) & (clk > imp)]] = "clicks_exceed_impressions"
    return reason


def ref_labels(events_by_day: dict[str, pd.DataFrame], days: list[str], threshold=0.05, min_imp=5) -> pd.DataFrame:
    valid = []
    for d in days:
        if d in events_by_day:
            df = events_by_day[d]
            valid.append(df[ref_classify(df).isna()])
    v = pd.concat(valid)
    out = (v.assign(impressions=v["event"] == "impression", clicks=v["event"] == "click")
           .groupby(["item_id", "keyphrase_id"])[["impressions", "clicks"]].sum().reset_index())
    out["ctr"] = out["clicks"] / out["impressions"]
    out["label"] = ((out["ctr"] > threshold) & (out["impressions"] >= min_imp)).astype(int)
    return _norm(out)


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df[["item_id", "keyphrase_id", "impressions", "clicks", "ctr", "label"]].astype(
        {"item_id": "int64", "keyphrase_id": "int64", "impressions": "int64", "clicks": "int64",
         "ctr": "float64", "label": "int64"})
    return df.sort_values(["item_id", "keyphrase_id"]).reset_index(drop=True)


def read_labels(settings, ds) -> pd.DataFrame:
    return _norm(read_parquet(Lake.from_settings(settings).path("ctr_labels", ds=ds), contract="ctr_labels"))


def parquet_files(path: str) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".parquet"))


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_labels_match_pandas_and_stats(spark, settings):
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 4)  # one day more than the window: it must be left out
    events = world(settings, days)
    stats = ctr_labels.run(settings, END, spark=spark)

    expected = ref_labels(events, days[1:])
    got = read_labels(settings, END)
    pd.testing.assert_frame_equal(got, expected)
    assert expected["label"].sum() > 0 and (expected["label"] == 0).sum() > 0  # both classes present

    lake = Lake.from_settings(settings)
    saved = json.loads(open(f"{lake.path('ctr_labels', ds=END)}/_stats.json").read())
    run_stats = lake.read_json(lake.run_stats_path(END, "ctr_labels"))
    for s in (stats, saved, run_stats):
        assert s["pairs"] == len(expected)
        assert s["positives"] == int(expected["label"].sum())
        assert s["days_used"] == 3
    assert stats["days_computed"] == days[1:] and stats["days_reused"] == []
    assert stats["rows_in"] == sum(len(events[d]) for d in days[1:])
    assert stats["rows_quarantined"] == 0 and stats["quarantined_by_reason"] == {}
    dist = stats["impressions_dist"]
    assert dist["min"] == expected["impressions"].min() and dist["max"] == expected["impressions"].max()
    assert dist["min"] <= dist["p50"] <= dist["p90"] <= dist["p99"] <= dist["max"]
    assert stats["sr_labels"] is None
    # the day before the window got no daily aggregate: raw outside the window is never read
    assert lake.partitions("ctr_daily") == days[1:]
    # the same valid events by position (the CTR model's rows): a pandas reference, day by day
    assert lake.partitions("ctr_position_daily") == days[1:]
    for d in days[1:]:
        v = events[d][ref_classify(events[d]).isna()]
        want = (v.assign(impressions=v["event"] == "impression", clicks=v["event"] == "click")
                .groupby(["item_id", "keyphrase_id", "position"])[["impressions", "clicks"]].sum().reset_index()
                .astype("int64").sort_values(["item_id", "keyphrase_id", "position"]).reset_index(drop=True))
        got = read_parquet(lake.path("ctr_position_daily", ds=d), contract="ctr_position_daily")
        assert str(got["position"].dtype) == "int32"
        got = got.astype("int64").sort_values(["item_id", "keyphrase_id", "position"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got[list(want.columns)], want)
        assert len(want["position"].unique()) > 1

    # read helper for the next stage
    df = ctr_labels.read_ctr_labels(spark, settings, END)
    assert df.count() == len(expected) and df.where("label = 1").count() == stats["positives"]


def test_incremental_next_day_reuses_dailies_and_backfills_gap(spark, settings):
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 5)
    events = world(settings, days)
    lake = Lake.from_settings(settings)
    ctr_labels.run(settings, days[3], spark=spark)  # computes days 1..3
    # day 1's aggregate is lost: the next run must rebuild it from raw
    import shutil

    shutil.rmtree(lake.path("ctr_daily", ds=days[2]))
    stats = ctr_labels.run(settings, days[4], spark=spark)
    assert stats["days_reused"] == [days[3]]
    assert stats["days_computed"] == [days[2], days[4]]  # the gap (backfill) and the day itself
    pd.testing.assert_frame_equal(read_labels(settings, days[4]), ref_labels(events, days[2:]))


def test_window_boundary_30_days(spark, settings):
    """Default 30-day window: day ds-29 is in, day ds-30 is out (other days absent and allowed)."""
    settings = cfg(settings, ctr={"window_days": 30, "min_impressions": 1})
    end = dt.date.fromisoformat(END)
    d_out, d_in = (end - dt.timedelta(days=30)).isoformat(), (end - dt.timedelta(days=29)).isoformat()
    mk = lambda day, item: _typed(pd.DataFrame([  # noqa: E731
        {"event_id": f"{day}-{k}", "ts": pd.Timestamp(day), "item_id": item, "keyphrase_id": 1, "query": "q",
         "event": "impression" if k < 10 else "click", "position": 1} for k in range(11)]))
    write_events(settings, d_out, mk(d_out, 100))
    write_events(settings, d_in, mk(d_in, 200))
    write_events(settings, END, mk(END, 300))
    stats = ctr_labels.run(settings, END, allow_missing=True, spark=spark)
    got = read_labels(settings, END)
    assert sorted(got["item_id"]) == [200, 300]
    assert stats["window"] == [d_in, END] and stats["days_used"] == 2 and len(stats["days_missing"]) == 28
    assert got["impressions"].tolist() == [10, 10] and got["label"].tolist() == [1, 1]


def test_rerun_is_idempotent_and_files_are_few(spark, settings):
    settings = cfg(settings, ctr={"window_days": 2, "min_impressions": 5})
    days = ds_range(END, 2)
    world(settings, days)
    lake = Lake.from_settings(settings)
    ctr_labels.run(settings, END, spark=spark)
    first = read_labels(settings, END)
    ctr_labels.run(settings, END, spark=spark)
    second = read_labels(settings, END)
    pd.testing.assert_frame_equal(first, second)
    assert not second.duplicated(["item_id", "keyphrase_id"]).any()
    for ds_dir in (lake.path("ctr_labels", ds=END), lake.path("ctr_daily", ds=END)):
        assert len(parquet_files(ds_dir)) == 1  # small data -> one file, not one per task
    # no temp or trash directories left behind
    assert not lake.exists(lake.path("quarantine"))  # clean input: no quarantine at all
    for dataset in ("ctr_labels", "ctr_daily"):
        base = lake.path(dataset)
        leftovers = [n for n in os.listdir(base) if n.startswith("_")]
        assert leftovers == [], leftovers


def test_output_files_sized_by_target_rows(spark, settings):
    settings = cfg(settings, ctr={"window_days": 1, "min_impressions": 5},
                             spark={"target_file_rows": 1000})
    day = clean_day(END, 3, n_pairs=2500, n_items=100, n_kps=100)
    write_events(settings, END, day)
    stats = ctr_labels.run(settings, END, spark=spark)
    assert stats["pairs"] == 2500 and stats["output_files"] == 3
    assert len(parquet_files(Lake.from_settings(settings).path("ctr_labels", ds=END))) == 3


def bad_day() -> tuple[pd.DataFrame, dict[str, int]]:
    """A clean day plus known bad rows of every kind."""
    good = clean_day(END, 11, n_pairs=30)
    t = pd.Timestamp(END) + pd.Timedelta(hours=1)
    base = {"ts": t, "item_id": 901, "keyphrase_id": 1, "query": "q", "event": "impression", "position": 1}
    bad = []
    for i, col in enumerate(["event_id", "ts", "item_id", "keyphrase_id", "event"]):  # null_key: 5
        bad.append({**base, "event_id": f"n{i}", col: None})
    bad += [{**base, "event_id": "u0", "event": "purchase"}, {**base, "event_id": "u1", "event": "Click"}]  # 2
    bad += [{**base, "event_id": "p0", "position": 0}, {**base, "event_id": "p1", "position": -3},
            {**base, "event_id": "p2", "position": None}]  # bad_position: 3
    # duplicate event ids: copies of existing good impressions, later in time -> 4 quarantined
    dups = good[good["event"] == "impression"].head(4).copy()
    dups["ts"] = dups["ts"] + pd.Timedelta(seconds=1)
    # click on a pair never shown that day: 2 clicks
    bad += [{**base, "event_id": f"c{i}", "item_id": 902, "event": "click"} for i in range(2)]
    # pair 903: 1 impression, 3 clicks -> all 4 rows quarantined
    bad += [{**base, "event_id": "e0", "item_id": 903}] + [
        {**base, "event_id": f"e{i}", "item_id": 903, "event": "click"} for i in range(1, 4)]
    df = _typed(pd.concat([good, pd.DataFrame(bad), dups], ignore_index=True))
    expected = {"null_key": 5, "unknown_event": 2, "bad_position": 3, "duplicate_event_id": 4,
                "click_without_impression": 2, "clicks_exceed_impressions": 4}
    return df, expected


def test_quarantine_counts_per_reason(spark, settings):
    settings = cfg(settings, ctr={"window_days": 1, "min_impressions": 5, "max_bad_share": 1.0})
    df, expected = bad_day()
    assert ref_classify(df).value_counts().to_dict() == expected  # the reference agrees with the design
    write_events(settings, END, df)
    stats = ctr_labels.run(settings, END, spark=spark)
    assert stats["quarantined_by_reason"] == expected
    assert stats["rows_quarantined"] == sum(expected.values()) and stats["rows_in"] == len(df)

    lake = Lake.from_settings(settings)
    q = read_parquet(lake.path("quarantine", "events", ds=END), contract="quarantine")
    assert q["reason"].value_counts().to_dict() == expected
    assert set(q.columns) == {"event_id", "ts", "item_id", "keyphrase_id", "query", "event", "position", "reason"}
    # the first copy of each duplicated id is kept (the original, earlier one)
    dup = q[q["reason"] == "duplicate_event_id"]
    orig = df[df["event_id"].isin(dup["event_id"])].groupby("event_id")["ts"].min()
    assert (dup.set_index("event_id")["ts"] > orig.reindex(dup["event_id"])).all()
    # labels equal the reference computed on the same dirty day
    pd.testing.assert_frame_equal(read_labels(settings, END), ref_labels({END: df}, [END]))
    assert not {901, 902, 903} & set(read_labels(settings, END)["item_id"])


def test_bad_share_limit_fails_but_keeps_quarantine(spark, settings):
    settings = cfg(settings, ctr={"window_days": 1, "max_bad_share": 0.01})
    df, expected = bad_day()  # ~20 bad rows of a few hundred: > 1%
    write_events(settings, END, df)
    with pytest.raises(DataError, match=rf"raw events for {END}: 20 of {len(df)} rows are bad"):
        ctr_labels.run(settings, END, spark=spark)
    lake = Lake.from_settings(settings)
    q = read_parquet(lake.path("quarantine", "events", ds=END))
    assert len(q) == 20  # written for debugging even though the run failed
    assert not lake.exists(lake.path("ctr_daily", ds=END))
    assert not lake.exists(lake.path("ctr_labels", ds=END))
    # the same day passes under a looser limit
    ok = cfg(settings, ctr={"window_days": 1, "max_bad_share": 0.2})
    assert ctr_labels.run(ok, END, spark=spark)["rows_quarantined"] == 20
    # corrected input: the rerun drops the stale quarantine
    write_events(settings, END, df[ref_classify(df).isna()])
    assert ctr_labels.run(settings, END, spark=spark)["rows_quarantined"] == 0
    assert not os.path.exists(lake.path("quarantine", "events", ds=END)) or \
        not parquet_files(lake.path("quarantine", "events", ds=END))


def test_missing_day_fails_naming_it_or_is_skipped(spark, settings):
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 3)
    events = {d: clean_day(d, i) for i, d in enumerate(days)}
    for d in (days[0], days[2]):
        write_events(settings, d, events[d])
    with pytest.raises(DataError, match=rf"raw events for {days[1]} are missing"):
        ctr_labels.run(settings, END, spark=spark)
    assert not Lake.from_settings(settings).exists(Lake.from_settings(settings).path("ctr_labels", ds=END))

    stats = ctr_labels.run(settings, END, allow_missing=True, spark=spark)
    assert stats["days_missing"] == [days[1]] and stats["days_used"] == 2
    pd.testing.assert_frame_equal(read_labels(settings, END), ref_labels(events, [days[0], days[2]]))
    # the same through settings
    by_settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5,
                                                        "allow_missing_days": True})
    assert ctr_labels.run(by_settings, END, spark=spark)["days_missing"] == [days[1]]


@pytest.mark.parametrize("change, column", [
    (lambda df: df.assign(position=df["position"].astype(str)), "position"),
    (lambda df: df.drop(columns=["keyphrase_id"]), "keyphrase_id"),
])
def test_schema_mismatch_names_the_column(spark, settings, change, column):
    settings = cfg(settings, ctr={"window_days": 1})
    write_events(settings, END, change(clean_day(END, 1, n_pairs=3)))
    with pytest.raises(SchemaError, match=rf"events at .*ds={END}.*'{column}'"):
        ctr_labels.run(settings, END, spark=spark)


def test_crash_during_write_keeps_previous_partition(spark, settings, monkeypatch):
    settings = cfg(settings, ctr={"window_days": 1, "min_impressions": 5})
    write_events(settings, END, clean_day(END, 1))
    ctr_labels.run(settings, END, spark=spark)
    before = read_labels(settings, END)

    write_events(settings, END, clean_day(END, 2))  # new input; the rerun will crash mid-write
    real = ctr_labels._write_partition_stats

    def crash(tmp_dir, stats):
        real(tmp_dir, stats)
        if "/ctr_labels/" in tmp_dir:
            assert parquet_files(tmp_dir)  # the new data is fully written in the hidden temp dir...
            raise RuntimeError("injected crash")  # ...and the job dies before the rename

    monkeypatch.setattr(ctr_labels, "_write_partition_stats", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        ctr_labels.run(settings, END, spark=spark)
    lake = Lake.from_settings(settings)
    pd.testing.assert_frame_equal(read_labels(settings, END), before)
    assert [n for n in os.listdir(lake.path("ctr_labels")) if n != f"ds={END}"] == []  # temp dir removed


def test_sr_labels_pass_through(spark, settings):
    settings = cfg(settings, ctr={"window_days": 1, "max_bad_share": 0.5})
    write_events(settings, END, clean_day(END, 1, n_pairs=5))
    sr = pd.DataFrame({
        "item_id": pd.array([1, 1, 2, 3, None, 4], dtype="Int64"),
        "keyphrase_id": pd.array([1, 1, 2, 3, 5, 4], dtype="Int64"),
        "score": [0.2, 0.9, 0.5, float("nan"), 0.1, 0.7],
        "label": pd.array([0, 1, 1, 1, 0, 2], dtype="Int32"),
    })
    lake = Lake.from_settings(settings)
    write_parquet_atomic(sr, lake.path("sr_input", ds=END))
    stats = ctr_labels.run(settings, END, spark=spark)
    assert stats["sr_labels"] == {"rows_in": 6, "rows": 2, "rows_quarantined": 4, "quarantined_by_reason": {
        "null_key": 1, "bad_label": 1, "bad_score": 1, "duplicate_pair": 1}}
    out = read_parquet(lake.path("sr_labels", ds=END), contract="sr_labels").sort_values("item_id")
    assert out[["item_id", "keyphrase_id", "label"]].values.tolist() == [[1, 1, 1], [2, 2, 1]]
    assert out["score"].tolist() == [0.9, 0.5]  # of the duplicated pair, the positive row is kept
    q = read_parquet(lake.path("quarantine", "sr_labels", ds=END))
    assert sorted(q["reason"]) == ["bad_label", "bad_score", "duplicate_pair", "null_key"]


def test_cli_exit_codes(spark, settings, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", settings.lake_root)
    monkeypatch.setenv("KP_CTR__WINDOW_DAYS", "2")
    get_settings.cache_clear()
    try:
        write_events(settings, END, clean_day(END, 1, n_pairs=5))
        assert cli.main(["ctr-labels", "--ds", END]) == 3  # the day before is missing
        assert "2026-10-09" in capsys.readouterr().err
        assert cli.main(["ctr-labels", "--ds", END, "--allow-missing"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["days_missing"] == ["2026-10-09"] and summary["pairs"] == 5
        assert cli.main(["ctr-labels", "--ds", "10/10/2026"]) == 2
    finally:
        get_settings.cache_clear()


def test_tiny_world_matches_pandas(spark, tiny_world):
    """On the synthetic tiny world: Spark labels == the pandas reference on the same raw events."""
    tiny_world = tiny_world.with_overrides(**{"ctr.window_days": 4})  # 4 daily aggregates keep it quick
    lake = Lake.from_settings(tiny_world)
    days = lake.partitions("events")
    assert days, "the tiny world has no events"
    end = days[-1]
    window = ds_range(end, tiny_world.ctr.window_days)
    events = {d: read_parquet(lake.path("events", ds=d)) for d in window if d in days}
    stats = ctr_labels.run(tiny_world, end, allow_missing=True, spark=spark)
    expected = ref_labels(events, window, tiny_world.ctr.ctr_threshold, tiny_world.ctr.min_impressions)
    pd.testing.assert_frame_equal(read_labels(tiny_world, end), expected)
    assert stats["positives"] == int(expected["label"].sum()) > 0
    assert stats["rows_in"] == sum(len(e) for e in events.values())


# ---------------------------------------------------------------------------------------------
# the day boundary: clicks after midnight, ids repeated across days, timestamps outside the day
# ---------------------------------------------------------------------------------------------
PREV = "2026-10-09"  # the day before END


def ev(event_id: str, ts: str, item: int, event: str = "impression", kp: int = 1) -> dict:
    return {"event_id": event_id, "ts": pd.Timestamp(ts), "item_id": item, "keyphrase_id": kp, "query": f"q{kp}",
            "event": event, "position": 1}


def quarantined(settings, day: str = END) -> pd.DataFrame:
    return read_parquet(Lake.from_settings(settings).path("quarantine", "events", ds=day), contract="quarantine")


def daily(settings, day: str) -> pd.DataFrame:
    df = read_parquet(Lake.from_settings(settings).path("ctr_daily", ds=day), contract="ctr_daily")
    return df.sort_values(["item_id", "keyphrase_id"]).reset_index(drop=True)


def midnight_world(settings) -> None:
    write_events(settings, PREV, _typed(pd.DataFrame([
        ev("i1", f"{PREV} 23:50", 1),                      # item 1: its click comes 15 min later, after midnight
        ev("i2", f"{PREV} 23:00", 2),                      # item 2: 65 min before its click: outside the window
        ev("i3", f"{PREV} 23:50", 3),                      # item 3: one impression, two clicks after midnight
        ev("i4", f"{PREV} 23:50", 4), ev("k4", f"{PREV} 23:51", 4, "click"),  # item 4: already clicked on PREV
        ev("i5", f"{PREV} 12:00", 5),
    ])))
    write_events(settings, END, _typed(pd.DataFrame([
        ev("c1", f"{END} 00:05", 1, "click"),
        ev("c2", f"{END} 00:05", 2, "click"),
        ev("c3a", f"{END} 00:05", 3, "click"), ev("c3b", f"{END} 00:10", 3, "click"),
        ev("c4", f"{END} 00:02", 4, "click"),
        ev("j5", f"{END} 09:00", 5), ev("c5", f"{END} 09:01", 5, "click"),  # an ordinary same-day click
    ])))


def test_click_after_midnight_counts_on_the_impression_before_it(spark, settings):
    settings = cfg(settings, ctr={"window_days": 2, "min_impressions": 1, "max_bad_share": 1.0})
    midnight_world(settings)
    stats = ctr_labels.run(settings, END, spark=spark)
    labels = read_labels(settings, END).set_index("item_id")
    assert labels.loc[1, ["impressions", "clicks", "label"]].tolist() == [1, 1, 1]  # the midnight click counts
    assert labels.loc[5, ["impressions", "clicks"]].tolist() == [2, 1]
    assert labels.loc[2, ["impressions", "clicks"]].tolist() == [1, 0]  # 65 min > 30: not attributed
    assert labels.loc[3, ["impressions", "clicks"]].tolist() == [1, 0]  # 2 clicks on 1 carried impression
    assert labels.loc[4, ["impressions", "clicks"]].tolist() == [1, 1]  # its impression was clicked on PREV
    assert stats["clicks_attributed_prev_day"] == 1
    assert stats["quarantined_by_reason"] == {"click_without_impression": 1, "clicks_exceed_impressions": 3}
    q = quarantined(settings).set_index("event_id")["reason"].sort_index()
    assert q.to_dict() == {"c2": "click_without_impression", "c3a": "clicks_exceed_impressions",
                           "c3b": "clicks_exceed_impressions", "c4": "clicks_exceed_impressions"}
    day_stats = json.loads(open(f"{Lake.from_settings(settings).path('ctr_daily', ds=END)}/_stats.json").read())
    assert day_stats["prev_day_tail"] == "read" and day_stats["prev_day_tail_rows"] == 4  # i1 i3 i4 k4 (i2 is before 23:30)
    assert day_stats["clicks_attributed_prev_day"] == 1
    # the click is counted on END, its impression on PREV (each day's aggregate holds its own rows)
    assert daily(settings, END).set_index("item_id").loc[1, ["impressions", "clicks"]].tolist() == [0, 1]

    # a window of 0 minutes: no cross-day attribution, the click is quarantined as before
    strict = cfg(settings, ctr={"window_days": 2, "min_impressions": 1, "max_bad_share": 1.0,
                                "attribution_window_minutes": 0})
    stats = ctr_labels.run(strict, END, spark=spark)
    assert stats["clicks_attributed_prev_day"] == 0
    assert stats["quarantined_by_reason"]["click_without_impression"] == 5  # all five clicks on END
    assert read_labels(strict, END).set_index("item_id").loc[1, ["impressions", "clicks"]].tolist() == [1, 0]
    # a wider window reaches item 2's impression 65 minutes before its click
    wide = cfg(settings, ctr={"window_days": 2, "min_impressions": 1, "max_bad_share": 1.0,
                              "attribution_window_minutes": 90})
    assert ctr_labels.run(wide, END, spark=spark)["clicks_attributed_prev_day"] == 2


def test_event_id_repeated_on_two_days_counts_once(spark, settings):
    settings = cfg(settings, ctr={"window_days": 2, "min_impressions": 1, "max_bad_share": 1.0})
    write_events(settings, PREV, _typed(pd.DataFrame([
        ev("r1", f"{PREV} 23:55", 1), ev("r2", f"{PREV} 23:58", 2), ev("x", f"{PREV} 08:00", 3)])))
    write_events(settings, END, _typed(pd.DataFrame([
        ev("r1", f"{END} 00:02", 1),                           # the same id re-delivered with a new time
        ev("r1", f"{END} 00:03", 1),                           # and once more: both copies are dropped
        ev("r2", f"{PREV} 23:58", 2),                          # the same row in both partitions
        ev("y", f"{END} 08:00", 3),
    ])))
    stats = ctr_labels.run(settings, END, spark=spark)
    labels = read_labels(settings, END).set_index("item_id")
    assert labels.loc[1, "impressions"] == 1  # counted once (on PREV), not three times
    assert labels.loc[2, "impressions"] == 1
    assert labels.loc[3, "impressions"] == 2  # distinct ids: both count
    assert stats["quarantined_by_reason"] == {"ts_outside_day": 1, "duplicate_event_id_prev_day": 2}
    q = quarantined(settings)
    assert sorted(zip(q["event_id"], q["reason"])) == [
        ("r1", "duplicate_event_id_prev_day"), ("r1", "duplicate_event_id_prev_day"), ("r2", "ts_outside_day")]
    # with a clock-skew allowance the copy of r2 is inside END's day, and is caught as a repeat instead
    skew = cfg(settings, ctr={"window_days": 2, "min_impressions": 1, "max_bad_share": 1.0, "clock_skew_minutes": 5})
    stats = ctr_labels.run(skew, END, spark=spark)
    assert stats["quarantined_by_reason"] == {"duplicate_event_id_prev_day": 3}
    assert read_labels(skew, END).set_index("item_id").loc[2, "impressions"] == 1


def test_event_outside_its_partition_day_is_quarantined(spark, settings):
    settings = cfg(settings, ctr={"window_days": 1, "min_impressions": 1, "max_bad_share": 1.0})
    good = clean_day(END, 5, n_pairs=5)
    edge = _typed(pd.DataFrame([
        ev("first", f"{END} 00:00:00", 50),                  # midnight belongs to its day
        ev("last", f"{END} 23:59:59.999999", 50),
        ev("early", f"{PREV} 22:00", 51),                    # logged in END's partition, but of PREV
    ]))
    write_events(settings, END, _typed(pd.concat([good, edge], ignore_index=True)))
    stats = ctr_labels.run(settings, END, spark=spark)
    assert stats["quarantined_by_reason"] == {"ts_outside_day": 1} and stats["rows_quarantined"] == 1
    q = quarantined(settings)
    assert q[["event_id", "reason"]].values.tolist() == [["early", "ts_outside_day"]]
    labels = read_labels(settings, END).set_index("item_id")
    assert labels.loc[50, "impressions"] == 2 and 51 not in labels.index

    # the end of the day is exclusive; a clock-skew allowance widens both ends
    late = _typed(pd.DataFrame([ev("next", "2026-10-11 00:00:00", 52), ev("skewed", f"{PREV} 23:57", 53)]))
    write_events(settings, END, _typed(pd.concat([good, late], ignore_index=True)))
    assert ctr_labels.run(settings, END, spark=spark)["quarantined_by_reason"] == {"ts_outside_day": 2}
    skew = cfg(settings, ctr={"window_days": 1, "min_impressions": 1, "max_bad_share": 1.0, "clock_skew_minutes": 5})
    assert ctr_labels.run(skew, END, spark=spark)["rows_quarantined"] == 0


# ---------------------------------------------------------------------------------------------
# the sliding window: ctr_labels/ds=D-1 + ctr_daily/ds=D - ctr_daily/ds=D-window_days, exact, with fallbacks
# ---------------------------------------------------------------------------------------------
def full_sum_ref(settings, day: str) -> pd.DataFrame:
    """The labels as the full sum of the window's ctr_daily partitions, computed in pandas."""
    lake = Lake.from_settings(settings)
    frames = [read_parquet(lake.path("ctr_daily", ds=d), contract="ctr_daily")
              for d in ds_range(day, settings.ctr.window_days) if lake.exists(lake.path("ctr_daily", ds=d))]
    s = pd.concat(frames).groupby(["item_id", "keyphrase_id"])[["impressions", "clicks"]].sum().reset_index()
    s["ctr"] = (s["clicks"] / s["impressions"].where(s["impressions"] > 0)).fillna(0.0)
    s["label"] = ((s["ctr"] > settings.ctr.ctr_threshold) & (s["impressions"] >= settings.ctr.min_impressions)).astype(int)
    return _norm(s)


def assert_exact(settings, day: str) -> pd.DataFrame:
    got = read_labels(settings, day)
    pd.testing.assert_frame_equal(got, full_sum_ref(settings, day), check_exact=True)
    assert not ((got["impressions"] == 0) & (got["clicks"] == 0)).any()
    assert (got[["impressions", "clicks"]] >= 0).all().all()
    return got


def pair_set(df: pd.DataFrame) -> set:
    return set(zip(df["item_id"], df["keyphrase_id"]))


def test_sliding_window_equals_full_sum_day_after_day(spark, settings):
    """Six consecutive days, pairs entering and leaving, a pair whose only in-window event is a click attributed to
    an impression that already left the window (impressions 0, clicks 1: kept), then gone (both 0: dropped)."""
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 8)
    events = {d: clean_day(d, i) for i, d in enumerate(days)}
    events[days[2]] = _typed(pd.concat([events[days[2]], pd.DataFrame([ev("b-imp", f"{days[2]} 23:50", 99, kp=99)])]))
    events[days[3]] = _typed(pd.concat([events[days[3]], pd.DataFrame([ev("b-clk", f"{days[3]} 00:05", 99, "click", 99)])]))
    for d, df in events.items():
        write_events(settings, d, df)
    lake = Lake.from_settings(settings)
    prev, entered, left = None, 0, 0
    for i, d in enumerate(days[2:], start=2):
        stats = ctr_labels.run(settings, d, spark=spark)
        if i == 2:
            assert stats["window_mode"] == "full" and "does not exist" in stats["window_reason"]
        else:
            assert stats["window_mode"] == "sliding", stats["window_reason"]
            assert stats["partitions_read"] == 3 and stats["days_used"] == 3
        got = assert_exact(settings, d)
        if prev is not None:
            entered += len(pair_set(got) - pair_set(prev))
            left += len(pair_set(prev) - pair_set(got))
        prev = got
        row = got[got["item_id"] == 99]
        if d == days[3]:
            assert row[["impressions", "clicks"]].values.tolist() == [[1, 1]]
        elif d in (days[5],):  # the impression's day left the window, the click's day is still in it
            assert row[["impressions", "clicks", "ctr", "label"]].values.tolist() == [[0, 1, 0.0, 0]]
        elif d in (days[6], days[7]):
            assert row.empty  # both counts fell to 0: dropped, as the full sum never had it
        run_stats = lake.read_json(lake.run_stats_path(d, "ctr_labels"))
        saved = lake.read_json(f"{lake.path('ctr_labels', ds=d)}/_stats.json")
        assert run_stats["window_mode"] == saved["window_mode"] == stats["window_mode"]
        assert saved["window_state"]["sources"].keys() == set(ds_range(d, 3))
    assert entered > 10 and left > 10  # the window really moved
    # min_impressions does not filter the output: pairs under it are there (label 0), so the output is the state
    assert (prev["impressions"] < 5).any()

    # a rerun is idempotent and still sliding; the same day summed in full gives the same rows
    sliding = read_labels(settings, days[-1])
    assert ctr_labels.run(settings, days[-1], spark=spark)["window_mode"] == "sliding"
    pd.testing.assert_frame_equal(read_labels(settings, days[-1]), sliding, check_exact=True)
    full = cfg(settings, ctr={"window_days": 3, "min_impressions": 5, "sliding_window": False})
    stats = ctr_labels.run(full, days[-1], spark=spark)
    assert stats["window_mode"] == "full" and stats["window_reason"] == "ctr.sliding_window is false"
    assert stats["partitions_read"] == 3
    pd.testing.assert_frame_equal(read_labels(settings, days[-1]), sliding, check_exact=True)


def test_sliding_falls_back_when_a_daily_aggregate_is_rewritten(spark, settings):
    """A rerun of an old day with re-delivered raw, a backfilled day, a rewritten day leaving the window: each makes
    the state untrustworthy (full sum, reason logged and recorded); the next day slides again, exactly."""
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 9)
    world(settings, days)
    lake = Lake.from_settings(settings)
    for d in days[2:4]:
        ctr_labels.run(settings, d, spark=spark)

    # 1. raw of days[2] re-delivered (other events), the day rerun: its aggregate changes under the state of days[3]
    write_events(settings, days[2], clean_day(days[2], 100))
    ctr_labels.run(settings, days[2], spark=spark)
    stats = ctr_labels.run(settings, days[4], spark=spark)
    assert stats["window_mode"] == "full"
    assert stats["window_reason"] == f"ctr_daily/ds={days[2]} was rewritten after the state was built (a rerun or a backfill)"
    assert_exact(settings, days[4])
    stats = ctr_labels.run(settings, days[5], spark=spark)  # the state of days[4] holds the new aggregate
    assert stats["window_mode"] == "sliding"
    assert_exact(settings, days[5])

    # 2. a lost aggregate inside the window is backfilled from raw: a new aggregate the state never summed
    import shutil

    shutil.rmtree(lake.path("ctr_daily", ds=days[4]))
    stats = ctr_labels.run(settings, days[6], spark=spark)
    assert stats["days_computed"] == [days[4], days[6]]
    assert stats["window_mode"] == "full" and f"ctr_daily/ds={days[4]} was rewritten" in stats["window_reason"]
    assert_exact(settings, days[6])

    # 3. the day about to leave the window is rerun on different raw after the state was built: what the state
    # summed for it is gone, it cannot be subtracted
    ctr_labels.run(settings, days[7], spark=spark)
    write_events(settings, days[5], clean_day(days[5], 200))
    ctr_labels.run(settings, days[5], spark=spark)
    stats = ctr_labels.run(settings, days[8], spark=spark)
    assert stats["window_mode"] == "full"
    assert stats["window_reason"].startswith(f"ctr_daily/ds={days[5]}, the day leaving the window, was rewritten")
    assert_exact(settings, days[8])


def test_sliding_falls_back_without_a_trustworthy_state(spark, settings):
    """The state ctr_labels/ds=D-1 is not used when it is absent (a gap), summed another window_days, was written
    without a window state (an older version), has data files other than the ones it recorded, or yields negative
    sums; the labels are the full sum each time."""
    import shutil

    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5})
    days = ds_range(END, 5)
    world(settings, days)
    lake = Lake.from_settings(settings)
    for d in days[2:4]:
        ctr_labels.run(settings, d, spark=spark)
    state = lake.path("ctr_labels", ds=days[3])
    stats_path = f"{state}/_stats.json"
    good_stats = open(stats_path).read()
    D = days[4]

    def run_full(reason_part: str, s=settings):
        stats = ctr_labels.run(s, D, spark=spark)
        assert stats["window_mode"] == "full", stats["window_reason"]
        assert reason_part in stats["window_reason"]
        assert stats["partitions_read"] == s.ctr.window_days
        assert_exact(s, D)
        return stats

    assert ctr_labels.run(settings, D, spark=spark)["window_mode"] == "sliding"  # the state is good
    run_full("ctr.window_days changed: ctr_labels/ds=2026-10-09 summed 3 days, now 4",
             cfg(settings, ctr={"window_days": 4, "min_impressions": 5}))
    # an older version's state: no window record
    old = json.loads(good_stats)
    del old["window_state"]
    open(stats_path, "w").write(json.dumps(old))
    run_full("records no window state")
    open(stats_path, "w").write(good_stats)
    assert ctr_labels.run(settings, D, spark=spark)["window_mode"] == "sliding"
    # the state's data replaced behind its stats (a hand-made fix, a copy from elsewhere)
    part = next(f for f in os.listdir(state) if f.endswith(".parquet"))
    tampered = read_parquet(state, contract="ctr_labels")
    tampered["impressions"] = tampered["impressions"] * 2
    os.remove(f"{state}/{part}")
    tampered.to_parquet(f"{state}/part-00000-edited.parquet", index=False)
    run_full("are not the ones its _stats.json recorded")
    # ... and with its recorded fingerprint patched to match: the sums go negative, never written
    from keyphrase_pipeline.core.lake import dir_fingerprint

    zeroed = tampered.assign(impressions=0, clicks=0)
    zeroed.to_parquet(f"{state}/part-00000-edited.parquet", index=False)
    patched = json.loads(good_stats)
    patched["data_fingerprint"] = dir_fingerprint(state)
    open(stats_path, "w").write(json.dumps(patched))
    run_full("the sliding sums went negative")
    # a gap: no labels for D-1 at all
    shutil.rmtree(state)
    run_full(f"no state: ctr_labels/ds={days[3]} does not exist")


def test_sliding_with_a_day_missing_from_the_state(spark, settings):
    """allow_missing: a day missing from the state is missing on both sides (nothing to subtract when it leaves);
    when its raw arrives late and it is backfilled, the state no longer matches: full sum."""
    settings = cfg(settings, ctr={"window_days": 3, "min_impressions": 5, "allow_missing_days": True})
    days = ds_range(END, 5)
    events = {d: clean_day(d, i) for i, d in enumerate(days)}
    for d in days:
        if d != days[1]:
            write_events(settings, d, events[d])
    assert ctr_labels.run(settings, days[2], spark=spark)["days_missing"] == [days[1]]
    stats = ctr_labels.run(settings, days[3], spark=spark)
    assert stats["window_mode"] == "sliding" and stats["partitions_read"] == 3  # days[0] subtracted
    assert_exact(settings, days[3])
    stats = ctr_labels.run(settings, days[4], spark=spark)
    assert stats["window_mode"] == "sliding" and stats["partitions_read"] == 2  # days[1] was never in the state
    assert f"ctr_daily/ds={days[1]} was not in the state" in stats["window_reason"]
    assert_exact(settings, days[4])
    pd.testing.assert_frame_equal(read_labels(settings, days[4]), ref_labels(events, days[2:]), check_exact=True)
    # days[1]'s raw arrives late: rerunning days[3] backfills it, which the state of days[2] never summed
    write_events(settings, days[1], events[days[1]])
    stats = ctr_labels.run(settings, days[3], spark=spark)
    assert stats["days_computed"] == [days[1], days[3]]
    assert stats["window_mode"] == "full"
    assert stats["window_reason"] == f"ctr_daily/ds={days[1]} was missing when the state was built"
    pd.testing.assert_frame_equal(assert_exact(settings, days[3]), ref_labels(events, days[1:4]), check_exact=True)
