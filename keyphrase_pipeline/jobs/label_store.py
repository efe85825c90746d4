"""The LLM label store: merge a day's labelled shards into ``llm_labels/store/ds=D/`` and read it back.

Every label is keyed by ``pair_key`` = sha1 of (item title, category, keyphrase, judge model, prompt
version): the same question asked of the same judge is never paid for twice. ``kp merge-labels --ds D``
runs after the fan-out (``kp label``): it refuses while a shard of the day's pairs is not done, takes
every staged batch of the day, drops pairs already stored on earlier days, atomically replaces the
day's partition and records stats (counts, yes-rate, P(yes) histogram, agreement with CTR positives)
in ``runs/ds=D/llm_labels.json``.

``read_labels(settings, upto_ds)`` gives the training engineer every stored label, one row per pair_key.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from keyphrase_pipeline.core.contracts import arrow_schema, check_pandas, columns
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, parse_ds

log = logging.getLogger(__name__)

SEP = "\x1f"  # unit separator: cannot occur in sanitised text, so field boundaries are unambiguous
LABEL_COLUMNS = columns("llm_labels")


# ---- keys --------------------------------------------------------------------------------------------
def _sha1(*fields: object) -> str:
    return hashlib.sha1(SEP.join("" if f is None else str(f) for f in fields).encode("utf-8")).hexdigest()


def text_hash(title: object, category: object, keyphrase: object) -> str:
    """sha1 of (title, category, keyphrase); Spark: ``sha1(concat_ws('\\x1f', coalesce(...)))``."""
    return _sha1(title, category, keyphrase)


def pair_key(title: object, category: object, keyphrase: object, judge_model: str, prompt_version: str) -> str:
    """sha1 of (title, category, keyphrase, judge model, prompt version) — the label store's key."""
    return _sha1(title, category, keyphrase, judge_model, prompt_version)


def pair_keys(df: pd.DataFrame, judge_model: str, prompt_version: str) -> pd.Series:
    """``pair_key`` (40-char hex sha1) of each row of ``df`` (columns ``title, category, keyphrase``), as an
    object Series on ``df``'s index. KeyError when a column is missing."""
    return pd.Series([pair_key(t, c, k, judge_model, prompt_version)
                      for t, c, k in zip(df["title"], df["category"], df["keyphrase"], strict=True)],
                     index=df.index, dtype=object)


