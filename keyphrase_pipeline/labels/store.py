"""The LLM label store: ``llm_labels/store/ds=D/``, one file per day, append-only by day, and what leads to it
(the labelling shards' staging and quarantine, their ``_DONE`` markers); the merge stage that appends a day is
``keyphrase_pipeline.stages.merge_labels``.

Every label is keyed by ``pair_key`` (v2) = sha1 of the concatenated sha1 hex digests of item title,
category, keyphrase, judge identity and prompt version (``pair_key``; in Spark ``pair_key_column``): each
field is hashed on its own, so no text can move a field boundary (v1 joined the raw fields with ``\x1f``,
so ``("a\x1fb", "c")`` and ``("a", "b\x1fc")`` collided). The same question asked of the same judge is never
paid for twice.

**Stores written with v1 keys** are migrated once, automatically: the first select-pairs, label or merge
run that finds no ``llm_labels/store/_PAIR_KEYS.json`` (version 2) takes the store's lease (``_LEASE``),
recomputes every stored row's key from its own columns (title, category, keyphrase, judge_model,
prompt_version; rows are never re-judged), rewrites each day atomically and writes the marker; other
processes wait for it. Labels whose ``judge_model`` equals today's judge identity (the openai/vllm served
name, the simulated annotator) are found again at once. Labels of a LOCAL model were stored under the
directory's name only, which cannot tell two models apart, so they are not matched to the fingerprinted
identity unless the operator vouches for them: ``kp merge-labels --migrate-keys --adopt-legacy-model NAME``
relabels rows of judge ``NAME`` as the configured judge. ``text_hash`` (training's dedupe key, no money
involved) keeps its v1 form so held-out splits do not move.

``read_labels(settings, upto_ds)`` gives the training engineer every stored label, one row per pair_key.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import pandas as pd

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import arrow_schema, columns
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, is_local, parse_ds, write_parquet_file_atomic
from keyphrase_pipeline.labels.lease import Lease
from keyphrase_pipeline.models.text import is_missing

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

SEP = "\x1f"  # v1 separator (text_hash and legacy pair_keys only): raw text CAN hold it, see pair_key
PAIR_KEY_VERSION = 2
LABEL_COLUMNS = columns("llm_labels")
KEY_FIELDS = ["title", "category", "keyphrase", "judge_model", "prompt_version"]


# ---- keys --------------------------------------------------------------------------------------------
def _text(f: object) -> str:
    """A key field as text: a missing value (``models.text.is_missing``: None, NaN, pandas' NA as a nullable column
    reads a null) is "", as Spark's ``coalesce`` makes a null."""
    return "" if is_missing(f) else str(f)


def _sha1(*fields: object) -> str:
    return hashlib.sha1(SEP.join(_text(f) for f in fields).encode("utf-8")).hexdigest()


def _field_sha1(f: object) -> str:
    return hashlib.sha1(_text(f).encode("utf-8")).hexdigest()


def text_hash(title: object, category: object, keyphrase: object) -> str:
    """40-char hex sha1 naming a (title, category, keyphrase) text; None counts as "".

    The fields joined by ``\x1f`` (the v1 form, kept: held-out splits and soft labels are keyed by it), except
    when a field itself holds ``\x1f``: then, as ``pair_key``, the sha1 of the fields' own sha1 digests, so
    ``("a\x1fb", "c")`` and ``("a", "b\x1fc")`` cannot collide. Text without the separator (all cleaned text:
    ``models.text.clean`` drops control characters) hashes as before."""
    fields = (title, category, keyphrase)
    if any(SEP in _text(f) for f in fields):
        return hashlib.sha1("".join(_field_sha1(f) for f in fields).encode("ascii")).hexdigest()
    return _sha1(*fields)


def pair_key(title: object, category: object, keyphrase: object, judge_model: str, prompt_version: str) -> str:
    """The label store's key (v2): sha1 hex of the concatenation of the five fields' own sha1 hex digests
    (title, category, keyphrase, judge identity, prompt version; None counts as ""). Fixed-width digests make
    the encoding unambiguous whatever the text holds. Spark: ``pair_key_column``."""
    return hashlib.sha1("".join(_field_sha1(f) for f in (title, category, keyphrase, judge_model, prompt_version))
                        .encode("ascii")).hexdigest()


