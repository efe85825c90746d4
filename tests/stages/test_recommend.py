"""kp recommend: top-K keyphrases per item by the index, ranks, threshold, changed-only carry-over; the
bounded-memory stream (batches of serve.recommend_batch_rows, crash mid-stream, streamed carry-over)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serve_helpers import DS, catalog, ready, serve_model, serve_ready, write_inputs  # noqa: F401

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import SUCCESS, Lake, local_path, read_parquet
from keyphrase_pipeline.core.layout import embeddings_dir
from keyphrase_pipeline.models.text import keyphrase_identity
from keyphrase_pipeline.stages import embed, index, recommend

pytestmark = pytest.mark.spark
DS2 = "2026-10-06"


def _brute_force(settings):
    """(item ids, keyphrase ids, scores (items x keyphrases), the top 20 of one score row): every keyphrase scored,
    the best id of each ``keyphrase_identity`` kept (a list holds one keyphrase per buyer query)."""
    items = read_parquet(embeddings_dir(settings, "items", "v1"), contract="embeddings")
    kps = read_parquet(embeddings_dir(settings, "keyphrases", "v1"), contract="embeddings")
    iv, kv = np.stack(items["embedding"]), np.stack(kps["embedding"])
    scores = iv @ kv.T
    text = read_parquet(Lake.from_settings(settings).path("keyphrases")).set_index("keyphrase_id")["text"]
    keys = np.array([keyphrase_identity(text[i]) for i in kps["id"]], dtype=object)

    def top(row, k=20):
        best = pd.DataFrame({"key": keys, "id": kps["id"].to_numpy(), "score": row})
        return best.sort_values("score", ascending=False, kind="stable").drop_duplicates("key").head(k)

    return items["id"].to_numpy(), kps["id"].to_numpy(), scores, top


def test_topk_matches_brute_force(ready):
    recs = read_parquet(Lake.from_settings(ready).path("recommendations", ds=DS), contract="recommendations")
    item_ids, kp_ids, scores, top = _brute_force(ready)
    assert recs["item_id"].nunique() == 36
    for iid, g in recs.groupby("item_id"):
        assert list(g["rank"]) == list(range(1, 21))
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()
        best = top(scores[list(item_ids).index(iid)])
        np.testing.assert_allclose(g["score"].to_numpy(), best["score"].to_numpy(), atol=1e-5)
        clear = best["score"] > best["score"].iloc[-1] + 1e-5  # strictly above the 20th (ties at the edge may swap)
        # compared by text: the same text gets the same vector, so which of its ids comes first is a tie
        assert set(best.loc[clear, "key"]) <= set(g["keyphrase"].map(keyphrase_identity))
    assert recs["keyphrase"].str.len().min() > 0


def test_score_threshold_drops_rows(ready):
    recs = read_parquet(Lake.from_settings(ready).path("recommendations", ds=DS))
    cut = float(np.median(recs["score"]))
    # a cut this high leaves some items without recommendations: let them through the gate to test the cut alone
    s = ready.with_overrides(**{"serve.score_threshold": cut, "serve.top_k": 5,
                                "serve.max_items_without_recommendations_share": 1.0})
    stats = recommend.run(s, DS)
    out = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    assert (out["score"] >= cut).all() and out["rank"].max() <= 5
    assert stats["rows"] == len(out) < 36 * 5
    assert stats["faiss_gpu"] is False


def test_the_stats_say_where_the_search_ran(ready, monkeypatch):
    """faiss_gpu records whether the index was moved (models.devices.faiss_on_device), not what the setting asked:
    an index moved to a (faked) GPU says True, one kept on the CPU says False."""
    class Moved:  # stands for a GPU index: searches like the CPU one
        def __init__(self, index):
            self.index, self.ntotal = index, index.ntotal

        def search(self, q, k):
            return self.index.search(q, k)

    monkeypatch.setattr(recommend, "faiss_on_device", lambda index, value, **kw: Moved(index))
    assert recommend.run(ready, DS)["faiss_gpu"] is True
    monkeypatch.setattr(recommend, "faiss_on_device", lambda index, value, **kw: index)
    assert recommend.run(ready, DS)["faiss_gpu"] is False


def test_changed_only_carries_the_rest_over(ready, spark):
    cat = catalog()
    cat.loc[cat["item_id"] == 1, "title"] = "completely different vintage lego"
    write_inputs(ready, DS2, cat=cat)
    embed.run(ready, DS2, "items", spark=spark)
    index.run(ready, DS2)
    stats = recommend.run(ready, DS2, changed_only=True)
    assert stats["items_scored"] == 1 and stats["items_carried"] == 35
    lake = Lake.from_settings(ready)
    old = read_parquet(lake.path("recommendations", ds=DS)).sort_values(["item_id", "rank"], ignore_index=True)
    new = read_parquet(lake.path("recommendations", ds=DS2)).sort_values(["item_id", "rank"], ignore_index=True)
    assert new["item_id"].nunique() == 36
    keep_old, keep_new = old[old["item_id"] != 1], new[new["item_id"] != 1]
    assert keep_old["keyphrase_id"].tolist() == keep_new["keyphrase_id"].tolist()
    item_ids, kp_ids, scores, top = _brute_force(ready)  # item 1 was searched again with its new embedding
    got = new[new["item_id"] == 1]
    np.testing.assert_allclose(got["score"].to_numpy(), top(scores[list(item_ids).index(1)])["score"].to_numpy(),
                               atol=1e-5)


def test_needs_index_build(ready):
    with pytest.raises(DataError, match="kp index"):
        recommend.run(ready, "2026-12-01")


# ---- the stream ------------------------------------------------------------------------------------
def _split_embeddings(settings):
    """Rewrite the item embeddings as three files of uneven sizes (one with row groups of 4 rows), plus rows of
    another model version that must be ignored."""
    path = local_path(embeddings_dir(settings, "items", "v1"))
    items = read_parquet(str(path), contract="embeddings").sort_values("id", ignore_index=True)
    other = items.head(5).assign(model_version="v0", embedding=[np.ones(16, np.float32) / 4.0] * 5)
    for f in path.iterdir():
        if f.name != SUCCESS:
            f.unlink()
    chunks = [(items.iloc[:10], None), (pd.concat([items.iloc[10:21], other]), None), (items.iloc[21:], 4)]
    for i, (chunk, row_group) in enumerate(chunks):
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        pq.write_table(table, path / f"part-{i:05d}.parquet", row_group_size=row_group)
    return items


def _all_at_once(settings, ds=DS):
    """The old, non-streaming result: every embedding of the build's model in memory, one search, sorted."""
    index, keyphrases, meta = recommend.load_build(settings, ds)
    items = read_parquet(embeddings_dir(settings, "items", meta["model_version"]), contract="embeddings")
    items = items[items["model_version"] == meta["model_version"]]
    out = recommend.search_batch(index, keyphrases, items["id"].to_numpy(), np.stack(items["embedding"].to_numpy()),
                                 min(settings.serve.top_k, index.ntotal), settings.serve.score_threshold)
    return out.sort_values(["item_id", "rank"], ignore_index=True)


