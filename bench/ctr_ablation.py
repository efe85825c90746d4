"""What each part of the CTR model buys: held-out AUC and log-loss of ``kp train-ctr`` with its parts switched on
one at a time, 3 seeds each, overall and on cold items (no training impression) and warm ones.

Configurations (``CONFIGS``): IDs only; + semantics (the student's embeddings); + semantic IDs; a 4-expert mixture
without the de-correlation loss; with it; + the image column. Each runs ``stages.train_ctr.run`` on the same lake,
the same days (the window's last ``holdout_days`` held out) and the same budget, with ``CTR_CHAMPION`` cleared
before each run so every configuration is gated against the position prior only (its figures are what matters here).

The lake: ``--lake`` one that ``kp demo`` (or ``make demo``) left: its champion's item and keyphrase embeddings
and ``ctr_position_daily`` from ``kp ctr-labels`` (the semantics are then the *distilled student's*); without
``--lake``, a fresh demo world whose embeddings come from the untrained base encoder cut to ``serve.dim`` (said in
the results: ``semantics``). The world is simulated (``synthetic.synth``: its click process is written
independently of the model, ``item_click_factors``); the figures guard against mistakes, they do not say what a
real catalog gets.

    python bench/ctr_ablation.py --lake /path/to/demo/lake          # ~15 min on 2 cores
    python bench/ctr_ablation.py --quick --lake LAKE                # 1 seed, 2 configurations, few steps
    python bench/ctr_ablation.py --table                            # the docs' table from the results file

Writes ``bench/results/ctr_ablation.json`` (JSON lines: one per run, then one summary per configuration;
``ctr_ablation_quick.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = {"ctr_model.use_image": False, "ctr_model.experts": 1, "ctr_model.decorrelation_weight": 0.0}
CONFIGS = {
    "ids_only": {**BASE, "ctr_model.use_semantics": False, "ctr_model.use_semantic_ids": False},
    "+semantics": {**BASE, "ctr_model.use_semantic_ids": False},
    "+semantic_ids": {**BASE},
    "moe_4": {**BASE, "ctr_model.experts": 4},
    "moe_4_decorrelated": {**BASE, "ctr_model.experts": 4, "ctr_model.decorrelation_weight": 0.1},
    "+image": {**BASE, "ctr_model.experts": 4, "ctr_model.decorrelation_weight": 0.1, "ctr_model.use_image": True},
}
BUDGET = {"ctr_model.epochs": 8.0, "ctr_model.max_steps": 600, "ctr_model.batch_rows": 8192}
QUICK_BUDGET = {"ctr_model.epochs": 1.0, "ctr_model.max_steps": 20, "ctr_model.batch_rows": 1024,
                "ctr_model.sid_bits": 3}
STUDENT = "bench-base-encoder"  # the version name of the base-encoder embeddings (no --lake)


def base_encoder_lake(work: Path, scale: str):
    """A fresh demo world with ``ctr_position_daily`` (kp ctr-labels) and the base encoder's embeddings registered as
    student ``STUDENT``: (settings, last day)."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake, read_parquet, write_parquet_atomic
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.models.base import default_encoder_path
    from keyphrase_pipeline.models.text import item_text
    from keyphrase_pipeline.stages import ctr_labels
    from keyphrase_pipeline.synthetic import synth

    s = load_settings(lake_root=str(work / "lake"), synth={"scale": scale})
    synth.run(s)
    lake = Lake.from_settings(s)
    last = lake.partitions("events")[-1]
    ctr_labels.run(s, last)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(default_encoder_path(), device="cpu")
    cat = read_parquet(lake.path("catalog", ds=last))
    kps = read_parquet(lake.path("keyphrases"))
    for what, ids, texts in (("items", cat["item_id"], [item_text(t, c) for t, c in zip(cat["title"], cat["category"])]),
                             ("keyphrases", kps["keyphrase_id"], kps["text"].tolist())):
        vecs = model.encode(texts, batch_size=128, convert_to_numpy=True)[:, :s.serve.dim]
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype("float32")
        write_parquet_atomic(pd.DataFrame({"id": ids.to_numpy("int64"), "text_hash": "", "embedding": list(vecs),
                                           "model_version": STUDENT}), layout.embeddings_dir(s, what, STUDENT))
    mdir = Path(layout.model_dir(s, STUDENT))
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "README").write_text("embeddings of the untrained base encoder (bench/ctr_ablation.py)\n")
    lake.write_pointer(layout.registry_pointer(s, "students"), STUDENT)  # the student the days serve
    return s, last, STUDENT


