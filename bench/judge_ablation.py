"""What the student gets from each judge: the label-mix ablation of ``kp report`` (CTR-only against LLM+CTR+KD, 3
seeds, the same world, budget and seeds) run under each judge of the training labels, beside how good those
labels are against the world's truth (``kp judge-quality``).

    # the labels of a report's lake against the truth (--as-iid: the iid annotator on the same pairs and seed)
    .venv/bin/python bench/judge_ablation.py --judge-quality /tmp/rep_llm/lake --out /tmp/jq_llm.json
    .venv/bin/python bench/judge_ablation.py --judge-quality /tmp/rep_llm/lake --as-iid --out /tmp/jq_iid.json
    # one result file from the reports and the judge files, then docs/LABELLING.md's table from it
    .venv/bin/python bench/judge_ablation.py --collect \\
        "iid annotator=bench/results/report_ablation_3seeds.json:/tmp/jq_iid.json" ... \\
        --out bench/results/judge_ablation.json
    .venv/bin/python bench/judge_ablation.py --table

**Simulated** world: every truth figure is against the synthetic world's hidden truth; the simulated annotators
are simulated, SmolLM2-135M is a real (weak) LLM judging made-up titles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT = REPO / "bench" / "results" / "judge_ablation.json"
JUDGE_KEYS = ("judge", "judge_model", "pairs", "relevant_share", "auc", "yes_rate", "agreement", "precision", "recall",
              "ece", "threshold")


def judge_quality(lake: str, as_iid: bool = False) -> dict:
    """``labels_vs_truth`` of the label store at ``lake``; with ``as_iid`` the iid simulated annotator's P(yes) on the
    same stored pairs (``simulated_p_yes``, accuracy 0.9, the lake's ``synth.seed``: what a report run under that
    annotator stored, since the first day's pairs do not depend on the judge)."""
    import tempfile

    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.labels.store import read_labels, write_label_table
    from keyphrase_pipeline.synthetic.judge_quality import labels_vs_truth
    from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

    settings = load_settings(lake_root=lake)
    world = World.load(settings)
    if not as_iid:
        return labels_vs_truth(settings, world=world)
    with tempfile.TemporaryDirectory() as tmp:
        copy = load_settings(lake_root=tmp)
        labels = read_labels(settings)
        p = simulated_p_yes(world, labels["item_id"].to_numpy(), labels["keyphrase_id"].to_numpy(),
                            accuracy=0.9, seed=settings.synth.seed, errors="iid")
        relabelled = labels.assign(p_yes=p, label=(p >= settings.judge.threshold).astype("int32"),
                                   judge_model="simulated-annotator-v1 (recomputed on the same pairs)")
        for ds, day in relabelled.groupby("ds"):
            write_label_table(day.drop(columns=["ds"]), Lake.from_settings(copy).path("llm_store", ds=ds))
        return labels_vs_truth(copy, world=world)


def collect(specs: list[str]) -> dict:
    """``NAME=REPORT_JSON:JUDGE_JSON`` per judge -> ``{"runs": [{name, judge (labels vs truth), arms: {mix: truth
    figures mean and std, seeds}}]}``; JUDGE_JSON may be ``-`` when the report recorded ``labels_judge`` itself."""
    runs = []
    for spec in specs:
        name, files = spec.split("=", 1)
        report_file, judge_file = files.rsplit(":", 1)
        report = json.loads(Path(report_file).read_text())
        jq = report.get("labels_judge") if judge_file == "-" else json.loads(Path(judge_file).read_text())
        (judge,) = jq["judges"]
        arms = {}
        for arm in report["ablation"]:
            truth, spread = arm["offline"]["truth"]["all"], arm["spread"]["offline"]["truth"]["all"]
            tail, tail_sd = arm["offline"]["truth"]["tail"], arm["spread"]["offline"]["truth"]["tail"]
            arms[arm["label_mix"]] = {"precision@5": truth["precision@5"], "precision@5_sd": spread["precision@5"],
                                      "recall@20": truth["recall@20"], "recall@20_sd": spread["recall@20"],
                                      "recall@20_tail": tail["recall@20"], "recall@20_tail_sd": tail_sd["recall@20"],
                                      "seeds": arm["seeds"]}
        runs.append({"name": name, "report": report_file, "judge": {k: judge.get(k) for k in JUDGE_KEYS},
                     "label_threshold": judge.get("threshold"), "arms": arms})
    return {"simulated_world": True, "runs": runs}


def markdown_table(result: dict) -> str:
    """docs/LABELLING.md's table, from ``bench/results/judge_ablation.json`` (``--table`` prints it)."""
    head = ("| judge of the training labels | labels vs truth: AUC / yes-rate / agreement / ECE | label mix | "
            "precision@5 | recall@20 | recall@20, rarely exposed |\n|---|---|---|---|---|---|")
    rows = []
    for run in result["runs"]:
        j = run["judge"]
        for mix, a in run["arms"].items():
            rows.append(f"| {run['name']} | {j['auc']:.3f} / {j['yes_rate']:.3f} / {j['agreement']:.3f} / {j['ece']:.3f} "
                        f"| {mix} | {a['precision@5']:.3f} ± {a['precision@5_sd']:.3f} | {a['recall@20']:.3f} ± "
                        f"{a['recall@20_sd']:.3f} | {a['recall@20_tail']:.3f} ± {a['recall@20_tail_sd']:.3f} |")
    return "\n".join([head, *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help=f"print docs/LABELLING.md's table from {RESULT.name}")
    p.add_argument("--judge-quality", metavar="LAKE", help="labels vs truth of a lake's label store")
    p.add_argument("--as-iid", action="store_true", help="with --judge-quality: the iid annotator on the same pairs")
    p.add_argument("--collect", nargs="+", metavar="NAME=REPORT_JSON:JUDGE_JSON")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(RESULT.read_text())))
        return 0
    if args.judge_quality:
        out = judge_quality(args.judge_quality, args.as_iid)
    elif args.collect:
        out = collect(args.collect)
    else:
        p.error("--table, --judge-quality LAKE or --collect")
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
