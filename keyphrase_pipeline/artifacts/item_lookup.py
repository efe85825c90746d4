"""A published bundle's recommendations laid out for lookup by item id: hash buckets, each sorted by item.

``kp publish`` writes the day's recommendations into the bundle as ``B`` bucket files
``recommendations/part-BBBBB.parquet`` (``BBBBB`` = the bucket): an item's rows are in bucket
``bucket_of(item_id, B)`` (the splitmix64 finaliser of the id, modulo ``B``; Steele, Lea and Flood, "Fast
splittable pseudorandom number generators", OOPSLA 2014), sorted by ``(item_id, rank)`` and cut into row groups of
``serve.lookup_row_group_rows`` rows. ``B = ceil(rows / serve.publish_bucket_rows)``, so a bucket holds about
``serve.publish_bucket_rows`` rows whatever the catalog. Because each file is sorted, its row groups' ``item_id``
min/max statistics do not overlap, and ``lookup`` reads one file's footer and the one or two row groups whose range
holds the id: a bounded read, whatever the number of items (``tests/artifacts/test_item_lookup.py`` counts the
bytes on a 300,000-item bundle).

Writing (``write_buckets``) is two streamed passes, so its memory is set by the settings, not the catalog:

1. each input batch is split by bucket and appended to that bucket's Arrow IPC spill file (no footer is kept in
   memory; ``B`` files open);
2. each bucket in turn is read back, its sort order computed (``pyarrow.compute.sort_indices``), and written a row
   group at a time in that order, its distinct items counted on the way; its spill file is removed.

Peak memory: one input batch (``batch_rows`` rows) in pass 1; in pass 2 one bucket (about
``serve.publish_bucket_rows`` rows, a few per cent more for the hash's spread), its 8-byte-a-row sort index and one
row group: set by the settings, not by the catalog (docs/PERFORMANCE.md, "Memory per stage", has the measured
bytes per row).

A bundle published before this layout (its manifest has no ``recommendations_layout``) is still read: ``lookup``
then streams every row group, in bounded memory but reading every byte.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.hashing import splitmix64
from keyphrase_pipeline.core.lake import row_groups_overlapping

log = logging.getLogger(__name__)

LAYOUT = "item-buckets"
HASH = "splitmix64"


def bucket_of(item_ids, buckets: int) -> np.ndarray:
    """The bucket of each id: splitmix64's finaliser of the int64 id (as uint64, wrapping), modulo ``buckets``.

    ``item_ids``: int64 array-like ``(n,)`` or one int; returns int64 ``(n,)`` in ``[0, buckets)``. Sequential or
    strided ids spread evenly. ValueError when ``buckets`` < 1."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    z = splitmix64(item_ids)
    return (z % np.uint64(buckets)).astype(np.int64)


