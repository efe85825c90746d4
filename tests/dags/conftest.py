"""Fixtures for DAG tests: a migrated Airflow metadata DB (SQLite under AIRFLOW_HOME) and the llm pool."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_db():
    """``airflow db migrate`` once if needed (the Makefile's airflow-db target usually did it), plus pool llm."""
    from keyphrase_pipeline.deploy import airflow_standalone as af

    af.ensure_metadata_db()
    af.ensure_pool()
    return True


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
