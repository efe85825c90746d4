"""The bundle's item-bucket layout: a lookup by item id reads one row group, whatever the catalog."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyphrase_pipeline.artifacts import item_lookup
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.stages.recommend import _out_schema


def _recs(item_ids, per_item: int, seed: int = 0) -> pa.Table:
    """``per_item`` rows per item (ranks 1..per_item, given in reverse so sorting is needed), items in random order."""
    rng = np.random.default_rng(seed)
    items = rng.permutation(np.asarray(item_ids, dtype=np.int64))
    n = len(items) * per_item
    return pa.table({"item_id": np.repeat(items, per_item),
                     "rank": np.tile(np.arange(per_item, 0, -1, dtype=np.int32), len(items)),
                     "keyphrase_id": rng.integers(0, 50_000, n).astype(np.int64),
                     "keyphrase": pa.array([f"k{i % 997}" for i in range(n)]),
                     "score": rng.random(n, dtype=np.float32), "expected_ctr": pa.nulls(n, pa.float32()),
                     "ctr_model_version": pa.nulls(n, pa.string()), "rerank_score": pa.nulls(n, pa.float32()),
                     "rerank_cross_version": pa.nulls(n, pa.string())},
                    schema=_out_schema())


def _write(table: pa.Table, tmp_path, bucket_rows: int, row_group_rows: int, batch_rows: int = 50_000):
    out = tmp_path / "recommendations"
    out.mkdir()
    buckets = item_lookup.buckets_for(table.num_rows, bucket_rows)
    counts = item_lookup.write_buckets(table.to_batches(max_chunksize=batch_rows), table.schema, out, buckets,
                                       row_group_rows, spill_dir=tmp_path / "spill")
    return out, counts, item_lookup.layout_record(buckets, row_group_rows)


def test_bucket_of_is_stable_spread_and_in_range():
    ids = np.arange(100_000, dtype=np.int64) * 1000  # strided ids, the kind plain modulo would pile into one bucket
    b = item_lookup.bucket_of(ids, 16)
    assert b.min() >= 0 and b.max() < 16
    counts = np.bincount(b, minlength=16)
    assert counts.min() > 0.9 * len(ids) / 16 and counts.max() < 1.1 * len(ids) / 16
    assert int(item_lookup.bucket_of(-5, 7)[0]) == int(item_lookup.bucket_of(np.array([-5]), 7)[0])
    assert list(item_lookup.bucket_of([3, 3], 1)) == [0, 0]
    with pytest.raises(ValueError):
        item_lookup.bucket_of([1], 0)
    assert item_lookup.buckets_for(0, 10) == 1 and item_lookup.buckets_for(21, 10) == 3


def test_lookup_finds_every_items_rows_in_rank_order(tmp_path):
    table = _recs(range(1, 2001), per_item=5)
    out, counts, layout_rec = _write(table, tmp_path, bucket_rows=2_000, row_group_rows=64, batch_rows=333)
    assert counts["rows"] == 10_000 and counts["items"] == 2000 and counts["buckets"] == 5
    assert not (tmp_path / "spill").exists()
    full = table.to_pandas()
    for item in (1, 777, 2000):
        got = item_lookup.lookup(out, layout_rec, item).to_pandas()
        want = full[full["item_id"] == item].sort_values("rank")
        assert got["rank"].tolist() == [1, 2, 3, 4, 5]
        assert got["keyphrase_id"].tolist() == want["keyphrase_id"].tolist()
    assert item_lookup.lookup(out, layout_rec, 999_999).num_rows == 0  # unknown id: empty, same columns
    assert item_lookup.lookup(out, layout_rec, 999_999).schema.names == table.schema.names
    # a bundle from before the layout (no manifest record): a scan, the same answer
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    pq.write_table(table, legacy / "part-00000.parquet", row_group_size=1000)
    assert item_lookup.lookup(legacy, None, 777).to_pandas()["keyphrase_id"].tolist() == \
        item_lookup.lookup(out, layout_rec, 777).to_pandas()["keyphrase_id"].tolist()
    (out / "part-00003.parquet").unlink()
    missing = next(i for i in range(1, 2001) if item_lookup.bucket_of(i, 5)[0] == 3)
    with pytest.raises(DataError, match="bucket file part-00003.parquet is missing"):
        item_lookup.lookup(out, layout_rec, missing)


def test_lookup_on_a_300k_item_bundle_reads_a_bounded_amount(tmp_path):
    """The done-when of issue 32: on a 300,000-item bundle (6M rows, the defaults' 2M-row buckets, 8,192-row row
    groups) one item's lookup reads its bucket's footer and the row group(s) holding it; the other buckets and row
    groups stay unread. The bound is a formula of the settings, not of the catalog."""
    table = _recs(range(10_000_000, 10_300_000), per_item=20, seed=1)
    out, counts, layout_rec = _write(table, tmp_path, bucket_rows=2_000_000, row_group_rows=8192, batch_rows=200_000)
    del table
    assert counts["items"] == 300_000 and counts["buckets"] == 3
    total = sum(f.stat().st_size for f in out.iterdir())
    largest_rg = max(pq.ParquetFile(f).metadata.row_group(i).total_byte_size
                     for f in out.iterdir() for i in range(pq.ParquetFile(f).metadata.num_row_groups))
    for item in (10_000_000, 10_150_001, 10_299_999):
        stats: dict = {}
        rows = item_lookup.lookup(out, layout_rec, item, stats=stats)
        assert rows.num_rows == 20 and rows.column("rank").to_pylist() == list(range(1, 21))
        assert stats["files_opened"] == 1 and stats["row_groups_read"] <= 2
        footer = pq.ParquetFile(out / f"part-{int(item_lookup.bucket_of(item, 3)[0]):05d}.parquet").metadata.serialized_size
        assert stats["bytes_read"] <= footer + 2 * largest_rg + 64 * 1024, stats  # + the format's small reads
        assert stats["bytes_read"] < total / 50, (stats, total)  # under 2% of the bundle


def _rchar() -> int:
    """Bytes this process has read through read(2)/pread(2) so far (/proc/self/io: Python and Arrow's C++ reads
    alike), a count that does not come from the code under test."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_a_lookup_reads_little_counted_by_the_kernel(tmp_path):
    """The same bound as above, counted by the kernel rather than by lookup's own counter: a lookup that read the
    whole bundle (e.g. through pyarrow.dataset) would fail here even if its CountingFile said otherwise."""
    table = _recs(range(1, 100_001), per_item=20, seed=2)
    out, _, layout_rec = _write(table, tmp_path, bucket_rows=2_000_000, row_group_rows=8192, batch_rows=200_000)
    del table
    total = sum(f.stat().st_size for f in out.iterdir())
    item_lookup.lookup(out, layout_rec, 5)  # warm: imports, the first file's footer parsed once
    before = _rchar()
    for item in (7, 50_000, 99_999):
        assert item_lookup.lookup(out, layout_rec, item).num_rows == 20
    read = _rchar() - before
    assert read < total / 20, (read, total)  # three lookups under 5% of a bundle they could have read three times


