"""keyphrase_pipeline.artifacts.rerank and ``kp recommend`` with ``serve.rerank_depth`` > 0: which cross-encoder,
the items' texts from the day's catalog, clear errors before any search, and the served order, checked against the
same cross-encoder scoring the student's own top candidates independently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serve_helpers import DS, catalog, ready, serve_model, serve_ready, write_inputs  # noqa: F401

from keyphrase_pipeline.artifacts.rerank import Reranker, teacher_of
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, read_parquet, write_parquet_atomic
from keyphrase_pipeline.stages import recommend

pytestmark = pytest.mark.spark  # the ``ready`` lake is built by the Spark stages once per session
CROSS = "2026-10-05-0c0ffee"
DS2 = "2026-10-06"


@pytest.fixture(scope="session")
def tiny_cross(tmp_path_factory, serve_model):
    """A cross-encoder with a random head on the serving tests' tiny encoder, saved as a model directory."""
    from testsupport import make_settings

    from keyphrase_pipeline.models.cross_encoder import build_cross, save_cross

    root = tmp_path_factory.mktemp("tiny_cross")
    cross = build_cross(make_settings(root / "lake", train={"base_model": serve_model}))
    return save_cross(cross, str(root / "model"))


def _with_teacher(settings, tiny_cross, version: str = CROSS):
    """Register ``tiny_cross`` as cross version ``version`` and record it as student v1's teacher."""
    lake = Lake.from_settings(settings)
    shutil.copytree(tiny_cross, lake.path("registry", "cross", version, "model"))
    cfg = Path(lake.path("registry", "students", "v1", "train_config.json"))
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "cross_version": version}))
    return settings


def _independent(settings, tiny_cross, depth: int, k: int) -> dict[int, list[int]]:
    """Each item's expected keyphrase ids: the student's top ``depth`` (search_batch, as kp recommend searches),
    scored by the cross-encoder directly, the best ``k`` of them (ties: the student's order)."""
    from keyphrase_pipeline.core.layout import embeddings_dir
    from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs

    index, keyphrases, meta = recommend.load_build(settings, DS)
    items = read_parquet(embeddings_dir(settings, "items", meta["model_version"]), contract="embeddings")
    items = items[items["model_version"] == meta["model_version"]]
    cand = recommend.search_batch(index, keyphrases, items["id"].to_numpy(), np.stack(items["embedding"].to_numpy()),
                                  depth, settings.serve.score_threshold)
    cat = catalog().set_index("item_id")
    p = predict_pairs(load_cross(tiny_cross, "cpu"), cat.loc[cand["item_id"], "title"].tolist(),
                      cat.loc[cand["item_id"], "category"].tolist(), cand["keyphrase"].tolist())
    cand = cand.assign(p=p).sort_values(["item_id", "p", "rank"], ascending=[True, False, True], kind="stable")
    return {int(i): g["keyphrase_id"].head(k).tolist() for i, g in cand.groupby("item_id")}


def test_recommend_serves_the_cross_encoders_order_of_the_students_top_depth(ready, tiny_cross):
    s = _with_teacher(ready, tiny_cross).with_overrides(**{"serve.rerank_depth": 30, "serve.recommend_batch_rows": 7})
    stats = recommend.run(s, DS)
    recs = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    want = _independent(s, tiny_cross, depth=30, k=20)
    assert recs["item_id"].nunique() == len(want) == 36
    for iid, g in recs.groupby("item_id", sort=False):
        assert g["rank"].tolist() == list(range(1, 21))
        assert g["keyphrase_id"].tolist() == want[iid]
        assert (np.diff(g["rerank_score"].to_numpy()) <= 1e-6).all() and g["rerank_score"].between(0, 1).all()
    assert stats["rerank_depth"] == 30 and stats["rerank_cross_version"] == CROSS
    assert stats["rerank_pairs"] == 36 * 30 and stats["rerank_items"] == 36 and stats["rerank_items_without_text"] == 0
    assert stats["rerank_pairs_per_s"] > 0 and stats["rows"] == 36 * 20
    # score is still the student's cosine: the re-ranked lists are not in score order, yet each row's cosine is kept
    assert not all((np.diff(g["score"].to_numpy()) <= 1e-6).all() for _, g in recs.groupby("item_id"))


