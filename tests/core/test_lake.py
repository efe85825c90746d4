import json
import os
import threading

import pandas as pd
import pytest

from keyphrase_pipeline.core.errors import ConfigError, DataError, SchemaError
from keyphrase_pipeline.core.lake import (
    Lake,
    atomic_dir,
    ds_range,
    parse_ds,
    read_parquet,
    write_parquet_atomic,
    write_parquet_file_atomic,
)


def test_paths_follow_the_layout(tmp_path):
    lake = Lake(str(tmp_path))
    assert lake.path("ctr_labels", ds="2026-10-05") == f"{tmp_path}/ctr_labels/ds=2026-10-05"
    assert lake.path("events", ds="2026-10-05").endswith("raw/events/ds=2026-10-05")
    assert lake.path("registry", "CHAMPION") == f"{tmp_path}/registry/CHAMPION"
    assert lake.uri("ctr_daily").startswith("file://")
    with pytest.raises(KeyError):
        lake.path("nope")
    remote = Lake("s3a://bucket/kp/")
    assert remote.path("ctr_labels", ds="2026-10-05") == "s3a://bucket/kp/ctr_labels/ds=2026-10-05"


def test_ds_helpers():
    assert ds_range("2026-10-03", 3) == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert ds_range("2026-03-01", 2) == ["2026-02-28", "2026-03-01"]
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_ds("03/10/2026")


def test_partitions_lists_only_complete_ones(tmp_path):
    lake = Lake(str(tmp_path))
    df = pd.DataFrame({"a": [1]})
    for ds in ("2026-10-02", "2026-10-01"):
        write_parquet_atomic(df, lake.path("ctr_daily", ds=ds))
    os.makedirs(f"{lake.path('ctr_daily')}/_tmp-ds=2026-10-03-abc")
    assert lake.partitions("ctr_daily") == ["2026-10-01", "2026-10-02"]
    assert lake.partitions("ctr_labels") == []


def test_atomic_dir_replaces_and_a_crash_keeps_the_old(tmp_path):
    lake = Lake(str(tmp_path))
    target = lake.path("ctr_labels", ds="2026-10-01")
    write_parquet_atomic(pd.DataFrame({"v": [1, 2]}), target)
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            os.makedirs(tmp)
            pd.DataFrame({"v": [9]}).to_parquet(f"{tmp}/part.parquet")
            raise RuntimeError("worker died")
    assert read_parquet(target)["v"].tolist() == [1, 2]
    assert [p for p in os.listdir(lake.path("ctr_labels")) if p.startswith("_")] == []
    write_parquet_atomic(pd.DataFrame({"v": [3]}), target)
    assert read_parquet(target)["v"].tolist() == [3]


def test_readers_never_see_a_partial_file(tmp_path):
    """A reader polling during many rewrites sees complete content every time."""
    target = tmp_path / "x.parquet"
    write_parquet_file_atomic(pd.DataFrame({"v": list(range(1000))}), str(target))
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                n = len(pd.read_parquet(target))
                if n not in (1000, 2000):
                    errors.append(n)
            except Exception as exc:  # a torn file would fail to parse
                errors.append(repr(exc))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(30):
        write_parquet_file_atomic(pd.DataFrame({"v": list(range(1000 * (1 + i % 2)))}), str(target))
    stop.set()
    t.join()
    assert errors == []


def test_pointers_and_json(tmp_path):
    lake = Lake(str(tmp_path))
    p = lake.path("serving", "CURRENT")
    assert lake.read_pointer(p) is None
    lake.write_pointer(p, "v1")
    lake.write_pointer(p, "v2")
    assert lake.read_pointer(p) == "v2"
    path = lake.write_run_stats("2026-10-01", "ctr_labels", {"pairs": 5})
    stats = json.loads(open(path).read())
    assert stats["pairs"] == 5 and stats["stage"] == "ctr_labels" and stats["ds"] == "2026-10-01"
    with pytest.raises(DataError, match="missing"):
        lake.read_json(lake.path("runs", "nope.json"))


def test_read_parquet_checks_the_contract(tmp_path):
    lake = Lake(str(tmp_path))
    target = lake.path("ctr_daily", ds="2026-10-01")
    write_parquet_atomic(pd.DataFrame({"item_id": [1], "keyphrase_id": [2], "impressions": [3]}), target)
    with pytest.raises(SchemaError, match="clicks"):
        read_parquet(target, contract="ctr_daily")
    with pytest.raises(DataError, match="missing dataset"):
        read_parquet(lake.path("ctr_daily", ds="2026-10-09"))


