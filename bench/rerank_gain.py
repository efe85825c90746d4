"""What would re-ranking each item's top-K with the teacher serve? A diagnostic for issue 25's open decision.

The served student (64-d bi-encoder) stays more than 0.01 AUC below its cross-encoder teacher on three of the four
simulated worlds (0.014-0.032; alt 0.009), even when distilled on the graded pairs themselves
(``bench/student_ceiling.py``, docs/TRAINING.md). One way to put the teacher's judgement in what is served without
asking the student to match it: the offline ``recommend`` step takes each item's top ``depth`` keyphrases from the
student's search and the teacher re-orders them, keeping the top K. Not built in the pipeline (it changes what is
served and costs ``depth`` teacher pairs per item); this script measures what it would give, in the product's own
terms, on a world whose truth is known for every pair.

Protocol (the ``attr`` world: its truth is known for every (item, keyphrase) pair; ``open``'s only for the judged
pairs, and ``listing``'s long titles are drawn per judged set, so its items cannot be told apart from half A's):

* the teacher and the student are the ones ``kp eval-labels --world attr --seeds S --keep DIR`` trained on half A
  (``DIR/cross-S``, ``DIR/student-S``);
* the candidates are every keyphrase of the world (19,031 at attr's 30,000 items) but half A's judged ones: the
  pipeline ranks an item against the whole keyphrase table, and none of these was a judged training pair;
* the items are ``--items`` world items, drawn once (a fixed generator, whatever the seed), whose titles were in no
  half-A pair and that are truly relevant to at least one candidate;
* the zero-shot base encoder and the student rank every candidate by exact cosine at ``serve.dim`` (as served, with
  an exact index); ``re-rank@D`` takes the student's top D and orders them by the teacher's P(relevant), above the
  rest; ``oracle@D`` orders the student's top D by the truth itself: the best any re-ranker of that depth can do
  (and ``zero_shot_oracle@D`` the zero-shot encoder's: does the student still earn its place as the retriever?);
* graded against the world's truth (not the judges' noisy labels): precision@k (share of an item's top k truly
  relevant, k = 1, 5, 10, 20) and recall@K (truly relevant keyphrases in the top K over min(K, their number)),
  means over items, K = ``serve.top_k``.

    kp eval-labels --world attr --pairs 6000 --seeds 1 --keep /tmp/attr_keep --out /tmp/attr_eval_labels_s1.json
    python bench/rerank_gain.py --seed 1 --keep /tmp/attr_keep --out /tmp/rerank_attr_s1.json

(the committed files, ``bench/results/rerank/attr_s{1,2,3}.json`` and ``attr_eval_labels_s{1,2,3}.json``, were made
so, seed by seed).

Prints one JSON line and writes it to ``--out``; the teacher's pairs per second on this machine are recorded, so the
cost of a depth is ``items x depth / pairs_per_second``. About 12 minutes a seed on 2 quiet cores (CPU) at 500 items: the
teacher's 100,000 pairs, and both encoders' 18,542 keyphrases. Always **simulated** (a world's titles, queries and truth).
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

log = logging.getLogger("rerank_gain")
DEPTHS = (20, 40, 100, 200)   # re-rank depths: the served K itself (re-order only), then 2, 5 and 10 times it
PRECISION_KS = (1, 5, 10, 20)
ROWS = (("zero_shot", "zero-shot all-MiniLM-L6-v2, cosine at serve.dim"), ("student", "the student as served (64-d)"),
        *((f"rerank@{d}", f"the student's top {d}, re-ordered by the teacher") for d in DEPTHS),
        (f"oracle@{max(DEPTHS)}", f"the student's top {max(DEPTHS)}, ordered by the truth (the bound at that depth)"),
        (f"zero_shot_oracle@{max(DEPTHS)}", f"the zero-shot encoder's top {max(DEPTHS)}, ordered by the truth"))


def rank_metrics(truth: np.ndarray, scores: np.ndarray, k: int) -> dict:
    """Ranking quality of one model over items x candidates, against the truth.

    Args:
        truth: bool array (n_items, n_candidates), True where the pair is truly relevant.
        scores: float array of the same shape; higher ranks first (ties in index order).
        k: the served list's length, for recall@k (>= 1; ``PRECISION_KS`` are always reported, over the first k
            candidates there are when a row has fewer).
    Returns:
        ``{"p@1", "p@5", "p@10", "p@20", "recall@k"}``, each a mean over items rounded to 4 places.
    Raises:
        ValueError: on shapes that differ or k below 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if truth.shape != scores.shape:
        raise ValueError(f"truth {truth.shape} and scores {scores.shape} differ in shape")
    order = np.argsort(-scores, axis=1, kind="stable")
    hit = np.take_along_axis(truth, order, axis=1)
    out = {f"p@{p}": round(float(hit[:, :p].mean()), 4) for p in PRECISION_KS}
    n_rel = truth.sum(axis=1)
    out[f"recall@{k}"] = round(float((hit[:, :k].sum(axis=1) / np.maximum(np.minimum(n_rel, k), 1)).mean()), 4)
    return out


