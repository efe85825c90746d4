"""Pieces of `make cluster-e2e` that need no cluster: its settings load, shard overlap, worker attribution."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from keyphrase_pipeline.deploy import cluster_e2e


def test_e2e_settings_are_valid_tiny_settings(tmp_path, monkeypatch):
    from keyphrase_pipeline.core.settings import load_settings

    env = cluster_e2e.e2e_env(tmp_path, dt.date(2026, 11, 30), str(tmp_path / "enc"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.lake_root == str(tmp_path / "lake") and s.synth.scale == "tiny"
    assert s.synth.start_date == "2026-11-18" and s.synth.days == 12  # ends yesterday: the scheduled run's day
    assert s.train.matryoshka_dims == [32, 16] and s.serve.dim == 16 and s.train.bi_max_steps == 8
    assert s.train.base_model == str(tmp_path / "enc")


def test_max_overlap_counts_concurrent_windows():
    w = [("2026-01-01T00:00:00", "2026-01-01T00:10:00"), ("2026-01-01T00:05:00", "2026-01-01T00:15:00"),
         ("2026-01-01T00:10:00", "2026-01-01T00:20:00")]
    assert cluster_e2e.max_overlap(w) == 2  # an end and a start at the same instant do not overlap
    assert cluster_e2e.max_overlap(w[:1]) == 1 and cluster_e2e.max_overlap([]) == 0


def test_worker_attribution_reads_the_worker_logs(tmp_path):
    import socket

    (tmp_path / "airflow-worker.log").write_text("Workload finished workload_id=aaa-1\n")
    (tmp_path / "airflow-worker-gpu.log").write_text("Workload finished workload_id=bbb-2\n")
    host = socket.gethostname()
    assert cluster_e2e.celery_worker_of(tmp_path, "aaa-1") == f"default@{host}"
    assert cluster_e2e.celery_worker_of(tmp_path, "bbb-2") == f"gpu@{host}"
    assert cluster_e2e.celery_worker_of(tmp_path, "ccc-3") is None


def test_executor_is_read_from_the_scheduler_log(tmp_path):
    log = tmp_path / "s.log"
    log.write_text("... [info] Loaded executor: :CeleryExecutor: [airflow.executors.executor_loader]\n")
    assert cluster_e2e.executor_seen(log) == "CeleryExecutor"
    assert cluster_e2e.executor_seen(tmp_path / "missing.log") is None
    assert json.dumps(cluster_e2e.GPU_TASKS)


def _recorded(name: str = "cluster_e2e_result.json"):
    """The JSON line of a real `make cluster-e2e` run (2 cores; durations left out): 2026-11-30 with the stand-in
    judge, ``cluster_e2e_result_vllm.json`` 2026-12-05 with SmolLM2-135M on the vLLM CPU server as the judge."""
    from pathlib import Path

    return json.loads((Path(__file__).parent / name).read_text())


@pytest.mark.parametrize("name", ["cluster_e2e_result.json", "cluster_e2e_result_vllm.json"])
def test_the_recorded_run_passes_every_check(name):
    assert cluster_e2e.failed_checks(_recorded(name)) == []


def test_the_recorded_real_llm_run_labelled_through_vllm():
    r = _recorded("cluster_e2e_result_vllm.json")
    assert r["judge"].startswith("real LLM: smollm2-135m") and r["judge_calls"] == 500


@pytest.mark.parametrize("breakage, expect", [
    (lambda r: r["runs"].update(scheduled="failed"), "runs"),
    (lambda r: r.update(executor="LocalExecutor"), "executor"),
    (lambda r: r.update(celery_workers=1), "celery_workers"),
    (lambda r: r["task_hosts"]["train.train_bi"].update(hostname="default@vm"), "train.train_bi ran on"),
    (lambda r: r["task_hosts"]["serve.publish"].update(queue="gpu", hostname="gpu@vm"), "serve.publish ran on"),
    (lambda r: r.update(max_parallel_label_shards=2), "label shards at once"),
    (lambda r: r.update(spark_apps=0), "Spark"),
    (lambda r: r.update(serving_version=None), "nothing published"),
])
def test_each_check_can_fail(breakage, expect):
    r = _recorded()
    breakage(r)
    assert any(expect in f for f in cluster_e2e.failed_checks(r))


def test_clear_runs_fails_an_active_run_before_deleting_it(monkeypatch):
    """A fresh cluster's scheduler starts a run at once (waiting for its input): the REST API refuses to delete a
    running run (409), so it is marked failed first; a 409 while the state settles is retried."""
    import urllib.error

    monkeypatch.setattr(cluster_e2e.time, "sleep", lambda s: None)
    calls, refused = [], {"n": 1}

    class Api:
        def call(self, method, path, body=None):
            calls.append((method, path.rsplit("/", 1)[-1], body))
            if method == "GET":
                return {"dag_runs": [{"dag_run_id": "scheduled__2026-11-30T02:00:00+00:00", "state": "running"},
                                     {"dag_run_id": "manual_1", "state": "success"}]}
            if method == "DELETE" and "scheduled" in path and refused["n"]:
                refused["n"] -= 1
                raise urllib.error.HTTPError(path, 409, "cannot be deleted in running state", None, None)
            return {}

    cluster_e2e.clear_runs(Api())
    sched = "scheduled__2026-11-30T02%3A00%3A00%2B00%3A00"
    assert calls[1:] == [("PATCH", sched, {"state": "failed"}), ("DELETE", sched, None), ("DELETE", sched, None),
                         ("DELETE", "manual_1", None)]