def test_dir_fingerprint_sees_data_files_only_and_survives_the_atomic_rename(tmp_path):
    from pathlib import Path

    from keyphrase_pipeline.core.lake import dir_fingerprint

    target = str(tmp_path / "ctr_daily" / "ds=2026-10-05")
    assert dir_fingerprint(target) is None
    with atomic_dir(target) as tmp:
        os.makedirs(tmp)
        (Path(tmp) / "part-00000-aaaa.parquet").write_bytes(b"x" * 10)
        inside = dir_fingerprint(tmp)
    assert dir_fingerprint(target) == inside  # the rename keeps it: what the stats inside recorded stays true
    (Path(target) / "_stats.json").write_text("{}")
    (Path(target) / ".part-00000-aaaa.parquet.crc").write_text("c")
    assert dir_fingerprint(target) == inside  # markers, stats and checksum files do not count
    (Path(target) / "part-00000-aaaa.parquet").write_bytes(b"x" * 11)
    assert dir_fingerprint(target) != inside  # another size
    (Path(target) / "part-00000-aaaa.parquet").write_bytes(b"x" * 10)
    os.rename(Path(target) / "part-00000-aaaa.parquet", Path(target) / "part-00000-bbbb.parquet")
    assert dir_fingerprint(target) != inside  # another write (Spark names files with a per-write UUID)


def test_rows_where_streams_matches_and_skips_row_groups_by_statistics(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.lake import rows_where

    for f in range(3):  # ids sorted within a file: row groups of 100 with disjoint ranges
        ids = list(range(f * 1000, f * 1000 + 1000))
        pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "title": [f"t{i}" for i in ids]}),
                       tmp_path / f"part-{f}.parquet", row_group_size=100)
    dataset = pads.dataset(str(tmp_path), format="parquet")
    got = rows_where(dataset, "item_id", [5, 1999, 2500, 77_777], ["item_id", "title"])
    assert got.column("item_id").to_pylist() == [5, 1999, 2500]
    assert got.column("title").to_pylist() == ["t5", "t1999", "t2500"]
    assert rows_where(dataset, "item_id", [5, 6, 7], limit=2).num_rows == 2
    assert rows_where(dataset, "item_id", []).num_rows == 0
    reads = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        reads.append((kw.get("row_groups"), tuple(kw.get("columns") or ())))
        return real(self, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert rows_where(dataset, "item_id", [2500], ["title"]).column("title").to_pylist() == ["t2500"]
    # the id column, then the row group's columns, of the one row group that holds 2500 (the others skipped by
    # their statistics, unread)
    assert reads == [([5], ("item_id",)), ([5], ("title", "item_id"))]
    reads.clear()
    assert rows_where(dataset, "item_id", [2500, 2550], ["title"], batch_rows=7).num_rows == 2  # batches of 7 rows


def test_sample_rows_is_seeded_uniform_and_reads_only_holding_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.lake import sample_rows

    pq.write_table(pa.table({"item_id": pa.array(range(10_000), pa.int64())}), tmp_path / "a.parquet", row_group_size=500)
    pq.write_table(pa.table({"item_id": pa.array(range(10_000, 12_000), pa.int64())}), tmp_path / "b.parquet")
    dataset = pads.dataset(str(tmp_path), format="parquet")
    a = sample_rows(dataset, 50, seed=3).column("item_id").to_pylist()
    assert a == sample_rows(dataset, 50, seed=3).column("item_id").to_pylist()  # seeded
    assert a == sample_rows(dataset, 50, seed=3, batch_rows=7).column("item_id").to_pylist()  # the same, 7 rows a read
    assert len(set(a)) == 50 and a == sorted(a) and a != sample_rows(dataset, 50, seed=4).column("item_id").to_pylist()
    assert any(i >= 10_000 for i in sample_rows(dataset, 3000, seed=0).column("item_id").to_pylist())  # both files
    assert sample_rows(dataset, 10**6, seed=0).num_rows == 12_000


def test_bounded_readers_take_files_of_mixed_integer_widths_and_odd_values(tmp_path):
    """A catalog written by two tools (int32 ids in one file, int64 in another): read in the contract's int64 by
    rows_where and sample_rows; None and ids the column cannot hold are dropped, not raised on."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.lake import _draw_positions, parquet_dataset, rows_where, sample_rows

    def cat(ids, typ):
        n = len(ids)
        return pa.table({"item_id": pa.array(ids, typ), "title": [f"t{i}" for i in ids], "category": ["c"] * n,
                         "updated_at": pa.array([0] * n, pa.timestamp("us")), "active": [True] * n})

    pq.write_table(cat([1, 2, 3], pa.int32()), tmp_path / "a.parquet")
    pq.write_table(cat([4, 2 ** 40], pa.int64()), tmp_path / "b.parquet")
    ds = parquet_dataset(str(tmp_path), contract="catalog")
    got = rows_where(ds, "item_id", [2, None, 2 ** 40, 2 ** 70], ["item_id", "title"])
    assert got.schema.field("item_id").type == pa.int64() and got.column("item_id").to_pylist() == [2, 2 ** 40]
    assert sorted(sample_rows(ds, 5, seed=1, columns=["item_id"]).column("item_id").to_pylist()) == [1, 2, 3, 4, 2 ** 40]
    # positions: distinct, sorted, in range, seeded; sparse draws never build the whole range
    p = _draw_positions(10 ** 12, 1000, seed=5)
    assert len(np.unique(p)) == 1000 and list(p) == sorted(p) and p.max() < 10 ** 12
    assert list(p) == list(_draw_positions(10 ** 12, 1000, seed=5))
    assert list(_draw_positions(10, 10, seed=0)) == list(range(10)) and len(set(_draw_positions(10, 7, seed=0))) == 7
