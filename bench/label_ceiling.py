"""How much can any model gain on a simulated world's noisy labels? The ceiling of ``kp eval-labels``' grade.

``kp eval-labels --world W`` grades every model by ROC AUC against half B's *labels*, a share of which the world
flipped as annotators disagree (``synth_labels``). A model that knew the world's truth would still lose every pair
whose label was flipped, so its AUC against the labels, the **ceiling**, is below 1; issue 25's bar asks each world's
served student for +0.05 over the zero-shot encoder, which is a different share of the room left under the ceiling
on each world.

For each world: its judged pairs (``--pairs``, as ``kp eval-labels --world W --pairs N`` draws them) split by
keyphrase into halves A and B (``eval_labels.split_by_keyphrase``); on B, the share of labels that differ from the
truth, and the ceiling: ROC AUC (scikit-learn) of the truth itself (0/1, ties counted half) against the labels. No
model is run: the zero-shot encoder's AUC on the same half B is read from ``bench/lexical_baseline.py``'s committed
file (the same split; the untrained encoder is fixed), the teachers' and served students' from the ``kp eval-labels``
files of docs/TRAINING.md's hybrid table (``lexical_baseline.served_runs``). Each model's share of the headroom is
``(AUC - zero-shot) / (ceiling - zero-shot)``.

**Simulated** worlds only: a team's own judgments carry no truth beside their labels, so their ceiling is not known
(a second judge on a sample of them would estimate it).

    .venv/bin/python bench/label_ceiling.py --out bench/results/hybrid/label_ceiling.json
    .venv/bin/python bench/label_ceiling.py --table     # docs/TRAINING.md's table from the committed files
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT = REPO / "bench" / "results" / "hybrid" / "label_ceiling.json"
BAR = 0.05  # issue 25: the served student at least this much AUC above the zero-shot encoder


def _lexical_baseline():
    """bench/lexical_baseline.py as a module (its committed files and ``served_runs``)."""
    from bench import lexical_baseline  # the repository root is first on sys.path (above)

    return lexical_baseline


def world_ceiling(world: str, n_pairs: int) -> dict:
    """One world's ``{"world", "pairs", "b_pairs", "b_label_noise", "ceiling_auc"}``: half B's size, the share of its
    labels that are not the truth, and the ROC AUC of the truth against the labels (float, 4 decimals). Raises
    ConfigError (exit 2) for an unknown world; ValueError when half B has one class of labels."""
    from sklearn.metrics import roc_auc_score

    from keyphrase_pipeline.commands.eval_labels import load_pairs, split_halves

    _, b = split_halves(load_pairs(None, world, n_pairs))
    labels, truth = b["label"].to_numpy(dtype=int), b["truth"].to_numpy(dtype=int)
    return {"world": world, "pairs": n_pairs, "b_pairs": len(b), "b_label_noise": round(float((labels != truth).mean()), 4),
            "ceiling_auc": round(float(roc_auc_score(labels, truth)), 4)}


def zero_shot_aucs(baseline_file: Path, n_pairs: int) -> dict[str, float]:
    """world -> the untrained encoder's AUC on half B at full size, from a ``bench/lexical_baseline.py`` file drawn with
    the same ``n_pairs``. Raises ValueError when the file was drawn with another number of pairs (another split)."""
    result = json.loads(baseline_file.read_text())
    if result.get("pairs") != n_pairs:
        raise ValueError(f"{baseline_file}: drawn with {result.get('pairs')} pairs, not {n_pairs}: another split")
    return {row["world"]: row["auc"]["zero_shot"] for row in result["worlds"] if row.get("world")}


def markdown_table(result: dict, runs: dict[tuple[str, int], dict[str, list[float]]]) -> str:
    """docs/TRAINING.md's table: per world of ``result`` (``main``'s) half B's flipped labels, the ceiling, the zero-shot
    encoder, the headroom between them and the share of it the bar asks; then per lexical features' version with
    ``runs`` (``lexical_baseline.served_runs``) the mean teacher's and served student's AUC and share of the headroom
    ("not run" without)."""
    lines = ["| world | half B: pairs, labels flipped | ceiling (the truth graded against the labels) | zero-shot "
             "384-d | headroom | the bar: zero-shot + 0.05, share of the headroom | lexical features | teacher (mean of "
             "seeds), share | student as served (mean of seeds), share |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["worlds"]:
        world, ceiling, zero = row["world"], row["ceiling_auc"], row["zero_shot_auc"]
        room = ceiling - zero
        head = (f"| {world} | {row['b_pairs']}, {row['b_label_noise']:.1%} | {ceiling:.4f} | {zero:.4f} | {room:.4f} | "
                f"{zero + BAR:.4f}, {BAR / room:.0%} |")
        versions = sorted(v for w, v in runs if w == world)
        for version in versions or [None]:
            if version is None:
                lines.append(f"{head} — | not run | not run |")
                continue
            run = runs[(world, version)]
            teacher, student, n = float(np.mean(run["teacher"])), float(np.mean(run["student"])), len(run["student"])
            lines.append(f"{head} v{version} | {teacher:.4f}, {(teacher - zero) / room:.0%} | "
                         f"{student:.4f}, {(student - zero) / room:.0%} ({n} seed{'s' if n > 1 else ''}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="attr,alt,demo,listing,open", help="comma-separated simulated worlds")
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", action="store_true", help="print docs/TRAINING.md's table from the committed files")
    args = ap.parse_args(argv)
    lexical = _lexical_baseline()
    if args.table:
        print(markdown_table(json.loads(RESULT.read_text()), lexical.served_runs()))
        return {}
    zero = zero_shot_aucs(lexical.RESULTS[-1], args.pairs)
    rows = [{**world_ceiling(w, args.pairs), "zero_shot_auc": zero[w]} for w in args.worlds.split(",")]
    result = {"bench": "label_ceiling", "simulated": True, "pairs": args.pairs, "bar": BAR,
              "zero_shot_from": str(lexical.RESULTS[-1].relative_to(REPO)), "worlds": rows,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    print(markdown_table(result, lexical.served_runs()))
    if args.out:
        lexical.write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
