"""The student's ceiling on a world: can the bi-encoder reproduce its teacher on the very pairs it is graded on?

A diagnostic, not a recipe. ``kp eval-labels`` trains on half A and grades on half B; on the ``open`` world the
served student of the defaults (last step, 1 epoch) is 0.023-0.032 AUC below its teacher on 3 seeds
(docs/TRAINING.md). Two readings fit: the student never sees B's values (coverage), or it does not learn what the
teacher's cross-attention does (in its budget, or at all). This script measures the first. It distils a student on
**half B itself**:

* the teacher is a cross-encoder trained on half A (``--cross``: a folder ``kp eval-labels --keep`` left, or one
  of ``kp train-cross --labels A``), so its scores on B are the ones the normal protocol distils from;
* the student is ``train_bi.run`` with ``train.label_mix=kd`` (the teacher's scores only: B's labels are never a
  target) on B's pairs as the "judged" file, so the teacher scores B's own pairs, unjudged pairs near them and
  candidate lists drawn from B's titles and keyphrases (every ``train.kd_*`` default);
* ``train.cut_rotation`` is off: the rotation before the 64-d cut is fitted on judged positives and kept only when
  it lifts the held-out AUC on judged labels, which here are B's own (B's labels would reach the served student);
* then every model is graded on all of B against B's labels (AUC) and against the world's truth
  (``eval_labels.truth_breakdown``), as ``kp eval-labels`` grades it.

A student that reaches its teacher here is limited by what it sees (coverage) in the real protocol; one that
does not is limited by what it can represent, or by what it learns in its budget (``--epochs`` tells these two
apart). Compare with the recipe's student under the same loss (``KP_TRAIN__LABEL_MIX=kd kp eval-labels``): the
ceiling has no ``llm`` task, so it also has fewer rows and steps than the defaults. The held-out split of
``train_bi`` still takes 15% of B's pairs out of training (they are graded all the same).

    python bench/student_ceiling.py --world open --pairs 6000 --seed 1 --cross /tmp/open_keep/cross-1 \\
        --epochs 1 --out bench/results/distill_sweep/open_ceiling_e1_s1.json

Prints one JSON line and writes it to ``--out``. Minutes of the student's training on 2 quiet cores at 6,000 pairs of
the open world: 4.3 for 1 epoch, 10.6 for 3, 16.4 for 6 (29 for 1 epoch with a test suite sharing the cores); alt, attr
and listing 3.4-6.2 for 1 epoch. Always **simulated** judgments (a world's pairs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Run the diagnostic (arguments as on the command line; see the module docstring); returns 0.

    Writes ``--out`` (JSON: ``auc`` and ``truth`` per model, the student's steps, seconds, distillation report and
    settings). Raises what ``eval_labels.load_pairs`` (ConfigError: unknown world) and ``train_bi.run`` (ConfigError,
    DataError: a teacher folder without a model, a half too small) raise."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="open", help="simulated world (kp eval-labels --world)")
    ap.add_argument("--pairs", type=int, default=6000, help="the world's pairs before the split (as kp eval-labels)")
    ap.add_argument("--seed", type=int, default=1, help="the student's training seed (train.seed)")
    ap.add_argument("--cross", required=True, help="the teacher's version folder, trained on half A of the same split")
    ap.add_argument("--epochs", type=float, default=1.0, help="train.bi_epochs for the student")
    ap.add_argument("--out", required=True, help="the result JSON file")
    args = ap.parse_args(argv)

    from scipy.special import logit
    from sklearn.metrics import roc_auc_score

    from keyphrase_pipeline.cli import configure_logging
    from keyphrase_pipeline.commands.eval_labels import (  # _score_all: eval-labels' own scoring, reused as is
        _score_all,
        load_pairs,
        split_halves,
        truth_breakdown,
    )
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.stages import train_bi

    configure_logging("INFO")
    _, b = split_halves(load_pairs(None, args.world, args.pairs))
    with tempfile.TemporaryDirectory(prefix="kp-ceiling-") as tmp:
        work = Path(tmp)
        half_b = work / "half_b.parquet"
        b[["title", "category", "keyphrase", "label"]].to_parquet(half_b)
        s = get_settings().with_overrides(**{"lake_root": str(work / "lake"), "train.seed": args.seed,
                                             "train.label_mix": "kd", "train.bi_epochs": args.epochs,
                                             "train.cut_rotation": False})
        t0 = time.perf_counter()
        stud = train_bi.run(s, dt.date.today().isoformat(), labels=str(half_b), cross=args.cross,
                            out=str(work / "student"))
        seconds = time.perf_counter() - t0
        scores = _score_all(s, b, layout.version_model_dir(args.cross), layout.version_model_dir(stud["path"]))
    y = b["label"].to_numpy(int)
    teacher_logit = logit(np.clip(np.asarray(scores["cross"], dtype="float64"), 1e-6, 1 - 1e-6))
    result = {"world": args.world, "pairs": args.pairs, "simulated": True, "graded_on": "half B (all its pairs)",
              "trained_on": "half B's pairs and unjudged pairs from its texts, teacher scores only (label_mix=kd)",
              "seed": args.seed, "cross": args.cross, "bi_epochs": args.epochs, "b_pairs": int(len(b)),
              "auc": {m: round(float(roc_auc_score(y, v)), 4) for m, v in scores.items()},
              "truth": {m: truth_breakdown(b, v) for m, v in scores.items()},
              "pearson_student_vs_teacher_logit": round(float(np.corrcoef(scores["student"], teacher_logit)[0, 1]), 4),
              "student_steps": stud.get("steps"), "student_seconds": round(seconds),
              "student_stop_reason": stud.get("stop_reason"), "label_mix": "kd", "cut_rotation": stud.get("cut_rotation"),
              "kept_start_model": stud.get("kept_start_model"),
              "distillation": stud.get("distillation"),
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    line = json.dumps(result, default=str)
    print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
