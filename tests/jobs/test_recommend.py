"""kp recommend: top-K keyphrases per item by the index, ranks, threshold, changed-only carry-over."""

from __future__ import annotations

import numpy as np
import pytest
from serve_helpers import DS, catalog, ready, serve_model, serve_ready, write_inputs  # noqa: F401

from keyphrase_pipeline.jobs import embed, index, recommend
from keyphrase_pipeline.core.layout import embeddings_dir
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, read_parquet

pytestmark = pytest.mark.spark
DS2 = "2026-10-06"


def _brute_force(settings):
    items = read_parquet(embeddings_dir(settings, "items", "v1"), contract="embeddings")
    kps = read_parquet(embeddings_dir(settings, "keyphrases", "v1"), contract="embeddings")
    iv, kv = np.stack(items["embedding"]), np.stack(kps["embedding"])
    scores = iv @ kv.T
    return items["id"].to_numpy(), kps["id"].to_numpy(), scores


def test_topk_matches_brute_force(ready):
    recs = read_parquet(Lake.from_settings(ready).path("recommendations", ds=DS), contract="recommendations")
    item_ids, kp_ids, scores = _brute_force(ready)
    assert recs["item_id"].nunique() == 36
    for iid, g in recs.groupby("item_id"):
        assert list(g["rank"]) == list(range(1, 21))
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()
        row = scores[list(item_ids).index(iid)]
        np.testing.assert_allclose(g["score"].to_numpy(), np.sort(row)[::-1][:20], atol=1e-5)
        clear = row > np.sort(row)[::-1][19] + 1e-5  # strictly above the 20th score (ties at the edge may swap)
        assert set(kp_ids[clear]) <= set(g["keyphrase_id"])
    assert recs["keyphrase"].str.len().min() > 0


def test_score_threshold_drops_rows(ready):
    recs = read_parquet(Lake.from_settings(ready).path("recommendations", ds=DS))
    cut = float(np.median(recs["score"]))
    s = ready.with_overrides(**{"serve.score_threshold": cut, "serve.top_k": 5})
    stats = recommend.run(s, DS)
    out = read_parquet(Lake.from_settings(s).path("recommendations", ds=DS), contract="recommendations")
    assert (out["score"] >= cut).all() and out["rank"].max() <= 5
    assert stats["rows"] == len(out) < 36 * 5


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
    item_ids, kp_ids, scores = _brute_force(ready)  # item 1 was searched again with its new embedding
    row = scores[list(item_ids).index(1)]
    got = new[new["item_id"] == 1]
    np.testing.assert_allclose(got["score"].to_numpy(), np.sort(row)[::-1][:20], atol=1e-5)


def test_needs_index_build(ready):
    with pytest.raises(DataError, match="kp index"):
        recommend.run(ready, "2026-12-01")
