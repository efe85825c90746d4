"""How much does the student gain from more teacher-scored pairs? Student AUC against the number of unjudged
pairs the cross-encoder scores for it, and the CPU minutes each costs.

For each ``--ratios`` value R (teacher-scored unjudged pairs per judged train pair, default 1, 5, 20) the
protocol of ``kp eval-labels`` runs on one split of a world's (or a file's) judged pairs: ``train.kd_extra_ratio``
stays 1 (the pointwise pairs) and ``train.kd_list_ratio`` is R - 1 (the candidate lists), so R counts every
unjudged pair the teacher scores. The cross-encoder is trained once per seed (at the first ratio) and reused,
so the points differ in the student alone. Per point: the student's F1/AUC on half B at ``serve.dim`` and at
full size, the teacher's and the zero-shot encoder's beside it, the pairs scored, the teacher's scoring seconds
and the student's training seconds.

**Simulated** with ``--world``: figures about the recipe on a synthetic world, not about real data.

    .venv/bin/python bench/distill_curve.py --world attr --pairs 6000 --seeds 1 --out bench/results/distill_curve_attr.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyphrase_pipeline.core.settings import load_settings  # noqa: E402

# The runs behind docs/TRAINING.md's distillation tables (bench/results/distill_sweep/<stem>.json; one seed, one
# teacher per world): world -> (file stem, the row's name). ``--sweep-table WORLD`` prints a world's table.
SWEEPS = {
    "attr": (
        ("attr_1_pointwise_1x", "old default: 1 x unjudged pointwise pairs"),
        ("attr_2_lists_5x", "+ 4 x in lists (5 x), 4 epochs"),
        ("attr_3_lists_5x_pearson", "5 x, listwise + batch Pearson (`kd_list_pearson` 1)"),
        ("attr_4_lists_20x", "20 x (`kd_list_ratio` 19)"),
        ("attr_5_lists_5x_epochs15", "5 x, 1.5 epochs"),
        ("attr_6_defaults", "the defaults of 2026-12-05 (5 x, 2 student epochs, 64 tokens)"),
        ("attr_7_defaults_lr1e4", "the same, `learning_rate` 1e-4"),
    ),
    "listing": (
        ("listing_1_epochs4_len48", "5 x, 4 epochs, 48 tokens (the defaults before)"),
        ("listing_2_epochs2", "5 x, 2 epochs, 64 tokens"),
        ("listing_3_epochs2_serve4", "5 x, 2 epochs, 64 tokens, `matryoshka_serve_weight` 4"),
    ),
    "open": (
        ("open_1_defaults", "the defaults before 2026-12-06 (best held-out checkpoint)"),
        ("open_noise_s2_t1", "the same, student seed 2 (same teacher: the noise)"),
        ("open_2_freeze_embeddings", "token embeddings frozen"),
        ("open_4_kd_only", "`label_mix` kd (no `llm` task)"),
        ("open_3_lr2e5", "`learning_rate` 2e-5"),
        ("open_5_query05", "`kd_query_share` 0.5 (title-cut queries)"),
        ("open_6_swap05", "`kd_swap_share` 0.5 (value-swapped keyphrases; first version: swapped values lower-cased)"),
        ("open_7_last", "`bi_checkpoint` last (every planned step, the last one kept; now the default; its minutes shared "
                        "the cores with a test suite)"),
    ),
}
# The open world with the defaults of the real run (best held-out checkpoint) on 3 seeds (a teacher per seed, shared
# with that seed's last-step students) beside the real judgments of issue 25 (~14,000 pairs, measured outside this
# project, one seed; AUC on the other half): docs/TRAINING.md's "A world that predicts the real student" table.
OPEN_SEEDS = ("open_1_defaults", "open_defaults_s2", "open_defaults_s3")
REAL_ISSUE_25 = {"zero_shot": 0.778, "zero_shot_cut": 0.742, "cross": 0.829, "student_full": 0.816, "student": 0.796}
RESULTS = REPO / "bench" / "results" / "distill_sweep"


def sweep_table(world: str = "attr", results_dir: Path = RESULTS) -> str:
    """docs/TRAINING.md's distillation table of ``world`` from its committed ``SWEEPS`` result files (those present)."""
    from keyphrase_pipeline.commands.eval_labels import breakdown_table

    runs = [(name, json.loads((results_dir / f"{stem}.json").read_text())) for stem, name in SWEEPS[world]
            if (results_dir / f"{stem}.json").exists()]
    return breakdown_table(runs)


