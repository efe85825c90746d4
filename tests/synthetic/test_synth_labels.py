"""Simulated judged pairs for recipe development (keyphrase_pipeline.synthetic.synth_labels)."""

from __future__ import annotations

import numpy as np
import pytest

from keyphrase_pipeline.synthetic.synth_labels import WORLDS, make_judged_pairs, world_pairs


def test_judged_pairs_have_the_shape_of_human_judgements():
    df = make_judged_pairs(seed=3, n_items=600, n_pairs=1500, noise=0.12, per_keyphrase=6)
    assert len(df) == 1500 and list(df.columns) == ["title", "category", "keyphrase", "label", "truth", "kind"]
    assert 0.3 < df["truth"].mean() < 0.6                    # roughly half relevant
    assert 0.09 < (df["label"] != df["truth"]).mean() < 0.15  # ~12% of labels flipped, as annotators disagree
    per_kp = df.groupby("keyphrase").size()
    assert per_kp.max() <= 6 and df["keyphrase"].nunique() >= 1500 / 6
    assert (df["category"] != "").all() and (df["title"] != "").all()
    # several candidates per keyphrase, both classes among them: a keyphrase has judged hard negatives
    mixed = df.groupby("keyphrase")["truth"].nunique()
    assert (mixed == 2).mean() > 0.5


def test_same_arguments_same_pairs_and_worlds_differ():
    a = make_judged_pairs(seed=3, n_items=600, n_pairs=300)
    assert a.equals(make_judged_pairs(seed=3, n_items=600, n_pairs=300))
    assert not a.equals(make_judged_pairs(seed=4, n_items=600, n_pairs=300))
    alt = world_pairs("alt", n_pairs=300)
    assert (alt["category"] == "").all() and WORLDS["alt"]["seed"] != WORLDS["demo"]["seed"]
    with pytest.raises(ValueError, match="unknown world"):
        world_pairs("nope")
    with pytest.raises(ValueError, match="noise"):
        make_judged_pairs(seed=1, n_items=600, noise=0.6)


def test_attribute_world_judges_near_misses_and_lexical_neighbours():
    """The attr world's negatives are what a result page shows for attribute queries: the query's product type
    missing exactly one constraint, or another type sharing the query's model or brand."""
    from keyphrase_pipeline.synthetic.synth import _gen_items, _gen_keyphrases, resolve_scale, taxonomy_for
    from keyphrase_pipeline.synthetic.synth_labels import make_attribute_pairs
    from keyphrase_pipeline.synthetic.world import SLOTS, Truth

    df = make_attribute_pairs(seed=5, n_items=2000, n_pairs=1200, noise=0.1, positive_share=0.6)
    assert len(df) == 1200 and list(df.columns) == ["title", "category", "keyphrase", "label", "truth", "kind",
                                                    "negative"]
    assert (df["category"] == "").all() and "generic" not in set(df["kind"])  # every query has a constraint
    assert set(df["negative"]) == {"positive", "near_miss", "lexical", "random"}
    assert (df.loc[df["negative"] == "positive", "truth"] == 1).all()
    assert (df.loc[df["negative"].isin(["near_miss", "lexical"]), "truth"] == 0).all()
    assert df.loc[df["negative"] == "random", "truth"].mean() < 0.02  # a random item is rarely relevant
    assert 0.35 < df["truth"].mean() < 0.65 and 0.07 < (df["label"] != df["truth"]).mean() < 0.13
    counts = df["negative"].value_counts()
    assert counts["near_miss"] > counts["lexical"] > 0 and counts["near_miss"] > counts["random"]
    # check the kinds against the world's attributes
    _, n, n_kp, _ = resolve_scale(2000)
    items = _gen_items(n, 5, taxonomy_for(n))
    kps = _gen_keyphrases(items, n_kp, 5, taxonomy_for(n))
    truth = Truth.from_frames(items, kps)
    from keyphrase_pipeline.synthetic.synth import _titles

    title_row = {t: i for i, t in enumerate(_titles(items, 5))}
    kp_row = {t: i for i, t in enumerate(kps["text"])}
    for kind, sub in df.groupby("negative"):
        ii = sub["title"].map(title_row).to_numpy()
        kk = sub["keyphrase"].map(kp_row).to_numpy()
        same = truth.item_type[ii] == truth.kp_type[kk]
        n_con = (truth.kp_codes[kk] >= 0).sum(axis=1)
        met = ((truth.kp_codes[kk] >= 0) & (truth.kp_codes[kk] == truth.item_codes[ii])).sum(axis=1)
        if kind == "near_miss":
            assert same.all() and (met == n_con - 1).all()
        if kind == "lexical":
            shared = np.zeros(len(sub), dtype=bool)
            for slot in ("compat", "brand"):
                j = SLOTS.index(slot)
                shared |= (truth.kp_codes[kk, j] >= 0) & (truth.kp_codes[kk, j] == truth.item_codes[ii, j])
            assert (~same).all() and shared.all()
    assert make_attribute_pairs(seed=5, n_items=2000, n_pairs=300).equals(make_attribute_pairs(seed=5, n_items=2000, n_pairs=300))
    attr = world_pairs("attr", n_pairs=200)
    assert len(attr) == 200 and "negative" in attr and WORLDS["attr"]["seed"] not in (WORLDS["demo"]["seed"], WORLDS["alt"]["seed"])
    with pytest.raises(ValueError, match="near_share"):
        make_attribute_pairs(seed=1, n_items=600, near_share=0.8, lexical_share=0.4)


