"""Stage 4d: the CTR model (expected clicks beside relevance): trained on the window's impressions and clicks by
position, gated on held-out days against the CTR champion, registered and exported for batch inference.

For day ``ds`` and the student that serves it (``artifacts.serving.serving_model``):

1. **Days.** The window (``ctr.window_days`` ending at ``ds``) days that have ``ctr_position_daily`` (``kp
   ctr-labels`` writes it); the last ``ctr_model.holdout_days`` of them are held out, the rest train.
2. **Inputs** (``models.ctr_model``, each switchable in ``ctr_model.*``): hashed ids, the student's item and
   keyphrase embeddings, their semantic IDs (residual-quantisation codebooks trained here on the embeddings,
   ``models.semantic_ids``), the item's image vector (``raw/item_images``, when the lake has it). Rows whose item or
   keyphrase has no embedding are left out (counted).
3. **Training**, streamed: the training days' rows are read a row group at a time in a random day order and
   shuffled within a buffer of ``16 x ctr_model.batch_rows`` rows, so memory is set by the batch, not by the
   number of pairs. Loss: the binomial log-loss of (clicks, impressions) (each impression one trial) with the
   display position as a training-only input, plus ``decorrelation_weight`` x the cross-expert de-correlation loss.
   ``epochs`` passes (``max_steps`` caps the steps). Adam, ``learning_rate``.
4. **Held-out metrics and the gate.** On the held-out days, at each row's logged position: impression-weighted AUC
   and log-loss per impression of the challenger, of the CTR champion (when it reads the same student's
   embeddings), and of the position prior (the training days' CTR at each position); also on *cold* rows (items
   with no training impression: what semantics and semantic IDs are for) and warm ones. Promoted when its AUC is
   at least the champion's minus ``auc_tolerance`` and its log-loss at most the champion's plus
   ``logloss_tolerance``; without a comparable champion, when it beats the position prior's log-loss.
5. **Registry and export.** ``registry/ctr/<version>/`` (``model/`` with the weights, the configuration, the
   codebooks and ``ctr_model.onnx`` at the reference position, verified against torch; ``metrics.json``,
   ``train_config.json`` with the student version, ``data.json``, ``promotion.json``); a promotion moves
   ``registry/CTR_CHAMPION``. The version id hashes (day, configuration, student, data): a rerun with the same
   inputs reuses the committed version.

Memory bound: the embedding tables (``4 x serve.dim`` bytes per item and keyphrase), the codes and image vectors,
the shuffle buffer (``16 x batch_rows`` rows) and the held-out predictions (4 floats per held-out row).

``kp train-ctr --ds D [--version STUDENT]``; the DAG runs it on training days after the embeddings.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.artifacts.ctr_scoring import (
    ITEM_SID,
    KEYPHRASE_SID,
    build_features,
    champion_scorer,
    embedding_tables,
    load_images,
)
from keyphrase_pipeline.artifacts.serving import serving_model
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, contract_dataset, dir_fingerprint, ds_range, ds_str, row_group_batches

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

STAGE = "train_ctr"
COLUMNS = ["item_id", "keyphrase_id", "position", "impressions", "clicks"]
SHUFFLE_BATCHES = 16  # the shuffle buffer holds this many batches


def _config(settings: Settings, image_dim: int):
    from keyphrase_pipeline.models.ctr_model import CtrConfig

    c = settings.ctr_model
    return CtrConfig(use_ids=c.use_ids, use_semantics=c.use_semantics, use_semantic_ids=c.use_semantic_ids,
                     use_image=bool(c.use_image and image_dim), emb_dim=settings.serve.dim, image_dim=image_dim,
                     id_buckets=c.id_buckets, id_dim=c.id_dim, semantic_dim=c.semantic_dim, sid_levels=c.sid_levels,
                     sid_codes=1 << c.sid_bits, sid_dim=c.sid_dim, image_compressed_dim=c.image_compressed_dim,
                     hidden=c.hidden, experts=c.experts, max_position=c.max_position,
                     reference_position=c.reference_position)


def _day_batches(lake: Lake, days: list[str], batch_rows: int):
    """(file, rows) of the days' ``ctr_position_daily``, one row group at a time; ``rows``: ``checked_rows``."""
    for day in days:
        dataset = contract_dataset(lake.path("ctr_position_daily", ds=day), "ctr_position_daily")
        for path, batch in row_group_batches(dataset, COLUMNS, batch_rows):
            yield path, checked_rows(batch, path)


