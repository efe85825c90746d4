"""Stage 2b: label one shard of the day's pairs with the configured LLM judge (the fan-out unit).

The Airflow DAG maps ``run`` over the shards listed by ``kp select-pairs`` (pool ``llm``, queue ``gpu``).
Each judged batch is written at once, atomically, as
``llm_labels/staging/ds=D/shard=NNNNN/batch-XXXXX.parquet``; a ``_DONE`` marker (holding the pairs
run id) closes the shard. A killed worker loses at most the batch in flight; a retried or restarted
shard skips every pair already labelled (staged for this day, or in the store) — so a pair is never
paid for twice and a rerun of a finished shard calls the judge 0 times.

A pair whose title or keyphrase is blank under the text rule (``keyphrase_pipeline.models.text.clean``:
whitespace, zero-width, BOM or bidi characters only) is never sent to the judge: ``kp select-pairs``
quarantines such rows already; a pairs file written otherwise has them skipped and counted
(``skipped_blank`` in the shard's stats), its rows left in place.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from keyphrase_pipeline.jobs.label_store import (
    read_done,
    read_manifest,
    read_staging,
    read_store_keys,
    staging_files,
    text_hash,
    pair_keys,
    to_label_frame,
)
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str, read_parquet, write_parquet_file_atomic
from keyphrase_pipeline.models.text import is_blank

log = logging.getLogger(__name__)


def already_labelled(lake: Lake, ds, among) -> set[str]:
    """Which of ``among`` (pair_keys) were labelled before: staged for this day (any shard, any run)
    or in the store (any day). Returns a set of pair_key strings, a subset of ``among``.

    A staged file that is not parquet raises pyarrow's ArrowInvalid (exit 1)."""
    among = set(among)
    staged = set(read_staging(lake, ds, cols=["pair_key"])["pair_key"].tolist()) & among
    return staged | read_store_keys(lake, among=among - staged)


def _next_batch_index(lake: Lake, ds, shard: int) -> int:
    files = staging_files(lake, ds, shard)
    if not files:
        return 0
    return max(layout.batch_index(f) for f in files) + 1


def _done_stats(lake: Lake, ds: str, shard: int, manifest: dict) -> dict | None:
    """The stats of a shard already done for this pairs run (nothing to judge), else None."""
    done = read_done(lake, ds, shard)
    if not (done and done.get("run_id") == manifest["run_id"]):
        return None
    log.info("ds=%s %s already done (%s pairs): nothing to do", ds, layout.shard_dir_name(shard), done.get("pairs"))
    return {"ds": ds, "shard": shard, "skipped": True, "judged": 0, "judge_calls": 0, "batches": 0,
            "pairs": done.get("pairs", 0), "already_labelled": done.get("pairs", 0)}


def _pairs_to_judge(lake: Lake, ds: str, shard: int, pairs: pd.DataFrame, judge) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the shard's pairs keyed for this judge, those not labelled before)."""
    keys = pair_keys(pairs, judge.model, judge.prompt_version)
    mismatched = int((keys != pairs["pair_key"]).sum())
    if mismatched:
        log.warning("%d pairs were selected for another judge model/prompt; keyed for %s/%s instead",
                    mismatched, judge.model, judge.prompt_version)
    pairs = pairs.assign(pair_key=keys).drop_duplicates("pair_key")
    seen = already_labelled(lake, ds, pairs["pair_key"])
    todo = pairs[~pairs["pair_key"].isin(seen)].reset_index(drop=True)
    blank = np.array([is_blank(t) or is_blank(k) for t, k in zip(todo["title"], todo["keyphrase"], strict=True)],
                     dtype=bool)
    if blank.any():  # never pay the judge for a pair it cannot read (select-pairs quarantines these already)
        log.warning("ds=%s %s: %d pair(s) with a blank title or keyphrase not sent to the judge (item_id %s)", ds,
                    layout.shard_dir_name(shard), int(blank.sum()), todo.loc[blank, "item_id"].head(10).tolist())
        todo = todo[~blank].reset_index(drop=True)
    log.info("ds=%s %s: %d pairs, %d already labelled, %d to judge with %r", ds, layout.shard_dir_name(shard), len(pairs),
             len(pairs) - len(todo) - int(blank.sum()), len(todo), judge)
    return pairs, todo, int(blank.sum())


def _label_rows(settings, judge, batch: pd.DataFrame) -> pd.DataFrame:
    """One judge call on ``batch``: its label rows (DataError when the judge returns bad scores)."""
    p = np.asarray(judge.score(batch), dtype=np.float64)
    if p.shape != (len(batch),) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DataError(f"judge {judge.name} returned {p.shape} scores outside [0, 1] for {len(batch)} pairs")
    return pd.DataFrame({
        "item_id": batch["item_id"].to_numpy(),
        "keyphrase_id": batch["keyphrase_id"].to_numpy(),
        "text_hash": [text_hash(t, c, k) for t, c, k in
                      zip(batch["title"], batch["category"], batch["keyphrase"], strict=True)],
        "pair_key": batch["pair_key"].to_numpy(),
        "title": batch["title"].to_numpy(),
        "category": batch["category"].to_numpy(),
        "keyphrase": batch["keyphrase"].to_numpy(),
        "source": batch["source"].to_numpy(),
        "p_yes": p,
        "label": (p >= settings.judge.threshold).astype("int32"),
        "judge": judge.name,
        "judge_model": judge.model,
        "prompt_version": judge.prompt_version,
        "labelled_at": pd.Timestamp.now(tz="UTC"),
    })


