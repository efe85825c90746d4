"""jobs.kd_pairs: the unjudged pairs the assistant scores for the student (Augmented SBERT sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from distill_helpers import DS, make_pairs, tiny_settings, trained_world
from testsupport import make_settings


def test_nearest_keyphrases_are_the_most_similar_best_first():
    from keyphrase_pipeline.jobs.kd_pairs import nearest_keyphrases

    kp = np.eye(4, dtype=np.float32)
    items = np.array([[0.9, 0.1, 0, 0], [0, 0, 0.2, 0.8]], dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    assert nearest_keyphrases(items, kp, 2).tolist() == [[0, 1], [3, 2]]
    assert nearest_keyphrases(items, kp, 9).shape == (2, 4)  # k clipped to the keyphrases there are


def test_sampled_pairs_are_unjudged_new_and_bounded():
    from keyphrase_pipeline.jobs.kd_pairs import sample_pairs
    from keyphrase_pipeline.jobs.label_store import text_hash
    from keyphrase_pipeline.models.bi_encoder import build_student

    w = trained_world(make_settings)
    s = tiny_settings(make_settings, w["root"] / "kd-pairs-lake", w["base"])
    train = make_pairs(80, seed=5)
    train["text_hash"] = [text_hash(t, c, k) for t, c, k in zip(train["title"], train["category"], train["keyphrase"])]
    # one unjudged pair that must never come out: as if it were in the held-out split
    t0, c0 = train["title"].iloc[0], train["category"].iloc[0]
    others = [k for k in train["keyphrase"].unique() if text_hash(t0, c0, k) not in set(train["text_hash"])]
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
    from keyphrase_pipeline.jobs import train_bi

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
