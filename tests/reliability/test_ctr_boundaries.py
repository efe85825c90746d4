"""The day boundary on the tiny world's real search logs: a click logged just after midnight whose
impression is in the previous day's partition, an event id re-delivered in the next day's partition, an
event logged in the wrong day's partition. The click counts with its impression, the repeated id counts
once, the misplaced event is quarantined (reason ``ts_outside_day``) and counted; nothing else changes."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pandas as pd
import pytest
from reliability_helpers import DS
from test_bad_input import labels, write_table

from keyphrase_pipeline.core.contracts import arrow_schema
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.stages import ctr_labels

pytestmark = pytest.mark.spark

PREV = (dt.date.fromisoformat(DS) - dt.timedelta(days=1)).isoformat()


def test_midnight_click_repeated_id_and_misplaced_event(pairs_world, spark):
    s = pairs_world.with_overrides(**{"ctr.max_bad_share": 0.05})
    lake = Lake.from_settings(s)
    clean = labels(s)
    prev = read_parquet(lake.path("events", ds=PREV))
    day = read_parquet(lake.path("events", ds=DS))
    midnight = pd.Timestamp(DS)

    # a pair shown nowhere in the window: one impression at 23:52 on PREV, its click at 00:04 on DS
    shown = set(zip(clean["item_id"], clean["keyphrase_id"]))
    item, kp = next((i, k) for i in sorted(set(day["item_id"])) for k in sorted(set(day["keyphrase_id"]))
                    if (i, k) not in shown)
    template = day.iloc[0].to_dict()
    late_imp = {**template, "event_id": "late-imp", "ts": midnight - pd.Timedelta(minutes=8), "item_id": item,
                "keyphrase_id": kp, "event": "impression", "position": 1}
    late_clk = {**late_imp, "event_id": "late-clk", "ts": midnight + pd.Timedelta(minutes=4), "event": "click"}
    # a real impression of PREV's last half hour, delivered again in DS's partition a minute after midnight
    tail = prev[(prev["event"] == "impression") & (prev["ts"] >= midnight - pd.Timedelta(minutes=30))]
    assert len(tail), "the tiny world has no impression in PREV's last half hour"
    again = {**tail.iloc[-1].to_dict(), "ts": midnight + pd.Timedelta(minutes=1)}
    # an impression of PREV's afternoon written into DS's partition
    misplaced = {**day[day["event"] == "impression"].iloc[0].to_dict(), "event_id": "misplaced",
                 "ts": midnight - pd.Timedelta(hours=14)}

    schema = arrow_schema("events")
    write_table(pd.concat([prev, pd.DataFrame([late_imp])], ignore_index=True), lake.path("events", ds=PREV), schema)
    write_table(pd.concat([day, pd.DataFrame([late_clk, again, misplaced])], ignore_index=True),
                lake.path("events", ds=DS), schema)
    shutil.rmtree(lake.path("ctr_daily", ds=PREV))  # PREV's raw changed: its aggregate is rebuilt (backfill)

    stats = ctr_labels.run(s, DS, spark=spark)
    assert stats["days_computed"] == [PREV, DS]
    day_stats = json.loads(open(f"{lake.path('ctr_daily', ds=DS)}/_stats.json").read())
    assert day_stats["quarantined_by_reason"] == {"ts_outside_day": 1, "duplicate_event_id_prev_day": 1}
    assert day_stats["rows_quarantined"] == 2 and day_stats["rows_in"] == len(day) + 3
    assert day_stats["clicks_attributed_prev_day"] == 1 and day_stats["prev_day_tail"] == "read"
    q = read_parquet(lake.path("quarantine", "events", ds=DS), contract="quarantine")
    assert sorted(zip(q["event_id"], q["reason"])) == sorted(
        [("misplaced", "ts_outside_day"), (again["event_id"], "duplicate_event_id_prev_day")])
    assert json.loads(open(lake.run_stats_path(DS, "ctr_labels")).read())["clicks_attributed_prev_day"] == 1

    # the labels: the clean ones plus the new pair with its one impression and its one click
    got = labels(s)
    new = got[(got["item_id"] == item) & (got["keyphrase_id"] == kp)]
    assert new[["impressions", "clicks"]].values.tolist() == [[1, 1]]
    rest = got.drop(new.index).reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, clean)  # the repeated id and the misplaced event changed nothing
