"""The daily DAG: it loads cleanly, its structure is what the docs say, and its branches route right."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "keyphrase_daily"

STAGE_TASKS = {
    "ctr.ctr_labels", "llm_labels.select_pairs", "llm_labels.llm_label", "llm_labels.merge_labels",
    "train.train_cross", "train.train_bi", "train.evaluate", "serve.export", "serve.embed_items",
    "serve.embed_keyphrases", "serve.train_ctr", "serve.index", "serve.recommend", "serve.publish",
}


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_dagbag_has_no_import_errors_and_only_our_dag(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {DAG_ID}
    # DagBag bags a DAG only after its cycle check; a topological order exists for every task
    dag = dagbag.dags[DAG_ID]
    assert len(dag.topological_sort()) == len(dag.tasks)


def test_dag_file_parses_without_heavy_imports():
    code = (
        "import sys, runpy; runpy.run_path('dags/keyphrase_daily.py', run_name='parse');"
        "heavy=[m for m in ('torch','pyspark','faiss','onnxruntime','transformers','sentence_transformers',"
        "'pandas','keyphrase_pipeline.stages.ctr_labels','keyphrase_pipeline.stages.train_bi') if m in sys.modules]; print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout


def test_schedule_processes_the_previous_day(dag):
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False and dag.max_active_runs == 1
    # the run at 02:00 on 2026-10-11 covers [10-10 02:00, 10-11 02:00): ds = its start = the previous day
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    core = coerce_to_core_timetable(dag.timetable)
    info = core.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dt.datetime(2026, 10, 10, 1, tzinfo=dt.UTC), latest=None, catchup=True),
    )
    assert info.data_interval.start == dt.datetime(2026, 10, 10, 2, tzinfo=dt.UTC)
    assert info.run_after == dt.datetime(2026, 10, 11, 2, tzinfo=dt.UTC)
    from keyphrase_pipeline.orchestration.planning import day_from_context

    assert day_from_context({}, info.data_interval.start) == "2026-10-10"


def test_tasks_groups_and_dependencies(dag):
    ids = set(dag.task_ids)
    assert STAGE_TASKS <= ids
    assert {"plan.plan_day", "plan.ensure_world", "plan.wait_for_input", "llm_labels.gate", "llm_labels.skipped", "llm_labels.shards",
            "train.decide", "train.skip_training"} <= ids
    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    chain = [
        ("plan.ensure_world", "plan.wait_for_input"), ("plan.wait_for_input", "ctr.ctr_labels"), ("ctr.ctr_labels", "llm_labels.gate"),
        ("llm_labels.gate", "llm_labels.select_pairs"), ("llm_labels.select_pairs", "llm_labels.shards"),
        ("llm_labels.shards", "llm_labels.llm_label"), ("llm_labels.llm_label", "llm_labels.merge_labels"),
        ("llm_labels.merge_labels", "train.decide"), ("llm_labels.skipped", "train.decide"),
        ("train.decide", "train.train_cross"), ("train.train_cross", "train.train_bi"),
        ("train.train_bi", "train.evaluate"), ("train.evaluate", "serve.export"),
        ("train.skip_training", "serve.export"), ("serve.export", "serve.embed_items"),
        ("serve.export", "serve.embed_keyphrases"), ("serve.embed_keyphrases", "serve.index"),
        ("serve.index", "serve.recommend"), ("serve.embed_items", "serve.recommend"),
        ("serve.recommend", "serve.publish"),
    ]
    for a, b in chain:
        assert a in up[b], f"{a} should be upstream of {b}"
    # the joins after a branch must run when one side was skipped
    for tid in ("llm_labels.merge_labels", "train.decide", "serve.export"):
        assert dag.get_task(tid).trigger_rule == "none_failed_min_one_success"


def test_a_person_decides_close_promotions_and_adjudicates_beside_the_pipeline(dag):
    """The approval sits between evaluate and serving (serving waits for it; a skipped approval does not skip
    serving); the adjudication is a side branch nothing waits for; the deadline alert is on the DAG."""
    from airflow.providers.standard.operators.hitl import HITLEntryOperator, HITLOperator

    from keyphrase_pipeline.core.settings import get_settings

    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    approve = dag.get_task("train.approve_promotion")
    assert isinstance(approve, HITLOperator) and approve.options == ["Approve", "Reject"]
    assert approve.defaults == ["Reject"]  # no answer keeps the champion
    assert approve.response_timeout == dt.timedelta(hours=get_settings().review.approval_timeout_hours)
    assert up["train.approval_request"] == {"train.evaluate"} and "train.approval_request" in up["train.approve_promotion"]
    assert "train.approve_promotion" in up["train.apply_approval"]
    assert {"train.evaluate", "train.apply_approval", "train.skip_training"} <= up["serve.export"]
    # a short-circuit that skips only the approval (trigger rules decide for export and the rest)
    assert dag.get_task("train.approval_request").ignore_downstream_trigger_rules is False
    assert dag.get_task("review.adjudication_request").ignore_downstream_trigger_rules is False
    adjudicate = dag.get_task("review.adjudicate")
    assert isinstance(adjudicate, HITLEntryOperator)
    assert len(adjudicate.params) == get_settings().review.adjudication_pairs
    # nothing downstream of the adjudication but its own record
    assert down["review.adjudicate"] == {"review.record_adjudication"} and not down["review.record_adjudication"]
    assert {"train.evaluate", "train.skip_training"} <= up["review.adjudication_request"]
    assert dag.get_task("review.adjudication_request").trigger_rule == "none_failed_min_one_success"
    (alert,) = dag.deadline
    assert alert.interval == dt.timedelta(days=1, hours=get_settings().dag.publish_deadline_hours)


def test_the_run_waits_for_its_input_without_holding_a_slot(dag):
    sensor = dag.get_task("plan.wait_for_input")
    assert sensor.mode == "reschedule" and sensor.retries == 0
    assert sensor.timeout <= dag.dagrun_timeout.total_seconds() and sensor.poke_interval >= 60
    assert sensor.doc_md and "kp inputs" in sensor.doc_md


def test_pools_queues_retries_timeouts_docs(dag):
    label = dag.get_task("llm_labels.llm_label")
    assert label.pool == "llm" and label.queue == "gpu"
    assert label.is_mapped if hasattr(label, "is_mapped") else True
    for tid in ("train.train_cross", "train.train_bi", "serve.embed_items", "serve.embed_keyphrases"):
        assert dag.get_task(tid).queue == "gpu"
    for tid in STAGE_TASKS:
        t = dag.get_task(tid)
        assert t.retries >= 1, tid
        assert t.retry_exponential_backoff, tid
        assert t.execution_timeout is not None and t.execution_timeout <= dt.timedelta(hours=6), tid
        assert t.doc_md, tid
        assert t.owner == "keyphrase-pipeline"
        assert t.on_failure_callback, tid
    assert dag.doc_md and "previous day" in dag.doc_md
    assert {"keyphrases", "daily"} <= set(dag.tags)
    assert dag.on_failure_callback


def test_the_dag_has_the_stage_tables_tasks_with_their_queue_pool_and_timeout(dag):
    """Every stage of ``keyphrase_pipeline.stages.STAGES`` is a task of the DAG under its one name, with the table's
    queue, pool, timeout and outlets (the DAG file wires them through ``tasks.task_args``)."""
    from keyphrase_pipeline.stages import STAGES, task_ids

    assert set(task_ids()) == STAGE_TASKS
    for s in STAGES:
        for tid, variant in zip(s.task_ids, s.variants or (None,)):
            t = dag.get_task(tid)
            assert t.queue == s.queue and t.pool == (s.pool or "default_pool"), tid
            assert t.execution_timeout == dt.timedelta(minutes=s.timeout_min), tid
            assert sorted(a.uri for a in t.outlets) == sorted(f"kp://lake/{o}" for o in s.outlets_of(variant)), tid


def test_spark_stage_uses_spark_submit(dag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    ctr = dag.get_task("ctr.ctr_labels")
    assert isinstance(ctr, SparkSubmitOperator)
    assert Path(ctr.application) == REPO / "jobs" / "ctr_labels.py" and Path(ctr.application).exists()
    assert ctr.application_args[0] == "--ds"
    assert getattr(ctr, "_conn_id", None) == "spark_default" or getattr(ctr, "conn_id", None) == "spark_default"


def test_assets_name_the_lake(dag):
    outlets = {t.task_id: [a.uri for a in t.outlets] for t in dag.tasks if t.outlets}
    assert outlets["ctr.ctr_labels"] == ["kp://lake/ctr_labels"]
    assert outlets["llm_labels.merge_labels"] == ["kp://lake/llm_store"]
    assert outlets["serve.publish"] == ["kp://lake/serving"]
    assert len({u for us in outlets.values() for u in us}) >= 10


def test_params_make_a_typed_trigger_form(dag):
    params = dag.params
    expected = {"ds": ["null", "string"], "skip_llm": "boolean", "full_reembed": "boolean",
                "force_retrain": "boolean", "force_promote": "boolean", "label_budget": ["null", "integer"],
                "rerank_depth": ["null", "integer"], "scale": ["null", "string"]}
    for name, typ in expected.items():
        p = params.get_param(name)
        assert p.schema["type"] == typ, name
        assert p.description, name
    params.validate()  # defaults are valid
    ok = {"ds": "2026-10-05", "label_budget": 50, "scale": "tiny", "skip_llm": True, "rerank_depth": 0}
    for name, value in ok.items():
        params.get_param(name).resolve(value)
    from airflow.sdk.exceptions import ParamValidationError

    for name, value in {"label_budget": 0, "scale": "galactic", "skip_llm": "yes", "ds": 20261005,
                        "rerank_depth": -1}.items():
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(value)


# ---- orchestration decisions (keyphrase_pipeline.orchestration) --------------------------------------------------
def test_day_resolution():
    from keyphrase_pipeline.orchestration.planning import day_from_context

    start = dt.datetime(2026, 10, 10, 2, tzinfo=dt.UTC)
    assert day_from_context({}, start) == "2026-10-10"
    assert day_from_context({"ds": "2026-10-05"}, start) == "2026-10-05"
    assert day_from_context({"ds": None}, None, None, dt.datetime(2026, 10, 11, 9, tzinfo=dt.UTC)) == "2026-10-10"
    from keyphrase_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError):
        day_from_context({"ds": "yesterday"}, start)


def test_training_cadence_and_param_overrides(settings, monkeypatch):
    from keyphrase_pipeline.orchestration import planning, run_settings

    every3 = settings.with_overrides(**{"train.retrain_every_days": 3})
    days = [(dt.date(2026, 10, 1) + dt.timedelta(days=i)).isoformat() for i in range(9)]
    flags = [planning.is_training_day(every3, d) for d in days]
    assert sum(flags) == 3 and all(planning.is_training_day(settings, d) for d in days)

    monkeypatch.setattr(run_settings, "settings_for", lambda params=None: every3)
    not_training = next(d for d, f in zip(days, flags) if not f)
    monkeypatch.setattr(planning, "_champion", lambda s: None)
    plan = planning.plan_day({"ds": not_training})
    assert plan["train"] is True and "no champion" in plan["train_reason"]
    monkeypatch.setattr(planning, "_champion", lambda s: "2026-10-01-abcdef12")
    plan = planning.plan_day({"ds": not_training, "skip_llm": True})
    assert plan["train"] is False and plan["label"] is False and plan["ds"] == not_training
    assert planning.plan_day({"ds": not_training, "force_retrain": True})["train"] is True


def test_settings_for_applies_params(monkeypatch, tmp_path):
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.orchestration import run_settings

    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "lake"))
    get_settings.cache_clear()
    try:
        s = run_settings.settings_for({"label_budget": 123, "scale": "tiny", "ds": "2026-10-03", "rerank_depth": 40})
        assert s.pairs.daily_budget == 123 and s.synth.scale == "tiny" and s.serve.rerank_depth == 40
        assert run_settings.settings_for({}).serve.rerank_depth == 0
        assert run_settings.settings_for({}).pairs.daily_budget == get_settings().pairs.daily_budget
        # demo mode (scale param) passes the demo's small training budget; a normal run keeps the defaults
        assert (s.train.cross_max_steps, s.train.bi_max_steps) == (150, 250)
        plain = run_settings.settings_for({})
        assert (plain.train.cross_max_steps, plain.train.bi_max_steps) == (-1, -1)
        # and its simulated judge errs like an LLM (issue 26); a normal run keeps the settings' default
        assert s.judge.simulated_errors == "llm" and plain.judge.simulated_errors == "iid"
        monkeypatch.setenv("KP_TRAIN__BI_MAX_STEPS", "40")  # the environment wins over the demo budget
        monkeypatch.setenv("KP_JUDGE__SIMULATED_ERRORS", "iid")  # and over the demo's judge
        get_settings.cache_clear()
        s = run_settings.settings_for({"scale": "tiny"})
        assert (s.train.cross_max_steps, s.train.bi_max_steps) == (150, 40) and s.judge.simulated_errors == "iid"
    finally:
        get_settings.cache_clear()


def test_settings_env_round_trips(settings):
    from keyphrase_pipeline.core.settings import Settings, settings_env

    tuned = settings.with_overrides(**{"train.matryoshka_dims": [32, 16], "serve.dim": 16})
    env = settings_env(tuned)
    assert env["KP_TRAIN__MATRYOSHKA_DIMS"] == "[32, 16]" and env["KP_SERVE__DIM"] == "16"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert Settings() == tuned
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_failure_callback_logs_how_to_rerun(caplog):
    from keyphrase_pipeline.orchestration.tasks import log_task_failure

    class TI:
        dag_id, task_id, map_index, try_number = DAG_ID, "serve.index", -1, 2

    with caplog.at_level("ERROR"):
        log_task_failure({"ti": TI(), "exception": ValueError("recall 0.80 < floor 0.95"), "params": {"ds": "2026-10-10"}})
    msg = caplog.text
    assert "serve.index" in msg and "2026-10-10" in msg and "recall 0.80" in msg and "airflow tasks clear" in msg


# ---- branches, run in Airflow (stage tasks marked success: this checks routing only) ---------------
STAGES_MARKED = (r"plan\.wait_for_input|ctr\..*|llm_labels\.(select_pairs|shards|llm_label|merge_labels)"
                 r"|train\.(train_.*|evaluate)|serve\..*")


def _states(dr):
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


@pytest.fixture
def runnable_dag():
    """A fresh copy of the DAG with retries off (dag.test waits out retry delays)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DAG_ID]
    from keyphrase_pipeline.orchestration.reviews import without_deadline

    for t in dag.tasks:
        t.retries = 0
    without_deadline(dag)  # dag.test() cannot finish a run of a DAG with a deadline alert (Airflow 3.3.2)
    return dag


