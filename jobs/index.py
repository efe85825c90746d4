"""Build the FAISS index of keyphrase embeddings for a day, measure its recall@K, refuse a bad one.

Up to ``serve.exact_index_max`` keyphrases: exact inner-product search (factory ``IDMap,Flat``; the
vectors are L2-normalised so inner product = cosine). Above it: ``IDMap,<serve.ann_factory>``
(default ``IVF4096,Flat`` with nprobe 16, chosen by bench/index.py; HNSW and IVF/PQ strings work too and are trained on a sample), vectors added in
batches. Recall@K is measured against exact search on ``serve.recall_sample`` item embeddings (the
real queries; keyphrase vectors stand in when items are not embedded yet) and stored in
``index_meta.json``; below ``serve.min_recall`` the build is refused with GateError and nothing is
written. The build goes to ``serving/builds/ds=D/`` atomically (index.faiss, keyphrases.parquet id map,
index_meta.json). With faiss GPU builds and a visible GPU, searches run on the GPU; here, on CPU.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from kp.errors import DataError, GateError
from kp.lake import Lake, atomic_dir, ds_str, local_path

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
    """An ``IDMap,<factory>`` inner-product index holding ``vectors`` under ``ids`` (trained on a sample)."""
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


def recall_at_k(index, vectors, ids, queries, k: int, device: str = "auto") -> float:
    """Mean |index top-k ∩ exact top-k| / k over ``queries`` (exact = brute-force inner product)."""
    import numpy as np

    k = max(1, min(k, len(vectors)))
    exact = build_index(vectors, ids, "Flat")
    _, truth = maybe_gpu(exact, device).search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, got = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = [len(set(t[t >= 0]) & set(g[g >= 0])) / k for t, g in zip(truth, got)]
    return float(np.mean(hits)) if hits else 0.0


def _load_embeddings(settings, what: str, version: str, required: bool):
    import numpy as np

    from jobs.serving import embeddings_path
    from kp.lake import read_parquet

    path = embeddings_path(settings, what, version)
    lake = Lake.from_settings(settings)
    if not lake.exists(path):
        if required:
            raise DataError(f"missing {what} embeddings of model {version} at {path}: run `kp embed --what {what}`")
        return None, None
    df = read_parquet(path, contract="embeddings")
    df = df[df["model_version"] == version]
    if df.empty:
        if required:
            raise DataError(f"empty {what} set: no embeddings of model {version} in {path}")
        return None, None
    lengths = df["embedding"].map(len)
    if (lengths != settings.serve.dim).any():
        raise DataError(f"dimension mismatch in {path}: embedding sizes {sorted(set(lengths))}, serve.dim={settings.serve.dim}")
    vecs = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    return df["id"].to_numpy(dtype=np.int64), vecs


def run(settings, ds: str, version: str | None = None) -> dict:
    """Build, measure and (if recall passes) stage the day's index; return its figures."""
    import faiss
    import numpy as np
    import pandas as pd

    from jobs.serving import build_dir, require_version
    from kp.lake import read_parquet

    s = settings.serve
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    version = require_version(settings, version)
    kp_ids, kp_vecs = _load_embeddings(settings, "keyphrases", version, required=True)
    n = len(kp_ids)
    exact = n <= s.exact_index_max
    factory = "Flat" if exact else s.ann_factory
    params = {} if exact else search_params_for(factory, settings)
    t0 = time.perf_counter()
    index = build_index(kp_vecs, kp_ids, factory, params)
    build_s = time.perf_counter() - t0
    log.info("built %s index over %d keyphrases (%d-d) in %.1fs", factory, n, s.dim, build_s)

    item_ids, item_vecs = _load_embeddings(settings, "items", version, required=False)
    rng = np.random.default_rng(0)
    pool = item_vecs if item_vecs is not None else kp_vecs
    queries = pool if len(pool) <= s.recall_sample else pool[rng.choice(len(pool), s.recall_sample, replace=False)]
    k = min(s.top_k, n)
    t0 = time.perf_counter()
    recall = recall_at_k(maybe_gpu(index, s.device), kp_vecs, kp_ids, queries, k, device=s.device)
    log.info("recall@%d = %.4f on %d %s queries (floor %.2f)", k, recall, len(queries),
             "item" if item_vecs is not None else "keyphrase", s.min_recall)

    stats = {"model_version": version, "n": int(n), "dim": s.dim, "factory": factory, "exact": exact,
             "search_params": params, "k": int(k), "recall_at_k": recall, "recall_queries": int(len(queries)),
             "min_recall": s.min_recall, "build_s": round(build_s, 3), "recall_s": round(time.perf_counter() - t0, 3)}
    if recall < s.min_recall:
        lake.write_run_stats(ds, "index", {**stats, "status": "refused"})
        raise GateError(f"index recall@{k} {recall:.4f} is below serve.min_recall={s.min_recall}: not staged")

    texts = read_parquet(lake.path("keyphrases"), contract="keyphrases")[["keyphrase_id", "text"]]
    idmap = pd.DataFrame({"keyphrase_id": kp_ids}).merge(
        texts.rename(columns={"text": "keyphrase"}).drop_duplicates("keyphrase_id"), on="keyphrase_id", how="left")
    idmap["keyphrase"] = idmap["keyphrase"].fillna("")
    target = build_dir(settings, ds)
    with atomic_dir(target) as tmp_uri:
        tmp = Path(local_path(tmp_uri))
        tmp.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(tmp / "index.faiss"))
        idmap.to_parquet(tmp / "keyphrases.parquet", index=False)
        (tmp / "index_meta.json").write_text(json.dumps({**stats, "ds": ds}, indent=2))
    lake.write_run_stats(ds, "index", {**stats, "status": "staged", "path": target})
    return {**stats, "path": target}


def add_arguments(parser) -> None:
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")


def main(settings, args) -> int:
    print(json.dumps(run(settings, args.ds)))
    return 0
