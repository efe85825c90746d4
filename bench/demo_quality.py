"""Does the demo's champion still beat a CTR-only student against the synthetic truth?

``kp demo`` retrains on its last day with a warm start (the champion and ``CROSS_LATEST`` of an earlier day,
``keyphrase_pipeline.orchestration.run_settings.DEMO_TRAIN_BUDGET``: 60 cross-encoder and 100 student steps instead of
150 and 250 from the base encoder). This script checks what that costs in quality, on the lake a demo left:

* every model given (``--model NAME=DIR``; default: the lake's champion) is evaluated with
  ``keyphrase_pipeline.stages.evaluate.evaluate_model`` on the day's stable held-out LLM pairs and against the
  world's TRUE relevance (F1, AUC, recall@K of truly relevant keyphrases for head and rarely exposed tail items:
  the figures the DAG's evaluate stage logs);
* a CTR-only student (``label_mix=ctr``) is trained from the base encoder at the demo's cold budget
  (``--ctr-steps``, 250) once per seed (``--seeds``) into a temp directory (the registry and the day's run
  stats are left as they were) and evaluated the same way: mean and sample std over seeds.

The truth is the demo world's own (the result names the judge of the lake's labels, ``label_judges``: the SIMULATED
annotator unless the demo ran with a real judge): this compares models inside one synthetic world, it says nothing
about real data. Prints a markdown table and writes
``bench/results/demo_quality.json`` (``--out``).

    .venv/bin/python bench/demo_quality.py --lake var/lake
    .venv/bin/python bench/demo_quality.py --lake var/lake --model cold_day3=/other/lake/registry/students/V/model
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyphrase_pipeline.core import layout  # noqa: E402
from keyphrase_pipeline.core.lake import Lake  # noqa: E402
from keyphrase_pipeline.core.settings import load_settings  # noqa: E402

FIGURES = (("llm", "f1"), ("llm", "auc"), ("truth", "f1"), ("truth", "auc"),
           ("relevance_recall_at_k", "tail", "relevance_recall_at_k"),
           ("relevance_recall_at_k", "head", "relevance_recall_at_k"))
NAMES = ("F1 vs LLM", "AUC vs LLM", "F1 vs truth", "AUC vs truth", "recall@20 tail", "recall@20 head")


def _pick(metrics: dict, path: tuple):
    for key in path:
        metrics = (metrics or {}).get(key)
    return metrics


def figures(metrics: dict) -> dict:
    """The compared figures of one ``evaluate_model`` result, keyed by ``NAMES``."""
    return {name: _pick(metrics, path) for name, path in zip(NAMES, FIGURES)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", required=True, help="the lake a `kp demo` run left (its KP_LAKE_ROOT)")
    ap.add_argument("--ds", default=None, help="the day to evaluate on (default: the lake's newest day of events)")
    ap.add_argument("--model", action="append", default=[], help="NAME=DIR of a student to evaluate (repeatable; "
                    "default: the lake's champion)")
    ap.add_argument("--seeds", default="1,2,3", help="seeds of the CTR-only students ('' for none)")
    ap.add_argument("--ctr-steps", type=int, default=250, help="CTR-only student steps (the demo's cold budget)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "demo_quality.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.labels.training_data import load_training_data
    from keyphrase_pipeline.orchestration import run_settings
    from keyphrase_pipeline.stages import train_bi
    from keyphrase_pipeline.stages.evaluate import evaluate_model
    from keyphrase_pipeline.synthetic.report import restore_day_stats

    settings = load_settings().with_overrides(**{"lake_root": str(Path(args.lake).resolve()),
                                                 "truth_provider": run_settings.DEMO_TRUTH_PROVIDER,
                                                 **run_settings.DEMO_TRAIN_BUDGET})
    lake = Lake.from_settings(settings)
    days = lake.partitions("events")
    if not days or not lake.exists(layout.synth_world_meta_path(lake)):
        raise SystemExit(f"{settings.lake_root} holds no demo world (raw events and the world's metadata): "
                         "pass the KP_LAKE_ROOT a `kp demo` run used")
    ds = args.ds or days[-1]
    from keyphrase_pipeline.core.errors import KPError

    try:
        data = load_training_data(settings, ds, need_ctr=False, need_sr=False)
    except KPError as exc:
        raise SystemExit(f"cannot evaluate on {ds}: {exc}") from None
    from keyphrase_pipeline.core.truth import load_truth

    world = load_truth(settings)
    models = dict(m.split("=", 1) for m in args.model)
    if not models:
        champ = registry.champion(settings)
        if not champ:
            raise SystemExit(f"{settings.lake_root} has no champion yet: run `kp demo` first, or pass --model NAME=DIR")
        models = {f"champion {champ}": layout.model_dir(settings, champ)}
    from keyphrase_pipeline.labels.store import read_labels

    stored = read_labels(settings, upto_ds=ds)
    judges = sorted({f"{j}/{m}" for j, m in zip(stored["judge"], stored["judge_model"])})
    result = {"lake": str(Path(args.lake).resolve()), "ds": ds, "llm_test_rows": len(data.llm_test),
              "label_judges": judges, "simulated": f"labels by {', '.join(judges)} (a judge 'simulated/...' is the "
              "SIMULATED annotator); truth = the synthetic world's", "models": {}, "ctr_only": {}}
    for name, path in models.items():
        t0 = time.perf_counter()
        result["models"][name] = {"dir": path, **figures(evaluate_model(settings, path, ds=ds, data=data, world=world))}
        logging.info("%s evaluated in %.0f s", name, time.perf_counter() - t0)

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    stats_path = lake.run_stats_path(ds, "train_bi")  # training a student here must not replace the day's stats
    saved = lake.read_json(stats_path, default=None) if lake.exists(stats_path) else None
    per_seed = []
    try:
        with tempfile.TemporaryDirectory(prefix="kp-demo-quality-") as tmp:
            for seed in seeds:
                s = settings.with_overrides(**{"train.seed": seed, "train.bi_max_steps": args.ctr_steps,
                                               "train.init_from": "base"})
                t0 = time.perf_counter()
                out = train_bi.run(s, ds, label_mix="ctr", out=f"{tmp}/ctr_{seed}")
                per_seed.append({"seed": seed, "steps": out["steps"], "train_s": round(time.perf_counter() - t0, 1),
                                 **figures(evaluate_model(s, f"{tmp}/ctr_{seed}/model", ds=ds, data=data, world=world))})
    finally:
        restore_day_stats(lake, stats_path, saved)
    if per_seed:
        result["ctr_only"] = {"seeds": seeds, "steps": args.ctr_steps, "per_seed": per_seed, **{
            name: {"mean": statistics.mean(r[name] for r in per_seed),
                   "sd": statistics.stdev(r[name] for r in per_seed) if len(per_seed) > 1 else None}
            for name in NAMES}}

    lines = ["| model | " + " | ".join(NAMES) + " |", "|---" * (len(NAMES) + 1) + "|"]
    for name, r in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[n]:.3f}" if r[n] is not None else "-" for n in NAMES) + " |")
    if per_seed:
        c = result["ctr_only"]
        lines.append(f"| CTR only, {args.ctr_steps} steps, seeds {args.seeds} | " + " | ".join(
            f"{c[n]['mean']:.3f} ± {c[n]['sd'] or 0:.3f}" for n in NAMES) + " |")
    result["table"] = "\n".join(lines)
    print(result["table"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