def test_branches_skip_labelling_and_training(airflow_db, runnable_dag, settings, monkeypatch):
    dag = runnable_dag
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    lake = Lake.from_settings(settings)
    for k, v in settings_env(settings.with_overrides(**{"train.retrain_every_days": 1000})).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        # no champion yet: labelling skipped by param, training runs anyway
        dr = dag.test(run_conf={"ds": "2026-10-03", "skip_llm": True}, mark_success_pattern=STAGES_MARKED)
        st = _states(dr)
        assert st["llm_labels.skipped"] == "success" and st["llm_labels.select_pairs"] == "skipped"
        assert st["llm_labels.merge_labels"] == "skipped"
        assert st["train.train_cross"] == "success" and st["train.skip_training"] == "skipped"
        assert st["serve.publish"] == "success"
        # a champion exists and it is not a training day: training skipped, serving still runs
        lake.write_pointer(lake.path("registry", "CHAMPION"), "2026-10-01-00000000")
        dr = dag.test(run_conf={"ds": "2026-10-04", "skip_llm": True}, mark_success_pattern=STAGES_MARKED)
        st = _states(dr)
        assert st["train.skip_training"] == "success" and st["train.train_cross"] == "skipped"
        assert st["train.evaluate"] == "skipped"
        assert st["serve.export"] == "success" and st["serve.publish"] == "success"
        assert dr.state == "success"
        plan = next(ti for ti in dr.get_task_instances() if ti.task_id == "plan.plan_day")
        assert plan.state == "success"
    finally:
        get_settings.cache_clear()