def _mean_std(v, fmt: str = ".3f") -> str:
    """``mean ± sample std`` of ``v`` (a sequence of floats) in ``fmt``; the mean alone for one value."""
    import numpy as np

    a = np.asarray(v, dtype=float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1):{fmt.lstrip('+')}}" if len(a) > 1 else f"{a.mean():{fmt}}"


def open_vs_real_table(results_dir: Path = RESULTS) -> str:
    """docs/TRAINING.md's table: AUC on half B of each model, on the real judgments (``REAL_ISSUE_25``) and on the
    open world with the defaults (mean ± sample std over the seeds of the ``OPEN_SEEDS`` files), with the student's
    share of the teacher's gain over the 384-d zero-shot encoder, at 384-d and as served. Raises FileNotFoundError
    when none of the files is there."""
    import numpy as np

    per_seed = [ps for stem in OPEN_SEEDS if (results_dir / f"{stem}.json").exists()
                for ps in json.loads((results_dir / f"{stem}.json").read_text())["per_seed"]]
    if not per_seed:
        raise FileNotFoundError(f"no open-world run with the defaults in {results_dir} ({', '.join(OPEN_SEEDS)})")
    auc = {m: np.array([ps["metrics"][m]["auc"] for ps in per_seed]) for m in REAL_ISSUE_25}

    def share(zero, cross, student) -> float:
        return (student - zero) / (cross - zero)

    rows = [("zero-shot all-MiniLM-L6-v2, 384-d", "zero_shot"), ("zero-shot, cut to 64-d", "zero_shot_cut"),
            ("cross-encoder (teacher)", "cross"), ("student, 384-d", "student_full"), ("student, served 64-d", "student")]
    seeds = f"{len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}"
    lines = [f"| model | real judgments (one seed) | open world ({seeds}) |", "|---|---|---|"]
    lines += [f"| {name} | {REAL_ISSUE_25[m]:.3f} | {_mean_std(auc[m])} |" for name, m in rows]
    r = REAL_ISSUE_25
    for name, m in (("384-d", "student_full"), ("served 64-d", "student")):
        lines.append(f"| student's share of the teacher's gain over zero-shot 384-d ({name}) | "
                     f"{share(r['zero_shot'], r['cross'], r[m]):.0%} | {_mean_std(share(auc['zero_shot'], auc['cross'], auc[m]), '.0%')} |")
    lines.append(f"| student 64-d below its teacher | {r['cross'] - r['student']:.3f} | {_mean_std(auc['cross'] - auc['student'])} |")
    return "\n".join(lines)


# Per world, the runs whose students share a teacher per seed and differ only in the checkpoint kept and the
# student's epochs (read from each file's config): kept at the best held-out checkpoint with early stopping (the
# default before 2026-12-06), or at the last step of 2 or of 1 epoch.
CHECKPOINT_RUNS = {
    "open": (*OPEN_SEEDS, "open_7_last", "open_last_s2", "open_last_s3", "open_last_e1"),
    "alt": ("alt_last_e2_s1", "alt_last_e1_s1"),
    "attr": ("attr_last_e2_s1", "attr_last_e1_s1"),
    "listing": ("listing_last_e2_s3", "listing_last_e1_s3"),
}
CHECKPOINT_COLUMNS = ((("best", 2.0), "best held-out checkpoint, 2 epochs (its step of the steps run)"),
                      (("last", 2.0), "last step, 2 epochs"), (("last", 1.0), "last step, 1 epoch"))


def checkpoint_runs(world: str, results_dir: Path = RESULTS) -> dict[int, dict[tuple[str, float], dict]]:
    """``{seed: {(checkpoint, bi_epochs): per-seed result}}`` from ``world``'s ``CHECKPOINT_RUNS`` files that are
    there; a file's column comes from its own ``config`` (``bi_checkpoint``, absent in files from before it
    existed: ``best``; ``bi_epochs``). Raises ValueError for a file whose column is not one of
    ``CHECKPOINT_COLUMNS`` or a seed that two files put in the same column."""
    runs: dict = {}
    columns = [key for key, _ in CHECKPOINT_COLUMNS]
    for stem in CHECKPOINT_RUNS[world]:
        f = results_dir / f"{stem}.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        column = (r["config"].get("bi_checkpoint", "best"), float(r["config"]["bi_epochs"]))
        if column not in columns:
            raise ValueError(f"{f}: bi_checkpoint/bi_epochs {column} is none of the table's columns {columns}")
        for ps in r["per_seed"]:
            if column in runs.get(ps["seed"], {}):
                raise ValueError(f"{f}: seed {ps['seed']} is in column {column} twice")
            runs.setdefault(ps["seed"], {})[column] = ps
    return runs


