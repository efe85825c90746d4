"""kp index: exact/approximate FAISS index, recall@K against exact search, the recall gate, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serve_helpers import DS, embedded_keyphrase_world, ready, serve_model, serve_ready  # noqa: F401

from keyphrase_pipeline.artifacts.serving import current_version
from keyphrase_pipeline.core.errors import DataError, GateError
from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
from keyphrase_pipeline.core.layout import embeddings_dir, index_build_dir
from keyphrase_pipeline.models.ann import ann_recall_at_k, build_index
from keyphrase_pipeline.stages import index, publish

pytestmark = pytest.mark.spark


def _clustered(n, d=16, clusters=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ann_recall_at_k_exact_is_one_and_bad_index_is_low():
    x = _clustered(2000)
    ids = np.arange(2000, dtype=np.int64) + 7
    q = _clustered(200, seed=1)
    exact = build_index(x, ids, "Flat")
    assert ann_recall_at_k(exact, x, ids, q, 20) == 1.0
    bad = build_index(x, ids, "IVF64,PQ2x4", {"nprobe": 1})
    r = ann_recall_at_k(bad, x, ids, q, 20)
    assert 0.0 <= r < 0.6
    good = build_index(x, ids, "HNSW32,Flat", {"efSearch": 256})
    assert ann_recall_at_k(good, x, ids, q, 20) > 0.9
    # ids are the caller's ids, not row numbers
    _, got = exact.search(x[:1], 1)
    assert got[0, 0] == 7


def test_exact_build_staged_with_recall_one(ready):
    # below serve.exact_index_max the gate compares Flat with Flat: 1.0 by construction, which says nothing
    # about the gate; the gate is tested on approximate indexes (test_recall_gate_*)
    stats = index.run(ready, DS)
    assert stats["exact"] and stats["factory"] == "Flat" and stats["ann_recall_at_k"] == 1.0 and stats["n"] == 60
    assert stats["faiss_gpu"] is False  # where it searched (models.devices): here, no GPU
    root = Path(index_build_dir(ready, DS))
    meta = json.loads((root / "index_meta.json").read_text())
    assert meta["ann_recall_at_k"] == 1.0 and meta["k"] == 20 and meta["model_version"] == "v1"
    assert meta["recall_queries"] == 36  # all item embeddings serve as queries
    kps = pd.read_parquet(root / "keyphrases.parquet")
    assert len(kps) == 60 and kps["keyphrase"].str.len().min() > 0


def test_approximate_above_threshold(ready):
    s = ready.with_overrides(**{"serve.exact_index_max": 10, "serve.ann_factory": "HNSW32,Flat", "serve.ann_ef_search": 256})
    stats = index.run(s, DS)
    assert not stats["exact"] and stats["factory"] == "HNSW32,Flat" and stats["search_params"] == {"efSearch": 256}
    assert stats["ann_recall_at_k"] >= 0.95


# 4,000 keyphrases in 10 clusters (16-d), 300 item queries, top-20, IVF64 (64 lists of ~60): with nprobe 1 a
# query sees one list and misses the neighbours across its borders; with nprobe 8 it misses a few.
APPROX = {"exact_index_max": 100, "ann_factory": "IVF64,Flat", "top_k": 20, "min_recall": 0.95}


def test_recall_gate_refuses_an_approximate_index_that_misses(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", 4000, **APPROX, ann_nprobe=1)
    target = Path(index_build_dir(s, DS))
    with pytest.raises(GateError, match=r"index recall@20 0\.39\d\d is below serve.min_recall=0.95: not staged"):
        index.run(s, DS)
    assert not target.exists() and not target.parent.exists()  # nothing staged, no temp left behind
    stats = Lake.from_settings(s).read_json(Lake.from_settings(s).run_stats_path(DS, "index"))
    assert stats["status"] == "refused" and not stats["exact"] and stats["factory"] == "IVF64,Flat"
    assert stats["search_params"] == {"nprobe": 1} and stats["recall_queries"] == 300
    assert stats["ann_recall_at_k"] == pytest.approx(0.397, abs=0.01)
    with pytest.raises(DataError, match="no index build"):
        publish.run(s, DS)
    assert current_version(s) is None


def test_recall_gate_passes_the_same_index_searched_well(tmp_path):
    s = embedded_keyphrase_world(tmp_path / "lake", 4000, **APPROX, ann_nprobe=8)
    stats = index.run(s, DS)
    assert not stats["exact"] and stats["factory"] == "IVF64,Flat" and stats["search_params"] == {"nprobe": 8}
    assert 0.95 < stats["ann_recall_at_k"] < 1.0  # approximate, and good enough
    assert stats["ann_recall_at_k"] == pytest.approx(0.9947, abs=0.005)
    meta = json.loads((Path(stats["path"]) / "index_meta.json").read_text())
    assert meta["ann_recall_at_k"] == stats["ann_recall_at_k"] and meta["train_sample"] == 4000
    assert meta["factory_requested"] == "IVF64,Flat" and meta["factory_note"] == ""


def test_empty_keyphrase_set(ready):
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64"), "text_hash": pd.Series([], dtype="object"),
                          "embedding": pd.Series([], dtype="object"), "model_version": pd.Series([], dtype="object")})
    import pyarrow as pa

    from keyphrase_pipeline.core.contracts import arrow_schema

    table = pa.Table.from_pandas(empty, schema=arrow_schema("embeddings"), preserve_index=False)
    path = Path(embeddings_dir(ready, "keyphrases", "v1"))
    import shutil

    shutil.rmtree(path)
    path.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(table, path / "part-0.parquet")
    with pytest.raises(DataError, match="empty keyphrases set"):
        index.run(ready, DS)


def test_dimension_mismatch(ready):
    df = pd.DataFrame({"id": pd.Series([1, 2], dtype="int64"), "text_hash": ["a", "b"],
                       "embedding": [np.ones(8, np.float32), np.ones(8, np.float32)], "model_version": "v1"})
    write_parquet_atomic(df, embeddings_dir(ready, "keyphrases", "v1"))
    with pytest.raises(DataError, match="dimension mismatch"):
        index.run(ready, DS)


def test_missing_keyphrase_embeddings(ready):
    import shutil

    shutil.rmtree(embeddings_dir(ready, "keyphrases", "v1"))
    with pytest.raises(DataError, match="kp embed --what keyphrases"):
        index.run(ready, DS)


def test_a_top_k_faiss_cannot_give_on_the_gpu_fails_before_any_work(settings, monkeypatch):
    """With FAISS seeing a GPU (faked at its boundary), a serve.top_k above FAISS_GPU_MAX_K is a ConfigError before
    anything is read (the lake here is empty), not a failure inside the search."""
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.models import devices

    monkeypatch.setattr(devices, "faiss_gpus", lambda faiss_module=None: 1)
    s = settings.with_overrides(**{"serve.top_k": devices.FAISS_GPU_MAX_K + 1, "serve.device": "cuda"})
    with pytest.raises(ConfigError, match="serve.top_k"):
        index.run(s, "2026-10-10")