def legacy_pair_key(title: object, category: object, keyphrase: object, judge_model: str, prompt_version: str) -> str:
    """The v1 key (fields joined by ``\x1f``), only to check rows written before v2 during the migration."""
    return _sha1(title, category, keyphrase, judge_model, prompt_version)


def pair_keys(df: pd.DataFrame, judge_model: str, prompt_version: str) -> pd.Series:
    """``pair_key`` (40-char hex sha1) of each row of ``df`` (columns ``title, category, keyphrase``) for one judge
    and prompt, as an object Series on ``df``'s index. KeyError when a column is missing."""
    return pd.Series([pair_key(t, c, k, judge_model, prompt_version)
                      for t, c, k in zip(df["title"], df["category"], df["keyphrase"], strict=True)],
                     index=df.index, dtype=object)


def row_pair_keys(df: pd.DataFrame) -> pd.Series:
    """``pair_key`` of each label row from its own columns (title, category, keyphrase, judge_model, prompt_version)."""
    return pd.Series([pair_key(*fields) for fields in zip(*(df[c] for c in KEY_FIELDS), strict=True)],
                     index=df.index, dtype=object)


def pair_key_column(judge_model: str, prompt_version: str, title: str = "title", category: str = "category",
                    keyphrase: str = "keyphrase"):
    """The Spark column equal to ``pair_key`` of the named string columns for one judge and prompt."""
    from pyspark.sql import functions as F

    fields = [F.sha1(F.coalesce(F.col(c), F.lit(""))) for c in (title, category, keyphrase)]
    return F.sha1(F.concat(*fields, F.lit(_field_sha1(judge_model) + _field_sha1(prompt_version))))


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


def staged_keys(lake: Lake, ds, shard: int | None = None) -> set[str]:
    """pair_keys staged for the day (one shard, or all), recomputed from the rows' own columns, so rows staged
    by an older worker (v1 keys) count too."""
    fs, _ = _fs(lake.path("llm_staging"))
    files = staging_files(lake, ds, shard)
    if not files:
        return set()
    return set(row_pair_keys(_read_files(files, fs, "llm_labels", KEY_FIELDS)))


# ---- quarantine: pairs without a usable judge answer ----------------------------------------------------
QUARANTINE_COLUMNS = ["item_id", "keyphrase_id", "pair_key", "title", "category", "keyphrase", "source", "judge",
                      "judge_model", "prompt_version", "reason", "raw_answer", "quarantined_at"]


def quarantine_schema():
    """The pyarrow schema of a quarantined batch file (``QUARANTINE_COLUMNS``; ids int64, time us, rest string)."""
    import pyarrow as pa

    types = {"item_id": pa.int64(), "keyphrase_id": pa.int64(), "quarantined_at": pa.timestamp("us")}
    return pa.schema([(c, types.get(c, pa.string())) for c in QUARANTINE_COLUMNS])


def quarantine_files(lake: Lake, ds, shard: int | None = None) -> list[str]:
    """The day's quarantined batch files (one shard, or all), sorted."""
    fs, pattern = _fs(layout.label_quarantine_glob(lake, ds, shard))
    return sorted(fs.glob(pattern))


def write_quarantine(lake: Lake, ds, shard: int, index: int, rows: pd.DataFrame) -> str:
    """Write one batch's quarantined pairs (``QUARANTINE_COLUMNS``) atomically as
    ``quarantine/llm_labels/ds=D/shard=NNNNN/batch-NNNNN.parquet``; returns the path."""
    import pyarrow as pa

    df = rows[QUARANTINE_COLUMNS].copy()
    df["quarantined_at"] = pd.to_datetime(df["quarantined_at"], utc=True).dt.tz_localize(None).astype("datetime64[us]")
    table = pa.Table.from_pandas(df, schema=quarantine_schema(), preserve_index=False)
    path = f"{layout.label_quarantine_dir(lake, ds, shard)}/{layout.batch_file_name(index)}"
    return write_parquet_file_atomic(_ArrowFrame(table), path)


class _ArrowFrame:
    """A pyarrow Table with pandas' ``to_parquet`` (for ``write_parquet_file_atomic``), so the file keeps the
    declared schema even when a column is all null."""

    def __init__(self, table):
        self.table = table

    def to_parquet(self, where, index=False) -> None:
        import pyarrow.parquet as pq

        pq.write_table(self.table, where)


