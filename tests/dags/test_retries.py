"""Which failures Airflow retries: deterministic errors (ConfigError, DataError, GateError) fail the task at once,
through the one task wrapper ``run_stage`` and through the spark-submit stage operator; anything else keeps
its retries with backoff."""

from __future__ import annotations

import datetime as dt
import sys
import types

import pytest

from keyphrase_pipeline.core.errors import ConfigError, DataError, GateError, KPError, SchemaError
from keyphrase_pipeline.orchestration import run_settings, spark_submit, tasks
from keyphrase_pipeline.stages import Stage

DS = "2026-10-05"


@pytest.fixture
def fake_stages(monkeypatch, settings):
    """``keyphrase_pipeline.stages.fail_<name>`` stage modules whose ``run`` raises the given exception (and count calls)."""
    calls: dict[str, int] = {}

    def add(name: str, exc: BaseException):
        def run(settings, ds, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            raise exc

        monkeypatch.setitem(sys.modules, f"keyphrase_pipeline.stages.{name}", types.SimpleNamespace(run=run))
        if name not in tasks.STAGE_BY_NAME:  # a stage of its own; a real one keeps its table entry
            monkeypatch.setitem(tasks.STAGE_BY_NAME, name, Stage(name, "test", "a stage that fails", 5))

    monkeypatch.setattr(run_settings, "settings_for", lambda params=None: settings)
    add.calls = calls
    return add


@pytest.mark.parametrize("exc", [DataError("no events for 2026-10-05 under raw/events"),
                                 SchemaError("catalog lacks column title"), ConfigError("serve.dim=7"),
                                 GateError("index recall@20 0.40 is below serve.min_recall=0.95")])
def test_deterministic_errors_fail_the_task_without_retry(fake_stages, exc):
    from airflow.sdk.exceptions import AirflowFailException

    fake_stages("fail_det", exc)
    with pytest.raises(AirflowFailException) as err:
        tasks.run_stage("fail_det", None, DS)
    assert err.value.__cause__ is exc  # chained: the traceback and the failure callback show the original
    assert f"stage fail_det for ds={DS}: {type(exc).__name__}: {exc}" in str(err.value) and "not retried" in str(err.value)


@pytest.mark.parametrize("exc", [ConnectionError("judge endpoint refused"), MemoryError(), KPError("generic"),
                                 ConnectionRefusedError(111, "Connection refused")])
def test_transient_errors_propagate_unchanged_for_airflow_to_retry(fake_stages, exc):
    fake_stages("fail_transient", exc)
    with pytest.raises(type(exc)) as err:
        tasks.run_stage("fail_transient", None, DS)
    assert err.value is exc


def test_run_stage_imports_the_packaged_stage(monkeypatch, settings):
    monkeypatch.setattr(run_settings, "settings_for", lambda params=None: settings)
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="DataError: no model: registry/CHAMPION is not set"):
        tasks.run_stage("index", None, DS)  # the real stage on an empty lake


