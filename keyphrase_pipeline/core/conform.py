"""Input partitions written by other tools: every file's schema checked against its contract, conformed
where that loses nothing, refused (naming the file and the column) where it would.

The inputs (``INPUT_CONTRACTS``: raw search logs, catalog, keyphrases, search-relevance labels) are written
by platforms, and one partition may hold files from different writers: a late file written by pandas'
``to_parquet`` (nanosecond timestamps, which Spark refuses with ``PARQUET_TYPE_ILLEGAL``), one with a
column renamed, ``int32`` ids beside ``int64`` ones, zoned timestamps beside naive ones. Spark reads a
folder with ONE schema, taken from one file: a renamed column then reads as null in the other files' rows.
So before anything reads an input partition, :func:`check_files` reads the footer of each of its data files
(pyarrow, no data read) and sorts every contract column of every file into

* native: Spark reads it as written and a cast gives the contract's type exactly: signed integers no wider
  than the contract's (wider ones when the footer's min/max statistics show that every value fits),
  float32/float64, string/large_string/dictionary of strings, timestamps in ms or us (naive or zoned) and
  INT96 timestamps, booleans;
* copy: pyarrow reads it losslessly, Spark cannot: nanosecond timestamps, unsigned integers, all-null
  (``null``-typed) columns, float16. Such a file is copied once, cast to the contract's physical types
  (``contracts.arrow_schema``: e.g. ``timestamp[us]``), to ``_conformed/`` in the lake
  (``layout.conformed_path``) and Spark reads the copy; a rerun on the same file reuses it;
* refused: a required column missing (renamed), or a type that is not the contract's (text for an id,
  bytes for a title): ``SchemaError`` (``kp`` exit 3) naming the dataset, the file and the column.

Timestamps: naive values are UTC (the pipeline's Spark session runs in UTC); zoned ones are converted to
UTC and read as naive (Spark ``timestamp_ntz``). Nanoseconds become microseconds, Spark's precision: a
file whose values carry sub-microsecond digits has them truncated (logged with the count).

The readers: ``keyphrase_pipeline.core.spark.read_input`` (the Spark stages: CTR labels, pair selection,
embedding) and ``lake.read_parquet`` with an input contract (pandas: training data, evaluation, index,
report); ``kp inputs`` and the DAG's input sensor run the same :func:`check_files`.

Why not only read with an explicit schema: Spark 4.2's parquet reader converts some physical types to a
requested one (int32 -> bigint, UTC-adjusted -> ntz) but not others (ns timestamps, null columns), which
ones depends on the Spark version, and a refusal comes at run time in a task, not at planning. So Spark
reads each group of files with identical footer types in the types it infers from them, and the
conversion to the contract is an explicit ``cast`` (exact; ANSI mode refuses an overflow) before a union.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from keyphrase_pipeline.core.contracts import CONTRACTS, arrow_schema
from keyphrase_pipeline.core.errors import DataError, SchemaError

log = logging.getLogger(__name__)

# the datasets other tools write (contracts.CONTRACTS' "inputs a platform provides")
INPUT_CONTRACTS = ("events", "catalog", "keyphrases", "sr_input")
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_INT_BITS = {"int32": 32, "int64": 64}


@dataclass(frozen=True)
class FileCheck:
    """One data file's footer against its contract.

    ``path``: the file (the partition path given, then the file's path below it); ``size``/``mtime``: from the
    listing (they key the conformed copy); ``columns``: the contract columns the file has; ``signature``: (column, arrow
    type, parquet physical:logical type) of those, sorted (files with equal signatures are read by Spark together);
    ``notes``: each lossless difference from the contract's physical type (``"ts: timestamp[ns] ->
    timestamp[us]"``); ``copy``: the notes Spark cannot read as written (the file is read from a copy)."""

    path: str
    size: int
    mtime: str
    columns: tuple[str, ...]
    signature: tuple
    notes: tuple[str, ...] = field(default=())
    copy: tuple[str, ...] = field(default=())


def data_files(path: str) -> list[dict]:
    """The data files Spark and pyarrow read at ``path`` (a file, or a folder searched recursively; names or
    folders starting with ``_`` or ``.`` such as ``_SUCCESS``, ``_tmp-*``, ``.crc`` files are skipped), sorted.

    Returns ``[{"path", "size", "mtime"}]`` (``[]`` when nothing is there)."""
    fs, p = _fs(path)
    if not fs.exists(p):
        return []
    if fs.isfile(p):
        info = fs.info(p)
        return [{"path": path, "size": int(info.get("size") or 0), "mtime": _mtime(info)}]
    root, base = p.rstrip("/"), path.rstrip("/")
    out = []
    for name, info in sorted(fs.find(root, detail=True).items()):
        rel = name[len(root):].strip("/")
        if any(part.startswith(("_", ".")) for part in rel.split("/")):
            continue
        out.append({"path": f"{base}/{rel}", "size": int(info.get("size") or 0), "mtime": _mtime(info)})
    return out


def _fs(path: str):
    """(fsspec filesystem, path inside it) of a local path, ``file://`` or other fsspec URL. (Not
    ``keyphrase_pipeline.core.lake._fs``: ``lake.read_parquet`` imports this module.)"""
    import fsspec

    return fsspec.core.url_to_fs(path)


def _open(path: str):
    fs, p = _fs(path)
    return fs.open(p, "rb")


def _mtime(info: dict) -> str:
    return str(info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("ETag") or "")


def _native_or_copy(logical: str, t, physical: str, stats: tuple | None) -> tuple[str, str | None]:
    """("native" | "copy" | "refuse", why) for a column of arrow type ``t`` under contract type ``logical``.

    ``physical``: the parquet column's ``"<physical type>:<logical type>"`` (what Spark sees); ``stats``:
    (min, max) over the file from the footer, or None when some row group has none."""
    import pyarrow as pa

    if pa.types.is_null(t):
        return "copy", "all-null column"
    if logical == "string":
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "native", None
        if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
            return "native", None
        return "refuse", None
    if logical in _INT_RANGE:
        if not pa.types.is_integer(t):
            return "refuse", None
        lo, hi = _INT_RANGE[logical]
        if pa.types.is_unsigned_integer(t):
            if t.bit_width < _INT_BITS[logical] or (stats is not None and stats[1] <= hi):
                return "copy", "unsigned integers"
            return "refuse", f"unsigned {t.bit_width}-bit values may not fit {logical}"
        if t.bit_width <= _INT_BITS[logical]:
            return "native", None
        if stats is not None and lo <= stats[0] and stats[1] <= hi:
            return "native", None
        why = "no footer statistics show that they do" if stats is None else f"values range {stats[0]} .. {stats[1]}"
        return "refuse", f"{t} values may not fit {logical} ({why})"
    if logical in ("float64", "float32"):
        if not pa.types.is_floating(t):
            return "refuse", None
        if pa.types.is_float16(t):
            return "copy", "float16"
        if logical == "float32" and t.bit_width > 32:
            return "refuse", "float64 values narrowed to float32 lose precision"
        return "native", None
    if logical == "bool":
        return ("native", None) if pa.types.is_boolean(t) else ("refuse", None)
    if logical == "timestamp":
        if not pa.types.is_timestamp(t):
            return "refuse", None
        if "nanoseconds" in physical:  # INT96 (Hive, old Spark) reads as ns in pyarrow too, and Spark reads it
            return "copy", "nanosecond timestamps (Spark refuses them: PARQUET_TYPE_ILLEGAL)"
        return "native", None
    if logical == "date":
        return ("native", None) if pa.types.is_date(t) else ("refuse", None)
    if logical.startswith("list<"):
        ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type)
        return ("native", None) if ok else ("refuse", None)
    raise ValueError(logical)