def _fs(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def _read_files(files: list[str], fs, contract: str, cols: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    frames = []
    for f in files:
        table = pq.read_table(f, filesystem=fs, columns=cols)
        if cols is None:
            from keyphrase_pipeline.core.contracts import check_arrow_schema

            check_arrow_schema(table.schema, contract, where=f)
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols or LABEL_COLUMNS)


def staging_files(lake: Lake, ds, shard: int | None = None) -> list[str]:
    """Sorted paths (fsspec form) of the staged ``batch-NNNNN.parquet`` files of one shard, or of every shard of
    the day; [] when there are none."""
    fs, pattern = _fs(layout.staging_glob(lake, ds, shard))
    return sorted(fs.glob(pattern))


def read_staging(lake: Lake, ds, cols: list[str] | None = None) -> pd.DataFrame:
    """Every staged label row of the day (all shards, all runs) as a pandas DataFrame.

    Without ``cols``: the ``llm_labels`` columns, each file's schema checked (SchemaError, exit 3). With
    ``cols``: those columns only, unchecked. No files: an empty frame with those columns. A file that is not
    parquet raises pyarrow's ArrowInvalid (exit 1)."""
    fs, _ = _fs(lake.path("llm_staging"))
    return _read_files(staging_files(lake, ds), fs, "llm_labels", cols)


def store_partitions(lake: Lake) -> list[str]:
    """The ``ds`` strings (``YYYY-MM-DD``) of the label store's day partitions, sorted."""
    return lake.partitions("llm_store")


def read_store_keys(lake: Lake, before_ds=None, among=None) -> set[str]:
    """pair_keys in the store (days before ``before_ds`` when given). With ``among`` (keys of interest),
    only those are looked up (pushed down as a filter), so a shard never loads the whole store.

    Returns a set of pair_key strings (empty for an empty ``among``)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    wanted = None if among is None else list(set(among))
    if wanted is not None and not wanted:
        return set()
    keys: set[str] = set()
    for d in store_partitions(lake):
        if before_ds is not None and d >= ds_str(before_ds):
            continue
        fs, p = _fs(lake.path("llm_store", ds=d))
        files = sorted(f for f in fs.glob(f"{p}/*.parquet") if not f.rsplit("/", 1)[-1].startswith(("_", ".")))
        if not files:
            continue
        dataset = pads.dataset(files, filesystem=fs, format="parquet")
        flt = None if wanted is None else pc.field("pair_key").isin(wanted)
        keys.update(dataset.to_table(columns=["pair_key"], filter=flt).column("pair_key").to_pylist())
    return keys


def _read_store_day(lake: Lake, d: str, cols: list[str] | None = None) -> pd.DataFrame:
    fs, p = _fs(lake.path("llm_store", ds=d))
    files = sorted(f for f in fs.glob(f"{p}/*.parquet") if not f.rsplit("/", 1)[-1].startswith(("_", ".")))
    return _read_files(files, fs, "llm_labels", cols)


def read_done(lake: Lake, ds, shard: int) -> dict | None:
    """The ``_DONE`` stats of a shard (with the pairs ``run_id``), or None while it is not done.

    json.JSONDecodeError (exit 1) when the marker is not JSON."""
    path = layout.done_marker(lake, ds, shard)
    return lake.read_json(path) if lake.exists(path) else None


def read_manifest(lake: Lake, ds) -> dict:
    """The pairs run's manifest (written by select-pairs): run_id and shard list.

    Raises DataError (exit 3) when the day has none; json.JSONDecodeError (exit 1) when it is not JSON."""
    path = layout.pairs_manifest_path(lake, ds)
    if not lake.exists(path):
        raise DataError(f"no pairs for ds={ds_str(ds)} at {lake.path('pairs', ds=ds)}: run `kp select-pairs --ds {ds_str(ds)}` first")
    return lake.read_json(path)


def to_label_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Columns and dtypes of contract llm_labels (timestamps in microseconds, naive UTC).

    Returns a copy with only the contract columns: ids int64, ``label`` int32, ``p_yes`` float64 (P(yes) in
    [0, 1]), ``labelled_at`` ``datetime64[us]``, text columns object. KeyError when a column is missing;
    ValueError/TypeError when a value does not convert."""
    out = df[LABEL_COLUMNS].copy()
    for c in ("item_id", "keyphrase_id"):
        out[c] = out[c].astype("int64")
    out["label"] = out["label"].astype("int32")
    out["p_yes"] = out["p_yes"].astype("float64")
    out["labelled_at"] = pd.to_datetime(out["labelled_at"], utc=True).dt.tz_localize(None).astype("datetime64[us]")
    for c in ("text_hash", "pair_key", "title", "category", "keyphrase", "source", "judge", "judge_model", "prompt_version"):
        out[c] = out[c].astype(object)
    return out


def write_label_table(df: pd.DataFrame, target_dir: str) -> None:
    """Write ``df`` (contract llm_labels) as one parquet file, atomically replacing ``target_dir``.

    Converted with ``to_label_frame`` and written with the contract's exact Arrow schema; pyarrow raises
    ArrowInvalid/ArrowTypeError (exit 1) when a column does not fit it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(to_label_frame(df), schema=arrow_schema("llm_labels"), preserve_index=False)
    with atomic_dir(target_dir) as tmp:
        fs, p = _fs(tmp)
        fs.makedirs(p, exist_ok=True)
        with fs.open(layout.part_file(p), "wb") as f:
            pq.write_table(table, f)


# ---- merge ---------------------------------------------------------------------------------------------
def run(settings, ds) -> dict:
    """Merge the day's staged labels into the store; stats in runs/ds=D/llm_labels.json.

    Rows whose pair_key is in the store on an earlier day are dropped; the day's partition is replaced.

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD.
        DataError: (exit 3) no pairs manifest for the day (run select-pairs); a shard of the manifest not done
            for the manifest's run id (run ``kp label --all``).
        SchemaError: (exit 3) a staged batch, the merged labels or the day's ``ctr_labels`` break their contract.

    A staged file that is not parquet raises pyarrow's ArrowInvalid, a manifest that is not JSON
    json.JSONDecodeError: neither is a KPError (exit 1)."""
    lake = Lake.from_settings(settings)
    ds = ds_str(ds)
    manifest = read_manifest(lake, ds)
    not_done = []
    for shard in manifest["shards"]:
        done = read_done(lake, ds, shard)
        if not done or done.get("run_id") != manifest["run_id"]:
            not_done.append(shard)
    if not_done:
        raise DataError(f"cannot merge ds={ds}: shard(s) {not_done} of {len(manifest['shards'])} not labelled yet "
                        f"(run `kp label --ds {ds} --all`)")
    staged = read_staging(lake, ds)
    n_staged = len(staged)
    if n_staged:
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
    stats.update({
        "rows": int(len(day)),
        "staged_rows": int(n_staged),
        "duplicates_in_staging": int(n_staged - n_unique),
        "already_in_store_earlier": int(n_unique - len(day)),
        "shards": len(manifest["shards"]),
        "store_days": len(store_partitions(lake)),
        "path": target,
    })
    lake.write_run_stats(ds, "llm_labels", stats)
    log.info("merged %d labels for ds=%s (yes-rate %s, CTR-positive agreement %s)", len(day), ds,
             stats["yes_rate"], stats["agreement_ctr_positive"])
    return stats


def label_stats(settings, lake: Lake, ds: str, day: pd.DataFrame) -> dict:
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
    path = lake.path("ctr_labels", ds=ds)
    if lake.exists(path):
        from keyphrase_pipeline.core.lake import read_parquet

        ctr = read_parquet(path, contract="ctr_labels")
        pos = ctr.loc[ctr["label"] == 1, ["item_id", "keyphrase_id"]].drop_duplicates()
        keys = set(zip(pos["item_id"].astype("int64"), pos["keyphrase_id"].astype("int64"), strict=True))
        return pd.Series([(int(i), int(k)) in keys for i, k in zip(day["item_id"], day["keyphrase_id"], strict=True)],
                         index=day.index, dtype=bool)
    return day["source"] == "ctr_positive"


# ---- reading ---------------------------------------------------------------------------------------------
def read_labels(settings, upto_ds=None) -> pd.DataFrame:
    """All stored labels up to ``upto_ds`` (inclusive), one row per pair_key (earliest kept), plus ``ds``.

    Returns a pandas DataFrame: the ``llm_labels`` columns (``p_yes`` float64 in [0, 1], ``label`` int32 0/1,
    ``labelled_at`` naive UTC timestamps) and ``ds`` (str, the store day). Empty store: an empty frame with
    those columns and dtypes.

    Raises ConfigError (exit 2) when ``upto_ds`` or a store partition name is not a date, SchemaError (exit 3)
    when a store file breaks the contract; a file that is not parquet raises ArrowInvalid (exit 1)."""
    lake = Lake.from_settings(settings)
    limit = ds_str(upto_ds) if upto_ds is not None else None
    frames = []
    for d in store_partitions(lake):
        parse_ds(d)
        if limit is not None and d > limit:
            continue
        df = _read_store_day(lake, d)
        if len(df):
            df["ds"] = d
            frames.append(df)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_DTYPES.items()})
        empty["ds"] = pd.Series(dtype=object)
        return empty
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["ds", "labelled_at", "pair_key"], kind="mergesort").drop_duplicates("pair_key")
    return out.reset_index(drop=True)


_EMPTY_DTYPES = {
    "item_id": "int64", "keyphrase_id": "int64", "text_hash": object, "pair_key": object, "title": object,
    "category": object, "keyphrase": object, "source": object, "p_yes": "float64", "label": "int32",
    "judge": object, "judge_model": object, "prompt_version": object, "labelled_at": "datetime64[us]",
}


# ---- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")


def main(settings, args) -> int:
    """``kp merge-labels``: ``run`` for ``--ds``; prints the stats (without the P(yes) histogram) as one JSON line
    and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.core.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    import json

    stats = run(settings, args.ds)
    print(json.dumps({k: v for k, v in stats.items() if k != "p_yes_hist"}, default=str))
    return 0
