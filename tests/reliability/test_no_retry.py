"""A missing input day is not retried: the real CTR stage, through the real ``spark-submit`` of the DAG's
ctr task, on a lake without events exits 3 (DataError) and the task fails at once (AirflowFailException)
instead of spending 2 retries with backoff on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark


def test_ctr_spark_submit_on_a_missing_day_fails_without_retry(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from reliability_helpers import make_settings

    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.orchestration import spark_submit

    for k, v in settings_env(make_settings(tmp_path / "empty-lake")).items():
        monkeypatch.setenv(k, v)  # spark-submit's Python reads its settings from KP_* (as in a deployment)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[1]"}')
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    get_settings.cache_clear()
    try:
        op = spark_submit.SparkSubmitStage(task_id="ctr_labels", application=spark_submit.spark_application("ctr_labels"),
                                 application_args=["--ds", "2026-10-12"], conn_id="spark_default",
                                 conf={"spark.ui.enabled": "false"})
        with pytest.raises(AirflowFailException, match=r"spark-submit ctr_labels.py exited 3 \(DataError\)") as err:
            op.execute({})
    finally:
        get_settings.cache_clear()
    assert isinstance(err.value.__cause__, AirflowException)
    assert "Error code is: 3" in str(err.value.__cause__)
