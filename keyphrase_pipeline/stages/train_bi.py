"""Train the bi-encoder student multi-task: CTR positives, LLM labels, SR labels and the cross-encoder's
soft scores, every loss wrapped in ``MatryoshkaLoss`` so the 64-d cut (``serve.dim``) is usable alone.

=========  ===========================================  ==================================================
task       pairs                                        loss
=========  ===========================================  ==================================================
``ctr``    CTR positives (item, keyphrase)              MultipleNegativesRankingLoss (in-batch negatives)
``llm``    LLM-labelled pairs, label 0/1                ContrastiveLoss (cosine distance, margin 0.5)
``sr``     search-relevance labels 0/1 (when present)   ContrastiveLoss
``kd``     LLM train pairs + unjudged neighbours        ``train.kd_loss``: pearson (``models.losses``),
           (``labels.kd_pairs``), cross-encoder           mse (CosineSimilarityLoss) or cosent (CoSENTLoss)
           P(relevant)
``kd``     candidate lists of unjudged pairs            ``train.kd_list_loss``: listwise KL (DistillKLDivLoss
(lists)    (``kd_pairs.candidate_groups``), the         on 20 x cosine) or margin_mse (MarginMSELoss;
           cross-encoder's logits                       ``models.losses.build_listwise_kd_loss``), task
                                                        name ``kd_list``
=========  ===========================================  ==================================================

``settings.train.label_mix`` picks the tasks (``ctr``, ``llm``, ``llm+kd``, ``llm+ctr+kd``, ``llm+sr+ctr+kd``, ...)
so the paper's ablation can be rerun. ``SentenceTransformerTrainer`` with a dict of datasets and a dict
of losses and ``MultiDatasetBatchSamplers.PROPORTIONAL``: every batch comes from one dataset, datasets
drawn in proportion to their size.

The student starts from the base encoder (``train.init_from=base``, the default: a version is then a
function of its day, configuration and data alone, and a bad day cannot compound into later ones) or
from the champion (``train.init_from=champion``: cheaper fine-tuning, at the risk of drift).

Distillation teacher (``--cross``): a registry cross version id or a directory. Without it, the
registry's ``CROSS_LATEST`` is used when training from the lake (on a backfill, when ``CROSS_LATEST`` is from
a later day: the newest cross-encoder up to the day); with ``--labels FILE`` and no
``--cross`` there is no ``kd`` task. Stored soft labels (``soft_labels.parquet``) are reused; pairs the
teacher has not scored are scored now. Test-split pairs are never trained on. Beside the judged train
pairs the teacher scores ``train.kd_extra_ratio`` x as many unjudged pairs (each train item with its
nearest train keyphrases, ``keyphrase_pipeline.labels.kd_pairs``): there it generalises and the student learns that, not the
labels a second time; and ``train.kd_list_ratio`` (default 4) x as many in candidate lists for the listwise
``kd_list`` task (docs/TRAINING.md, "Distilling at the teacher's scale"). ``data.json`` ``distillation`` says
how many were wanted and made.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, commit_dir, ds_str, tmp_sibling
from keyphrase_pipeline.core.settings import KD_LOSSES
from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.devices import (
    precision_name,
    require_one_training_device,
    resolve_device,
    trainer_precision,
)
from keyphrase_pipeline.models.text import item_text, keyphrase_text

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings
    from keyphrase_pipeline.models.training import VersionRecords

log = logging.getLogger(__name__)


def _config(settings: Settings, base: str, mix: list[str], kd_loss: str, init_from: str) -> dict:
    t = settings.train
    return {"kind": "bi", "base_model": base, "init_from": init_from, "label_mix": "+".join(mix), "kd_loss": kd_loss,
            "matryoshka_dims": list(t.matryoshka_dims), "matryoshka_serve_weight": t.matryoshka_serve_weight,
            "serve_dim": settings.serve.dim, "max_steps": t.bi_max_steps,
            "epochs": t.bi_epochs, "batch_size": t.batch_size, "learning_rate": t.learning_rate,
            "checkpoint": t.bi_checkpoint,
            "warmup_ratio": t.warmup_ratio, "max_seq_length": t.max_seq_length, "llm_loss": t.llm_loss,
            "llm_ranking": t.llm_ranking, "kd_extra_ratio": t.kd_extra_ratio, "kd_list_ratio": t.kd_list_ratio,
            "kd_group_size": t.kd_group_size, "kd_hard_share": t.kd_hard_share, "kd_query_share": t.kd_query_share,
            "kd_swap_share": t.kd_swap_share,
            "kd_list_loss": t.kd_list_loss, "kd_list_scale": t.kd_list_scale, "kd_list_pearson": t.kd_list_pearson,
            "kd_teacher_temperature": t.kd_teacher_temperature, "kd_max_pairs": t.kd_max_pairs,
            "evals_per_epoch": t.evals_per_epoch,
            "early_stopping_patience": t.early_stopping_patience, "max_train_minutes": t.max_train_minutes,
            "seed": t.seed, "test_fraction": t.test_fraction, "cut_rotation": t.cut_rotation,
            "cut_rotation_pairs": t.cut_rotation_pairs, "hybrid_score": t.hybrid_score,
            "hybrid_score_pairs": t.hybrid_score_pairs, "hybrid_min_heldout_pairs": t.hybrid_min_heldout_pairs}


def ranking_triplets(train) -> dict:
    """(keyphrase, relevant item, judged-irrelevant item of the same keyphrase) columns from labelled pairs.

    Each positive pair becomes one row; its hard negative is an item judged irrelevant for the same
    keyphrase (cycled when there are fewer negatives than positives); keyphrases with no judged negative
    are left out (in-batch negatives alone already come from the ``ctr`` task).

    ``train``: frame ``title, category, keyphrase, label`` (0/1). Returns ``{"keyphrase", "item", "negative"}``,
    three equal-length lists of tower input strings."""

    anchors, positives, negatives = [], [], []
    for kp, g in train.groupby("keyphrase", sort=False):
        pos = g[g["label"] == 1]
        neg = g[g["label"] == 0]
        if pos.empty or neg.empty:
            continue
        neg_texts = [item_text(t, c) for t, c in zip(neg["title"], neg["category"])]
        for j, (t, c) in enumerate(zip(pos["title"], pos["category"])):
            anchors.append(keyphrase_text(kp))
            positives.append(item_text(t, c))
            negatives.append(neg_texts[j % len(neg_texts)])
    return {"keyphrase": anchors, "item": positives, "negative": negatives}


def listwise_rows(groups) -> dict:
    """One row per candidate list: ``anchor`` (the tower text of the list's keyphrase or item), ``c0..c{N-1}``
    (the candidates' tower texts) and ``label``, the teacher's logits ``log(p / (1 - p))`` as a list of N floats
    (p clipped to [1e-6, 1 - 1e-6]).

    ``groups``: frame ``group, anchor, title, category, keyphrase, score`` from
    ``keyphrase_pipeline.labels.kd_pairs.candidate_groups`` (N consecutive rows per group, ``score`` the teacher's
    P(relevant); ``anchor`` ``keyphrase`` or ``query``: the keyphrase column holds the anchor and the titles are
    the candidates; ``item``: the reverse). Raises ValueError when the groups are not all of one size or a
    list's anchor text is not the same on all its rows."""
    from keyphrase_pipeline.models.metrics import log_odds

    sizes = groups.groupby("group", sort=False).size()
    if sizes.nunique() != 1:
        raise ValueError(f"candidate lists of different sizes: {sorted(sizes.unique())}")
    on_items = groups["anchor"] == "item"
    anchor_text = groups["title"].where(on_items, groups["keyphrase"]) + "\x00" + groups["category"].where(on_items, "")
    if (anchor_text.groupby(groups["group"], sort=False).nunique() != 1).any():
        raise ValueError("a candidate list whose rows do not share one anchor")
    n = int(sizes.iloc[0])
    logits = log_odds(groups["score"].to_numpy(dtype="float64"))
    out: dict = {"anchor": [], **{f"c{j}": [] for j in range(n)}, "label": []}
    items = [item_text(t, c) for t, c in zip(groups["title"], groups["category"])]
    kps = [keyphrase_text(k) for k in groups["keyphrase"]]
    sides = groups["anchor"].to_numpy()
    for start in range(0, len(groups), n):
        on_keyphrase = sides[start] != "item"  # a keyphrase or a title-cut query heads a list of titles
        out["anchor"].append(kps[start] if on_keyphrase else items[start])
        for j in range(n):
            out[f"c{j}"].append(items[start + j] if on_keyphrase else kps[start + j])
        out["label"].append([float(x) for x in logits[start:start + n]])
    return out


def build_task_datasets(data, mix: list[str], kd=None, llm_ranking: bool = False, kd_groups=None) -> dict:
    """Name -> datasets.Dataset for the tasks in ``mix`` that have rows.

    ``kd``: frame ``title, category, keyphrase, score`` (the teacher's P(relevant)), or None. ``kd_groups``: the
    teacher-scored candidate lists (``listwise_rows``), or None: task ``kd_list`` when ``kd`` is in the mix.
    Columns: ``item, keyphrase`` (``ctr``), plus ``label`` (``llm``, ``sr``, ``kd``); ``llm_rank`` (with
    ``llm_ranking`` and ``llm`` in the mix) holds ``keyphrase, item, negative`` triplets; ``kd_list`` holds
    ``anchor, c0..c{N-1}`` and a list ``label``."""
    from datasets import Dataset

    def cols(df, label=None):
        d = {"item": [item_text(t, c) for t, c in zip(df["title"], df["category"])],
             "keyphrase": [keyphrase_text(k) for k in df["keyphrase"]]}
        if label is not None:
            d["label"] = [float(x) for x in label]
        return d

    train = data.llm_train
    out = {}
    if "ctr" in mix and len(data.ctr):
        out["ctr"] = Dataset.from_dict(cols(data.ctr))
    if "llm" in mix and len(train):
        out["llm"] = Dataset.from_dict(cols(train, train["label"]))
        if llm_ranking:
            triplets = ranking_triplets(train)
            if triplets["keyphrase"]:
                out["llm_rank"] = Dataset.from_dict(triplets)
    if "sr" in mix and len(data.sr):
        out["sr"] = Dataset.from_dict(cols(data.sr, data.sr["label"]))
    if "kd" in mix and kd is not None and len(kd):
        out["kd"] = Dataset.from_dict(cols(kd, kd["score"]))
    if "kd" in mix and kd_groups is not None and len(kd_groups):
        out["kd_list"] = Dataset.from_dict(listwise_rows(kd_groups))
    return out


def matryoshka_weights(settings: Settings) -> list[float]:
    """One weight per ``train.matryoshka_dims`` entry: ``train.matryoshka_serve_weight`` for the served cut
    (``serve.dim``), 1 for every other dimension (sentence-transformers' ``MatryoshkaLoss`` default)."""
    t = settings.train
    return [float(t.matryoshka_serve_weight) if d == settings.serve.dim else 1.0 for d in t.matryoshka_dims]


def build_task_losses(model, names, kd_loss: str, dims: list[int], sink, llm_loss: str = "contrastive",
                      list_scale: float = 20.0, teacher_temperature: float = 1.0, list_pearson: float = 0.0,
                      dim_weights: list[float] | None = None, list_loss: str = "kl") -> dict:
    """Name -> MatryoshkaLoss(task loss) over ``dims`` (weighted by ``dim_weights``, one per dim; None: equal),
    each recorded under its task name.

    ``ctr`` and ``llm_rank``: MultipleNegativesRankingLoss (in-batch and, for ``llm_rank``, judged hard
    negatives); ``llm``/``sr``: ``llm_loss`` (ContrastiveLoss or CoSENTLoss); ``kd``: ``kd_loss``; ``kd_list``:
    ``list_loss`` (listwise KL or MarginMSE: ``models.losses.build_listwise_kd_loss`` with ``list_scale``,
    ``teacher_temperature`` and ``list_pearson``).

    Raises ConfigError (exit 2) for an unknown task name, ``kd_loss`` or ``list_loss``."""
    from sentence_transformers.sentence_transformer import losses

    from keyphrase_pipeline.models.losses import RecordedLoss, build_kd_loss, build_listwise_kd_loss

    out = {}
    for name in names:
        if name in ("ctr", "llm_rank"):
            inner = losses.MultipleNegativesRankingLoss(model)
        elif name in ("llm", "sr"):
            inner = losses.CoSENTLoss(model) if llm_loss == "cosent" else losses.ContrastiveLoss(model)
        elif name == "kd":
            inner = build_kd_loss(model, kd_loss)
        elif name == "kd_list":
            inner = build_listwise_kd_loss(model, list_scale, teacher_temperature, list_pearson, kind=list_loss)
        else:
            raise ConfigError(f"unknown task {name!r}")
        out[name] = RecordedLoss(losses.MatryoshkaLoss(model, inner, matryoshka_dims=dims,
                                                       matryoshka_weights=dim_weights), name, sink)
    return out


def training_arguments(settings: Settings, output_dir: str, device: str, **budget_kwargs):
    """The student's ``SentenceTransformerTrainingArguments``: one dataset per batch, datasets drawn in
    proportion to their size, and no text twice in a batch (``BatchSamplers.NO_DUPLICATES``: a repeated
    keyphrase would be its own false in-batch negative for MNRL). ``budget_kwargs`` from
    ``keyphrase_pipeline.models.training.budget_arguments``."""
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        MultiDatasetBatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    t = settings.train
    return SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=t.batch_size, learning_rate=t.learning_rate,
        seed=t.seed, data_seed=t.seed, multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        batch_sampler=BatchSamplers.NO_DUPLICATES, report_to=[], disable_tqdm=True,
        **budget_kwargs, **trainer_precision(device))


def _run_settings(settings: Settings, label_mix: str | None, kd_loss: str | None):
    """``settings`` with this run's ``--label-mix`` / ``--kd-loss``; ConfigError for an unknown loss."""
    if label_mix:
        settings = settings.with_overrides(**{"train.label_mix": label_mix})
    if kd_loss:
        if kd_loss not in KD_LOSSES:
            raise ConfigError(f"kd_loss {kd_loss!r}: choose from {', '.join(KD_LOSSES)}")
        settings = settings.with_overrides(**{"train.kd_loss": kd_loss})
    return settings


def _teacher(settings: Settings, ds: str, mix: list[str], cross: str | None, labels: str | None, data, start: str):
    """(cross model dir, cross version, kd frame, kd lists or None, ``distillation_report``), all None without a
    kd task.

    ``kd``: ``title, category, keyphrase, text_hash, score``, the judged train pairs and ``train.kd_extra_ratio`` x
    as many unjudged ones, scored by the teacher (P(relevant)). ``kd lists``: ``train.kd_list_ratio`` x as many
    unjudged pairs in candidate lists (``keyphrase_pipeline.labels.kd_pairs.candidate_groups``) with the teacher's
    P(relevant) in ``score``, or None. The two unjudged sets together are capped at ``train.kd_max_pairs``
    (both scaled down in proportion, ``kd_budget``). Without ``cross`` (and a labels file) the teacher is
    ``CROSS_LATEST`` unless it is from a day after ``ds`` (a backfill): then the newest cross-encoder up to
    ``ds`` (``registry.warm_start_version``)."""
    import pandas as pd

    from keyphrase_pipeline.labels.kd_pairs import candidate_groups, sample_pairs

    cross_dir = cross_version = None
    if "kd" in mix:
        if cross is None and not labels:
            cross = registry.warm_start_version(settings, "cross", ds, include_day=True)
            latest = registry.latest_cross(settings)
            if latest and cross != latest:
                log.info("CROSS_LATEST %s is not from a day up to %s: distilling from %s instead", latest, ds, cross)
        cross_dir, cross_version = registry.resolve_cross(settings, cross, "--cross")
        if cross_dir is None:
            log.warning("label_mix has kd but there is no cross-encoder (give --cross or run train-cross): no kd task")
    if not cross_dir:
        return None, None, None, None, None
    t = settings.train
    cols = ["title", "category", "keyphrase", "text_hash"]
    train = data.llm_train
    pairs, groups = train[cols], None
    n_extra, n_list, capped = kd_budget(len(train), t.kd_extra_ratio, t.kd_list_ratio, t.kd_max_pairs)
    extra_rows = 0
    if (n_extra or n_list) and len(train):
        from keyphrase_pipeline.labels.kd_pairs import JudgedSides
        from keyphrase_pipeline.models.bi_encoder import build_student

        sides = JudgedSides(build_student(settings, start), train)  # each side encoded once, for both samplers
        test_hashes = data.llm_test["text_hash"]
        if n_extra:
            extra = sample_pairs(None, train, test_hashes, n_extra / len(train), seed=t.seed, sides=sides)
            pairs, extra_rows = pd.concat([pairs, extra[cols]], ignore_index=True), len(extra)
        if n_list:
            groups = candidate_groups(None, train, set(test_hashes) | set(pairs["text_hash"]), n_list,
                                      group_size=t.kd_group_size, hard_share=t.kd_hard_share,
                                      query_share=t.kd_query_share, swap_share=t.kd_swap_share, seed=t.seed,
                                      exclude_keyphrases=data.llm_test["keyphrase"], sides=sides)
        del sides
    every = pairs if groups is None else pd.concat([pairs, groups[cols]], ignore_index=True)
    t_score = time.perf_counter()
    from keyphrase_pipeline.labels.kd_pairs import teacher_scores

    scores = teacher_scores(settings, cross_dir, every)
    t_score = time.perf_counter() - t_score
    kd = pairs.assign(score=scores[:len(pairs)])
    if groups is not None:
        groups = groups.assign(score=scores[len(pairs):])
    report = {**distillation_report(n_extra, extra_rows, n_list, groups, train, t.kd_group_size, capped),
              "teacher_seconds": round(t_score, 1)}
    return cross_dir, cross_version, kd, (groups if groups is not None and len(groups) else None), report


def kd_budget(judged: int, extra_ratio: float, list_ratio: float, max_pairs: int) -> tuple[int, int, bool]:
    """(unjudged pointwise pairs, unjudged listwise pairs, capped): ``ratio x judged`` each, both scaled down
    in proportion when together they pass ``max_pairs`` (``train.kd_max_pairs``)."""
    extra, lists = int(round(extra_ratio * judged)), int(round(list_ratio * judged))
    if extra + lists <= max_pairs:
        return extra, lists, False
    scale = max_pairs / (extra + lists)
    return int(extra * scale), int(lists * scale), True


def distillation_report(extra_wanted: int, extra_rows: int, list_wanted: int, groups, train, group_size: int,
                        capped: bool = False) -> dict:
    """What the teacher was asked to score beside the judged pairs, and what the data allowed (for ``data.json``).

    A small or one-sided file (few keyphrases or titles) yields fewer unjudged pairs than asked: the student then
    distils on what there is, and ``fallback`` says why (also logged as a warning). ``capped``: the wanted counts
    were scaled down to ``train.kd_max_pairs`` (``kd_budget``), said in the log too."""
    if capped:
        log.warning("distillation: the unjudged pairs are capped at train.kd_max_pairs (%d pointwise, %d listwise)",
                    extra_wanted, list_wanted)
    list_pairs = 0 if groups is None else len(groups)
    n_kp, n_items = int(train["keyphrase"].nunique()), int(len(train[["title", "category"]].drop_duplicates()))
    fallback = None
    if list_wanted and list_pairs < list_wanted - group_size:
        fallback = (f"{list_pairs} of {list_wanted} listwise pairs: the judged pairs have {n_kp} keyphrase(s) and "
                    f"{n_items} title(s), too few distinct unjudged candidates"
                    + (f" for lists of {group_size}" if n_kp < group_size or n_items < group_size else ""))
    if extra_wanted and extra_rows < extra_wanted:
        fallback = "; ".join(filter(None, [fallback, f"{extra_rows} of {extra_wanted} unjudged pointwise pairs"]))
    if fallback:
        log.warning("distillation: %s; training on what there is", fallback)
    return {"judged_train_pairs": int(len(train)), "capped": capped, "extra_pairs_wanted": extra_wanted,
            "extra_pairs": extra_rows,
            "list_pairs_wanted": list_wanted, "list_pairs": list_pairs,
            "lists": 0 if groups is None else int(groups["group"].nunique()),
            "lists_by_anchor": {} if groups is None or groups.empty
            else {str(k): int(v) for k, v in groups.groupby("anchor")["group"].nunique().items()},
            "fallback": fallback}


def _tasks(settings: Settings, ds: str, data, mix: list[str], kd, kd_groups=None) -> tuple[dict, dict, list[str]]:
    """(task name -> dataset, task name -> rows, tasks skipped for want of data); DataError when none is left."""
    tasks = build_task_datasets(data, mix, kd, llm_ranking=settings.train.llm_ranking, kd_groups=kd_groups)
    skipped = [m for m in mix if m not in tasks]
    by_design = {"ctr", "sr"} if data.snapshot.get("labels_file") else set()  # a labels file carries neither
    missing = [m for m in skipped if m not in by_design]
    if len(missing) < len(skipped):
        log.info("a labels file has no CTR or search-relevance labels: %s skipped", sorted(set(skipped) & by_design))
    if missing:
        log.warning("tasks without data, skipped: %s", missing)
    if not tasks:
        raise DataError(f"label_mix {'+'.join(mix)!r} left no training data for {ds} (skipped: {skipped})")
    return tasks, {k: len(v) for k, v in tasks.items()}, skipped


def _rotation_pairs(data, mix: list[str], labels_usable: bool = True):
    """The pairs the cut rotation is fitted on: the judged train pairs when the mix trains on them (``llm`` or
    ``kd``) and their labels are usable (``training_data.label_balance``), else the CTR positives (label 1) when
    it trains on those; None otherwise (no rotation)."""
    if labels_usable and ("llm" in mix or "kd" in mix) and data.llm is not None and len(data.llm):
        return data.llm_train
    if "ctr" in mix and data.ctr is not None and len(data.ctr):
        return data.ctr.assign(label=1)
    return None


def _rotate_before_cut(settings: Settings, model, train, heldout_scores, test) -> tuple[object, dict]:
    """``model`` with the cut rotation (``models.cut_rotation``) fitted on the relevant pairs of ``train`` (label
    >= 0.5; at most ``train.cut_rotation_pairs``, a seeded sample; at least 4 x ``serve.dim`` of them) when the
    held-out AUC at ``serve.dim`` rises; else ``model`` unchanged. The held-out split also picked the checkpoint,
    so its AUC after this choice is optimistic (``kp eval-labels`` measures on pairs never seen). Returns (model,
    record for the run stats, the model's held-out scores, or None when nothing was fitted)."""
    from keyphrase_pipeline.models.bi_encoder import encode_items, encode_keyphrases
    from keyphrase_pipeline.models.cut_rotation import fit_rotation, with_rotation
    from keyphrase_pipeline.models.metrics import has_both_classes, threshold_metrics

    t = settings.train
    dim, full = settings.serve.dim, model.get_embedding_dimension()
    need = max(4 * dim, 50)  # S has rank <= 2n: far fewer pairs than dimensions leave the cut's basis arbitrary
    pos = train[train["label"].astype(float) >= 0.5] if train is not None and len(train) else None
    n_pos = 0 if pos is None else len(pos)
    why = ("off (train.cut_rotation)" if not t.cut_rotation
           else f"serve.dim {dim} is the full size {full}: no cut to rotate" if dim >= full
           else f"{n_pos} relevant train pairs, fewer than the {need} (4 x serve.dim) a rotation needs" if n_pos < need
           else "no held-out pairs of both classes" if not has_both_classes(test["label"]) else None)
    if why:
        return model, {"applied": False, "why": why}, None
    if len(pos) > t.cut_rotation_pairs:
        pos = pos.sample(n=t.cut_rotation_pairs, random_state=t.seed)
    t0 = time.perf_counter()
    rotation = fit_rotation(encode_items(model, pos["title"].tolist(), pos["category"].tolist()),
                            encode_keyphrases(model, pos["keyphrase"].tolist()))
    rotated = with_rotation(model, rotation)
    plain, turned = heldout_scores(model), heldout_scores(rotated)
    before = threshold_metrics(test["label"], plain)["auc"]
    after = threshold_metrics(test["label"], turned)["auc"]
    keep = after is not None and before is not None and after > before
    record = {"applied": keep, "pairs": int(len(pos)), "heldout_auc_before": before, "heldout_auc_after": after,
              "seconds": round(time.perf_counter() - t0, 1),
              "why": "held-out AUC at serve.dim higher" if keep else "held-out AUC at serve.dim not higher: not kept"}
    log.info("cut rotation fitted on %d relevant train pairs: held-out AUC at %d-d %.4f -> %.4f (%s)", len(pos),
             settings.serve.dim, before or float("nan"), after or float("nan"), "kept" if keep else "not kept")
    return (rotated, record, turned) if keep else (model, record, plain)


def _fit_hybrid(settings: Settings, model, train, test, test_cosines) -> tuple[object, dict, object]:
    """The student's hybrid score (``models.lexical_match``) fitted on the judged pairs of ``train`` (at most
    ``train.hybrid_score_pairs``, a seeded sample) when it lifts the held-out AUC over ``test_cosines`` (the held-out
    cosines at ``serve.dim``) on at least ``train.hybrid_min_heldout_pairs``; else None (why, logged). Like the
    cut rotation, the choice is made on the held-out split, so its AUC after the choice is optimistic. Returns
    (``HybridScore`` or None, record for the run stats, the held-out scores as served: the hybrid's when kept, else
    ``test_cosines``)."""
    from keyphrase_pipeline.models.bi_encoder import score_pairs
    from keyphrase_pipeline.models.lexical_match import fit_hybrid, match_features
    from keyphrase_pipeline.models.metrics import has_both_classes, threshold_metrics

    t = settings.train
    judged = train is not None and len(train) and has_both_classes(train["label"].astype(float) >= 0.5)
    why = ("off (train.hybrid_score)" if not t.hybrid_score
           else "no judged train pairs of both classes" if not judged
           else "no held-out pairs of both classes" if test_cosines is None or not has_both_classes(test["label"])
           else f"{len(test)} held-out pairs, fewer than the {t.hybrid_min_heldout_pairs} needed to choose on "
                "(train.hybrid_min_heldout_pairs)" if len(test) < t.hybrid_min_heldout_pairs else None)
    if why:
        log.info("hybrid score not fitted: %s; the student's cosine is served", why)
        return None, {"applied": False, "why": why}, test_cosines
    if len(train) > t.hybrid_score_pairs:
        train = train.sample(n=t.hybrid_score_pairs, random_state=t.seed)
    t0 = time.perf_counter()
    titles, categories, keyphrases = train["title"].tolist(), train["category"].tolist(), train["keyphrase"].tolist()
    cosines = score_pairs(model, titles, categories, keyphrases, dim=settings.serve.dim)
    hybrid = fit_hybrid(cosines, match_features(titles, categories, keyphrases), train["label"], seed=t.seed)
    if hybrid is None:
        return None, {"applied": False, "pairs": int(len(train)),
                      "why": "the fit gave the cosine no positive weight, or one too small to matter "
                             "(lexical_match.MAX_RATIO)"}, test_cosines
    served = hybrid.score(test_cosines, test["title"].tolist(), test["category"].tolist(), test["keyphrase"].tolist())
    before = threshold_metrics(test["label"], test_cosines)["auc"]
    after = threshold_metrics(test["label"], served)["auc"]
    keep = after is not None and before is not None and after > before
    record = {"applied": keep, **hybrid.as_dict(), "heldout_pairs": int(len(test)), "heldout_auc_before": before,
              "heldout_auc_after": after, "seconds": round(time.perf_counter() - t0, 1),
              "why": "held-out AUC higher" if keep else "held-out AUC not higher: not kept"}
    log.info("hybrid score fitted on %d judged train pairs (weights per cosine: %s): held-out AUC %.4f -> %.4f (%s)",
             len(train), {f: round(w / hybrid.cosine_weight, 4) for f, w in zip(hybrid.features, hybrid.weights)},
             before or float("nan"), after or float("nan"), "kept" if keep else "not kept")
    return (hybrid, record, served) if keep else (None, record, test_cosines)


def _train(settings: Settings, tasks: dict, rows: dict, test, start: str, tmp: str, device: str, version: str, train=None):
    """Train the student in ``tmp`` and save its ``model/`` (never worse on held-out pairs than ``start``), with
    the cut rotation fitted on ``train``'s relevant pairs (``_rotate_before_cut``); returns (training metrics,
    held-out metrics or None, held-out evaluator or None, progress history)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

    from keyphrase_pipeline.models.bi_encoder import build_student, save_student, score_pairs
    from keyphrase_pipeline.models.losses import TaskLosses
    from keyphrase_pipeline.models.metrics import has_both_classes, threshold_metrics
    from keyphrase_pipeline.models.training import (
        best_step,
        budget_arguments,
        calibration_plot,
        heldout_evaluator,
        plan_budget,
        progress_callback,
        quiet_trainer,
        stop_reason,
    )

    set_seed(settings.train.seed)
    torch.manual_seed(settings.train.seed)
    model = build_student(settings, start)
    sink = TaskLosses()
    t = settings.train
    losses = build_task_losses(model, list(tasks), t.kd_loss, list(t.matryoshka_dims), sink, llm_loss=t.llm_loss,
                               list_scale=t.kd_list_scale, teacher_temperature=t.kd_teacher_temperature,
                               list_pearson=t.kd_list_pearson, list_loss=t.kd_list_loss,
                               dim_weights=matryoshka_weights(settings))
    budget = plan_budget(sum(rows.values()), t.batch_size, t.bi_epochs, t.bi_max_steps, t.warmup_ratio,
                         t.evals_per_epoch, t.max_train_minutes,
                         has_heldout=has_both_classes(test["label"]), keep=t.bi_checkpoint)
    log.info("student budget: %s", budget.reason)

    def heldout_scores(m):
        return score_pairs(m, test["title"].tolist(), test["category"].tolist(), test["keyphrase"].tolist(),
                           dim=settings.serve.dim)

    evaluator = start_auc = None
    if budget.eval_steps:
        evaluator = heldout_evaluator(heldout_scores, test["label"])
        start_auc = threshold_metrics(test["label"], heldout_scores(model))["auc"]
        log.info("held-out AUC of the start model (%s): %.4f", "/".join(Path(start).parts[-2:]), start_auc)
    extra, callbacks = budget_arguments(budget, t.early_stopping_patience, keep=t.bi_checkpoint)
    args = training_arguments(settings, str(Path(tmp) / "_trainer"), device, **extra)
    progress = progress_callback(sink, log)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=tasks, loss=losses,
                                         evaluator=evaluator, callbacks=[progress, *callbacks])
    quiet_trainer(trainer)
    t_train = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t_train
    stopped = stop_reason(result.global_step, budget, callbacks)
    log.info("student training stopped: %s (%d of %d planned steps)", stopped, result.global_step, budget.max_steps)
    if evaluator and t.bi_checkpoint == "last":   # the model is the last step: judge that one (on the curve too)
        if not evaluator.history or evaluator.history[-1]["step"] != result.global_step:
            evaluator(model, steps=int(result.global_step))
        best_auc = evaluator.history[-1]["auc"] or 0.0
    else:
        best_auc = max((h["auc"] or 0.0 for h in evaluator.history), default=None) if evaluator else None
    kept_start = start_auc is not None and best_auc is not None and best_auc < start_auc
    if kept_start:  # never ship a student worse on held-out pairs than the encoder it started from
        log.warning("the %s checkpoint does not beat the start model on the held-out pairs (AUC %.4f < %.4f): "
                    "keeping the start model %s", t.bi_checkpoint, best_auc, start_auc, start)
        model = build_student(settings, start)
        rotation, test_scores = {"applied": False, "why": "the start model is kept as it is"}, None
    else:
        model, rotation, test_scores = _rotate_before_cut(settings, model, train, heldout_scores, test)
    threshold = heldout = None
    if has_both_classes(test["label"]) and test_scores is None:
        test_scores = heldout_scores(model)
    hybrid, hybrid_record, test_scores = _fit_hybrid(settings, model, train, test, test_scores)
    if has_both_classes(test["label"]):
        heldout = threshold_metrics(test["label"], test_scores)
        threshold = heldout["threshold"]
        what = "hybrid score" if hybrid else "cosine"
        heldout["calibration"] = calibration_plot(test["label"], test_scores, layout.version_file(tmp, "calibration"),
                                                  f"student {version}: held-out {what} at {settings.serve.dim}-d",
                                                  threshold)
    save_student(model, layout.version_model_dir(tmp), settings, threshold=threshold, hybrid=hybrid)
    training = {"train_loss": float(result.training_loss), "steps": int(result.global_step), "stop_reason": stopped,
                # the held-out-judged step kept: None without a held-out evaluation (nothing was judged) or when the
                # start model is kept
                "best_step": None if kept_start or not evaluator else (int(result.global_step) if t.bi_checkpoint == "last"
                                                                       else best_step(evaluator)),
                "checkpoint": t.bi_checkpoint, "budget": budget.as_dict(),
                "start_heldout_auc": start_auc, "kept_start_model": kept_start, "cut_rotation": rotation,
                "hybrid_score": hybrid_record, "threshold": threshold,
                "heldout": {k: v for k, v in (heldout or {}).items() if k != "calibration"} or None,
                "train_seconds": round(train_s, 1),
                "steps_per_s": round(result.global_step / max(train_s, 1e-9), 3)}
    if progress.history:
        first, last = progress.history[0], progress.history[-1]
        training["loss_first_log"], training["loss_last_log"] = first["loss"], last["loss"]
    return training, heldout, evaluator, progress.history


def _records(settings: Settings, config: dict, ds: str, version: str, device: str, snapshot: dict,
             data_snapshot: dict, trained: dict, cross_version: str | None) -> VersionRecords:
    """The version folder's records (``models.training.VersionRecords``) of a trained student. ``trained``: what
    ``_train`` returned, as ``training``, ``heldout``, ``evaluator``, ``history``, and the ``tasks`` rows."""
    from keyphrase_pipeline.models.training import VersionRecords

    created = dt.datetime.now(dt.UTC).isoformat()
    training, heldout, evaluator, rows = trained["training"], trained["heldout"], trained["evaluator"], trained["rows"]
    return VersionRecords(
        title=f"Bi-encoder student {version}",
        curves_note=f" ({'+'.join(rows)})",
        train_config={**config, "ds": ds, "version": version, "device": device, "created_at": created,
                      "cross_version": cross_version},
        data=snapshot,
        metrics={"training": training, "heldout_history": evaluator.history if evaluator else [],
                 "calibration": (heldout or {}).get("calibration")},
        history=trained["history"],
        card={"What": "Two towers over one shared encoder: item `title [SEP] category`, keyphrase = query text; "
                      f"mean pooling, L2-normalised; Matryoshka dims {list(settings.train.matryoshka_dims)}, "
                      f"serve at {settings.serve.dim}. Evaluation and promotion: see metrics.json/promotion.json.",
              "Training": {**config, "tasks": rows, "cross_version": cross_version}, "Metrics": training,
              "Data": data_snapshot})


def run(settings: Settings, ds: str, cross: str | None = None, labels: str | None = None, out: str | None = None,
        label_mix: str | None = None, kd_loss: str | None = None) -> dict:
    """Train a student for ``ds``; write a registry version (or ``out``); return its run stats.

    Steps: the run's settings, the training data, the teacher's scores, the task datasets, the start model,
    training in a hidden temp directory, the version's records, then the directory committed into place.
    Promotion is not decided here: ``keyphrase_pipeline.stages.evaluate.run`` gates it against the champion.
    Label-store labels that teach nothing (``training_data.label_balance``: one class, or a judge that does not
    tell CTR positives from random pairs) are not trained on: the ``llm`` task is dropped (logged; ``label_balance``
    in the stats), ``kd`` stays when a teacher exists (one trained on earlier days), and the held-out split picks
    neither the checkpoint nor the threshold (no held-out evaluation).
    A version already in the registry (a rerun with the same inputs) is reused, never rewritten
    (``registry.reusable``; the stats have ``reused`` True).

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD; ``label_mix`` or ``kd_loss`` invalid; ``train.base_model``
            not a directory; ``cross`` neither a directory nor a registry cross version; a
            ``train.matryoshka_dims`` value above the encoder's size; the lake not local (registry) when the
            registry is used (no ``out``, ``CROSS_LATEST``, ``init_from=champion``).
        DataError: (exit 3) what ``training_data.load_training_data`` raises (no or too few labels, an invalid
            ``labels`` file, no catalog snapshot for CTR/SR pairs, a one-sided held-out split); no task of
            ``label_mix`` has rows; ``label_mix`` is ``llm`` alone and the labels teach nothing.
        SchemaError: (exit 3) the label store, catalog, keyphrases, ``ctr_labels`` or ``sr_labels`` break their
            contract.

    Training errors propagate unchanged (exit 1); the temp directory is removed, nothing is committed."""
    from keyphrase_pipeline.labels.training_data import label_balance, load_training_data
    from keyphrase_pipeline.models.training import warm_step_cap

    ds = ds_str(ds)
    device = require_one_training_device(resolve_device(settings.train.device))  # fails here, before any work
    t0 = time.perf_counter()
    settings = _run_settings(settings, label_mix, kd_loss)
    mix = settings.train.label_mix.split("+")
    kd_name = settings.train.kd_loss
    data = load_training_data(settings, ds, labels=labels, need_ctr="ctr" in mix, need_sr="sr" in mix)
    balance = label_balance(settings, data)
    if not balance["usable"] and "llm" in mix:  # labels that teach nothing (training_data.label_balance)
        mix = [m for m in mix if m != "llm"]
        log.warning("student for %s: the llm task is dropped (%s); training on %s", ds, balance["why"], "+".join(mix))
        if not mix:
            raise DataError(f"label_mix {settings.train.label_mix!r} has nothing left to train on for {ds}: "
                            f"{balance['why']}")
        settings = settings.with_overrides(**{"train.label_mix": "+".join(mix)})
    base = resolve_base_model(settings.train.base_model)
    start = registry.start_model_dir(settings, "students", ds, base, warm=settings.train.init_from == "champion")
    settings = warm_step_cap(settings, "bi_max_steps", "warm_bi_max_steps", warm=start != base)
    cross_dir, cross_version, kd, kd_groups, distillation = _teacher(settings, ds, mix, cross, labels, data, start)
    tasks, rows, skipped = _tasks(settings, ds, data, mix, kd, kd_groups)
    config = _config(settings, base, mix, kd_name, settings.train.init_from)
    snapshot = {**data.snapshot, "cross_version": cross_version, "cross_dir": cross_dir, "task_rows": rows,
                "start_model": start,  # a timing would change the version id of a rerun: not in the snapshot
                "distillation": {k: v for k, v in (distillation or {}).items() if k != "teacher_seconds"} or None}
    version = registry.version_id(ds, config, snapshot)
    reused = None if out else registry.reusable(settings, version, "students")
    if reused:  # a rerun of a finished day (`airflow tasks clear train.train_bi`): the same model, never rewritten
        stats = {**reused, "label_mix": "+".join(mix), "kd_loss": kd_name, "cross_version": cross_version,
                 "label_balance": balance, "seconds": round(time.perf_counter() - t0, 1)}
        Lake.from_settings(settings).write_run_stats(ds, "train_bi", stats)
        return stats
    final = registry.target_dir(settings, version, "students", out)
    tmp = tmp_sibling(final)
    os.makedirs(tmp, exist_ok=True)
    log.info("student %s: tasks %s, kd_loss %s, dims %s, start %s, device %s", version, rows,
             kd_name if "kd" in tasks else "-", settings.train.matryoshka_dims, start, device)
    try:
        # labels that teach nothing do not pick the checkpoint or the threshold either: no held-out evaluation
        test = data.llm_test if balance["usable"] else data.llm_test.iloc[0:0]
        training, heldout, evaluator, history = _train(settings, tasks, rows, test, start, tmp, device, version,
                                                       train=_rotation_pairs(data, mix, balance["usable"]))
        training.update({"task_rows": rows, "tasks_skipped": skipped})
        from keyphrase_pipeline.models.training import write_version_records

        trained = {"training": training, "heldout": heldout, "evaluator": evaluator, "history": history, "rows": rows}
        write_version_records(tmp, _records(settings, config, ds, version, device, snapshot, data.snapshot, trained,
                                            cross_version))
        import shutil

        shutil.rmtree(Path(tmp) / "_trainer", ignore_errors=True)
        commit_dir(tmp, final)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = {"version": None if out else version, "path": final, "label_mix": "+".join(mix), "kd_loss": kd_name,
             "cross_version": cross_version, "distillation": distillation, "label_balance": balance, **training,
             "device": device, "precision": precision_name(device),
             "seconds": round(time.perf_counter() - t0, 1)}
    Lake.from_settings(settings).write_run_stats(ds, "train_bi", stats)
    log.info("student %s trained: %s", version, {k: stats[k] for k in ("steps", "train_loss", "steps_per_s")})
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="logical date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--cross", default=None, help="cross-encoder version id or directory to distil from; it also "
                        "scores unjudged pairs for the student (train.kd_extra_ratio pointwise, train.kd_list_ratio "
                        "in candidate lists, default 1 + 4 x the judged pairs)")
    parser.add_argument("--labels", default=None, help="parquet/CSV with title, category, keyphrase, label (instead of the label store)")
    parser.add_argument("--out", default=None, help="write the model here instead of the registry")
    parser.add_argument("--label-mix", default=None, help="e.g. ctr, llm, llm+kd, llm+ctr+kd, llm+sr+ctr+kd")
    parser.add_argument("--kd-loss", default=None, choices=KD_LOSSES)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override train.bi_max_steps (default -1: train.bi_epochs over the data)")


def main(settings: Settings, args) -> int:
    """``kp train-bi``: ``run`` for ``--ds`` (default: today, UTC); prints the stats as indented JSON and returns 0.

    Raises ConfigError (exit 2) for a ``--max-steps`` of 0 or below -1.
    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    ds = args.ds or dt.datetime.now(dt.UTC).date().isoformat()
    from keyphrase_pipeline.models.training import with_step_cap

    settings = with_step_cap(settings, "bi_max_steps", args.max_steps)
    stats = run(settings, ds, cross=args.cross, labels=args.labels, out=args.out,
                  label_mix=args.label_mix, kd_loss=args.kd_loss)
    print(json.dumps(stats, indent=2, default=str))
    return 0