def checked_rows(batch, where: str) -> dict[str, np.ndarray]:
    """A ``ctr_position_daily`` record batch as int64 arrays (``COLUMNS``). ``kp ctr-labels`` writes these rows from
    validated events, so a null, a position below 1, negative impressions or clicks, or more clicks than impressions
    means the dataset was damaged or written by something else: DataError (exit 3) naming the file, the problem
    and how many rows have it (nothing is trained on such data)."""
    for c in COLUMNS:
        nulls = batch.column(c).null_count
        if nulls:
            raise DataError(f"{where}: column {c} has {nulls} null value(s) in ctr_position_daily (rewrite the day "
                            "with `kp ctr-labels --ds D`)")
    rows = {c: batch.column(c).to_numpy(zero_copy_only=False).astype(np.int64) for c in COLUMNS}
    for problem, bad in (("position below 1", rows["position"] < 1),
                         ("negative impressions or clicks", (rows["impressions"] < 0) | (rows["clicks"] < 0)),
                         ("more clicks than impressions", rows["clicks"] > rows["impressions"])):
        if bad.any():
            raise DataError(f"{where}: {int(bad.sum())} row(s) of ctr_position_daily with {problem} (rewrite the day "
                            "with `kp ctr-labels --ds D`)")
    return rows


def shuffled_batches(lake: Lake, days: list[str], batch_rows: int, rng: np.random.Generator):
    """Training batches of ``batch_rows`` rows (dict of int64 arrays, ``COLUMNS``): days in a random order, rows
    shuffled within a buffer of ``SHUFFLE_BATCHES`` batches (the stored rows are sorted by item: unshuffled, one
    step would see a handful of items). The last batch may be shorter. Memory: the buffer."""
    buffer: list[dict[str, np.ndarray]] = []
    held = 0

    def drain(final: bool):
        rows = {c: np.concatenate([b[c] for b in buffer]) for c in COLUMNS}
        order = rng.permutation(held)
        cut = held if final else (held // batch_rows) * batch_rows
        batches = [{c: v[order[i:i + batch_rows]] for c, v in rows.items()} for i in range(0, cut, batch_rows)]
        rest = {c: v[order[cut:]] for c, v in rows.items()}
        return batches, rest

    for _path, rows in _day_batches(lake, [days[i] for i in rng.permutation(len(days))], batch_rows):
        buffer.append(rows)
        held += len(rows["item_id"])
        if held >= SHUFFLE_BATCHES * batch_rows:
            out, rest = drain(final=False)
            yield from out
            buffer, held = [rest], len(rest["item_id"])
    if held:
        out, _rest = drain(final=True)
        yield from out


def _content_hash(table) -> str:
    """sha1 (16 hex digits) of a vector table's ids and values: image vectors are few and read whole, and a rewrite
    with new values keeps the file's name and size (what ``dir_fingerprint`` sees)."""
    import hashlib

    h = hashlib.sha1(np.ascontiguousarray(table.ids).tobytes())
    h.update(np.ascontiguousarray(table.values).tobytes())
    return h.hexdigest()[:16]


def _count_rows(lake: Lake, days: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows
               for d in days for f in contract_dataset(lake.path("ctr_position_daily", ds=d), "ctr_position_daily").files)


def _metrics(p: np.ndarray, clicks: np.ndarray, imps: np.ndarray) -> dict:
    from keyphrase_pipeline.models.ctr_model import log_loss_per_impression, weighted_auc

    if not len(p):
        return {"auc": None, "log_loss": None, "impressions": 0, "clicks": 0}
    auc = weighted_auc(p, clicks, imps)
    return {"auc": None if np.isnan(auc) else round(auc, 5),
            "log_loss": round(log_loss_per_impression(p, clicks, imps), 6),
            "impressions": int(imps.sum()), "clicks": int(clicks.sum()),
            "predicted_ctr": round(float((p * imps).sum() / max(imps.sum(), 1)), 6),
            "observed_ctr": round(float(clicks.sum() / max(imps.sum(), 1)), 6)}


def _position_prior(lake: Lake, days: list[str], batch_rows: int, cfg, seen: np.ndarray, items_table) -> np.ndarray:
    """One pass over the training days: the CTR at each display position (float64 ``(max_position + 1,)``; positions
    without impressions get the overall CTR), and ``seen`` set for every item with a training impression."""
    clicks, imps = np.zeros(cfg.max_position + 1), np.zeros(cfg.max_position + 1)
    for _path, rows in _day_batches(lake, days, batch_rows):
        pos = np.clip(rows["position"], 1, cfg.max_position)
        np.add.at(clicks, pos, rows["clicks"])
        np.add.at(imps, pos, rows["impressions"])
        at = items_table.rows(rows["item_id"])
        seen[at[(at >= 0) & (rows["impressions"] > 0)]] = True
    overall = clicks.sum() / max(imps.sum(), 1)
    return np.where(imps > 0, clicks / np.maximum(imps, 1), overall)


def _start_from_prior(model, prior: np.ndarray, cfg) -> None:
    """Start the position biases at the prior's log-odds relative to the reference position, and each expert's
    output bias at the reference position's log-odds: step 0 predicts the position prior, so a short budget
    (the demo's few hundred steps) spends itself on what the prior does not know, not on learning position."""
    import torch

    p = np.clip(prior, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    ref = logit[cfg.reference_position]
    with torch.no_grad():
        model.position.weight[:, 0] = torch.as_tensor(logit - ref, dtype=torch.float32)
        for expert in model.experts:
            expert[-1].bias.fill_(float(ref))


def _train(cfg, features, lake, days, settings, seen: np.ndarray, items_table):
    """Train a model on ``days``; returns (model, stats, prior CTR by position). ``seen`` (bool per item-table row)
    is set for every item with a training impression."""
    import torch

    from keyphrase_pipeline.models.ctr_model import binomial_log_loss, build_model, decorrelation_loss

    c = settings.ctr_model
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    model = build_model(cfg, seed=c.seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=c.learning_rate)
    total_rows = _count_rows(lake, days)
    steps_per_epoch = max(1, -(-total_rows // c.batch_rows))
    planned = int(np.ceil(c.epochs * steps_per_epoch))
    if c.max_steps:
        planned = min(planned, c.max_steps)
    prior = _position_prior(lake, days, c.batch_rows, cfg, seen, items_table)
    _start_from_prior(model, prior, cfg)
    step, epoch, left_out, loss_sum, decor_sum, t0 = 0, 0, 0, 0.0, 0.0, time.perf_counter()
    log.info("CTR model: %d training rows over %d days, %d steps planned (%d per epoch)", total_rows, len(days),
             planned, steps_per_epoch)
    while step < planned:
        at_start = step
        for batch in shuffled_batches(lake, days, c.batch_rows, rng):
            pos = np.clip(batch["position"], 1, cfg.max_position)
            inputs, kept = features.build(batch["item_id"], batch["keyphrase_id"])
            left_out += int((~kept).sum()) if epoch == 0 else 0
            if not kept.any():
                continue
            logit, experts = model({k: torch.as_tensor(v) for k, v in inputs.items()}, torch.as_tensor(pos[kept]))
            loss = binomial_log_loss(logit, torch.as_tensor(batch["clicks"][kept]),
                                     torch.as_tensor(batch["impressions"][kept]))
            decor = decorrelation_loss(experts)
            opt.zero_grad()
            (loss + c.decorrelation_weight * decor).backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach())
            decor_sum += float(decor.detach())
            if step % max(1, planned // 10) == 0:
                log.info("CTR model step %d/%d: log-loss %.5f, expert correlation loss %.4f (%.1f s)", step, planned,
                         loss_sum / step, decor_sum / step, time.perf_counter() - t0)
            if step >= planned:
                break
        epoch += 1
        if step == at_start:  # a pass without one usable row (no row's item and keyphrase have embeddings)
            break
    model.eval()
    return model, {"steps": step, "epochs_run": epoch, "training_rows": int(total_rows),
                   "rows_without_embedding": left_out, "train_log_loss": round(loss_sum / max(step, 1), 6),
                   "decorrelation_loss": round(decor_sum / max(step, 1), 6),
                   "train_seconds": round(time.perf_counter() - t0, 2)}, prior


def _evaluate(model, features, champion, prior, lake, days, cfg, seen, items_table, batch_rows: int) -> dict:
    """Held-out metrics of the challenger, the champion (or None) and the position prior, overall, cold and warm."""
    import torch

    from keyphrase_pipeline.models.ctr_model import cross_expert_correlation

    cols = {k: [] for k in ("p", "champ", "prior", "clicks", "imps", "cold")}
    experts_sample = []
    for _path, b in _day_batches(lake, days, batch_rows):
        inputs, kept = features.build(b["item_id"], b["keyphrase_id"])
        both = kept
        if champion is not None:  # both models score the same rows: those both can (the same student's embeddings)
            p_champ, kept_champ = champion.predict_at(b["item_id"], b["keyphrase_id"], b["position"])
            p_champ_full = np.full(len(kept), np.nan)
            p_champ_full[kept_champ] = p_champ
            both = kept & kept_champ
        if not both.any():
            continue
        pos = np.clip(b["position"], 1, cfg.max_position)
        with torch.no_grad():
            logit, experts = model({k: torch.as_tensor(v) for k, v in inputs.items()}, torch.as_tensor(pos[kept]))
        p_all = np.full(len(kept), np.nan)
        p_all[kept] = torch.sigmoid(logit).double().numpy()
        if len(experts_sample) < 20:
            experts_sample.append(experts.numpy())
        rows = items_table.rows(b["item_id"][both])
        cols["p"].append(p_all[both])
        cols["champ"].append(p_champ_full[both] if champion is not None else np.zeros(int(both.sum())))
        cols["prior"].append(prior[pos[both]])
        cols["clicks"].append(b["clicks"][both])
        cols["imps"].append(b["impressions"][both])
        cols["cold"].append(~seen[rows])
    if not cols["p"]:
        raise DataError(f"no held-out rows with embeddings on {days}")
    a = {k: np.concatenate(v) for k, v in cols.items()}
    out = {}
    for name, key in (("challenger", "p"), ("position_prior", "prior")) + ((("champion", "champ"),) if champion else ()):
        out[name] = {"all": _metrics(a[key], a["clicks"], a["imps"]),
                     "cold_items": _metrics(a[key][a["cold"]], a["clicks"][a["cold"]], a["imps"][a["cold"]]),
                     "warm_items": _metrics(a[key][~a["cold"]], a["clicks"][~a["cold"]], a["imps"][~a["cold"]])}
    out["rows"] = int(len(a["p"]))
    out["cold_rows"] = int(a["cold"].sum())
    out["expert_correlation"] = (round(cross_expert_correlation(np.concatenate(experts_sample)), 4)
                                 if experts_sample and cfg.experts > 1 else None)
    return out


def _gate(settings: Settings, heldout: dict, champion_why: str) -> tuple[bool, str]:
    c = settings.ctr_model
    new = heldout["challenger"]["all"]
    if "champion" in heldout:
        old = heldout["champion"]["all"]
        if new["auc"] is None or old["auc"] is None:
            return False, "held-out AUC undefined (one class only): the champion stays"
        ok = new["auc"] >= old["auc"] - c.auc_tolerance and new["log_loss"] <= old["log_loss"] + c.logloss_tolerance
        return ok, (f"held-out AUC {new['auc']:.4f} vs champion {old['auc']:.4f} (tolerance {c.auc_tolerance}), "
                    f"log-loss {new['log_loss']:.5f} vs {old['log_loss']:.5f} (tolerance {c.logloss_tolerance})")
    prior = heldout["position_prior"]["all"]
    ok = new["log_loss"] < prior["log_loss"]
    return ok, (f"no comparable champion ({champion_why}): held-out log-loss {new['log_loss']:.5f} vs the position "
                f"prior's {prior['log_loss']:.5f}")


def run(settings: Settings, ds, version: str | None = None) -> dict:
    """Train, evaluate, gate, register and export the CTR model for day ``ds`` (module docstring); returns its run
    stats (also ``runs/ds=D/train_ctr.json``): ``version``, ``student_version``, ``promoted``, ``reason``, ``heldout``
    (metrics per model, overall / cold / warm items), training figures, ``skipped`` (with ``why``) when there is
    nothing to train on.

    Raises DataError (exit 3): no student or its embeddings, a broken ``ctr_position_daily`` or ``item_images``, no
    held-out row with embeddings; ConfigError (exit 2): an invalid ``ctr_model`` configuration."""


    c = settings.ctr_model
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    t_start = time.perf_counter()

    def skipped(why: str) -> dict:
        log.warning("train_ctr %s: skipped: %s", ds, why)
        stats = {"skipped": True, "why": why, "promoted": False}
        lake.write_run_stats(ds, STAGE, stats)
        return stats

    if not c.enabled:
        return skipped("ctr_model.enabled is false")
    student = serving_model(settings, ds, version)
    days = [d for d in ds_range(ds, settings.ctr.window_days) if lake.exists(lake.path("ctr_position_daily", ds=d))]
    if len(days) <= c.holdout_days:
        return skipped(f"{len(days)} day(s) of ctr_position_daily in the window: more than ctr_model.holdout_days "
                       f"({c.holdout_days}) are needed (kp ctr-labels writes them)")
    train_days, holdout_days = days[:-c.holdout_days], days[-c.holdout_days:]
    items, keyphrases = embedding_tables(settings, student)
    images = load_images(settings) if c.use_image else None
    cfg = _config(settings, int(images.values.shape[1]) if images is not None else 0)
    data = {"student_version": student, "train_days": train_days, "holdout_days": holdout_days,
            "fingerprints": {d: dir_fingerprint(lake.path("ctr_position_daily", ds=d)) for d in days},
            "images": _content_hash(images) if images is not None else None}
    # what shapes the model (not serving choices: enabled, rank_by, the gate's tolerances)
    config = {"model": dict(vars(cfg)), "student_version": student,
              "ctr_model": c.model_dump(exclude={"enabled", "rank_by", "auc_tolerance", "logloss_tolerance"})}
    vid = registry.version_id(ds, config, data)
    again = registry.reusable(settings, vid, "ctr")
    if again is not None:  # the run that made it: its held-out figures and the gate's verdict
        vdir = layout.registry_version_dir(settings, vid, "ctr")
        promotion = lake.read_json(layout.version_file(vdir, "promotion"), default={}) or {}
        again.update({"student_version": student, "promoted": bool(promotion.get("promoted")),
                      "reason": promotion.get("reason") or promotion.get("gate"),
                      "heldout": (lake.read_json(layout.version_file(vdir, "metrics"), default={}) or {}).get("heldout")})
        lake.write_run_stats(ds, STAGE, again)
        return again

    tmp = registry.new_version_tmp(settings, vid, "ctr")
    try:
        return _train_and_register(settings, ds, lake, vid, tmp, student, cfg, config, data, items, keyphrases, images,
                                   train_days, holdout_days, t_start, skipped)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # a failed run leaves no half-written version behind
        raise


def _train_and_register(settings, ds, lake, vid, tmp, student, cfg, config, data, items, keyphrases, images,
                        train_days, holdout_days, t_start, skipped) -> dict:
    """The rest of ``run`` once the version's temp directory exists: codebooks, training, evaluation, the gate,
    the export and the commit."""
    import torch

    from keyphrase_pipeline.models import ctr_model, semantic_ids

    c = settings.ctr_model
    mdir = Path(layout.version_model_dir(tmp))
    mdir.mkdir(parents=True, exist_ok=True)
    if cfg.use_semantic_ids:
        sid_bits = c.sid_bits
        for name, table in ((ITEM_SID, items), (KEYPHRASE_SID, keyphrases)):
            semantic_ids.save_codebook(semantic_ids.train_codebook(table.values, cfg.sid_levels, sid_bits, c.seed),
                                       mdir / name)
    features = build_features(cfg, items, keyphrases, mdir, images)
    seen = np.zeros(len(items), dtype=bool)
    model, training, prior = _train(cfg, features, lake, train_days, settings, seen, items)
    if training["steps"] == 0:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return skipped("no training row has an item and a keyphrase with embeddings")
    try:
        serving = serving_model(settings, ds)
    except DataError:  # no student serves yet (no champion): nothing else to score for
        serving = student
    champion, champion_why = champion_scorer(settings, student, (items, keyphrases), images)
    heldout = _evaluate(model, features, champion, prior, lake, holdout_days, cfg, seen, items, c.batch_rows)
    promoted, reason = _gate(settings, heldout, champion_why)
    if promoted and student != serving:  # a model for another student would take the serving student's scores away
        promoted, reason = False, (f"trained on student {student}, but day {ds} serves {serving}: registered, not "
                                   f"promoted ({reason})")

    ctr_model.save(model, cfg, mdir)
    onnx_path = ctr_model.export_onnx(model, cfg, mdir / ctr_model.ONNX_FILE)
    _path, check = next(_day_batches(lake, holdout_days, 256))  # _evaluate found held-out rows: there is one
    inputs, kept = features.build(check["item_id"], check["keyphrase_id"])
    import onnxruntime as ort

    onnx_p = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(["p_click"], inputs)[0]
    with torch.no_grad():
        torch_p = torch.sigmoid(model({k: torch.as_tensor(v) for k, v in inputs.items()})[0]).numpy()
    export_diff = float(np.abs(onnx_p - torch_p).max()) if len(onnx_p) else 0.0
    if export_diff > 1e-4:
        raise DataError(f"CTR model {vid}: its ONNX export differs from torch by {export_diff:.2e} (> 1e-4)")

    created = dt.datetime.now(dt.UTC).isoformat()
    metrics = {"heldout": heldout, "training": training, "export_max_abs_diff": export_diff}
    lake.write_json(layout.version_file(tmp, "train_config"), {**config, "ds": ds, "version": vid, "created_at": created})
    lake.write_json(layout.version_file(tmp, "data"), data)
    lake.write_json(layout.version_file(tmp, "metrics"), metrics)
    lake.write_json(layout.version_file(tmp, "promotion"), {"promoted": False, "gate": reason})
    registry.commit_version(settings, tmp, vid, "ctr")
    if promoted:
        registry.set_ctr_champion(settings, vid, reason)
    stats = {"version": vid, "student_version": student, "promoted": promoted, "reason": reason,
             "champion_before": champion.version if champion else None, "heldout": heldout, **training,
             "train_days": len(train_days), "holdout_days": holdout_days, "parts": cfg.inputs(),
             "experts": cfg.experts, "decorrelation_weight": c.decorrelation_weight,
             "seconds": round(time.perf_counter() - t_start, 2)}
    lake.write_run_stats(ds, STAGE, stats)
    new = heldout["challenger"]["all"]
    log.info("CTR model %s: held-out AUC %s, log-loss %s (cold items: AUC %s); %s: %s", vid, new["auc"],
             new["log_loss"], heldout["challenger"]["cold_items"]["auc"], "promoted" if promoted else "not promoted",
             reason)
    return stats


def add_arguments(parser) -> None:
    """``--ds`` (the day) and ``--version`` (the student whose embeddings it reads; default: the day's)."""
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--version", default=None, help="student version (default: the one the day serves)")


def main(settings: Settings, args) -> int:
    """``kp train-ctr``: print the stats as JSON; exit 0 (also when skipped or not promoted)."""
    import json

    print(json.dumps(run(settings, args.ds, args.version), indent=2, default=str))
    return 0
