"""Offline evaluation report: the paper's label-mix ablation (Table 2) and KD-loss comparison (Table 1),
re-run on a synthetic marketplace, plus precision/recall against the world's TRUE relevance split by
item exposure (which the paper cannot measure).

For each label mix (``ctr``, ``llm``, ``llm+kd``, ``llm+ctr+kd``, ``llm+sr+ctr+kd``) a student is trained
with ``keyphrase_pipeline.stages.train_bi.run(..., out=<work dir>)`` (never in the registry, so the CHAMPION is untouched), then:

* **The training labels' judge against the truth** (``keyphrase_pipeline.synthetic.judge_quality.labels_vs_truth``):
  every stored label up to ``ds``, per judge: AUC of P(yes), yes-rate, agreement, precision, recall and
  calibration (a reliability plot), whatever judge labelled them (``judge.backend``).

* **Table 2 columns**, the judge being the simulated LLM (``keyphrase_pipeline.synthetic.world.simulated_p_yes`` at
  ``judge.simulated_accuracy``; the same annotator that labelled the training data when ``judge.backend`` is
  ``simulated``, otherwise a third party the student never learnt from):

  - recommendations of an item = its top ``serve.top_k`` keyphrases by cosine (``serve.dim``, exact FAISS
    inner-product search over the whole keyphrase universe; re-scored and re-ordered by the student's hybrid score
    when it has one, as served) whose score is at least the model's F1-best threshold on the LLM test set (the
    model's own notion of "relevant");
  - **KP** = median, over items, of recommendations that pass the judge's relevance filter;
  - **PR** = share of all recommendations that pass;
  - **Pass@k** (k = 5, 10, 15, 20) = share of the top-k (no threshold) that pass.

* **Against the truth**: precision@K = |top-K ∩ relevant| / K and recall@K = |top-K ∩ relevant| /
  min(K, |relevant|) for K = 5, 10, 20, for ``head`` and rarely exposed ``tail`` items
  (``World.exposure`` over the CTR window ending at ``ds``). Items are a deterministic sample (hash of the
  id) of at most ``train.eval_max_items`` per bucket among active items with at least one relevant
  keyphrase.

* **Table 1** (KD loss): the ``kd_mix`` student trained with each of ``pearson``, ``mse``, ``cosent``;
  F1/P/R against the held-out LLM labels and Pearson rho against the cross-encoder
  (``keyphrase_pipeline.stages.evaluate.evaluate_model``: 2-fold cross-fitted threshold).

Missing inputs are prepared by calling the stages' ``run`` functions: the synthetic world (``keyphrase_pipeline.synthetic.synth``),
CTR labels, one day of LLM labels (select-pairs, label, merge) and the cross-encoder (``keyphrase_pipeline.stages.train_cross``,
which becomes ``CROSS_LATEST``). Output: ``report.html`` (plots embedded), ``report.md`` (plots linked from
``plots/``), ``report.json`` and per-item parquet tables under ``out`` (default ``var/report``), replaced
atomically; its summary stats in ``runs/ds=D/report.json`` with ``html_path`` for the UI.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import html
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, commit_dir, ds_str, read_parquet, tmp_sibling
from keyphrase_pipeline.core.settings import KD_LOSSES, TrainSettings
from keyphrase_pipeline.core.spark import get_spark
from keyphrase_pipeline.labels.judges.base import judge_model_id
from keyphrase_pipeline.models.bi_encoder import encode_items, encode_keyphrases, load_hybrid, load_student
from keyphrase_pipeline.stages import train_bi
from keyphrase_pipeline.stages.evaluate import cross_scores_for, evaluate_model
from keyphrase_pipeline.synthetic.judge_quality import labels_vs_truth

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_OUT = "var/report"
ALL_MIXES = ("ctr", "llm", "llm+kd", "llm+ctr+kd", "llm+sr+ctr+kd")
QUICK_MIXES = ("ctr", "llm+ctr+kd")
QUICK_KD_LOSSES = ("pearson", "mse")
PASS_KS = (5, 10, 15, 20)
TRUTH_KS = (5, 10, 20)
QUICK_MAX_STEPS = 40
QUICK_MAX_ITEMS = 100


# ---- preparation ---------------------------------------------------------------------------------------
def _spark(settings: Settings, spark, app: str):
    if spark is not None:
        return spark

    return get_spark(settings, app)


def prepare(settings: Settings, ds: str | None = None, spark=None) -> tuple[str, str, list[str]]:
    """Make sure the lake has what the report needs; returns (ds, cross-encoder version, steps run).

    Runs the missing stages (synth, ctr-labels, select-pairs + label + merge-labels, train-cross) and raises
    what they raise. DataError (exit 3) when the lake holds a catalog but no synthetic world, or no raw events
    (without ``ds``)."""
    from keyphrase_pipeline.labels.training_data import latest_partition

    lake = Lake.from_settings(settings)
    done: list[str] = []
    if not lake.exists(layout.synth_world_meta_path(lake)):
        if lake.partitions("catalog"):
            raise DataError(f"{lake.root} holds a catalog but no synthetic world (synth/world.json): the report "
                            "measures against a synthetic world's truth and cannot run on a real lake")
        from keyphrase_pipeline.synthetic import synth

        log.info("report: no synthetic world in %s: generating scale %s", lake.root, settings.synth.scale)
        synth.run(settings)
        done.append("synth")
    if ds is None:
        days = lake.partitions("events")
        if not days:
            raise DataError(f"no raw events under {lake.path('events')}")
        ds = days[-1]
    ds = ds_str(ds)
    if not lake.exists(lake.path("ctr_labels", ds=ds)):
        from keyphrase_pipeline.stages import ctr_labels

        spark = _spark(settings, spark, "report")
        ctr_labels.run(settings, ds, spark=spark)
        done.append("ctr-labels")
    if latest_partition(lake, "llm_store", ds) is None:
        from keyphrase_pipeline.stages import llm_label, merge_labels, select_pairs

        spark = _spark(settings, spark, "report")
        select_pairs.run(settings, ds, spark=spark)
        llm_label.run_all(settings, ds)
        merge_labels.run(settings, ds)
        done.append("label")
    cross = registry.latest_cross(settings)
    if not cross or not registry.exists(settings, cross, "cross"):
        from keyphrase_pipeline.stages import train_cross

        trained = train_cross.run(settings, ds)
        if trained.get("skipped"):  # labels that teach nothing (training_data.label_balance): nothing to compare
            raise DataError(f"the labels of {ds} cannot train the report's students: {trained['why']}")
        cross = trained["version"]
        done.append("train-cross")
    return ds, cross, done


# ---- metrics -------------------------------------------------------------------------------------------
def sample_items(world, settings: Settings, ds: str, max_items: int) -> "object":
    """Active catalog items at ``ds`` with >= 1 truly relevant keyphrase, with exposure bucket; a
    deterministic sample (smallest sha1 of the id) of at most ``max_items`` per bucket.

    Returns a pandas DataFrame ``item_id, title, category, impressions, bucket`` (``tail``/``head``),
    ``n_relevant``, sorted by item_id. DataError (exit 3) when there is no catalog snapshot up to ``ds`` or no
    such item; SchemaError (exit 3) when the catalog breaks its contract."""
    import pandas as pd

    from keyphrase_pipeline.labels.training_data import latest_partition

    lake = Lake.from_settings(settings)
    cat_ds = latest_partition(lake, "catalog", ds)
    if cat_ds is None:
        raise DataError(f"no catalog snapshot up to {ds}")
    catalog = read_parquet(lake.path("catalog", ds=cat_ds), contract="catalog")
    catalog = catalog[catalog["active"]].drop_duplicates("item_id")[["item_id", "title", "category"]]
    exposure = world.exposure(settings, ds, settings.ctr.window_days)
    df = catalog.merge(exposure, on="item_id", how="inner")
    n_rel = world.relevant_keyphrases(df["item_id"].to_numpy())
    df["n_relevant"] = [len(n_rel[int(i)]) for i in df["item_id"]]
    df = df[df["n_relevant"] > 0]
    df["_h"] = [hashlib.sha1(f"kp-report:{i}".encode()).hexdigest() for i in df["item_id"]]
    parts = [g.sort_values("_h").head(max_items) for _, g in df.groupby("bucket")]
    if not parts:
        raise DataError(f"no active item with a relevant keyphrase at {ds}")
    return pd.concat(parts).drop(columns="_h").sort_values("item_id").reset_index(drop=True)


def top_k(item_vecs, kp_vecs, k: int):
    """(scores, indices) of the top-``k`` keyphrases per item: exact inner product (FAISS Flat).

    ``item_vecs``: ``(n, d)``, ``kp_vecs``: ``(m, d)``, float32, L2-normalised. Returns float32 scores (cosine)
    and int64 row indices into ``kp_vecs``, both ``(n, min(k, m))``, best first."""
    import faiss

    index = faiss.IndexFlatIP(kp_vecs.shape[1])
    index.add(np.ascontiguousarray(kp_vecs, dtype=np.float32))
    return index.search(np.ascontiguousarray(item_vecs, dtype=np.float32), min(k, kp_vecs.shape[0]))


def score_recommendations(settings: Settings, world, items, kps, scores, idx, threshold: float) -> tuple:
    """Table 2 columns and truth precision/recall from top-K lists; returns (summary, per-item frame,
    recommendations frame).

    ``items``: frame ``item_id, bucket, impressions`` (``sample_items``); ``kps``: ``keyphrase_id`` per row of
    the index; ``scores``/``idx``: ``top_k`` output ``(n, k)`` (or the student's served scores, ``offline_eval``);
    ``threshold``: on the scale of ``scores``. Per-item frame:
    ``item_id, bucket, impressions, n_relevant, recommended, kp_passing, pass@k, precision@k, recall@k``;
    recommendations frame: ``item_id, rank, keyphrase_id, score, p_yes, judge_pass, relevant`` (n * k rows).
    Shares are in [0, 1]."""
    import pandas as pd

    from keyphrase_pipeline.synthetic.world import simulated_p_yes

    kp_ids = kps["keyphrase_id"].to_numpy(np.int64)
    n, k = idx.shape
    item_ids = items["item_id"].to_numpy(np.int64)
    rec_kp = kp_ids[idx]                                     # (n, k)
    rep_items = np.repeat(item_ids, k).reshape(n, k)
    p_yes = simulated_p_yes(world, rep_items.ravel(), rec_kp.ravel(), accuracy=settings.judge.simulated_accuracy,
                            seed=settings.synth.seed, errors=settings.judge.simulated_errors).reshape(n, k)
    passes = p_yes >= settings.judge.threshold
    rel_sets = world.relevant_keyphrases(item_ids)
    relevant = np.array([[kid in rs for kid in row] for row, rs in
                         zip(rec_kp.tolist(), (set(rel_sets[int(i)].tolist()) for i in item_ids))], dtype=bool)
    n_rel = np.array([len(rel_sets[int(i)]) for i in item_ids])
    per = pd.DataFrame({"item_id": item_ids, "bucket": items["bucket"].to_numpy(),
                        "impressions": items["impressions"].to_numpy(), "n_relevant": n_rel})
    kept = scores >= threshold
    per["recommended"] = kept.sum(1)
    per["kp_passing"] = (kept & passes).sum(1)
    for kk in PASS_KS:
        kk_ = min(kk, k)
        per[f"pass@{kk}"] = passes[:, :kk_].mean(1)
    for kk in TRUTH_KS:
        kk_ = min(kk, k)
        hits = relevant[:, :kk_].sum(1)
        per[f"precision@{kk}"] = hits / kk_
        per[f"recall@{kk}"] = hits / np.minimum(kk_, np.maximum(n_rel, 1))
    total_rec = int(kept.sum())
    summary = {
        "items": int(n),
        "threshold": float(threshold),
        "KP": float(np.median(per["kp_passing"])) if n else None,
        "PR": float((kept & passes).sum() / total_rec) if total_rec else None,
        "recommended_per_item_median": float(np.median(per["recommended"])) if n else None,
        **{f"pass@{kk}": float(per[f"pass@{kk}"].mean()) for kk in PASS_KS},
        "truth": {},
    }
    for bucket in ("tail", "head", "all"):
        g = per if bucket == "all" else per[per["bucket"] == bucket]
        summary["truth"][bucket] = {"items": int(len(g)), **{
            f"{m}@{kk}": (float(g[f"{m}@{kk}"].mean()) if len(g) else None)
            for m in ("precision", "recall") for kk in TRUTH_KS}}
    recs = pd.DataFrame({"item_id": rep_items.ravel(), "rank": np.tile(np.arange(1, k + 1), n),
                         "keyphrase_id": rec_kp.ravel(), "score": scores.ravel().astype(np.float32),
                         "p_yes": p_yes.ravel(), "judge_pass": passes.ravel(), "relevant": relevant.ravel()})
    return summary, per, recs


def offline_eval(settings: Settings, model_dir: str, world, items, kps, threshold: float) -> tuple:
    """Embed the sampled items and every keyphrase with the student, rank, and score (see the module doc).

    ``items``: ``sample_items`` frame; ``kps``: frame ``keyphrase_id, text``; ``threshold``: on the student's served
    scale (``evaluate_model``'s): a cosine at ``serve.dim``, or, for a student with a hybrid score
    (``keyphrase_pipeline.models.lexical_match``), that score, with which each item's top K are then re-scored and
    re-ordered as ``kp recommend`` serves them. Returns ``score_recommendations``' (summary, per-item frame,
    recommendations frame). ConfigError (exit 2) when ``model_dir`` is not a sentence-transformers directory or
    holds a hybrid score this code cannot compute."""

    model = load_student(model_dir, settings.train.device)
    dim = settings.serve.dim
    kp_vecs = encode_keyphrases(model, kps["text"].tolist(), dim)
    item_vecs = encode_items(model, items["title"].tolist(), items["category"].tolist(), dim)
    k = max(settings.serve.top_k, max(PASS_KS), max(TRUTH_KS))
    scores, idx = top_k(item_vecs, kp_vecs, k)
    hybrid = load_hybrid(model_dir)
    if hybrid is not None:  # the served order: each item's top k re-scored (artifacts.hybrid_rescore)
        n, kk = idx.shape
        served = hybrid.score(scores.ravel(), np.repeat(items["title"].to_numpy(dtype=object), kk).tolist(),
                              np.repeat(items["category"].to_numpy(dtype=object), kk).tolist(),
                              kps["text"].to_numpy(dtype=object)[idx].ravel().tolist()).reshape(n, kk)
        order = np.argsort(-served, axis=1, kind="stable")
        scores, idx = np.take_along_axis(served, order, axis=1), np.take_along_axis(idx, order, axis=1)
    return score_recommendations(settings, world, items, kps, scores, idx, threshold)


# ---- the stage ----------------------------------------------------------------------------------------
def _slug(mix: str, kd: str) -> str:
    return f"{mix.replace('+', '-')}__{kd}"


def _check_mixes(mixes) -> list[str]:

    out = []
    for m in mixes:
        try:
            out.append(TrainSettings(label_mix=m).label_mix)
        except Exception:
            raise ConfigError(f"label mix {m!r}: parts must be among ctr, llm, kd, sr") from None
    if not out:
        raise ConfigError("no label mix to evaluate")
    return list(dict.fromkeys(out))


def mean_and_spread(records: list):
    """Element-wise mean and sample standard deviation of nested dicts of numbers (one dict per seed).

    Args:
        records: list of dicts with the same keys; numeric leaves (int/float) are averaged; a leaf that is
            None or missing in any record gives None; other leaves (str, bool) are taken from the first record.
    Returns:
        (mean, std): two values shaped like the records; std is 0.0 for a single record, None for
        non-numeric leaves.
    """
    first = records[0]
    if isinstance(first, dict):
        mean, std = {}, {}
        for key in first:
            mean[key], std[key] = mean_and_spread([r.get(key) if isinstance(r, dict) else None for r in records])
        return mean, std

    def numeric(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not numeric(first):
        return first, None
    if not all(numeric(r) for r in records):
        return None, None
    v = np.asarray(records, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def _check_seeds(seeds, settings: Settings) -> list[int]:
    try:
        out = list(dict.fromkeys(int(x) for x in (seeds if seeds is not None else [settings.train.seed])))
    except (TypeError, ValueError):
        raise ConfigError(f"seeds {seeds!r}: give integers") from None
    if not out:
        raise ConfigError("give at least one seed")
    return out


@dataclasses.dataclass(frozen=True)
class ReportRun:
    """What every student of one report is trained and evaluated with: the run's ``settings``, the day ``ds``,
    the teacher ``cross_version``, the work folder ``tmp`` (committed to the output at the end) and
    ``_evaluation_inputs``' record (``data``, ``teacher``, ``world``, ``items``, ``kps``)."""

    settings: Settings
    ds: str
    cross_version: str
    tmp: str
    inputs: dict


def _train_and_evaluate(run: ReportRun, mix: str, kd: str, seed: int, offline: bool) -> dict:
    """One student (``mix``, ``kd``, ``seed``) trained into the work dir and evaluated; its result record."""

    settings, ds, cross_version, tmp = run.settings, run.ds, run.cross_version, run.tmp
    data, teacher, world = run.inputs["data"], run.inputs["teacher"], run.inputs["world"]
    items, kps = run.inputs["items"], run.inputs["kps"]
    slug = f"{_slug(mix, kd)}__seed{seed}"
    t1 = time.perf_counter()
    log.info("report: training %s (kd %s, seed %d)", mix, kd, seed)
    s = settings.with_overrides(**{"train.seed": seed})
    trained = train_bi.run(s, ds, cross=cross_version, out=str(Path(tmp) / "_models" / slug), label_mix=mix,
                           kd_loss=kd)
    model_dir = layout.version_model_dir(trained["path"])
    metrics = evaluate_model(s, model_dir, ds=None, data=data, teacher=teacher, world=None)
    res = {"seed": seed, "label_mix": mix, "trained_label_mix": trained.get("label_mix"), "kd_loss": kd,
           "tasks": trained.get("task_rows"),
           "tasks_skipped": trained.get("tasks_skipped"), "steps": trained.get("steps"),
           "train_seconds": trained.get("train_seconds"), "llm": metrics["llm"], "rho_cross": metrics["rho_cross"]}
    if offline:
        summary, per, recs = offline_eval(s, model_dir, world, items, kps, metrics["llm"]["threshold"])
        res["offline"] = summary
        mdir = Path(tmp) / "mixes" / slug
        mdir.mkdir(parents=True)
        per.to_parquet(mdir / "per_item.parquet", index=False)
        recs.to_parquet(mdir / "recommendations.parquet", index=False)
    res["seconds"] = round(time.perf_counter() - t1, 1)
    log.info("report: %s/%s seed %d done in %.0f s: F1 %.3f rho %s", mix, kd, seed, res["seconds"],
             res["llm"]["f1"], res["rho_cross"])
    return res


def _arm(per_seed: list[dict]) -> dict:
    """One arm's record: every number of ``llm``, ``rho_cross``, ``offline``, ``steps`` averaged over the seeds,
    their sample std under ``spread`` (same shape), and each seed's own record under ``per_seed``."""
    keys = ("llm", "rho_cross", "offline", "steps", "train_seconds")
    mean, std = mean_and_spread([{k: r[k] for k in keys if k in r} for r in per_seed])
    first = per_seed[0]
    return {"label_mix": first["label_mix"], "kd_loss": first["kd_loss"], "tasks": first["tasks"],
            "tasks_skipped": first["tasks_skipped"], **mean, "seeds": [r["seed"] for r in per_seed],
            "spread": std, "per_seed": per_seed, "seconds": round(sum(r["seconds"] for r in per_seed), 1)}


def _check_arguments(settings: Settings, mixes, kd_losses, kd_mix: str, seeds, quick: bool):
    """Validate the arguments before any work; returns (settings, mixes, kd_losses, kd_mix, seeds)."""
    if quick:
        settings = settings.with_overrides(**{
            "train.bi_max_steps": min(settings.train.bi_max_steps if settings.train.bi_max_steps > 0 else QUICK_MAX_STEPS,
                                      QUICK_MAX_STEPS),
            "train.eval_max_items": min(settings.train.eval_max_items, QUICK_MAX_ITEMS)})
    mixes = _check_mixes(mixes or (QUICK_MIXES if quick else ALL_MIXES))
    kd_losses = list(kd_losses or (QUICK_KD_LOSSES if quick else KD_LOSSES))
    bad = sorted(set(kd_losses) - set(KD_LOSSES))
    if bad:
        raise ConfigError(f"kd losses {bad}: choose from {KD_LOSSES}")
    kd_mix = _check_mixes([kd_mix])[0]
    if "kd" not in kd_mix.split("+"):
        raise ConfigError(f"kd_mix {kd_mix!r} has no kd task")
    return settings, mixes, kd_losses, kd_mix, _check_seeds(seeds, settings)


def _evaluation_inputs(settings: Settings, ds: str, cross_version: str) -> dict:
    """What every arm is evaluated on: the world, the LLM test pairs and the teacher's scores on them, the
    sampled items and the keyphrase universe."""
    from keyphrase_pipeline.labels.training_data import load_training_data
    from keyphrase_pipeline.synthetic.world import World

    world = World.load(settings)
    data = load_training_data(settings, ds, need_ctr=False, need_sr=False)
    teacher = cross_scores_for(settings, data.llm_test, layout.model_dir(settings, cross_version, "cross"))
    items = sample_items(world, settings, ds, settings.train.eval_max_items)
    kps = read_parquet(Lake.from_settings(settings).path("keyphrases"), contract="keyphrases")[["keyphrase_id", "text"]]
    kps = kps.drop_duplicates("keyphrase_id").reset_index(drop=True)
    return {"world": world, "data": data, "teacher": teacher, "items": items, "kps": kps}


def restore_day_stats(lake, path: str, saved) -> None:
    """Put back a stage's run stats for the day (``lake.run_stats_path``) after training an extra student
    overwrote them: ``saved`` (what was read before; None when there was none: the file is then removed)."""
    if saved is not None:
        lake.write_json(path, saved)
    elif lake.exists(path):
        from keyphrase_pipeline.core.lake import _fs

        fs, p = _fs(path)
        fs.rm(p)


def run(settings: Settings, ds: str | None = None, mixes=None, out: str | None = None, quick: bool = False,
        kd_losses=None, kd_mix: str = "llm+ctr+kd", spark=None, keep_models: bool = False, seeds=None) -> dict:
    """Train one student per label mix (and per KD loss) and per seed, evaluate, write the report; return the
    summary.

    Every arm is trained once per seed in ``seeds`` (default: ``train.seed`` only). Each number of the report
    is the mean over the seeds, with its sample std beside it (``spread`` in the JSON); each seed's own record
    is kept under ``per_seed``.

    Raises ConfigError (exit 2) for an unknown mix or KD loss or a seed that is not an integer, before any
    work; DataError (exit 3) on unusable data (a real lake without a synthetic world, no events, no sampled
    items); and what the stages it runs raise (``prepare``, ``train_bi.run``). The output directory is
    replaced only on success."""
    from keyphrase_pipeline.labels.training_data import label_balance

    t0 = time.perf_counter()
    settings, mixes, kd_losses, kd_mix, seeds = _check_arguments(settings, mixes, kd_losses, kd_mix, seeds, quick)
    lake = Lake.from_settings(settings)
    ds, cross_version, prepared = prepare(settings, ds, spark=spark)
    t_prep = time.perf_counter() - t0
    champion_before = registry.champion(settings)
    inputs = _evaluation_inputs(settings, ds, cross_version)
    items, kps = inputs["items"], inputs["kps"]
    balance = label_balance(settings, inputs["data"])
    if not balance["usable"]:  # every llm arm would train without its labels: not the ablation asked for
        raise DataError(f"the labels of {ds} cannot train the report's students: {balance['why']}")
    labels_judge = labels_vs_truth(settings, ds, world=inputs["world"])
    log.info("report for %s: mixes %s, kd losses %s on %s, seeds %s; %d items (%s), %d keyphrases, %d LLM test "
             "pairs", ds, mixes, kd_losses, kd_mix, seeds, len(items), items["bucket"].value_counts().to_dict(),
             len(kps), len(inputs["data"].llm_test))

    out_dir = str(Path(out or DEFAULT_OUT).resolve())
    tmp = tmp_sibling(out_dir)
    Path(tmp).mkdir(parents=True)
    runs_bi = lake.run_stats_path(ds, "train_bi")
    saved_bi = lake.read_json(runs_bi) if lake.exists(runs_bi) else None
    arms = list(dict.fromkeys([(m, "pearson") for m in mixes] + [(kd_mix, k) for k in kd_losses]))
    results: dict[tuple[str, str], dict] = {}
    report_run = ReportRun(settings, ds, cross_version, tmp, inputs)
    try:
        for mix, kd in arms:
            offline = kd == "pearson" and mix in mixes
            results[(mix, kd)] = _arm([
                _train_and_evaluate(report_run, mix, kd, seed, offline) for seed in seeds])
        if not keep_models:
            shutil.rmtree(Path(tmp) / "_models", ignore_errors=True)
        if registry.champion(settings) != champion_before:  # pragma: no cover - train_bi never promotes
            raise DataError("the report changed the registry's CHAMPION")
        summary = {
            "ds": ds, "quick": quick, "mixes": mixes, "kd_losses": kd_losses, "kd_mix": kd_mix, "seeds": seeds,
            "cross_version": cross_version, "prepared": prepared, "world": inputs["world"].meta.get("sizes"),
            "judge": {"kind": "simulated", "model": judge_model_id(settings.with_overrides(**{"judge.backend": "simulated"})),
                      "accuracy": settings.judge.simulated_accuracy,
                      "errors": settings.judge.simulated_errors, "threshold": settings.judge.threshold},
            "labels_judge": labels_judge,
            "settings": {"bi_max_steps": settings.train.bi_max_steps, "serve_dim": settings.serve.dim,
                         "top_k": settings.serve.top_k, "eval_max_items": settings.train.eval_max_items,
                         "window_days": settings.ctr.window_days},
            "eval_items": {str(k): int(v) for k, v in items["bucket"].value_counts().items()},
            "keyphrases": int(len(kps)), "llm_test_rows": int(len(inputs["data"].llm_test)),
            "ablation": [results[(m, "pearson")] for m in mixes],
            "kd_comparison": [results[(kd_mix, k)] for k in kd_losses],
            "prepare_seconds": round(t_prep, 1),
        }
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        write_outputs(tmp, summary)
        commit_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:  # training a report student must not replace the day's train_bi stats
        restore_day_stats(lake, runs_bi, saved_bi)
    summary.update({"out": out_dir, "html_path": str(Path(out_dir) / "report.html"),
                    "md_path": str(Path(out_dir) / "report.md"), "json_path": str(Path(out_dir) / "report.json")})
    lake.write_run_stats(ds, "report", summary)
    log.info("report written to %s in %.0f s", summary["html_path"], summary["seconds"])
    return summary


# ---- rendering ----------------------------------------------------------------------------------------
def _pct(v, sd=None) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")


def _num(v, fmt="{:.3f}", sd=None) -> str:
    if v is None:
        return "—"
    return fmt.format(v) + ("" if sd is None else " ± " + fmt.format(sd))


def tables(summary: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Header and rows of each report table (shared by the Markdown and HTML renderers). With more than one
    seed every cell is ``mean ± sample std`` over the seeds."""
    many = len(summary.get("seeds") or [None]) > 1

    def sd_of(r, *path):
        if not many:
            return None
        v = r.get("spread") or {}
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        return v

    t2 = (["label mix", "KP", "PR %", *[f"P@{k} %" for k in PASS_KS], "F1 (LLM test)", "rho vs cross", "steps"], [])
    tr = (["label mix", "bucket", "items", *[f"{m}@{k}" for m in ("precision", "recall") for k in TRUTH_KS]], [])
    for r in summary["ablation"]:
        o = r.get("offline") or {}
        t2[1].append([r["label_mix"], _num(o.get("KP"), "{:.1f}", sd_of(r, "offline", "KP")),
                      _pct(o.get("PR"), sd_of(r, "offline", "PR")),
                      *[_pct(o.get(f"pass@{k}"), sd_of(r, "offline", f"pass@{k}")) for k in PASS_KS],
                      _num(r["llm"]["f1"], sd=sd_of(r, "llm", "f1")), _num(r["rho_cross"], sd=sd_of(r, "rho_cross")),
                      _num(r["steps"], "{:.0f}")])
        for b in ("tail", "head", "all"):
            t = (o.get("truth") or {}).get(b) or {}
            tr[1].append([r["label_mix"], b, _num(t.get("items", 0), "{:.0f}"),
                          *[_num(t.get(f"{m}@{k}"), sd=sd_of(r, "offline", "truth", b, f"{m}@{k}"))
                            for m in ("precision", "recall") for k in TRUTH_KS]])
    t1 = (["KD loss", "F1", "precision", "recall", "AUC", "rho vs cross"], [])
    for r in summary["kd_comparison"]:
        m = r["llm"]
        t1[1].append([r["kd_loss"], *[_num(m.get(key), sd=sd_of(r, "llm", key))
                                      for key in ("f1", "precision", "recall", "auc")],
                      _num(r["rho_cross"], sd=sd_of(r, "rho_cross"))])
    out = {"table2": t2, "truth": tr, "table1": t1}
    if summary.get("labels_judge"):  # reports written before it have no such table
        out["labels"] = labels_table(summary["labels_judge"])
    return out


def labels_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the training labels' judge against the truth (``judge_quality.labels_vs_truth``)."""
    head = ["judge", "model", "pairs", "truly relevant", "AUC", f"yes-rate (P(yes) >= {result['threshold']:g})",
            "agreement", "precision", "recall", "mean P(yes) relevant / not", "ECE"]
    rows = [[j["judge"], j["judge_model"], _num(j["pairs"], "{:.0f}"), _num(j["relevant_share"]), _num(j["auc"]),
             _num(j["yes_rate"]), _num(j["agreement"]), _num(j["precision"]), _num(j["recall"]),
             f"{_num(j['mean_p_yes_relevant'])} / {_num(j['mean_p_yes_irrelevant'])}", _num(j["ece"])]
            for j in result["judges"]]
    return head, rows


def plot(summary: dict, plot_dir: Path) -> list[str]:
    """PNG plots (matplotlib, Agg): Pass@k per mix, recall@K tail vs head per mix. Returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    names = []
    rows = [r for r in summary["ablation"] if r.get("offline")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.plot(PASS_KS, [100 * r["offline"][f"pass@{k}"] for k in PASS_KS], marker="o", label=r["label_mix"])
    ax.set_xlabel("k")
    ax.set_ylabel("Pass@k (%) — simulated LLM judge")
    ax.set_title(f"Pass@k by label mix ({summary['ds']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / "pass_at_k.png", dpi=100)
    plt.close(fig)
    names.append("pass_at_k.png")

    k = max(TRUTH_KS)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    for j, b in enumerate(("tail", "head")):
        vals = [(r["offline"]["truth"][b].get(f"recall@{k}") or 0.0) for r in rows]
        ax.bar(x + (j - 0.5) * 0.38, vals, width=0.38, label=f"{b} items")
    ax.set_xticks(x, [r["label_mix"] for r in rows], rotation=15)
    ax.set_ylabel(f"recall@{k} of truly relevant keyphrases")
    ax.set_ylim(0, 1)
    ax.set_title("Recall against the truth, rarely exposed (tail) vs head items")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / f"recall_at_{k}.png", dpi=100)
    plt.close(fig)
    names.append(f"recall_at_{k}.png")
    if summary.get("labels_judge"):
        from keyphrase_pipeline.synthetic.judge_quality import calibration_plot

        calibration_plot(summary["labels_judge"], plot_dir / "labels_judge_calibration.png")
        names.append("labels_judge_calibration.png")
    return names


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


T2_TITLE = "Table 2: label-mix ablation (simulated LLM judge: circular)"
T2_NOTE = ("KP, PR and Pass@k are judged by the same simulated annotator that made the LLM training labels, so "
           "they reward copying that annotator: read them after the truth table above.")
T2_NOTE_OTHER = ("KP, PR and Pass@k are judged by the SIMULATED annotator of the settings, while training labels "
                 "came from {labels}: these columns measure agreement with that annotator, not with the labeller; "
                 "read the truth table above first.")
LABELS_TITLE = "The training labels' judge against the truth"
LABELS_NOTE = ("Every stored label of the lake up to the report's day against the world's hidden truth "
               "(`kp judge-quality`): AUC of P(yes), decisions at the threshold, calibration (ECE: mean |P(yes) - "
               "relevant share| over 10 bins, weighted by pairs).")


def _t2_note(summary: dict) -> str:
    """Table 2's note: circular when the Pass@k annotator (``summary["judge"]["model"]``) made every training label."""
    judge = summary.get("judge") or {}
    others = [j for j in (summary.get("labels_judge") or {}).get("judges", [])
              if j["judge_model"] != judge.get("model")]
    if not others or not judge.get("model"):
        return T2_NOTE
    return T2_NOTE_OTHER.format(labels=", ".join(f"{j['judge']} / {j['judge_model']}" for j in others))


INTRO = ("Students trained on each label mix (Table 2 of LLMDistill4Ads) and with each distillation loss "
         "(Table 1), on the synthetic marketplace. The relevance judge of KP/PR/Pass@k is the SIMULATED LLM "
         "annotator (agrees with the hidden truth {acc:.0%} of the time), not a real LLM. Precision/recall are "
         "against the world's TRUE relevance. Definitions: docs/REPORT.md and `keyphrase_pipeline/synthetic/report.py`.")


def write_outputs(out_dir: str, summary: dict) -> None:
    """Write ``report.json``, ``report.md``, ``report.html`` (plots embedded) and ``plots/*.png`` into ``out_dir``
    (an existing directory; files overwritten). KeyError when ``summary`` lacks a field ``run`` puts there."""
    out = Path(out_dir)
    pngs = plot(summary, out / "plots")
    t = tables(summary)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    meta = (f"ds {summary['ds']} · world {summary['world']} · eval items {summary['eval_items']} · "
            f"{summary['keyphrases']} keyphrases · {summary['llm_test_rows']} LLM test pairs · cross-encoder "
            f"{summary['cross_version']} · student steps {summary['settings']['bi_max_steps']} · "
            f"serve dim {summary['settings']['serve_dim']} · seeds {summary.get('seeds')} (cells: mean ± sample std "
            f"when more than one) · {'QUICK run · ' if summary['quick'] else ''}"
            f"{summary['seconds']} s")
    intro = INTRO.format(acc=summary["judge"]["accuracy"])
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# Offline evaluation report ({summary['ds']})", "", intro, "", meta, "",
          "## Precision / recall against the truth, by exposure", "", _md_table(*t["truth"]), "",
          *([f"## {LABELS_TITLE}", "", LABELS_NOTE, "", _md_table(*t["labels"]), ""] if "labels" in t else []),
          f"## {T2_TITLE}", "", _t2_note(summary), "", _md_table(*t["table2"]), "",
          f"## Table 1: distillation loss ({summary['kd_mix']}, vs LLM test labels)", "", _md_table(*t["table1"]), "",
          "## Plots", "", *[f"![{p}](plots/{p})" for p in pngs], "", f"Generated {generated}.", ""]
    (out / "report.md").write_text("\n".join(md))
    imgs = "".join(
        f'<img alt="{p}" src="data:image/png;base64,{base64.b64encode((out / "plots" / p).read_bytes()).decode()}">'
        for p in pngs)
    labels_html = (f"<h2>{html.escape(LABELS_TITLE)}</h2><p>{html.escape(LABELS_NOTE)}</p>{_html_table(*t['labels'])}"
                   if "labels" in t else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>keyphrase-pipeline report {summary['ds']}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:48%;margin:4px}}.meta{{color:#555}}</style></head><body>
<h1>Offline evaluation report ({html.escape(summary['ds'])})</h1><p>{html.escape(intro)}</p><p class="meta">{html.escape(meta)}</p>
<h2>Precision / recall against the truth, by exposure</h2>{_html_table(*t['truth'])}
{labels_html}<h2>{html.escape(T2_TITLE)}</h2><p>{html.escape(_t2_note(summary))}</p>{_html_table(*t['table2'])}
<h2>Table 1: distillation loss ({html.escape(summary['kd_mix'])}, vs LLM test labels)</h2>{_html_table(*t['table1'])}
<h2>Plots</h2>{imgs}<p class="meta">Generated {generated}.</p></body></html>"""
    (out / "report.html").write_text(page, encoding="utf-8")


# ---- CLI ----------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="logical date YYYY-MM-DD (default: the newest day of raw events)")
    parser.add_argument("--mixes", default=None,
                        help=f"comma-separated label mixes (default: {','.join(ALL_MIXES)}; quick: {','.join(QUICK_MIXES)})")
    parser.add_argument("--kd-losses", default=None, help=f"comma-separated, among {','.join(KD_LOSSES)}")
    parser.add_argument("--kd-mix", default="llm+ctr+kd", help="label mix of the KD-loss comparison (Table 1)")
    parser.add_argument("--out", default=None, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_MAX_STEPS} steps, <= {QUICK_MAX_ITEMS} items per bucket, 2 mixes")
    parser.add_argument("--keep-models", action="store_true", help="keep the trained students under OUT/_models")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated training seeds; each arm is trained once per seed and reported as "
                             "mean ± sample std (default: train.seed only)")


def main(settings: Settings, args) -> int:
    """``kp report``: ``run`` with the parsed options; prints one JSON line with ds and the report paths, then one
    per label mix (KP, PR, Pass@k, F1, tail recall@20), and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""

    def split(v):
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    summary = run(settings, ds=args.ds, mixes=split(args.mixes), out=args.out, quick=args.quick,
                  kd_losses=split(args.kd_losses), kd_mix=args.kd_mix, keep_models=args.keep_models,
                  seeds=split(args.seeds))
    print(json.dumps({k: summary[k] for k in ("ds", "html_path", "md_path", "seconds")}))
    for r in summary["ablation"]:
        o = r.get("offline", {})
        print(json.dumps({"label_mix": r["label_mix"], "KP": o.get("KP"), "PR": o.get("PR"),
                          **{f"pass@{k}": o.get(f"pass@{k}") for k in PASS_KS}, "f1": r["llm"]["f1"],
                          "recall@20_tail": o.get("truth", {}).get("tail", {}).get("recall@20")}))
    return 0
