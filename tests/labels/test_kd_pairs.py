"""labels.kd_pairs: the unjudged pairs the assistant scores for the student (Augmented SBERT sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distill_helpers import DS, make_pairs, tiny_settings, trained_world
from testsupport import make_settings


def test_nearest_keyphrases_are_the_most_similar_best_first():
    from keyphrase_pipeline.labels.kd_pairs import nearest_keyphrases

    kp = np.eye(4, dtype=np.float32)
    items = np.array([[0.9, 0.1, 0, 0], [0, 0, 0.2, 0.8]], dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    assert nearest_keyphrases(items, kp, 2).tolist() == [[0, 1], [3, 2]]
    assert nearest_keyphrases(items, kp, 9).shape == (2, 4)  # k clipped to the keyphrases there are


def _judged_train(lake: str):
    """(tiny world, settings, 80 judged train pairs with text_hash, first title, its category, and the keyphrases
    that title was never judged against)."""
    from keyphrase_pipeline.labels.store import text_hash

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, w["root"] / lake, w["base"])
    train = make_pairs(80, seed=5)
    train["text_hash"] = [text_hash(t, c, k) for t, c, k in zip(train["title"], train["category"], train["keyphrase"])]
    t0, c0 = train["title"].iloc[0], train["category"].iloc[0]
    others = [k for k in train["keyphrase"].unique() if text_hash(t0, c0, k) not in set(train["text_hash"])]
    return w, s, train, t0, c0, others


def test_sampled_pairs_are_unjudged_new_and_bounded():
    from keyphrase_pipeline.labels.kd_pairs import sample_pairs
    from keyphrase_pipeline.labels.store import text_hash
    from keyphrase_pipeline.models.bi_encoder import build_student

    w, s, train, t0, c0, others = _judged_train("kd-pairs-lake")
    # one unjudged pair that must never come out: as if it were in the held-out split
    held = text_hash(t0, c0, others[0])
    out = sample_pairs(build_student(s, w["base"]), train, [held], ratio=0.5, seed=1)
    assert list(out.columns) == ["title", "category", "keyphrase", "text_hash"]
    assert 0 < len(out) <= 40
    assert not set(out["text_hash"]) & set(train["text_hash"])  # never a judged pair
    assert held not in set(out["text_hash"])  # never a held-out pair
    assert out["text_hash"].is_unique
    assert set(out["keyphrase"]) <= set(train["keyphrase"]) and set(out["title"]) <= set(train["title"])
    assert out["text_hash"].tolist() == [text_hash(t, c, k) for t, c, k in zip(out["title"], out["category"], out["keyphrase"])]
    assert sample_pairs(None, train, [], ratio=0).empty


def test_student_distils_on_the_extra_pairs(tmp_path):
    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    f = tmp_path / "mine.parquet"
    make_pairs(60, seed=11).to_parquet(f, index=False)
    rows = {}
    for ratio in (0.0, 1.0):
        s = tiny_settings(make_settings, tmp_path / f"lake{ratio}", w["base"], bi_max_steps=2)
        s = s.with_overrides(**{"train.kd_extra_ratio": ratio})
        stats = train_bi.run(s, DS, labels=str(f), cross=w["cross"]["path"], out=str(tmp_path / f"st{ratio}"),
                             label_mix="llm+kd")
        rows[ratio] = stats["task_rows"]
    assert rows[0.0]["kd"] == rows[0.0]["llm"]  # judged train pairs only
    assert rows[1.0]["llm"] == rows[0.0]["llm"] and rows[0.0]["kd"] < rows[1.0]["kd"] <= 2 * rows[0.0]["kd"]


def test_candidate_groups_are_whole_lists_of_unjudged_pairs_from_both_sides():
    from keyphrase_pipeline.labels.kd_pairs import candidate_groups
    from keyphrase_pipeline.labels.store import text_hash
    from keyphrase_pipeline.models.bi_encoder import build_student

    w, s, train, t0, c0, others = _judged_train("kd-groups-lake")
    held = {text_hash(t0, c0, k) for k in others}  # every unjudged pair of the first title is "held out"
    out = candidate_groups(build_student(s, w["base"]), train, held, n_pairs=100, group_size=5, hard_share=0.6, seed=3)
    assert list(out.columns) == ["group", "anchor", "title", "category", "keyphrase", "text_hash"]
    sizes = out.groupby("group").size()
    assert len(sizes) == 20 and (sizes == 5).all()  # 100 pairs = 20 whole lists
    assert set(out["anchor"]) == {"keyphrase", "item"}
    assert out.groupby("anchor")["group"].nunique().to_dict() == {"keyphrase": 10, "item": 10}
    # a keyphrase-anchored list has one keyphrase and five titles; an item-anchored one the reverse
    by_kp = out[out["anchor"] == "keyphrase"].groupby("group")
    assert (by_kp["keyphrase"].nunique() == 1).all() and (by_kp["title"].nunique() == 5).all()
    by_item = out[out["anchor"] == "item"].groupby("group")
    assert (by_item["title"].nunique() == 1).all() and (by_item["keyphrase"].nunique() == 5).all()
    assert out["text_hash"].is_unique
    assert not set(out["text_hash"]) & (set(train["text_hash"]) | held)
    assert out["text_hash"].tolist() == [text_hash(t, c, k) for t, c, k in zip(out["title"], out["category"], out["keyphrase"])]
    assert candidate_groups(None, train, set(), n_pairs=4, group_size=5).empty  # less than one list
    # with query_share, a share of the lists is anchored on queries cut from the titles, never a judged keyphrase
    mixed = candidate_groups(build_student(s, w["base"]), train, held, n_pairs=100, group_size=5, hard_share=0.6,
                             query_share=0.5, seed=3)
    per_anchor = mixed.groupby("anchor")["group"].nunique().to_dict()
    assert per_anchor == {"query": 10, "keyphrase": 5, "item": 5}
    queries = set(mixed.loc[mixed["anchor"] == "query", "keyphrase"])
    assert queries and not queries & set(train["keyphrase"])
    titles = " ".join(train["title"]).lower()
    assert all(q in titles for q in queries)  # spans of the titles
    assert mixed["text_hash"].is_unique and not set(mixed["text_hash"]) & (set(train["text_hash"]) | held)
    with pytest.raises(ValueError):
        candidate_groups(None, train, set(), n_pairs=100, group_size=5, query_share=1.5)


def test_candidate_groups_take_the_anchors_nearest_first(monkeypatch):
    """A list's hard part is its anchor's nearest unjudged candidates, best first, on both sides; an anchor that
    heads a second list takes the next window of its neighbours."""
    import keyphrase_pipeline.models.bi_encoder as be
    from keyphrase_pipeline.labels import kd_pairs
    from keyphrase_pipeline.labels.store import text_hash

    n = 8
    train = pd.DataFrame({"title": [f"t{i}" for i in range(n)], "category": [""] * n,
                          "keyphrase": [f"k{i}" for i in range(n)]})
    train["text_hash"] = [text_hash(t, "", k) for t, k in zip(train["title"], train["keyphrase"])]  # (t_j, k_j) judged
    # keyphrase j leans on title j, then j+1, j+2, j+3, j+4 with falling weight
    kp = sum(w * np.roll(np.eye(n, dtype=np.float32), s, axis=1) for s, w in enumerate([1, .5, .25, .125, .0625]))
    kp /= np.linalg.norm(kp, axis=1, keepdims=True)
    monkeypatch.setattr(be, "encode_items", lambda enc, titles, cats: np.eye(n, dtype=np.float32)[[int(t[1:]) for t in titles]])
    monkeypatch.setattr(be, "encode_keyphrases", lambda enc, kps: kp[[int(k[1:]) for k in kps]])
    out = kd_pairs.candidate_groups(object(), train, set(), n_pairs=4 * n * 2, group_size=2, hard_share=1.0, seed=0)
    assert not set(out["text_hash"]) & set(train["text_hash"])   # the judged pair (t_j, k_j) is skipped
    by_kp = {}
    for _, g in out[out["anchor"] == "keyphrase"].groupby("group"):
        by_kp.setdefault(int(g["keyphrase"].iloc[0][1:]), []).append(g["title"].tolist())
    assert sorted(by_kp) == list(range(n))
    for j, lists in by_kp.items():   # two lists each: the first and the second window of its neighbours
        assert sorted(lists) == sorted([[f"t{(j + 1) % n}", f"t{(j + 2) % n}"], [f"t{(j + 3) % n}", f"t{(j + 4) % n}"]])
    # item lists come after: their item's nearest keyphrases not yet taken by a keyphrase list, best first
    for _, g in out[out["anchor"] == "item"].groupby("group"):
        i = int(g["title"].iloc[0][1:])
        sims = [float(kp[int(k[1:]), i]) for k in g["keyphrase"]]
        assert sims == sorted(sims, reverse=True), (i, g["keyphrase"].tolist())


def test_title_queries_are_distinct_lower_case_spans_of_the_titles():
    from keyphrase_pipeline.labels.kd_pairs import title_queries

    titles = ["Nike Red Running Shoes Size 10 NEW", "Apple iPhone 13 Case", "x"]
    qs = title_queries(titles, 20, seed=1)
    assert 0 < len(qs) <= 20 and len(set(qs)) == len(qs)
    for q in qs:
        words = q.split()
        assert 2 <= len(words) <= 5 and q == q.lower()
        assert any(q in t.lower() for t in titles[:2])  # a contiguous span of one title; "x" is too short
    assert title_queries(titles, 20, seed=1) == qs and title_queries(titles, 3, seed=1) == qs[:3]
    assert title_queries(["one"], 5) == []


def test_listwise_rows_hold_one_anchor_its_candidates_and_the_teachers_logits():
    from keyphrase_pipeline.models.text import item_text, keyphrase_text
    from keyphrase_pipeline.stages.train_bi import listwise_rows

    groups = pd.DataFrame({"group": [0, 0, 1, 1, 2, 2], "anchor": ["keyphrase", "keyphrase", "item", "item",
                                                                    "query", "query"],
                           "title": ["red sneakers", "blue kettle", "acme sofa", "acme sofa", "red sofa", "acme kettle"],
                           "category": ["shoes", "kitchen", "furniture", "furniture", "furniture", "kitchen"],
                           "keyphrase": ["running shoes", "running shoes", "couch", "tea boiler", "acme red", "acme red"],
                           "score": [0.5, 0.880797, 1.0, 0.0, 0.2, 0.7]})
    rows = listwise_rows(groups)
    assert list(rows) == ["anchor", "c0", "c1", "label"]
    # a keyphrase or a title-cut query heads its titles; an item heads its keyphrases
    assert rows["anchor"] == [keyphrase_text("running shoes"), item_text("acme sofa", "furniture"),
                              keyphrase_text("acme red")]
    assert rows["c0"] == [item_text("red sneakers", "shoes"), keyphrase_text("couch"), item_text("red sofa", "furniture")]
    assert rows["c1"] == [item_text("blue kettle", "kitchen"), keyphrase_text("tea boiler"),
                          item_text("acme kettle", "kitchen")]
    assert rows["label"][0] == pytest.approx([0.0, 2.0], abs=1e-4)  # logit(0.5) = 0, logit(0.8808) = 2
    hi, lo = rows["label"][1]
    assert hi == pytest.approx(13.8155, abs=1e-3) and lo == pytest.approx(-13.8155, abs=1e-3)  # p clipped to 1e-6
    with pytest.raises(ValueError, match="different sizes"):
        listwise_rows(groups.iloc[:3])
    mixed = groups.copy()
    mixed.loc[1, "keyphrase"] = "couch"  # two keyphrases in one keyphrase-anchored list
    with pytest.raises(ValueError, match="one anchor"):
        listwise_rows(mixed)


def test_student_distils_on_candidate_lists_and_says_when_the_file_is_too_small(tmp_path, caplog):
    import json

    from keyphrase_pipeline.stages import train_bi

    w = trained_world(make_settings)
    f = tmp_path / "mine.parquet"
    make_pairs(60, seed=11).to_parquet(f, index=False)
    s = tiny_settings(make_settings, tmp_path / "lake", w["base"], bi_max_steps=3, kd_list_ratio=2.0, kd_group_size=4)
    stats = train_bi.run(s, DS, labels=str(f), cross=w["cross"]["path"], out=str(tmp_path / "st"), label_mix="llm+kd")
    rows, judged = stats["task_rows"], stats["task_rows"]["llm"]
    assert set(rows) == {"llm", "kd", "kd_list"}
    data = json.loads((tmp_path / "st" / "data.json").read_text())["distillation"]
    assert data["judged_train_pairs"] == judged and data["list_pairs_wanted"] == 2 * judged
    assert rows["kd_list"] == data["lists"] and data["list_pairs"] == 4 * data["lists"] > 0
    assert data["fallback"] is None and set(data["lists_by_anchor"]) == {"keyphrase", "item"}
    assert sum(data["lists_by_anchor"].values()) == data["lists"]
    # train.kd_swap_share reaches the lists: keyphrases that name their titles' model numbers get swapped anchors
    named = make_pairs(60, seed=11)
    named["keyphrase"] = named["keyphrase"] + " model " + named["title"].str.extract(r"model (\d+)")[0]
    named.to_parquet(tmp_path / "named.parquet", index=False)
    swapped = train_bi.run(s.with_overrides(**{"train.kd_swap_share": 0.5}), DS, labels=str(tmp_path / "named.parquet"),
                           cross=w["cross"]["path"], out=str(tmp_path / "st-swap"), label_mix="llm+kd")
    d_swap = json.loads((tmp_path / "st-swap" / "data.json").read_text())["distillation"]
    assert d_swap["lists_by_anchor"]["swap"] == round(d_swap["lists"] / 2) > 0
    assert swapped["task_rows"]["kd_list"] == d_swap["lists"]
    # a file with 3 keyphrases (2 in the train split) cannot make item-anchored lists of 4 keyphrases, and each
    # keyphrase has few unjudged titles: it makes the keyphrase-anchored lists it can, trains on them, says so
    few = make_pairs(60, seed=11)
    few["keyphrase"] = np.array(["running shoes", "couch", "acme tea boiler"])[np.arange(60) % 3]
    few.to_parquet(tmp_path / "few.parquet", index=False)
    s2 = s.with_overrides(**{"train.kd_extra_ratio": 0.0})  # the unjudged pairs all go to the lists
    with caplog.at_level("WARNING"):
        small = train_bi.run(s2, DS, labels=str(tmp_path / "few.parquet"), cross=w["cross"]["path"],
                             out=str(tmp_path / "st2"), label_mix="llm+kd")
    d2 = json.loads((tmp_path / "st2" / "data.json").read_text())["distillation"]
    assert d2["fallback"] and "2 keyphrase(s)" in d2["fallback"] and d2["list_pairs"] < d2["list_pairs_wanted"]
    assert "training on what there is" in caplog.text
    assert small["task_rows"]["llm"] > 0 and small["task_rows"]["kd_list"] == d2["lists"] > 0


def test_title_cut_queries_never_equal_a_judged_or_held_out_keyphrase(monkeypatch):
    """Compared as the split compares keyphrases (lower-cased): "Red Sneakers" held out excludes "red sneakers"."""
    import keyphrase_pipeline.models.bi_encoder as be
    from keyphrase_pipeline.labels import kd_pairs
    from keyphrase_pipeline.labels.store import text_hash

    titles = ["red sneakers", "blue kettle", "acme sofa", "red sofa", "blue sneakers", "acme kettle"]
    train = pd.DataFrame({"title": titles, "category": [""] * 6, "keyphrase": ["blue kettle"] * 3 + ["x y"] * 3})
    train["text_hash"] = [text_hash(t, "", k) for t, k in zip(train["title"], train["keyphrase"])]
    monkeypatch.setattr(be, "encode_items", lambda enc, t, c: np.eye(8, dtype=np.float32)[:len(t)])
    monkeypatch.setattr(be, "encode_keyphrases", lambda enc, kps: np.eye(8, dtype=np.float32)[np.arange(len(kps)) % 8])
    monkeypatch.setattr(kd_pairs, "title_queries", lambda titles, n, seed=42: titles.tolist())  # every title a query
    out = kd_pairs.candidate_groups(object(), train, set(), n_pairs=40, group_size=2, hard_share=0.5, query_share=1.0,
                                    seed=0, exclude_keyphrases=["Red Sneakers", "ACME SOFA"])
    queries = set(out.loc[out["anchor"] == "query", "keyphrase"])
    assert queries == {"red sofa", "blue sneakers", "acme kettle"}  # not the train keyphrase, not the held-out two


def test_kd_budget_scales_both_sets_down_to_the_cap():
    from keyphrase_pipeline.stages.train_bi import kd_budget

    assert kd_budget(1000, 1.0, 4.0, 500_000) == (1000, 4000, False)
    assert kd_budget(200_000, 1.0, 4.0, 500_000) == (100_000, 400_000, True)  # the lists keep their share
    assert kd_budget(1000, 0.0, 0.0, 10) == (0, 0, False)


def _value_train():
    """Judged pairs where keyphrases name values with digits, and the titles judged for them."""
    from keyphrase_pipeline.labels.store import text_hash

    rows = [("case for iphone 13", "Spigen Case for iPhone 13 Black", 1), ("case for iphone 13", "ESR iPhone 12 Case", 0),
            ("case for iphone 13", "OtterBox Defender iPhone 13 Pro", 0), ("case for iphone 13", "Red Yoga Mat", 0),
            ("anker a2633 charger", "Anker A2633 20W Charger", 1), ("anker a2633 charger", "Anker A2637 Charger", 0),
            ("red running shoes", "Nike Red Running Shoes Size 10", 1), ("red running shoes", "Blue Kettle", 0),
            ("usb cable 6ft", "Belkin USB C Cable 6ft", 1), ("usb cable 6ft", "Belkin USB C Cable 3ft", 0)]
    train = pd.DataFrame(rows, columns=["keyphrase", "title", "label"]).assign(category="")
    train["text_hash"] = [text_hash(t, "", k) for t, k in zip(train["title"], train["keyphrase"])]
    return train


def test_swapped_value_changes_one_digit_and_keeps_the_shape():
    from keyphrase_pipeline.labels.kd_pairs import swapped_value

    rng = np.random.default_rng(0)
    for token in ("13", "a2633", "20ft", "kx-4521", "12.9", "5xl"):
        for _ in range(30):
            out, at = swapped_value(token, rng)
            diff = [i for i, (x, y) in enumerate(zip(token, out)) if x != y]
            assert len(out) == len(token) and diff == [at] and token[at].isdigit() and out[at].isdigit()
    with pytest.raises(ValueError, match="no ASCII digit"):
        swapped_value("x\u0661", rng)   # an Arabic-Indic digit is not swapped


def test_a_swap_changes_the_whole_value_only_and_keeps_the_titles_case():
    """"13" is swapped in "iPhone 13" but not inside "13.3", "213" or "6/13"; the title's own case stays."""
    from keyphrase_pipeline.labels.kd_pairs import swap_groups

    titles = ["Sleeve 13.3 inch for iPhone 13 Pro", "ANKER A2633 Charger 213W 6/13", "Case for IPHONE 13"]
    train = pd.DataFrame({"keyphrase": ["iphone 13 case"] * 2 + ["anker a2633 charger"], "category": "",
                          "title": [titles[0], titles[2], titles[1]]})
    groups = swap_groups(train, n_groups=6, group_size=2, skip=set(), known_keyphrases=set(), seed=1)
    assert groups
    for g in groups:
        anchor = g[0][2]
        source = "iphone 13 case" if anchor.startswith("iphone") else "anker a2633 charger"
        (value, new), = [(a, b) for a, b in zip(source.split(), anchor.split()) if a != b]
        for title, *_ in g:
            if title in titles:
                continue   # a title as judged
            # one character apart from a judged title (so its case is kept), and that character a digit
            original = next(t for t in titles if len(t) == len(title) and sum(x != y for x, y in zip(t, title)) == 1)
            (i,) = [i for i, (x, y) in enumerate(zip(original, title)) if x != y]
            assert original[i].isdigit() and title[i].isdigit()
            assert all((x in title) == (x in original) for x in ("13.3", "213W", "6/13"))   # other numbers untouched


