"""Benchmark: peak memory of ``kp recommend``, streamed (``keyphrase_pipeline.stages.recommend.run``) vs the old
load-everything approach (``read_parquet`` + ``np.stack`` + one in-memory result, sorted, then written), at two
catalog sizes, same lake, same index, same run.

Synthetic L2-normalised 64-d item embeddings are written in the embeddings layout
(``embeddings/items/model=<v>/part-*.parquet``: ``id``, ``text_hash``, ``embedding`` list<float32>,
``model_version``, ``embedded_ds``; several files of ``--file-rows`` rows, row groups of ``--row-group``),
and a small exact keyphrase index (``keyphrase_pipeline.models.ann.build_index``, ``Flat``) is staged where
``recommend.load_build`` reads it (``layout.index_build_dir``), one day per size. Each (approach, size)
runs in its own child process, which reports its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
its RSS after imports and index load (the floor both approaches share) and the wall time; a peak that does
not grow with the number of items is what the streamed approach must show. Prints ONE JSON line and
writes ``bench/results/recommend_memory.json``; ``--quick`` writes ``recommend_memory_quick.json`` (ignored
by git) and also ``recommend_memory.json`` unless that holds full-size figures; ``--sizes`` only prints.

    .venv/bin/python bench/recommend_memory.py            # 200,000 and 1,000,000 items
    .venv/bin/python bench/recommend_memory.py --quick    # 20,000 and 100,000 items
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 64


def _settings(lake_root: str, batch_rows: int):
    from keyphrase_pipeline.core.settings import load_settings

    return load_settings(lake_root=lake_root, serve={"dim": DIM, "recommend_batch_rows": batch_rows})


def _unit(rng, n: int):
    import numpy as np

    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_lake(lake_root: str, sizes: list[int], n_keyphrases: int, file_rows: int, row_group: int, batch_rows: int):
    """Stage one index build per size (day ``2026-01-0<i+1>``, model ``bench-<n>``) and its item embeddings;
    returns ``[(n, ds), ...]``. Generates and writes one file at a time (the parent never holds all vectors)."""
    import faiss
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import local_path
    from keyphrase_pipeline.models.ann import build_index

    s = _settings(lake_root, batch_rows)
    rng = np.random.default_rng(0)
    kp_ids = np.arange(1_000_000, 1_000_000 + n_keyphrases, dtype=np.int64)
    index = build_index(_unit(rng, n_keyphrases), kp_ids, "Flat")
    idmap = pd.DataFrame({"keyphrase_id": kp_ids, "keyphrase": [f"keyphrase {i}" for i in range(n_keyphrases)]})
    days = []
    for i, n in enumerate(sizes):
        ds, version = f"2026-01-{i + 1:02d}", f"bench-{n}"
        build = Path(local_path(layout.index_build_dir(s, ds)))
        build.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(build / layout.INDEX_FILE))
        idmap.to_parquet(build / layout.INDEX_IDMAP, index=False)
        meta = {"model_version": version, "n": n_keyphrases, "dim": DIM, "factory": "Flat", "exact": True,
                "search_params": {}, "k": 20, "ann_recall_at_k": 1.0, "ds": ds}
        (build / layout.INDEX_META).write_text(json.dumps(meta))
        emb = Path(local_path(layout.embeddings_dir(s, "items", version)))
        emb.mkdir(parents=True, exist_ok=True)
        for f, start in enumerate(range(0, n, file_rows)):
            m = min(file_rows, n - start)
            vecs = _unit(rng, m)
            ids = np.arange(start + 1, start + m + 1, dtype=np.int64)
            table = pa.table({
                "id": ids,
                "text_hash": pa.array([f"{j:040x}" for j in ids]),
                "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, (m + 1) * DIM, DIM, dtype=np.int32)),
                                                      pa.array(vecs.reshape(-1))),
                "model_version": pa.array([version] * m),
                "embedded_ds": pa.array([ds] * m),
            })
            pq.write_table(table, emb / f"part-{f:05d}.parquet", row_group_size=row_group)
        (emb / "_SUCCESS").write_bytes(b"")
        days.append((n, ds))
    return days


def baseline_run(settings, ds: str) -> dict:
    """The approach ``recommend.run`` replaced: every item embedding of the build's model in one pandas frame,
    stacked into one array, all results concatenated and sorted in memory, then written in one file."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core.contracts import check_pandas
    from keyphrase_pipeline.core.lake import Lake, read_parquet, write_parquet_atomic
    from keyphrase_pipeline.core.layout import embeddings_dir
    from keyphrase_pipeline.models.topk import search_batch
    from keyphrase_pipeline.stages.recommend import load_build

    s = settings.serve
    lake = Lake.from_settings(settings)
    index, keyphrases, meta = load_build(settings, ds)
    items = read_parquet(embeddings_dir(settings, "items", meta["model_version"]), contract="embeddings")
    items = items[items["model_version"] == meta["model_version"]]
    k = min(s.top_k, index.ntotal)
    ids = items["id"].to_numpy(dtype=np.int64)
    vecs = np.stack(items["embedding"].to_numpy()).astype(np.float32)
    parts = [search_batch(index, keyphrases, ids[i:i + s.recommend_batch_rows], vecs[i:i + s.recommend_batch_rows],
                          k, s.score_threshold) for i in range(0, len(ids), s.recommend_batch_rows)]
    out = pd.concat(parts, ignore_index=True)
    out = out.astype({"item_id": "int64", "rank": "int32", "keyphrase_id": "int64", "keyphrase": "object",
                      "score": "float32"}).sort_values(["item_id", "rank"], ignore_index=True)
    check_pandas(out, "recommendations", where="recommendations (to write)")
    write_parquet_atomic(out, lake.path("recommendations", ds=ds))
    return {"rows": int(len(out)), "items_scored": int(len(ids)), "mean_score": float(out["score"].mean())}


