"""What does the rotation before the Matryoshka cut (``train.cut_rotation``, ``models.cut_rotation``) buy a trained
student? Applied afterwards, with ``train_bi``'s own code, to students kept by ``kp eval-labels --keep``.

For each kept run (a ``--keep`` folder of ``kp eval-labels``: ``half_a.parquet``, ``student-<seed>/``, and its result
JSON for the teacher's figures) the student's training split is rebuilt from half A exactly as ``kp train-bi
--labels`` split it (``training_data.load_training_data``), the rotation is fitted on its relevant train pairs and
kept only when its held-out AUC at ``serve.dim`` does not drop (``train_bi._rotate_before_cut``), then half B is
scored at ``serve.dim`` with and without it. The students were trained without the rotation (it is applied after
training, as ``train_bi`` applies it), so the figures are those of today's recipe.

**Simulated** worlds: figures about the recipe on synthetic judgments, not about real data.

    .venv/bin/python bench/cut_rotation.py --run listing:3:/tmp/exp2/listing_v2_defaults:/tmp/exp2/listing_v2_defaults.json \
        --out bench/results/distill_sweep/cut_rotation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyphrase_pipeline.core.settings import load_settings  # noqa: E402


def one_run(world: str, seed: int, keep: Path, result: dict, n_pairs: int) -> dict:
    """Half B AUC at serve.dim of one kept student, without and with the cut rotation, beside its teacher."""
    from sklearn.metrics import roc_auc_score

    from keyphrase_pipeline.commands.eval_labels import load_pairs, split_halves
    from keyphrase_pipeline.labels.training_data import load_training_data
    from keyphrase_pipeline.models.bi_encoder import load_student, score_pairs
    from keyphrase_pipeline.stages.train_bi import _rotate_before_cut

    _, b = split_halves(load_pairs(None, world, n_pairs))
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(lake_root=tmp, train={"device": "cpu", "seed": seed})
        data = load_training_data(settings, "2026-12-05", labels=str(keep / "half_a.parquet"))
        dim = settings.serve.dim
        model = load_student(str(keep / f"student-{seed}" / "model"), "cpu")

        def heldout(m):
            t = data.llm_test
            return score_pairs(m, t["title"].tolist(), t["category"].tolist(), t["keyphrase"].tolist(), dim=dim)

        rotated, record, _ = _rotate_before_cut(settings, model, data.llm_train, heldout, data.llm_test)

        def auc_b(m, d):
            return float(roc_auc_score(b["label"], score_pairs(m, b["title"].tolist(), b["category"].tolist(),
                                                               b["keyphrase"].tolist(), dim=d)))

        metrics = next(p for p in result["per_seed"] if int(p["seed"]) == seed)["metrics"]
        teacher = metrics["cross"]["auc"]
        plain, full = auc_b(model, dim), auc_b(model, None)
        served = auc_b(rotated, dim)
    return {"world": world, "seed": seed, "kept": str(keep), "rotation": record, "teacher_auc": teacher,
            "zero_shot_auc": metrics["zero_shot"]["auc"], "student_auc_full": full, "student_auc_cut": plain,
            "student_auc_cut_rotated": served, "gap_cut": teacher - plain, "gap_cut_rotated": teacher - served,
            "gain": served - plain}


RESULT = REPO / "bench" / "results" / "distill_sweep" / "cut_rotation.json"


def markdown_table(result: dict) -> str:
    """docs/TRAINING.md's table of the cut rotation, from a result file of this script (``--table`` prints it)."""
    head = ("| world | seed | teacher | student 384-d | student 64-d | held-out AUC at 64-d (train split) | "
            "64-d, rotation | gap to the teacher at 64-d |\n|---|---|---|---|---|---|---|---|")
    rows = [f"| {x['world']} | {x['seed']} | {x['teacher_auc']:.3f} | {x['student_auc_full']:.3f} | "
            f"{x['student_auc_cut']:.3f} | {x['rotation']['heldout_auc_before']:.3f} -> "
            f"{x['rotation']['heldout_auc_after']:.3f} ({'kept' if x['rotation']['applied'] else 'not kept'}) | "
            f"{x['student_auc_cut_rotated']:.3f} | {x['gap_cut']:.3f} -> {x['gap_cut_rotated']:.3f} |"
            for x in result["runs"]]
    return "\n".join([head, *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help=f"print docs/TRAINING.md's table from {RESULT.name} and exit")
    p.add_argument("--run", action="append",
                   help="WORLD:SEED:KEEP_DIR:RESULT_JSON of one kept `kp eval-labels` run (repeat)")
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(RESULT.read_text())))
        return 0
    if not args.run or not args.out:
        p.error("--run and --out are needed (or --table)")
    rows = []
    for spec in args.run:
        world, seed, keep, result = spec.split(":")
        row = one_run(world, int(seed), Path(keep), json.loads(Path(result).read_text()), args.pairs)
        print(json.dumps(row), flush=True)
        rows.append(row)
    import numpy as np

    gains = [r["gain"] for r in rows]
    out = {"simulated": True, "runs": rows, "pairs": args.pairs, "machine": platform.node(),
           "summary": {"n": len(rows), "gain_mean": float(np.mean(gains)), "gain_min": float(np.min(gains)),
                       "gain_max": float(np.max(gains)),
                       "gap_cut_mean": float(np.mean([r["gap_cut"] for r in rows])),
                       "gap_cut_rotated_mean": float(np.mean([r["gap_cut_rotated"] for r in rows]))}}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
