"""The hidden truth: loading, relevance rules, exposure buckets and the simulated annotator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from testsupport import make_settings

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.synthetic.world import SLOTS, TAIL_MIN_IMPRESSIONS, World, simulated_p_yes


@pytest.fixture(scope="module")
def world(tiny_world_lake):
    return World.load(make_settings(tiny_world_lake))


def _all_pairs(world):
    """Every same-type (item, keyphrase) pair (and a few cross-type ones)."""
    items, kps = world.items, world.keyphrases
    pairs = items[["item_id", "product_type"]].merge(kps[["keyphrase_id", "product_type"]], on="product_type")
    return pairs


def test_load_refuses_a_lake_without_synth(settings):
    with pytest.raises(DataError, match="not a synthetic world"):
        World.load(settings)


def test_relevant_pairs_meet_every_constraint(world):
    pairs = _all_pairs(world)
    rel = world.is_relevant(pairs["item_id"], pairs["keyphrase_id"])
    assert 0.02 < rel.mean() < 0.5
    items = world.items.set_index("item_id")
    kps = world.keyphrases.set_index("keyphrase_id")
    r = pairs[rel]
    for slot in SLOTS:
        kv = kps.loc[r["keyphrase_id"], slot].to_numpy()
        iv = items.loc[r["item_id"], slot].to_numpy()
        constrained = pd.notna(kv)
        assert (kv[constrained] == iv[constrained]).all(), slot
    # and every irrelevant same-type pair violates at least one constraint
    nr = pairs[~rel].sample(min(2000, int((~rel).sum())), random_state=0)
    violated = np.zeros(len(nr), dtype=bool)
    for slot in SLOTS:
        kv = kps.loc[nr["keyphrase_id"], slot].to_numpy()
        iv = items.loc[nr["item_id"], slot].to_numpy()
        violated |= pd.notna(kv) & ((kv != iv) | pd.isna(iv))
    assert violated.all()


def test_other_types_and_unknown_ids_are_never_relevant(world):
    it = world.items.iloc[0]
    other = world.keyphrases[(world.keyphrases["product_type"] != it["product_type"])
                             & (world.keyphrases["kind"] == "generic")]
    assert not world.is_relevant(np.full(len(other), it["item_id"]), other["keyphrase_id"]).any()
    same = world.keyphrases[(world.keyphrases["product_type"] == it["product_type"])
                            & (world.keyphrases["kind"] == "generic")]
    assert world.is_relevant(np.full(len(same), it["item_id"]), same["keyphrase_id"]).all()
    assert not world.is_relevant([-1, it["item_id"]], [same["keyphrase_id"].iloc[0], -5]).any()


def test_misspelled_keyphrases_share_their_source_relevant_set(world):
    kps = world.keyphrases
    miss = kps[kps["kind"] == "misspelled"]
    assert len(miss) >= 10 and miss["source_keyphrase_id"].notna().all()
    ids = world.items["item_id"].to_numpy()
    matched = 0
    for _, m in miss.head(30).iterrows():
        src = kps[kps["keyphrase_id"] == m["source_keyphrase_id"]].iloc[0]
        assert src["text"] != m["text"]
        a = world.is_relevant(ids, np.full(len(ids), m["keyphrase_id"]))
        b = world.is_relevant(ids, np.full(len(ids), src["keyphrase_id"]))
        assert (a == b).all()
        matched += int(a.any())
    assert matched >= 10


def test_relevant_keyphrases_per_item(world):
    ids = world.items["item_id"].to_numpy()
    rel = world.relevant_keyphrases(ids)
    assert set(rel) == set(ids.tolist())
    counts = np.array([len(v) for v in rel.values()])
    assert counts.min() >= 1 and 4 <= np.median(counts) <= 40
    some = ids[:25]
    for i in some:
        ks = rel[int(i)]
        assert world.is_relevant(np.full(len(ks), i), ks).all()
    # cross-check against the pairwise rule on one item's whole type
    item = world.items.iloc[3]
    cand = world.keyphrases[world.keyphrases["product_type"] == item["product_type"]]["keyphrase_id"].to_numpy()
    mask = world.is_relevant(np.full(len(cand), item["item_id"]), cand)
    assert set(cand[mask].tolist()) == set(rel[int(item["item_id"])].tolist())
    assert len(world.relevant_keyphrases([123])[123]) == 0


def test_generic_is_broad_long_tail_narrow_and_hard_negatives_exist(world):
    pairs = _all_pairs(world)
    pairs["rel"] = world.is_relevant(pairs["item_id"], pairs["keyphrase_id"])
    kind = world.keyphrases.set_index("keyphrase_id")["kind"]
    per_kp = pairs.groupby("keyphrase_id")["rel"].sum()
    by_kind = per_kp.groupby(kind.reindex(per_kp.index)).mean()
    assert by_kind["generic"] > 3 * by_kind["long_tail"]
    # hard negatives: same product type, same brand, wrong compat
    items = world.items.set_index("item_id")
    kps = world.keyphrases.set_index("keyphrase_id")
    neg = pairs[~pairs["rel"]]
    kc = kps.loc[neg["keyphrase_id"], "compat"].to_numpy()
    ic = items.loc[neg["item_id"], "compat"].to_numpy()
    assert (pd.notna(kc) & pd.notna(ic) & (kc != ic)).sum() > 50


def test_simulated_annotator_agrees_with_truth_at_its_accuracy(world):
    pairs = _all_pairs(world)
    truth = world.is_relevant(pairs["item_id"], pairs["keyphrase_id"])
    p = simulated_p_yes(world, pairs["item_id"], pairs["keyphrase_id"], accuracy=0.9, seed=0)
    agree = ((p >= 0.5) == truth).mean()
    assert 0.85 <= agree <= 0.95
    assert (p[p >= 0.5] >= 0.75).all() and (p[p >= 0.5] <= 0.99).all()
    assert (p[p < 0.5] >= 0.01).all() and (p[p < 0.5] <= 0.25).all()
    # deterministic per pair, regardless of batch composition
    again = simulated_p_yes(world, pairs["item_id"][::-1], pairs["keyphrase_id"][::-1], accuracy=0.9, seed=0)
    np.testing.assert_array_equal(p, again[::-1])
    other = simulated_p_yes(world, pairs["item_id"], pairs["keyphrase_id"], accuracy=0.9, seed=1)
    assert not np.array_equal(p >= 0.5, other >= 0.5)
    perfect = simulated_p_yes(world, pairs["item_id"], pairs["keyphrase_id"], accuracy=1.0)
    assert ((perfect >= 0.5) == truth).all()
    agree70 = ((simulated_p_yes(world, pairs["item_id"], pairs["keyphrase_id"], accuracy=0.7) >= 0.5) == truth).mean()
    assert 0.65 <= agree70 <= 0.75


def test_exposure_buckets(world, tiny_world_lake):
    s = make_settings(tiny_world_lake)
    ex = world.exposure(s, "2026-10-12", 7)
    assert list(ex.columns) == ["item_id", "impressions", "bucket"]
    assert set(ex["item_id"]) == set(world.items["item_id"])
    cut = max(TAIL_MIN_IMPRESSIONS, ex["impressions"].median())
    assert ((ex["impressions"] < cut) == (ex["bucket"] == "tail")).all()
    assert 0.3 <= (ex["bucket"] == "tail").mean() <= 0.7
    top = ex["impressions"].sort_values(ascending=False)
    assert top.iloc[: len(top) // 10].sum() > 0.5 * top.sum()
    # a shorter window has fewer impressions
    assert world.exposure(s, "2026-10-12", 2)["impressions"].sum() < ex["impressions"].sum()
