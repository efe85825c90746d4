"""Does training on judged pairs beat the untrained base encoder? The transfer protocol, as a command.

``kp eval-labels --labels FILE`` (a team's own judgements) or ``--world demo|alt|attr|listing|open`` (simulated judged
pairs, ``keyphrase_pipeline.synthetic.synth_labels``) runs what a new user does, on pairs it can grade:

1. split the pairs **by keyphrase** into two halves A and B (no keyphrase in both; stable hash);
2. on A, with the configured defaults: ``kp train-cross --labels A`` then
   ``kp train-bi --labels A --cross DIR`` (both via their ``run`` functions, into a scratch folder);
3. score A and B with the zero-shot base encoder (cosine at full size and at ``serve.dim``), the
   cross-encoder (P(relevant)) and the student (as ``kp score`` serves it: its cosine at ``serve.dim``, plus its
   hybrid score's lexical bonus when it has one, ``keyphrase_pipeline.models.lexical_match``, with the cosine
   alone as ``student_cosine``; and its cosine at full size: ``student_full``, what the Matryoshka cut costs);
4. for each model, the threshold that maximises F1 on A is applied to B; F1, precision, recall and ROC AUC
   on B are reported with B's share of positives (the class balance) and each model's gain over the
   zero-shot encoder; on a simulated world also AUC against its truth (``truth_breakdown``).

Repeated for each ``--seeds`` value (training seed; the split stays fixed), with mean and spread
(sample standard deviation). One JSON line per seed and a summary line go to stdout and, with ``--out``,
to a JSON file (``bench/results/eval_labels_<world>.json`` in the docs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.bi_encoder import _cut, encode_items, encode_keyphrases, load_hybrid, load_student
from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs
from keyphrase_pipeline.models.lexical_match import FEATURES_VERSION
from keyphrase_pipeline.models.metrics import auc_or_none, best_f1_threshold, binary_metrics
from keyphrase_pipeline.models.text import keyphrase_identity

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

# "student" is the student as served (its hybrid score when it has one, models.lexical_match), "student_cosine"
# its cosine at serve.dim alone (only when it has a hybrid score), "student_full" the cosine at full size
MODELS = ("zero_shot", "zero_shot_cut", "cross", "student", "student_cosine", "student_full")
SIMULATED_WORLD_PAIRS = "keyphrase_pipeline.synthetic.synth_labels"  # module of ``world_pairs`` (package ``synthetic``), for --world


def split_by_keyphrase(keyphrases, salt: str = "kp-eval") -> np.ndarray:
    """Boolean mask of the pairs in half A: a keyphrase's pairs all fall on one side (sha1 of the text).

    Args:
        keyphrases: sequence of str, one per pair.
    Returns:
        np.ndarray of bool, shape (n,).
    """

    keys = (keyphrase_identity(k) for k in keyphrases)  # "Red Shoes" and "red shoes" are one query
    return np.array([int(hashlib.sha1(f"{salt}:{k}".encode()).hexdigest()[:8], 16) % 2 == 0 for k in keys],
                    dtype=bool)


def split_halves(pairs):
    """``pairs`` (a DataFrame with ``keyphrase``) split by ``split_by_keyphrase`` into (half A, half B), each with a
    fresh 0..n-1 index, rows in ``pairs``' order: the split every ``kp eval-labels`` figure is graded on."""
    in_a = split_by_keyphrase(pairs["keyphrase"].tolist())  # a positional mask: any index will do
    return pairs[in_a].reset_index(drop=True), pairs[~in_a].reset_index(drop=True)


def transfer_metrics(y_a, s_a, y_b, s_b) -> dict:
    """Threshold chosen on A (max F1), applied to B: F1/precision/recall/AUC on B and the threshold.

    ``y_*``: 0/1 arrays, ``s_*``: float scores (cosine or probability), each pair of equal length. Returns
    ``binary_metrics`` of B plus ``positive_share`` (B's share of positives)."""

    th = best_f1_threshold(y_a, s_a)
    m = binary_metrics(y_b, s_b, th)
    m["positive_share"] = round(float(np.mean(y_b)), 4)
    return m


