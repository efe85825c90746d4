"""keyphrase_pipeline.models.topk.rerank_top: each item's top ``depth`` candidates in the re-ranker's order, the rest
after them in the student's, cut to ``k`` (search_batch itself is tested through kp recommend, test_recommend)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.models.topk import OUT_COLUMNS, rerank_top


def _recs(per_item: dict[int, int]) -> pd.DataFrame:
    """A search_batch-shaped frame: items in the given order, ``n`` rows each, keyphrase ids item*100 + rank, cosines
    falling with rank."""
    rows = [(item, r, item * 100 + r, f"k{item}-{r}", 1.0 - r / 100) for item, n in per_item.items()
            for r in range(1, n + 1)]
    df = pd.DataFrame(rows, columns=OUT_COLUMNS)
    return df.astype({"rank": np.int32, "score": np.float32})


def test_the_top_depth_follow_the_scores_and_the_rest_keep_the_students_order():
    recs = _recs({7: 5, 3: 5})  # item 7 first: items keep their input order, not their id order
    scores = [0.1, 0.9, 0.5, 0.99, 0.2,   # item 7: rank 4 (0.99) is below depth 3, so it is not lifted
              0.3, 0.3, 0.8, 0.0, 0.0]    # item 3: a tie between ranks 1 and 2 keeps the student's order
    out = rerank_top(recs, scores, depth=3, k=4)
    assert out["item_id"].tolist() == [7] * 4 + [3] * 4
    assert out["keyphrase_id"].tolist() == [702, 703, 701, 704, 303, 301, 302, 304]
    assert out["rank"].tolist() == [1, 2, 3, 4] * 2 and out["rank"].dtype == np.int32
    np.testing.assert_allclose(out["rerank_score"].to_numpy()[:4], [0.9, 0.5, 0.1, np.nan])
    assert out["rerank_score"].dtype == np.float32
    # score stays the student's cosine of each row
    assert out.set_index("keyphrase_id")["score"].to_dict() == pytest.approx(
        recs.set_index("keyphrase_id")["score"].loc[out["keyphrase_id"]].to_dict())


def test_a_deeper_search_than_k_lets_the_reranker_promote_from_below_k():
    recs = _recs({1: 6})
    out = rerank_top(recs, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], depth=6, k=2)
    assert out["keyphrase_id"].tolist() == [106, 105]


def test_ties_keep_the_students_rank_not_the_keyphrase_ids_order():
    recs = _recs({1: 3}).assign(keyphrase_id=[9, 5, 1])  # ids fall as the student's rank rises
    out = rerank_top(recs, [0.5, 0.5, 0.5], depth=3, k=3)
    assert out["keyphrase_id"].tolist() == [9, 5, 1]


def test_any_score_range_lifts_the_top_depth_above_the_rest():
    out = rerank_top(_recs({1: 4}), [-3.0, -1.0, 0.0, 0.0], depth=2, k=4)  # logits, not probabilities
    assert out["keyphrase_id"].tolist() == [102, 101, 103, 104]


def test_items_without_scores_keep_their_order_and_depth_0_changes_nothing():
    recs = _recs({1: 3, 2: 3})
    out = rerank_top(recs, [np.nan, np.nan, np.nan, 0.1, 0.2, 0.3], depth=3, k=3)
    assert out["keyphrase_id"].tolist() == [101, 102, 103, 203, 202, 201]
    assert out["rerank_score"].isna().tolist() == [True] * 3 + [False] * 3
    same = rerank_top(recs, np.arange(6.0), depth=0, k=2)
    assert same["keyphrase_id"].tolist() == [101, 102, 201, 202] and same["rerank_score"].isna().all()


def test_short_lists_empty_frames_and_a_wrong_number_of_scores():
    out = rerank_top(_recs({1: 2}), [0.2, 0.8], depth=5, k=20)  # fewer candidates than depth or k: all kept
    assert out["keyphrase_id"].tolist() == [102, 101]
    assert rerank_top(_recs({}), [], depth=5, k=3).empty
    with pytest.raises(ValueError, match="2 scores for 3 rows"):
        rerank_top(_recs({1: 3}), [0.1, 0.2], depth=3, k=3)


def test_rescore_top_reorders_each_items_top_rows_by_the_new_scores_and_keeps_every_row():
    """``rescore_top`` (the hybrid score's re-order): the first ``depth`` rows of each item by the new scores, which
    replace ``score``; NaN (no text) keeps an item's rows, scores and order; rows beyond the depth follow; nothing
    dropped; depth 0 changes nothing."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.models.topk import rescore_top

    recs = pd.DataFrame({"item_id": [7, 7, 7, 3, 3], "rank": np.array([1, 2, 3, 1, 2], dtype=np.int32),
                         "keyphrase_id": [10, 11, 12, 20, 21], "keyphrase": ["a", "b", "c", "d", "e"],
                         "score": np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)})
    out = rescore_top(recs, [0.1, 0.95, 5.0, np.nan, np.nan], depth=2)
    assert out["item_id"].tolist() == [7, 7, 7, 3, 3]  # items keep their order
    assert out["keyphrase_id"].tolist() == [11, 10, 12, 20, 21]  # item 7's top 2 swapped; 12 beyond the depth
    np.testing.assert_allclose(out["score"], [0.95, 0.1, 0.7, 0.6, 0.5], rtol=1e-6)
    assert out["rank"].tolist() == [1, 2, 3, 1, 2] and out["score"].dtype == np.float32 and "rerank_score" not in out
    same = rescore_top(recs, [0.1, 0.95, 5.0, 0.0, 1.0], depth=0)
    pd.testing.assert_frame_equal(same, recs)
    deep = rescore_top(recs, [0.1, 0.95, 5.0, 0.0, 1.0], depth=10)  # deeper than the rows: all re-ordered
    assert deep["keyphrase_id"].tolist() == [12, 11, 10, 21, 20]
    with pytest.raises(ValueError, match="scores for"):
        rescore_top(recs, [0.1], depth=2)
