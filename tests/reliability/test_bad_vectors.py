"""Embeddings that are not vectors, and one keyphrase twice in a list (issue 27), through the real stages.

* A NaN or all-zero embedding (a broken export, an empty text that got through) used to be published
  silently: the NaN item got no recommendations, the zero item 20 arbitrary ones at score 0.0, a NaN
  keyphrase vanished from the index and the recall gate passed. Now ``kp embed`` quarantines such vectors
  (``non-finite vector`` / ``zero vector``) and counts them; ``kp index`` and ``kp recommend`` refuse them
  (DataError naming how many and an example id); ``kp recommend`` counts the items left without
  recommendations and refuses the day above ``serve.max_items_without_recommendations_share`` (GateError).
* The same keyphrase after normalisation ("Red Shoes" / "red  shoes") listed twice for one item wasted a
  slot: each item's list now holds distinct keyphrases, the best-scoring spelling of each, and still K.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "jobs"))
from serve_helpers import DS, embedded_keyphrase_world, ready, serve_model, serve_ready  # noqa: E402,F401

from keyphrase_pipeline.core.errors import DataError, GateError  # noqa: E402
from keyphrase_pipeline.core.lake import Lake, local_path, read_parquet, write_parquet_atomic  # noqa: E402
from keyphrase_pipeline.core.layout import embeddings_dir, index_build_dir  # noqa: E402
from keyphrase_pipeline.models.text import keyphrase_identity  # noqa: E402
from keyphrase_pipeline.stages import index, recommend  # noqa: E402


def _set_vectors(settings, what: str, vectors: dict) -> None:
    """Replace the ``what`` embeddings of the given ids (id -> vector) in the snapshot of model v1."""
    path = embeddings_dir(settings, what, "v1")
    df = read_parquet(path, contract="embeddings")
    df["embedding"] = [np.asarray(vectors.get(i, e), dtype=np.float32) for i, e in zip(df["id"], df["embedding"])]
    write_parquet_atomic(df, path)


def _nan(dim: int = 16):
    v = np.full(dim, 0.25, np.float32)
    v[3] = np.nan
    return v


# ---- index and recommend refuse them -----------------------------------------------------------------
def test_index_refuses_nan_and_zero_keyphrase_vectors_naming_count_and_id(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", n_kp=60, n_items=50)
    _set_vectors(s, "keyphrases", {105: _nan(), 131: np.zeros(16)})
    with pytest.raises(DataError, match=r"2 keyphrases embedding\(s\).*non-finite vector: 1, zero vector: 1.*"
                                        r"keyphrase id 105"):
        index.run(s, DS)
    assert not Path(local_path(index_build_dir(s, DS))).exists()  # nothing staged, nothing to publish


def test_recommend_refuses_nan_and_zero_item_vectors_over_all_batches(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", n_kp=60, n_items=50).with_overrides(
        **{"serve.recommend_batch_rows": 10})
    index.run(s, DS)
    recommend.run(s, DS)
    lake = Lake.from_settings(s)
    before = read_parquet(lake.path("recommendations", ds=DS))
    _set_vectors(s, "items", {7: _nan(), 8: np.zeros(16), 41: np.zeros(16)})  # 41 is in a later batch
    with pytest.raises(DataError, match=r"3 items embedding\(s\).*non-finite vector: 1, zero vector: 2.*item id 7"):
        recommend.run(s, DS)
    pd.testing.assert_frame_equal(read_parquet(lake.path("recommendations", ds=DS)), before)  # the previous stays


# ---- items without recommendations: counted and gated ------------------------------------------------
def _without_recs(settings, threshold: float) -> int:
    items = read_parquet(embeddings_dir(settings, "items", "v1"))
    kps = read_parquet(embeddings_dir(settings, "keyphrases", "v1"))
    best = (np.stack(items["embedding"]) @ np.stack(kps["embedding"]).T).max(axis=1)
    return int((best < threshold).sum())


def test_items_without_recommendations_are_counted_and_trip_the_gate(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", n_kp=60, n_items=50).with_overrides(
        **{"serve.score_threshold": 0.9})
    index.run(s, DS)
    lake = Lake.from_settings(s)
    want = _without_recs(s, 0.9)
    assert 0.05 * 50 < want < 50  # the world has items with and without a keyphrase above 0.9
    with pytest.raises(GateError, match=rf"{want} of 50 items .* have no recommendations"):
        recommend.run(s, DS)
    assert not lake.exists(lake.path("recommendations", ds=DS))
    refused = json.loads(Path(lake.run_stats_path(DS, "recommend")).read_text())
    assert refused["status"] == "refused" and refused["items_without_recs"] == want
    assert refused["max_items_without_recs_share"] == 0.05  # the default

    # kp embed's vector quarantine of the day counts too; a looser gate lets the day through with the counts
    lake.write_run_stats(DS, "embed_items", {"model_version": "v1",
                                             "quarantined_by_reason": {"non-finite vector": 2, "zero vector": 1,
                                                                       "empty text": 4}})
    stats = recommend.run(s.with_overrides(**{"serve.max_items_without_recommendations_share": 1.0}), DS)
    assert stats["status"] == "written" and stats["items_without_recs"] == want
    assert stats["items_with_recs"] == 50 - want and stats["items_quarantined_vectors"] == 3
    assert stats["items_without_recs_share"] == pytest.approx((want + 3) / 53, abs=1e-6)
    assert read_parquet(lake.path("recommendations", ds=DS))["item_id"].nunique() == 50 - want


# ---- one keyphrase once per list ---------------------------------------------------------------------
def test_each_item_lists_distinct_keyphrases_the_best_spelling_and_still_k(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", n_kp=200, n_items=80).with_overrides(
        **{"serve.score_threshold": -1.0, "serve.recommend_batch_rows": 25, "serve.top_k": 20})
    lake = Lake.from_settings(s)
    # ids 260..299 repeat the texts of 100..139 with other case and spacing, their vectors nearly the same
    kps = read_parquet(lake.path("keyphrases"))
    kps.loc[kps["keyphrase_id"] >= 260, "text"] = [f"  {t.upper()}  " for t in kps.loc[kps["keyphrase_id"] < 140, "text"]]
    write_parquet_atomic(kps, lake.path("keyphrases"))
    emb = read_parquet(embeddings_dir(s, "keyphrases", "v1"), contract="embeddings").set_index("id")
    twin = {i: emb.loc[i - 160, "embedding"] * np.float32(0.999) + np.float32(0.001) for i in range(260, 300)}
    _set_vectors(s, "keyphrases", {i: v / np.linalg.norm(v) for i, v in twin.items()})
    index.run(s, DS)
    stats = recommend.run(s, DS)
    recs = read_parquet(lake.path("recommendations", ds=DS))

    # brute force: every keyphrase scored, the best id of each normalised text, the top 20 of those
    items = read_parquet(embeddings_dir(s, "items", "v1"), contract="embeddings")
    emb = read_parquet(embeddings_dir(s, "keyphrases", "v1"), contract="embeddings")
    text = kps.set_index("keyphrase_id")["text"]
    key = np.array([keyphrase_identity(text[i]) for i in emb["id"]], dtype=object)
    assert len(set(key)) < len(key) - 40  # the world repeats texts beyond the 40 twins
    scores = np.stack(items["embedding"]) @ np.stack(emb["embedding"]).T
    assert stats["items_with_recs"] == 80 and stats["rows"] == 80 * 20
    for row, iid in enumerate(items["id"]):
        got = recs[recs["item_id"] == iid]
        assert list(got["rank"]) == list(range(1, 21))  # still K
        assert got["keyphrase"].map(keyphrase_identity).nunique() == 20  # distinct after normalisation
        best = pd.DataFrame({"key": key, "score": scores[row], "id": emb["id"]}).sort_values("score", ascending=False)
        best = best.drop_duplicates("key").head(20)
        np.testing.assert_allclose(got["score"].to_numpy(), best["score"].to_numpy(), atol=1e-5)
        clear = best["score"] > best["score"].iloc[-1] + 1e-5  # ties at the edge may swap
        assert set(best.loc[clear, "id"]) <= set(got["keyphrase_id"])  # the best-scoring spelling of each


# ---- embed quarantines them --------------------------------------------------------------------------
@pytest.mark.spark
def test_embed_quarantines_nan_and_zero_vectors_with_their_reason(ready, spark):  # noqa: F811
    """A NaN vector from the tower (its export broken for one word) and a zero vector in the reused snapshot are
    quarantined with their reason and counted; neither reaches the snapshot."""
    import onnx
    from onnx import numpy_helper
    from serve_helpers import catalog, write_inputs

    from keyphrase_pipeline.core.layout import onnx_dir
    from keyphrase_pipeline.models.text import tokenizer_at
    from keyphrase_pipeline.stages import embed

    ds2 = "2026-10-06"
    tower = Path(local_path(onnx_dir(ready, "v1"))) / "item"
    model = onnx.load(str(tower / "model.onnx"))
    poison = tokenizer_at(str(tower))("zebra", add_special_tokens=False)["input_ids"]
    words = next(t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[0] > 20_000)  # word embeddings
    table = numpy_helper.to_array(words).copy()
    table[poison] = np.nan
    words.CopyFrom(numpy_helper.from_array(table, words.name))
    onnx.save(model, str(tower / "model.onnx"))

    cat = catalog()
    cat.loc[cat["item_id"] == 11, "title"] = "zebra print mug"  # embedded now: a NaN vector
    write_inputs(ready, ds2, cat=cat)
    _set_vectors(ready, "items", {12: np.zeros(16)})  # reused (its text is unchanged): a zero vector
    stats = embed.run(ready, ds2, "items", spark=spark)

    assert stats["quarantined_by_reason"] == {"non-finite vector": 1, "zero vector": 1}
    assert stats["vectors_quarantined"] == 2 and stats["quarantined"] == 2
    assert stats["rows_total"] == 34 and stats["embedded_now"] == 0 and stats["reused"] == 34
    q = read_parquet(Lake.from_settings(ready).path("quarantine", "embed_items", ds=ds2)).set_index("id")
    assert q["reason"].to_dict() == {11: "non-finite vector", 12: "zero vector"}
    assert np.isnan(np.asarray(q.loc[11, "embedding"], dtype=np.float32)).any() and q.loc[11, "text"].startswith("zebra")
    snap = read_parquet(embeddings_dir(ready, "items", "v1"), contract="embeddings")
    assert not {11, 12} & set(snap["id"]) and len(snap) == 34
    assert all(np.isfinite(v).all() and np.abs(v).sum() > 0 for v in snap["embedding"])
    recorded = json.loads(Path(Lake.from_settings(ready).run_stats_path(ds2, "embed_items")).read_text())
    assert recorded["vectors_quarantined"] == 2
