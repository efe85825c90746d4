"""make airflow's launcher: its environment defaults, and reading the generated admin password."""

from __future__ import annotations

import json


def test_environment_defaults_and_overrides(monkeypatch):
    from keyphrase_pipeline.deploy import airflow_standalone as st

    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "2")
    monkeypatch.setenv("AIRFLOW__API__PORT", "8093")
    monkeypatch.delenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", raising=False)
    env = st.environment()
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"  # what the user set wins
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags") and env["AIRFLOW__CORE__PLUGINS_FOLDER"].endswith("/plugins")
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["conn_type"] == "spark"
    assert env["PATH"].split(":")[0].endswith("bin")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8093/execution/"


def test_admin_password(tmp_path):
    from keyphrase_pipeline.deploy.airflow_standalone import admin_password

    assert admin_password(str(tmp_path)) is None
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "s3cret"}))
    assert admin_password(str(tmp_path)) == "s3cret"


def test_latest_scheduled_ds_is_the_newest_complete_interval():
    import datetime as dt

    from keyphrase_pipeline.deploy.airflow_standalone import latest_scheduled_ds

    utc = dt.timezone.utc
    assert latest_scheduled_ds(dt.datetime(2026, 11, 30, 5, 0, tzinfo=utc)) == "2026-11-29"
    assert latest_scheduled_ds(dt.datetime(2026, 11, 30, 1, 59, tzinfo=utc)) == "2026-11-28"  # 02:00 run not due


def test_an_empty_lake_gets_the_demo_world_ending_on_the_scheduled_day(tmp_path):
    import datetime as dt

    from keyphrase_pipeline.deploy.airflow_standalone import DEMO_MODULE, latest_scheduled_ds
    from keyphrase_pipeline.deploy.demo import seed_world_for_airflow

    assert DEMO_MODULE == seed_world_for_airflow.__module__  # airflow_standalone calls it by this name

    from keyphrase_pipeline.commands import inputs
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.core.settings import Settings

    lake_root = str(tmp_path / "lake")
    env = {"KP_LAKE_ROOT": lake_root, "KP_SYNTH__SCALE": "tiny", "KP_TRAIN__BI_MAX_STEPS": "7"}
    stats = seed_world_for_airflow(env, latest_scheduled_ds(dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.timezone.utc)))
    assert stats and stats["end_date"] == "2026-11-29"
    settings = Settings(lake_root=lake_root)
    assert inputs.day_inputs(settings, "2026-11-29")["ready"]  # the scheduled run's sensor finds its input
    # the demo's budget where unset; what the user set wins
    assert env["KP_TRAIN__CROSS_MAX_STEPS"] == "150" and env["KP_TRAIN__BI_MAX_STEPS"] == "7"
    # a lake with events is never touched again
    before = Lake.from_settings(settings).partitions("events")
    assert seed_world_for_airflow(dict(env), "2026-12-08") is None
    assert Lake.from_settings(settings).partitions("events") == before


def test_demo_seed_can_be_turned_off_and_a_real_lake_gets_no_demo_budget(tmp_path):
    from keyphrase_pipeline.deploy.demo import seed_world_for_airflow

    env = {"KP_LAKE_ROOT": str(tmp_path / "lake"), "KP_DEMO_SEED": "0"}
    assert seed_world_for_airflow(env, "2026-11-29") is None
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*.parquet"))
    assert not any(k.startswith("KP_TRAIN__") for k in env)
