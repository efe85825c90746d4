"""kp train-ctr: the CTR model trained on ctr_position_daily with the student's embeddings, gated on held-out days,
registered and exported; recommend puts its expected CTR beside each recommendation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serve_helpers import embedded_keyphrase_world

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake, ds_range, read_parquet, write_parquet_atomic
from keyphrase_pipeline.stages import train_ctr

END = "2026-10-10"
DAYS = ds_range(END, 8)
COLD_FROM = 250  # items with ids >= this are shown only on the held-out days


def true_ctr(cos, item_effect, pos):
    """The click process of this test's world: relevance (the embeddings' cosine), an item effect, position."""
    return 1 / (1 + np.exp(-(-3.0 + 3.0 * cos + item_effect))) * pos.astype(float) ** -0.8


def ctr_world(root: Path, seed: int = 0, **ctr_model):
    s = embedded_keyphrase_world(root, n_kp=60, n_items=300)
    s = s.with_overrides(**{"ctr.window_days": 8, "ctr_model.holdout_days": 2, "ctr_model.batch_rows": 512,
                            "ctr_model.epochs": 15, "ctr_model.learning_rate": 0.01, "ctr_model.sid_bits": 3,
                            "ctr_model.id_buckets": 4096,
                            **{f"ctr_model.{k}": v for k, v in ctr_model.items()}})
    lake = Lake.from_settings(s)
    items = read_parquet(layout.embeddings_dir(s, "items", "v1"))
    kps = read_parquet(layout.embeddings_dir(s, "keyphrases", "v1"))
    iv, kv = np.stack(items["embedding"]), np.stack(kps["embedding"])
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 0.5, len(items))
    for d, day in enumerate(DAYS):
        holdout = d >= len(DAYS) - 2
        ii = rng.integers(0, len(items), 1500)
        ii = ii[(items["id"].to_numpy()[ii] < COLD_FROM) | holdout]
        kk = rng.integers(0, len(kps), len(ii))
        # the shown keyphrases lean relevant, as a search engine's would
        best = np.argmax(iv[ii] @ kv.T, axis=1)
        kk = np.where(rng.random(len(ii)) < 0.5, best, kk)
        pos = rng.integers(1, 11, len(ii)).astype(np.int32)
        imps = rng.integers(5, 40, len(ii))
        cos = (iv[ii] * kv[kk]).sum(1)
        clicks = rng.binomial(imps, true_ctr(cos, effect[ii], pos))
        df = pd.DataFrame({"item_id": items["id"].to_numpy()[ii], "keyphrase_id": kps["id"].to_numpy()[kk],
                           "position": pos, "impressions": imps.astype(np.int64), "clicks": clicks.astype(np.int64)})
        df = df.groupby(["item_id", "keyphrase_id", "position"], as_index=False)[["impressions", "clicks"]].sum()
        df["position"] = df["position"].astype(np.int32)
        write_parquet_atomic(df, lake.path("ctr_position_daily", ds=day))
    return s


@pytest.fixture
def world(tmp_path):
    return ctr_world(tmp_path / "lake")


def test_trains_gates_registers_and_exports(world):
    stats = train_ctr.run(world, END)
    assert stats["student_version"] == "v1" and stats["train_days"] == 6 and stats["holdout_days"] == DAYS[-2:]
    held = stats["heldout"]
    new, prior = held["challenger"]["all"], held["position_prior"]["all"]
    # the model learns what the position prior cannot: relevance and item effects
    assert new["auc"] > prior["auc"] + 0.1 and new["log_loss"] < prior["log_loss"]
    assert stats["promoted"] and "position prior" in stats["reason"]
    assert held["cold_rows"] > 0 and held["challenger"]["cold_items"]["impressions"] > 0
    assert set(stats["parts"]) == {"item_bucket", "keyphrase_bucket", "item_vec", "keyphrase_vec", "item_codes",
                                   "keyphrase_codes"}  # no raw/item_images in this lake: no image input
    assert registry.ctr_champion(world) == stats["version"]
    vdir = Path(layout.registry_version_dir(world, stats["version"], "ctr"))
    model = vdir / "model"
    for name in ("ctr_model.pt", "ctr_config.json", "ctr_model.onnx", "item_sid/codebook.faiss",
                 "keyphrase_sid/codebook.faiss"):
        assert (model / name).exists(), name
    cfg = json.loads((vdir / "train_config.json").read_text())
    assert cfg["student_version"] == "v1"
    metrics = json.loads((vdir / "metrics.json").read_text())
    assert metrics["export_max_abs_diff"] < 1e-4
    saved = Lake.from_settings(world).read_json(Lake.from_settings(world).run_stats_path(END, "train_ctr"))
    assert saved["version"] == stats["version"]


def test_a_rerun_reuses_the_version_and_a_new_day_is_gated_against_the_champion(world):
    first = train_ctr.run(world, END)
    again = train_ctr.run(world, END)
    assert again["reused"] and again["version"] == first["version"]
    # another configuration is another challenger, compared on the same held-out rows with the champion
    other = train_ctr.run(world.with_overrides(**{"ctr_model.use_semantics": False, "ctr_model.use_semantic_ids": False}),
                          END)
    assert other["version"] != first["version"] and other["champion_before"] == first["version"]
    assert "vs champion" in other["reason"]
    new, old = other["heldout"]["challenger"]["all"], other["heldout"]["champion"]["all"]
    assert other["promoted"] == (new["auc"] >= old["auc"] and new["log_loss"] <= old["log_loss"])
    assert set(other["heldout"]) >= {"challenger", "champion", "position_prior"}
    assert other["heldout"]["champion"]["all"]["auc"] == pytest.approx(first["heldout"]["challenger"]["all"]["auc"],
                                                                       abs=1e-9)
    # IDs alone cannot score items never seen in training: the semantics can
    assert other["heldout"]["challenger"]["cold_items"]["auc"] < first["heldout"]["challenger"]["cold_items"]["auc"]
    assert registry.ctr_champion(world) == (other["version"] if other["promoted"] else first["version"])


def test_too_few_days_skips_and_disabled_does_nothing(tmp_path):
    s = ctr_world(tmp_path / "lake")
    short = train_ctr.run(s.with_overrides(**{"ctr_model.holdout_days": 8}), END)
    assert short["skipped"] and "holdout_days" in short["why"] and registry.ctr_champion(s) is None
    off = train_ctr.run(s.with_overrides(**{"ctr_model.enabled": False}), END)
    assert off["skipped"] and "enabled" in off["why"]


def test_the_image_column_is_used_when_the_lake_has_one(tmp_path):
    s = ctr_world(tmp_path / "lake")
    lake = Lake.from_settings(s)
    ids = np.arange(1, 301, dtype=np.int64)
    write_parquet_atomic(pd.DataFrame({"item_id": ids[::2], "image_embedding": list(np.random.default_rng(0).normal(
        size=(150, 6)).astype("float32"))}), lake.path("item_images"))
    stats = train_ctr.run(s, END)
    assert {"image", "has_image"} <= set(stats["parts"])
    assert not train_ctr.run(s.with_overrides(**{"ctr_model.use_image": False}), END).get("skipped")


def test_training_batches_are_shuffled_and_complete(world):
    """Every stored row reaches training exactly once per pass, in batches of batch_rows, not in stored order."""
    lake = Lake.from_settings(world)
    stored = pd.concat(read_parquet(lake.path("ctr_position_daily", ds=d)) for d in DAYS[:6])
    batches = list(train_ctr.shuffled_batches(lake, DAYS[:6], 100, np.random.default_rng(0)))
    assert all(len(b["item_id"]) == 100 for b in batches[:-1]) and 0 < len(batches[-1]["item_id"]) <= 100
    got = pd.concat(pd.DataFrame(b) for b in batches)
    key = ["item_id", "keyphrase_id", "position", "impressions", "clicks"]
    assert len(got) == len(stored)
    pd.testing.assert_frame_equal(got[key].sort_values(key).reset_index(drop=True),
                                  stored[key].astype("int64").sort_values(key).reset_index(drop=True))
    first = batches[0]["item_id"]
    assert len(np.unique(first)) > 50  # stored rows are sorted by item: a shuffled batch spans many items


def test_recommend_puts_the_expected_ctr_beside_each_recommendation(world):
    """The CTR champion of the serving student scores every published row (P(click) at position 1, the same as
    the model's own prediction); rank_by=expected_clicks re-orders each item's rows by it, same rows."""
    from keyphrase_pipeline.artifacts.ctr_scoring import champion_scorer
    from keyphrase_pipeline.stages import index, recommend

    index.run(world, END)
    before = recommend.run(world, END)
    assert before["ctr_model_version"] is None and before["expected_ctr_rows"] == 0  # no CTR model yet
    plain = read_parquet(Lake.from_settings(world).path("recommendations", ds=END), contract="recommendations")
    assert plain["expected_ctr"].isna().all()
    trained = train_ctr.run(world, END)
    stats = recommend.run(world, END)
    assert stats["ctr_model_version"] == trained["version"] and stats["expected_ctr_rows"] == stats["rows"]
    recs = read_parquet(Lake.from_settings(world).path("recommendations", ds=END), contract="recommendations")
    assert set(recs["ctr_model_version"]) == {trained["version"]}
    assert recs["expected_ctr"].between(0, 1).all()
    scorer, _why = champion_scorer(world, "v1")
    want = scorer.predict(recs["item_id"].to_numpy(), recs["keyphrase_id"].to_numpy())
    np.testing.assert_allclose(recs["expected_ctr"].to_numpy(), want, atol=1e-5)
    pd.testing.assert_frame_equal(recs.drop(columns=["expected_ctr", "ctr_model_version"]), plain.drop(
        columns=["expected_ctr", "ctr_model_version"]))  # relevance ranking unchanged by default
    by_clicks = recommend.run(world.with_overrides(**{"ctr_model.rank_by": "expected_clicks"}), END)
    assert by_clicks["rank_by"] == "expected_clicks"
    ranked = read_parquet(Lake.from_settings(world).path("recommendations", ds=END), contract="recommendations")
    key = ["item_id", "keyphrase_id"]
    assert ranked[key].sort_values(key).reset_index(drop=True).equals(recs[key].sort_values(key).reset_index(drop=True))
    for _iid, g in ranked.groupby("item_id"):
        assert list(g["rank"]) == list(range(1, len(g) + 1))
        assert (np.diff(g["expected_ctr"].to_numpy()) <= 1e-7).all()
    assert not (ranked["keyphrase_id"].to_numpy() == recs["keyphrase_id"].to_numpy()).all()
    assert list(dict.fromkeys(ranked["item_id"])) == list(dict.fromkeys(recs["item_id"]))  # items keep their order


def test_rows_without_embeddings_are_left_out_and_none_usable_skips(tmp_path):
    """Rows whose item or keyphrase has no embedding are left out (counted); when no row is usable the stage skips
    (it does not loop, and leaves no version behind)."""
    s = ctr_world(tmp_path / "lake")
    lake = Lake.from_settings(s)
    for day in DAYS:
        df = read_parquet(lake.path("ctr_position_daily", ds=day))
        df.loc[df.index[:50], "item_id"] = 999_999  # an item the student never embedded
        write_parquet_atomic(df, lake.path("ctr_position_daily", ds=day))
    stats = train_ctr.run(s, END)
    assert stats["rows_without_embedding"] == 6 * 50 and stats["promoted"]
    for day in DAYS:
        df = read_parquet(lake.path("ctr_position_daily", ds=day))
        df["item_id"] = 999_999
        write_parquet_atomic(df, lake.path("ctr_position_daily", ds=day))
    none = train_ctr.run(s.with_overrides(**{"ctr_model.seed": 3}), END)
    assert none["skipped"] and "embeddings" in none["why"]
    assert [p.name for p in Path(layout.registry_kind_dir(s, "ctr")).iterdir() if not p.name.startswith((".", "_"))] \
        == [stats["version"]]


@pytest.mark.parametrize("damage,problem", [
    (lambda df: df.assign(clicks=df["clicks"].astype("Int64").where(df.index != 3)), "column clicks has 1 null"),
    (lambda df: df.assign(clicks=np.where(df.index == 3, df["impressions"] + 1, df["clicks"])),
     "1 row(s) of ctr_position_daily with more clicks than impressions"),
    (lambda df: df.assign(position=np.where(df.index == 3, 0, df["position"]).astype("int32")), "position below 1"),
    (lambda df: df.assign(impressions=np.where(df.index == 3, -5, df["impressions"])), "negative impressions"),
])
@pytest.mark.parametrize("day", [DAYS[0], DAYS[-1]])  # a training day, a held-out day
def test_damaged_rows_are_a_data_error_naming_the_file_and_leave_nothing(tmp_path, damage, problem, day):
    from keyphrase_pipeline.core.errors import DataError

    s = ctr_world(tmp_path / "lake")
    lake = Lake.from_settings(s)
    df = read_parquet(lake.path("ctr_position_daily", ds=day))
    write_parquet_atomic(damage(df), lake.path("ctr_position_daily", ds=day))
    with pytest.raises(DataError, match=f"ds={day}.*{re.escape(problem)}"):
        train_ctr.run(s, END)
    kind = Path(layout.registry_kind_dir(s, "ctr"))
    assert not kind.exists() or list(kind.iterdir()) == []  # no version, no temp directory left behind
    assert registry.ctr_champion(s) is None


def test_position_biases_start_at_the_prior():
    """Before training, each position's bias is the prior's log-odds there minus at the reference position, and each
    expert's output bias the reference position's log-odds (a short budget starts from the prior)."""
    import torch

    from keyphrase_pipeline.models.ctr_model import CtrConfig, build_model

    cfg = CtrConfig(use_ids=False, use_semantic_ids=False, emb_dim=4, experts=2, max_position=4)
    model = build_model(cfg)
    prior = np.array([0.1, 0.2, 0.1, 0.05, 0.04])
    train_ctr._start_from_prior(model, prior, cfg)
    logit = np.log(prior / (1 - prior))
    np.testing.assert_allclose(model.position.weight[:, 0].detach().numpy(), logit - logit[1], atol=1e-6)
    assert all(float(e[-1].bias) == pytest.approx(logit[1], abs=1e-6) for e in model.experts)
    assert float(model.position.weight[1, 0]) == 0.0 and isinstance(model.position.weight, torch.nn.Parameter)


def test_a_model_for_another_student_is_registered_not_promoted_and_reuse_keeps_its_figures(world):
    from keyphrase_pipeline.core.lake import Lake as _Lake

    first = train_ctr.run(world, END)
    # a second student with the same embeddings (copied) but not the one the day serves
    lake = _Lake.from_settings(world)
    import shutil

    for what in ("items", "keyphrases"):
        df = read_parquet(layout.embeddings_dir(world, what, "v1"))
        write_parquet_atomic(df.assign(model_version="v2"), layout.embeddings_dir(world, what, "v2"))
    shutil.copytree(layout.model_dir(world, "v1"), layout.model_dir(world, "v2"))
    other = train_ctr.run(world, END, version="v2")
    assert not other["promoted"] and "day 2026-10-10 serves v1" in other["reason"]
    assert registry.ctr_champion(world) == first["version"]
    again = train_ctr.run(world, END)
    assert again["reused"] and again["promoted"] and again["heldout"] == first["heldout"]
    saved = lake.read_json(lake.run_stats_path(END, "train_ctr"))
    assert saved["heldout"] == first["heldout"] and saved["student_version"] == "v1"


def test_new_image_vectors_make_a_new_version_and_a_champion_of_another_length_unusable(tmp_path):
    from keyphrase_pipeline.artifacts.ctr_scoring import champion_scorer

    s = ctr_world(tmp_path / "lake")
    lake = Lake.from_settings(s)
    ids = np.arange(1, 301, dtype=np.int64)
    rng = np.random.default_rng(0)
    write_parquet_atomic(pd.DataFrame({"item_id": ids, "image_embedding": list(rng.normal(size=(300, 6)).astype(
        "float32"))}), lake.path("item_images"))
    first = train_ctr.run(s, END)
    write_parquet_atomic(pd.DataFrame({"item_id": ids, "image_embedding": list(rng.normal(size=(300, 6)).astype(
        "float32"))}), lake.path("item_images"))
    second = train_ctr.run(s, END)
    assert not second.get("reused") and second["version"] != first["version"]  # new image values, new version
    write_parquet_atomic(pd.DataFrame({"item_id": ids, "image_embedding": list(rng.normal(size=(300, 4)).astype(
        "float32"))}), lake.path("item_images"))
    scorer, why = champion_scorer(s, "v1")
    assert scorer is None and "image vectors of length 6" in why and "length 4" in why
    third = train_ctr.run(s, END)  # not stuck behind the champion it cannot score
    assert third["promoted"] and "no comparable champion" in third["reason"]


def test_carried_rows_keep_an_expected_ctr_only_from_todays_model():
    import pyarrow as pa

    from keyphrase_pipeline.stages import recommend

    schema = recommend._out_schema()
    table = pa.table({"item_id": pa.array([1, 1, 2], pa.int64()), "rank": pa.array([1, 2, 1], pa.int32()),
                      "keyphrase_id": pa.array([5, 6, 5], pa.int64()), "keyphrase": ["a", "b", "a"],
                      "score": pa.array([0.9, 0.8, 0.7], pa.float32()),
                      "expected_ctr": pa.array([0.1, 0.2, 0.3], pa.float32()),
                      "ctr_model_version": ["m1", "m1", "m0"]})

    class Scorer:
        version = "m1"

    kept, dropped, _ = recommend._carried_values(table, schema, Scorer())
    values = kept.column("expected_ctr").to_pylist()
    assert dropped == 1 and values[:2] == pytest.approx([0.1, 0.2]) and values[2] is None
    assert kept.column("ctr_model_version").to_pylist() == ["m1", "m1", None]
    none, dropped, _ = recommend._carried_values(table, schema, None)
    assert dropped == 3 and none.column("expected_ctr").null_count == 3
    old = table.drop_columns(["expected_ctr", "ctr_model_version"])  # written before the CTR model
    filled, dropped, _ = recommend._carried_values(old, schema, Scorer())
    assert dropped == 0 and filled.schema == schema and filled.column("expected_ctr").null_count == 3


def test_with_no_champion_student_a_model_for_the_given_student_can_be_promoted(world):
    Path(layout.registry_pointer(world, "students")).unlink()
    stats = train_ctr.run(world, END, version="v1")
    assert stats["promoted"] and registry.ctr_champion(world) == stats["version"]
