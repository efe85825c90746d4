"""The open-vocabulary development world (keyphrase_pipeline.synthetic.open_vocab; issue 25)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from keyphrase_pipeline.synthetic.open_vocab import OpenSpace, _near, make_open_pairs, model_code
from keyphrase_pipeline.synthetic.synth_labels import WORLDS, world_pairs


@pytest.fixture(scope="module")
def pairs():
    return make_open_pairs(seed=11, n_pairs=3000, details=True)


def test_open_world_has_the_shape_of_real_judgements(pairs):
    df = pairs
    assert len(df) == 3000 and list(df.columns[:7]) == ["title", "category", "keyphrase", "label", "truth", "kind",
                                                       "negative"]
    assert (df["category"] == "").all() and (df["title"].str.len() > 5).all()
    assert 0.4 < df["truth"].mean() < 0.6 and 0.09 < (df["label"] != df["truth"]).mean() < 0.15
    assert set(df["negative"]) == {"positive", "near_miss", "lexical", "random"}
    counts = df["negative"].value_counts()
    assert counts["near_miss"] > counts["random"] > 0 and counts["lexical"] > 0
    assert df.groupby("keyphrase").size().max() <= 6
    # no title is judged for two queries: each query has its own candidates
    assert df.groupby("title")["keyphrase"].nunique().max() == 1
    assert make_open_pairs(seed=11, n_pairs=300).equals(make_open_pairs(seed=11, n_pairs=300))
    assert not make_open_pairs(seed=12, n_pairs=300).equals(make_open_pairs(seed=11, n_pairs=300))
    assert len(world_pairs("open", n_pairs=200)) == 200 and WORLDS["open"]["with_category"] is False
    with pytest.raises(ValueError, match="noise"):
        make_open_pairs(seed=1, noise=0.5)


def test_each_candidate_is_what_its_tag_says(pairs):
    """Positives meet every constraint; a near miss is the query's type with one constraint changed (its brand's
    model code with it); a lexical neighbour is another type sharing the query's device, theme or brand; the
    truth is the rule (type and every constraint), whatever the tag."""
    for row in pairs.itertuples():
        cons, item = row.constraints, row.item
        met = {s for s, v in cons.items() if item.get(s) == v}
        assert row.truth == int(row.item_type == row.query_type and met == set(cons))
        if row.negative == "positive":
            assert row.truth == 1
        elif row.negative == "near_miss":
            assert row.item_type == row.query_type and row.truth == 0
            missed = set(cons) - met
            assert len(missed) == 1 or missed == {"brand", "model"}, (cons, item)
        elif row.negative == "lexical":
            assert row.item_type != row.query_type and met & {"compat", "brand"}


def test_held_out_queries_name_values_the_training_half_never_saw(pairs):
    """What makes the world open: most model codes and many devices of half B's queries are absent from half A's
    (in attr, every value of B is one A has)."""
    from keyphrase_pipeline.commands.eval_labels import split_by_keyphrase

    q = pairs.drop_duplicates("keyphrase")
    a = split_by_keyphrase(q["keyphrase"])
    seen = {(s, v) for c in q["constraints"][a] for s, v in c.items()}
    for slot, most in (("model", 0.02), ("compat", 0.5)):
        b_vals = [(s, v) for c in q["constraints"][~a] for s, v in c.items() if s == slot]
        assert len(b_vals) > 30 and np.mean([x in seen for x in b_vals]) < most, slot


def test_near_values_differ_and_stay_close():
    rng = np.random.default_rng(0)
    for _ in range(200):
        code = model_code(rng)
        other = _near(code, [], rng)
        assert other != code and len(other) == len(code)
        assert sum(x != y for x, y in zip(code, other)) == 1 and re.sub(r"\d", "", other) == re.sub(r"\d", "", code)
    space = OpenSpace()
    phones = space.values("phone case", "compat")
    assert len(phones) > 200 and len(space.values("water bottle", "colour")) > 30
    assert all(_near(p, phones, rng) != p for p in phones[:50])
    assert space.slots("jigsaw puzzle")[:2] == ["brand", "model"]
