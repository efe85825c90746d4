"""kp publish / kp rollback: versioned bundles, atomic CURRENT switch, checksums, pruning, crash safety."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from serve_helpers import DS, ready, serve_model, serve_ready  # noqa: F401

from keyphrase_pipeline.artifacts import serving
from keyphrase_pipeline.artifacts.serving import current_version, published_versions, read_manifest, verify_files
from keyphrase_pipeline.commands import rollback
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError, GateError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.core.layout import onnx_dir, serving_version_dir
from keyphrase_pipeline.stages import publish

pytestmark = pytest.mark.spark


def test_publish_makes_a_complete_current_version(ready):
    assert current_version(ready) is None and serving.current_recommendations_path(ready) is None
    stats = publish.run(ready, DS)
    vid = stats["version"]
    assert current_version(ready) == vid and stats["previous"] is None
    root = Path(serving_version_dir(ready, vid))
    m = read_manifest(ready, vid)
    assert m["model_version"] == "v1" and m["ds"] == DS and m["ann_recall_at_k"] == 1.0 and m["dim"] == 16
    assert m["counts"] == {"keyphrases": 60, "items": 36, "recommendations": 36 * 20}
    verify_files(root, m["checksums"])
    assert {"index.faiss", "keyphrases.parquet", "onnx/item/model.onnx", "onnx/keyphrase/model.onnx",
            "recommendations/part-00000.parquet"} <= set(m["checksums"])
    # the path the pair-selection stage reads
    assert serving.current_recommendations_path(ready) == f"{serving_version_dir(ready, vid)}/recommendations"
    recs = read_parquet(serving.current_recommendations_path(ready), contract="recommendations")
    assert len(recs) == 720


def test_serving_looks_items_up_in_new_and_pre_layout_bundles(ready):
    """A bundle laid out in item buckets is read a row group per lookup; one published before the layout (no
    ``recommendations_layout``: a rollback target from an older release) is read whole once, not per request."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vid = publish.run(ready, DS)["version"]
    root = Path(serving_version_dir(ready, vid))
    manifest = read_manifest(ready, vid)
    assert manifest["recommendations_layout"]["buckets"] == 1
    recs = read_parquet(f"{root}/recommendations", contract="recommendations")
    item = int(recs["item_id"].iloc[0])
    want = recs[recs["item_id"] == item].sort_values("rank")["keyphrase_id"].tolist()
    bundle = serving.ServingBundle(root, manifest, verify=False)
    stats: dict = {}
    assert bundle.recommendations_of(item, stats)["keyphrase_id"].tolist() == want
    assert stats["files_opened"] == 1 and stats["row_groups_read"] == 1
    assert [r["keyphrase_id"] for r in bundle.search(item, k=5)] == want[:5]
    # the same rows as an old release wrote them: unsorted, no layout in the manifest
    for f in (root / "recommendations").glob("*.parquet"):
        f.unlink()
    shuffled = pa.Table.from_pandas(recs.sample(frac=1.0, random_state=0), preserve_index=False)
    pq.write_table(shuffled, root / "recommendations" / "part-00000.parquet")
    old = serving.ServingBundle(root, {k: v for k, v in manifest.items() if k != "recommendations_layout"}, verify=False)
    stats = {}
    assert old.recommendations_of(item, stats)["keyphrase_id"].tolist() == want and stats["legacy_in_memory"]
    assert old.recommendations_of(987_654_321).empty and [r["keyphrase_id"] for r in old.search(item, k=5)] == want[:5]


def test_rollback_and_pruning(ready):
    s = ready.with_overrides(**{"serve.keep_versions": 2})
    with pytest.raises(DataError, match="nothing is published"):
        rollback.run(s)
    v1 = publish.run(s, DS)["version"]
    with pytest.raises(DataError, match="no earlier"):
        rollback.run(s)
    v2 = publish.run(s, DS)["version"]
    assert read_manifest(s, v2)["previous"] == v1
    out = rollback.run(s)
    assert out == {"from": v2, "to": v1, "model_version": "v1", "ds": DS, "marked_bad": v2} and current_version(s) == v1
    with pytest.raises(DataError, match="marked bad"):
        rollback.run(s, to=v2)
    assert rollback.run(s, to=v2, allow_bad=True) == {"from": v1, "to": v2, "model_version": "v1", "ds": DS,
                                                      "marked_bad": None}  # a roll forward marks nothing
    assert serving.bad_versions(s) == {}
    with pytest.raises(DataError, match="unknown published version"):
        rollback.run(s, to="nope")
    v3 = publish.run(s, DS)
    assert v3["pruned"] == [v1] and published_versions(s) == [v2, v3["version"]]