def test_depth_0_is_the_students_order_and_loads_no_cross_encoder(ready, monkeypatch):
    import keyphrase_pipeline.models.cross_encoder as ce

    monkeypatch.setattr(ce, "load_cross", lambda *a, **k: pytest.fail("loaded a cross-encoder with the re-rank off"))
    assert Reranker.for_run(ready, DS, "v1") is None
    stats = recommend.run(ready, DS)
    assert stats["rerank_depth"] == 0 and "rerank_pairs" not in stats


def test_an_explicit_cross_encoder_overrides_the_students_teacher(ready, tiny_cross):
    assert teacher_of(ready, "v1") is None  # the test lake's student records none
    s = ready.with_overrides(**{"serve.rerank_depth": 5, "serve.rerank_cross": tiny_cross})
    r = Reranker.for_run(s, DS, "v1")
    assert r.cross_dir == tiny_cross and r.cross_version is None and r.search_k(20) == 20 and r.search_k(3) == 5
    _with_teacher(ready, tiny_cross)
    assert teacher_of(ready, "v1") == CROSS
    r = Reranker.for_run(ready.with_overrides(**{"serve.rerank_depth": 5}), DS, "v1")
    assert r.cross_version == CROSS and r.cross_dir.endswith(f"cross/{CROSS}/model")
    version_dir = Lake.from_settings(ready).path("registry", "cross", CROSS)
    for spelled in (version_dir, f"{version_dir}/model", f"{version_dir}/model/"):  # a registry directory: its version
        r = Reranker.for_run(ready.with_overrides(**{"serve.rerank_depth": 5, "serve.rerank_cross": spelled}), DS, "v1")
        assert r.cross_version == CROSS and r.version == CROSS


def test_clear_errors_before_the_index_is_read(ready, tiny_cross, monkeypatch):
    monkeypatch.setattr(recommend, "load_build", lambda *a, **k: pytest.fail("read the index before the re-rank's checks"))
    on = ready.with_overrides(**{"serve.rerank_depth": 5})
    with pytest.raises(ConfigError, match="records no cross-encoder teacher.*serve.rerank_cross"):
        recommend.run(on, DS)
    with pytest.raises(ConfigError, match="serve.rerank_cross 'nope': neither a directory nor a cross-encoder version"):
        recommend.run(on.with_overrides(**{"serve.rerank_cross": "nope"}), DS)
    empty = Path(ready.lake_root) / "not_a_model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="serve.rerank_cross .*not_a_model is not a cross-encoder .found: no model"):
        recommend.run(on.with_overrides(**{"serve.rerank_cross": str(empty)}), DS)
    import keyphrase_pipeline.models.cross_encoder as ce

    monkeypatch.setattr(ce, "load_cross", lambda *a, **k: pytest.fail("loaded a model before the re-rank's checks"))
    student = Lake.from_settings(ready).path("registry", "students", "v1", "model")  # a bi-encoder: refused
    with pytest.raises(ConfigError, match="is not a cross-encoder .found: bi"):
        recommend.run(on.with_overrides(**{"serve.rerank_cross": student}), DS)
    _with_teacher(ready, tiny_cross)
    shutil.rmtree(Lake.from_settings(ready).path("catalog", ds=DS))
    with pytest.raises(DataError, match="needs the items' titles: no catalog for 2026-10-05"):
        recommend.run(on, DS)


def test_texts_come_from_the_catalog_aligned_with_the_ids(ready, tiny_cross):
    cat = catalog()
    dup = cat.iloc[[0]].assign(title="an inactive older row", active=False)
    dup3 = cat.iloc[[2]].assign(title="another inactive row", active=False)
    # items 1 and 3 twice: the active row wins, whether it is read first (item 3) or last (item 1)
    cat = pd.concat([dup, cat.iloc[:5], dup3], ignore_index=True)
    write_parquet_atomic(cat, Lake.from_settings(ready).path("catalog", ds=DS))
    r = Reranker.for_run(ready.with_overrides(**{"serve.rerank_depth": 3, "serve.rerank_cross": tiny_cross}), DS, "v1")
    titles, cats = r.catalog.texts(np.array([3, 1, 999, 3], dtype=np.int64))
    assert titles[0] == titles[3] == catalog().loc[2, "title"] and titles[1] == catalog().loc[0, "title"]
    assert titles[2] is None or titles[2] != titles[2]  # no catalog row: served in the student's order
    assert cats.tolist()[:2] == [catalog().loc[2, "category"], catalog().loc[0, "category"]] and cats[2] == ""