def truth_breakdown(pairs, scores) -> dict:
    """AUC against a simulated world's truth: over all pairs, within a keyphrase (mean over keyphrases with both
    classes: the order of one query's candidates) and, where the pairs say which kind each negative is
    (``negative``: the attr world), of the positives against each kind (``near_miss``, ``lexical``, ``random``).
    Keyphrases are grouped as ``split_by_keyphrase`` sees them (lower-cased tower text).

    ``pairs``: frame with ``keyphrase``, ``truth`` (0/1) and optionally ``negative``; ``scores``: float array of the
    same length. Returns ``{"auc", "within_keyphrase_auc", "by_negative": {kind: auc}}`` (rounded to 4 places;
    None where one class is missing)."""
    import pandas as pd

    y, v = pairs["truth"].to_numpy(int), np.asarray(scores, dtype=float)

    def auc(mask) -> float | None:
        a = auc_or_none(y[mask], v[mask])
        return None if a is None else round(a, 4)

    query = [keyphrase_identity(k) for k in pairs["keyphrase"]]  # one query as the split sees it
    within = [auc(idx) for idx in pd.Series(query).groupby(query, sort=False).indices.values()]
    within = [x for x in within if x is not None]
    out = {"auc": auc(np.ones(len(y), dtype=bool)),
           "within_keyphrase_auc": round(float(np.mean(within)), 4) if within else None}
    if "negative" in pairs:
        kinds = pairs["negative"].to_numpy()
        out["by_negative"] = {k: auc((kinds == "positive") | (kinds == k)) for k in sorted(set(kinds) - {"positive"})}
    return out


def _score_all(settings: Settings, pairs, cross_dir: str | None, student_dir: str | None, zero_shot: bool = True) -> dict:
    """Model name -> float32 scores for every row of ``pairs`` (title, category, keyphrase); without the untrained
    base encoder's (``zero_shot``, ``zero_shot_cut``) when ``zero_shot`` is False."""

    t, c, k = pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist()
    dim = settings.serve.dim

    def cosines(model) -> tuple[np.ndarray, np.ndarray]:  # (full size, cut to serve.dim), each model encoded once
        items, keyphrases = encode_items(model, t, c), encode_keyphrases(model, k)  # normalised
        return (items * keyphrases).sum(axis=1), (_cut(items, dim) * _cut(keyphrases, dim)).sum(axis=1)

    out = {}
    if zero_shot:
        out["zero_shot"], out["zero_shot_cut"] = cosines(load_student(resolve_base_model(settings.train.base_model),
                                                                      settings.train.device))
    if cross_dir:
        out["cross"] = predict_pairs(load_cross(cross_dir, settings.train.device), t, c, k)
    if student_dir:  # as served (serve.dim), and at full size: what the Matryoshka cut costs
        out["student_full"], out["student"] = cosines(load_student(student_dir, settings.train.device))
        hybrid = load_hybrid(student_dir)
        if hybrid is not None:  # served: the cosine at serve.dim plus the lexical bonus (models.lexical_match)
            out["student_cosine"] = out["student"]
            out["student"] = hybrid.score(out["student_cosine"], t, c, k)
    return out