def checkpoint_table(results_dir: Path = RESULTS) -> str:
    """docs/TRAINING.md's table: per world and seed, the teacher's AUC on half B and its students' at ``serve.dim``,
    kept at the best held-out checkpoint (with the step it came from) or at the last step of 2 or 1 epochs
    (``CHECKPOINT_COLUMNS``; "—" where a seed has no such run), and, where a world has several seeds, mean ± sample
    std over the seeds that have every column the world has (paired; their number is in the row). A world with no
    file is left out. Raises FileNotFoundError when no world has one, ValueError as ``checkpoint_runs``."""

    head = " | ".join(name for _, name in CHECKPOINT_COLUMNS)
    lines = [f"| world | seed | teacher | {head} |", "|---|---|---|" + "---|" * len(CHECKPOINT_COLUMNS)]
    for world in CHECKPOINT_RUNS:
        runs = checkpoint_runs(world, results_dir)
        for seed in sorted(runs):
            r = runs[seed]
            cells = []
            for key, _ in CHECKPOINT_COLUMNS:
                ps = r.get(key)
                step = f" ({ps['student_best_step']} of {ps['student_steps']})" if ps and key[0] == "best" else ""
                cells.append(f"{ps['metrics']['student']['auc']:.3f}{step}" if ps else "—")
            teacher = next(iter(r.values()))["metrics"]["cross"]["auc"]
            lines.append(f"| {world} | {seed} | {teacher:.3f} | {' | '.join(cells)} |")
        present = {key for r in runs.values() for key in r}
        paired = [seed for seed in sorted(runs) if present <= set(runs[seed])]
        if len(paired) > 1:
            means = [_mean_std([runs[s][key]["metrics"]["student"]["auc"] for s in paired]) if key in present else "—"
                     for key, _ in CHECKPOINT_COLUMNS]
            teacher = _mean_std([next(iter(runs[s].values()))["metrics"]["cross"]["auc"] for s in paired])
            lines.append(f"| {world} | mean ± std ({len(paired)} seeds) | {teacher} | {' | '.join(means)} |")
    if len(lines) == 2:
        raise FileNotFoundError(f"no checkpoint run in {results_dir}")
    return "\n".join(lines)


# Levers tried on the attr world against the defaults with the same teacher and the same student seed
# (docs/TRAINING.md, "Levers that did not move the student"): lever -> its files, one per seed. The defaults are the
# re-rank diagnostic's `kp eval-labels` runs (every default; their teachers kept and reused with --cross).
PAIRED_LEVERS = (
    ("`train.kd_list_loss` margin_mse (MarginMSELoss on the teacher's logit margins)",
     ("attr_margin_mse_s1", "attr_margin_mse_s2", "attr_margin_mse_s3")),
    ("the student starts from its teacher's encoder (the teacher's head dropped; mean pooling)",
     ("attr_start_teacher_body_s1",)),
    ("the student starts from all-MiniLM-L6-v2 with max pooling instead of mean", ("attr_start_maxpool_s1",)),
)
PAIRED_DEFAULTS = REPO / "bench" / "results" / "rerank" / "attr_eval_labels_s{seed}.json"


def _same_teacher(a: dict, b: dict) -> bool:
    """Whether two per-seed results graded the same teacher: its AUC on half B, against the labels and the truth."""
    ca, cb = a["metrics"]["cross"], b["metrics"]["cross"]
    return abs(ca["auc"] - cb["auc"]) < 1e-9 and abs(ca["truth"]["auc"] - cb["truth"]["auc"]) < 1e-9