def read_quarantine(lake: Lake, ds, shard: int | None = None, cols: list[str] | None = None) -> pd.DataFrame:
    """The day's quarantined pairs (one shard, or all), one row per quarantined answer."""
    import pyarrow.parquet as pq

    files = quarantine_files(lake, ds, shard)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (cols or QUARANTINE_COLUMNS)})
    fs, _ = _fs(files[0])
    return pd.concat([pq.read_table(f, filesystem=fs, columns=cols).to_pandas() for f in files], ignore_index=True)


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



# ---- pair_key migration (v1 -> v2) ---------------------------------------------------------------------
def pair_keys_version(lake: Lake) -> int:
    """The store's pair_key encoding: the marker's version; 1 for a store without one; 2 when the store is empty."""
    marker = layout.pair_keys_marker(lake)
    if lake.exists(marker):
        return int(lake.read_json(marker).get("version", 1))
    return 1 if store_partitions(lake) else PAIR_KEY_VERSION


def migrate_pair_keys(settings: Settings, adopt_legacy_model: str | None = None) -> dict:
    """Rewrite every stored day with v2 keys recomputed from each row's own columns, then write the marker.

    Idempotent (a v2 store is rewritten to itself; days whose keys do not change are not rewritten).
    ``adopt_legacy_model``: rows whose ``judge_model`` is that id (e.g. ``smollm2-135m``, a local model's
    pre-v2 id) are relabelled as the configured judge (``judge_model_id(settings)``) first: the operator
    vouches that they came from the same weights. Returns counts (days, rows, rows rekeyed, rows whose stored
    key was neither their v1 nor v2 key, duplicates dropped, rows adopted). Call it holding the store's lease
    (``ensure_pair_keys_current`` and ``migrate_with_lease`` do)."""
    from keyphrase_pipeline.labels.judges.base import judge_model_id

    lake = Lake.from_settings(settings)
    adopt_to = judge_model_id(settings) if adopt_legacy_model else None
    out = {"days": 0, "rows": 0, "rekeyed": 0, "unverified": 0, "duplicates_dropped": 0, "adopted": 0}
    for d in store_partitions(lake):
        df = _read_store_day(lake, d)
        out["days"] += 1
        if not len(df):
            continue
        changed = False
        if adopt_to:
            hit = df["judge_model"] == adopt_legacy_model
            if hit.any():
                df.loc[hit, "judge_model"] = adopt_to
                out["adopted"] += int(hit.sum())
                changed = True
        stored = df["pair_key"].astype(object)
        legacy = pd.Series([legacy_pair_key(*f) for f in zip(*(df[c] for c in KEY_FIELDS), strict=True)], index=df.index)
        new = row_pair_keys(df)
        out["unverified"] += int(((stored != legacy) & (stored != new)).sum())
        out["rekeyed"] += int((stored != new).sum())
        if (stored != new).any() or changed:
            df["pair_key"] = new
            before = len(df)
            df = df.sort_values(["labelled_at", "pair_key"], kind="mergesort").drop_duplicates("pair_key")
            out["duplicates_dropped"] += before - len(df)
            write_label_table(df.sort_values("pair_key").reset_index(drop=True), lake.path("llm_store", ds=d))
        out["rows"] += int(len(df))
    marker = {"version": PAIR_KEY_VERSION, "encoding": "sha1(concat(sha1(title), sha1(category), sha1(keyphrase), "
              "sha1(judge_model), sha1(prompt_version)))", "migrated_at": pd.Timestamp.now(tz="UTC").isoformat(), **out}
    if adopt_legacy_model:
        marker["adopted_from"] = {adopt_legacy_model: adopt_to}
    lake.write_json(layout.pair_keys_marker(lake), marker)
    log.warning("label store keys migrated to v%d: %s", PAIR_KEY_VERSION, out)
    return out


def store_lease(settings: Settings):
    """The lease every writer of the store holds (``llm_labels/store/_LEASE``), or None on a lake without leases
    (object stores: the rewrites are idempotent and the DAG runs one merge at a time)."""
    lake = Lake.from_settings(settings)
    if not is_local(lake.root):
        return None

    return Lease(layout.store_lease_path(lake), settings.judge.lease_ttl_s, what="the label store")


