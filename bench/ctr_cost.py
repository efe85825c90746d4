"""Cost of the CTR model stage on 2 cores: seconds per training step, held-out evaluation seconds and peak memory of
``kp train-ctr`` at demo scale (3,000 items) and at 100,000 items, and with 4x the pairs at 100,000 items (the
training data is streamed: peak memory should not follow the pairs).

Each size is a lake built here without the pipeline (what the stage reads, nothing else): ``items`` x 64-d and
``keyphrases`` x 64-d clustered random embeddings registered as a student, 12 days of ``ctr_position_daily`` with
``rows`` (item, keyphrase, position) rows a day from a simple click process (cosine + an item effect + position).
The figures are the stage's cost on such data, not a model-quality result. Each run is a separate process with the
same budget (``max_steps``), so time per step and memory compare across sizes (peak RSS: the child's own ``VmHWM``).

    python bench/ctr_cost.py             # 3 sizes, ~5 min on 2 cores
    python bench/ctr_cost.py --quick     # tiny sizes (the tests)

Writes ``bench/results/ctr_cost.json`` (``ctr_cost_quick.json`` for --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = [{"name": "demo scale", "items": 3_000, "keyphrases": 3_000, "rows_per_day": 100_000},
         {"name": "100k items", "items": 100_000, "keyphrases": 50_000, "rows_per_day": 100_000},
         {"name": "100k items, 4x pairs", "items": 100_000, "keyphrases": 50_000, "rows_per_day": 400_000}]
QUICK = [{"name": "tiny", "items": 400, "keyphrases": 300, "rows_per_day": 3_000},
         {"name": "tiny, 4x pairs", "items": 400, "keyphrases": 300, "rows_per_day": 12_000}]
DAYS, END, DIM = 12, "2026-10-12", 64


def build_lake(root: Path, items: int, keyphrases: int, rows_per_day: int, seed: int = 0) -> None:
    """The lake of one size (module docstring): embeddings of student ``v1`` (the champion) and the days' rows."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake, ds_range, write_parquet_atomic
    from keyphrase_pipeline.core.settings import load_settings

    s = load_settings(lake_root=str(root))
    lake = Lake.from_settings(s)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, DIM)).astype("float32")

    def vectors(n):
        v = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, DIM)).astype("float32")
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    iv, kv = vectors(items), vectors(keyphrases)
    for what, vecs in (("items", iv), ("keyphrases", kv)):
        write_parquet_atomic(pd.DataFrame({"id": np.arange(1, len(vecs) + 1, dtype=np.int64), "text_hash": "",
                                           "embedding": list(vecs), "model_version": "v1"}),
                             layout.embeddings_dir(s, what, "v1"))
    mdir = Path(layout.model_dir(s, "v1"))
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "README").write_text("random clustered embeddings (bench/ctr_cost.py)\n")
    lake.write_pointer(layout.registry_pointer(s, "students"), "v1")
    effect = rng.normal(0, 0.5, items)
    for day in ds_range(END, DAYS):
        ii = rng.integers(0, items, rows_per_day)
        kk = rng.integers(0, keyphrases, rows_per_day)
        pos = rng.integers(1, 11, rows_per_day)
        imps = rng.integers(1, 30, rows_per_day)
        z = -3.0 + 3.0 * (iv[ii] * kv[kk]).sum(1) + effect[ii]
        clicks = rng.binomial(imps, 1 / (1 + np.exp(-z)) * pos ** -0.8)
        df = pd.DataFrame({"item_id": ii + 1, "keyphrase_id": kk + 1, "position": pos.astype(np.int32),
                           "impressions": imps.astype(np.int64), "clicks": clicks.astype(np.int64)})
        df = df.groupby(["item_id", "keyphrase_id", "position"], as_index=False)[["impressions", "clicks"]].sum()
        df["position"] = df["position"].astype(np.int32)
        write_parquet_atomic(df.sort_values(["item_id", "keyphrase_id", "position"]),
                             lake.path("ctr_position_daily", ds=day))


CHILD = """
import json, sys, time
from keyphrase_pipeline.core.settings import load_settings
from keyphrase_pipeline.stages import train_ctr
s = load_settings(lake_root=sys.argv[1], ctr={"window_days": %d},
                  ctr_model={"max_steps": int(sys.argv[2]), "epochs": 100.0, "batch_rows": 8192, "use_image": False})
t0 = time.perf_counter()
stats = train_ctr.run(s, "%s")
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))  # kB, this process's peak
print("RESULT " + json.dumps({"peak_rss_mb": round(hwm / 1024, 1), "steps": stats["steps"],
      "training_rows": stats["training_rows"],
      "train_seconds": stats["train_seconds"], "seconds": round(time.perf_counter() - t0, 2),
      "heldout_rows": stats["heldout"]["rows"], "auc": stats["heldout"]["challenger"]["all"]["auc"]}))
""" % (DAYS, END)


def measure(root: Path, steps: int) -> dict:
    """One ``train_ctr.run`` in a child process: its stats and its own peak RSS (MB, ``VmHWM`` of
    ``/proc/self/status`` read by the child at its end: Linux)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(steps)], capture_output=True, text=True,
                         cwd=str(ROOT), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"train_ctr failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 200; --quick 10)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else SIZES
    steps = args.steps or (10 if args.quick else 200)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("ctr_cost_quick.json" if args.quick
                                                                        else "ctr_cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    lines = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="kp-ctr-cost-") as tmp:
            t0 = time.perf_counter()
            build_lake(Path(tmp) / "lake", size["items"], size["keyphrases"], size["rows_per_day"])
            built = time.perf_counter() - t0
            got = measure(Path(tmp) / "lake", steps)
        line = {"bench": "ctr_cost", "quick": args.quick, **size, "days": DAYS, "steps_asked": steps,
                "lake_build_seconds": round(built, 1), **got,
                "seconds_per_step": round(got["train_seconds"] / max(got["steps"], 1), 4),
                "data": "random clustered embeddings and a simple click process (cost only, not model quality)"}
        print(json.dumps(line), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        lines.append(line)
    print(json.dumps({"bench": "ctr_cost", "results_file": str(out)}), flush=True)
    return lines


if __name__ == "__main__":
    main()