def load_pairs(labels: str | None, world: str | None, n_pairs: int, tokenizer=None):
    """The judged pairs: a user's file (validated as ``--labels``: with ``tokenizer``, text it reads as
    unknown tokens only is refused too) or a simulated world's.

    Returns a pandas DataFrame ``title, category, keyphrase, label`` (+ ``p`` for a file; + ``truth, kind`` for a
    world). Raises ConfigError (exit 2) unless exactly one of ``labels``/``world`` is given, or for an unknown
    world; DataError (exit 3) for an invalid file (``training_data.read_labels_file``, at least 2 rows)."""
    from keyphrase_pipeline.labels.training_data import read_labels_file

    if bool(labels) == bool(world):
        raise ConfigError("give exactly one of --labels FILE or --world NAME")
    if labels:  # training sees the file's own labels (probabilities stay probabilities); grading uses 0/1
        return read_labels_file(labels, min_rows=2, tokenizer=tokenizer)[["title", "category", "keyphrase", "label", "p"]]

    # a simulated world's pairs, loaded by name (as the simulated judge is): production code never imports the demo
    world_pairs = importlib.import_module(SIMULATED_WORLD_PAIRS).world_pairs
    try:
        return world_pairs(world, n_pairs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_seed(settings: Settings, half_a_path: str, a, b, seed: int, work: Path, ds: str, student: bool = True,
             cross_dir: str | None = None) -> dict:
    """Train cross (unless ``cross_dir`` gives one trained on the same half A) and student on half A with
    ``seed``; return per-model transfer metrics and timings. Raises what ``train_cross.run``, ``train_bi.run``
    and the model loaders raise (ConfigError exit 2, DataError exit 3)."""
    from keyphrase_pipeline.stages import train_bi, train_cross

    s = settings.with_overrides(**{"train.seed": seed})
    t0 = time.perf_counter()
    if cross_dir:
        cross = {"path": str(Path(cross_dir).resolve())}
    else:
        cross = train_cross.run(s, ds, labels=half_a_path, out=str(work / f"cross-{seed}"))
    t_cross = time.perf_counter() - t0
    stud = train_bi.run(s, ds, labels=half_a_path, cross=cross["path"], out=str(work / f"student-{seed}")) \
        if student else {}
    t_bi = time.perf_counter() - t0 - t_cross
    cross_model = layout.version_model_dir(cross["path"])
    stud_model = layout.version_model_dir(stud["path"]) if stud else None
    import pandas as pd

    t_score = time.perf_counter()
    scores = _score_all(s, pd.concat([a, b], ignore_index=True), cross_model, stud_model)  # each model loaded once
    t_score = time.perf_counter() - t_score
    ya, yb = a["label"].to_numpy(int), b["label"].to_numpy(int)
    metrics = {m: transfer_metrics(ya, v[:len(a)], yb, v[len(a):]) for m, v in scores.items()}
    if "truth" in b:  # a simulated world: where each model wins or loses, against the unflipped truth
        for m, v in scores.items():
            metrics[m]["truth"] = truth_breakdown(b, v[len(a):])
    warn_if_teacher_below_zero_shot(seed, metrics, len(a))
    return {"seed": seed, "metrics": metrics, "cross_seconds": round(t_cross, 1), "student_seconds": round(t_bi, 1),
            "cross_steps": cross.get("steps"), "cross_best_step": cross.get("best_step"),
            "score_seconds": round(t_score, 1),
            "cross_stop_reason": cross.get("stop_reason"), "student_stop_reason": stud.get("stop_reason"),
            "student_steps": stud.get("steps"), "student_best_step": stud.get("best_step"),
            "student_distillation": stud.get("distillation"), "student_hybrid_score": stud.get("hybrid_score"),
            "cross_budget": (cross.get("budget") or {}).get("reason"),
            "student_budget": (stud.get("budget") or {}).get("reason")}


def warn_if_teacher_below_zero_shot(seed: int, metrics: dict, a_pairs: int) -> bool:
    """Log a warning (and return True) when the cross-encoder's AUC on half B is below the zero-shot encoder's:
    the student is then distilled from a teacher that learned nothing useful. ``metrics``: ``run_seed``'s per-model
    transfer metrics; ``a_pairs``: half A's size, named in the warning."""
    cross_auc, zero_auc = metrics["cross"].get("auc"), metrics["zero_shot"].get("auc")
    if cross_auc is None or zero_auc is None or cross_auc >= zero_auc:
        return False
    log.warning("seed %d: the cross-encoder orders half B worse than the untrained encoder (AUC %.4f < %.4f): "
                "too few judged pairs in half A (%d) or too short a budget for it to learn; the student is "
                "distilled from it", seed, cross_auc, zero_auc, a_pairs)
    return True


def summarise(per_seed: list[dict]) -> dict:
    """Mean and sample std of F1/AUC per model over seeds, and gains over the zero-shot encoder."""
    out: dict = {}
    for m in MODELS:
        rows = [r["metrics"][m] for r in per_seed if m in r["metrics"]]
        if not rows:
            continue
        out[m] = {}
        for key in ("f1", "auc", "precision", "recall"):
            v = np.array([x[key] for x in rows if x.get(key) is not None], dtype=float)
            out[m][key] = {"mean": round(float(v.mean()), 4),
                           "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4), "n": int(len(v))}
    if "zero_shot" in out:
        z, za = out["zero_shot"]["f1"]["mean"], out["zero_shot"]["auc"]["mean"]
        for m in ("cross", "student", "student_cosine", "student_full"):
            if m in out:
                out[m]["f1_gain_vs_zero_shot"] = round(out[m]["f1"]["mean"] - z, 4)
                out[m]["auc_gain_vs_zero_shot"] = round(out[m]["auc"]["mean"] - za, 4)
    if "cross" in out:
        for m in ("student", "student_cosine", "student_full"):
            if m in out:
                out[m]["f1_gap_to_cross"] = round(out["cross"]["f1"]["mean"] - out[m]["f1"]["mean"], 4)
                out[m]["auc_gap_to_cross"] = round(out["cross"]["auc"]["mean"] - out[m]["auc"]["mean"], 4)
    if "student" in out:  # served with its hybrid score on this many seeds (then student_cosine is its cosine)
        out["student"]["hybrid_score_seeds"] = sum("student_cosine" in r["metrics"] for r in per_seed)
    return out


def run(settings: Settings, labels: str | None = None, world: str | None = None, seeds=(42,), n_pairs: int = 10_000,
        out: str | None = None, work_dir: str | None = None, student: bool = True, keep: str | None = None,
        cross_dir: str | None = None) -> dict:
    """The whole protocol; returns ``{"config", "split", "per_seed": [...], "summary"}``.

    Raises:
        ConfigError: (exit 2) no seed; not exactly one of ``labels``/``world``; an unknown world; bad training
            settings (see ``train_cross.run``, ``train_bi.run``).
        DataError: (exit 3) an invalid ``labels`` file; a half with fewer than 20 pairs or one class; half A
            too small for the trainers (``train.min_rows``, a held-out split without test or train pairs).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if labels:
        from keyphrase_pipeline.labels.training_data import encoder_tokenizer

        pairs = load_pairs(labels, world, n_pairs, encoder_tokenizer(settings))
    else:
        pairs = load_pairs(labels, world, n_pairs)
    a, b = split_halves(pairs)
    for name, half in (("A", a), ("B", b)):
        if len(half) < 20 or half["label"].nunique() < 2:
            raise DataError(f"half {name} of the split has {len(half)} pairs and labels {sorted(half['label'].unique())}: "
                            "need both classes")
    split = {"a_pairs": len(a), "b_pairs": len(b), "a_keyphrases": int(a["keyphrase"].nunique()),
             "b_keyphrases": int(b["keyphrase"].nunique()), "a_positive_share": round(float(a["label"].mean()), 4),
             "b_positive_share": round(float(b["label"].mean()), 4),
             "with_category": bool((pairs["category"].astype(str) != "").any())}
    if "truth" in pairs:
        split["b_label_noise"] = round(float((b["label"] != b["truth"]).mean()), 4)
    log.info("eval-labels: %s", split)
    ds = dt.date.today().isoformat()
    with tempfile.TemporaryDirectory(prefix="kp-eval-labels-", dir=work_dir) as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        half_a_path = str(work / "half_a.parquet")
        a.assign(label=a["p"] if "p" in a else a["label"])[["title", "category", "keyphrase", "label"]] \
            .to_parquet(half_a_path)
        s = settings.with_overrides(lake_root=str(work / "lake"))
        per_seed = []
        for seed in seeds:
            r = run_seed(s, half_a_path, a, b, seed, work, ds, student=student,
                         cross_dir=cross_dir.format(seed=seed) if cross_dir else None)
            per_seed.append(r)
            print(json.dumps({"world": world, "labels": labels, **r}), flush=True)
    result = {"world": world, "labels": labels, "simulated": world is not None, "seeds": seeds, "split": split,
              # every training setting; with --cross the teachers were trained elsewhere, and their settings are
              # in their own train_config.json, not these
              "config": {**settings.train.model_dump(mode="json"), "serve_dim": settings.serve.dim, "cross_reused": cross_dir,
                         "hybrid_features_version": FEATURES_VERSION},  # the tokenisation a hybrid is fitted with
              "per_seed": per_seed, "summary": summarise(per_seed),
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    if out:
        from keyphrase_pipeline.core.lake import write_text_atomic

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(str(Path(out).resolve()), json.dumps(result, indent=2, default=str))
    return result


def markdown_table(results: list[dict]) -> str:
    """The docs' table (docs/TRAINING.md) from result files of ``run``: one row per world and model with
    F1 and AUC on half B as mean ± sample std over seeds, and the F1 gain over the zero-shot encoder."""
    names = {"zero_shot": "all-MiniLM-L6-v2 untrained, cosine 384-d (zero-shot)",
             "zero_shot_cut": "same, cut to serve.dim", "cross": "cross-encoder (`kp train-cross --labels`)",
             "student": "student (`kp train-bi --labels --cross`, serve.dim)",
             "student_cosine": "same student, its cosine alone (without its hybrid score)",
             "student_full": "same student at full size (384-d)"}
    lines = ["| world | pairs A / B | B positive share | model | F1 on B | AUC on B | F1 gain vs zero-shot | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        sp, summ = r["split"], r["summary"]
        where = r.get("world") or Path(str(r.get("labels"))).name
        for m in MODELS:
            if m not in summ:
                continue
            f1, auc = summ[m]["f1"], summ[m]["auc"]
            gain = summ[m].get("f1_gain_vs_zero_shot")
            lines.append(f"| {where} | {sp['a_pairs']} / {sp['b_pairs']} | {sp['b_positive_share']:.2f} | {names[m]} | "
                         f"{f1['mean']:.3f} ± {f1['std']:.3f} | {auc['mean']:.3f} ± {auc['std']:.3f} | "
                         f"{'' if gain is None else f'{gain:+.3f}'} | {f1['n']} |")
    return "\n".join(lines)


def breakdown_table(runs: list[tuple[str, dict]]) -> str:
    """The docs' table of distillation runs on a simulated world (docs/TRAINING.md): one row per (name, result of
    ``run`` with a ``truth`` breakdown) for its first seed: the student's F1 and AUC on half B at ``serve.dim`` and
    at full size, its AUC against the truth overall, within a keyphrase and against each kind of negative, the
    unjudged pairs the teacher scored and ``train_bi.run``'s minutes (mining, the teacher's scoring and training);
    the teacher's row and the zero-shot encoder's (at ``serve.dim``; its 384-d AUC beside)
    come from the first run (all runs share the split and the teacher)."""
    def fmt(x) -> str:
        return "" if x is None else f"{x:.3f}"

    def row(name: str, m: dict, full: dict | None, extra: str) -> str:
        t = m.get("truth") or {}
        kinds = t.get("by_negative") or {}
        cells = [f"{fmt(m['f1'])} / {fmt(m['auc'])}", fmt((full or {}).get("auc")), fmt(t.get("auc")),
                 fmt(t.get("within_keyphrase_auc")), *(fmt(kinds.get(k)) for k in ("near_miss", "lexical", "random"))]
        return f"| {name} | " + " | ".join(cells) + f" | {extra} |"

    lines = ["| model | F1 / AUC on B (serve.dim) | AUC at 384-d | AUC vs truth | within a keyphrase | "
             "vs near misses | vs lexical neighbours | vs random | unjudged pairs scored / `train-bi` minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    first = runs[0][1]["per_seed"][0]["metrics"]
    lines.append(row("zero-shot all-MiniLM-L6-v2", first["zero_shot_cut"], first["zero_shot"], ""))
    lines.append(row("cross-encoder (teacher)", first["cross"], None, ""))
    for name, r in runs:
        ps = r["per_seed"][0]
        d = ps.get("student_distillation") or {}
        scored = "" if not d else f"{d.get('extra_pairs', 0) + d.get('list_pairs', 0):,}"
        extra = f"{scored} / {ps['student_seconds'] / 60:.1f}"
        lines.append(row(name, ps["metrics"]["student"], ps["metrics"].get("student_full"), extra))
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--labels", default=None, help="judged pairs file (title, category, keyphrase, label)")
    parser.add_argument("--world", default=None, help="simulated judged pairs instead: demo, alt, attr (attribute "
                        "queries with near misses), listing (attr with marketplace-length titles) or open (attribute queries "
                        "over open value spaces: most values of a held-out query unseen in training); "
                        "keyphrase_pipeline.synthetic.synth_labels")
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs drawn from --world (default 10000)")
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds (default 42)")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.add_argument("--cross-only", action="store_true", help="train and score the cross-encoder only")
    parser.add_argument("--keep", default=None, help="keep the trained models in this folder (default: a temp folder): "
                        "DIR/cross-<seed>, DIR/student-<seed>; reuse the teachers with --cross 'DIR/cross-{seed}'")
    parser.add_argument("--cross", default=None,
                        help="reuse cross-encoders trained on the same split ('{seed}' is replaced by the seed)")


def main(settings: Settings, args) -> int:
    """``kp eval-labels``: ``run`` with the parsed options; prints one JSON line per seed while it runs, then one
    with the summary and the split, and returns 0.

    Raises ConfigError (exit 2) when ``--seeds`` is not comma-separated integers.
    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    try:
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: comma-separated integers") from None
    result = run(settings, labels=args.labels, world=args.world, seeds=seeds, n_pairs=args.pairs, out=args.out,
                 student=not args.cross_only, keep=args.keep, cross_dir=args.cross)
    print(json.dumps({"summary": result["summary"], "split": result["split"]}, default=str))
    return 0