def paired_levers_table(results_dir: Path = RESULTS, defaults: str = str(PAIRED_DEFAULTS)) -> str:
    """docs/TRAINING.md's table: per ``PAIRED_LEVERS`` file (a seed), the teacher's AUC on half B, the default
    student's and the lever's (served at ``serve.dim``, at full size, and served against the world's truth) and the
    paired difference served; a lever with several seeds adds mean ± sample std of each.

    Args:
        results_dir: where the lever files are.
        defaults: the defaults' file of a seed, ``{seed}`` replaced by the lever run's seed.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a lever's run and its defaults do not share the split and the teacher (the same AUC on half B
            to 1e-9, against the labels and the truth)."""
    import numpy as np

    def cells(ps) -> str:
        m = ps["metrics"]
        return f"{m['student']['auc']:.4f} / {m['student_full']['auc']:.4f} / {m['student']['truth']['auc']:.4f}"

    lines = ["| lever | seed | teacher | the defaults: served / full size / served vs truth | the lever: served / full "
             "size / served vs truth | lever - defaults, served (vs truth) |", "|---|---|---|---|---|---|"]
    for name, stems in PAIRED_LEVERS:
        diffs = []
        for stem in stems:
            run = json.loads((results_dir / f"{stem}.json").read_text())
            ps = run["per_seed"][0]
            base = json.loads(Path(defaults.format(seed=ps["seed"])).read_text())
            bs = base["per_seed"][0]
            if run["split"] != base["split"] or not _same_teacher(ps, bs):
                raise ValueError(f"{stem}: not the split and teacher of its defaults (seed {ps['seed']})")
            d = (ps["metrics"]["student"]["auc"] - bs["metrics"]["student"]["auc"],
                 ps["metrics"]["student"]["truth"]["auc"] - bs["metrics"]["student"]["truth"]["auc"])
            diffs.append(d)
            lines.append(f"| {name} | {ps['seed']} | {ps['metrics']['cross']['auc']:.4f} | {cells(bs)} | {cells(ps)} | "
                         f"{d[0]:+.4f} ({d[1]:+.4f}) |")
        if len(diffs) > 1:
            a = np.array(diffs)
            served, truth = (f"{a[:, i].mean():+.4f} ± {a[:, i].std(ddof=1):.4f}" for i in (0, 1))
            lines.append(f"| {name} | mean ± std ({len(diffs)} seeds) | | | | {served} ({truth}) |")
    return "\n".join(lines)


# The runs behind docs/TRAINING.md's "The student's hybrid score" table: `kp eval-labels --world W --pairs 6000` with
# every default (the hybrid score on), bench/results/hybrid/<stem>.json, in the table's order; the runs before the
# lexical features' version 2 (models.lexical_match.FEATURES_VERSION) fitted version 1, and are kept, marked so.
HYBRID = REPO / "bench" / "results" / "hybrid"
HYBRID_RUNS = ("attr_s123", "attr_s1_v2", "attr_s2_v2", "attr_s3_v2", "listing_s1", "listing_s1_v2", "listing_s2_v2", "listing_s3_v2",
               "alt_s1", "alt_s2", "alt_s3", "alt_s1_v2", "alt_s2_v2", "alt_s3_v2",
               "demo_s1", "demo_s2", "demo_s3", "demo_s1_v2", "demo_s2_v2", "demo_s3_v2", "open_s1_v2", "open_s2_v2", "open_s3_v2")


