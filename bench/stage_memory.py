"""Benchmark: peak memory of each item-bound serving stage, run alone, at three catalog sizes; the Python side, the
Spark JVM and PySpark's workers apart.

The whole daily pipeline (``bench/scale.py``) takes hours on two cores at 300,000 items; the stages whose memory
could grow with the number of items are run here on their own, each as its ``kp`` subprocess as an Airflow task
runs it, on a lake built for the purpose:

* a catalog of ``N`` items (short titles: ``<word> <word> <word> item <i>``) and ``--keyphrases`` keyphrases (held
  fixed, so that what grows with the items is seen alone; the index is the one structure that grows with the
  keyphrases, docs/SERVING.md);
* a **tiny random encoder** (``keyphrase_pipeline.models.tiny``, 2 layers, hidden 32, ``serve.dim`` 16) as the
  champion, exported with ``kp export``: a PROXY for the real student. What these stages hold per item (ids, a
  16-d or 64-d vector, top-K rows) does not depend on the network; the ONNX session's size does, and it is the same
  at every size;
* day 1: ``embed --what items`` (every item), ``embed --what keyphrases``, ``index``, ``recommend`` (every item
  searched), ``publish``; day 2 (1% of the titles changed): ``embed --what items`` (reuse bookkeeping: 99% reused),
  ``index``, ``recommend --changed-only`` (1% searched, 99% carried over), ``publish``;
* ``lookup``: 200 item ids looked up in the published bundle (``ServingBundle.search(item_id)``, what the
  Keyphrases page and the serving reader do), with the bytes read;
* ``evaluate_catalog``: ``stages.evaluate.topk_change`` (the evaluation's reads of the catalog and keyphrases,
  seeded samples) with the tiny encoder as both models.

Each stage's process tree is sampled every ``--interval`` s (``bench/scale.py``'s ``TreeSampler``):
``python_peak_rss_mb`` (the ``kp`` process), ``jvm_peak_rss_mb`` (its Spark driver JVM, ``spark.master``
``local[2]``: the executors run in it), ``worker_peak_rss_mb`` (PySpark's Python workers, summed). The summary
gives, per stage and side, ``growth_10x`` (peak at the size 10x the smallest over the smallest; flat when at most
1.5) and ``bytes_per_item`` (the peak's slope from the smallest to the largest size).

    .venv/bin/python bench/stage_memory.py                       # 10,000 / 100,000 / 300,000 items (~25 min, 2 cores)
    .venv/bin/python bench/stage_memory.py --quick               # 2,000 / 20,000 items: stage_memory_quick.json
    .venv/bin/python bench/stage_memory.py --set serve.publish_bucket_rows=200000 \
        --set serve.recommend_carry_bucket_items=50000 --out bench/results/stage_memory_small_buckets.json
                                                                 # buckets small enough to be many at every size

Writes ``bench/results/stage_memory.json`` (``{"lines", "summary", "settings", "created_at"}``); docs/PERFORMANCE.md's
memory table and the cost model's memory column come from it (``bench/scale_report.py --write``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SIZES = (10_000, 100_000, 300_000)
WORDS = ["red", "blue", "pro", "max", "mini", "vintage", "new", "sealed", "lego", "nike", "apple", "mixer", "boots",
         "case", "black", "leather", "usb", "cable", "steel", "oak", "wireless", "charger", "kids", "dress"]
CATS = ["phones", "shoes", "toys", "kitchen", "garden", "tools", "fashion", "computers"]
D1, D2 = "2026-03-01", "2026-03-02"
SIDES = ("python_peak_rss_mb", "jvm_peak_rss_mb", "worker_peak_rss_mb")
# stage -> the argv after `kp`, per day; lookup and evaluate_catalog run a Python snippet instead
DAY1 = [("embed_items", ["embed", "--ds", D1, "--what", "items"]),
        ("embed_keyphrases", ["embed", "--ds", D1, "--what", "keyphrases"]),
        ("index", ["index", "--ds", D1]), ("recommend", ["recommend", "--ds", D1]), ("publish", ["publish", "--ds", D1])]
DAY2 = [("embed_items", ["embed", "--ds", D2, "--what", "items"]), ("index", ["index", "--ds", D2]),
        ("recommend", ["recommend", "--ds", D2, "--changed-only"]), ("publish", ["publish", "--ds", D2])]

LOOKUP = """
import json, sys, numpy as np
from keyphrase_pipeline.core.settings import get_settings
from keyphrase_pipeline.artifacts import serving
b = serving.load_current(get_settings())
ids = np.random.default_rng(0).integers(1, {n} + 1, 200)
read, groups, found = 0, 0, 0
for i in ids:
    st = {{}}
    found += len(b.recommendations_of(int(i), stats=st))
    read, groups = read + st["bytes_read"], groups + st["row_groups_read"]
