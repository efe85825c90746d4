"""Top-K keyphrases per item from the day's index build, above a score threshold.

Parallelism: process-level batches. The driver loads the index once and searches item embeddings in
batches of ``QUERY_BATCH``; FAISS spreads each batch's search over all cores with OpenMP, which on one
machine is as fast as Spark tasks would be without loading the index once per worker. (For catalogs
too large for one machine, the same ``search_batch`` function can run inside ``mapInPandas`` over item
partitions; the ``spark`` argument is accepted for that and unused here.)

``changed_only=True`` searches only the items embedded today (``embedded_ds == ds``) and carries the
other items' rows over from the latest earlier recommendations, so the output stays a complete
snapshot. Output: ``recommendations/ds=D/`` (contract ``recommendations``), written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, ds_str, local_path, write_parquet_atomic

log = logging.getLogger(__name__)

QUERY_BATCH = 20_000


def load_build(settings, ds: str):
    """(index, id -> keyphrase text frame, meta) of the day's staged build.

    The frame has ``keyphrase_id`` (int64) and ``keyphrase`` (str); ``meta`` is ``index_meta.json``. Raises
    DataError (exit 3) when there is no build for ``ds`` or its dimension is not ``serve.dim``; ConfigError
    (exit 2) on a non-local lake."""
    import faiss
    import pandas as pd

    from keyphrase_pipeline.models.ann import set_search_params
    from keyphrase_pipeline.core.layout import index_build_dir

    root = Path(local_path(index_build_dir(settings, ds)))
    if not (root / layout.INDEX_META).exists():
        raise DataError(f"no index build for {ds} at {root}: run `kp index --ds {ds}`")
    meta = json.loads((root / layout.INDEX_META).read_text())
    index = faiss.read_index(str(root / layout.INDEX_FILE))
    if index.d != settings.serve.dim:
        raise DataError(f"dimension mismatch: index of {ds} is {index.d}-d, serve.dim={settings.serve.dim}")
    set_search_params(index, meta.get("search_params", {}))
    keyphrases = pd.read_parquet(root / layout.INDEX_IDMAP)
    return index, keyphrases, meta


def search_batch(index, keyphrases, item_ids, vectors, k: int, threshold: float):
    """Recommendations frame for a batch of items (ranks 1..k, rows below ``threshold`` dropped).

    ``item_ids``: int ``(n,)``; ``vectors``: float32 ``(n, index.d)``, L2-normalised; ``threshold``: a cosine in
    [-1, 1]. Returns a pandas DataFrame with the ``recommendations`` columns: ``item_id`` int64, ``rank`` int32
    (1 = best), ``keyphrase_id`` int64, ``keyphrase`` str ("" when not in ``keyphrases``), ``score`` float32."""
    import numpy as np
    import pandas as pd

    scores, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    n = len(item_ids)
    df = pd.DataFrame({
        "item_id": np.repeat(np.asarray(item_ids, dtype=np.int64), k),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
        "keyphrase_id": ids.reshape(-1).astype(np.int64),
        "score": scores.reshape(-1).astype(np.float32),
    })
    df = df[(df["keyphrase_id"] >= 0) & (df["score"] >= threshold)]
    text = dict(zip(keyphrases["keyphrase_id"], keyphrases["keyphrase"]))
    df = df.assign(keyphrase=df["keyphrase_id"].map(text).fillna(""))
    return df[["item_id", "rank", "keyphrase_id", "keyphrase", "score"]]


def run(settings, ds: str, changed_only: bool = False, spark=None) -> dict:
    """Write ``recommendations/ds=D/``; return items scored / carried over and rows written.

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; the lake not local.
        DataError: (exit 3) no index build for ``ds``; item embeddings of the build's model missing or empty; a
            dimension mismatch between index, ``serve.dim`` and item embeddings.
        SchemaError: (exit 3) the embeddings, the previous recommendations (``changed_only``) or the output break
            their contract.
    """
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.models.ann import maybe_gpu
    from keyphrase_pipeline.core.layout import embeddings_dir
    from keyphrase_pipeline.core.contracts import check_pandas
    from keyphrase_pipeline.core.lake import read_parquet

    ds = ds_str(ds)
    s = settings.serve
    lake = Lake.from_settings(settings)
    index, keyphrases, meta = load_build(settings, ds)
    version = meta["model_version"]
    emb_path = embeddings_dir(settings, "items", version)
    if not lake.exists(emb_path):
        raise DataError(f"missing item embeddings of model {version} at {emb_path}: run `kp embed --what items`")
    items = read_parquet(emb_path, contract="embeddings")
    items = items[items["model_version"] == version]
    if items.empty:
        raise DataError(f"no item embeddings of model {version} in {emb_path}")

    carried = pd.DataFrame(columns=["item_id", "rank", "keyphrase_id", "keyphrase", "score"])
    prev_days = [d for d in lake.partitions("recommendations") if d < ds]
    if changed_only and prev_days and "embedded_ds" in items.columns:
        todo = items[items["embedded_ds"] == ds]
        prev = read_parquet(lake.path("recommendations", ds=prev_days[-1]), contract="recommendations")
        keep = set(items["id"]) - set(todo["id"])
        carried = prev[prev["item_id"].isin(keep)][carried.columns]
    else:
        todo = items
    k = min(s.top_k, index.ntotal)
    search_index = maybe_gpu(index, s.device)
    parts = []
    ids = todo["id"].to_numpy(dtype=np.int64)
    vecs = np.stack(todo["embedding"].to_numpy()).astype(np.float32) if len(todo) else np.zeros((0, s.dim), np.float32)
    if vecs.shape[1] != index.d:
        raise DataError(f"dimension mismatch: item embeddings are {vecs.shape[1]}-d, index is {index.d}-d")
    for start in range(0, len(ids), QUERY_BATCH):
        parts.append(search_batch(search_index, keyphrases, ids[start:start + QUERY_BATCH], vecs[start:start + QUERY_BATCH],
                                  k, s.score_threshold))
        log.info("searched %d / %d items", min(start + QUERY_BATCH, len(ids)), len(ids))
    fresh = pd.concat(parts, ignore_index=True) if parts else carried.iloc[0:0]
    out = pd.concat([fresh, carried], ignore_index=True) if len(carried) else fresh
    out = out.astype({"item_id": "int64", "rank": "int32", "keyphrase_id": "int64", "keyphrase": "object",
                      "score": "float32"}).sort_values(["item_id", "rank"], ignore_index=True)
    check_pandas(out, "recommendations", where="recommendations (to write)")
    target = lake.path("recommendations", ds=ds)
    write_parquet_atomic(out, target)
    per_item = out.groupby("item_id").size()
    stats = {"model_version": version, "items_scored": int(len(ids)), "items_carried": int(carried["item_id"].nunique()),
             "rows": int(len(out)), "items_with_recs": int(len(per_item)),
             "mean_recs_per_item": float(per_item.mean()) if len(per_item) else 0.0,
             "mean_score": float(out["score"].mean()) if len(out) else 0.0, "top_k": int(k),
             "score_threshold": s.score_threshold, "changed_only": bool(changed_only)}
    lake.write_run_stats(ds, "recommend", stats)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")
    parser.add_argument("--changed-only", action="store_true",
                        help="search only items embedded today; carry the rest over from the last recommendations")


def main(settings, args) -> int:
    """``kp recommend``: ``run`` for ``--ds`` (``--changed-only``: only items embedded today); prints the stats as
    one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.core.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds, changed_only=args.changed_only)))
    return 0
