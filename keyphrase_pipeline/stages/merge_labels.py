"""Stage merge_labels: append the day's labelled shards to the label store (``kp merge-labels --ds D``).

Runs after the fan-out (``kp llm-label``): it refuses while a shard of the day's pairs is not done, takes every
staged batch of the day (keys recomputed from the rows), drops pairs already stored on earlier days, atomically
replaces the day's partition ``llm_labels/store/ds=D/`` and records stats (counts, yes-rate, P(yes) histogram,
agreement with CTR positives, pairs quarantined for unusable answers) in ``runs/ds=D/merge_labels.json``.
The store itself (keys, reading, the v1-key migration) is ``keyphrase_pipeline.labels.store``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import check_pandas
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str
from keyphrase_pipeline.labels.store import (
    LABEL_COLUMNS,
    _keys_current,
    _make_keys_current,
    migrate_with_lease,
    read_done,
    read_manifest,
    read_quarantine,
    read_staging,
    read_store_keys,
    row_pair_keys,
    store_lease,
    store_partitions,
    to_label_frame,
    write_label_table,
)

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


# ---- merge ---------------------------------------------------------------------------------------------
def run(settings: Settings, ds) -> dict:
    """Merge the day's staged labels into the store; stats in runs/ds=D/llm_labels.json.

    Rows whose pair_key is in the store on an earlier day are dropped; the day's partition is replaced.

    Holds the store's lease while it writes (and migrates v1 keys first, once).

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD.
        DataError: (exit 3) no pairs manifest for the day (run select-pairs); a shard of the manifest not done
            for the manifest's run id (run ``kp llm-label --all``).
        LeaseBusy: (exit 1) another process kept the store busy past ``judge.lease_wait_s``.
        SchemaError: (exit 3) a staged batch, the merged labels or the day's ``ctr_labels`` break their contract.

    A staged file that is not parquet raises pyarrow's ArrowInvalid, a manifest that is not JSON
    json.JSONDecodeError: neither is a KPError (exit 1)."""
    lake = Lake.from_settings(settings)
    ds = ds_str(ds)
    manifest = read_manifest(lake, ds)
    not_done, devices = [], set()
    for shard in manifest["shards"]:
        done = read_done(lake, ds, shard)
        if not done or done.get("run_id") != manifest["run_id"]:
            not_done.append(shard)
        elif done.get("judge_device"):  # shards done before judges reported their device say nothing
            devices.add(str(done["judge_device"]))
    if not_done:
        raise DataError(f"cannot merge ds={ds}: shard(s) {not_done} of {len(manifest['shards'])} not labelled yet "
                        f"(run `kp llm-label --ds {ds} --all`)")
    lease = store_lease(settings)  # one writer of the store at a time (another merge, the key migration)
    if lease is not None:
        lease.acquire(settings.judge.lease_wait_s)
    try:
        if not _keys_current(lake):
            _make_keys_current(settings, lake)
        return _merge(settings, lake, ds, manifest, sorted(devices))
    finally:
        if lease is not None:
            lease.release()


def _merge(settings: Settings, lake: Lake, ds: str, manifest: dict, judge_devices: list[str]) -> dict:
    staged = read_staging(lake, ds)
    n_staged = len(staged)
    if n_staged:
        staged["pair_key"] = row_pair_keys(staged)  # v2 keys even for rows an older worker staged
        staged = staged.sort_values(["labelled_at", "pair_key"], kind="mergesort").drop_duplicates("pair_key")
    n_unique = len(staged)
    earlier = read_store_keys(lake, before_ds=ds, among=staged["pair_key"]) if n_unique else set()
    day = staged[~staged["pair_key"].isin(earlier)] if n_unique else staged
    day = day.sort_values(["pair_key"]).reset_index(drop=True) if len(day) else day
    if len(day):
        check_pandas(to_label_frame(day), "llm_labels", where="merged labels")
    target = lake.path("llm_store", ds=ds)
    write_label_table(day if len(day) else pd.DataFrame(columns=LABEL_COLUMNS), target)

    stats = label_stats(settings, lake, ds, day)
    quarantined = read_quarantine(lake, ds, cols=["pair_key", "reason"])
    quarantined = quarantined[~quarantined["pair_key"].isin(set(staged["pair_key"]) if n_unique else set())]
    quarantined = quarantined.drop_duplicates("pair_key", keep="last")
    stats.update({
        "quarantined": int(len(quarantined)),
        "quarantined_by_reason": {str(k): int(v) for k, v in quarantined["reason"].value_counts().sort_index().items()},
        "quarantine_path": layout.label_quarantine_dir(lake, ds),
        "rows": int(len(day)),
        "staged_rows": int(n_staged),
        "duplicates_in_staging": int(n_staged - n_unique),
        "already_in_store_earlier": int(n_unique - len(day)),
        "shards": len(manifest["shards"]),
        "judge_devices": judge_devices,  # where the shards' judges ran (``Judge.runs_on``), one entry per kind
        "store_days": len(store_partitions(lake)),
        "path": target,
    })
    lake.write_run_stats(ds, "merge_labels", stats)
    log.info("merged %d labels for ds=%s (yes-rate %s, CTR-positive agreement %s, %d pairs quarantined)", len(day),
             ds, stats["yes_rate"], stats["agreement_ctr_positive"], stats["quarantined"])
    share = settings.train.min_label_class_share
    if stats["yes_rate"] is not None and min(stats["yes_rate"], 1 - stats["yes_rate"]) < share:
        log.warning("ds=%s: the judge said %s to %.1f%% of the day's %d pairs: labels of one class teach nothing, and "
                    "training will not use them while the store's labels stay this one-sided "
                    "(train.min_label_class_share %g); check the judge", ds, "yes" if stats["yes_rate"] > 0.5 else "no",
                    100 * max(stats["yes_rate"], 1 - stats["yes_rate"]), len(day), share)
    return stats


def label_stats(settings: Settings, lake: Lake, ds: str, day: pd.DataFrame) -> dict:
    """Yes-rate, P(yes) histogram, per-source stats and agreement with the day's CTR positives.

    ``day``: frame of contract llm_labels. Returns a JSON-able dict; ``p_yes_hist`` counts P(yes) in 10 equal
    bins over [0, 1]; rates are shares in [0, 1] (None for no rows). CTR positives come from
    ``ctr_labels/ds=`` when present (SchemaError, exit 3, when it breaks its contract), else ``source``."""
    if len(day) == 0:
        return {"yes_rate": None, "p_yes_hist": [0] * 10, "by_source": {}, "agreement_ctr_positive": None,
                "ctr_positive_pairs_judged": 0, "judges": []}
    hist, _ = np.histogram(day["p_yes"].to_numpy(), bins=10, range=(0.0, 1.0))
    by_source = {
        str(s): {"rows": int(len(g)), "yes_rate": round(float(g["label"].mean()), 4)}
        for s, g in day.groupby("source")
    }
    positives = _ctr_positive_mask(lake, ds, day)
    agree = float(day.loc[positives, "label"].mean()) if positives.any() else None
    return {
        "yes_rate": round(float(day["label"].mean()), 4),
        "mean_p_yes": round(float(day["p_yes"].mean()), 4),
        "p_yes_hist": [int(h) for h in hist],
        "by_source": by_source,
        "agreement_ctr_positive": None if agree is None else round(agree, 4),
        "ctr_positive_pairs_judged": int(positives.sum()),
        "judges": sorted({f"{j}:{m}:{v}" for j, m, v in zip(day["judge"], day["judge_model"], day["prompt_version"], strict=True)}),
    }


def _ctr_positive_mask(lake: Lake, ds: str, day: pd.DataFrame) -> pd.Series:
    """Which of the day's judged pairs are CTR positives of ``ctr_labels/ds=D`` (else: those selected as such). Only the
    rows of the day's items are kept from the CTR labels, a row group at a time (``lake.rows_where``): memory is set by
    the day's judged pairs, not by the catalog's CTR labels."""
    path = lake.path("ctr_labels", ds=ds)
    if lake.exists(path):
        from keyphrase_pipeline.core.lake import parquet_dataset, rows_where

        ctr = rows_where(parquet_dataset(path, contract="ctr_labels"), "item_id", day["item_id"].astype("int64").unique().tolist(),
                         ["item_id", "keyphrase_id", "label"]).to_pandas()
        pos = ctr.loc[ctr["label"] == 1, ["item_id", "keyphrase_id"]].drop_duplicates()
        keys = set(zip(pos["item_id"].astype("int64"), pos["keyphrase_id"].astype("int64"), strict=True))
        return pd.Series([(int(i), int(k)) in keys for i, k in zip(day["item_id"], day["keyphrase_id"], strict=True)],
                         index=day.index, dtype=bool)
    return day["source"] == "ctr_positive"


# ---- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", help="logical date YYYY-MM-DD (required unless --migrate-keys)")
    parser.add_argument("--migrate-keys", action="store_true",
                        help="rewrite the store's pair_keys to v2 now (done automatically once otherwise)")
    parser.add_argument("--adopt-legacy-model", default=None, metavar="OLD_ID",
                        help="with --migrate-keys: relabel stored rows of judge OLD_ID (e.g. a local model's "
                             "pre-v2 id, its directory name) as the configured judge, so they are not paid again")


def main(settings: Settings, args) -> int:
    """``kp merge-labels``: ``run`` for ``--ds``; prints the stats (without the P(yes) histogram) as one JSON line
    and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""

    if args.adopt_legacy_model and not args.migrate_keys:
        raise ConfigError("--adopt-legacy-model needs --migrate-keys")
    if args.migrate_keys:
        print(json.dumps(migrate_with_lease(settings, args.adopt_legacy_model), default=str))
        if not args.ds:
            return 0
    if not args.ds:
        raise ConfigError("kp merge-labels needs --ds (or --migrate-keys)")
    stats = run(settings, args.ds)
    print(json.dumps({k: v for k, v in stats.items() if k != "p_yes_hist"}, default=str))
    return 0