print(json.dumps({{"lookups": len(ids), "rows_found": found, "bytes_read_per_lookup": read / len(ids),
                  "row_groups_per_lookup": groups / len(ids)}}))
"""
EVALUATE = """
import json
from keyphrase_pipeline.core.settings import get_settings
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.stages import evaluate
s = get_settings()
d = layout.model_dir(s, "v1")
print(json.dumps(evaluate.topk_change(s, "{ds}", d, d)))
"""


def _scale():
    from bench import scale  # the repository root is first on sys.path (above)

    return scale


def write_inputs(settings, n_items: int, n_keyphrases: int, changed_share: float = 0.01) -> None:
    """Day 1's and day 2's catalogs (day 2: ``changed_share`` of the titles rewritten) and the keyphrases, written in
    files of 100,000 rows so no step holds the whole catalog twice."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic

    lake = Lake.from_settings(settings)
    rng = np.random.default_rng(n_items)
    w = np.array(WORDS)
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    picks = rng.integers(0, len(WORDS), (n_items, 3))
    titles = pd.Series(w[picks[:, 0]]) + " " + w[picks[:, 1]] + " " + w[picks[:, 2]] + " item " + pd.Series(ids).astype(str)
    cat = pd.DataFrame({"item_id": ids, "title": titles, "category": np.array(CATS)[ids % len(CATS)],
                        "updated_at": pd.Timestamp("2026-02-28"), "active": True})
    write_parquet_atomic(cat, lake.path("catalog", ds=D1))
    changed = rng.random(n_items) < changed_share
    cat2 = cat.copy()
    cat2.loc[changed, "title"] = "renewed " + cat2.loc[changed, "title"]
    write_parquet_atomic(cat2, lake.path("catalog", ds=D2))
    k = np.arange(n_keyphrases)
    kp = pd.DataFrame({"keyphrase_id": k.astype(np.int64) + 1_000_000,
                       "text": pd.Series(w[k % len(WORDS)]) + " " + w[(k * 7 + 3) % len(WORDS)] + " " + np.array(CATS)[k % len(CATS)]
                       + " " + pd.Series(k).astype(str),
                       "search_volume": (k % 1000).astype(np.int64)})
    write_parquet_atomic(kp, lake.path("keyphrases"))


def run_size(n: int, args, workdir: Path, scale, model_src: str) -> list[dict]:
    """Build the lake for ``n`` items and measure each stage; the lines (stage, items, day, peaks, wall, result)."""
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.layout import model_dir
    from keyphrase_pipeline.core.settings import load_settings, settings_env

    root = workdir / f"items_{n}" / "lake"
    settings = load_settings(lake_root=str(root)).with_overrides(**{
        "serve.dim": 16, "serve.quantize": False, "train.matryoshka_dims": [32, 16], "spark.master": args.master,
        "truth_provider": "", "ctr_model.enabled": False, **overrides(args)})
    log = lambda msg: print(f"[stage_memory {n}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    write_inputs(settings, n, args.keyphrases)
    lake = Lake.from_settings(settings)
    dst = Path(model_dir(settings, "v1"))  # registry/students/v1/model, as `kp train-bi` registers a student
    shutil.copytree(model_src, dst)
    (dst.parent / "train_config.json").write_text(json.dumps({"matryoshka_dims": [32, 16]}))
    lake.write_pointer(lake.path("registry", "CHAMPION"), "v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KP_")}
    env.update(settings_env(settings))
    env.update({"PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")})
    logs = workdir / f"items_{n}" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"inputs written in {time.time() - t0:.0f} s")

    def measure(stage: str, day: int, cmd: list[str]) -> dict:
        m = scale.measure_command(cmd, env=env, interval=args.interval, timeout_s=args.stage_timeout,
                                  stdout_path=logs / f"d{day}_{stage}.out", stderr_path=logs / f"d{day}_{stage}.err",
                                  cwd=ROOT)
        line = {"stage": stage, "items": n, "day": day, "wall_s": m["wall_s"], "cpu_s": m["cpu_s"],
                **{k: m[k] for k in SIDES}, "peak_rss_mb": m["peak_rss_mb"], "tree_peak_rss_mb": m["tree_peak_rss_mb"],
                "load_1m": m["load_1m"], "result": scale.parse_stdout_json(m["stdout"])}
        if m["returncode"] != 0:
            line["error"] = {"returncode": m["returncode"], "stderr_tail": m["stderr"][-3000:]}
        log(f"day {day} {stage}: rc={m['returncode']} wall={m['wall_s']}s python={m['python_peak_rss_mb']} "
            f"jvm={m['jvm_peak_rss_mb']} workers={m['worker_peak_rss_mb']} MB")
        return line

    kp = scale.kp_command()
    setup = measure("export", 0, kp + ["export", "--ds", D1])
    lines = [setup]
    if "error" in setup:
        return lines
    for day, plan in ((1, DAY1), (2, DAY2)):
        for stage, argv in plan:
            line = measure(stage, day, kp + argv)
            lines.append(line)
            if "error" in line:
                return lines
    lines.append(measure("lookup", 2, [sys.executable, "-c", LOOKUP.format(n=n)]))
    lines.append(measure("evaluate_catalog", 2, [sys.executable, "-c", EVALUATE.format(ds=D2)]))
    return lines


