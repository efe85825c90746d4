"""The synthetic marketplace: contracts, determinism, realism and the biases the design is about."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from testsupport import make_settings

from keyphrase_pipeline.core.contracts import check_pandas
from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.synthetic import synth

DAYS = [(dt.date(2026, 10, 1) + dt.timedelta(days=i)).isoformat() for i in range(12)]


@pytest.fixture(scope="module")
def lake(tiny_world_lake):
    return Lake(str(tiny_world_lake))


@pytest.fixture(scope="module")
def events(lake):
    frames = []
    for ds in lake.partitions("events"):
        df = read_parquet(lake.path("events", ds=ds), "events")
        df["ds"] = ds
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_every_dataset_matches_its_contract_and_covers_every_day(lake):
    assert lake.partitions("catalog") == DAYS
    assert lake.partitions("events") == DAYS
    assert lake.partitions("sr_input") == DAYS
    kps = read_parquet(lake.path("keyphrases"), "keyphrases")
    assert kps["keyphrase_id"].is_unique and kps["text"].is_unique
    assert (kps["search_volume"] >= 1).all() and 450 <= len(kps) <= 750
    for ds in (DAYS[0], DAYS[-1]):
        cat = read_parquet(lake.path("catalog", ds=ds), "catalog")
        assert cat["item_id"].is_unique and cat["title"].str.len().gt(5).all()
        sr = read_parquet(lake.path("sr_input", ds=ds), "sr_input")
        assert sr["score"].between(0, 1).all()
        assert ((sr["score"] >= 0.5).astype(int) == sr["label"]).all()
        assert sr[["item_id", "keyphrase_id"]].duplicated().sum() == 0
    items = read_parquet(lake.path("synth", "items"))
    assert {"item_id", "top_category", "category", "brand", "product_type", "colour", "size", "material",
            "compat", "count", "popularity"} <= set(items.columns)
    meta = lake.read_json(lake.path("synth", "world.json"))
    assert meta["simulated"] is True and meta["scale"] == "tiny" and meta["sizes"]["items"] == len(items) == 400
    stats = lake.read_json(lake.run_stats_path(DAYS[-1], "synth"))
    assert stats["items"] == 400 and stats["events"] > 0


def test_events_are_well_formed(events):
    check_pandas(events.drop(columns="ds"), "events")
    assert events["event_id"].is_unique
    assert set(events["event"]) == {"impression", "click"}
    assert events["position"].min() >= 1 and events["position"].max() <= synth.PARAMS["shown_max"]
    assert (events["ts"].dt.strftime("%Y-%m-%d") == events["ds"]).all()
    kps = events.drop_duplicates("keyphrase_id").set_index("keyphrase_id")["query"]
    assert kps.notna().all()


def test_clicks_only_on_impressed_results(events):
    key = ["ds", "item_id", "keyphrase_id", "position"]
    imp = events[events["event"] == "impression"][key].drop_duplicates()
    clk = events[events["event"] == "click"][key]
    assert len(clk) > 100
    joined = clk.merge(imp, on=key, how="left", indicator=True)
    assert (joined["_merge"] == "both").all()


def test_click_through_falls_with_position(events):
    imp = events[events["event"] == "impression"].groupby("position").size()
    clk = events[events["event"] == "click"].groupby("position").size()
    ctr = (clk / imp).fillna(0)
    assert ctr[1] > ctr[3] > ctr[8]
    assert ctr[1] > 2 * ctr[8]


def test_clicks_follow_the_hidden_item_factors_and_the_images_carry_one(events, lake):
    """Beyond relevance and position, P(click) has item multipliers (popularity, brand, photo appeal, residual):
    items in the top quarter of the factor get clicked clearly more often per impression than the bottom quarter;
    raw/item_images holds one vector per item whose hidden direction carries the appeal."""
    import numpy as np

    items = read_parquet(lake.path("synth", "items"))
    factor, images = synth.item_click_factors(items, seed=synth_seed(lake))
    assert factor.shape == (len(items),) and abs(factor.mean() - 1) < 1e-9 and factor.std() > 0.4
    per = events.groupby(["item_id", "event"]).size().unstack(fill_value=0)
    f = pd.Series(factor, index=items["item_id"]).reindex(per.index)
    top, bottom = per[f >= f.quantile(0.75)], per[f <= f.quantile(0.25)]
    ctr_top = top["click"].sum() / top["impression"].sum()
    ctr_bottom = bottom["click"].sum() / bottom["impression"].sum()
    assert ctr_top > 1.5 * ctr_bottom, (ctr_top, ctr_bottom)
    stored = read_parquet(lake.path("item_images"), "item_images")
    assert len(stored) == len(items) and {len(v) for v in stored["image_embedding"]} == {synth.PARAMS["image_dim"]}
    np.testing.assert_allclose(np.stack(stored["image_embedding"]), images)
    # the appeal is recoverable from the vector (a linear probe), and it is not the whole factor
    appeal_share = np.corrcoef(np.linalg.svd(images - images.mean(0), full_matrices=False)[0][:, 0],
                               np.log(factor))[0, 1]
    assert 0.2 < abs(appeal_share) < 0.9, appeal_share


def synth_seed(lake) -> int:
    return int(lake.read_json(lake.path("synth", "world.json"))["seed"])


def test_exposure_is_concentrated_on_popular_items(events, lake):
    items = read_parquet(lake.path("synth", "items"))
    per = (events[events["event"] == "impression"]["item_id"].value_counts()
           .reindex(items["item_id"], fill_value=0).sort_values(ascending=False))
    top10 = per.iloc[: len(per) // 10].sum() / per.sum()
    assert top10 > 0.5
    assert (per < 5).mean() >= 0.25           # a sizeable share of items are (almost) never shown
    # the shown items are the popular ones
    pop = items.set_index("item_id")["popularity"]
    shown = per[per >= 5].index
    assert pop[shown].median() > 2 * pop[per[per < 5].index].median()


def test_search_relevance_filter_is_a_noisy_middleman(events, lake):
    from keyphrase_pipeline.synthetic.world import World

    world = World.load(lake)
    imp = events[events["event"] == "impression"].drop_duplicates(["item_id", "keyphrase_id"])
    rel = world.is_relevant(imp["item_id"], imp["keyphrase_id"])
    assert 0.5 < rel.mean() < 0.95             # mostly relevant, some irrelevant get through
    sr = pd.concat([read_parquet(lake.path("sr_input", ds=ds), "sr_input") for ds in DAYS[:3]])
    truth = world.is_relevant(sr["item_id"], sr["keyphrase_id"])
    agree = (sr["label"].to_numpy() == truth).mean()
    assert 0.75 < agree < 0.99
    assert ((sr["label"] == 0) & truth).any()  # some relevant pairs are filtered out


def test_tiny_world_yields_ctr_positives_over_seven_days(events, lake):
    from keyphrase_pipeline.synthetic.world import World

    last7 = events[events["ds"].isin(DAYS[-7:])]
    g = last7.groupby(["item_id", "keyphrase_id"])["event"].agg(
        impressions=lambda s: int((s == "impression").sum()), clicks=lambda s: int((s == "click").sum()))
    pos = g[(g["impressions"] >= 5) & (g["clicks"] / g["impressions"] > 0.05)]
    assert len(pos) >= 50
    rel = World.load(lake).is_relevant(pos.index.get_level_values(0), pos.index.get_level_values(1))
    assert rel.mean() > 0.8                    # CTR positives are mostly truly relevant


def test_catalog_changes_over_time(lake):
    items = read_parquet(lake.path("synth", "items"))
    first = read_parquet(lake.path("catalog", ds=DAYS[0]), "catalog")
    last = read_parquet(lake.path("catalog", ds=DAYS[-1]), "catalog")
    assert 0.78 <= len(first) / len(items) <= 0.92      # ~85% listed on day 1
    assert len(last) > len(first)                         # new listings appear
    assert set(first["item_id"]) <= set(last["item_id"])
    assert (~last["active"]).sum() >= 1                   # a few went inactive
    both = first.merge(last, on="item_id", suffixes=("_0", "_1"))
    revised = both[both["title_0"] != both["title_1"]]
    assert 0.03 <= len(revised) / len(both) <= 0.25       # ~1% per day over 11 days
    assert (revised["updated_at_1"] > revised["updated_at_0"]).all()
    assert (revised["updated_at_1"] >= pd.Timestamp(DAYS[1])).all()
    assert first["category"].nunique() >= 8


def test_titles_read_like_seller_titles(lake):
    cat = read_parquet(lake.path("catalog", ds=DAYS[0]), "catalog")
    titles = cat["title"]
    assert titles.str.isupper().mean() > 0.02              # some SHOUTING
    noisy = titles.str.contains(r"\b(?:NEW|New|Fast Ship|FAST SHIPPING|Free Shipping|Genuine|OEM|NWT)\b")
    assert noisy.mean() > 0.05
    assert titles.str.len().max() <= 80


def test_keyphrases_are_buyer_queries_of_every_kind(lake):
    kps = read_parquet(lake.path("synth", "keyphrases"))
    assert set(kps["kind"]) == {"generic", "brand_type", "type_attr", "compat", "misspelled", "long_tail"}
    assert (kps["text"] == kps["text"].str.lower()).all()
    n_cons = kps[["brand", "colour", "size", "material", "compat", "count"]].notna().sum(axis=1)
    assert (n_cons[kps["kind"] == "generic"] == 0).all()
    assert (n_cons[kps["kind"] == "long_tail"] >= 2).all()
    assert n_cons[kps["kind"] == "long_tail"].mean() >= 2.8
    # generic queries are searched more than long-tail ones
    vol = kps.groupby("kind")["search_volume"].median()
    assert vol["generic"] > vol["long_tail"]


def _frames(root):
    lk = Lake(str(root))
    return {
        "items": read_parquet(lk.path("synth", "items")),
        "kps": read_parquet(lk.path("keyphrases")),
        "catalog": read_parquet(lk.path("catalog", ds="2026-10-03")),
        "events": read_parquet(lk.path("events", ds="2026-10-02")),
        "sr": read_parquet(lk.path("sr_input", ds="2026-10-03")),
    }


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    a, b, c = (make_settings(tmp_path / n, synth={"days": 3}) for n in "abc")
    synth.run(a)
    synth.run(b)
    synth.run(c, seed=8)
    fa, fb, fc = _frames(a.lake_root), _frames(b.lake_root), _frames(c.lake_root)
    for name in fa:
        pd.testing.assert_frame_equal(fa[name], fb[name])
    assert not fa["catalog"]["title"].equals(fc["catalog"]["title"])
    assert len(fa["events"]) != len(fc["events"]) or not fa["events"]["item_id"].equals(fc["events"]["item_id"])


def test_rerun_replaces_the_world(tmp_path):
    s = make_settings(tmp_path / "lake", synth={"days": 3})
    first = synth.run(s, days=4, seed=9)
    lk = Lake(s.lake_root)
    assert lk.partitions("events") == DAYS[:4]
    second = synth.run(s)
    assert lk.partitions("events") == DAYS[:3] and lk.partitions("catalog") == DAYS[:3]
    assert lk.partitions("sr_input") == DAYS[:3]
    before = _frames(s.lake_root)
    third = synth.run(s)                      # same parameters: same data
    after = _frames(s.lake_root)
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name])
    assert second == {**third, "seconds": second["seconds"]}
    assert first["days"] == 4 and second["days"] == 3 and first["items"] == second["items"]
    assert not any(p.name.startswith("_") for p in (tmp_path / "lake" / "raw" / "events").iterdir())


def test_searches_per_day_controls_volume(tmp_path):
    s = make_settings(tmp_path / "lake", synth={"days": 1})
    low = synth.run(s, searches_per_day=500)
    high = synth.run(s, searches_per_day=2000)
    assert low["searches"] == 500 and high["searches"] == 2000
    assert 3 * low["impressions"] < high["impressions"] < 5 * low["impressions"]


def test_scales_and_bad_values():
    assert synth.resolve_scale("tiny")[1:] == synth.SCALES["tiny"]
    assert synth.resolve_scale("demo")[1] == 3000
    name, n, k, s = synth.resolve_scale(1500)
    assert (name, n) == ("1500", 1500) and k > 0 and s > 0
    with pytest.raises(ConfigError):
        synth.resolve_scale("huge")
    with pytest.raises(ConfigError):
        synth.resolve_scale(10)


def test_integer_scale_generates(tmp_path):
    st = synth.run(make_settings(tmp_path / "lake"), scale=120, days=1, searches_per_day=300)
    assert st["items"] == 120 and st["impressions"] > 0


def test_cli(tmp_path, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "lake"))
    get_settings.cache_clear()
    try:
        rc = cli.main(["synth", "--scale", "tiny", "--days", "3", "--seed", "3", "--start-date", "2026-11-01",
                       "--searches-per-day", "800"])
    finally:
        get_settings.cache_clear()
    assert rc == 0
    out = capsys.readouterr().out
    assert "400 items" in out and "events" in out
    lk = Lake(str(tmp_path / "lake"))
    assert lk.partitions("events") == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert lk.read_json(lk.path("synth", "world.json"))["seed"] == 3
    get_settings.cache_clear()
    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "lake2"))
    try:
        assert cli.main(["synth", "--scale", "nonsense", "--days", "1"]) == 2
    finally:
        get_settings.cache_clear()


def test_catalog_written_in_item_blocks_equals_one_block(tmp_path, monkeypatch):
    one = make_settings(tmp_path / "one", synth={"days": 2})
    many = make_settings(tmp_path / "many", synth={"days": 2})
    synth.run(one, searches_per_day=200)
    monkeypatch.setattr(synth, "ITEM_BLOCK", 150)
    synth.run(many, searches_per_day=200)
    for ds in DAYS[:2]:
        parts = sorted(p.name for p in (tmp_path / "many" / "raw" / "catalog" / f"ds={ds}").glob("part-*.parquet"))
        assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
        a = read_parquet(Lake(one.lake_root).path("catalog", ds=ds), "catalog")
        b = read_parquet(Lake(many.lake_root).path("catalog", ds=ds), "catalog")
        pd.testing.assert_frame_equal(a.sort_values("item_id").reset_index(drop=True),
                                      b.sort_values("item_id").reset_index(drop=True))


def test_big_worlds_get_more_brands_and_enough_keyphrases():
    small = synth.taxonomy_for(100_000)
    assert len(small) == len(synth.TAXONOMY)
    assert all(len(t["brands"]) > len(o["brands"]) + 30 for t, o in zip(small, synth.TAXONOMY))
    assert all(len(set(t["brands"])) == len(t["brands"]) for t in small)
    items = synth._gen_items(20_000, 3, small)
    kps = synth._gen_keyphrases(items, 8_000, 3, small)
    assert abs(len(kps) - 8_000) < 200 and kps["text"].is_unique
    assert len(synth.taxonomy_for(400)) == 12
