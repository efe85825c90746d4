"""kp embed: Spark + ONNX Runtime, incremental by text hash, complete snapshots per model version."""

from __future__ import annotations

import numpy as np
import pytest
from serve_helpers import DS, catalog, ready, register, serve_model, serve_ready, serve_world, write_inputs  # noqa: F401

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.core.layout import embeddings_dir, onnx_dir
from keyphrase_pipeline.models.onnx_tower import OnnxTower
from keyphrase_pipeline.models.text import item_text
from keyphrase_pipeline.stages import embed, export

pytestmark = pytest.mark.spark
DS2 = "2026-10-06"


def _emb(settings, what="items", version="v1"):
    df = read_parquet(embeddings_dir(settings, what, version), contract="embeddings")
    return df.set_index("id")


def test_first_run_embeds_active_items_with_the_tower(ready):
    df = _emb(ready)
    cat = catalog()
    active = cat[cat["active"]]
    assert sorted(df.index) == sorted(active["item_id"])  # inactive items are not embedded
    assert set(df["model_version"]) == {"v1"} and set(df["embedded_ds"]) == {DS}
    vecs = np.stack(df.loc[active["item_id"], "embedding"].to_numpy())
    assert vecs.shape == (36, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    want = OnnxTower(f"{onnx_dir(ready, 'v1')}/item").embed([item_text(t, c) for t, c in zip(active["title"], active["category"])])
    np.testing.assert_allclose(vecs, want, atol=1e-5)
    kps = _emb(ready, "keyphrases")
    assert len(kps) == 60


def test_incremental_embeds_only_changed_items(ready, spark):
    before = _emb(ready)
    cat = catalog()
    changed = [1, 2, 3]
    cat.loc[cat["item_id"].isin(changed), "title"] = ["brand new title one", "brand new title two", "three"]
    write_inputs(ready, DS2, cat=cat)
    stats = embed.run(ready, DS2, "items", spark=spark)
    assert stats["rows_total"] == 36 and stats["embedded_now"] == 3 and stats["reused"] == 33
    assert stats["onnx_providers"] == ["CPUExecutionProvider"]  # where it ran (models.devices): here, no GPU
    assert stats["executor_providers"] == {"CPUExecutionProvider": 3}  # what the executors' sessions held, by rows
    after = _emb(ready)
    assert sorted(after.index) == sorted(before.index)
    same = [i for i in after.index if i not in changed]
    np.testing.assert_array_equal(np.stack(after.loc[same, "embedding"]), np.stack(before.loc[same, "embedding"]))
    assert set(after.loc[changed, "embedded_ds"]) == {DS2} and set(after.loc[same, "embedded_ds"]) == {DS}
    assert all(after.loc[i, "text_hash"] != before.loc[i, "text_hash"] for i in changed)
    assert not np.allclose(np.stack(after.loc[changed, "embedding"]), np.stack(before.loc[changed, "embedding"]))
    # nothing changed since: nothing embedded
    again = embed.run(ready, DS2, "items", spark=spark)
    assert again["embedded_now"] == 0 and again["reused"] == 36
    # full=True embeds everything again
    assert embed.run(ready, DS2, "items", full=True, spark=spark)["embedded_now"] == 36


def test_new_model_version_embeds_everything(ready, spark, serve_model):
    lake = Lake.from_settings(ready)
    register(ready, serve_model, version="v2")
    export.run(ready, DS)
    stats = embed.run(ready, DS, "items", spark=spark)
    assert stats["model_version"] == "v2" and stats["embedded_now"] == 36 and stats["reused"] == 0
    assert set(_emb(ready, version="v2")["model_version"]) == {"v2"}
    assert lake.exists(embeddings_dir(ready, "items", "v1"))  # the old version's snapshot is untouched


def test_bad_rows_quarantined(ready, spark):
    cat = catalog()
    cat.loc[cat["item_id"] == 5, ["title", "category"]] = ["   ", ""]
    write_inputs(ready, DS2, cat=cat)
    stats = embed.run(ready, DS2, "items", spark=spark)
    assert stats["quarantined"] == 1 and stats["rows_total"] == 35
    q = read_parquet(Lake.from_settings(ready).path("quarantine", "embed_items", ds=DS2))
    assert list(q["id"]) == [5] and list(q["reason"]) == ["empty text"]


def test_invisible_and_unreadable_texts_are_quarantined_with_their_reason(ready, spark):
    """Titles of zero-width/BOM/bidi characters are blank (even with a category: the title is checked on its
    own); emoji-only titles are all [UNK] under the tower's tokenizer; neither is embedded."""
    cat = catalog()
    bad = {2: "\u200b\u200d\ufeff", 3: "\u202e\u2066\u2069", 4: "🙂😀", 5: "🎉 🎉"}
    for i, t in bad.items():
        cat.loc[cat["item_id"] == i, "title"] = t
    cat.loc[cat["item_id"] == 6, "title"] = "red\u200b mug 🙂"  # readable: kept, embedded as "red mug 🙂"
    write_inputs(ready, DS2, cat=cat)
    stats = embed.run(ready, DS2, "items", spark=spark)
    assert stats["quarantined"] == 4 and stats["rows_total"] == 32
    assert stats["quarantined_by_reason"] == {"empty text": 2, "unreadable text": 2}
    q = read_parquet(Lake.from_settings(ready).path("quarantine", "embed_items", ds=DS2)).set_index("id")
    assert q.loc[[2, 3], "reason"].tolist() == ["empty text"] * 2
    assert q.loc[[4, 5], "reason"].tolist() == ["unreadable text"] * 2
    emb = _emb(ready)
    assert not set(bad) & set(emb.index) and 6 in emb.index
    assert emb.loc[6, "text_hash"] == embed.input_hash(item_text("red mug 🙂", cat.loc[5, "category"]))
    # a corrected catalog empties the quarantine on the rerun
    write_inputs(ready, DS2)
    assert embed.run(ready, DS2, "items", spark=spark)["quarantined"] == 0
    assert len(read_parquet(Lake.from_settings(ready).path("quarantine", "embed_items", ds=DS2))) == 0


def test_requires_export(serve_world, spark):
    with pytest.raises(DataError, match="kp export"):
        embed.run(serve_world, DS, "items", spark=spark)


def test_missing_catalog_day(ready, spark):
    with pytest.raises(DataError, match="missing input"):
        embed.run(ready, "2026-12-31", "items", spark=spark)


def test_inference_runs_in_one_task_and_one_python_worker_per_core(serve_world, serve_model, spark):
    """Multi-partition input: the inference stage runs as defaultParallelism tasks in as many distinct Python
    worker processes (each with its own ONNX Runtime session), not folded into one by the output's file count."""
    from pathlib import Path

    from keyphrase_pipeline.core.layout import embeddings_dir

    settings = serve_world.model_copy(update={"serve": serve_world.serve.model_copy(update={"embed_batch_size": 4})})
    export.run(settings, version="v1")
    cores = spark.sparkContext.defaultParallelism
    assert cores >= 2, "this test needs local[2] or more"
    stats = embed.run(settings, DS, "items", spark=spark)
    assert stats["embedded_now"] == 36
    assert stats["inference_partitions"] == cores
    assert stats["inference_tasks"] == cores
    assert stats["inference_workers"] == cores
    assert stats["session_threads"] * stats["inference_tasks"] == cores
    files = list(Path(embeddings_dir(settings, "items", "v1")).glob("*.parquet"))
    assert len(files) == 1  # 36 rows: one output file, sized after inference


def test_an_executor_without_cuda_is_a_config_error_not_a_retry(ready, spark, monkeypatch):
    """The driver saw CUDA (faked) but the executors' sessions cannot get it (here: none at all): their ConfigError
    reaches the command line as a ConfigError (exit 2, not retried), not as Spark's PythonException (exit 1). Nothing
    is written: the previous snapshot stays."""
    from keyphrase_pipeline.core.errors import ConfigError

    before = _emb(ready)
    monkeypatch.setattr(embed, "onnx_providers", lambda value, setting="serve.device": ["CPUExecutionProvider"])
    cat = catalog()
    cat.loc[cat["item_id"] == 1, "title"] = "a title that must be embedded again"
    write_inputs(ready, DS2, cat=cat)
    s = ready.with_overrides(**{"serve.device": "cuda"})
    with pytest.raises(ConfigError, match="on a Spark executor: serve.device='cuda'"):
        embed.run(s, DS2, "items", spark=spark)
    pd_after = _emb(ready)
    assert pd_after.equals(before)