def _in_file_order(settings, ds, expected_ctr: bool = False):
    """The day's recommendations in file order; the relevance columns only (``search_batch``'s), unless
    ``expected_ctr`` (no CTR model in these lakes: the expected CTR columns are null, tested in test_train_ctr).
    The re-rank is off (``serve.rerank_depth`` 0): ``rerank_score`` and ``rerank_cross_version`` are null and dropped."""
    recs = read_parquet(Lake.from_settings(settings).path("recommendations", ds=ds), contract="recommendations")
    assert recs["rerank_score"].isna().all() and recs["rerank_cross_version"].isna().all()
    recs = recs.drop(columns=["rerank_score", "rerank_cross_version"])
    if not expected_ctr:
        assert recs["expected_ctr"].isna().all() and recs["ctr_model_version"].isna().all()
        recs = recs.drop(columns=["expected_ctr", "ctr_model_version"])
    return recs


def _assert_items_contiguous_and_ranked(recs):
    starts = recs["item_id"].ne(recs["item_id"].shift()).sum()
    assert starts == recs["item_id"].nunique(), "an item's rows are split"
    for _, g in recs.groupby("item_id", sort=False):
        assert list(g["rank"]) == list(range(1, len(g) + 1))


def test_streams_in_batches_of_the_setting(ready, monkeypatch):
    _split_embeddings(ready)
    s = ready.with_overrides(**{"serve.recommend_batch_rows": 7})
    sizes = []
    real = recommend.search_batch

    def spy(index, keyphrases, item_ids, vectors, k, threshold):
        sizes.append(len(item_ids))
        assert vectors.shape == (len(item_ids), 16)
        return real(index, keyphrases, item_ids, vectors, k, threshold)

    monkeypatch.setattr(recommend, "search_batch", spy)
    stats = recommend.run(s, DS)
    assert max(sizes) <= 7 and sizes == [7, 7, 7, 7, 7, 1]  # the v0 rows are filtered out, files and row groups joined
    monkeypatch.setattr(recommend, "search_batch", real)
    want = _all_at_once(s)
    got = _in_file_order(s, DS)
    _assert_items_contiguous_and_ranked(got)
    pd.testing.assert_frame_equal(got.sort_values(["item_id", "rank"], ignore_index=True), want)
    assert stats["batches"] == 6 and stats["batch_rows"] == 7 and stats["items_scored"] == 36
    assert stats["rows"] == len(want) and stats["items_with_recs"] == want["item_id"].nunique() == 36
    assert stats["mean_recs_per_item"] == pytest.approx(want.groupby("item_id").size().mean())
    assert stats["mean_score"] == pytest.approx(float(want["score"].mean()), abs=1e-6)
    assert stats["items_carried"] == 0 and stats["top_k"] == 20