def _judge_batches(settings, lake: Lake, ds: str, shard: int, judge, todo: pd.DataFrame) -> dict:
    """Judge ``todo`` in batches, each written to the staging area at once; returns the counts."""
    chunk = settings.judge.batch_size * settings.judge.concurrency
    index = _next_batch_index(lake, ds, shard)
    sdir = layout.staging_dir(lake, ds, shard)
    judged, batches, calls, yes = 0, 0, 0, 0
    for start in range(0, len(todo), chunk):
        batch = todo.iloc[start:start + chunk]
        calls += 1
        rows = _label_rows(settings, judge, batch)
        write_parquet_file_atomic(to_label_frame(rows), f"{sdir}/{layout.batch_file_name(index)}")
        index += 1
        batches += 1
        judged += len(batch)
        yes += int(rows["label"].sum())
        log.info("ds=%s %s: %d/%d judged", ds, layout.shard_dir_name(shard), judged, len(todo))
    return {"judged": judged, "batches": batches, "calls": calls, "yes": yes}


def run(settings, ds, shard: int, judge=None) -> dict:
    """Label one shard; returns stats (pairs, skipped, judged, batches, yes_rate, judge calls).

    Every judged batch is written to the staging area as soon as it is scored; the ``_DONE`` marker is written
    last, so a failure leaves the shard not done and a rerun judges only what is left.

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; the judge misconfigured (unknown backend, empty or missing
            ``judge.model``, no endpoint, a tokenizer without one-token yes/no, vLLM not installed); the judge's
            prompt version differs from ``judge.prompt_version``; the OpenAI-compatible endpoint refused a
            request (HTTP 4xx other than 408/409/425/429).
        DataError: (exit 3) no pairs manifest for ``ds``; ``shard`` not in it; the shard's pairs missing; the
            judge returned scores not of shape ``(n,)``, not finite or outside [0, 1], or an answer without yes/no
            log-probabilities; the simulated judge found no synthetic world.
        SchemaError: (exit 3) the shard's pairs break contract ``pairs``.
        JudgeUnavailable: (a KPError: exit 1) the endpoint kept failing (timeouts, 429, 5xx) after
            ``judge.max_retries`` retries.
    """
    lake = Lake.from_settings(settings)
    ds = ds_str(ds)
    shard = int(shard)
    manifest = read_manifest(lake, ds)
    if shard not in manifest["shards"]:
        raise DataError(f"ds={ds} has no shard {shard}; shards are {manifest['shards']}")
    done = _done_stats(lake, ds, shard, manifest)
    if done:
        return done

    pairs = read_parquet(layout.pairs_dir(lake, ds, shard), contract="pairs")
    own_judge = judge is None
    if judge is None:
        from keyphrase_pipeline.jobs.judges import get_judge

        judge = get_judge(settings)
    if judge.prompt_version != settings.judge.prompt_version:
        raise ConfigError(f"judge prompt {judge.prompt_version} differs from judge.prompt_version {settings.judge.prompt_version}")
    pairs, todo, skipped_blank = _pairs_to_judge(lake, ds, shard, pairs, judge)
    t0 = time.monotonic()
    try:
        n = _judge_batches(settings, lake, ds, shard, judge, todo)
    finally:
        if own_judge:
            judge.close()
    seconds = time.monotonic() - t0
    judged = n["judged"]
    stats = {"ds": ds, "shard": shard, "skipped": False, "pairs": int(len(pairs)),
             "already_labelled": int(len(pairs) - len(todo) - skipped_blank), "skipped_blank": skipped_blank,
             "judged": judged, "batches": n["batches"],
             "judge_calls": n["calls"], "yes_rate": round(n["yes"] / judged, 4) if judged else None,
             "judge": judge.name, "judge_model": judge.model, "prompt_version": judge.prompt_version,
             "pairs_per_s": round(judged / seconds, 2) if judged and seconds > 0 else None,
             "run_id": manifest["run_id"]}
    lake.write_json(layout.done_marker(lake, ds, shard), stats)
    return stats


def run_all(settings, ds, judge=None) -> dict:
    """Label every shard of the day in this process (one judge loaded once, only when a shard is pending).

    Returns ``{ds, shards, judged, judge_calls, skipped_shards}``. Raises what ``run`` raises, at the first
    failing shard (shards before it stay done)."""
    lake = Lake.from_settings(settings)
    manifest = read_manifest(lake, ds)
    shards = manifest["shards"]
    pending = [sh for sh in shards if (read_done(lake, ds, sh) or {}).get("run_id") != manifest["run_id"]]
    own = judge is None
    if own and pending:  # load a model only when there is something to judge
        from keyphrase_pipeline.jobs.judges import get_judge

        judge = get_judge(settings)
    results = []
    try:
        for shard in shards:
            results.append(run(settings, ds, shard, judge=judge))
    finally:
        if own and judge is not None:
            judge.close()
    return {"ds": ds_str(ds), "shards": len(shards), "judged": sum(r["judged"] for r in results),
            "judge_calls": sum(r["judge_calls"] for r in results),
            "skipped_shards": sum(1 for r in results if r["skipped"])}


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument("--shard", type=int, help="label this shard")
    g.add_argument("--all", action="store_true", help="label every shard of the day in this process")


def main(settings, args) -> int:
    """``kp label``: ``run`` for ``--shard`` or ``run_all`` for ``--all``; prints the stats as one JSON line and
    returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.core.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    import json

    stats = run_all(settings, args.ds) if args.all else run(settings, args.ds, args.shard)
    print(json.dumps(stats, default=str))
    return 0