def test_with_the_hybrid_score_too_each_batch_reads_the_catalog_once(ready, tiny_cross, monkeypatch):
    """Both steps on (the student's hybrid re-score, then the re-rank): one catalog read per batch of items, handed to
    both (ItemTexts.batch); the lists are those of each step reading the catalog itself."""
    from keyphrase_pipeline.artifacts import rerank
    from keyphrase_pipeline.models.bi_encoder import read_marker, write_marker
    from keyphrase_pipeline.models.lexical_match import HybridScore

    model_dir = Path(Lake.from_settings(ready).path("registry", "students", "v1", "model"))
    write_marker(model_dir, **{"kind": "bi", **read_marker(model_dir),
                               "hybrid": HybridScore(1.0, (0.6, 0.0, -0.3)).as_dict()})
    s = ready.with_overrides(**{"serve.rerank_depth": 12, "serve.rerank_cross": tiny_cross, "serve.top_k": 10,
                                "serve.hybrid_depth": 20, "serve.recommend_batch_rows": 7})
    reads = []
    real_rows_where = rerank.rows_where
    monkeypatch.setattr(rerank, "rows_where", lambda *a, **kw: reads.append(1) or real_rows_where(*a, **kw))
    stats = recommend.run(s, DS)
    shared = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    assert stats["hybrid_items"] == stats["rerank_items"] == 36 and stats["rerank_pairs"] == 36 * 12
    assert len(reads) == 6  # 36 items in batches of 7

    reads.clear()
    with monkeypatch.context() as m:
        m.setattr(rerank.ItemTexts, "batch", lambda self, ids: None)  # each step reads for itself
        recommend.run(s, DS)
    own = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    assert len(reads) == 12
    cols = ["item_id", "rank", "keyphrase_id", "score", "rerank_score"]
    pd.testing.assert_frame_equal(shared[cols].sort_values(["item_id", "rank"], ignore_index=True),
                                  own[cols].sort_values(["item_id", "rank"], ignore_index=True))

    batch = rerank.ItemTexts.open(s, DS, "test").batch(np.array([2, 1, 2], dtype=np.int64))
    titles, cats = batch.texts(np.array([1, 999, 2], dtype=np.int64))
    assert titles[0] == catalog().loc[0, "title"] and titles[2] == catalog().loc[1, "title"]
    assert titles[1] is None and cats[1] == "" and cats[0] == catalog().loc[0, "category"]


def test_items_missing_from_the_catalog_keep_the_students_order(ready, tiny_cross, caplog):
    write_parquet_atomic(catalog().iloc[:20], Lake.from_settings(ready).path("catalog", ds=DS))  # items 21-40 gone
    s = ready.with_overrides(**{"serve.rerank_depth": 20, "serve.rerank_cross": tiny_cross})
    with caplog.at_level("INFO"):
        stats = recommend.run(s, DS)
    assert "re-rank: 18 of 36 items searched have no row in the day's catalog" in caplog.text
    assert "re-rank: up to 36 items x 20 candidates = 720 cross-encoder pairs" in caplog.text
    recs = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    missing = recs[recs["item_id"] > 20]
    assert len(missing) and missing["rerank_score"].isna().all()
    assert (missing.groupby("item_id")["score"].apply(lambda x: (np.diff(x.to_numpy()) <= 1e-6).all())).all()
    assert recs.loc[recs["item_id"] <= 20, "rerank_score"].notna().all()
    assert stats["rerank_items"] == 18 and stats["rerank_items_without_text"] == 18  # items 10 and 20 are inactive


def test_a_depth_below_top_k_reorders_only_the_top_depth(ready, tiny_cross):
    s = ready.with_overrides(**{"serve.rerank_depth": 5, "serve.rerank_cross": tiny_cross})
    stats = recommend.run(s, DS)
    got = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    student = _independent(s, tiny_cross, depth=20, k=20)  # the student's top 20 (in the cross's order)
    assert stats["rerank_pairs"] == 36 * 5 and stats["rows"] == 36 * 20
    for iid, g in got.groupby("item_id"):
        top, rest = g[g["rank"] <= 5], g[g["rank"] > 5]
        assert top["rerank_score"].notna().all() and rest["rerank_score"].isna().all()
        assert (np.diff(rest["score"].to_numpy()) <= 1e-6).all()  # below depth: the student's order
        assert top["score"].min() >= rest["score"].max() - 1e-6  # the top 5 are the student's own top 5
        assert set(top["keyphrase_id"]) | set(rest["keyphrase_id"]) == set(student[iid])


