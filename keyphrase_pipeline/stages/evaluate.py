"""Evaluate a student on the stable held-out LLM test set (and, in a synthetic world, against the truth),
and gate its promotion against the champion re-evaluated on the SAME test set today.

Metrics (``evaluate_model``):

* ``llm``: F1 / precision / recall of ``score(item, keyphrase) >= threshold`` against the LLM labels of the
  held-out split (the paper's Table 1 columns), plus ROC AUC; the score is the student's as served: its cosine at
  ``serve.dim``, plus its hybrid score's lexical bonus when it has one (``keyphrase_pipeline.models.lexical_match``). The threshold is tuned
  by **2-fold cross-fitting**: the test pairs are split into two folds by a hash of ``text_hash``; each
  fold is predicted with the F1-best threshold of the *other* fold, so no pair is judged with a
  threshold tuned on itself. ``threshold`` reports the F1-best threshold on the whole set (for serving).
* ``rho_cross``: Pearson correlation of the student's score with the cross-encoder's P(relevant) on the
  same pairs (the paper's distillation column).
* ``truth`` (synthetic world only): the same predictions against TRUE relevance; and ``relevance_recall_at_k``:
  for items sampled from the rarely exposed (``tail``) and head buckets (``World.exposure``), the share
  of each item's truly relevant keyphrases found in its top-K by cosine over the whole keyphrase
  universe (``recall@K = |top-K ∩ relevant| / min(K, |relevant|)``), and precision@K: the retrieval's order,
  before ``kp recommend`` re-scores the top ``serve.hybrid_depth`` with a hybrid score.

Promotion (``run``): promoted when the challenger's LLM-test F1 >= champion's F1 - ``train.promote_tolerance``
(first model ever: promoted; ``force_promote``: promoted). The decision and its reason go to the version's
``promotion.json`` and to ``runs/ds=D/evaluate.json``.

A close or risky call waits for a person (``review_reasons``, settings ``review.*``): the challenger's F1 within
``review.margin_band`` of the gate's threshold, or, for a promotion the gate would make, the student's agreement
with the cross-encoder dropping more than ``review.agreement_drop`` below the champion's, or more than
``review.topk_changed_share`` of sampled items keeping fewer than half of their top-K keyphrases
(``topk_change``). Then ``run`` promotes nothing and records the review as pending; ``apply_review`` carries out
the person's answer (the DAG's approval task, or ``kp evaluate --review approve|reject``). Clear wins and clear
losses stay automatic.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError, GateError
from keyphrase_pipeline.core.lake import Lake, ds_str, parquet_dataset, read_parquet, rows_where, sample_rows
from keyphrase_pipeline.core.truth import load_truth
from keyphrase_pipeline.labels.kd_pairs import teacher_scores
from keyphrase_pipeline.models.bi_encoder import (
    encode_items,
    encode_keyphrases,
    load_hybrid,
    load_student,
    served_scores,
)
from keyphrase_pipeline.models.metrics import auc_or_none, best_f1_cut, pearson, prf

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


# ---- metric helpers ----------------------------------------------------------------------------------
def _folds(text_hashes) -> np.ndarray:
    return np.array([int(hashlib.sha1(f"kp-fold:{h}".encode()).hexdigest()[:8], 16) % 2 for h in text_hashes])


def crossfit_predictions(y, s, text_hashes) -> tuple[np.ndarray, list[float]]:
    """Binary predictions where each fold uses the F1-best threshold of the other fold.

    ``y``: 0/1 ``(n,)``; ``s``: float scores ``(n,)`` (cosine); ``text_hashes``: ``n`` str (fold = sha1 of each).
    Returns (int ``np.ndarray`` ``(n,)`` of 0/1, [threshold used for fold 0, for fold 1])."""
    folds = _folds(text_hashes)
    pred = np.zeros(len(s), dtype=int)
    thresholds = []
    for f in (0, 1):
        other = folds != f
        thr = best_f1_cut(np.asarray(y)[other], np.asarray(s)[other]) if other.any() else 0.5
        thresholds.append(thr)
        pred[folds == f] = (np.asarray(s)[folds == f] >= thr).astype(int)
    return pred, thresholds


def relevance_recall_at_k(settings: Settings, model, world, ds: str, k: int, max_items: int) -> dict:
    """recall@K / precision@K of truly relevant keyphrases, tail vs head items (``world``: a
    ``keyphrase_pipeline.core.truth.TruthProvider``).

    Cosine at ``serve.dim`` over the whole keyphrase universe, at most ``max_items`` items per bucket. Returns
    ``{"k", "keyphrases", "tail": {...}, "head": {...}}`` with shares in [0, 1] (``{"items": 0}`` for a bucket
    without items that have a relevant keyphrase); {} when there is no catalog snapshot up to ``ds``. Raises
    DataError (exit 3) when ``raw/keyphrases`` is missing, SchemaError (exit 3) on a broken contract."""
    import pandas as pd

    from keyphrase_pipeline.labels.training_data import latest_partition

    lake = Lake.from_settings(settings)
    cat_ds = latest_partition(lake, "catalog", ds)
    if cat_ds is None:
        return {}
    catalog = parquet_dataset(lake.path("catalog", ds=cat_ds), contract="catalog")
    keyphrases = read_parquet(lake.path("keyphrases"), contract="keyphrases")[["keyphrase_id", "text"]]
    exposure = world.exposure(settings, ds, settings.ctr.window_days)
    keyphrase_emb = encode_keyphrases(model, keyphrases["text"].tolist(), settings.serve.dim)
    keyphrase_ids = keyphrases["keyphrase_id"].to_numpy()
    out = {"k": k, "keyphrases": int(len(keyphrases))}
    for bucket in ("tail", "head"):
        ids = exposure.loc[exposure["bucket"] == bucket, "item_id"].to_numpy()
        # deterministic sample: the catalog's exposed items of smallest id hash, found in the catalog a few at a
        # time (lake.rows_where: bounded memory, the catalog is never loaded whole)
        if len(ids) > max_items:  # the truth provider's exposure, one row per exposed item (a synthetic world's)
            h = np.array([int(hashlib.sha1(f"kp-eval:{i}".encode()).hexdigest()[:8], 16) for i in ids])
            ids = ids[np.argsort(h, kind="stable")]
        found = []
        for start in range(0, len(ids), 2 * max_items):
            chunk = ids[start:start + 2 * max_items]
            rows = rows_where(catalog, "item_id", chunk.tolist(), ["item_id", "title", "category"]).to_pandas()
            rows = rows.drop_duplicates("item_id").set_index("item_id")
            found.append(rows.loc[[i for i in chunk if i in rows.index]])
            if sum(len(f) for f in found) >= max_items:
                break
        picked = pd.concat(found).head(max_items) if found else pd.DataFrame(columns=["title", "category"])
        rel = world.relevant_keyphrases(picked.index.to_numpy())
        ids = np.array([i for i in picked.index if len(rel.get(int(i), ())) > 0], dtype=np.int64)
        if len(ids) == 0:
            out[bucket] = {"items": 0}
            continue
        items = picked.loc[ids]
        item_emb = encode_items(model, items["title"].tolist(), items["category"].tolist(), settings.serve.dim)
        kk = min(k, len(keyphrase_ids))
        recalls, precisions = [], []
        for start in range(0, len(ids), 256):
            sims = item_emb[start:start + 256] @ keyphrase_emb.T
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            for row, item_id in enumerate(ids[start:start + 256]):
                r = set(rel[int(item_id)].tolist())
                hits = len(r.intersection(keyphrase_ids[top[row]].tolist()))
                recalls.append(hits / min(kk, len(r)))
                precisions.append(hits / kk)
        out[bucket] = {"items": int(len(ids)), "relevance_recall_at_k": float(np.mean(recalls)),
                       "precision_at_k": float(np.mean(precisions))}
    return out


# ---- evaluation ----------------------------------------------------------------------------------------
def cross_scores_for(settings: Settings, test, cross_dir: str | None):
    """The cross-encoder's P(relevant) for the ``test`` frame's pairs (``labels.kd_pairs.teacher_scores``): float32
    ``np.ndarray`` ``(len(test),)`` in [0, 1], or None without ``cross_dir``. ConfigError (exit 2) when pairs must
    be scored and ``cross_dir`` is not a cross-encoder directory."""
    if not cross_dir:
        return None

    return teacher_scores(settings, cross_dir, test)


def evaluate_model(settings: Settings, model_dir: str, ds: str | None = None, data=None, cross_dir: str | None = None,
                   world="auto", teacher=None) -> dict:
    """Metrics of the bi-encoder at ``model_dir`` (see the module docstring).

    ``data``: a ``TrainingData`` (read for ``ds`` when None); ``cross_dir``: a cross-encoder model dir for
    ``rho_cross`` (or pass precomputed ``teacher`` scores aligned with the test set); ``world``: a truth provider,
    None, or "auto" (``keyphrase_pipeline.core.truth.load_truth``: the configured provider, if any). Truth metrics
    need both a world and ``ds``.

    Returns ``{"dim", "llm": {f1, precision, recall, n, positives, auc, threshold (on the served score's scale), fold_thresholds},
    "rho_cross" (Pearson r or None)[, "truth", "relevance_recall_at_k"]}``.

    Raises ConfigError (exit 2): neither ``ds`` nor ``data``; ``model_dir`` without ``modules.json``; a truth
    provider that cannot be imported. DataError/SchemaError (exit 3): what ``load_training_data`` raises."""
    from keyphrase_pipeline.labels.training_data import load_training_data

    if data is None:
        if ds is None:
            raise ConfigError("evaluate_model needs ds or data")
        data = load_training_data(settings, ds, need_ctr=False, need_sr=False)
    test = data.llm_test
    model = load_student(model_dir, settings.train.device)
    s = served_scores(model, load_hybrid(model_dir), test["title"].tolist(), test["category"].tolist(),
                      test["keyphrase"].tolist(), dim=settings.serve.dim)
    y = test["label"].to_numpy()
    pred, thr_folds = crossfit_predictions(y, s, test["text_hash"].tolist())
    metrics = {"dim": settings.serve.dim, "llm": {**prf(y, pred), "auc": auc_or_none(y, s),
                                                   "threshold": best_f1_cut(y, s), "fold_thresholds": thr_folds}}
    if teacher is None and cross_dir:
        teacher = cross_scores_for(settings, test, cross_dir)
    metrics["rho_cross"] = pearson(s, teacher) if teacher is not None else None
    if world == "auto":
        world = load_truth(settings)
    if world is not None and ds is not None:
        known = (test["item_id"].to_numpy() >= 0) & (test["keyphrase_id"].to_numpy() >= 0)
        if known.any():
            truth = world.is_relevant(test["item_id"].to_numpy()[known], test["keyphrase_id"].to_numpy()[known])
            metrics["truth"] = {**prf(truth, pred[known]), "auc": auc_or_none(truth, s[known]),
                                "llm_label_agreement": float(np.mean(truth.astype(int) == y[known]))}
        metrics["relevance_recall_at_k"] = relevance_recall_at_k(settings, model, world, ds_str(ds), settings.train.eval_k,
                                             settings.train.eval_max_items)
    return metrics


def _candidate(settings: Settings, ds: str, candidate: str | None) -> str:

    if candidate:
        if not registry.exists(settings, candidate):
            raise ConfigError(f"no student version {candidate!r} in the registry")
        return candidate
    versions = registry.list_versions(settings)
    today = [v for v in versions if v["ds"] == ds]
    pick = (today or versions or [None])[0]
    if pick is None:
        raise DataError("no student in the registry to evaluate (run train-bi first)")
    return pick["version"]


def _day_of(lake, settings: Settings, version: str) -> str:
    """The day a student version was trained for: its ``train_config.json`` ``ds``, else the id's date prefix."""
    cfg = lake.read_json(layout.version_file(layout.registry_version_dir(settings, version), "train_config"), default={})
    return str(cfg.get("ds") or version[:10])


def _earlier_day(a: str, b: str) -> bool:
    """``a`` is a day (YYYY-MM-DD) before day ``b``; False when either is not a date (a hand-made version name
    goes through the ordinary gate)."""

    date = re.compile(r"^\d{4}-\d{2}-\d{2}$")
    return bool(date.match(a) and date.match(b)) and a < b


def decide(candidate_f1: float, champion_f1: float | None, tolerance: float) -> tuple[bool, str]:
    """The gate: (promoted, reason)."""
    if champion_f1 is None:
        return True, "first model: no champion to compare with"
    if candidate_f1 >= champion_f1 - tolerance:
        return True, (f"F1 {candidate_f1:.4f} vs champion {champion_f1:.4f}: not worse than the tolerance "
                      f"{tolerance}")
    return False, (f"F1 {candidate_f1:.4f} is worse than champion {champion_f1:.4f} by "
                   f"{champion_f1 - candidate_f1:.4f} > tolerance {tolerance}: champion kept")


def topk_change(settings: Settings, ds: str, candidate_dir: str, champion_dir: str) -> dict:
    """How much the challenger would change what items are served: on ``review.topk_items`` items and
    ``review.topk_keyphrases`` keyphrases (seeded samples of the catalog up to ``ds`` and ``raw/keyphrases``), each
    model's exact-cosine top-K at ``serve.dim`` (K = ``serve.top_k``, at most a tenth of the sampled keyphrases), and
    the share of items that keep fewer than half of their top-K.

    A proxy for the served change (the served top-K searches the whole keyphrase set through the index).
    Returns ``{"items", "keyphrases", "k", "changed_share" (0-1), "mean_overlap" (0-1)}``, or ``{}`` without a
    catalog up to ``ds`` or keyphrases. SchemaError (exit 3) when the catalog or keyphrases break their contract."""
    from keyphrase_pipeline.labels.training_data import latest_partition

    lake = Lake.from_settings(settings)
    cat_ds = latest_partition(lake, "catalog", ds)
    if cat_ds is None or not Path(lake.path("keyphrases")).exists():
        return {}
    seed = int(hashlib.sha1(f"kp-topk-change:{ds}".encode()).hexdigest()[:8], 16)
    # seeded samples read row group by row group (lake.sample_rows): neither input is loaded whole
    items = sample_rows(parquet_dataset(lake.path("catalog", ds=cat_ds), contract="catalog"), settings.review.topk_items,
                        seed, ["item_id", "title", "category"]).to_pandas()
    kps = sample_rows(parquet_dataset(lake.path("keyphrases"), contract="keyphrases"), settings.review.topk_keyphrases,
                      seed + 1, ["keyphrase_id", "text"]).to_pandas()
    k = max(1, min(settings.serve.top_k, len(kps) // 10))
    if not len(items) or len(kps) < 10:
        return {}
    tops = []
    for model_dir in (candidate_dir, champion_dir):
        model = load_student(model_dir, settings.train.device)
        it = encode_items(model, items["title"].tolist(), items["category"].tolist(), settings.serve.dim)
        kp = encode_keyphrases(model, kps["text"].tolist(), settings.serve.dim)
        sims = it @ kp.T
        tops.append(np.argpartition(-sims, k - 1, axis=1)[:, :k])
    overlap = np.array([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(*tops)])
    return {"items": int(len(items)), "keyphrases": int(len(kps)), "k": int(k),
            "changed_share": float(np.mean(overlap < 0.5)), "mean_overlap": float(np.mean(overlap))}


def review_reasons(settings: Settings, metrics: dict, champion_metrics: dict, would_promote: bool,
                   topk: dict | None, judge_cross_then: float | None = None) -> list[str]:
    """Why a person should decide this promotion (empty: the gate decides alone). ``metrics`` / ``champion_metrics``:
    ``evaluate_model`` results on the same test set (``metrics["judge_cross_auc"]``: the cross-encoder's AUC
    against the judge's labels today); ``would_promote``: the gate's own answer; ``topk``: ``topk_change`` (or
    None); ``judge_cross_then``: that AUC when the champion was evaluated. Four reasons, thresholds in
    ``review.*``: a close call (either way), and for a promotion only, the student's agreement with the
    cross-encoder dropping below the champion's, the judge and the cross-encoder agreeing less than when the
    champion was evaluated, and a large change in the served top-K."""
    r = settings.review
    out = []
    threshold = champion_metrics["llm"]["f1"] - settings.train.promote_tolerance
    margin = metrics["llm"]["f1"] - threshold
    if abs(margin) <= r.margin_band:
        out.append(f"close call: F1 {metrics['llm']['f1']:.4f} is {margin:+.4f} from the gate's threshold "
                   f"{threshold:.4f} (champion {champion_metrics['llm']['f1']:.4f} - tolerance "
                   f"{settings.train.promote_tolerance}; band {r.margin_band})")
    if would_promote:
        rho, rho_champ = metrics.get("rho_cross"), champion_metrics.get("rho_cross")
        if rho is not None and rho_champ is not None and rho_champ - rho > r.agreement_drop:
            out.append(f"agreement with the cross-encoder drops: Pearson r {rho:.3f} vs the champion's "
                       f"{rho_champ:.3f} (more than {r.agreement_drop} lower)")
        now = metrics.get("judge_cross_auc")
        if now is not None and judge_cross_then is not None and judge_cross_then - now > r.agreement_drop:
            out.append(f"the judge and the cross-encoder agree less: AUC {now:.3f} vs {judge_cross_then:.3f} when the "
                       f"champion was evaluated (more than {r.agreement_drop} lower)")
        if topk and topk.get("changed_share", 0.0) > r.topk_changed_share:
            out.append(f"the served top-K changes: {topk['changed_share']:.0%} of {topk['items']} sampled items keep "
                       f"fewer than half of their top-{topk['k']} (more than {r.topk_changed_share:.0%})")
    return out


def run(settings: Settings, ds: str, candidate: str | None = None, force_promote: bool = False) -> dict:
    """Evaluate ``candidate`` (default: the newest student trained for ``ds``), re-evaluate the champion on
    the same test set, promote or not; return {promoted, reason, version, metrics, champion_metrics, ...}.

    Without ``candidate`` and with no student trained for ``ds``, the newest student of any day is evaluated.

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; unknown ``candidate``; the lake not local (registry);
            ``truth_provider`` not importable; a model directory without ``modules.json``.
        DataError: (exit 3) no student in the registry; what ``load_training_data`` raises (no or too few
            labels, a held-out split without test or train pairs).
        SchemaError: (exit 3) the label store, or catalog/keyphrases read for recall@K, break their contract.

    A candidate trained for an earlier day than the champion's is never promoted by the gate (a cleared or
    backfilled evaluation must not move the champion backwards; ``force_promote`` or ``kp promote`` do it on
    purpose). When the label store's labels teach nothing (``training_data.label_balance``: one class, or a judge
    that does not tell CTR positives from random pairs) the gate cannot compare: a champion is kept (the first
    model is still promoted). A re-evaluation keeps the earlier decision (``promotion.json`` ``earlier``) and figures
    (``metrics.json`` ``eval_earlier``). A refused promotion is a result, not an error (``kp evaluate
    --require-promotion`` makes it GateError, exit 4)."""
    from keyphrase_pipeline.labels.training_data import label_balance, load_training_data

    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    version = _candidate(settings, ds, candidate)
    review = {"needed": False}
    vdir = layout.registry_version_dir(settings, version)
    cfg = lake.read_json(layout.version_file(vdir, "train_config"), default={})
    data = load_training_data(settings, ds, need_ctr=False, need_sr=False)
    balance = label_balance(settings, data)
    test = data.llm_test
    cross_v = cfg.get("cross_version") or registry.latest_cross(settings)
    cross_dir = layout.model_dir(settings, cross_v, "cross") if cross_v and registry.exists(settings, cross_v, "cross") else None
    teacher = cross_scores_for(settings, test, cross_dir)
    world = load_truth(settings)
    metrics = evaluate_model(settings, layout.model_dir(settings, version), ds=ds, data=data, teacher=teacher, world=world)
    # how well the judge (the labels) and the cross-encoder agree on this test set: its drift is a reason to ask
    metrics["judge_cross_auc"] = auc_or_none(test["label"].to_numpy(), teacher) if teacher is not None else None
    champ = registry.champion(settings)
    champion_metrics = None
    if champ and champ != version and registry.exists(settings, champ):
        champion_metrics = evaluate_model(settings, layout.model_dir(settings, champ), ds=ds, data=data,
                                          teacher=teacher, world=world)
    if champ == version:
        promoted, reason = True, "already the champion"
    elif force_promote:
        promoted, reason = True, "forced (force_promote)"
    elif champ and _earlier_day(_day_of(lake, settings, version), _day_of(lake, settings, champ)):
        promoted, reason = False, (f"{version} was trained for an earlier day than the champion {champ}: a cleared or "
                                   "backfilled evaluation never moves the champion backwards (kp promote, or "
                                   "force_promote, to do it on purpose)")
    elif champion_metrics is not None and not balance["usable"]:
        promoted, reason = False, (f"the gate cannot compare on these labels ({balance['why']}): champion kept "
                                   "(force_promote, or kp promote, to promote anyway)")
    else:
        if champ and champion_metrics is None:
            log.warning("champion %s has no model directory: treating the challenger as the first model", champ)
        promoted, reason = decide(metrics["llm"]["f1"], champion_metrics["llm"]["f1"] if champion_metrics else None,
                                  settings.train.promote_tolerance)
        if champion_metrics is not None and settings.review.approval:
            topk = (topk_change(settings, ds, layout.model_dir(settings, version), layout.model_dir(settings, champ))
                    if promoted and settings.review.topk_items > 0 else None)
            champ_cfg = lake.read_json(layout.version_file(layout.registry_version_dir(settings, champ), "metrics"),
                                       default={})
            then = (champ_cfg.get("eval") or {}).get("judge_cross_auc")
            reasons = review_reasons(settings, metrics, champion_metrics, promoted, topk, judge_cross_then=then)
            review = {"needed": bool(reasons), "reasons": reasons, "gate_would_promote": promoted,
                      "gate_reason": reason, "topk_change": topk}
            if reasons:
                promoted, reason = False, (f"awaiting a person's approval ({'; '.join(reasons)}); the gate alone "
                                           f"would have {'promoted' if review['gate_would_promote'] else 'kept the champion'}")
                review["pending"] = True
    at = dt.datetime.now(dt.UTC).isoformat()
    test_set = {"llm_test_rows": len(test), "test_fraction": settings.train.test_fraction,
                "label_store_days": data.snapshot.get("label_store_days"), "label_balance": balance}
    # record beside the version (metrics.json keeps the training stats)
    mpath = layout.version_file(vdir, "metrics")
    stored = lake.read_json(mpath, default={}) if Path(mpath).exists() else {}
    if stored.get("eval"):  # a re-evaluation: the earlier figures stay beside the new ones
        stored["eval_earlier"] = [*stored.get("eval_earlier", []), {k: stored.get(k) for k in ("eval", "eval_ds", "test_set")}]
    stored.update({"eval": metrics, "eval_ds": ds, "test_set": test_set})
    lake.write_json(mpath, stored)
    promotion = {"promoted": promoted, "reason": reason, "evaluated_at": at, "ds": ds, "champion_before": champ,
                 "champion_metrics": champion_metrics, "tolerance": settings.train.promote_tolerance, "review": review}
    ppath = layout.version_file(vdir, "promotion")
    earlier = lake.read_json(ppath, default={}) if Path(ppath).exists() else {}
    if earlier:  # a re-evaluation (a cleared task, a rerun day): the earlier decisions stay in the record
        history = earlier.pop("earlier", [])
        promotion["earlier"] = [*history, earlier]
        log.info("evaluate %s: re-evaluation; the earlier decision (%s, %s) is kept in promotion.json 'earlier'",
                 version, earlier.get("reason"), earlier.get("evaluated_at") or earlier.get("champion_at"))
    lake.write_json(ppath, promotion)
    if promoted and champ != version:
        registry.set_champion(settings, version, reason)
    stats = {"promoted": promoted, "reason": reason, "version": version, "champion_before": champ,
             "champion_after": registry.champion(settings), "metrics": metrics,
             "champion_metrics": champion_metrics, "test_set": test_set, "cross_version": cross_v, "review": review}
    lake.write_run_stats(ds, "evaluate", stats)
    log.info("evaluate %s: F1 %.4f P %.4f R %.4f rho %s -> %s (%s)", version, metrics["llm"]["f1"],
             metrics["llm"]["precision"], metrics["llm"]["recall"], metrics["rho_cross"],
             "PROMOTED" if promoted else ("waits for a person" if review.get("needed") else "not promoted"), reason)
    return stats


APPROVE, REJECT = "approve", "reject"


def apply_review(settings: Settings, ds: str, decision: str | None, reviewer: str | None = None,
                 at: str | None = None, version: str | None = None) -> dict:
    """Carry out a person's answer on the promotion ``run`` left pending for ``ds`` (the candidate of
    ``runs/ds=D/evaluate.json``): ``decision`` "approve" promotes it (``registry.set_champion``), "reject" keeps the
    champion, None (no answer before the timeout) keeps the champion and says so. ``reviewer``: who answered;
    ``at``: when (ISO text; default now).

    An approval does not override a champion someone else changed while the promotion waited (``kp promote``):
    then nothing is promoted and the reason says so.

    The version's ``promotion.json`` and ``runs/ds=D/evaluate.json`` get the final ``promoted`` and ``reason`` and
    ``review.decision`` = ``{decision, reviewer, at, timed_out}``; the pending record stays in ``review``. A second
    call with the same answer, or a timeout after an answer, changes nothing and returns the stats (a cleared task
    re-run); a person's answer after a timeout is carried out. ``version``: the version the person was asked about
    (the approval request's); refused when the day's evaluate now names another. Returns the evaluate stats as
    updated.

    Raises ConfigError (exit 2) for another ``decision``; when ``ds`` has no evaluate stats or its promotion is
    not waiting for a person (nothing to approve); when ``version`` is not the one waiting; when a person already
    gave another answer (naming who and when)."""
    if decision not in (APPROVE, REJECT, None):
        raise ConfigError(f"a review decision is {APPROVE!r} or {REJECT!r} (None: no answer), got {decision!r}")
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    stats = lake.read_json(lake.run_stats_path(ds, "evaluate"), default={})
    review = (stats or {}).get("review") or {}
    if not stats or not review.get("needed"):
        raise ConfigError(f"no promotion waits for a person for ds={ds} (the day's evaluate stats "
                          f"{'ask for no review' if stats else 'are missing'}): nothing to approve or reject")
    if version is not None and version != stats["version"]:
        raise ConfigError(f"the answer was given on the promotion of {version}, but ds={ds} now waits on "
                          f"{stats['version']} (evaluate ran again): nothing done; answer the new request")
    earlier = review.get("decision") or {}
    if earlier:
        same = earlier.get("decision") == (decision or "timed out")
        if decision is None or same:  # a timeout never overrides an answer; the same answer again changes nothing
            log.info("evaluate %s: the review was already decided (%s): nothing changes", stats["version"], earlier)
            return stats
        if not earlier.get("timed_out"):
            undo = (f"`kp promote --version {stats.get('champion_before')}` puts the former champion back"
                    if earlier.get("decision") == APPROVE else f"`kp promote --version {stats['version']}` promotes it")
            raise ConfigError(f"the promotion of {stats['version']} for ds={ds} was already decided: "
                              f"{earlier.get('decision')} by {earlier.get('reviewer')} at {earlier.get('at')}; "
                              f"{undo}; clearing train.evaluate (with downstream) asks again")
        log.info("evaluate %s: %s answers after the timeout kept the champion", stats["version"], reviewer)
    version = stats["version"]
    at = at or dt.datetime.now(dt.UTC).isoformat()
    who = reviewer or "nobody"
    now_champion = registry.champion_or_none(settings)
    moved = now_champion != stats.get("champion_before")
    if decision == APPROVE and moved:
        promoted, reason = False, (f"approved by {who} at {at}, but the champion changed while the promotion waited "
                                   f"({stats.get('champion_before')} -> {now_champion}, by someone else): not "
                                   f"promoted over it (kp promote --version {version} to do it on purpose)")
    elif decision == APPROVE:
        promoted, reason = True, f"approved by {who} at {at} ({'; '.join(review['reasons'])})"
    elif decision == REJECT:
        promoted, reason = False, f"rejected by {who} at {at}: champion kept ({'; '.join(review['reasons'])})"
    else:
        promoted, reason = False, (f"no answer within review.approval_timeout_hours ({settings.review.approval_timeout_hours} h): "
                                   f"champion kept ({'; '.join(review['reasons'])})")
    review = {**review, "pending": False,
              "decision": {"decision": decision or "timed out", "reviewer": reviewer, "at": at,
                           "timed_out": decision is None}}
    if promoted:
        registry.set_champion(settings, version, reason)
    vdir = layout.registry_version_dir(settings, version)
    ppath = layout.version_file(vdir, "promotion")
    promotion = lake.read_json(ppath, default={})
    promotion.update({"promoted": promoted, "reason": reason, "review": review})
    lake.write_json(ppath, promotion)
    stats.update({"promoted": promoted, "reason": reason, "review": review,
                  "champion_after": registry.champion(settings)})
    lake.write_run_stats(ds, "evaluate", stats)
    log.info("evaluate %s: %s", version, reason)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="logical date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--candidate", default=None, help="student version (default: newest trained for --ds)")
    parser.add_argument("--force-promote", action="store_true", help="promote whatever the gate says")
    parser.add_argument("--require-promotion", action="store_true",
                        help="exit 4 when the candidate is not promoted")
    parser.add_argument("--review", choices=[APPROVE, REJECT], default=None,
                        help="answer the promotion that waits for a person for --ds (no evaluation is run; with "
                             "--candidate, only if that version is the one waiting)")
    parser.add_argument("--reviewer", default=None, help="who answers (with --review)")


def main(settings: Settings, args) -> int:
    """``kp evaluate``: ``run`` for ``--ds`` (default: today, UTC); prints the stats as indented JSON and returns 0.

    With ``--require-promotion`` a candidate that is not promoted raises GateError (exit 4) after the stats are
    printed and recorded. With ``--review approve|reject`` no evaluation runs: ``apply_review`` answers the
    promotion that waits for a person for ``--ds`` (``--reviewer``, default the OS user).
    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    ds = args.ds or dt.datetime.now(dt.UTC).date().isoformat()
    if args.review:
        if args.force_promote or args.require_promotion:
            raise ConfigError("--review answers a waiting promotion: it does not combine with --force-promote or "
                              "--require-promotion")
        stats = apply_review(settings, ds, args.review, reviewer=args.reviewer or getpass.getuser(),
                             version=args.candidate)
        print(json.dumps(stats, indent=2, default=str))
        return 0
    stats = run(settings, ds, candidate=args.candidate, force_promote=args.force_promote)
    print(json.dumps(stats, indent=2, default=str))
    if args.require_promotion and not stats["promoted"]:
        raise GateError(f"{stats['version']} not promoted: {stats['reason']}")
    return 0
