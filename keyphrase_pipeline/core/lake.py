"""The data lake's dataset roots (``DATASETS``) and its safe-write primitives.

Dataset roots under ``lake_root`` are named in ``DATASETS`` (``Lake.path``; daily datasets are
partitioned by ``ds=YYYY-MM-DD``); the whole tree, and every file and marker inside it, is in
``keyphrase_pipeline/core/layout.py``'s docstring, the one place it is written down.

Writes never leave half-written output visible: data is written under a hidden sibling
(``_tmp-*``, which Spark and pyarrow ignore) and moved into place; small files use
write-then-``os.replace``. Replacing an existing directory is two renames (old aside, new in), so a
reader sees the old partition, then briefly none, then the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from keyphrase_pipeline.core import conform
from keyphrase_pipeline.core.contracts import check_arrow_schema
from keyphrase_pipeline.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

RUN_FAILURES = "_failed"  # runs/ds=D/_failed/<stage>.json: the last failure of a stage's task that day
RUN_ALERTS = "_alerts"  # runs/ds=D/_alerts/<alert>.json: an alert about the day's run (a missed publish deadline)
SUCCESS = "_SUCCESS"  # a dataset directory is complete (Spark's convention); keyphrase_pipeline.core.layout names the other markers

DATASETS = {
    "catalog": "raw/catalog",
    "keyphrases": "raw/keyphrases",
    "item_images": "raw/item_images",
    "events": "raw/events",
    "sr_input": "raw/sr_labels",
    "synth": "synth",
    "ctr_daily": "ctr_daily",
    "ctr_position_daily": "ctr_position_daily",
    "ctr_labels": "ctr_labels",
    "sr_labels": "sr_labels",
    "quarantine": "quarantine",
    "pairs": "pairs",
    "llm_staging": "llm_labels/staging",
    "llm_store": "llm_labels/store",
    "registry": "registry",
    "embeddings": "embeddings",
    "recommendations": "recommendations",
    "serving": "serving",
    "runs": "runs",
    "label_reviews": "label_reviews",
}


def parse_ds(ds: str | dt.date) -> dt.date:
    """``YYYY-MM-DD`` (or a ``date``, returned as is) -> ``datetime.date``.

    Raises ConfigError (``kp`` exit 2) for anything else."""
    if isinstance(ds, dt.date):
        return ds
    try:
        return dt.date.fromisoformat(str(ds))
    except ValueError:
        raise ConfigError(f"ds must be YYYY-MM-DD, got {ds!r}") from None


def ds_str(ds: str | dt.date) -> str:
    """The canonical ``YYYY-MM-DD`` string of ``ds``; ConfigError (exit 2) when it is not a date."""
    return parse_ds(ds).isoformat()


def ds_range(end: str | dt.date, days: int) -> list[str]:
    """The ``days`` dates ending at ``end`` (inclusive), oldest first, as ``YYYY-MM-DD`` strings.

    ``days`` <= 0 gives []. ConfigError (exit 2) when ``end`` is not a date."""
    end_d = parse_ds(end)
    return [(end_d - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


def is_local(uri: str) -> bool:
    """True for a plain path, a ``file://`` URI or a Windows drive path; False for any other URL scheme."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1)  # "C:" on Windows


def local_path(uri: str) -> Path:
    """The filesystem ``Path`` of a local ``uri`` (``file://`` prefix removed).

    Raises ConfigError (exit 2) for a non-local URL (``s3://``, ``hdfs://``, ...): the callers are the parts
    of the pipeline that need a local or mounted lake."""
    if not is_local(uri):
        raise ConfigError(f"{uri} is not a local path")
    return Path(uri[7:] if uri.startswith("file://") else uri)


#: run stats name -> its former name: days recorded before the rename are read under the old file name
RENAMED_RUN_STATS = {"merge_labels": "llm_labels"}