def rerank(first: np.ndarray, second: np.ndarray, depth: int) -> np.ndarray:
    """Scores of a two-stage ranking: each row's top ``depth`` by ``first`` ordered by ``second``, above the rest.

    Args:
        first: float array (n_items, n_candidates), the retrieval scores (the student's cosine).
        second: float array of the same shape, the re-ranker's scores (the teacher's P(relevant)); only each row's
            top ``depth`` by ``first`` is read.
        depth: how many of each row's first-stage candidates the re-ranker sees (>= 1; above n_candidates: all).
    Returns:
        float64 array of the same shape: ``first`` outside each row's top ``depth``; on it ``second`` shifted by one
        constant so that its lowest value is above every value of ``first``: each row's re-ranked candidates rank
        above its others, in ``second``'s order (ties in ``first``'s order under a stable sort).
    Raises:
        ValueError: on a depth below 1 or shapes that differ.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if first.shape != second.shape:
        raise ValueError(f"first {first.shape} and second {second.shape} differ in shape")
    top = np.argsort(-first, axis=1, kind="stable")[:, :depth]
    picked = np.take_along_axis(second.astype("float64"), top, axis=1)
    out = first.astype("float64").copy()
    np.put_along_axis(out, top, picked + (out.max() + 1.0 - picked.min()), axis=1)
    return out


def held_out_items(item_titles: np.ndarray, a_titles: set[str], relevant, n_items: int,
                   rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
    """The items to rank: in a random order, those whose title is in no half-A pair and that are truly relevant to
    at least one candidate, until ``n_items`` (fewer, with a warning, when the world has fewer).

    Args:
        item_titles: object array of str, one title per world item.
        a_titles: the titles of half A's judged pairs (what the teacher and the student trained on).
        relevant: callable, item index -> bool array (n_candidates,), the truth of that item against each candidate.
        n_items: how many items to take (>= 1).
        rng: the generator of the order (fixed: the same items whatever the training seed).
    Returns:
        (item indices, bool array (n_taken, n_candidates) of their truth).
    Raises:
        ValueError: when no item qualifies.
    """
    chosen, rows = [], []
    for i in rng.permutation(len(item_titles)):
        if item_titles[i] in a_titles:
            continue
        rel = relevant(int(i))
        if rel.any():
            chosen.append(int(i))
            rows.append(rel)
        if len(chosen) == n_items:
            break
    if not chosen:
        raise ValueError("no item has an unseen title and a truly relevant candidate")
    if len(chosen) < n_items:
        log.warning("only %d items qualify (asked for %d)", len(chosen), n_items)
    return chosen, np.vstack(rows)


def markdown_table(results: list[dict]) -> str:
    """docs/TRAINING.md's re-rank table: one row a model, mean ± sample std over the result files (one a seed).

    Args:
        results: the JSON objects ``main`` writes, all of one world, ``serve.top_k`` and item sample.
    Returns:
        The markdown table (no trailing newline).
    Raises:
        ValueError: on no results, or results of different worlds, K or item counts.
        KeyError: on a result without one of ``ROWS``' rankings or a metric column.
    """
    if not results or len({(r["world"], r["top_k"], r["items"], r["keyphrases"]) for r in results}) != 1:
        raise ValueError("one world, top_k and item sample for all results, at least one")
    k = results[0]["top_k"]
    cols = [f"p@{p}" for p in PRECISION_KS] + [f"recall@{k}"]

    def cell(model: str, col: str) -> str:
        v = np.array([r["metrics"][model][col] for r in results], dtype=float)
        return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")

    head = "| ranking | teacher pairs per item | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for model, label in ROWS:
        pairs = model.split("@")[1] if model.startswith("rerank@") else ""
        lines.append(f"| {label} | {pairs} | " + " | ".join(cell(model, c) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the diagnostic (arguments as on the command line; see the module docstring); returns 0.

    Writes ``--out`` (JSON: per ranking the ``rank_metrics``, the items and keyphrases counted, the teacher's pairs per
    second, and the two models' AUC on half B's judged pairs, served 64-d for the student, which names them: it is
    what ``kp eval-labels`` reported for them). Raises ValueError when no item qualifies (``held_out_items``) and what
    the model loaders raise (ConfigError on a folder without a model); ``--items`` below 1, or a ``--keep`` folder
    without the seed's ``cross-SEED`` and ``student-SEED``, exits with status 2 before any work."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="attr", choices=("attr",), help="simulated world (kp eval-labels --world)")
    ap.add_argument("--pairs", type=int, default=6000, help="the world's pairs before the split (as kp eval-labels)")
    ap.add_argument("--seed", type=int, default=1, help="the training seed of the kept models")
    ap.add_argument("--keep", required=True, help="the folder kp eval-labels --keep left (cross-SEED, student-SEED)")
    ap.add_argument("--items", type=int, default=500, help="how many world items to rank keyphrases for")
    ap.add_argument("--out", required=True, help="the result JSON file")
    args = ap.parse_args(argv)
    if args.items < 1:
        ap.error(f"--items must be at least 1, got {args.items}")
    cross_dir, student_dir = (Path(args.keep) / f"{m}-{args.seed}" for m in ("cross", "student"))
    for d in (cross_dir, student_dir):
        if not d.is_dir():
            ap.error(f"{d} is not there: run kp eval-labels --world {args.world} --pairs {args.pairs} "
                     f"--seeds {args.seed} --keep {args.keep} first")

    from sklearn.metrics import roc_auc_score

    from keyphrase_pipeline.cli import configure_logging
    from keyphrase_pipeline.commands.eval_labels import (  # _score_all: eval-labels' own scoring, reused as is
        _score_all,
        load_pairs,
        split_by_keyphrase,
    )
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.models.base import resolve_base_model
    from keyphrase_pipeline.models.bi_encoder import _cut, encode_items, encode_keyphrases, load_student
    from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs
    from keyphrase_pipeline.synthetic.synth_labels import WORLDS, _joined, _world

    configure_logging("INFO")
    s = get_settings()
    w = WORLDS[args.world]
    pairs = load_pairs(None, args.world, args.pairs)
    in_a = split_by_keyphrase(pairs["keyphrase"].tolist())
    a_titles, a_keyphrases = set(pairs.loc[in_a, "title"]), set(pairs.loc[in_a, "keyphrase"])
    items, kps, truth, segments = _world(w["seed"], w["items"])
    titles = _joined(segments)
    kp_text = kps["text"].to_numpy(object).astype(str)
    kk = np.array([j for j, text in enumerate(kp_text) if text not in a_keyphrases], dtype=np.int64)
    chosen, truth_m = held_out_items(titles, a_titles, lambda i: truth.match_by_index(np.full(len(kk), i), kk)[0],
                                     args.items, np.random.default_rng([w["seed"], 25]))
    t_items, candidates = [str(titles[i]) for i in chosen], [str(kp_text[j]) for j in kk]
    dim, k, depth = s.serve.dim, s.serve.top_k, max(DEPTHS)
    log.info("%d items x %d candidate keyphrases; %.1f truly relevant per item", len(chosen), len(kk),
             truth_m.sum(axis=1).mean())

    def cosine_matrix(model) -> np.ndarray:   # (items, candidates) at serve.dim, as served
        return (_cut(encode_items(model, t_items, [""] * len(t_items)), dim)
                @ _cut(encode_keyphrases(model, candidates), dim).T)

    cross_model_dir, student_model_dir = (layout.version_model_dir(str(d)) for d in (cross_dir, student_dir))
    b = pairs[~in_a]   # which models these are: their AUC on half B, scored as kp eval-labels scores it
    b_scores = _score_all(s, b, cross_model_dir, student_model_dir)
    half_b_auc = {m: roc_auc_score(b["label"].to_numpy(int), b_scores[m]) for m in ("cross", "student")}
    student_model = load_student(student_model_dir, s.train.device)
    teacher_model = load_cross(cross_model_dir, s.train.device)
    zero_shot = cosine_matrix(load_student(resolve_base_model(s.train.base_model), s.train.device))
    student = cosine_matrix(student_model)
    top = np.argsort(-student, axis=1, kind="stable")[:, :depth]   # what the teacher would be asked to re-rank
    ti = np.repeat(np.arange(len(chosen)), depth)
    t0 = time.perf_counter()
    p = predict_pairs(teacher_model, [t_items[i] for i in ti], [""] * len(ti), [candidates[j] for j in top.ravel()])
    teacher_seconds = time.perf_counter() - t0
    teacher = np.zeros(student.shape)   # P(relevant) on each item's student top ``depth``; the rest is never read
    np.put_along_axis(teacher, top, np.asarray(p, dtype="float64").reshape(top.shape), axis=1)
    models = {"zero_shot": zero_shot, "student": student}
    models.update({f"rerank@{d}": rerank(student, teacher, d) for d in DEPTHS})
    models[f"oracle@{depth}"] = rerank(student, truth_m.astype("float64"), depth)
    models[f"zero_shot_oracle@{depth}"] = rerank(zero_shot, truth_m.astype("float64"), depth)  # is the student's top better?
    result = {"world": args.world, "pairs": args.pairs, "simulated": True, "seed": args.seed, "keep": args.keep,
              "graded_against": "the world's truth", "items": len(chosen), "keyphrases": len(kk),
              "candidates": "every world keyphrase but half A's judged ones", "index": "exact cosine",
              "relevant_per_item": {"mean": round(float(truth_m.sum(axis=1).mean()), 2),
                                    "median": float(np.median(truth_m.sum(axis=1)))},
              "half_b_auc": {m: round(float(v), 4) for m, v in half_b_auc.items()},
              "serve_dim": dim, "top_k": k, "depths": list(DEPTHS),
              "metrics": {m: rank_metrics(truth_m, v, k) for m, v in models.items()},
              "teacher_pairs": int(len(ti)), "teacher_seconds": round(teacher_seconds, 1),
              "teacher_pairs_per_second": round(len(ti) / teacher_seconds, 1), "device": s.train.device,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    print(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