def test_many_buckets_are_written_in_groups_of_open_files(tmp_path):
    """More buckets than MAX_OPEN_SPILLS: pass 1 reads the input once per group, so a process's file-handle limit
    is never reached; the files are the same as in one group."""
    table = _recs(range(1, 3001), per_item=3)
    one = tmp_path / "one"
    (one / "r").mkdir(parents=True)
    many = tmp_path / "many"
    (many / "r").mkdir(parents=True)
    a = item_lookup.write_buckets(lambda: table.to_batches(max_chunksize=500), table.schema, one / "r", 40, 16,
                                  spill_dir=one / "s")
    b = item_lookup.write_buckets(lambda: table.to_batches(max_chunksize=500), table.schema, many / "r", 40, 16,
                                  spill_dir=many / "s", max_open=7)
    assert a["input_reads"] == 1 and b["input_reads"] == 6 and a["rows"] == b["rows"] == 9000
    assert a["items"] == b["items"] == 3000
    for k in range(40):
        name = f"part-{k:05d}.parquet"
        assert pq.read_table(one / "r" / name).equals(pq.read_table(many / "r" / name))
    with pytest.raises(ValueError, match="pass a callable"):
        item_lookup.write_buckets(table.to_batches(), table.schema, many / "r", 40, 16, spill_dir=many / "s2", max_open=7)


def test_lookup_ids_that_are_not_int64_and_unknown_layouts(tmp_path):
    table = _recs(range(1, 101), per_item=2)
    out, _, layout_rec = _write(table, tmp_path, bucket_rows=50, row_group_rows=16)
    assert item_lookup.lookup(out, layout_rec, 2 ** 63).num_rows == 0  # past int64: no item has it
    assert item_lookup.lookup(out, layout_rec, -(2 ** 63) - 1).num_rows == 0
    with pytest.raises(TypeError):
        item_lookup.lookup(out, layout_rec, 5.7)
    with pytest.raises(DataError, match="unknown layout 'by-keyphrase'"):
        item_lookup.lookup(out, {**layout_rec, "layout": "by-keyphrase"}, 5)
