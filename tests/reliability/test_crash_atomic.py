"""A crash INSIDE the atomic write of each stage (the data is fully written in the hidden temp directory,
the process dies before the rename): readers still see the previous version, no temp directory is left,
and the rerun completes.

* the serving chain for a second day — embed items, build the index, recommend, publish — crashed at
  each stage in turn, the live bundle keeping to answer from day 1 throughout;
* the 30-day CTR labels of the tiny world, whose previous partition stays readable by the next stage.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd
import pytest
from serve_helpers import DS, catalog, ready, serve_model, serve_ready, write_inputs  # noqa: F401

import keyphrase_pipeline.core.lake
from keyphrase_pipeline.artifacts import serving
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.stages import embed, index, publish, recommend

pytestmark = pytest.mark.spark
DAY2 = "2026-10-06"


@contextlib.contextmanager
def crash_inside_commit(monkeypatch, fragment: str):
    """Make ``keyphrase_pipeline.core.lake.commit_dir`` die for targets containing ``fragment``, after the data is written."""
    real = keyphrase_pipeline.core.lake.commit_dir
    hits = []

    def boom(tmp, target):
        if fragment in target:
            hits.append(target)
            files = [f for _, _, fs in os.walk(keyphrase_pipeline.core.lake.local_path(tmp)) for f in fs]
            assert files, f"nothing written in {tmp} before the commit"
            raise RuntimeError(f"injected crash before renaming into {target}")
        real(tmp, target)

    monkeypatch.setattr(keyphrase_pipeline.core.lake, "commit_dir", boom)
    try:
        yield hits
    finally:
        monkeypatch.setattr(keyphrase_pipeline.core.lake, "commit_dir", real)


def leftovers(root: str) -> list[str]:
    return [os.path.join(d, n) for d, dirs, _ in os.walk(root) for n in dirs if n.startswith(("_tmp-", "_trash-"))]


def frame(path: str) -> pd.DataFrame:
    df = read_parquet(path)
    cols = [c for c in ("id", "item_id", "keyphrase_id", "rank") if c in df]
    return df.sort_values(cols).reset_index(drop=True)


def test_serving_chain_crash_at_each_atomic_write_then_rerun(ready, spark, monkeypatch):
    s = ready
    lake = Lake.from_settings(s)
    v1 = publish.run(s, DS)["version"]
    live_before = serving.load_current(s, cached=False).search(1, k=5)
    emb_path = layout.embeddings_dir(s, "items", "v1")
    emb_before = frame(emb_path)

    cat = catalog()
    cat.loc[cat.item_id <= 5, "title"] = [f"vintage lego mixer boots {i}" for i in range(5)]
    cat["updated_at"] = pd.Timestamp(DAY2)
    write_inputs(s, ds=DAY2, cat=cat)

    stages = [
        ("embed items", "/embeddings/items/", lambda: embed.run(s, DAY2, "items", spark=spark)),
        ("index", f"/serving/builds/ds={DAY2}", lambda: index.run(s, DAY2)),
        ("recommend", f"/recommendations/ds={DAY2}", lambda: recommend.run(s, DAY2)),
        ("publish", "/serving/versions/", lambda: publish.run(s, DAY2)),
    ]
    for name, fragment, call in stages:
        with crash_inside_commit(monkeypatch, fragment) as hits:
            with pytest.raises(RuntimeError, match="injected crash"):
                call()
        assert hits, f"{name}: the crash was not reached"
        # readers: the live version and its answers are unchanged, nothing half-written is visible
        assert serving.current_version(s) == v1, name
        assert serving.load_current(s, cached=False).search(1, k=5) == live_before, name
        assert leftovers(lake.root) == [], name
        if name == "embed items":
            pd.testing.assert_frame_equal(frame(emb_path), emb_before)
        if name == "index":
            assert not lake.exists(layout.index_build_dir(s, DAY2))
        if name == "recommend":
            assert not lake.exists(lake.path("recommendations", ds=DAY2))
        if name == "publish":
            assert serving.published_versions(s) == [v1]
        call()  # the rerun completes

    v2 = serving.current_version(s)
    assert v2 != v1 and serving.read_manifest(s, v2)["ds"] == DAY2
    emb_after = frame(emb_path)
    assert len(emb_after) == len(emb_before)
    retitled = emb_after["id"] <= 5
    assert set(emb_after.loc[retitled, "embedded_ds"]) == {DAY2} and set(emb_after.loc[~retitled, "embedded_ds"]) == {DS}
    assert (emb_after.loc[retitled, "text_hash"].to_numpy() != emb_before.loc[retitled, "text_hash"].to_numpy()).all()
    serving.load_current(s, cached=False)  # checksums verify


def test_ctr_labels_crash_keeps_previous_partition_for_the_next_stage(pairs_world, spark, monkeypatch):
    from reliability_helpers import DS as WDS

    from keyphrase_pipeline.stages import ctr_labels

    s = pairs_world
    lake = Lake.from_settings(s)
    path = lake.path("ctr_labels", ds=WDS)
    before = frame(path)
    daily_before = frame(lake.path("ctr_daily", ds=WDS))
    with crash_inside_commit(monkeypatch, f"/ctr_labels/ds={WDS}") as hits:
        with pytest.raises(RuntimeError, match="injected crash"):
            ctr_labels.run(s, WDS, spark=spark)
    assert hits
    pd.testing.assert_frame_equal(frame(path), before)
    assert leftovers(lake.root) == []
    # the next stage reads the previous labels through Spark, contract checked
    assert ctr_labels.read_ctr_labels(spark, s, WDS).count() == len(before)
    ctr_labels.run(s, WDS, spark=spark)
    pd.testing.assert_frame_equal(frame(path), before)  # same input -> same labels
    pd.testing.assert_frame_equal(frame(lake.path("ctr_daily", ds=WDS)), daily_before)
    assert Path(path).is_dir()
