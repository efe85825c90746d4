"""End to end: the real DAG, every real stage, on the tiny synthetic world with tiny models, run by
``dag.test()`` (in-process; the CTR stage really goes through ``spark-submit`` on ``local[2]``).
Then the same day is run again: a rerun of a day gives the same outputs (idempotence)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "keyphrase_daily"


def tiny_pipeline_settings(world_settings, base_model: str):
    """The tiny world's settings with tiny models: Matryoshka [32, 16], serving at 16-d, a few steps."""
    train = {"base_model": base_model, "matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 24,
             "epochs": 100, "bi_epochs": 100, "evals_per_epoch": 0,
             "cross_max_length": 48, "learning_rate": 2e-3, "warmup_ratio": 0.0, "cross_max_steps": 8,
             "bi_max_steps": 8, "min_rows": 10, "device": "cpu"}
    serve = {"dim": 16, "quantize": False, "recall_sample": 50, "top_k": 10}
    # dag.test() waits for a person's answer forever: this run is unattended (the gate alone, no adjudication);
    # the human-in-the-loop tasks run in a real scheduler in `make review-e2e` (tests/deploy/test_review_e2e.py)
    return world_settings.with_overrides(**{f"train.{k}": v for k, v in train.items()},
                                         **{f"serve.{k}": v for k, v in serve.items()},
                                         **{"review.approval": False, "review.adjudication_pairs": 0})


@pytest.fixture
def pipeline_env(tiny_world, tmp_path, monkeypatch):
    """Process env so that get_settings() (in tasks and in spark-submit) is the tiny pipeline's settings."""
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    model = build_tiny_encoder(tmp_path / "tiny_encoder", hidden=32, seed=3)
    settings = tiny_pipeline_settings(tiny_world, model)
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[2]"}')
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DAG_ID]
    from keyphrase_pipeline.orchestration.reviews import without_deadline

    for t in dag.tasks:
        t.retries = 0  # dag.test would wait out retry delays; a failure here is a failure
    without_deadline(dag)  # dag.test() cannot finish a run of a DAG with a deadline alert (Airflow 3.3.2)
    return dag


def _snapshot(settings, ds):
    from keyphrase_pipeline.core.lake import Lake, read_parquet

    lake = Lake.from_settings(settings)
    recs = read_parquet(lake.path("recommendations", ds=ds))
    recs = recs.sort_values(["item_id", "rank"]).reset_index(drop=True)
    labels = read_parquet(lake.path("llm_store", ds=ds)).sort_values(["item_id", "keyphrase_id"]).reset_index(drop=True)
    ctr = read_parquet(lake.path("ctr_labels", ds=ds)).sort_values(["item_id", "keyphrase_id"]).reset_index(drop=True)
    return {
        "recs": recs,
        "labels": labels,
        "ctr": ctr,
        "champion": lake.read_pointer(lake.path("registry", "CHAMPION")),
        "label_rows": len(labels),
    }


# Two full runs (Spark JVMs, tiny training): ~3 minutes on 2 cores, kept in `make test` because it is
# the one test that runs every real stage through Airflow and proves a cleared day reruns to the same outputs.
def test_daily_dag_end_to_end_and_rerun_is_idempotent(airflow_db, pipeline_env):
    from keyphrase_pipeline.artifacts import serving
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.synthetic.world import World

    settings = pipeline_env
    lake = Lake.from_settings(settings)
    ds = lake.partitions("events")[-1]
    dag = _dag()

    dr = dag.test(run_conf={"ds": ds})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    failed = {t: s for t, s in states.items() if s not in ("success", "skipped")}
    assert dr.state == "success", failed
    assert states["llm_labels.skipped"] == "skipped" and states["train.skip_training"] == "skipped"
    for t in ("ctr.ctr_labels", "llm_labels.merge_labels", "train.evaluate", "serve.publish"):
        assert states[t] == "success", t
    labelled = [ti for ti in dr.get_task_instances() if ti.task_id == "llm_labels.llm_label"]
    assert len(labelled) >= 2 and all(ti.state == "success" for ti in labelled)  # fanned out over shards

    durations = {ti.task_id: round(ti.duration or 0, 1) for ti in dr.get_task_instances() if ti.map_index in (-1, 0)}
    print("TASK_SECONDS", durations)
    first = _snapshot(settings, ds)
    assert first["champion"] and len(first["recs"]) > 0 and first["label_rows"] > 0
    for stage in ("ctr_labels", "select_pairs", "merge_labels", "train_bi", "evaluate", "index", "recommend", "publish"):
        assert lake.exists(lake.run_stats_path(ds, stage)), stage
    # what users get: the published index answers for an item, and the demo world can judge it
    bundle = serving.load_current(settings, cached=False)
    item = int(first["recs"]["item_id"].iloc[0])
    top = bundle.search(item, 5)
    assert 1 <= len(top) <= 5 and all("keyphrase" in r and "score" in r for r in top)
    World.load(settings).is_relevant([item] * len(top), [r["keyphrase_id"] for r in top])

    # rerun the same day (as "clear the run" does): the outputs are the same
    dr2 = _dag().test(run_conf={"ds": ds})
    assert dr2.state == "success"
    second = _snapshot(settings, ds)
    pd.testing.assert_frame_equal(second["ctr"], first["ctr"])
    assert second["label_rows"] == first["label_rows"]  # no pair judged (or paid for) twice
    volatile = [c for c in first["labels"].columns if "time" in c or c.endswith("_at")]
    pd.testing.assert_frame_equal(second["labels"].drop(columns=volatile), first["labels"].drop(columns=volatile))
    if second["champion"] != first["champion"]:  # say what changed between the two trainings
        import json

        reg = Path(lake.path("registry", "students"))
        a, b = (json.loads((reg / v / "data.json").read_text()) for v in (first["champion"], second["champion"]))
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        pytest.fail(f"retraining the same day gave another model version: data.json differs in {diff}")
    key = ["item_id", "rank", "keyphrase_id"]
    pd.testing.assert_frame_equal(second["recs"][key], first["recs"][key])
    assert (second["recs"]["score"] - first["recs"]["score"]).abs().max() < 1e-5