def test_spark_submit_stage_fails_fast_on_kp_exit_codes(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    assert spark_submit.deterministic_exit_codes() == {2: "ConfigError", 3: "DataError", 4: "GateError"}
    op = spark_submit.SparkSubmitStage(task_id="t", application=spark_submit.spark_application("ctr_labels"), conn_id="spark_default")
    assert isinstance(op, SparkSubmitOperator) and type(op).__module__ == "keyphrase_pipeline.orchestration.spark_submit"
    code = {"rc": 3}

    def fake_execute(self, context):
        raise AirflowException(f"Cannot execute: spark-submit --master local[2] ctr_labels.py. Error code is: {code['rc']}.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", fake_execute)
    for rc, meaning in ((2, "ConfigError"), (3, "DataError"), (4, "GateError")):
        code["rc"] = rc
        with pytest.raises(AirflowFailException, match=f"spark-submit ctr_labels.py exited {rc} \\({meaning}\\)") as err:
            op.execute({})
        assert isinstance(err.value.__cause__, AirflowException)
    for rc in (1, 137):  # an unexpected failure, a JVM killed: retried
        code["rc"] = rc
        with pytest.raises(AirflowException) as err:
            op.execute({})
        assert not isinstance(err.value, AirflowFailException)


PROBE_DAG = """
import datetime as dt

from airflow.sdk import DAG, task

from keyphrase_pipeline.orchestration import run_settings, spark_submit, tasks

with DAG("kp_retry_probe", schedule=None, start_date=dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc), catchup=False):

    @task(retries=3, retry_delay=dt.timedelta(seconds=0))
    def deterministic():
        return tasks.run_stage("fail_data", None, "2026-10-05")

    @task(retries=1, retry_delay=dt.timedelta(seconds=0))
    def transient():
        return tasks.run_stage("fail_conn", None, "2026-10-05")

    deterministic()
    transient()
"""


def test_airflow_does_not_retry_a_deterministic_error_but_retries_a_transient_one(airflow_db, fake_stages, tmp_path):
    """In a real (in-process) Airflow run: the DataError task fails on try 1 of 4; the ConnectionError task
    uses its one retry. (A two-task DAG of its own, written to the metadata DB the way the DAG processor does.)"""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    fake_stages("fail_data", DataError("no events for 2026-10-05"))
    fake_stages("fail_conn", ConnectionError("endpoint down"))
    (tmp_path / "kp_retry_probe.py").write_text(PROBE_DAG)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)
    try:
        dr = bag.dags["kp_retry_probe"].test()
        tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    finally:
        from airflow.api.common.delete_dag import delete_dag

        delete_dag("kp_retry_probe", keep_records_in_log=False)  # leave the metadata DB as it was
    assert tis["deterministic"].state == "failed" and tis["deterministic"].try_number == 1
    assert tis["transient"].state == "failed" and tis["transient"].try_number == 2
    assert fake_stages.calls == {"fail_data": 1, "fail_conn": 2}


# ---- what the wrappers record in the lake for the Keyphrases page's run history ------------------------------
def test_run_stage_adds_wall_seconds_to_the_stats_the_stage_wrote(monkeypatch, settings):
    import time

    from keyphrase_pipeline.core.lake import Lake

    lake = Lake.from_settings(settings)
    monkeypatch.setattr(run_settings, "settings_for", lambda params=None: settings)

    def run(s, ds, what="items"):
        time.sleep(0.05)
        lake.write_run_stats(ds, f"embed_{what}", {"embedded_now": 3})
        return {"embedded_now": 3}

    monkeypatch.setitem(sys.modules, "keyphrase_pipeline.stages.embed", types.SimpleNamespace(run=run))
    assert tasks.run_stage("embed", None, DS, what="keyphrases") == {"embedded_now": 3}
    stats = lake.read_json(lake.run_stats_path(DS, "embed_keyphrases"))
    assert stats["embedded_now"] == 3 and 0.05 <= stats["wall_seconds"] < 30
    assert "airflow" not in stats  # not inside an Airflow task: no ids to record

    # a stage that wrote nothing this time: the older stats of the day are left alone
    monkeypatch.setitem(sys.modules, "keyphrase_pipeline.stages.embed", types.SimpleNamespace(run=lambda s, ds, what: {}))
    before = lake.read_json(lake.run_stats_path(DS, "embed_keyphrases"))
    tasks.run_stage("embed", None, DS, what="keyphrases")
    assert lake.read_json(lake.run_stats_path(DS, "embed_keyphrases")) == before