def test_the_sensor_passes_a_day_whose_input_landed_and_waits_on_one_without(airflow_db, runnable_dag, settings,
                                                                            monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.contracts import arrow_schema
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.orchestration import planning

    lake = Lake.from_settings(settings)
    for dataset, ds in (("events", "2026-10-03"), ("catalog", "2026-10-03"), ("keyphrases", None)):
        folder = Path(lake.path(dataset, ds=ds) if ds else lake.path(dataset))
        folder.mkdir(parents=True, exist_ok=True)  # files that meet their contract (the sensor checks each footer)
        pq.write_table(pa.Table.from_pylist([], schema=arrow_schema(dataset)), folder / "part-00000.parquet")
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    sensor = runnable_dag.get_task("plan.wait_for_input")
    sensor.poke_interval, sensor.timeout = 1, 4  # seconds: dag.test() would otherwise wait the real hours
    try:
        everything_after = STAGES_MARKED.replace(r"plan\.wait_for_input|", "")
        dr = runnable_dag.test(run_conf={"ds": "2026-10-03", "skip_llm": True}, mark_success_pattern=everything_after)
        st = _states(dr)
        assert st["plan.wait_for_input"] == "success" and dr.state == "success"
        # a day without input: the poke says "not yet" and the sensor waits; at its timeout the run fails there,
        # before any stage ran
        assert planning.wait_for_input({}, "2026-10-04").is_done is False
        dr = runnable_dag.test(run_conf={"ds": "2026-10-04", "skip_llm": True}, mark_success_pattern=everything_after)
        st = _states(dr)
        assert st["plan.wait_for_input"] == "failed" and dr.state == "failed"
        assert st["ctr.ctr_labels"] == "upstream_failed"
    finally:
        get_settings.cache_clear()