def child(mode: str, lake_root: str, ds: str, batch_rows: int) -> dict:
    """One measured run in this (fresh) process; returns its figures (RSS in MiB, seconds)."""
    import psutil

    from keyphrase_pipeline.stages import recommend

    s = _settings(lake_root, batch_rows)
    recommend.load_build(s, ds)  # imports faiss/pandas/pyarrow and reads the index once: the shared floor
    floor = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    stats = recommend.run(s, ds) if mode == "streamed" else baseline_run(s, ds)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    import pyarrow as pa

    arrow_peak = pa.default_memory_pool().max_memory()  # Arrow's own allocations (part of the RSS)
    return {"mode": mode, "ds": ds, "peak_rss_mib": round(peak_kib / 1024, 1), "floor_rss_mib": round(floor / 2**20, 1),
            "above_floor_mib": round(peak_kib / 1024 - floor / 2**20, 1), "wall_s": round(wall, 2),
            "arrow_pool_peak_mib": round(arrow_peak / 2**20, 1), "rows": stats["rows"], "items_scored": stats["items_scored"],
            "mean_score": round(stats["mean_score"], 6),
            **({"batches": stats["batches"], "files": stats.get("files")} if mode == "streamed" else {})}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20,000 and 100,000 items instead of 200,000 and 1,000,000")
    p.add_argument("--sizes", type=int, nargs=2, default=None)
    p.add_argument("--keyphrases", type=int, default=10_000)
    p.add_argument("--batch-rows", type=int, default=20_000, help="serve.recommend_batch_rows (also the baseline's)")
    p.add_argument("--file-rows", type=int, default=50_000, help="items per embeddings file")
    p.add_argument("--row-group", type=int, default=16_384, help="rows per parquet row group of the embeddings")
    p.add_argument("--threads", type=int, default=2, help="FAISS/OpenMP threads in the children")
    p.add_argument("--workdir", default=None, help="where the temporary lake goes (default: a temp dir, removed)")
    p.add_argument("--child", nargs=3, metavar=("MODE", "LAKE", "DS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2], args.batch_rows)))
        return {}

    sizes = args.sizes or ([20_000, 100_000] if args.quick else [200_000, 1_000_000])
    work = Path(tempfile.mkdtemp(prefix="kp-bench-recommend-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        days = build_lake(str(work / "lake"), sizes, args.keyphrases, args.file_rows, args.row_group, args.batch_rows)
        setup_s = time.perf_counter() - t0
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "KP_LOG_LEVEL": "WARNING"}
        runs = []
        for n, ds in days:
            for mode in ("streamed", "baseline"):
                cmd = [sys.executable, __file__, "--child", mode, str(work / "lake"), ds, "--batch-rows", str(args.batch_rows)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise RuntimeError(f"{mode} at {n} items failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append({"items": n, **r})
                print(json.dumps({"run": runs[-1]}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    by = {(r["mode"], r["items"]): r for r in runs}
    small, large = sizes
    for n in sizes:  # both approaches must give the same recommendations
        a, b = by[("streamed", n)], by[("baseline", n)]
        assert a["rows"] == b["rows"] and abs(a["mean_score"] - b["mean_score"]) < 1e-5, (a, b)

    def per_size(key):
        return {mode: {str(n): by[(mode, n)][key] for n in sizes} for mode in ("streamed", "baseline")}

    def growth(mode, key):
        return round(by[(mode, large)][key] - by[(mode, small)][key], 1)

    result = {
        "bench": "recommend_memory", "quick": args.quick, "sizes": sizes, "dim": DIM, "keyphrases": args.keyphrases,
        "top_k": 20, "batch_rows": args.batch_rows, "file_rows": args.file_rows, "row_group": args.row_group,
        "threads": args.threads, "setup_s": round(setup_s, 1),
        "peak_rss_mib": per_size("peak_rss_mib"), "above_floor_mib": per_size("above_floor_mib"),
        "wall_s": per_size("wall_s"),
        "peak_growth_mib": {"streamed": growth("streamed", "peak_rss_mib"), "baseline": growth("baseline", "peak_rss_mib")},
        "items_ratio": round(large / small, 1),
        "runs": runs,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    full = out / "recommend_memory.json"
    if args.sizes is not None:  # a custom run: printed only
        pass
    elif not args.quick:
        full.write_text(text)
    else:  # a --quick run also fills recommend_memory.json (committed), but never replaces full-size figures
        (out / "recommend_memory_quick.json").write_text(text)
        if not full.exists() or json.loads(full.read_text()).get("quick"):
            full.write_text(text)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
