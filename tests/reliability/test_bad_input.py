"""Malformed inputs injected into the tiny world's real inputs: each bad-event kind in the day's search
logs, bad catalog rows (null/empty/huge titles, null ids, duplicates), titles that are not UTF-8, an empty
keyphrase set. Each is quarantined with counts, or refused with an error naming the problem; nothing bad
reaches the labels or the judge. (tests/stages/test_ctr_labels.py checks each reason on hand-made days;
here the bad rows ride on a realistic day and the labels must come out exactly as from the clean day.)"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reliability_helpers import DS

from keyphrase_pipeline.core.contracts import arrow_schema
from keyphrase_pipeline.core.errors import DataError, SchemaError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, local_path, read_parquet
from keyphrase_pipeline.stages import ctr_labels, select_pairs

pytestmark = pytest.mark.spark


def write_table(df: pd.DataFrame, target: str, schema: pa.Schema) -> None:
    with atomic_dir(target) as tmp:
        p = local_path(tmp)
        p.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), p / "part-00000.parquet")


def labels(s) -> pd.DataFrame:
    lake = Lake.from_settings(s)
    return read_parquet(lake.path("ctr_labels", ds=DS)).sort_values(["item_id", "keyphrase_id"]).reset_index(drop=True)


def inject_bad_events(events: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    ev = events.copy()
    imp = ev[ev["event"] == "impression"].reset_index(drop=True)
    t = ev["ts"].max()
    seen = set(zip(ev["item_id"], ev["keyphrase_id"]))
    item, kp = int(ev["item_id"].max()), int(ev["keyphrase_id"].max())
    fresh = [(i, k) for i in sorted(set(ev["item_id"]))[:50] for k in sorted(set(ev["keyphrase_id"]))[:50]
             if (i, k) not in seen][:2]
    assert len(fresh) == 2 and item and kp

    def row(i, **kw):
        base = imp.iloc[i].to_dict()
        base.update({"event_id": f"bad-{len(rows)}", "ts": t}, **kw)
        return base

    rows: list[dict] = []
    for i in range(3):
        rows.append(row(i, item_id=None))                                  # null_key
    rows.append(row(3, event_id=None))                                     # null_key
    for i in range(2):
        rows.append(row(4 + i, event="view"))                              # unknown_event
    rows.append(row(6, position=0))                                        # bad_position
    rows.append(row(7, position=-3))                                       # bad_position
    for i in range(3):                                                     # duplicate_event_id (later copies)
        rows.append(row(8 + i, event_id=imp.iloc[8 + i]["event_id"], ts=imp.iloc[8 + i]["ts"] + pd.Timedelta(seconds=5)))
    (i1, k1), (i2, k2) = fresh
    for _ in range(2):                                                     # click_without_impression
        rows.append(row(11, item_id=i1, keyphrase_id=k1, event="click"))
    rows.append(row(12, item_id=i2, keyphrase_id=k2, event="impression"))  # clicks_exceed_impressions (3 rows)
    for _ in range(2):
        rows.append(row(12, item_id=i2, keyphrase_id=k2, event="click"))
    expected = {"null_key": 4, "unknown_event": 2, "bad_position": 2, "duplicate_event_id": 3,
                "click_without_impression": 2, "clicks_exceed_impressions": 3}
    bad = pd.DataFrame(rows)
    return pd.concat([ev, bad], ignore_index=True).sample(frac=1.0, random_state=0).reset_index(drop=True), expected


def test_each_bad_event_kind_is_quarantined_and_labels_are_unchanged(pairs_world, spark, caplog):
    s = pairs_world.with_overrides(**{"ctr.max_bad_share": 0.05})
    lake = Lake.from_settings(s)
    clean = labels(s)
    events = read_parquet(lake.path("events", ds=DS))
    dirty, expected = inject_bad_events(events)
    write_table(dirty, lake.path("events", ds=DS), arrow_schema("events"))

    with caplog.at_level(logging.INFO):
        stats = ctr_labels.run(s, DS, spark=spark)
    assert stats["quarantined_by_reason"] == expected
    assert stats["rows_quarantined"] == sum(expected.values()) and stats["rows_in"] == len(dirty)
    q = read_parquet(lake.path("quarantine", "events", ds=DS), contract="quarantine")
    assert q["reason"].value_counts().to_dict() == expected
    assert not q["event_id"].isin(events["event_id"]).any() or \
        set(q.loc[q["event_id"].isin(events["event_id"]), "reason"]) == {"duplicate_event_id"}
    pd.testing.assert_frame_equal(labels(s), clean)  # the bad rows changed nothing
    assert json.loads(open(lake.run_stats_path(DS, "ctr_labels")).read())["rows_quarantined"] == sum(expected.values())
    assert str(sum(expected.values())) in caplog.text  # the count is in the log


def test_too_many_bad_events_fail_the_day_and_keep_the_previous_labels(pairs_world, spark):
    s = pairs_world.with_overrides(**{"ctr.max_bad_share": 0.0001})
    lake = Lake.from_settings(s)
    clean = labels(s)
    dirty, expected = inject_bad_events(read_parquet(lake.path("events", ds=DS)))
    write_table(dirty, lake.path("events", ds=DS), arrow_schema("events"))
    with pytest.raises(DataError, match=rf"{sum(expected.values())} of {len(dirty)} rows are bad"):
        ctr_labels.run(s, DS, spark=spark)
    pd.testing.assert_frame_equal(labels(s), clean)


def _catalog(s) -> pd.DataFrame:
    return read_parquet(Lake.from_settings(s).path("catalog", ds=DS))


def test_title_bytes_that_are_not_utf8_are_a_schema_error_naming_the_column(pairs_world, spark):
    s = pairs_world
    lake = Lake.from_settings(s)
    cat = _catalog(s)
    titles = [t.encode("utf-8") for t in cat["title"]]
    titles[0] = b"caf\xe9 \xff\xfe mug"  # latin-1 bytes from a broken export
    schema = arrow_schema("catalog").set(1, pa.field("title", pa.binary()))
    write_table(cat.assign(title=titles), lake.path("catalog", ds=DS), schema)
    with pytest.raises(SchemaError, match="title"):
        select_pairs.run(s, DS, spark=spark)


def test_empty_keyphrase_set_is_a_clear_error(pairs_world, spark):
    s = pairs_world
    lake = Lake.from_settings(s)
    empty = pd.DataFrame({"keyphrase_id": pd.Series(dtype="int64"), "text": pd.Series(dtype=object),
                          "search_volume": pd.Series(dtype="int64")})
    write_table(empty, lake.path("keyphrases"), arrow_schema("keyphrases"))
    with pytest.raises(DataError, match="0 keyphrases"):
        select_pairs.run(s, DS, spark=spark)


def test_bad_catalog_rows_never_reach_the_judge(pairs_world, spark):
    s = pairs_world.with_overrides(**{"pairs.daily_budget": 2000})
    lake = Lake.from_settings(s)
    cat = _catalog(s)
    active = cat.index[cat["active"]]
    kinds = [None, "", "   \t  "]
    bad_titles = {active[j]: kinds[j % 3] for j in range(30)}  # 10 items of each kind
    for i, t in bad_titles.items():
        cat.loc[i, "title"] = t
    huge = active[30]
    cat.loc[huge, "title"] = "vintage mug " * 20_000  # 240k characters: allowed, truncated downstream
    null_ids = cat.loc[active[31:36]].assign(item_id=None)
    cat = pd.concat([cat, null_ids], ignore_index=True)
    write_table(cat, lake.path("catalog", ds=DS), arrow_schema("catalog"))
    bad_ids = {int(cat.loc[i, "item_id"]) for i in bad_titles}

    stats = select_pairs.run(s, DS, spark=spark)
    pairs = select_pairs.read_pairs(s, DS)
    assert len(pairs) > 0
    assert pairs["title"].notna().all() and (pairs["title"].str.strip() != "").all()
    assert pairs["item_id"].notna().all()
    assert not set(pairs["item_id"]) & bad_ids
    assert stats.get("catalog_quarantined") == len(bad_titles) + len(null_ids)