def _file_stats(meta, col_index: int) -> tuple | None:
    """(min, max) of a flat column over every row group from the footer; None when a row group with values
    has no statistics."""
    lo = hi = None
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        st = rg.column(col_index).statistics
        if st is None:
            return None
        if not st.has_min_max:
            if st.null_count == rg.num_rows:
                continue
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return (lo if lo is not None else 0, hi if hi is not None else 0)


def _check_one(entry: dict, contract: str, wanted: list[tuple[str, str, bool]]) -> tuple[FileCheck | None, list[str]]:
    import pyarrow.parquet as pq

    path = entry["path"]
    try:
        with _open(path) as fh:
            pf = pq.ParquetFile(fh)
            schema, meta, pschema = pf.schema_arrow, pf.metadata, pf.schema
    except Exception as exc:  # not parquet, truncated, unreadable: pyarrow's ArrowInvalid, OSError
        return None, [f"{contract} at {path}: not a readable parquet file ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})"]
    leaf = {pschema.column(i).path: i for i in range(len(pschema))}
    canonical = arrow_schema(contract)
    problems, notes, copy, cols, sig = [], [], [], [], []
    for name, logical, optional in wanted:
        if name not in schema.names:
            if not optional:
                problems.append(f"{contract} at {path}: missing column {name!r} (expected {logical}); "
                                f"the file has {schema.names}")
            continue
        t = schema.field(name).type
        idx = leaf.get(name)
        physical = f"{pschema.column(idx).physical_type}:{pschema.column(idx).logical_type}" if idx is not None else ""
        stats = _file_stats(meta, idx) if idx is not None and logical in _INT_RANGE else None
        verdict, why = _native_or_copy(logical, t, physical, stats)
        if verdict == "refuse":
            problems.append(f"{contract} at {path}: column {name!r} has type {t}, expected {logical}"
                            + (f": {why}" if why else ""))
            continue
        cols.append(name)
        sig.append((name, str(t), physical))
        target = canonical.field(name).type
        if t != target:
            note = f"{name}: {t} -> {target}" + (" (INT96)" if physical.startswith("INT96") else "")
            notes.append(note)
            if verdict == "copy":
                copy.append(f"{note}: {why}")
    if problems:
        return None, problems
    check = FileCheck(path, entry["size"], entry["mtime"], tuple(cols), tuple(sorted(sig)), tuple(notes), tuple(copy))
    return check, []