def test_readers_always_see_a_complete_version(ready):
    s = ready.with_overrides(**{"serve.keep_versions": 10})
    publish.run(s, DS)
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                b = serving.load_current(s, cached=False)  # verifies every checksum in the manifest
                assert b.manifest["version"] == b.root.name
                assert b.index.ntotal == b.manifest["counts"]["keyphrases"]
                seen.append(b.version)
            except Exception as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    published = [publish.run(s, DS)["version"] for _ in range(4)]
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) >= 2 and set(seen) <= set(published_versions(s))
    assert current_version(s) == published[-1]


def test_crash_mid_build_leaves_current_intact(ready, monkeypatch):
    v1 = publish.run(ready, DS)["version"]
    before = sorted(p.name for p in Path(layout.serving_versions_root(ready)).iterdir())

    def boom(root, manifest):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(publish, "_write_manifest", boom)
    with pytest.raises(RuntimeError, match="injected"):
        publish.run(ready, DS)
    assert current_version(ready) == v1
    assert sorted(p.name for p in Path(layout.serving_versions_root(ready)).iterdir()) == before  # no temp leftovers
    assert serving.load_current(ready, cached=False).version == v1


@pytest.mark.parametrize("legacy", [False, True], ids=["ann_recall_at_k", "legacy-recall_at_k"])
def test_recall_gate_rechecked_at_publish(ready, legacy):
    meta_path = Path(layout.index_build_dir(ready, DS)) / "index_meta.json"
    meta = json.loads(meta_path.read_text())
    if legacy:  # a build written before the key was renamed
        meta = {**{k: v for k, v in meta.items() if k != "ann_recall_at_k"}, "recall_at_k": 0.5}
    meta_path.write_text(json.dumps({**meta, **({} if legacy else {"ann_recall_at_k": 0.5})}))
    with pytest.raises(GateError, match="ANN recall"):
        publish.run(ready, DS)
    assert current_version(ready) is None and published_versions(ready) == []


def test_corrupted_onnx_refused(ready):
    f = Path(onnx_dir(ready, "v1")) / "item" / "model.onnx"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="checksum of item/model.onnx"):
        publish.run(ready, DS)
    assert current_version(ready) is None


def test_corrupted_index_detected_on_load_and_rollback(ready):
    v1 = publish.run(ready, DS)["version"]
    v2 = publish.run(ready, DS)["version"]
    f = Path(serving_version_dir(ready, v1)) / "index.faiss"
    f.write_bytes(b"garbage" + f.read_bytes()[7:])
    with pytest.raises(DataError, match="checksum of index.faiss"):
        rollback.run(ready)
    assert current_version(ready) == v2
    Lake.from_settings(ready).write_pointer(layout.current_pointer(ready), v1)
    with pytest.raises(DataError, match="corrupted bundle"):
        serving.load_current(ready, cached=False)


def test_missing_recommendations(ready):
    import shutil

    shutil.rmtree(Lake.from_settings(ready).path("recommendations", ds=DS))
    with pytest.raises(DataError, match="missing dataset"):
        publish.run(ready, DS)
    assert current_version(ready) is None