class Lake:
    """Paths of every dataset, and atomic writes into them."""

    def __init__(self, root: str):
        if not root:
            raise ConfigError("lake root is empty")
        self.root = str(Path(root).resolve()) if is_local(root) else root.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> "Lake":
        return cls(settings.lake_root)

    # ---- paths -------------------------------------------------------------------------------
    def path(self, dataset: str, *parts: str, ds: str | dt.date | None = None) -> str:
        """``<root>/<DATASETS[dataset]>/<parts...>[/ds=YYYY-MM-DD]`` as a string (no check that it exists).

        Raises KeyError for a dataset not in ``DATASETS`` (a programming error: ``kp`` exit 1), ConfigError
        (exit 2) when ``ds`` is not a date."""
        if dataset not in DATASETS:
            raise KeyError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        segs = [self.root, DATASETS[dataset], *parts]
        if ds is not None:
            segs.append(f"ds={ds_str(ds)}")
        return "/".join(s.strip("/") if i else s.rstrip("/") for i, s in enumerate(segs))

    def uri(self, dataset: str, *parts: str, ds: str | dt.date | None = None) -> str:
        """Like ``path`` but as a URI Spark understands (``file://`` for local paths)."""
        p = self.path(dataset, *parts, ds=ds)
        return f"file://{p}" if is_local(p) else p

    def partitions(self, dataset: str, *parts: str) -> list[str]:
        """The ``ds`` values present (complete partitions only), sorted."""
        base = self.path(dataset, *parts)
        fs, p = _fs(base)
        if not fs.exists(p):
            return []
        out = []
        for entry in fs.ls(p, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("ds="):
                out.append(name[3:])
        return sorted(out)

    def exists(self, path: str) -> bool:
        fs, p = _fs(path)
        return fs.exists(p)

    # ---- small files ---------------------------------------------------------------------------
    def write_json(self, path: str, obj: Any) -> None:
        write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def read_json(self, path: str, default: Any = None) -> Any:
        """The parsed JSON at ``path``; ``default`` when the file is missing and ``default`` is not None.

        Raises DataError (exit 3) when the file is missing and no default is given; json.JSONDecodeError
        (a ValueError, exit 1) when it is not JSON."""
        fs, p = _fs(path)
        if not fs.exists(p):
            if default is not None:
                return default
            raise DataError(f"missing file {path}")
        with fs.open(p, "r") as f:
            return json.load(f)

    def run_stats_dir(self, ds: str | dt.date) -> str:
        """``runs/ds=D/``: one ``<stage>.json`` per stage run that day."""
        return self.path("runs", ds=ds)

    def run_stats_path(self, ds: str | dt.date, stage: str) -> str:
        """``runs/ds=D/<stage>.json``; for a day recorded before a stage was renamed (``RENAMED_RUN_STATS``), the
        file under its former name when only that one exists."""
        return self._renamed_or(f"{self.run_stats_dir(ds)}/{{}}.json", stage)

    def _renamed_or(self, pattern: str, stage: str) -> str:
        path = pattern.format(stage)
        former = RENAMED_RUN_STATS.get(stage)
        if former and not self.exists(path) and self.exists(pattern.format(former)):
            return pattern.format(former)
        return path

    def write_run_stats(self, ds: str | dt.date, stage: str, stats: dict) -> str:
        """Record a stage's run stats for the day (read by the UI, the demo summary and the report)."""
        path = f"{self.run_stats_dir(ds)}/{stage}.json"
        self.write_json(path, {"stage": stage, "ds": ds_str(ds), "written_at": dt.datetime.now(dt.UTC).isoformat(), **stats})
        return path

    def add_to_run_stats(self, ds: str | dt.date, stage: str, extra: dict, written_since: dt.datetime) -> bool:
        """Merge ``extra`` (e.g. ``wall_seconds``, the Airflow run's ids) into the stage's run stats for the day,
        only when that file was written at or after ``written_since`` (aware UTC datetime), i.e. by the run
        that just finished. Returns whether it did; False when the stage wrote no stats (or older ones)."""
        path = self.run_stats_path(ds, stage)
        if not self.exists(path):
            return False
        stats = self.read_json(path)
        try:
            written = dt.datetime.fromisoformat(str(stats.get("written_at")))
        except ValueError:
            return False
        if written.tzinfo is None or written < written_since:
            return False
        self.write_json(path, {**stats, **extra})
        return True

    def run_failure_path(self, ds: str | dt.date, stage: str) -> str:
        """``runs/ds=D/_failed/<stage>.json``: the last failure of a stage's task for the day (run stats exist only
        for stages that finished; the task wrappers in ``keyphrase_pipeline.orchestration`` record failures here)."""
        return self._renamed_or(f"{self.run_stats_dir(ds)}/{RUN_FAILURES}/{{}}.json", stage)

    def run_alert_path(self, ds: str | dt.date, alert: str) -> str:
        """``runs/ds=D/_alerts/<alert>.json``: an alert raised about the day's run (``publish_deadline``: its
        recommendations were not published by the deadline; ``keyphrase_pipeline.orchestration.reviews``)."""
        return f"{self.run_stats_dir(ds)}/{RUN_ALERTS}/{alert}.json"

    def write_run_failure(self, ds: str | dt.date, stage: str, record: dict) -> str:
        """Record that a stage's task failed for the day (replacing the previous failure record of that stage)."""
        path = f"{self.run_stats_dir(ds)}/{RUN_FAILURES}/{stage}.json"
        self.write_json(path, {"stage": stage, "ds": ds_str(ds), "failed_at": dt.datetime.now(dt.UTC).isoformat(), **record})
        return path

    def read_pointer(self, path: str) -> str | None:
        """The stripped content of a pointer file (``CHAMPION``, ``CURRENT``), or None when missing or empty."""
        fs, p = _fs(path)
        if not fs.exists(p):
            return None
        with fs.open(p, "r") as f:
            value = f.read().strip()
        return value or None

    def write_pointer(self, path: str, value: str) -> None:
        """Atomically switch a pointer file (CHAMPION, CURRENT) to ``value``."""
        write_text_atomic(path, value + "\n")


def _fs(path: str):
    import fsspec

    if is_local(path):
        return fsspec.filesystem("file"), str(local_path(path))
    fs, p = fsspec.core.url_to_fs(path)
    return fs, p


def write_text_atomic(path: str, text: str) -> None:
    """Write a small file so readers see the old content or the new, never a part."""
    if is_local(path):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    else:  # object stores: a single PUT is atomic
        fs, p = _fs(path)
        with fs.open(p, "w") as f:
            f.write(text)


# A task killed mid-write (OOM, a lost worker, SIGKILL at its execution_timeout) leaves its hidden temp directory
# behind. The next write into the same folder removes such leftovers once they are older than this: longer than
# any task may run (the longest execution_timeout, train_bi's, is 6 h), so a live writer's temp is never touched.
STALE_TMP_SECONDS = 24 * 3600
_LEFTOVER_PREFIXES = ("_tmp-", "_trash-")


def sweep_stale_tmp(parent: str, older_than_s: float | None = None) -> list[str]:
    """Remove the leftovers of killed writes in the local folder ``parent``: entries named ``_tmp-*`` or
    ``_trash-*`` (``tmp_sibling``, ``commit_dir``, ``write_parquet_file_atomic``) and ``.*.tmp-*`` files
    (``write_text_atomic``) last modified more than ``older_than_s`` seconds ago (default ``STALE_TMP_SECONDS``).
    Returns the names removed (logged); a non-local or missing folder, or an entry that cannot be removed, is
    skipped silently: sweeping never fails a write."""

    if not is_local(parent):
        return []
    folder = local_path(parent)
    limit = time.time() - (STALE_TMP_SECONDS if older_than_s is None else older_than_s)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not (name.startswith(_LEFTOVER_PREFIXES) or (name.startswith(".") and ".tmp-" in name)):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > limit:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(name)
        except OSError:
            continue
    if removed:
        logging.getLogger(__name__).warning("removed %d stale temp leftover(s) of killed writes in %s: %s",
                                            len(removed), folder, ", ".join(sorted(removed)[:5]))
    return removed


def tmp_sibling(target: str, tag: str = "tmp") -> str:
    """A hidden sibling of ``target`` (ignored by Spark/pyarrow readers: leading underscore). Stale leftovers of
    killed writes beside it are removed first (``sweep_stale_tmp``)."""
    parent, name = target.rstrip("/").rsplit("/", 1)
    sweep_stale_tmp(parent)
    return f"{parent}/_{tag}-{name}-{uuid.uuid4().hex[:8]}"


def commit_dir(tmp: str, target: str) -> None:
    """Move a fully written directory ``tmp`` into place at ``target``, replacing what was there."""
    fs, t = _fs(target)
    _, s = _fs(tmp)
    if is_local(target):
        t_path, s_path = Path(t), Path(s)
        t_path.parent.mkdir(parents=True, exist_ok=True)
        trash = None
        if t_path.exists():
            trash = t_path.with_name(f"_trash-{t_path.name}-{uuid.uuid4().hex[:8]}")
            os.rename(t_path, trash)
        os.rename(s_path, t_path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        if fs.exists(t):
            fs.rm(t, recursive=True)
        fs.mv(s, t, recursive=True)


@contextlib.contextmanager
def atomic_dir(target: str) -> Iterator[str]:
    """Yield a temporary directory path; on success it replaces ``target``; on error it is removed.

    >>> with atomic_dir(lake.path("ctr_labels", ds="2026-10-30")) as tmp:
    ...     df.write.parquet(uri_of(tmp))
    """
    tmp = tmp_sibling(target)
    fs, p = _fs(tmp)
    try:
        yield tmp
        if not fs.exists(p):
            fs.makedirs(p, exist_ok=True)
        commit_dir(tmp, target)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(p, recursive=True)
        raise


def dir_fingerprint(path: str) -> str | None:
    """A fingerprint of a directory's data files: sha1 (16 hex digits) over the sorted ``name:size`` of its
    files whose names do not start with ``_`` or ``.`` (``_SUCCESS``, ``_stats.json`` and checksum files are
    left out); None when ``path`` does not exist. One listing call, no file is opened.

    Spark names every file it writes with a per-job UUID (``part-00000-<uuid>-c000...``), so any rewrite of
    a Spark-written partition changes the fingerprint, even with identical content; a directory renamed into
    place (``atomic_dir``) keeps the fingerprint of its temporary self."""

    fs, p = _fs(path)
    if not fs.exists(p):
        return None
    entries = []
    for info in fs.ls(p, detail=True):
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "directory" or name.startswith(("_", ".")):
            continue
        entries.append(f"{name}:{int(info.get('size') or 0)}")
    return hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()[:16]


def spark_uri(path: str) -> str:
    """``path`` as Spark reads it: ``file://<absolute path>`` for local paths, other URLs unchanged."""
    return f"file://{local_path(path)}" if is_local(path) else path


def write_parquet_atomic(df, target_dir: str, filename: str = "part-00000.parquet") -> str:
    """Write a pandas DataFrame as one parquet file in ``target_dir`` (plus ``_SUCCESS``), atomically replacing
    the directory (readers see the old one or the new one); returns ``target_dir``.

    Column types are what pandas/pyarrow infer (no contract is checked here: call ``check_pandas`` first).
    Errors of the writer (pyarrow, OSError) propagate; the temp directory is then removed."""
    with atomic_dir(target_dir) as tmp:
        fs, p = _fs(tmp)
        fs.makedirs(p, exist_ok=True)
        with fs.open(f"{p}/{filename}", "wb") as f:
            df.to_parquet(f, index=False)
        with fs.open(f"{p}/{SUCCESS}", "wb") as f:
            f.write(b"")
    return target_dir


def write_parquet_file_atomic(df, target_file: str) -> str:
    """Write the pandas DataFrame ``df`` as one parquet file atomically (temp name in the same directory, then
    rename); returns ``target_file``. Parent directories are created. No contract check; writer errors propagate."""
    if is_local(target_file):
        t = local_path(target_file)
        t.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_tmp(str(t.parent))
        tmp = t.with_name(f"_tmp-{t.name}-{uuid.uuid4().hex[:8]}")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, t)
    else:
        fs, p = _fs(target_file)
        tmp = f"{p.rsplit('/', 1)[0]}/_tmp-{uuid.uuid4().hex[:8]}.parquet"
        with fs.open(tmp, "wb") as f:
            df.to_parquet(f, index=False)
        fs.mv(tmp, p)
    return target_file


def read_parquet(path: str, contract: str | None = None, columns: list[str] | None = None):
    """Read a parquet file or directory into pandas (skipping hidden/underscore files), checking the contract.

    Args:
        path: a local path or fsspec URL; hive partitions (``ds=...``) below it become columns.
        contract: a name in ``keyphrase_pipeline.core.contracts`` (docs/DATA.md) the schema must satisfy.
        columns: read only these; the contract is then checked on them alone.
    Returns:
        a pandas DataFrame (all rows; ``columns`` only when given), dtypes as pyarrow converts them
        (int64, float64, object for strings, ``datetime64`` for timestamps, object arrays for lists).
    Raises:
        DataError: nothing at ``path`` (exit 3).  SchemaError: the schema breaks the contract (exit 3).
        pyarrow.ArrowInvalid: a file is not parquet, or a name in ``columns`` does not exist (not a
        KPError: ``kp`` exit 1).

    Inputs other tools write (``keyphrase_pipeline.core.conform.INPUT_CONTRACTS``): every file's footer is checked
    first (SchemaError naming the file and the column; DataError for a file that is not parquet); when the files
    differ from each other or from the contract's types they are read one by one, conformed to the contract's
    columns and types (``conform.read_arrow``).
    """
    import pyarrow.dataset as pads

    fs, p = _fs(path)
    if not fs.exists(p):
        raise DataError(f"missing dataset at {path}")

    if contract in conform.INPUT_CONTRACTS:
        checks = conform.check_files(path, contract, columns)
        if conform.needs_conforming(checks):
            return conform.read_arrow(checks, contract, columns).to_pandas()
    dataset = pads.dataset(p, filesystem=fs if not is_local(path) else None, format="parquet",
                           partitioning="hive", ignore_prefixes=[".", "_"])
    table = dataset.to_table(columns=columns)
    if contract:
        from keyphrase_pipeline.core.contracts import check_arrow_schema

        check_arrow_schema(table.schema, contract, where=path)
    return table.to_pandas()


def contract_dataset(path: str, contract: str):
    """A ``pyarrow.dataset`` over the parquet files at ``path`` (hidden/underscore files skipped) whose schema
    meets ``contract``; nothing is read but the footers. DataError when ``path`` is missing, SchemaError when
    the schema breaks the contract."""
    import pyarrow.dataset as pads

    root = local_path(path)
    if not root.exists():
        raise DataError(f"missing dataset at {path}")
    dataset = pads.dataset(str(root), format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    check_arrow_schema(dataset.schema, contract, where=path)
    return dataset


def row_group_batches(dataset, columns, batch_size: int, keep=None):
    """Yield (file path, Arrow record batch of ``columns``) over the files of ``dataset``, one file and one row
    group at a time (``ParquetFile.iter_batches``: no read-ahead, so memory is one row group and one batch;
    ``pyarrow.dataset``'s threaded scanner measured a peak RSS still growing with the rows read). ``keep``:
    ``batch -> boolean Arrow mask`` of the rows to yield (null counts as false), computed on ``columns``."""
    import pyarrow.parquet as pq

    for path in dataset.files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            if keep is not None:
                batch = batch.filter(keep(batch), null_selection_behavior="drop")
            if batch.num_rows:
                yield path, batch


def scan(dataset, columns: list[str], batch_rows: int = 65_536, keep=None):
    """Yield Arrow tables of ``columns`` over every row of ``dataset`` (``parquet_dataset``), in file order, cast to
    the dataset's schema types (``row_group_batches``: one row group and one batch in memory). ``keep``: as
    ``row_group_batches``'s, computed on ``columns``."""
    for _, batch in row_group_batches(dataset, columns, batch_rows, keep):
        yield _in_schema(batch, columns, dataset.schema)


def parquet_dataset(path: str, contract: str):
    """A ``pyarrow.dataset`` over the parquet files at ``path`` (hidden/underscore files skipped) whose schema is
    ``contract``'s, for the bounded readers below (``rows_where``, ``sample_rows``): files written with other integer
    widths are read in the contract's types. An input contract's files are checked footer by footer first
    (``conform.check_files``: SchemaError naming the file and the column, exit 3); another's the dataset's schema.
    DataError when ``path`` is missing."""
    import pyarrow.dataset as pads

    root = local_path(path)
    if not root.exists():
        raise DataError(f"missing dataset at {path}")
    from keyphrase_pipeline.core.contracts import arrow_schema

    if contract in conform.INPUT_CONTRACTS:
        conform.check_files(path, contract)
    else:
        check_arrow_schema(pads.dataset(str(root), format="parquet", ignore_prefixes=[".", "_"]).schema, contract,
                           where=path)
    schema = arrow_schema(contract)
    return pads.dataset(str(root), format="parquet", ignore_prefixes=[".", "_"], schema=schema)


def _in_schema(batch, names: list[str], schema):
    """``batch``'s ``names`` as a Table in ``schema``'s types for those columns (a file written with int32 ids, read
    beside int64 ones, is cast: one type per column)."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch]).select(names)
    target = pa.schema([schema.field(n) for n in names])
    return table if table.schema.equals(target) else table.cast(target)


def _wanted(values, field):
    """``values`` (an iterable, or a numpy integer array for millions of ids) as a sorted Arrow array of ``field``'s
    type, dropping None and integers its type cannot hold."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_integer(field.type):
        return pa.array(sorted({v for v in values if v is not None}), type=field.type)
    bits = field.type.bit_width
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if pa.types.is_signed_integer(field.type) else (0, 2 ** bits - 1)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":  # no Python ints
        vals = np.unique(values)
        info = np.iinfo(vals.dtype)
        vals = vals[(vals >= max(lo, info.min)) & (vals <= min(hi, info.max))]
        return pa.array(vals).cast(field.type)
    return pa.array(sorted({int(v) for v in values if v is not None and lo <= int(v) <= hi}), type=field.type)


def row_groups_overlapping(meta, column: int, lo, hi) -> list[int]:
    """The row groups of a parquet file (``meta``: its ``FileMetaData``) whose min/max statistics of column number
    ``column`` overlap ``[lo, hi]``: the ones that may hold a value in that range (every row group without
    statistics)."""
    out = []
    for rg in range(meta.num_row_groups):
        st = meta.row_group(rg).column(column).statistics
        if st is None or not st.has_min_max or not (st.max < lo or st.min > hi):
            out.append(rg)
    return out


def iter_rows_where(dataset, column: str, values, columns: list[str] | None = None, batch_rows: int = 65_536):
    """Yield Arrow tables of the rows of ``dataset`` whose ``column`` is in ``values`` (``columns``, in the dataset's
    schema types), batch by batch in file order: ``rows_where`` without gathering, for callers that keep only some
    (a running top-N). Bounded memory: see ``rows_where``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = _wanted(values, dataset.schema.field(column))
    if not len(wanted):
        return
    lo, hi = wanted[0].as_py(), wanted[-1].as_py()
    names = list(columns or dataset.schema.names)
    read = names if column in names else names + [column]
    for path in dataset.files:
        pf = pq.ParquetFile(path)
        for rg in row_groups_overlapping(pf.metadata, pf.schema_arrow.get_field_index(column), lo, hi):
            if not any(pc.any(pc.is_in(b.column(0).cast(wanted.type), value_set=wanted)).as_py()
                       for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=[column])):
                continue
            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=read):
                t = _in_schema(b, read, dataset.schema)
                rows = t.filter(pc.is_in(t.column(column), value_set=wanted).fill_null(False)).select(names)
                if rows.num_rows:
                    yield rows


def rows_where(dataset, column: str, values, columns: list[str] | None = None, limit: int | None = None,
               batch_rows: int = 65_536):
    """The rows of ``dataset`` (a ``pyarrow.dataset``: ``parquet_dataset``, ``contract_dataset``) whose ``column`` is
    in ``values`` (None and integers the column's type cannot hold are dropped), as one Arrow table of ``columns``
    (all when None) in the dataset's schema types, in file order; at most ``limit`` rows when given.

    Bounded memory, whatever the size of the dataset or of its row groups: a row group whose statistics exclude
    every value is skipped unread; otherwise its ``column`` is read alone, ``batch_rows`` rows at a time
    (``ParquetFile.iter_batches``), and only a row group that holds a match is read again with ``columns``, batch
    by batch, keeping the matches. An unsorted dataset has no shortcut: every row group's ``column`` is read
    (8 bytes an item for an int64 id)."""
    import pyarrow as pa

    names = list(columns or dataset.schema.names)
    parts, found = [], 0
    for rows in iter_rows_where(dataset, column, values, names, batch_rows):
        parts.append(rows)
        found += rows.num_rows
        if limit is not None and found >= limit:
            break
    if not parts:
        return pa.schema([dataset.schema.field(n) for n in names]).empty_table()
    table = pa.concat_tables(parts)
    return table.slice(0, limit) if limit is not None else table


def _draw_positions(total: int, n: int, seed: int):
    """``n`` distinct sorted positions in ``[0, total)``, seeded; memory O(n) (draws with replacement, deduplicated,
    until ``n`` are distinct; every position when ``n >= total``)."""
    import numpy as np

    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if 2 * n > total:  # a dense sample: a permutation costs O(total) = O(n) here
        return np.sort(rng.choice(total, size=n, replace=False))
    got = np.unique(rng.integers(0, total, size=n))
    while len(got) < n:
        got = np.unique(np.concatenate([got, rng.integers(0, total, size=n - len(got))]))
    return got


def sample_rows(dataset, n: int, seed: int, columns: list[str] | None = None, batch_rows: int = 65_536):
    """A seeded uniform sample of ``n`` rows of ``dataset`` (without replacement; all rows when there are fewer), as
    an Arrow table of ``columns`` in the dataset's schema types, in file order. The row count comes from the
    footers (one file open at a time), the positions are drawn in O(n) memory (``_draw_positions``), and only the
    row groups holding one are read, ``batch_rows`` rows at a time (``ParquetFile.iter_batches``): memory is set by
    ``n`` and ``batch_rows``, not by the dataset or its row-group size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(columns or dataset.schema.names)
    counts = [pq.ParquetFile(p).metadata.num_rows for p in dataset.files]
    total = sum(counts)
    if total == 0 or n <= 0:
        return pa.schema([dataset.schema.field(c) for c in names]).empty_table()
    picks = _draw_positions(total, n, seed)
    parts, start = [], 0
    for path, rows_in_file in zip(dataset.files, counts):
        if not np.searchsorted(picks, start + rows_in_file) > np.searchsorted(picks, start):
            start += rows_in_file
            continue
        pf = pq.ParquetFile(path)
        for rg in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(rg).num_rows
            lo, hi = np.searchsorted(picks, [start, start + rows])
            if hi > lo:
                at = start
                for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=names):
                    i, j = np.searchsorted(picks, [at, at + b.num_rows])
                    if j > i:
                        parts.append(_in_schema(b, names, dataset.schema).take(pa.array(picks[i:j] - at)))
                    at += b.num_rows
            start += rows
    return pa.concat_tables(parts)