def hybrid_table(results_dir: Path = HYBRID, runs: tuple[str, ...] = HYBRID_RUNS) -> str:
    """docs/TRAINING.md's table of the hybrid score: per world and seed, AUC on half B of the zero-shot encoder (cosine
    384-d), the teacher, the student's cosine at ``serve.dim`` and the student as served (its hybrid score when it
    kept one), the served student's distance to the teacher and gain over the zero-shot encoder, whether that row
    meets issue 25's bar (within 0.01 of the teacher, at least +0.05 over the zero-shot encoder), and the served
    student against the world's truth (cosine -> served).

    Raises FileNotFoundError for a missing file; KeyError for a file without the models of ``kp eval-labels``."""
    lines = ["| world | seed | lexical features | zero-shot 384-d | teacher | student cosine, served 64-d | "
             "student as served (hybrid) | served - teacher | served - zero-shot | bar met | served vs truth (cosine "
             "-> served) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for world, seed, version, m in hybrid_runs(results_dir, runs):
        zero, cross, served = m["zero_shot"]["auc"], m["cross"]["auc"], m["student"]["auc"]
        cosine = m.get("student_cosine", m["student"])  # no student_cosine: no hybrid kept, served = cosine
        kept = "student_cosine" in m
        gap, gain = served - cross, served - zero
        lines.append(f"| {world} | {seed} | v{version} | {zero:.4f} | {cross:.4f} | {cosine['auc']:.4f} | "
                     f"{served:.4f}{'' if kept else ' (not kept)'} | {gap:+.4f} | {gain:+.4f} | "
                     f"{'yes' if _meets_bar(gap, gain) else 'no'} | "
                     f"{cosine['truth']['auc']:.4f} -> {m['student']['truth']['auc']:.4f} |")
    return "\n".join(lines)


def _meets_bar(gap: float, gain: float) -> bool:
    """Issue 25's bar on AUC: the served student within 0.01 of its teacher (``gap`` = served - teacher) and at least
    +0.05 over the zero-shot encoder (``gain``)."""
    return gap >= -0.01 and gain >= 0.05


def hybrid_runs(results_dir: Path = HYBRID, runs: tuple[str, ...] = HYBRID_RUNS):
    """(world, seed, features_version, metrics) of every seed of every ``kp eval-labels`` file in ``runs`` (stems in
    ``results_dir``), in file order. ``features_version``: the lexical features' version the run fitted its hybrid
    score with (``config.hybrid_features_version``; a file without it predates version 2, so 1). Also read by
    ``bench/lexical_baseline.py``. Raises FileNotFoundError for a missing file."""
    for stem in runs:
        run = json.loads((results_dir / f"{stem}.json").read_text())
        version = int(run.get("config", {}).get("hybrid_features_version", 1))
        for ps in run["per_seed"]:
            yield run["world"], ps["seed"], version, ps["metrics"]


def hybrid_summary(results_dir: Path = HYBRID, runs: tuple[str, ...] = HYBRID_RUNS) -> str:
    """docs/TRAINING.md's summary of ``hybrid_table`` per world and lexical features' version: mean ± sample std over
    its seeds (AUC on half B) of the zero-shot encoder, the teacher, the student's cosine at ``serve.dim`` and the
    student as served, the served student's distance to its teacher and gain over the zero-shot encoder, and on how
    many seeds it meets the bar.

    Raises FileNotFoundError for a missing file; KeyError for a file without the models of ``kp eval-labels``."""
    by_world: dict[tuple[str, int], list[dict]] = {}
    for world, _, version, m in hybrid_runs(results_dir, runs):
        by_world.setdefault((world, version), []).append(m)
    lines = ["| world | lexical features | seeds | zero-shot 384-d | teacher | student cosine, served 64-d | "
             "student as served | served - teacher | served - zero-shot | bar met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (world, version), ms in by_world.items():
        col = {name: [m[name]["auc"] for m in ms] for name in ("zero_shot", "cross", "student")}
        col = {"zero_shot": col["zero_shot"], "cross": col["cross"],  # no hybrid kept: served = its cosine
               "student_cosine": [m.get("student_cosine", m["student"])["auc"] for m in ms], "student": col["student"]}
        gaps = [s - c for s, c in zip(col["student"], col["cross"])]
        gains = [s - z for s, z in zip(col["student"], col["zero_shot"])]
        met = sum(_meets_bar(g, n) for g, n in zip(gaps, gains))
        lines.append(f"| {world} | v{version} | {len(ms)} | " + " | ".join(_mean_std(col[c], ".4f") for c in col) + " | "
                     f"{_mean_std(gaps, '+.4f')} | {_mean_std(gains, '+.4f')} | {met} of {len(ms)} |")
    return "\n".join(lines)


def hybrid_version_pairs(results_dir: Path = HYBRID, runs: tuple[str, ...] = HYBRID_RUNS) -> str:
    """docs/TRAINING.md's paired table of the lexical features' versions: for each (world, seed) run with both, AUC on
    half B of the teacher and of the student's cosine at ``serve.dim`` in each run (the same when training repeated
    itself: the same seed and teacher), the student as served with each version's hybrid score, and v2 - v1; a last
    line gives the mean ± sample std of the differences.

    Raises FileNotFoundError for a missing file."""
    by_key: dict[tuple[str, int], dict[int, dict]] = {}
    for world, seed, version, m in hybrid_runs(results_dir, runs):
        by_key.setdefault((world, seed), {})[version] = m
    lines = ["| world | seed | teacher (v1 run / v2 run) | student cosine, served 64-d (v1 run / v2 run) | served, "
             "v1 | served, v2 | v2 - v1 |", "|---|---|---|---|---|---|---|"]
    diffs = []
    for (world, seed), by_version in by_key.items():
        if not {1, 2} <= set(by_version):
            continue
        v1, v2 = by_version[1], by_version[2]
        cosine = [m.get("student_cosine", m["student"])["auc"] for m in (v1, v2)]
        diffs.append(v2["student"]["auc"] - v1["student"]["auc"])
        lines.append(f"| {world} | {seed} | {v1['cross']['auc']:.4f} / {v2['cross']['auc']:.4f} | {cosine[0]:.4f} / "
                     f"{cosine[1]:.4f} | {v1['student']['auc']:.4f} | {v2['student']['auc']:.4f} | {diffs[-1]:+.4f} |")
    if diffs:
        lines.append(f"| mean ± std ({len(diffs)} pairs) | | | | | | {_mean_std(diffs, '+.4f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default=None, help="simulated judged pairs: demo, alt, attr, listing or open")
    ap.add_argument("--labels", default=None, help="or a judged pairs file")
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--ratios", default="1,5,20", help="teacher-scored unjudged pairs per judged train pair")
    ap.add_argument("--cross", default=None, help="reuse cross-encoders trained on the same split ('{seed}')")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sweep-table", default=None, choices=sorted(SWEEPS),
                    help="print docs/TRAINING.md's table of this world from the sweep files")
    ap.add_argument("--open-vs-real", action="store_true", help="print docs/TRAINING.md's table of the open world "
                    "with the defaults beside the real judgments")
    ap.add_argument("--checkpoint-table", action="store_true", help="print docs/TRAINING.md's table of the "
                    "students kept at their best held-out checkpoint or at their last step, per world")
    ap.add_argument("--paired-levers", action="store_true", help="print docs/TRAINING.md's table of the levers "
                    "tried against the defaults with the same teacher and seed (attr)")
    ap.add_argument("--hybrid-table", action="store_true", help="print docs/TRAINING.md's table of the student's "
                    "hybrid score on the simulated worlds")
    args = ap.parse_args(argv)
    if args.hybrid_table:
        print(hybrid_table())
        print()
        print(hybrid_summary())
        print()
        print(hybrid_version_pairs())
        return {}
    if args.paired_levers:
        print(paired_levers_table())
        return {}
    if args.checkpoint_table:
        print(checkpoint_table())
        return {}
    if args.sweep_table:
        print(sweep_table(args.sweep_table))
        return {}
    if args.open_vs_real:
        print(open_vs_real_table())
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from keyphrase_pipeline.commands import eval_labels

    seeds = [int(x) for x in args.seeds.split(",")]
    ratios = [float(x) for x in args.ratios.split(",")]
    if any(r < 1 for r in ratios):
        raise SystemExit("--ratios: each ratio counts the pointwise pairs (1) too: give values >= 1")
    from keyphrase_pipeline.core.lake import write_text_atomic

    base = load_settings()
    points = []

    def result() -> dict:
        return {"bench": "distill_curve", "world": args.world, "labels": args.labels,
                "simulated": args.world is not None, "pairs": args.pairs, "seeds": seeds, "ratios": ratios,
                "points": points, "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="kp-distill-curve-") as tmp:
        cross = args.cross
        for i, ratio in enumerate(ratios):
            s = base.with_overrides(**{"train.kd_extra_ratio": 1.0, "train.kd_list_ratio": ratio - 1.0})
            keep = Path(tmp) / f"r{i}"
            r = eval_labels.run(s, labels=args.labels, world=args.world, seeds=seeds, n_pairs=args.pairs,
                                keep=str(keep), cross_dir=cross)
            cross = cross or str(keep / "cross-{seed}")  # the teacher of the first point, for every other
            point = {"ratio": ratio, "kd_list_ratio": ratio - 1.0, "summary": r["summary"], "per_seed": [
                {k: ps[k] for k in ("seed", "metrics", "student_seconds", "student_steps", "student_best_step",
                                    "student_stop_reason", "student_distillation")} for ps in r["per_seed"]],
                "split": r["split"], "config": r["config"]}
            points.append(point)
            print(json.dumps({"ratio": ratio, "student_auc": r["summary"]["student"]["auc"],
                              "student_full_auc": r["summary"]["student_full"]["auc"],
                              "cross_auc": r["summary"]["cross"]["auc"]}), flush=True)
            if args.out:  # after every point: a crash later loses no finished point
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(str(Path(args.out).resolve()), json.dumps(result(), indent=2, default=str))
    return result()


if __name__ == "__main__":
    main()