def _write_recs(folder: Path, parts: list[list[int]]) -> None:
    """One parquet file per list of item ids (each id one row, rank 1) in ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.stages.recommend import _out_schema

    folder.mkdir(parents=True)
    for i, ids in enumerate(parts):
        n = len(ids)
        table = pa.table({"item_id": pa.array(ids, pa.int64()), "rank": pa.array([1] * n, pa.int32()),
                          "keyphrase_id": pa.array(range(n), pa.int64()), "keyphrase": [f"k{j}" for j in range(n)],
                          "score": pa.array([0.5] * n, pa.float32()), "expected_ctr": pa.nulls(n, pa.float32()),
                          "ctr_model_version": pa.nulls(n, pa.string()), "rerank_score": pa.nulls(n, pa.float32()),
                     "rerank_cross_version": pa.nulls(n, pa.string())},
                         schema=_out_schema())
        pq.write_table(table, folder / layout.part_file_name(i), row_group_size=7)


def test_copy_recommendations_writes_sorted_buckets_and_counts_items_exactly(tmp_path):
    import pyarrow.parquet as pq

    from keyphrase_pipeline.artifacts import item_lookup

    # an item spread over two input files and over batches, ids out of order and repeated
    parts = [[5, 5, 3, 9, 9, 9, 1] * 3, [9, 2, 2, 8], list(range(100, 160))]
    _write_recs(tmp_path / "in", parts)
    dataset = publish._recommendations_dataset(str(tmp_path / "in"))
    out = tmp_path / "bundle" / "recommendations"
    out.mkdir(parents=True)
    counts = publish.copy_recommendations(dataset, str(out), bucket_rows=20, row_group_rows=8, batch_rows=4)
    rows = sum(len(p) for p in parts)
    assert counts["rows"] == rows and counts["items"] == len({i for p in parts for i in p})
    assert counts["buckets"] == counts["files"] == -(-rows // 20) == 5
    assert counts["layout"] == item_lookup.layout_record(5, 8)
    assert sorted(f.name for f in out.iterdir()) == [f"part-0000{b}.parquet" for b in range(5)]
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["recommendations"]  # the spill folder is gone
    copied = []
    for b in range(5):
        f = pq.ParquetFile(out / f"part-0000{b}.parquet")
        t = f.read().to_pandas()
        assert list(t["item_id"]) == sorted(t["item_id"])  # sorted by item: row groups do not overlap
        assert set(item_lookup.bucket_of(t["item_id"].to_numpy(), 5)) <= {b}
        assert all(f.metadata.row_group(i).num_rows <= 8 for i in range(f.metadata.num_row_groups))
        copied += t["item_id"].tolist()
    assert sorted(copied) == sorted(i for p in parts for i in p)  # every row kept


def test_copy_recommendations_casts_every_file_to_the_contract(tmp_path):
    """Files written by different writers: int32 ids and ranks without the CTR columns first, int64 ids past int32
    next; all land in the contract's types, the missing columns as nulls. A null id is refused naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"item_id": pa.array([1, 1, 2], pa.int32()), "rank": pa.array([2, 1, 1], pa.int32()),
                             "keyphrase_id": pa.array([7, 8, 9], pa.int32()), "keyphrase": ["a", "b", "c"],
                             "score": pa.array([0.1, 0.2, 0.3], pa.float32())}), src / "part-00000.parquet")
    pq.write_table(pa.table({"item_id": pa.array([2 ** 40], pa.int64()), "rank": pa.array([1], pa.int32()),
                             "keyphrase_id": pa.array([7], pa.int64()), "keyphrase": ["a"],
                             "score": pa.array([0.5], pa.float32()), "expected_ctr": pa.array([0.1], pa.float32()),
                             "ctr_model_version": ["c1"]}), src / "part-00001.parquet")
    out = tmp_path / "out"
    out.mkdir()
    counts = publish.copy_recommendations(publish.contract_dataset(str(src), "recommendations"), str(out), 10, 4)
    assert counts["rows"] == 4 and counts["items"] == 3
    got = pq.read_table(out / "part-00000.parquet")
    assert got.schema.field("item_id").type == pa.int64() and got.column("item_id").to_pylist() == [1, 1, 2, 2 ** 40]
    assert got.column("rank").to_pylist()[:2] == [1, 2] and got.column("ctr_model_version").to_pylist() == [None] * 3 + ["c1"]


