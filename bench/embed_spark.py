"""Benchmark: does ``kp embed`` (Spark ``mapInPandas`` + ONNX Runtime) use the cores it is given?

Same texts, same exported tower (the real all-MiniLM-L6-v2 base encoder, ``serve.dim`` 64, fp32), same run:

- baseline: the tower in-process (``keyphrase_pipeline.models.onnx_tower.OnnxTower``), one session with
  ``--cores`` intra-op threads: the best one process can do on this machine;
- ours: ``keyphrase_pipeline.stages.embed.run(full=True)`` on ``local[<cores>]``, timed from after the
  source texts are read to the checked output (inference, the shuffle into output files, the atomic
  write and the read-back check); the JVM start and the source pass are excluded;

Reports rows/s of each, the Spark/in-process ratio (the issue's floor: >= 0.8), and the inference tasks
and distinct Python worker processes the run stats recorded. Prints one JSON line and writes
``bench/results/embed_spark.json`` (``embed_spark_quick.json`` with ``--quick``).

    .venv/bin/python bench/embed_spark.py            # 6000 items
    .venv/bin/python bench/embed_spark.py --quick    # 800 items
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

DS = "2026-10-01"


def build_lake(root: Path, n_items: int, cores: int, batch_size: int):
    """Settings for a lake at ``root`` holding ``n_items`` catalog rows, a keyphrase list and the base encoder
    registered and exported as the champion ``v0`` at 64-d."""
    import pandas as pd
    from embed import make_texts

    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.models.base import default_encoder_path
    from keyphrase_pipeline.stages import export

    settings = load_settings(lake_root=str(root), spark={"master": f"local[{cores}]", "driver_memory": "2g"},
                             serve={"dim": 64, "quantize": False, "embed_batch_size": batch_size})
    titles, kps = make_texts(n_items, 200)
    lake = Lake.from_settings(settings)
    write_parquet_atomic(pd.DataFrame({
        "item_id": pd.Series(range(1, n_items + 1), dtype="int64"),
        "title": [t.split(" [SEP] ")[0] for t in titles], "category": [t.split(" [SEP] ")[-1] for t in titles],
        "updated_at": pd.Timestamp(DS), "active": True}), lake.path("catalog", ds=DS))
    write_parquet_atomic(pd.DataFrame({"keyphrase_id": pd.Series(range(len(kps)), dtype="int64"), "text": kps,
                                       "search_volume": pd.Series([10] * len(kps), dtype="int64")}),
                         lake.path("keyphrases"))
    model = Path(lake.path("registry", "students", "v0", "model"))
    shutil.copytree(default_encoder_path(), model)
    (model.parent / "train_config.json").write_text(json.dumps({"matryoshka_dims": [384, 64]}))
    registry.set_champion(settings, "v0", "benchmark: the base encoder")
    export.run(settings, version="v0")
    return settings


def timed_embed(settings, spark) -> tuple[float, dict]:
    """Seconds of inference, vector check and write (``write_seconds`` in the stats) and the stats, for a full embed."""
    from keyphrase_pipeline.stages import embed

    stats = embed.run(settings, DS, "items", full=True, spark=spark)
    return stats["write_seconds"], stats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    from keyphrase_pipeline.core.lake import Lake, read_parquet
    from keyphrase_pipeline.core.layout import onnx_dir
    from keyphrase_pipeline.core.spark import get_spark
    from keyphrase_pipeline.models.onnx_tower import OnnxTower
    from keyphrase_pipeline.models.text import item_text

    n_items = 800 if args.quick else 6000
    with tempfile.TemporaryDirectory() as tmp:
        settings = build_lake(Path(tmp) / "lake", n_items, args.cores, args.batch_size)
        lake = Lake.from_settings(settings)
        cat = read_parquet(lake.path("catalog", ds=DS))
        texts = [item_text(t, c) for t, c in zip(cat["title"], cat["category"])]
        tower = OnnxTower(f"{onnx_dir(settings, 'v0')}/item", threads=args.cores)
        tower.embed(texts[:64])
        in_process = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tower.embed(texts, batch_size=args.batch_size)
            in_process = min(in_process, time.perf_counter() - t0)

        spark = get_spark(settings, "bench-embed-spark")
        timed_embed(settings, spark)  # warm-up: Python workers started, sessions cached
        ours, stats = min((timed_embed(settings, spark) for _ in range(args.repeats)), key=lambda r: r[0])

        spark.stop()

    result = {
        "bench": "embed_spark", "quick": args.quick, "n_items": n_items, "cores": args.cores,
        "batch_size": args.batch_size, "dim": 64,
        "in_process_per_s": round(n_items / in_process, 1), "spark_per_s": round(n_items / ours, 1),
        "ratio_spark_vs_in_process": round(in_process / ours, 3),
        "inference_tasks": stats["inference_tasks"], "inference_workers": stats["inference_workers"],
        "session_threads": stats["session_threads"],
        "target": {"ratio_spark_vs_in_process": 0.8},
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / ("embed_spark_quick.json" if args.quick else "embed_spark.json")).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