def check_files(paths: str | list[str], contract: str, columns: list[str] | None = None) -> list[FileCheck]:
    """Check the footer of every data file at ``paths`` (``data_files``) against ``contract``.

    Args:
        paths: input partitions (folders) or files, local paths or fsspec URLs.
        contract: a name in ``keyphrase_pipeline.core.contracts.CONTRACTS``.
        columns: check only these contract columns (default: all of them; optional ones only when present).
    Returns:
        one ``FileCheck`` per data file, in path order (``[]`` when no data file is there).
    Raises:
        SchemaError: (exit 3) a file lacks a required column or has one whose type cannot be conformed
            losslessly; the message names the dataset, each such file and column (up to 5), e.g.
            ``events at .../part-1.parquet: missing column 'keyphrase_id' (expected int64); the file has [...]``.
        DataError: (exit 3) a data file is not a readable parquet file (named).
        KeyError: unknown contract.
    """

    spec = CONTRACTS[contract]
    wanted = [(c.rstrip("?"), t, c.endswith("?")) for c, t in spec.items()
              if columns is None or c.rstrip("?") in columns]
    entries = [e for p in ([paths] if isinstance(paths, str) else paths) for e in data_files(p)]
    if len(entries) > 1:  # a footer is one small read; on an object store the latency dominates
        with ThreadPoolExecutor(max_workers=min(16, len(entries))) as pool:
            results = list(pool.map(lambda e: _check_one(e, contract, wanted), entries))
    else:
        results = [_check_one(e, contract, wanted) for e in entries]
    problems = [p for _, ps in results for p in ps]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        unreadable = all("not a readable parquet file" in p for p in problems)
        raise (DataError if unreadable else SchemaError)("; ".join(problems[:5]) + more)
    checks = [c for c, _ in results]
    for c in checks:
        if c.notes:
            log.info("%s: conformed on read: %s", c.path, "; ".join(c.notes))
    return checks


def needs_conforming(checks: list[FileCheck]) -> bool:
    """True when the files differ from each other or from the contract's physical types (see ``FileCheck``)."""
    return len({c.signature for c in checks}) > 1 or any(c.notes for c in checks)


def conform_table(table, contract: str, where: str = ""):
    """``table`` (a ``pyarrow.Table``) cast to ``contracts.arrow_schema(contract)``: contract columns only, in
    contract order (optional ones only when present), timestamps naive UTC in microseconds.

    Sub-microsecond digits are truncated (logged with the count). Raises SchemaError (exit 3) naming
    ``where`` and the column when a value does not fit (an unsigned or wider integer out of range)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    canonical = arrow_schema(contract)
    arrays, fields = [], []
    for f in canonical:
        if f.name not in table.column_names:
            continue
        col = table.column(f.name)
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
        elif pa.types.is_timestamp(t) and f.type != t:
            if t.tz is not None:  # the same instants, as naive UTC
                col = col.cast(pa.timestamp(t.unit, tz="UTC")).cast(pa.timestamp(t.unit))
            try:
                col = col.cast(f.type, safe=True)
            except pa.ArrowInvalid:
                cut = col.cast(f.type, safe=False)
                lost = pc.sum(pc.not_equal(cut.cast(col.type), col).cast(pa.int64())).as_py() or 0
                log.warning("%s: %d %s value(s) had sub-microsecond digits, truncated", where, lost, f.name)
                col = cut
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{contract} at {where}: column {f.name!r} ({t}) cannot be conformed to "
                                  f"{f.type}: {str(exc).splitlines()[0]}") from None
        arrays.append(col)
        fields.append(f)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_arrow(checks: list[FileCheck], contract: str, columns: list[str] | None = None):
    """The rows of the files ``checks`` (from ``check_files``) as one ``pyarrow.Table`` in the contract's
    physical types (``conform_table``), ``columns`` only when given. Extra columns are not read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    canonical = arrow_schema(contract)
    tables = []
    for c in checks:
        with _open(c.path) as fh:
            cols = [x for x in c.columns if columns is None or x in columns]
            tables.append(conform_table(pq.read_table(fh, columns=cols), contract, where=c.path))
    wanted = [f for f in canonical if columns is None or f.name in columns]
    schema = pa.schema([f for f in wanted if any(f.name in t.column_names for t in tables)])
    if not tables:
        return schema.empty_table()
    full = []
    for t in tables:  # a file without an optional column: nulls
        for f in schema:
            if f.name not in t.column_names:
                t = t.append_column(f, pa.nulls(t.num_rows, f.type))
        full.append(t.select(schema.names))
    return pa.concat_tables(full)