def buckets_for(rows: int, bucket_rows: int) -> int:
    """How many buckets ``rows`` rows take at about ``bucket_rows`` rows each: ``max(1, ceil(rows / bucket_rows))``."""
    return max(1, -(-int(rows) // max(1, int(bucket_rows))))


MAX_OPEN_SPILLS = 256  # spill files open at once in pass 1; more buckets than this take one more read of the input


def write_buckets(batches: Iterable | Callable[[], Iterable], schema, dest_dir: str | os.PathLike, buckets: int,
                  row_group_rows: int, spill_dir: str | os.PathLike, max_open: int = MAX_OPEN_SPILLS) -> dict:
    """Write ``batches`` (Arrow record batches of ``schema``, with ``item_id`` and ``rank``) as ``buckets`` files
    ``dest_dir/part-BBBBB.parquet``, each sorted by (item_id, rank) in row groups of ``row_group_rows`` rows; an
    empty bucket gets an empty file, so every bucket has one. ``spill_dir`` (created, then removed) holds pass 1's
    IPC files; give one inside the output's atomic temp directory so a crash leaves nothing.

    At most ``max_open`` spill files are open at once (a process's file-handle limit is often 1,024): with more
    buckets, pass 1 runs once per group of ``max_open`` buckets, so ``batches`` must then be a callable returning a
    fresh iterator each time (an iterable is read once; ValueError if a second read is needed).

    Returns ``{"rows", "items" (distinct item_id, exact), "files", "buckets", "largest_bucket_rows", "input_reads"}``.
    Raises ValueError when ``buckets`` < 1."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    dest, spill = Path(dest_dir), Path(spill_dir)
    spill.mkdir(parents=True, exist_ok=True)
    groups = [range(g, min(g + max_open, buckets)) for g in range(0, buckets, max(1, max_open))]
    if len(groups) > 1 and not callable(batches):
        raise ValueError(f"{buckets} buckets need {len(groups)} reads of the input: pass a callable")
    written: set[int] = set()
    rows = items = largest = 0
    rg = max(1, row_group_rows)
    for group in groups:
        lo, hi = group.start, group.stop
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        sinks: dict[int, object] = {}
        try:
            for batch in (batches() if callable(batches) else batches):
                if not batch.num_rows:
                    continue
                if lo == 0:
                    rows += batch.num_rows
                ids = batch.column("item_id").to_numpy(zero_copy_only=False)
                b = bucket_of(ids, buckets)
                keep = np.flatnonzero((b >= lo) & (b < hi))
                if not len(keep):
                    continue
                order = keep[np.argsort(b[keep], kind="stable")]
                sorted_b = b[order]
                starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
                ends = np.r_[starts[1:], len(order)]
                taken = batch.take(pa.array(order))
                for s, e in zip(starts, ends):
                    k = int(sorted_b[s])
                    if k not in writers:
                        sinks[k] = pa.OSFile(str(spill / f"bucket-{k:05d}.arrows"), "wb")
                        writers[k] = pa.ipc.new_stream(sinks[k], schema)
                    writers[k].write_batch(taken.slice(int(s), int(e - s)))
        finally:
            for k in list(writers):
                writers[k].close()
                sinks[k].close()
        written |= set(writers)
        for k in group:
            n_items, n_rows = _sort_bucket(spill / f"bucket-{k:05d}.arrows" if k in writers else None, schema,
                                           dest / layout.part_file_name(k), rg, pa, pc, pq)
            items, largest = items + n_items, max(largest, n_rows)
    try:
        spill.rmdir()
    except OSError:
        pass
    return {"rows": rows, "items": items, "files": buckets, "buckets": buckets, "largest_bucket_rows": largest,
            "input_reads": len(groups)}


def _sort_bucket(path: Path | None, schema, out_path: Path, rg: int, pa, pc, pq) -> tuple[int, int]:
    """Read one bucket's spill file back (``path``; None: the bucket got no rows), write it to ``out_path`` sorted by
    (item_id, rank) a row group at a time through a sort index, and remove the spill file. Returns (distinct items,
    rows)."""
    if path is None:
        pq.write_table(schema.empty_table(), out_path)
        return 0, 0
    with pa.OSFile(str(path), "rb") as src:
        table = pa.ipc.open_stream(src).read_all()
    path.unlink()
    # sorted through an index (8 bytes a row) and written a row group at a time: one copy of the bucket held
    order = pc.sort_indices(table, sort_keys=[("item_id", "ascending"), ("rank", "ascending")])
    items, last = 0, None
    with pq.ParquetWriter(out_path, schema) as out:
        for start in range(0, table.num_rows, rg):
            part = table.take(order.slice(start, rg))
            ids = part.column("item_id").to_numpy()
            items += int(np.count_nonzero(ids[1:] != ids[:-1])) + int(ids[0] != last)
            last = ids[-1]
            out.write_table(part, row_group_size=rg)
    return items, table.num_rows


def layout_record(buckets: int, row_group_rows: int) -> dict:
    """The manifest's ``recommendations_layout``: what ``lookup`` needs to find an item's file."""
    return {"layout": LAYOUT, "hash": HASH, "buckets": int(buckets), "sorted_by": ["item_id", "rank"],
            "row_group_rows": int(row_group_rows)}


class CountingFile:
    """A read-only binary file that counts the bytes read through it (``bytes_read``); what ``lookup`` opens, so a
    caller (or a test) can see how much one lookup read."""

    def __init__(self, path: str | os.PathLike):
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self.bytes_read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.bytes_read += len(data)
        return data

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self.bytes_read += n or 0
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lookup(recs_dir: str | os.PathLike, layout_rec: dict | None, item_id: int, columns: list[str] | None = None,
           stats: dict | None = None):
    """The rows of ``item_id`` in a bundle's ``recommendations/`` (pyarrow Table, sorted by rank; empty when the item
    has none).

    With ``layout_rec`` (the manifest's ``recommendations_layout``): one bucket file, its footer and the row groups
    whose item_id range holds the id. Without (a bundle published before the layout): every file, one row group at
    a time, keeping the matches (bounded memory, every byte read). ``stats``, when given, gets ``bytes_read``,
    ``files_opened`` and ``row_groups_read`` added. Raises OSError when a file cannot be read; DataError (exit 3)
    when the layout names a bucket file that is missing."""
    import operator

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.errors import DataError

    item_id = operator.index(item_id)  # TypeError for 5.7: an id is an integer
    root = Path(recs_dir)
    if layout_rec and layout_rec.get("layout") != LAYOUT:
        raise DataError(f"published recommendations at {root}: unknown layout {layout_rec.get('layout')!r} "
                        f"(this release reads {LAYOUT!r})")
    if not -(2 ** 63) <= item_id < 2 ** 63:  # not an int64: no item has it
        return pa.schema([("item_id", pa.int64())]).empty_table() if columns is None else \
            pa.schema([(c, pa.null()) for c in columns]).empty_table()
    if layout_rec:
        b = int(bucket_of(item_id, int(layout_rec["buckets"]))[0])
        files = [root / layout.part_file_name(b)]
        if not files[0].exists():
            raise DataError(f"published recommendations: bucket file {files[0].name} is missing from {root}")
    else:
        files = sorted(root.glob("*.parquet"))
    parts, read, opened, groups = [], 0, 0, 0
    schema = None
    for path in files:
        with CountingFile(path) as fh:
            pf = pq.ParquetFile(fh)
            opened += 1
            schema = schema or pf.schema_arrow
            col = pf.schema_arrow.get_field_index("item_id")
            read_cols = None if columns is None else list(dict.fromkeys([*columns, "item_id"]))
            for rg in row_groups_overlapping(pf.metadata, col, item_id, item_id):
                t = pf.read_row_group(rg, columns=read_cols)  # the id column once, beside those asked for
                groups += 1
                hit = t.filter(pc.equal(t.column("item_id"), item_id))
                if columns is not None:
                    hit = hit.select(columns)
                if hit.num_rows:
                    parts.append(hit)
            read += fh.bytes_read
    if stats is not None:
        stats.update({"bytes_read": read, "files_opened": opened, "row_groups_read": groups})
    if not parts:
        out_schema = schema if columns is None or schema is None else pa.schema([schema.field(c) for c in columns])
        return (out_schema or pa.schema([("item_id", pa.int64())])).empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by("rank") if "rank" in table.column_names else table
