"""make airflow's launcher: its environment defaults, and reading the generated admin password."""

from __future__ import annotations

import json


def test_environment_defaults_and_overrides(monkeypatch):
    from keyphrase_pipeline.core import airflow_standalone as st

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
    from keyphrase_pipeline.core.airflow_standalone import admin_password

    assert admin_password(str(tmp_path)) is None
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "s3cret"}))
    assert admin_password(str(tmp_path)) == "s3cret"