def test_swap_lists_pair_the_swapped_keyphrase_with_each_judged_title_as_it_is_and_swapped_alike():
    """A list's anchor is a judged keyphrase with one digit of a value changed; its candidates are that keyphrase's
    judged titles naming the value, as they are and with the same swap, then other titles: never a judged or
    skipped pair, never an anchor equal to a known keyphrase."""
    from keyphrase_pipeline.labels.kd_pairs import swap_groups
    from keyphrase_pipeline.labels.store import text_hash
    from keyphrase_pipeline.models.text import keyphrase_identity

    train = _value_train()
    skip = set(train["text_hash"])
    known = {keyphrase_identity(k) for k in train["keyphrase"]}
    groups = swap_groups(train, n_groups=12, group_size=4, skip=skip, known_keyphrases=known, seed=3)
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    seen_anchors = set()
    for g in groups:
        anchors = {k for _, _, k, _ in g}
        assert len(anchors) == 1
        anchor = anchors.pop()
        seen_anchors.add(anchor)
        source = [k for k in train["keyphrase"].unique() if len(k) == len(anchor)
                  and sum(a != b for a, b in zip(k, anchor)) == 1]
        assert len(source) == 1, anchor  # one digit away from one judged keyphrase
        judged = train.loc[train["keyphrase"] == source[0], "title"].tolist()
        titles = [t for t, _, _, _ in g]
        (value, swapped), = [(a, b) for a, b in zip(source[0].split(), anchor.split()) if a != b]
        naming = [t for t in judged if value in t.lower()]
        for t in naming[:2]:   # both versions of the judged titles that name the value
            assert t in titles
            assert any(x.lower() == t.lower().replace(value, swapped) for x in titles), (t, titles)
        assert all(h == text_hash(t, c, k) and h not in set(train["text_hash"]) for t, c, k, h in g)
    assert not {keyphrase_identity(a) for a in seen_anchors} & {keyphrase_identity(k) for k in train["keyphrase"]}
    assert len({h for g in groups for *_, h in g}) == 12 * 4 and {h for g in groups for *_, h in g} <= skip
    assert swap_groups(train[train["keyphrase"] == "red running shoes"], 3, 2, set(), set()) == []
    # every one-digit swap of "shoes size N" is a known keyphrase: no anchor may equal one
    sizes = pd.DataFrame({"keyphrase": [f"shoes size {n}" for n in range(10)],
                          "title": [f"Shoes Size {n}" for n in range(10)], "category": ""})
    assert swap_groups(sizes, 5, 2, set(), {f"shoes size {n}" for n in range(10)}) == []
    assert len(swap_groups(sizes, 5, 2, set(), set())) == 5


