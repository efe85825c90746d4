"""Benchmark: the training stages' Python memory per training row, so the cost model can carry it to the caps.

The trainers' memory is the model and its optimizer (flat: ``bench/scale.py`` measures it inside the pipeline)
plus the training rows they hold: the LLM labels (``train.max_llm_labels``), the CTR positives
(``train.max_ctr_positives``), the SR labels (``train.max_sr_labels``) and the teacher-scored pairs
(``train.kd_max_pairs``), each with its texts, as a pandas frame and as the ``datasets.Dataset`` the trainer
reads. This bench measures the bytes a row costs on that path, with no model:

* a lake with ``n`` catalog items (titles of 8 words, ~55 characters, as real listing titles), ``n / 5``
  keyphrases, ``n`` CTR positives and 2,000 LLM labels is written once per size;
* a fresh process loads the base encoder's tokenizer, notes its peak RSS, then runs
  ``labels.training_data.load_training_data`` and ``stages.train_bi.build_task_datasets`` (tasks ``ctr`` and
  ``llm``) and notes its peak RSS again; the difference is what the rows cost;
* bytes per row: the difference between the smallest and the largest size over the difference in the trainer's
  dataset rows (the per-process constant cancels). Both sizes must be well above
  ``models.text.UNREADABLE_CHUNK`` (10,000 texts), whose working set is part of the constant: ``--quick``'s
  5,000 and 20,000 rows are a smoke run and its figure overstates the cost (~7 KB a row against ~1.1 KB).

    .venv/bin/python bench/training_memory.py                     # 50,000 and 500,000 rows (~3 min)
    .venv/bin/python bench/training_memory.py --quick             # 5,000 and 20,000
    .venv/bin/python bench/training_memory.py --sizes 20000,200000 --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DS = "2026-10-10"
WORDS = ("vintage leather wallet slim card holder men brown genuine bifold wireless bluetooth headphones noise "
         "cancelling over ear stainless steel water bottle insulated kids toddler shoes running trail women "
         "ceramic coffee mug large handmade blue cotton bedding queen size duvet cover set").split()


def write_lake(root: Path, n: int, llm_rows: int = 2_000, seed: int = 0) -> None:
    """A lake at ``root``: catalog (``n`` items), keyphrases (``n // 5``), ctr_labels (``n`` positives) and a label
    store day (``llm_rows``), all on ``DS``."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
    from keyphrase_pipeline.labels.store import text_hash

    lake = Lake(str(root))
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    titles = [" ".join(r) for r in words[rng.integers(0, len(words), (n, 8))]]
    cats = [f"category {i % 300}" for i in range(n)]
    m = max(1, n // 5)
    kps = [" ".join(r) for r in words[rng.integers(0, len(words), (m, 3))]]
    write_parquet_atomic(pd.DataFrame({"item_id": np.arange(n, dtype="int64"), "title": titles, "category": cats,
                                       "updated_at": pd.Timestamp("2026-10-01"), "active": True}),
                         lake.path("catalog", ds=DS))
    write_parquet_atomic(pd.DataFrame({"keyphrase_id": np.arange(m, dtype="int64"), "text": kps}),
                         lake.path("keyphrases"))
    write_parquet_atomic(pd.DataFrame({"item_id": np.arange(n, dtype="int64"),
                                       "keyphrase_id": (np.arange(n) % m).astype("int64"),
                                       "impressions": np.int64(100), "clicks": np.int64(9), "ctr": 0.09,
                                       "label": np.int32(1)}), lake.path("ctr_labels", ds=DS))
    idx = rng.integers(0, n, llm_rows)
    kid = idx % m
    llm = pd.DataFrame({"item_id": idx.astype("int64"), "keyphrase_id": kid.astype("int64"),
                        "title": [titles[i] for i in idx], "category": [cats[i] for i in idx],
                        "keyphrase": [kps[k] for k in kid], "source": "random",
                        "p_yes": rng.random(llm_rows), "judge": "simulated", "judge_model": "sim",
                        "prompt_version": "v1", "labelled_at": pd.Timestamp("2026-10-10 01:00:00")})
    llm["label"] = (llm["p_yes"] > 0.5).astype("int32")
    llm["text_hash"] = [text_hash(t, c, k) for t, c, k in zip(llm["title"], llm["category"], llm["keyphrase"])]
    llm["pair_key"] = llm["text_hash"] + "-sim"
    write_parquet_atomic(llm, lake.path("llm_store", ds=DS))


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(lake_root: str) -> dict:
    """In this process: peak RSS after the tokenizer, then after the training rows are loaded and turned into the
    trainer's datasets (MB), and the rows."""
    from keyphrase_pipeline.core.settings import Settings
    from keyphrase_pipeline.labels.training_data import encoder_tokenizer, load_training_data
    from keyphrase_pipeline.stages.train_bi import build_task_datasets

    settings = Settings().with_overrides(**{"lake_root": lake_root, "train.max_ctr_positives": 10 ** 9})
    import datasets  # noqa: F401  (imported before the baseline: its import is not what the rows cost)

    encoder_tokenizer(settings)
    base = _peak_mb()
    t0 = time.perf_counter()
    data = load_training_data(settings, DS, need_sr=False)
    sets = build_task_datasets(data, ["ctr", "llm"])
    return {"base_peak_mb": round(base, 1), "peak_mb": round(_peak_mb(), 1), "ctr_rows": len(data.ctr),
            "llm_rows": len(data.llm), "dataset_rows": sum(len(d) for d in sets.values()),
            "load_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Python bytes per training row (rows + texts + datasets); see the "
                                "module docstring.")
    p.add_argument("--quick", action="store_true", help="sizes 5,000 and 20,000 (a smoke run), to "
                   "training_memory_quick.json")
    p.add_argument("--sizes", default=None, help="CTR positives (= catalog items) per run (default 50000,500000)")
    p.add_argument("--out", default=None, help="result file (default bench/results/training_memory[_quick].json)")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: measure the lake at this path
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    sizes = [int(x) for x in (args.sizes or ("5000,20000" if args.quick else "50000,500000")).split(",")]
    if len(sizes) < 2:
        p.error("--sizes needs two sizes or more: the figure is the slope between the smallest and the largest")
    args.out = args.out or str(ROOT / "bench" / "results" / f"training_memory{'_quick' if args.quick else ''}.json")
    lines = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with tempfile.TemporaryDirectory(prefix="kp-train-mem-") as tmp:
        for n in sizes:
            root = Path(tmp) / f"lake_{n}"
            write_lake(root, n)
            out = subprocess.run([sys.executable, __file__, "--measure", str(root)], env=env, capture_output=True,
                                 text=True, check=True)
            line = {"items": n, **json.loads(out.stdout.strip().splitlines()[-1])}
            line["rows_mb"] = round(line["peak_mb"] - line["base_peak_mb"], 1)
            print(json.dumps(line), file=sys.stderr, flush=True)
            lines.append(line)
    a, b = lines[0], lines[-1]
    per_row = (b["rows_mb"] - a["rows_mb"]) * 2 ** 20 / max(1, b["dataset_rows"] - a["dataset_rows"])
    doc = {"bench": "training_memory", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sizes": sizes,
           "lines": lines, "bytes_per_training_row": round(per_row, 1), "cpus": os.cpu_count(), "quick": args.quick,
           "what": "load_training_data + build_task_datasets (ctr, llm), no model; 8-word titles"}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"bytes per training row: {per_row:,.0f} -> {args.out}"
          + (" (a smoke run: sizes this small overstate it, see the docstring)" if min(sizes) < 50_000 else ""),
          file=sys.stderr)
    print(json.dumps({"bytes_per_training_row": doc["bytes_per_training_row"], "results_file": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
