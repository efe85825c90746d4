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
                     "ctr_model_version": pa.nulls(n, pa.string())}, schema=_out_schema())


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
