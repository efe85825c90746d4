"""FAISS helpers shared by the index build (``keyphrase_pipeline/jobs/index.py``), recommendations, serving and the benchmark:
build an ID-mapped inner-product index, set its search parameters, move it to a GPU when there is one,
and measure its recall against exact search (``ann_recall_at_k``).

Vectors are float32 arrays of shape ``(n, dim)``, L2-normalised (inner product = cosine); ids int64 ``(n,)``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

ADD_BATCH = 100_000
TRAIN_SAMPLE = 100_000


def set_search_params(index, params: dict) -> None:
    """Apply e.g. ``{"efSearch": 128}`` / ``{"nprobe": 64}`` through faiss's ParameterSpace (IDMap-aware)."""
    import faiss

    ps = faiss.ParameterSpace()
    for key, value in (params or {}).items():
        ps.set_index_parameter(index, key, value)


def search_params_for(factory: str, settings) -> dict:
    """Search parameters for an index factory string from ``serve.ann_ef_search`` / ``serve.ann_nprobe``."""
    f = factory.upper()
    params = {}
    if "HNSW" in f:
        params["efSearch"] = settings.serve.ann_ef_search
    if "IVF" in f:
        params["nprobe"] = settings.serve.ann_nprobe
    return params


def maybe_gpu(index, device: str = "auto"):
    """The index on GPU when faiss has GPU support and a GPU is visible (unsupported types stay on CPU)."""
    import faiss

    if device == "cpu" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return index
    try:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    except Exception as exc:  # e.g. HNSW has no GPU version
        log.info("index stays on CPU: %s", exc)
        return index


def build_index(vectors, ids, factory: str, search_params: dict | None = None, seed: int = 0):
    """An ``IDMap,<factory>`` inner-product index holding ``vectors`` under ``ids`` (trained on a sample).

    ``vectors``: float32 ``(n, d)``, L2-normalised; ``ids``: int64 ``(n,)``. Returns a ``faiss.Index`` of dim ``d``.
    faiss raises RuntimeError for a bad ``factory`` string or too few vectors to train it (``kp`` exit 1)."""
    import faiss
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    index = faiss.index_factory(vectors.shape[1], f"IDMap,{factory}", faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if len(vectors) <= TRAIN_SAMPLE else vectors[rng.choice(len(vectors), TRAIN_SAMPLE, replace=False)]
        index.train(sample)
    for start in range(0, len(vectors), ADD_BATCH):
        index.add_with_ids(vectors[start:start + ADD_BATCH], ids[start:start + ADD_BATCH])
    set_search_params(index, search_params or {})
    return index


def ann_recall_at_k(index, vectors, ids, queries, k: int, device: str = "auto") -> float:
    """Mean |index top-k ∩ exact top-k| / k over ``queries`` (exact = brute-force inner product).

    ``queries``: float32 ``(q, d)``; ``k`` is capped at ``len(vectors)``. Returns a float in [0, 1] (0.0 for no
    queries). Not to be confused with ``keyphrase_pipeline.jobs.evaluate.relevance_recall_at_k`` (relevant keyphrases found)."""
    import numpy as np

    k = max(1, min(k, len(vectors)))
    exact = build_index(vectors, ids, "Flat")
    _, truth = maybe_gpu(exact, device).search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, got = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = [len(set(t[t >= 0]) & set(g[g >= 0])) / k for t, g in zip(truth, got)]
    return float(np.mean(hits)) if hits else 0.0