def test_batch_setting_from_the_environment(tmp_path, monkeypatch):
    from keyphrase_pipeline.core.settings import Settings

    monkeypatch.setenv("KP_SERVE__RECOMMEND_BATCH_ROWS", "7")
    assert Settings(lake_root=str(tmp_path)).serve.recommend_batch_rows == 7
    monkeypatch.delenv("KP_SERVE__RECOMMEND_BATCH_ROWS")
    assert Settings(lake_root=str(tmp_path)).serve.recommend_batch_rows == 20_000


def _leftovers(root):
    return [os.path.join(d, n) for d, dirs, _ in os.walk(root) for n in dirs if n.startswith(("_tmp-", "_trash-"))]


def test_crash_mid_stream_leaves_the_previous_output_or_nothing(ready, monkeypatch):
    s = ready.with_overrides(**{"serve.recommend_batch_rows": 7})
    lake = Lake.from_settings(s)
    target = lake.path("recommendations", ds=DS)
    before = read_parquet(target)
    real, calls = recommend.search_batch, []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:  # two batches are already written, hidden in the temp directory
            tmp = [d for d in Path(target).parent.iterdir() if d.name.startswith("_tmp-")]
            assert len(tmp) == 1 and [f.name for f in tmp[0].iterdir()] == ["part-00000.parquet"]
            raise RuntimeError("injected crash mid-stream")
        return real(*args)

    monkeypatch.setattr(recommend, "search_batch", crash_on_third)
    with pytest.raises(RuntimeError, match="injected crash"):
        recommend.run(s, DS)
    assert len(calls) == 3
    pd.testing.assert_frame_equal(read_parquet(target), before)  # the previous output, untouched
    assert _leftovers(lake.root) == []

    shutil.rmtree(target)
    calls.clear()
    with pytest.raises(RuntimeError, match="injected crash"):
        recommend.run(s, DS)
    assert not lake.exists(target) and lake.partitions("recommendations") == []
    assert _leftovers(lake.root) == []