def _keys_current(lake: Lake) -> bool:
    return lake.exists(layout.pair_keys_marker(lake)) and pair_keys_version(lake) >= PAIR_KEY_VERSION


def ensure_pair_keys_current(settings: Settings) -> dict | None:
    """Make sure the store carries v2 keys before anyone compares keys with it: a v1 store is migrated once
    (``migrate_pair_keys``, see the module docstring) under the store's lease (other processes wait for the
    marker, up to ``judge.lease_wait_s``); an empty store just gets the marker. Returns the migration counts,
    or None when nothing had to be done. Raises LeaseBusy (exit 1) when the store stays busy past the wait."""
    lake = Lake.from_settings(settings)
    if _keys_current(lake):
        return None
    lease = store_lease(settings)
    if lease is None:
        return _make_keys_current(settings, lake)
    if not lease.acquire(settings.judge.lease_wait_s, stop_waiting=lambda: _keys_current(lake)):
        return None
    try:
        return None if _keys_current(lake) else _make_keys_current(settings, lake)
    finally:
        lease.release()


def _make_keys_current(settings: Settings, lake: Lake) -> dict | None:
    if not store_partitions(lake):
        lake.write_json(layout.pair_keys_marker(lake), {"version": PAIR_KEY_VERSION, "days": 0, "rows": 0})
        return None
    return migrate_pair_keys(settings)


def migrate_with_lease(settings: Settings, adopt_legacy_model: str | None = None) -> dict:
    """``migrate_pair_keys`` holding the store's lease (``kp merge-labels --migrate-keys``)."""
    lease = store_lease(settings)
    if lease is not None:
        lease.acquire(settings.judge.lease_wait_s)
    try:
        return migrate_pair_keys(settings, adopt_legacy_model)
    finally:
        if lease is not None:
            lease.release()


# ---- reading ---------------------------------------------------------------------------------------------
def read_labels(settings: Settings, upto_ds=None, max_rows: int | None = None) -> pd.DataFrame:
    """Stored labels up to ``upto_ds`` (inclusive), one row per pair_key (earliest kept), plus ``ds``.

    With ``max_rows``, only the most recent labels: store days are read newest first and reading stops
    once ``max_rows`` distinct pairs are in hand; the result is the ``max_rows`` most recent of them by
    (``ds``, ``labelled_at``). Memory is then bounded by the cap plus one store day, not by the history.
    (The merge never stores a pair_key on two days, so "earliest kept" holds among the days read.)

    Returns a pandas DataFrame: the ``llm_labels`` columns (``p_yes`` float64 in [0, 1], ``label`` int32 0/1,
    ``labelled_at`` naive UTC timestamps) and ``ds`` (str, the store day), oldest first. Empty store: an
    empty frame with those columns and dtypes.

    Raises ConfigError (exit 2) when ``upto_ds`` or a store partition name is not a date, SchemaError (exit 3)
    when a store file breaks the contract; a file that is not parquet raises ArrowInvalid (exit 1)."""
    lake = Lake.from_settings(settings)
    limit = ds_str(upto_ds) if upto_ds is not None else None
    days = store_partitions(lake)
    for d in days:
        parse_ds(d)
    frames, rows = [], 0
    for d in sorted((d for d in days if limit is None or d <= limit), reverse=True):
        df = _read_store_day(lake, d)
        if len(df):
            df["ds"] = d
            frames.append(df)
            rows += len(df)
        if max_rows is not None and rows >= max_rows:
            break
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_DTYPES.items()})
        empty["ds"] = pd.Series(dtype=object)
        return empty
    out = pd.concat(frames[::-1], ignore_index=True)
    out = out.sort_values(["ds", "labelled_at", "pair_key"], kind="mergesort").drop_duplicates("pair_key")
    if max_rows is not None and len(out) > max_rows:
        out = out.iloc[len(out) - max_rows:]
    return out.reset_index(drop=True)


_EMPTY_DTYPES = {
    "item_id": "int64", "keyphrase_id": "int64", "text_hash": object, "pair_key": object, "title": object,
    "category": object, "keyphrase": object, "source": object, "p_yes": "float64", "label": "int32",
    "judge": object, "judge_model": object, "prompt_version": object, "labelled_at": "datetime64[us]",
}



