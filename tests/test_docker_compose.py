"""docker-compose.yml cannot be started here (no Docker): check its structure instead, and that every
KP_* variable it sets is a real settings field (a typo would be silently ignored... or rejected at start)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def settings_env_names() -> set[str]:
    """Every KP_* name the settings object accepts: KP_<FIELD> and KP_<SECTION>__<FIELD>."""
    from pydantic import BaseModel

    from keyphrase_pipeline.core.settings import Settings

    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"KP_{name.upper()}")
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub in ann.model_fields:
                names.add(f"KP_{name.upper()}__{sub.upper()}")
    return names


def test_services_cover_the_cluster(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "spark-master", "spark-worker", "vllm"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        assert svc.get("command") or name in ("postgres",), f"{name} has no command"


def test_airflow_runs_celery_on_postgres_and_redis(compose):
    services = compose["services"]
    cmds = {name: services[name]["command"] for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert cmds["airflow-apiserver"][0] == "api-server"
    assert cmds["airflow-scheduler"] == ["scheduler"]
    assert cmds["airflow-dag-processor"] == ["dag-processor"]
    assert cmds["airflow-triggerer"] == ["triggerer"]
    assert cmds["airflow-worker"][:4] == ["celery", "worker", "-q", "default"]
    assert cmds["airflow-worker-gpu"][:4] == ["celery", "worker", "-q", "gpu"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert conn.startswith("postgresql+psycopg2://") and "@postgres/" in conn
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/keyphrase/dags"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/keyphrase/plugins"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]}
        assert mounts["./dags"] == "/opt/keyphrase/dags" and mounts["./plugins"] == "/opt/keyphrase/plugins"
        assert mounts["./keyphrase_pipeline"] == "/opt/keyphrase/keyphrase_pipeline" and mounts["lake"] == "/opt/keyphrase/var/lake"
    init = services["airflow-init"]["command"][-1]
    assert "airflow db migrate" in init and "airflow pools set llm" in init
    assert services["airflow-apiserver"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert "8080:8080" in services["airflow-apiserver"]["ports"]


def test_gpu_services_reserve_nvidia_devices(compose):
    for name in ("airflow-worker-gpu", "vllm"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    assert "airflow-worker" not in [n for n, s in compose["services"].items() if "deploy" in s]


def test_spark_cluster_and_connection(compose):
    services = compose["services"]
    assert services["spark-master"]["command"][0] == "org.apache.spark.deploy.master.Master"
    assert services["spark-worker"]["command"][:2] == ["org.apache.spark.deploy.worker.Worker", "spark://spark-master:7077"]
    assert "7077:7077" in services["spark-master"]["ports"]
    env = services["airflow-worker"]["environment"]
    import json

    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["conn_type"] == "spark" and conn["host"] == "spark://spark-master" and conn["port"] == 7077
    assert env["KP_SPARK__MASTER"] == "spark://spark-master:7077"
    # executors read and write the same lake as the drivers
    assert any(v.startswith("lake:") for v in services["spark-worker"]["volumes"])


def test_vllm_serves_the_openai_api_to_the_judge(compose):
    vllm = compose["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai")
    assert "--model" in vllm["command"] and "8000:8000" in vllm["ports"]
    env = compose["services"]["airflow-worker-gpu"]["environment"]
    assert env["KP_JUDGE__ENDPOINT"].endswith("http://vllm:8000/v1}") or env["KP_JUDGE__ENDPOINT"] == "http://vllm:8000/v1"
    from keyphrase_pipeline.core.settings import JudgeSettings

    backend = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", env["KP_JUDGE__BACKEND"])
    assert backend in JudgeSettings.model_fields["backend"].annotation.__args__


def test_every_kp_variable_is_a_settings_field(compose):
    known = settings_env_names()
    assert "KP_JUDGE__ENDPOINT" in known and "KP_LAKE_ROOT" in known
    seen = set()
    for name, svc in compose["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("KP_"):
                seen.add(key)
                assert key in known, f"{name}: {key} is not a settings field"
    for line in (REPO / "docker" / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key.startswith("KP_"):
            seen.add(key)
            assert key in known, f"docker/.env.example: {key} is not a settings field"
    assert len(seen) >= 8


def test_compose_values_build_valid_settings(compose):
    """The KP_* values (with compose defaults substituted) load as settings."""
    from keyphrase_pipeline.core.settings import load_settings

    env = compose["services"]["airflow-worker-gpu"]["environment"]
    values: dict = {}
    for key, raw in env.items():
        if not key.startswith("KP_"):
            continue
        value = re.sub(r"\$\{[A-Z_0-9]+:-([^}]*)\}", r"\1", str(raw))
        parts = key[3:].lower().split("__")
        node = values
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    s = load_settings(**values)
    # the GPU worker embeds with its own Spark (local[*]): the spark-worker containers are CPU-only
    assert s.spark.master == "local[*]" and s.judge.backend == "openai"
    assert s.train.device == s.serve.device == s.judge.device == "cuda"
    cpu = compose["services"]["airflow-worker"]["environment"]
    assert cpu.get("KP_SPARK__MASTER", "spark://spark-master:7077") == "spark://spark-master:7077"


def test_dockerfile_installs_the_project_and_java():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "openjdk-17" in text and 'pip install' in text and "apache-airflow-providers-celery" in text
    assert "ENTRYPOINT [\"airflow\"]" in text