def overrides(args) -> dict:
    """``--set KEY=VALUE`` as settings overrides (values parsed as JSON when they are, else strings)."""
    out = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def summarize(lines: list[dict], flat: float = 1.5) -> dict:
    """Per (stage, day) and side: the peaks by size, ``growth_10x`` (peak at the smallest size x10, when measured,
    over the smallest; else None), ``growth_largest`` (largest over smallest) and ``bytes_per_item`` (slope smallest to
    largest, bytes); ``flat``: every side's ``growth_10x`` at most ``flat`` (None where not measured)."""
    ok = [ln for ln in lines if "error" not in ln and ln.get("day")]
    out: dict = {}
    for key in sorted({(ln["stage"], ln["day"]) for ln in ok}, key=lambda k: (k[1], [ln["stage"] for ln in ok].index(k[0]))):
        by = {ln["items"]: ln for ln in ok if (ln["stage"], ln["day"]) == key}
        sizes = sorted(by)
        rec: dict = {"sizes": sizes}
        for side in SIDES:
            peaks = [by[s][side] for s in sizes]
            rec[side] = peaks
            if len(sizes) < 2:
                continue
            lo, hi = sizes[0], sizes[-1]
            ten = by.get(lo * 10)
            rec[f"{side}_growth_10x"] = round(ten[side] / by[lo][side], 3) if ten and by[lo][side] > 0 else None
            rec[f"{side}_growth_largest"] = round(by[hi][side] / by[lo][side], 3) if by[lo][side] > 0 else None
            rec[f"{side}_bytes_per_item"] = round((by[hi][side] - by[lo][side]) * 2 ** 20 / (hi - lo), 1)
        growths = [rec.get(f"{s}_growth_10x") for s in SIDES if rec.get(s) and max(rec[s]) > 0]
        rec["flat"] = None if any(g is None for g in growths) or not growths else all(g <= flat for g in growths)
        out[f"{key[0]}@day{key[1]}"] = rec
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Peak memory of each item-bound serving stage, run alone at three "
                                "catalog sizes (Python, JVM and PySpark workers apart); see the module docstring.")
    p.add_argument("--quick", action="store_true", help="sizes 2,000 and 20,000, 3,000 keyphrases (a smoke run)")
    p.add_argument("--sizes", default=None, help=f"comma-separated item counts (default {','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--keyphrases", type=int, default=None, help="keyphrases, held fixed (default 20,000)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every stage (e.g. serve.publish_bucket_rows=200000), recorded in the result")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--stage-timeout", type=float, default=3600)
    p.add_argument("--workdir", default=None, help="where the lakes go (kept); default: a temporary folder, removed")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder's lakes")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in (args.sizes or ("2000,20000" if args.quick else ",".join(map(str, DEFAULT_SIZES)))).split(","))
    args.keyphrases = args.keyphrases or (3000 if args.quick else 20_000)
    quick = tuple(sizes) != DEFAULT_SIZES or bool(args.set)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("stage_memory_quick.json" if quick else "stage_memory.json")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="kp-stage-memory-"))
    scale = _scale()
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model_src = build_tiny_encoder(workdir / "tiny_model", hidden=32, seed=1)
    t0 = time.time()
    lines: list[dict] = []
    try:
        for n in sizes:
            lines += run_size(n, args, workdir, scale, model_src)
            for ln in lines:
                if ln["items"] == n and "error" in ln:
                    print(json.dumps(ln), file=sys.stderr)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    from keyphrase_pipeline.core.settings import Settings

    defaults = Settings().with_overrides(**overrides(args))
    doc = {"bench": "stage_memory", "lines": lines, "summary": summarize(lines), "sizes": sizes,
           "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "settings": {"keyphrases": args.keyphrases, "master": args.master, "interval_s": args.interval,
                        "cpus": os.cpu_count(), "serve_dim": 16, "encoder": "tiny random (PROXY: 2 layers, hidden 32)",
                        "spark_driver_memory": defaults.spark.driver_memory,
                        "recommend_batch_rows": defaults.serve.recommend_batch_rows,
                        "recommend_carry_bucket_items": defaults.serve.recommend_carry_bucket_items,
                        "publish_bucket_rows": defaults.serve.publish_bucket_rows,
                        "lookup_row_group_rows": defaults.serve.lookup_row_group_rows,
                        "target_file_rows": defaults.spark.target_file_rows, "overrides": overrides(args)},
           "ok": all("error" not in ln for ln in lines), "wall_s_total": round(time.time() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"summary": doc["summary"], "ok": doc["ok"], "results_file": str(out)}))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
