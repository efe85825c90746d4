"""Simulated judged pairs for recipe development (keyphrase_pipeline.synthetic.synth_labels)."""

from __future__ import annotations

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