# ---- what Spark reads ------------------------------------------------------------------------------------
_SPARK_TYPES = {"string": "string", "int64": "bigint", "int32": "int", "float64": "double", "float32": "float",
                "bool": "boolean", "timestamp": "timestamp_ntz", "date": "date", "list<float32>": "array<float>"}


def spark_read_types(contract: str) -> dict[str, str]:
    """{column: Spark SQL type} of ``contract`` as ``keyphrase_pipeline.core.spark.read_input`` returns it
    (timestamps ``timestamp_ntz``: what Spark infers from the contract's own naive ``timestamp[us]`` files)."""
    return {c.rstrip("?"): _SPARK_TYPES[t] for c, t in CONTRACTS[contract].items()}


def write_conformed_copy(check: FileCheck, contract: str, folder: str) -> FileCheck:
    """The file of ``check`` copied into ``folder``, cast by ``conform_table`` one row group at a time, as
    ``<name>-<key>.parquet`` (key: sha1 of the source's path, size and mtime, so a rerun reuses the copy and a
    replaced source gets a new one; written under a hidden name, then renamed). Returns the copy's
    ``FileCheck`` (its footer read back). Raises SchemaError (exit 3) naming the source file and the column
    when a value does not fit (``conform_table``)."""

    import pyarrow as pa
    import pyarrow.parquet as pq

    key = hashlib.sha1(f"{check.path}|{check.size}|{check.mtime}".encode()).hexdigest()[:12]
    name = check.path.rstrip("/").rsplit("/", 1)[-1]
    name = name[: -len(".parquet")] if name.endswith(".parquet") else name
    target = f"{folder.rstrip('/')}/{name}-{key}.parquet"  # the source's name never starts with _ or .
    fs, p = _fs(target)
    if not fs.exists(p):
        out_schema = pa.schema([f for f in arrow_schema(contract) if f.name in check.columns])
        parent = p.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}.parquet"  # hidden from every reader until renamed
        try:
            with _open(check.path) as src, fs.open(tmp, "wb") as dst:
                with pq.ParquetWriter(dst, out_schema) as writer:
                    for batch in pq.ParquetFile(src).iter_batches(columns=list(check.columns)):
                        writer.write_table(conform_table(pa.Table.from_batches([batch]), contract, where=check.path))
            fs.mv(tmp, p)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
        log.warning("%s: copied to %s in the contract's types (%s)", check.path, target, "; ".join(check.copy))
    info = fs.info(p)
    wanted = [(c.rstrip("?"), t, c.endswith("?")) for c, t in CONTRACTS[contract].items()]
    copy, problems = _check_one({"path": target, "size": int(info.get("size") or 0), "mtime": _mtime(info)},
                                contract, wanted)
    if copy is None:  # cannot happen: the copy is written in the contract's types
        raise SchemaError("; ".join(problems))
    return copy


def prune_copies(folder: str, keep: set[str]) -> None:
    """Remove the files under ``folder`` (conformed copies) not in ``keep`` (paths as ``write_conformed_copy``
    returns them): copies of sources since replaced. Hidden files (a copy being written) are left alone."""
    fs, p = _fs(folder)
    if not fs.exists(p) or fs.isfile(p):
        return
    kept = {_fs(k)[1] for k in keep}
    for name in fs.find(p):
        if not name.rsplit("/", 1)[-1].startswith(".") and name not in kept:
            fs.rm(name)
