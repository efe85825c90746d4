"""How much of the served student's gain could the lexical term buy without any training? The hybrid score's
features (``keyphrase_pipeline.models.lexical_match``) fitted on the untrained base encoder's cosine instead of the
student's, on the same split as ``kp eval-labels``.

For each ``--worlds`` value: the world's judged pairs (``--pairs``, as ``kp eval-labels --world W --pairs N`` draws
them), split by keyphrase into halves A and B (``eval_labels.split_by_keyphrase``); the base encoder
(``train.base_model``, untrained) encodes both halves, its cosine at full size and cut to ``serve.dim``;
``lexical_match.fit_hybrid`` is fitted on half A's labels with the cut cosine (as ``kp train-bi`` fits the student's,
but on all of A's pairs, uncapped, and kept whatever it does: no held-out check); on half B, ROC AUC against the
judges' labels and against the world's truth of: the zero-shot cosine (full size and cut), the zero-shot hybrid
(cut cosine + the lexical bonus), and the lexical features alone (scikit-learn's ``LogisticRegression`` on the three
features, fitted on A). No training seed: the
split and the base encoder are fixed, so one run per world.

Beside the committed ``kp eval-labels`` runs of the hybrid score (``bench/results/hybrid/``, docs/TRAINING.md, "The
student's hybrid score") it says how much of the served student's gain over the zero-shot encoder is the lexical term
(what the zero-shot hybrid also gains) and how much is distillation (what the student's hybrid gains beyond it).

**Simulated** worlds: the features were chosen knowing that these worlds decide relevance on attribute tokens. On a
team's own judged pairs (``--labels FILE``) it says how much word overlap alone ranks them, before any training.

    .venv/bin/python bench/lexical_baseline.py --worlds attr,alt,demo,listing,open --pairs 6000 \\
        --out bench/results/hybrid/lexical_baseline_v2.json
    .venv/bin/python bench/lexical_baseline.py --labels judged.csv --out lexical_baseline_mine.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyphrase_pipeline.core.settings import load_settings  # noqa: E402
from keyphrase_pipeline.models.lexical_match import FEATURES_VERSION  # noqa: E402

# one file per version of the lexical features (models.lexical_match.FEATURES_VERSION), on the same split and encoder
RESULTS = tuple(REPO / "bench" / "results" / "hybrid" / f"lexical_baseline_v{v}.json" for v in (1, 2))
_ORDER = {w: i for i, w in enumerate(("attr", "alt", "demo", "listing", "open"))}  # the table's world order
MODELS = ("zero_shot", "zero_shot_cut", "zero_shot_hybrid", "lexical_only")


def _auc(y, s) -> float | None:
    from keyphrase_pipeline.models.metrics import auc_or_none

    a = auc_or_none(np.asarray(y, dtype=int), np.asarray(s, dtype=float))
    return None if a is None else round(a, 4)


def world_baseline(settings, world: str | None, n_pairs: int, labels: str | None = None) -> dict:
    """One world's row (or, with ``labels``, a judged pairs file's, as ``kp eval-labels --labels FILE`` reads it):
    ``{"world", "labels", "split": {"a_pairs", "b_pairs"}, "auc": {model: AUC on B against the labels}, "truth_auc":
    {model: against the world's truth; None for a file}, "hybrid": HybridScore.as_dict() or None,
    "features_changed_vs_v1": the share of pairs whose features differ from version 1's, "seconds"}`` for the
    models of ``MODELS``. Raises ConfigError (exit 2) for an unknown world or not exactly one of ``world``/``labels``;
    DataError (exit 3) for an invalid file."""
    from sklearn.linear_model import LogisticRegression

    from keyphrase_pipeline.commands.eval_labels import _score_all, load_pairs, split_by_keyphrase
    from keyphrase_pipeline.models.lexical_match import fit_hybrid, match_features

    t0 = time.perf_counter()
    pairs = load_pairs(labels, world, n_pairs).reset_index(drop=True)
    in_a = split_by_keyphrase(pairs["keyphrase"].tolist())
    zero = _score_all(settings, pairs, None, None)  # kp eval-labels' zero-shot cosines, full size and at serve.dim
    full, cut = zero["zero_shot"], zero["zero_shot_cut"]
    texts = (pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist())
    features = match_features(*texts)
    changed = float((np.abs(features - match_features(*texts, version=1)).max(axis=1) > 0).mean())
    y = (pairs["label"].to_numpy(dtype=float) >= 0.5).astype(int)
    a, b = in_a, ~in_a
    hybrid = fit_hybrid(cut[a], features[a], y[a])
    lexical = LogisticRegression(max_iter=2000, random_state=0).fit(features[a], y[a])
    scores = {"zero_shot": full, "zero_shot_cut": cut,
              "zero_shot_hybrid": cut + hybrid.bonus(features) if hybrid else cut,
              "lexical_only": lexical.decision_function(features)}
    truth = pairs["truth"].to_numpy(dtype=int) if "truth" in pairs else None
    return {"world": world, "labels": labels, "split": {"a_pairs": int(a.sum()), "b_pairs": int(b.sum())},
            "auc": {m: _auc(y[b], s[b]) for m, s in scores.items()},
            "truth_auc": {m: _auc(truth[b], s[b]) for m, s in scores.items()} if truth is not None else None,
            "hybrid": hybrid.as_dict() if hybrid else None, "features_changed_vs_v1": round(changed, 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def served_runs() -> dict[tuple[str, int], dict[str, list[float]]]:
    """(world, lexical features' version) -> {"teacher": [...], "student": [...]}: AUC on half B of each seed's
    teacher and served student in the ``kp eval-labels`` files behind docs/TRAINING.md's hybrid table
    (``bench/distill_curve.py``'s ``hybrid_runs`` and ``HYBRID_RUNS``, the one reader of those files), in file and
    seed order."""
    from bench import distill_curve as curve  # the repository root is on sys.path (above)

    runs: dict[tuple[str, int], dict[str, list[float]]] = {}
    for world, _, version, m in curve.hybrid_runs():
        into = runs.setdefault((world, version), {"teacher": [], "student": []})
        into["teacher"].append(m["cross"]["auc"])
        into["student"].append(m["student"]["auc"])
    return runs


def markdown_table(results: list[dict], runs: dict[tuple[str, int], dict[str, list[float]]] | None = None) -> str:
    """docs/TRAINING.md's table: per result file of ``main`` (one per lexical features' version) and world, AUC on
    half B of the zero-shot cosine (384-d and ``serve.dim``), the zero-shot hybrid, the lexical features alone and,
    where ``runs`` (``served_runs``) has the world at that version, the mean over its seeds of the teacher and of the
    served student, and what the student gains over the zero-shot hybrid."""
    lines = ["| world | lexical features | zero-shot 384-d | zero-shot 64-d | zero-shot 64-d + lexical term | lexical "
             "features alone | teacher (mean of seeds) | student as served (mean of seeds) | student - zero-shot + "
             "lexical term |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [(r, w) for r in results for w in r["worlds"]]
    first = {}  # a world's place: _ORDER's, else where it first appears
    for _, w in rows:
        first.setdefault(w["world"], (_ORDER.get(w["world"], len(_ORDER)), len(first)))
    for result, row in sorted(rows, key=lambda rw: (first[rw[1]["world"]], _version(rw[0]))):
        auc, version = row["auc"], _version(result)
        run = (runs or {}).get((row["world"], version))
        cells = ["n/a" if auc[m] is None else f"{auc[m]:.4f}"  # None: half B of one class
                 for m in ("zero_shot", "zero_shot_cut", "zero_shot_hybrid", "lexical_only")]
        if run:
            teacher, student = float(np.mean(run["teacher"])), float(np.mean(run["student"]))
            n = len(run["student"])
            gain = "" if auc["zero_shot_hybrid"] is None else f"{student - auc['zero_shot_hybrid']:+.4f}"
            cells += [f"{teacher:.4f}", f"{student:.4f} ({n} seed{'s' if n > 1 else ''})", gain]
        else:
            cells += ["not run", "not run", ""]
        lines.append(f"| {row['world'] or Path(row['labels']).name} | v{version} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _version(result: dict) -> int:
    """The lexical features' version of a result file: its ``features_version``, else that of its rows' fits (the
    same for all), else 1 (a file from before versions were recorded). Raises ValueError for rows fitted with
    different versions."""
    if "features_version" in result:
        return int(result["features_version"])
    versions = {int(r["hybrid"].get("features_version", 1)) for r in result["worlds"] if r.get("hybrid")}
    if len(versions) > 1:
        raise ValueError(f"a lexical baseline file with rows of features versions {sorted(versions)}")
    return versions.pop() if versions else 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="attr,alt,demo,listing", help="comma-separated simulated worlds")
    ap.add_argument("--labels", default=None, help="a judged pairs file instead (title, category, keyphrase, label)")
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", action="store_true", help="print docs/TRAINING.md's table from the committed files")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table([json.loads(p.read_text()) for p in RESULTS], served_runs()))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    rows = []
    for world in [None] if args.labels else args.worlds.split(","):
        rows.append(world_baseline(settings, world, args.pairs, args.labels))
        logging.info("lexical baseline: %s", json.dumps(rows[-1]))
    result = {"bench": "lexical_baseline", "simulated": not args.labels, "pairs": args.pairs, "serve_dim": settings.serve.dim,
              "base_model": settings.train.base_model, "features_version": FEATURES_VERSION, "worlds": rows,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    print(markdown_table([result], served_runs()))
    if args.out:
        write_result(result, args.out)
    return result


def write_result(result: dict, out: str) -> None:
    """Write ``result`` as indented JSON to ``out`` atomically (its folder made); also ``bench/label_ceiling.py``'s."""
    from keyphrase_pipeline.core.lake import write_text_atomic

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(Path(out).resolve()), json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