def test_changed_only_streams_the_carry_over(ready):
    """Items 1, 2 and 31 'embedded today' (DS2); the other 33 carried from DS, whose recommendations are split
    over three files and read back 7 x 20 rows at a time."""
    lake = Lake.from_settings(ready)
    items = _split_embeddings(ready)
    path = local_path(embeddings_dir(ready, "items", "v1"))
    for f in sorted(path.glob("part-*.parquet")):
        t = pq.read_table(f).to_pandas()
        t.loc[t["id"].isin([1, 2, 31]), "embedded_ds"] = DS2
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), f, row_group_size=4)
    shutil.copytree(lake.path("serving", "builds", ds=DS), lake.path("serving", "builds", ds=DS2))
    prev_dir = Path(lake.path("recommendations", ds=DS))
    # written without the expected CTR columns, as recommend wrote them before the CTR model: carried, they get nulls
    prev = read_parquet(str(prev_dir)).sort_values(["item_id", "rank"], ignore_index=True)[recommend.OUT_COLUMNS]
    for f in prev_dir.glob("part-*.parquet"):
        f.unlink()
    cuts = np.array_split(prev["item_id"].unique(), 3)
    for i, ids in enumerate(cuts):
        prev[prev["item_id"].isin(ids)].to_parquet(prev_dir / f"part-{i:05d}.parquet", index=False)

    s = ready.with_overrides(**{"serve.recommend_batch_rows": 7})
    stats = recommend.run(s, DS2, changed_only=True)
    assert stats["items_scored"] == 3 and stats["items_carried"] == 33 and stats["batches"] == 1
    new = _in_file_order(s, DS2)
    _assert_items_contiguous_and_ranked(new)
    assert list(dict.fromkeys(new["item_id"]))[:3] == [1, 2, 31]  # fresh first, then carried in the earlier order
    carried = new[~new["item_id"].isin([1, 2, 31])].reset_index(drop=True)
    pd.testing.assert_frame_equal(carried, prev[~prev["item_id"].isin([1, 2, 31])].reset_index(drop=True))
    fresh = new[new["item_id"].isin([1, 2, 31])].reset_index(drop=True)
    want = _all_at_once(s, DS2)
    pd.testing.assert_frame_equal(fresh, want[want["item_id"].isin([1, 2, 31])].reset_index(drop=True))
    assert stats["rows"] == len(new) and stats["items_with_recs"] == 36 == len(items)
    assert stats["carry_buckets"] == 1
    # the carry worked out 5 items at a time (issue 32: memory set by the setting): the same rows, bucket by bucket
    s5 = s.with_overrides(**{"serve.recommend_carry_bucket_items": 5})
    stats5 = recommend.run(s5, DS2, changed_only=True)
    assert stats5["carry_buckets"] >= -(-36 // 5)  # item rows from the footers, / 5
    assert {k: stats5[k] for k in ("items_scored", "items_carried", "rows", "items_with_recs")} == \
        {k: stats[k] for k in ("items_scored", "items_carried", "rows", "items_with_recs")}
    new5 = _in_file_order(s5, DS2)
    _assert_items_contiguous_and_ranked(new5)
    by_item = ["item_id", "rank"]
    pd.testing.assert_frame_equal(new5.sort_values(by_item, ignore_index=True), new.sort_values(by_item, ignore_index=True))


def test_parts_roll_over_only_between_items(tmp_path):
    parts = recommend._Parts(tmp_path, max_rows=5)
    schema = recommend._out_schema()

    def rows(*item_ids):
        n = len(item_ids)
        return pa.Table.from_pydict({"item_id": list(item_ids), "rank": list(range(1, n + 1)), "keyphrase_id": [7] * n,
                                     "keyphrase": ["x"] * n, "score": [0.5] * n, "expected_ctr": [None] * n,
                                     "ctr_model_version": [None] * n, "rerank_score": [None] * n,
                                     "rerank_cross_version": [None] * n}, schema=schema)

    for t in (rows(1, 1, 1), rows(1, 1, 1), rows(1, 2, 2), rows(3), rows(4, 4, 4, 4, 4, 4), rows(5)):
        parts.write(t)
    parts.finish()
    files = sorted(p.name for p in tmp_path.glob("part-*.parquet"))
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    got = [pq.read_table(tmp_path / f).column("item_id").to_pylist() for f in files]
    # item 1 runs past 5 rows without a new file (its rows stay together); new files start at items 3 and 5
    assert got == [[1, 1, 1, 1, 1, 1, 1, 2, 2], [3, 4, 4, 4, 4, 4, 4], [5]]
    empty = tmp_path / "empty"
    empty.mkdir()
    p = recommend._Parts(empty, max_rows=5)
    p.finish()
    assert pq.read_table(empty / "part-00000.parquet").schema == schema


def test_a_top_k_faiss_cannot_give_on_the_gpu_fails_before_any_work(settings, monkeypatch):
    """With FAISS seeing a GPU (faked at its boundary), a serve.top_k above FAISS_GPU_MAX_K is a ConfigError before
    anything is read (the lake here is empty), not a failure inside the search."""
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "faiss_gpus", lambda faiss_module=None: 1)
    s = settings.with_overrides(**{"serve.top_k": devices.FAISS_GPU_MAX_K + 1, "serve.device": "cuda"})
    with pytest.raises(ConfigError, match="serve.top_k"):
        recommend.run(s, "2026-10-10")