def test_candidate_groups_give_a_share_of_the_lists_to_swapped_keyphrases(monkeypatch):
    import keyphrase_pipeline.models.bi_encoder as be
    from keyphrase_pipeline.labels import kd_pairs

    train = _value_train()
    monkeypatch.setattr(be, "encode_items", lambda enc, t, c: np.eye(16, dtype=np.float32)[:len(t)])
    monkeypatch.setattr(be, "encode_keyphrases", lambda enc, kps: np.eye(16, dtype=np.float32)[np.arange(len(kps)) % 16])
    out = kd_pairs.candidate_groups(object(), train, set(), n_pairs=40, group_size=4, hard_share=0.5, swap_share=0.5,
                                    seed=0)
    per_anchor = out.groupby("anchor")["group"].nunique().to_dict()
    assert per_anchor["swap"] == 5 and per_anchor["keyphrase"] > 0   # the rest as before (as many as the file allows)
    assert out["text_hash"].is_unique and not set(out["text_hash"]) & set(train["text_hash"])
    with pytest.raises(ValueError, match="swap_share"):
        kd_pairs.candidate_groups(None, train, set(), n_pairs=40, group_size=4, query_share=0.6, swap_share=0.6)
    # half and half of an odd number of lists: the two shares round up together, and the lists still add up
    odd = kd_pairs.candidate_groups(object(), train, set(), n_pairs=12, group_size=4, hard_share=0.5, query_share=0.5,
                                    swap_share=0.5, seed=0)
    assert odd["group"].nunique() <= 3


def test_list_shares_above_one_are_refused_when_settings_load():
    from pydantic import ValidationError

    from keyphrase_pipeline.core.settings import TrainSettings

    assert TrainSettings(kd_query_share=0.5, kd_swap_share=0.5).kd_swap_share == 0.5
    with pytest.raises(ValidationError, match="kd_swap_share"):
        TrainSettings(kd_query_share=0.6, kd_swap_share=0.5)
