"""docker-compose.yml is generated from the topology table (keyphrase_pipeline.deploy.topology), which the native
cluster (keyphrase_pipeline.deploy.cluster) starts too: the committed file must equal the generated one."""

from __future__ import annotations

import yaml

from keyphrase_pipeline.deploy import topology


def test_committed_compose_file_is_the_generated_one():
    committed = topology.COMPOSE_FILE.read_text()
    assert committed == topology.compose_text(), (
        "docker-compose.yml differs from keyphrase_pipeline/deploy/topology.py: edit the table and run "
        "python -m keyphrase_pipeline.deploy.topology")
    assert topology.main(["--check"]) == 0


def test_generated_compose_carries_the_table():
    compose = yaml.safe_load(topology.compose_text())
    services = compose["services"]
    assert [s.name for s in topology.SERVICES] == list(services)
    for svc in topology.SERVICES:
        if svc.kind == "airflow":
            assert services[svc.name]["command"] == topology.command(svc, topology.COMPOSE)
            env = services[svc.name]["environment"]
            assert {k for k, _ in topology.AIRFLOW_ENV} <= set(env), svc.name
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert services["airflow-worker-gpu"]["command"][:4] == ["celery", "worker", "-q", topology.GPU_QUEUE]
    assert services["redis"]["command"] == ["redis-server", "--save", "", "--appendonly", "no"]
    assert services["spark-worker"]["command"][1] == "spark://spark-master:7077"
    assert "airflow pools set llm" in services["airflow-init"]["command"][-1]


def test_a_table_edit_shows_up_in_the_compose_text(monkeypatch):
    before = topology.compose_text()
    monkeypatch.setitem(topology.COMPOSE, "parallelism", "32")
    after = topology.compose_text()
    assert before != after and 'AIRFLOW__CORE__PARALLELISM: "32"' in after


def test_queues_match_the_dag():
    from keyphrase_pipeline.deploy.airflow_standalone import LLM_POOL
    from keyphrase_pipeline.orchestration.tasks import GPU_QUEUE

    assert topology.GPU_QUEUE == GPU_QUEUE and topology.LLM_POOL == LLM_POOL
    assert {s.queue for s in topology.SERVICES if s.queue} == {"default", "gpu"}