def test_listing_world_is_attr_with_marketplace_length_titles():
    """Same pairs and labels as attr; each title keeps its words in order with selling phrases between and
    after them, at a marketplace's length (median ~130 characters, none above 250)."""
    import re

    from keyphrase_pipeline.synthetic.synth_labels import _SELLING, seller_titles

    short, long = world_pairs("attr", n_pairs=600), world_pairs("listing", n_pairs=600)
    for col in ("keyphrase", "label", "truth", "negative"):
        assert short[col].equals(long[col])
    lengths = long["title"].str.len()
    assert 100 <= lengths.median() <= 170 and lengths.max() <= 250 and lengths.quantile(0.9) > 170
    assert short["title"].str.len().max() <= 80  # the world's own titles are short
    for s, whole_title in zip(short["title"], long["title"]):
        rest = whole_title
        for w in s.split():  # the original words, in order
            i = rest.find(w)
            assert i >= 0, (s, whole_title)
            rest = rest[i + len(w):]
    # nothing between a binding word and its object
    bound = re.compile(r"\b(for|with|fits|size) (" + "|".join(map(re.escape, _SELLING)) + r")\b", re.I)
    assert not [t for t in long["title"] if bound.search(t)]
    assert list(seller_titles(np.array(["A b"]), 1)) == list(seller_titles(np.array(["A b"]), 1))


def test_listing_world_never_puts_a_selling_phrase_inside_an_attribute_value():
    """A multi-word value ("2 Pack", "for Galaxy S21", "Size 10") stays whole in the long title: the filler
    goes between a title's segments only (the first version split about one such value in eight)."""
    from keyphrase_pipeline.synthetic import synth_labels as sl
    from keyphrase_pipeline.synthetic.synth_labels import seller_titles

    w = sl.WORLDS["listing"]
    by_title = {sl.title_text(s): s for s in sl._world(w["seed"], w["items"])[3]}
    short, long = world_pairs("attr", n_pairs=600), world_pairs("listing", n_pairs=600)
    whole = []
    for t, long_title in zip(short["title"], long["title"]):
        end = 0
        for seg in by_title[t]:
            end += len(seg) + 1
            if " " in seg and end - 1 <= len(t):
                whole.append(seg in long_title)
    assert len(whole) > 500 and all(whole), (len(whole), whole.count(False))
    segs = np.empty(1, dtype=object)
    segs[0] = ("ACME", "2 Pack", "for Galaxy S21", "Phone Charger")
    for seed in range(50):
        out = seller_titles(segs, seed)[0]
        assert all(v in out for v in segs[0]) and len(out) > 60, out