def _with_hybrid(settings, hybrid):
    """Store ``hybrid`` in the registered student's kp_model.json (as `kp train-bi` does when it keeps one)."""
    from keyphrase_pipeline.models.bi_encoder import read_marker, write_marker

    model_dir = Path(Lake.from_settings(settings).path("registry", "students", "v1", "model"))
    write_marker(model_dir, **{"kind": "bi", **read_marker(model_dir), "hybrid": hybrid.as_dict()})


def test_a_student_with_a_hybrid_score_is_served_in_its_order(ready):
    """The student's hybrid score (models.lexical_match) re-scores each item's top serve.hybrid_depth candidates of the
    cosine search: ``score`` is cosine + bonus, the rows in its order, the top_k kept; depth 0 serves the cosine
    order; a student without one is served by cosine (the other tests here)."""
    from keyphrase_pipeline.models.lexical_match import HybridScore, match_features

    hybrid = HybridScore(1.0, (0.6, 0.0, -0.3))  # words found weigh more than the tiny encoder's cosines differ
    _with_hybrid(ready, hybrid)
    s = ready.with_overrides(**{"serve.hybrid_depth": 30, "serve.top_k": 10})
    stats = recommend.run(s, DS)
    assert stats["hybrid_depth"] == 30 and stats["hybrid_student"] == "v1" and stats["hybrid_items"] == 36
    assert stats["hybrid_pairs"] == 36 * 30 and stats["hybrid_items_without_text"] == 0
    recs = _in_file_order(s, DS)
    item_ids, kp_ids, scores, top = _brute_force(s)
    cat = catalog().set_index("item_id")
    moved = 0
    for iid, g in recs.groupby("item_id"):
        assert list(g["rank"]) == list(range(1, 11))
        cand = top(scores[list(item_ids).index(iid)], k=30)  # the cosine's top 30 distinct keyphrases
        text = read_parquet(Lake.from_settings(s).path("keyphrases")).set_index("keyphrase_id")["text"]
        words = [text[i] for i in cand["id"]]
        n = len(cand)
        want = cand["score"].to_numpy() + hybrid.bonus(match_features([cat.loc[iid, "title"]] * n,
                                                                      [cat.loc[iid, "category"]] * n, words))
        best = np.sort(want)[::-1][:10]
        np.testing.assert_allclose(g["score"].to_numpy(), best, atol=1e-5)  # the hybrid's top 10, in its order
        moved += list(g["keyphrase_id"]) != list(cand["id"].head(10))
    assert moved > 0  # the hybrid changed some lists (else this test could not tell the orders apart)

    import json

    rec_dir = Path(Lake.from_settings(s).path("recommendations", ds=DS))
    assert json.loads((rec_dir / "_hybrid.json").read_text()) == {"depth": 30, "score": hybrid.as_dict(),
                                                                  "student": "v1"}  # what publish reads
    shallow = ready.with_overrides(**{"serve.hybrid_depth": 4, "serve.top_k": 10})  # raised to top_k: one scale
    assert recommend.run(shallow, DS)["hybrid_depth"] == 10
    for _, g in _in_file_order(shallow, DS).groupby("item_id"):
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()  # each list in the order of its scores

    off = ready.with_overrides(**{"serve.hybrid_depth": 0, "serve.top_k": 10})
    assert recommend.run(off, DS)["hybrid_depth"] == 0
    assert not (rec_dir / "_hybrid.json").exists()
    plain = _in_file_order(off, DS)
    for iid, g in plain.groupby("item_id"):
        np.testing.assert_allclose(g["score"].to_numpy(), top(scores[list(item_ids).index(iid)], k=10)["score"],
                                   atol=1e-5)