def run(args) -> list[dict]:
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.stages import train_ctr

    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        "ctr_ablation_quick.json" if args.quick else "ctr_ablation.json")
    seeds = [int(x) for x in args.seeds.split(",")][:1 if args.quick else None]
    configs = {k: CONFIGS[k] for k in (("ids_only", "+semantic_ids") if args.quick else CONFIGS)}
    budget = QUICK_BUDGET if args.quick else BUDGET
    with tempfile.TemporaryDirectory(prefix="kp-ctr-ablation-") as tmp:
        work = Path(tmp)
        if args.lake:
            shutil.copytree(args.lake, work / "lake", ignore=shutil.ignore_patterns(  # what train_ctr does not read
                "serving", "quarantine", "pairs", "events", "sr_labels", "ctr_daily", "ctr_labels", "llm_labels",
                "recommendations"))
            s = load_settings(lake_root=str(work / "lake"))
            lake = Lake.from_settings(s)
            last = lake.partitions("ctr_position_daily")[-1]
            student = registry.champion(s)
            semantics = f"the champion student {student} of the lake given (distilled)"
        else:
            s, last, student = base_encoder_lake(work, args.scale)
            semantics = "the untrained base encoder all-MiniLM-L6-v2 cut to serve.dim (not a distilled student)"
        lines = []
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
        for name, overrides in configs.items():
            for seed in seeds:
                pointer = Path(layout.registry_pointer(s, "ctr"))
                pointer.unlink(missing_ok=True)  # gated against the position prior only: independent runs
                cs = s.with_overrides(**{**overrides, **budget, "ctr_model.seed": seed})
                t0 = time.perf_counter()
                stats = train_ctr.run(cs, last, version=student)
                h = stats["heldout"]
                line = {"bench": "ctr_ablation", "quick": args.quick, "config": name, "seed": seed, "ds": last,
                        "semantics": semantics, "simulated_world": True, "parts": stats["parts"],
                        "experts": stats["experts"], "decorrelation_weight": stats["decorrelation_weight"],
                        "steps": stats["steps"], "training_rows": stats["training_rows"],
                        "seconds": round(time.perf_counter() - t0, 1),
                        **{f"{part}_{metric}": h["challenger"][part][metric] for part in ("all", "cold_items", "warm_items")
                           for metric in ("auc", "log_loss")},
                        **{f"prior_{part}_{metric}": h["position_prior"][part][metric]
                           for part in ("all", "cold_items", "warm_items") for metric in ("auc", "log_loss")},
                        "cold_rows": h["cold_rows"], "rows": h["rows"], "expert_correlation": h["expert_correlation"]}
                print(json.dumps(line), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                lines.append(line)
        for summary in summarize(lines, semantics):
            print(json.dumps(summary), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(summary) + "\n")
            lines.append(summary)
    print(json.dumps({"bench": "ctr_ablation", "results_file": str(out)}), flush=True)
    return lines


def summarize(runs: list[dict], semantics: str) -> list[dict]:
    """One summary per configuration of ``runs`` (its run lines), in order: mean and sd over its seeds."""
    out = []
    for name in dict.fromkeys(x["config"] for x in runs if "config" in x):
        mine = [x for x in runs if x.get("config") == name]
        summary = {"bench": "ctr_ablation", "quick": mine[0]["quick"], "summary": name, "seeds": len(mine),
                   "semantics": semantics}
        for key in ("all_auc", "all_log_loss", "cold_items_auc", "cold_items_log_loss", "warm_items_auc",
                    "expert_correlation", "seconds"):
            vals = [x[key] for x in mine if x[key] is not None]
            summary[key] = {"mean": round(statistics.fmean(vals), 5) if vals else None,
                            "sd": round(statistics.stdev(vals), 5) if len(vals) > 1 else None}
        out.append(summary)
    return out


def _fmt(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(path: Path) -> str:
    """The docs' markdown table from a results file (its run lines): one row per configuration, mean ± sd over
    its seeds."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    runs = [r for r in rows if "config" in r]
    summaries = summarize(runs, runs[0]["semantics"]) if runs else []

    def cell(v, digits=4):
        if v["mean"] is None:
            return "–"
        return f"{v['mean']:.{digits}f}" + (f" ± {v['sd']:.{digits}f}" if v["sd"] is not None else "")

    out = ["| configuration | AUC (all) | log-loss (all) | AUC (cold items) | log-loss (cold items) | AUC (warm items) "
           "| expert correlation | seconds |", "|---|---|---|---|---|---|---|---|"]
    if runs:
        r0 = runs[0]
        out.append(f"| position prior (no model) | {r0['prior_all_auc']:.4f} | {r0['prior_all_log_loss']:.5f} | "
                   f"{_fmt(r0.get('prior_cold_items_auc'), 4)} | {_fmt(r0.get('prior_cold_items_log_loss'), 5)} | "
                   f"{_fmt(r0.get('prior_warm_items_auc'), 4)} | – | – |")
    for r in summaries:
        out.append(f"| {r['summary']} | {cell(r['all_auc'])} | {cell(r['all_log_loss'], 5)} | {cell(r['cold_items_auc'])} "
                   f"| {cell(r['cold_items_log_loss'], 5)} | {cell(r['warm_items_auc'])} | "
                   f"{cell(r['expert_correlation'], 3)} | {cell(r['seconds'], 0)} |")
    if runs:
        out.append(f"\nPosition prior: the training days' CTR at each position. {runs[0]['rows']} held-out rows "
                   f"({runs[0]['cold_rows']} of cold items); semantics: {runs[0]['semantics']}; "
                   f"{summaries[0]['seeds'] if summaries else 0} seeds per configuration (mean ± sd).")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", default=None, help="a lake `kp demo` left (its champion's embeddings and ctr_position_daily)")
    p.add_argument("--scale", default="demo", help="without --lake: the synthetic world's scale")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 configurations, 20 steps (the tests)")
    p.add_argument("--out", default=None)
    p.add_argument("--table", action="store_true", help="print the docs' table from the results file and exit")
    args = p.parse_args(argv)
    if args.table:
        path = Path(args.out) if args.out else ROOT / "bench" / "results" / "ctr_ablation.json"
        print(table(path))
        return []
    return run(args)


if __name__ == "__main__":
    main()
