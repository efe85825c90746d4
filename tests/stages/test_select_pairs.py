import os

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels.store import pair_key, write_label_table
from keyphrase_pipeline.stages import select_pairs
from keyphrase_pipeline.stages.select_pairs import allocate

DS = "2026-10-12"
CATS = ["shoes", "phones", "mugs"]
COLORS = ["red", "blue", "green", "black", "white"]


def _write(df: pd.DataFrame, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    df.to_parquet(f"{path}/part-0.parquet", index=False)


def build_world(settings) -> dict:
    """30 active items (3 categories x 10; 'red shoes model 3'), 1 inactive, keyphrases '<color> <cat>',
    '<cat> accessories' and unrelated ones; each item's own color phrase is CTR-positive, its accessories
    phrase exposed but not positive; a published version recommends a never-exposed phrase per item."""
    lake = Lake.from_settings(settings)
    items = []
    for ci, c in enumerate(CATS):
        for n in range(10):
            items.append({"item_id": ci * 100 + n, "title": f"{COLORS[n % 5]} {c} model {n}", "category": c.title(), "active": True})
    items.append({"item_id": 999, "title": "red shoes gone", "category": "Shoes", "active": False})
    cat = pd.DataFrame(items)
    cat["updated_at"] = pd.Timestamp("2026-10-01").as_unit("us")
    _write(cat, lake.path("catalog", ds=DS))
    texts = [f"{col} {c}" for c in CATS for col in COLORS] + [f"{c} accessories" for c in CATS] + \
            [f"garden hose {i}" for i in range(12)]
    kps = pd.DataFrame({"keyphrase_id": np.arange(len(texts), dtype="int64") + 1000, "text": texts})
    _write(kps, lake.path("keyphrases"))
    kid = dict(zip(kps["text"], kps["keyphrase_id"], strict=True))
    rows, recs = [], []
    for it in items[:-1]:
        color, c = it["title"].split()[:2]
        rows.append((it["item_id"], kid[f"{color} {c}"], 50, 10, 1))
        rows.append((it["item_id"], kid[f"{c} accessories"], 30, 0, 0))
        for r, k in enumerate([kid[f"{color} {c}"], kid[f"{c} accessories"], kid[f"garden hose {it['item_id'] % 12}"]]):
            recs.append((it["item_id"], r + 1, k, "", 0.9 - r / 10))
    ctr = pd.DataFrame(rows, columns=["item_id", "keyphrase_id", "impressions", "clicks", "label"])
    ctr["ctr"] = ctr["clicks"] / ctr["impressions"]
    ctr["label"] = ctr["label"].astype("int32")
    _write(ctr, lake.path("ctr_labels", ds=DS))
    rec = pd.DataFrame(recs, columns=["item_id", "rank", "keyphrase_id", "keyphrase", "score"])
    rec["rank"] = rec["rank"].astype("int32")
    rec["score"] = rec["score"].astype("float32")
    _write(rec, lake.path("serving", "versions", "v001", "recommendations"))
    lake.write_json(lake.path("serving", "versions", "v001", "manifest.json"),
                    {"version": "v001", "ds": "2026-10-11", "created_at": "2026-10-12T02:00:00+00:00"})
    lake.write_pointer(lake.path("serving", "CURRENT"), "v001")
    return {"lake": lake, "ctr": ctr, "items": cat, "kps": kps}


def test_allocate_respects_shares_budget_and_shortages():
    share = {"ctr_positive": 0.3, "unexposed_topk": 0.3, "hard_negative": 0.2, "random": 0.2}
    big = dict.fromkeys(share, 10_000)
    assert allocate(100, share, big) == {"ctr_positive": 30, "unexposed_topk": 30, "hard_negative": 20, "random": 20}
    q = allocate(100, share, {**big, "unexposed_topk": 0})
    assert q["unexposed_topk"] == 0 and sum(q.values()) == 100 and q["ctr_positive"] in (42, 43)
    q = allocate(100, share, {"ctr_positive": 5, "unexposed_topk": 0, "hard_negative": 10_000, "random": 10_000})
    assert q == {"ctr_positive": 5, "unexposed_topk": 0, "hard_negative": 48, "random": 47}
    assert sum(allocate(7, share, big).values()) == 7
    assert allocate(100, share, dict.fromkeys(share, 3)) == dict.fromkeys(share, 3)
    assert allocate(0, share, big) == dict.fromkeys(share, 0)


@pytest.mark.spark
def test_select_pairs_sources_budget_shards_antijoin(settings, spark):
    s = settings.with_overrides(**{"pairs.daily_budget": 40, "pairs.shard_size": 15})
    w = build_world(s)
    lake = w["lake"]
    out = select_pairs.run(s, DS, spark=spark)
    assert out["pairs"] == 40 and out["shards"] == [0, 1, 2]
    assert sorted(out["shard_sizes"]) == [13, 13, 14]
    assert out["selected"] == {"ctr_positive": 12, "unexposed_topk": 12, "hard_negative": 8, "random": 8}
    pairs = select_pairs.read_pairs(s, DS)
    assert len(pairs) == 40 and pairs["pair_key"].is_unique
    assert 999 not in set(pairs["item_id"])  # inactive items are never paired
    row = pairs.iloc[0]
    assert row["pair_key"] == pair_key(row["title"], row["category"], row["keyphrase"], "simulated-annotator-v1", "v1")

    ctr = w["ctr"]
    positives = set(zip(ctr.loc[ctr.label == 1, "item_id"], ctr.loc[ctr.label == 1, "keyphrase_id"], strict=True))
    exposed = set(zip(ctr["item_id"], ctr["keyphrase_id"], strict=True))
    by = {src: g for src, g in pairs.groupby("source")}
    assert all((i, k) in positives for i, k in zip(by["ctr_positive"].item_id, by["ctr_positive"].keyphrase_id, strict=True))
    assert all((i, k) not in exposed for i, k in zip(by["unexposed_topk"].item_id, by["unexposed_topk"].keyphrase_id, strict=True))
    assert set(by["unexposed_topk"]["keyphrase"].str.startswith("garden hose")) == {True}
    for _, r in by["hard_negative"].iterrows():  # same category, shares a word, not positive for this item
        assert (r.item_id, r.keyphrase_id) not in positives
        assert set(r.title.split()) & set(r.keyphrase.split())
        assert r.keyphrase.split()[1] == r.category.lower()

    again = select_pairs.run(s, DS, spark=spark)  # deterministic for (ds, seed)
    pairs2 = select_pairs.read_pairs(s, DS)
    assert again["run_id"] == out["run_id"]
    assert pairs2.sort_values("pair_key").reset_index(drop=True).equals(pairs.sort_values("pair_key").reset_index(drop=True))

    labelled = pairs.assign(text_hash="h", p_yes=0.9, label=1, judge="simulated", judge_model="simulated-annotator-v1",
                            prompt_version="v1", labelled_at=pd.Timestamp("2026-10-12"))
    # a version published by this day's own run does not feed it: a rerun selects the same pairs
    lake.write_json(lake.path("serving", "versions", "v002", "manifest.json"),
                    {"version": "v002", "ds": DS, "created_at": "2026-10-13T02:00:00+00:00"})
    _write(pd.DataFrame({"item_id": [0], "rank": pd.Series([1], dtype="int32"), "keyphrase_id": [1000 + 20],
                         "keyphrase": [""], "score": pd.Series([0.5], dtype="float32")}),
           lake.path("serving", "versions", "v002", "recommendations"))
    lake.write_pointer(lake.path("serving", "CURRENT"), "v002")
    assert select_pairs.run(s, DS, spark=spark)["run_id"] == out["run_id"]
    # the day's own labels merged into the store do not change a rerun of the same day (idempotence)
    write_label_table(labelled, lake.path("llm_store", ds=DS))
    rerun = select_pairs.run(s, DS, spark=spark)
    assert rerun["run_id"] == out["run_id"] and rerun["already_labelled"] == 0
    import shutil

    shutil.rmtree(lake.path("llm_store", ds=DS))

    # label the first selection into the store on an earlier day, and unpublish: the next selection
    # excludes every stored pair and gives the unexposed share to the other sources, filling the budget
    write_label_table(labelled, lake.path("llm_store", ds="2026-10-11"))
    os.remove(lake.path("serving", "CURRENT"))
    third = select_pairs.run(s, DS, budget=25, spark=spark)
    pairs3 = select_pairs.read_pairs(s, DS)
    assert not set(pairs3["pair_key"]) & set(pairs["pair_key"])
    assert third["already_labelled"] >= 20  # the 12 CTR positives and 8 hard negatives at least
    assert third["available"]["ctr_positive"] == 30 - 12
    assert third["selected"] == {"ctr_positive": 11, "unexposed_topk": 0, "hard_negative": 7, "random": 7}
    assert third["pairs"] == 25 and third["budget"] == 25 and third["shards"] == [0, 1]
    stats = lake.read_json(lake.run_stats_path(DS, "select_pairs"))
    assert stats["pairs"] == 25
