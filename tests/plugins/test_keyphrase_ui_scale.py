"""The Keyphrases page's item view on a 300,000-item lake reads a bounded amount (issue 32): the published
recommendations through the bundle's item buckets (one footer, one row group), the catalog row a batch at a time,
nothing loaded whole."""

from __future__ import annotations

import importlib
import json
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyphrase_pipeline.artifacts import item_lookup
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
from keyphrase_pipeline.core.settings import get_settings
from keyphrase_pipeline.stages.recommend import _out_schema

N_ITEMS, TOP_K, DS, VID = 300_000, 20, "2026-06-01", "2026-06-01.20260601T000000000000"


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory):
    """A lake with a 300,000-item catalog and a published bundle of 6M recommendation rows (item buckets, the
    defaults' 2M-row buckets and 8,192-row row groups); a 64-d exact index of 50 keyphrases."""
    import faiss

    from keyphrase_pipeline.stages.publish import _write_manifest

    root = tmp_path_factory.mktemp("ui_scale") / "lake"
    mp = pytest.MonkeyPatch()
    mp.setenv("KP_LAKE_ROOT", str(root))
    mp.setenv("KP_TRUTH_PROVIDER", "")
    get_settings.cache_clear()
    settings = get_settings()
    lake = Lake.from_settings(settings)
    ids = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    rng = np.random.default_rng(0)
    cat = pd.DataFrame({"item_id": rng.permutation(ids), "title": [f"thing {i}" for i in range(N_ITEMS)],
                        "category": "toys", "updated_at": pd.Timestamp("2026-05-31"), "active": True})
    write_parquet_atomic(cat, lake.path("catalog", ds=DS))
    bundle = tmp_path_factory.mktemp("bundle_build")
    n = N_ITEMS * TOP_K
    recs = pa.table({"item_id": np.repeat(rng.permutation(ids), TOP_K),
                     "rank": np.tile(np.arange(1, TOP_K + 1, dtype=np.int32), N_ITEMS),
                     "keyphrase_id": rng.integers(0, 50, n).astype(np.int64),
                     "keyphrase": pa.array([f"k{i % 50}" for i in range(n)]),
                     "score": rng.random(n, dtype=np.float32), "expected_ctr": pa.nulls(n, pa.float32()),
                     "ctr_model_version": pa.nulls(n, pa.string()), "rerank_score": pa.nulls(n, pa.float32()),
                     "rerank_cross_version": pa.nulls(n, pa.string())},
                    schema=_out_schema())
    (bundle / "recommendations").mkdir()
    s = settings.serve
    buckets = item_lookup.buckets_for(n, s.publish_bucket_rows)
    counts = item_lookup.write_buckets(recs.to_batches(max_chunksize=200_000), recs.schema, bundle / "recommendations",
                                       buckets, s.lookup_row_group_rows, spill_dir=bundle / "spill")
    del recs
    vecs = rng.normal(size=(50, 64)).astype(np.float32)
    index = faiss.IndexFlatIP(64)
    index.add(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    faiss.write_index(index, str(bundle / layout.INDEX_FILE))
    pd.DataFrame({"keyphrase_id": np.arange(50, dtype=np.int64), "keyphrase": [f"k{i}" for i in range(50)]}).to_parquet(
        bundle / layout.INDEX_IDMAP, index=False)
    (bundle / layout.INDEX_META).write_text(json.dumps({"model_version": "v1", "dim": 64}))
    manifest = {"version": VID, "ds": DS, "model_version": "v1", "dim": 64, "top_k": TOP_K,
                "recommendations_layout": item_lookup.layout_record(buckets, s.lookup_row_group_rows),
                "counts": {"items": counts["items"], "recommendations": counts["rows"], "keyphrases": 50}}
    _write_manifest(bundle, manifest)
    target = layout.serving_version_dir(settings, VID)
    import shutil

    shutil.copytree(bundle, target)
    lake.write_pointer(layout.current_pointer(settings), VID)
    yield {"settings": settings, "buckets": buckets, "target": target, "catalog": lake.path("catalog", ds=DS)}
    mp.undo()
    get_settings.cache_clear()


def test_item_view_on_a_300k_item_lake_reads_a_bounded_amount(big_lake, monkeypatch):
    ui = importlib.import_module("keyphrase_ui.app")
    monkeypatch.setenv("KP_LAKE_ROOT", str(Lake.from_settings(big_lake["settings"]).root))
    monkeypatch.setenv("KP_TRUTH_PROVIDER", "")
    get_settings.cache_clear()
    lookups, batches, whole = [], [], []
    real_lookup, real_iter = item_lookup.lookup, pq.ParquetFile.iter_batches

    def spy_lookup(*a, stats=None, **kw):
        st: dict = {}
        out = real_lookup(*a, stats=st, **kw)
        lookups.append(st)
        return out

    def spy_iter(self, *a, **kw):
        batches.append((kw.get("row_groups"), tuple(kw.get("columns") or ())))
        return real_iter(self, *a, **kw)

    def no_whole(name, real):
        def read(path, *a, **kw):
            if "catalog" in str(path) or "/recommendations" in str(path):  # the id map (keyphrases) is read whole
                whole.append((name, str(path)))
            return real(path, *a, **kw)
        return read

    monkeypatch.setattr(item_lookup, "lookup", spy_lookup)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy_iter)
    monkeypatch.setattr(pd, "read_parquet", no_whole("pandas.read_parquet", pd.read_parquet))
    monkeypatch.setattr(pq, "read_table", no_whole("pyarrow.parquet.read_table", pq.read_table))
    try:
        ui.item_view(2, 5)  # warm: the bundle loaded and verified, modules imported
        with open("/proc/self/io") as f:
            before = int(next(x for x in f if x.startswith("rchar:")).split()[1])
        for item in (1, 150_000, N_ITEMS):
            lookups.clear()
            batches.clear()
            view = ui.item_view(item, 5)
            assert view["item"]["item_id"] == item and view["mode"] == "published recommendations"
            assert [r["rank"] for r in view["results"]] == [1, 2, 3, 4, 5]
            # the recommendations: one bucket file, its footer and one row group (or two at a boundary)
            assert len(lookups) == 1 and lookups[0]["files_opened"] == 1 and lookups[0]["row_groups_read"] <= 2
            f = f"{big_lake['target']}/recommendations/part-{int(item_lookup.bucket_of(item, big_lake['buckets'])[0]):05d}.parquet"
            meta = pq.ParquetFile(f).metadata
            largest_rg = max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            assert lookups[0]["bytes_read"] <= meta.serialized_size + 2 * largest_rg + 64 * 1024
            # the catalog: the id column a batch at a time, and the other columns only of the row group holding it
            full = [b for b in batches if set(b[1]) >= {"title", "category"}]
            assert len(full) == 1 and all(b[1] == ("item_id",) for b in batches if b not in full)
        assert whole == []  # nothing read whole: neither the catalog nor the published recommendations
        # counted by the kernel (not by the code under test): three item views read under a tenth of the bundle
        with open("/proc/self/io") as f:
            read = int(next(x for x in f if x.startswith("rchar:")).split()[1]) - before
        bundle = sum(p.stat().st_size for p in (pathlib.Path(big_lake["target"]) / "recommendations").iterdir())
        catalog = sum(p.stat().st_size for p in pathlib.Path(big_lake["catalog"]).rglob("*.parquet"))
        # each view may read the catalog's id column and the row group holding the item (twice the catalog: it is written
        # as one row group: the writer's choice), never the bundle: a whole-bundle read alone would be 3 x bundle
        assert read < 6 * catalog + bundle / 10 < bundle, (read, catalog, bundle)
    finally:
        get_settings.cache_clear()
