"""Build the FAISS index of keyphrase embeddings for a day, measure its recall@K, refuse a bad one.

Up to ``serve.exact_index_max`` keyphrases: exact inner-product search (factory ``IDMap,Flat``; the
vectors are L2-normalised so inner product = cosine). Above it: ``IDMap,<serve.ann_factory>``
(default ``IVF4096,Flat`` with nprobe 16, chosen by bench/index.py; HNSW and IVF/PQ strings work too and are trained
on a sample), vectors added in
batches. Before training, the factory is checked against the data (``models.ann.choose_factory``): every
k-means gets at least 39 training vectors per centroid, so with too few keyphrases an IVF factory gets a
smaller ``nlist`` (``IVF4096,Flat`` on 602 keyphrases builds ``IVF15,Flat``) and an untrainable one falls
back to exact search; the reason is logged and stored (``factory_requested``, ``factory_note``). A
string FAISS rejects is a ConfigError (exit 2). Recall@K is measured against exact search on ``serve.recall_sample`` item embeddings (the
real queries; keyphrase vectors stand in when items are not embedded yet) and stored in
``index_meta.json``; below ``serve.min_recall`` the build is refused with GateError and nothing is
written. The build goes to ``serving/builds/ds=D/`` atomically (index.faiss, keyphrases.parquet id map,
index_meta.json). With faiss GPU builds and a visible GPU, searches run on the GPU; here, on CPU.
Keyphrase or item embeddings with a NaN/inf value or all zeros are refused before anything is built
(DataError naming how many and an example id): ``kp embed`` quarantines such vectors, so they come from a
snapshot written before that check or written by hand.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts.embeddings import load_embeddings, sample_embeddings
from keyphrase_pipeline.artifacts.serving import serving_model
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import GateError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, local_path, read_parquet
from keyphrase_pipeline.core.layout import index_build_dir
from keyphrase_pipeline.models.ann import (
    ann_recall_at_k,
    build_index,
    choose_factory,
    search_params_for,
)
from keyphrase_pipeline.models.devices import check_wheel_set, faiss_on_device, require_faiss_device

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

def run(settings: Settings, ds: str, version: str | None = None) -> dict:
    """Build, measure and (if recall passes) stage the day's index; return its stats.

    ``ann_recall_at_k`` in the stats is a share in [0, 1]; ``build_s``/``recall_s`` are seconds.

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; the lake not local; ``serve.ann_factory`` not a FAISS factory string.
        DataError: (exit 3) no model (``version``, else the one the day's export pinned, else the champion) or its
        model missing; keyphrase embeddings missing
            or empty; keyphrase or item embeddings not ``serve.dim`` long, or not vectors (NaN/inf values or all
            zeros: the message names how many and an example id; nothing is built); ``raw/keyphrases`` missing.
        SchemaError: (exit 3) the embeddings or the keyphrases break their contract.
        GateError: (exit 4) recall@K below ``serve.min_recall``: no build is written (the run stats, with
            ``status`` refused, are).
    """
    import numpy as np
    import pandas as pd

    s = settings.serve
    ds = ds_str(ds)
    check_wheel_set()  # one build of ONNX Runtime and FAISS: never a mix of CPU and GPU wheels
    # a cuda that is not there, or a top_k FAISS cannot give on the GPU, fails here, before any work
    require_faiss_device(settings.serve.device, k=settings.serve.top_k)
    import faiss

    lake = Lake.from_settings(settings)
    version = serving_model(settings, ds, version)  # pinned by the day's export
    keyphrase_ids, keyphrase_vecs = load_embeddings(settings, "keyphrases", version, required=True)
    n = len(keyphrase_ids)
    requested = "Flat" if n <= s.exact_index_max else s.ann_factory
    choice = choose_factory(requested, n, s.dim)  # ConfigError for a string FAISS rejects
    if choice.note:
        log.warning("index factory changed for %d keyphrases: %s", n, choice.note)
    factory, exact = choice.factory, choice.exact
    params = {} if exact else search_params_for(factory, settings)
    t0 = time.perf_counter()
    index = build_index(keyphrase_vecs, keyphrase_ids, factory, params)
    build_s = time.perf_counter() - t0
    log.info("built %s index over %d keyphrases (%d-d, trained on %d) in %.1fs", factory, n, s.dim,
             choice.train_sample, build_s)

    # recall queries: a seeded sample of the items, read row group by row group (never the whole catalog)
    item_ids, item_vecs = sample_embeddings(settings, "items", version, s.recall_sample, seed=0)
    rng = np.random.default_rng(0)
    pool = item_vecs if item_vecs is not None else keyphrase_vecs
    queries = pool if len(pool) <= s.recall_sample else pool[rng.choice(len(pool), s.recall_sample, replace=False)]
    k = min(s.top_k, n)
    t0 = time.perf_counter()
    searched = faiss_on_device(index, s.device, k=s.top_k)
    faiss_gpu = searched is not index  # where the search runs (auto keeps HNSW, or a large top_k, on the CPU)
    recall = ann_recall_at_k(searched, keyphrase_vecs, keyphrase_ids, queries, k, device=s.device)
    log.info("recall@%d = %.4f on %d %s queries (floor %.2f)", k, recall, len(queries),
             "item" if item_vecs is not None else "keyphrase", s.min_recall)

    stats = {"model_version": version, "n": int(n), "dim": s.dim, "factory": factory, "exact": exact,
             "factory_requested": requested, "factory_note": choice.note, "train_sample": choice.train_sample,
             "search_params": params, "k": int(k), "ann_recall_at_k": recall, "recall_queries": int(len(queries)),
             "min_recall": s.min_recall, "faiss_gpu": faiss_gpu,
             "build_s": round(build_s, 3), "recall_s": round(time.perf_counter() - t0, 3)}
    if recall < s.min_recall:
        lake.write_run_stats(ds, "index", {**stats, "status": "refused"})
        raise GateError(f"index recall@{k} {recall:.4f} is below serve.min_recall={s.min_recall}: not staged")

    texts = read_parquet(lake.path("keyphrases"), contract="keyphrases")[["keyphrase_id", "text"]]
    idmap = pd.DataFrame({"keyphrase_id": keyphrase_ids}).merge(
        texts.rename(columns={"text": "keyphrase"}).drop_duplicates("keyphrase_id"), on="keyphrase_id", how="left")
    idmap["keyphrase"] = idmap["keyphrase"].fillna("")
    target = index_build_dir(settings, ds)
    with atomic_dir(target) as tmp_uri:
        tmp = Path(local_path(tmp_uri))
        tmp.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(tmp / layout.INDEX_FILE))
        idmap.to_parquet(tmp / layout.INDEX_IDMAP, index=False)
        (tmp / layout.INDEX_META).write_text(json.dumps({**stats, "ds": ds}, indent=2))
    lake.write_run_stats(ds, "index", {**stats, "status": "staged", "path": target})
    return {**stats, "path": target}


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")


def main(settings: Settings, args) -> int:
    """``kp index``: ``run`` for ``--ds``; prints the stats as one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds)))
    return 0