def test_publish_refuses_empty_or_broken_recommendations(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_recs(tmp_path / "empty", [[]])
    with pytest.raises(DataError, match="no recommendations in"):
        publish._recommendations_dataset(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"item_id": ["a"]}), tmp_path / "bad" / "part-00000.parquet")
    with pytest.raises(DataError, match="recommendations"):
        publish._recommendations_dataset(str(tmp_path / "bad"))
    (tmp_path / "nulls").mkdir()
    from keyphrase_pipeline.stages.recommend import _out_schema

    pq.write_table(pa.table({"item_id": pa.array([1, None], pa.int64()), "rank": pa.array([1, 1], pa.int32()),
                             "keyphrase_id": pa.array([1, 2], pa.int64()), "keyphrase": ["a", "b"],
                             "score": pa.array([0.1, 0.2], pa.float32()), "expected_ctr": pa.nulls(2, pa.float32()),
                             "ctr_model_version": pa.nulls(2, pa.string()), "rerank_score": pa.nulls(2, pa.float32()),
                     "rerank_cross_version": pa.nulls(2, pa.string())},
                            schema=_out_schema()),
                   tmp_path / "nulls" / "part-00000.parquet")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match="item_id has 1 null"):
        publish.copy_recommendations(publish._recommendations_dataset(str(tmp_path / "nulls")), str(out), 100, 10)


def test_a_hybrid_scored_day_publishes_its_hybrid_and_the_live_search_re_scores_the_same_way(ready):
    """When ``kp recommend`` re-scored the lists with the student's hybrid score (artifacts.hybrid_rescore), the
    manifest records it (``hybrid``: depth and weights) and the serving reader's live text search re-scores its
    candidates the same way, so a search by an item's text gives its published list; a day in cosine order records
    none."""
    import numpy as np
    from serve_helpers import catalog

    from keyphrase_pipeline.models.bi_encoder import read_marker, write_marker
    from keyphrase_pipeline.models.lexical_match import HybridScore
    from keyphrase_pipeline.models.text import item_text
    from keyphrase_pipeline.stages import export, recommend

    plain = read_manifest(ready, publish.run(ready, DS)["version"])
    assert plain["hybrid"] is None
    hybrid = HybridScore(1.0, (0.6, 0.0, -0.3))
    model_dir = Path(Lake.from_settings(ready).path("registry", "students", "v1", "model"))
    write_marker(model_dir, **{"kind": "bi", **read_marker(model_dir), "hybrid": hybrid.as_dict()})
    s = ready.with_overrides(**{"serve.hybrid_depth": 30})
    export.run(s, DS)  # the tiny model had no kp_model.json: as kind "bi" its item tower serves at its own length
    assert recommend.run(s, DS)["hybrid_depth"] == 30
    vid = publish.run(s, DS)["version"]
    m = read_manifest(s, vid)
    assert m["hybrid"] == {"depth": 30, "score": hybrid.as_dict(), "student": "v1"}
    bundle = serving.ServingBundle(Path(serving_version_dir(s, vid)), m, verify=False)
    recs = read_parquet(serving.current_recommendations_path(s), contract="recommendations")
    cat = catalog().set_index("item_id")
    differs = 0
    for item in (1, 2, 5, 14):
        published = recs[recs["item_id"] == item].sort_values("rank")
        live = bundle.search(item_text(cat.loc[item, "title"], cat.loc[item, "category"]), k=10)
        np.testing.assert_allclose([r["score"] for r in live], published["score"].head(10), atol=1e-4)
        cosine = serving.ServingBundle(Path(serving_version_dir(s, vid)), {**m, "hybrid": None}, verify=False)
        differs += [r["keyphrase_id"] for r in cosine.search(item_text(cat.loc[item, "title"],
                                                                        cat.loc[item, "category"]), k=10)] != \
            [r["keyphrase_id"] for r in live]
    assert differs > 0  # the hybrid re-ordered some of these lists
    # a manifest whose hybrid cannot be read: the version still serves (lookups by id, live search by cosine)
    broken = serving.ServingBundle(Path(serving_version_dir(s, vid)), {**m, "hybrid": {"depth": 30, "score": "x"}},
                                   verify=False)
    assert broken.hybrid is None and broken.search(2, k=3) == bundle.search(2, k=3)
    assert [r["keyphrase_id"] for r in broken.search("red mug", k=5)] == \
        [r["keyphrase_id"] for r in cosine.search("red mug", k=5)]