def test_the_airflow_run_and_task_ids_go_with_the_stats(settings):

    from keyphrase_pipeline.core.lake import Lake

    lake = Lake.from_settings(settings)
    since = dt.datetime.now(dt.UTC)
    lake.write_run_stats(DS, "merge_labels", {"rows": 5})
    ti = types.SimpleNamespace(dag_id="keyphrase_daily", run_id="manual__2026-10-06T02:00:00+00:00",
                               task_id="llm_labels.merge_labels", map_index=-1, try_number=2)
    tasks.record_success(settings, DS, "merge_labels", 12.5, since, context={"ti": ti})
    stats = lake.read_json(lake.run_stats_path(DS, "merge_labels"))
    assert stats["wall_seconds"] == 12.5 and stats["rows"] == 5
    assert stats["airflow"] == {"dag_id": "keyphrase_daily", "run_id": "manual__2026-10-06T02:00:00+00:00",
                                "task_id": "llm_labels.merge_labels", "map_index": -1, "try_number": 2}
    assert tasks.airflow_ids({}) is None and tasks.airflow_ids(None) is None  # no task: no ids


@pytest.mark.parametrize("exc,retried", [(DataError("no events for 2026-10-05"), False),
                                         (ConnectionError("judge endpoint refused"), True)])
def test_run_stage_records_a_failure_for_the_run_history(fake_stages, settings, exc, retried):
    from keyphrase_pipeline.core.lake import Lake

    fake_stages("llm_label", exc)
    with pytest.raises(Exception) as raised:  # noqa: B017 (Airflow's fail-now exception, or the original one)
        tasks.run_stage("llm_label", None, DS, shard=3)
    assert raised.value is exc or raised.value.__cause__ is exc
    lake = Lake.from_settings(settings)
    rec = lake.read_json(lake.run_failure_path(DS, "merge_labels"))  # a shard's failure is the labelling's
    assert rec["error_type"] == type(exc).__name__ and str(exc) in rec["error"] and rec["retried"] is retried
    assert rec["detail"] == {"shard": 3} and rec["stage"] == "merge_labels" and rec["ds"] == DS
    assert rec["wall_seconds"] >= 0 and rec["failed_at"]


def test_a_failure_that_cannot_be_recorded_does_not_hide_the_stage_error(fake_stages, settings, monkeypatch):
    from keyphrase_pipeline.core.lake import Lake

    def broken(self, *a, **k):
        raise OSError("read-only lake")

    monkeypatch.setattr(Lake, "write_run_failure", broken)
    exc = ConnectionError("endpoint down")
    fake_stages("fail_transient", exc)
    with pytest.raises(ConnectionError) as err:
        tasks.run_stage("fail_transient", None, DS)
    assert err.value is exc


def test_spark_submit_stage_records_its_failure_and_its_wall_time(monkeypatch, settings):

    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk.exceptions import AirflowException

    from keyphrase_pipeline.core.lake import Lake

    lake = Lake.from_settings(settings)
    monkeypatch.setattr(run_settings, "settings_for", lambda params=None: settings)
    op = spark_submit.SparkSubmitStage(task_id="ctr_labels", application=spark_submit.spark_application("ctr_labels"),
                             application_args=["--ds", DS], conn_id="spark_default")
    ti = types.SimpleNamespace(dag_id="keyphrase_daily", run_id="scheduled__2026-10-05T02:00:00+00:00",
                               task_id="ctr.ctr_labels", map_index=-1, try_number=1)

    def fail(self, context):
        raise AirflowException("Cannot execute: spark-submit ctr_labels.py. Error code is: 137.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", fail)
    with pytest.raises(AirflowException):
        op.execute({"ti": ti})
    rec = lake.read_json(lake.run_failure_path(DS, "ctr_labels"))
    assert rec["detail"] == {"exit_code": 137} and rec["retried"] is True
    assert rec["airflow"]["task_id"] == "ctr.ctr_labels"

    def succeed(self, context):
        lake.write_run_stats(DS, "ctr_labels", {"positives": 7})

    monkeypatch.setattr(SparkSubmitOperator, "execute", succeed)
    op.execute({"ti": ti})
    stats = lake.read_json(lake.run_stats_path(DS, "ctr_labels"))
    assert stats["positives"] == 7 and stats["wall_seconds"] >= 0
    assert stats["airflow"]["run_id"] == "scheduled__2026-10-05T02:00:00+00:00"
    assert dt.datetime.fromisoformat(stats["written_at"]) <= dt.datetime.now(dt.UTC)