def test_published_rows_carry_the_rerank_score_to_the_serving_reader(ready, tiny_cross):
    from keyphrase_pipeline.artifacts import serving
    from keyphrase_pipeline.stages import publish

    s = _with_teacher(ready, tiny_cross).with_overrides(**{"serve.rerank_depth": 25})
    recommend.run(s, DS)
    publish.run(s, DS)
    recs = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    item = int(recs["item_id"].iloc[0])
    got = serving.load_current(s, cached=False).search(item)
    want = recs[recs["item_id"] == item]
    assert [r["keyphrase_id"] for r in got] == want["keyphrase_id"].tolist()
    assert [r["rerank_score"] for r in got] == pytest.approx(want["rerank_score"].tolist())
    assert {r["rerank_cross_version"] for r in got} == {CROSS}


def _today(settings, ids=(1, 2, 31)):
    """Mark items ``ids`` as embedded on DS2 and give DS2 the build of DS: a --changed-only day that searches them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.lake import local_path
    from keyphrase_pipeline.core.layout import embeddings_dir

    lake = Lake.from_settings(settings)
    for f in sorted(Path(local_path(embeddings_dir(settings, "items", "v1"))).glob("part-*.parquet")):
        t = pq.read_table(f).to_pandas()
        t.loc[t["id"].isin(list(ids)), "embedded_ds"] = DS2
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), f)
    shutil.copytree(lake.path("serving", "builds", ds=DS), lake.path("serving", "builds", ds=DS2))
    write_inputs(settings, DS2)



def test_changed_only_keeps_a_carried_rerank_score_only_from_todays_cross_encoder(ready, tiny_cross):
    s = _with_teacher(ready, tiny_cross).with_overrides(**{"serve.rerank_depth": 20})
    recommend.run(s, DS)
    _today(s)
    lake = Lake.from_settings(s)

    def day2(settings):
        stats = recommend.run(settings, DS2, changed_only=True)
        recs = read_parquet(lake.path("recommendations", ds=DS2), contract="recommendations")
        return stats, recs[~recs["item_id"].isin([1, 2, 31])], recs[recs["item_id"].isin([1, 2, 31])]

    stats, carried, fresh = day2(s)  # the same teacher: the carried scores stay
    assert stats["items_carried"] == 33 and stats["rerank_dropped_carried"] == 0 and stats["rerank_pairs"] == 3 * 20
    assert carried["rerank_score"].notna().all() and set(carried["rerank_cross_version"]) == {CROSS}
    assert fresh["rerank_score"].notna().all()
    stats, carried, fresh = day2(s.with_overrides(**{"serve.rerank_depth": 0}))  # re-rank off: stale, nulled
    assert stats["rerank_dropped_carried"] == len(carried) == 33 * 20
    assert carried["rerank_score"].isna().all() and carried["rerank_cross_version"].isna().all()
    assert fresh["rerank_score"].isna().all()
    other = "2026-10-06-0ther00"  # another teacher (the same weights under another version): stale too
    shutil.copytree(tiny_cross, lake.path("registry", "cross", other, "model"))
    stats, carried, _ = day2(s.with_overrides(**{"serve.rerank_cross": other}))
    assert stats["rerank_dropped_carried"] == 33 * 20 and carried["rerank_score"].isna().all()


def test_a_depth_faiss_cannot_give_on_the_gpu_names_the_depth_before_any_work(ready, monkeypatch):
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "faiss_gpus", lambda faiss_module=None: 1)
    s = ready.with_overrides(**{"serve.rerank_depth": devices.FAISS_GPU_MAX_K, "serve.device": "cuda"})
    with pytest.raises(ConfigError, match=f"serve.rerank_depth asks FAISS for {devices.FAISS_GPU_MAX_K + 10} neighbours"):
        recommend.run(s, DS)  # the first search asks for the depth + SPARE_CANDIDATES


def test_expected_clicks_with_a_depth_up_to_top_k_warns(ready, tiny_cross, caplog):
    s = ready.with_overrides(**{"serve.rerank_depth": 20, "serve.rerank_cross": tiny_cross,
                                "ctr_model.rank_by": "expected_clicks"})
    with caplog.at_level("WARNING", logger="keyphrase_pipeline.artifacts.rerank"):
        Reranker.for_run(s, DS, "v1")
    assert "serve.rerank_depth=20 <= serve.top_k=20 with ctr_model.rank_by=expected_clicks" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="keyphrase_pipeline.artifacts.rerank"):
        Reranker.for_run(s.with_overrides(**{"serve.rerank_depth": 40}), DS, "v1")
    assert "expected_clicks" not in caplog.text
