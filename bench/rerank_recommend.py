"""`kp recommend` with and without the cross-encoder re-rank (``serve.rerank_depth``), or the student's hybrid score
(``--setting hybrid_depth``: ``serve.hybrid_depth``), on a lake `make demo` made: its wall time and pairs/s, and the
served lists graded against the demo world's truth.

Each depth runs ``keyphrase_pipeline.stages.recommend.run`` for the lake's last recommended day on a hard-linked copy
of the lake (the lake itself is not written), with the demo's settings (``run_settings.demo_overrides``) and
``serve.rerank_depth`` set; depth 0 (the student's order, the default) is the baseline of the same run. The teacher
is the served student's own (its ``train_config.json``'s ``cross_version``). Every searched item with at least one
truly relevant keyphrase is graded: precision@k (truly relevant share of the top k, k = 1, 5, 10, 20) and recall@20
(truly relevant in the top 20 over min(20, their number)); each depth's difference from depth 0 is paired on the
same items, with a 95% bootstrap interval over items (1,000 resamples).

**Simulated**: the demo world's titles, keyphrases and truth, and models trained at the demo's small budget on its
simulated judge; one training run (the demo's), so the intervals cover the items, not the models' seeds.

    make demo
    .venv/bin/python bench/rerank_recommend.py --lake var/lake --depths 0,20,40 \\
        --out bench/results/rerank/demo_recommend.json
    .venv/bin/python bench/rerank_recommend.py --lake var/lake --setting hybrid_depth --depths 0,50 \\
        --out bench/results/hybrid/demo_recommend.json

With ``--setting hybrid_depth`` the re-rank stays off and depth 0 serves the student's cosine order; the served
student must have kept a hybrid score (its ``kp_model.json``), else every depth serves the cosine order.

Not run by ``bench/run_all.py`` (it needs a demo lake and about 5 minutes per 60,000 pairs on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KS = (1, 5, 10, 20)
RESAMPLES = 1000


def grade(recs, relevant: dict) -> dict:
    """Per-item metrics of served lists against the truth.

    Args:
        recs: pandas frame with ``item_id`` and ``keyphrase_id`` in rank order per item (``rank`` column).
        relevant: item_id -> int64 array of its truly relevant keyphrase ids.
    Returns:
        ``{"items": int64 (n,), "p@k": float64 (n,) for k in KS, "recall@20": float64 (n,)}`` over the items of
        ``recs`` with at least one relevant keyphrase, sorted by item id; precision divides by k even when a list is
        shorter (a missing row is not a relevant one).
    """
    items, cols = [], {f"p@{k}": [] for k in KS} | {"recall@20": []}
    for item, g in recs.sort_values(["item_id", "rank"]).groupby("item_id", sort=True):
        rel = relevant.get(int(item))
        if rel is None or not len(rel):
            continue
        hit = np.isin(g["keyphrase_id"].to_numpy(), rel)
        items.append(int(item))
        for k in KS:
            cols[f"p@{k}"].append(hit[:k].sum() / k)
        cols["recall@20"].append(hit[:20].sum() / min(20, len(rel)))
    return {"items": np.asarray(items, dtype=np.int64), **{m: np.asarray(v, dtype=np.float64) for m, v in cols.items()}}


def paired(base: np.ndarray, other: np.ndarray, seed: int = 0) -> dict:
    """Mean of ``other - base`` (float arrays ``(n,)``, paired by item, n >= 1) and its 95% bootstrap interval over
    items. ValueError when there is no item."""
    if not len(base):
        raise ValueError("no graded item: nothing to compare")
    diff = other - base
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(RESAMPLES, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"mean": round(float(diff.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def markdown_table(result: dict) -> str:
    """The committed result as a markdown table: one row per depth, means and (depth > 0) the paired difference."""
    metrics = [f"p@{k}" for k in KS] + ["recall@20"]
    setting = result.get("setting", "rerank_depth")
    rate_of = "hybrid_pairs_per_s" if setting == "hybrid_depth" else "rerank_pairs_per_s"
    what = "hybrid score pairs/s" if setting == "hybrid_depth" else "cross-encoder pairs/s"
    lines = [f"| `serve.{setting}` | seconds | {what} | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for run in result["runs"]:
        cells = []
        for m in metrics:
            cell = f"{run['metrics'][m]:.3f}"
            if run["depth"]:
                d = run["vs_depth_0"][m]
                cell += f" ({d['mean']:+.3f}, {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})"
            cells.append(cell)
        rate = run["stats"].get(rate_of)
        rate = f"{rate:.0f}" if rate else ""
        lines.append(f"| {run['depth'] or '0 (off)'} | {run['seconds']:.0f} | {rate} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings(lake: Path, depth: int, setting: str = "rerank_depth"):
    from keyphrase_pipeline.orchestration.run_settings import settings_for

    # a demo-mode DAG run's settings (its training budget, judge and truth provider), on ``lake``, ``setting`` at
    # ``depth`` (with hybrid_depth: the re-rank off)
    extra = {"serve.rerank_depth": 0} if setting == "hybrid_depth" else {}
    return settings_for({"scale": "demo"}).with_overrides(**{"lake_root": str(lake), f"serve.{setting}": depth, **extra})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", default="var/lake", help="a lake `make demo` made (read, never written)")
    p.add_argument("--ds", default=None, help="the day to recommend (default: the lake's last recommended day)")
    p.add_argument("--depths", default="0,20,40", help="comma-separated values of --setting; 0 is added")
    p.add_argument("--setting", default="rerank_depth", choices=("rerank_depth", "hybrid_depth"),
                   help="which serve.* depth the runs vary (default rerank_depth)")
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from keyphrase_pipeline.core.lake import Lake, read_parquet
    from keyphrase_pipeline.core.truth import load_truth
    from keyphrase_pipeline.stages import recommend

    lake = Path(args.lake).resolve()
    if not (lake / "registry" / "CHAMPION").exists():
        print(f"no demo lake at {lake}: run `make demo` first", file=sys.stderr)
        return 2
    depths = sorted({0, *(int(d) for d in args.depths.split(",") if d.strip())})
    if depths[0] < 0:
        print("--depths must be >= 0", file=sys.stderr)
        return 2
    days = Lake.from_settings(_settings(lake, 0, args.setting)).partitions("recommendations")
    ds = args.ds or (days[-1] if days else None)
    if ds is None:
        print(f"{lake} has no recommendations: run `make demo` first", file=sys.stderr)
        return 2

    runs, graded, relevant = [], {}, None
    for depth in depths:
        with tempfile.TemporaryDirectory(prefix="rerank_recommend_", dir=lake.parent) as tmp:
            copy = Path(tmp) / "lake"
            subprocess.run(["cp", "-al", str(lake), str(copy)], check=True)  # hard links: recommend replaces, never edits
            s = _settings(copy, depth, args.setting)
            t0 = time.perf_counter()
            stats = recommend.run(s, ds)
            seconds = time.perf_counter() - t0
            recs = read_parquet(Lake.from_settings(s).path("recommendations", ds=ds), contract="recommendations")
            if relevant is None:
                truth = load_truth(s)
                if truth is None:
                    print(f"{lake} has no ground truth (truth_provider): a demo lake is needed", file=sys.stderr)
                    return 2
                relevant = truth.relevant_keyphrases(np.unique(recs["item_id"].to_numpy()))
            graded[depth] = grade(recs, relevant)
            shutil.rmtree(copy, ignore_errors=True)
        g = graded[depth]
        run = {"depth": depth, "seconds": round(seconds, 1), "items_graded": int(len(g["items"])),
               "metrics": {m: round(float(v.mean()), 4) for m, v in g.items() if m != "items"},
               "stats": {k: v for k, v in stats.items() if k.startswith(("rerank_", "hybrid_")) or k in
                         ("model_version", "items_scored", "rows", "top_k", "score_threshold", "rank_by")}}
        if depth:
            base = graded[0]
            assert np.array_equal(base["items"], g["items"]), "the same items must be graded at every depth"
            run["vs_depth_0"] = {m: paired(base[m], g[m]) for m in g if m != "items"}
        runs.append(run)
        print(json.dumps(run), flush=True)

    result = {"bench": "rerank_recommend", "simulated": True, "lake": str(lake), "ds": ds, "setting": args.setting,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
              "resamples": RESAMPLES, "runs": runs}
    print(markdown_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
