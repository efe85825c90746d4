"""The deployed topology as ONE table: ``docker-compose.yml`` is generated from it, and ``kp cluster`` (the native,
Docker-free cluster of ``keyphrase_pipeline.deploy.cluster``) starts the same services from it.

Each ``Service`` holds what both deployments share: its command line, the environment every Airflow process
gets (``AIRFLOW_ENV``), its health check and, for Celery workers, the queue it consumes. What differs between
the two (host names, ports, paths, secrets, core counts) is a ``{placeholder}`` filled from a context:
``COMPOSE`` (Docker service names, ``${VAR:-default}`` substitutions read from ``docker/.env``) or the native
context that ``cluster.native_context`` builds (127.0.0.1, the configured ports, paths under ``var/cluster``).
Compose-only presentation (image, build, volumes, published ports, GPU reservations, restart policy) is kept
beside the service in ``compose``.

``python -m keyphrase_pipeline.deploy.topology`` rewrites ``docker-compose.yml``; ``tests/deploy/test_topology.py``
fails when the committed file differs from the generated one, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from keyphrase_pipeline.stages import DEFAULT_QUEUE, GPU_QUEUE, LLM_POOL  # noqa: F401 (cluster.py reads them here)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

# The queues and the pool the DAG assigns come from the stage table (keyphrase_pipeline.stages); the pool's size
# is the deployment's (LLM_POOL_SLOTS)
LLM_POOL_DESCRIPTION = "LLM judge workers (one slot per GPU worker)"

# Every Airflow process (api-server, scheduler, dag-processor, triggerer, Celery workers, Spark JVMs that run
# the same image) gets this environment; values are templates over a context (see module docstring).
AIRFLOW_ENV: tuple[tuple[str, str], ...] = (
    ("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor"),
    ("AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"),
    ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "{admin_users}"),
    ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://airflow:{pg_password}@{pg_hostport}/airflow"),
    ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql+psycopg2://airflow:{pg_password}@{pg_hostport}/airflow"),
    ("AIRFLOW__CELERY__BROKER_URL", "redis://:@{redis_host}:{redis_port}/0"),
    ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://{api_host}:{api_port}/execution/"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "{jwt_secret}"),
    ("AIRFLOW__API__SECRET_KEY", "{api_secret_key}"),
    ("AIRFLOW__CORE__DAGS_FOLDER", "{dags_folder}"),
    ("AIRFLOW__CORE__PLUGINS_FOLDER", "{plugins_folder}"),
    ("AIRFLOW__CORE__LOAD_EXAMPLES", "False"),
    ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False"),
    ("AIRFLOW__CORE__PARALLELISM", "{parallelism}"),
    ("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "True"),
    ("AIRFLOW_CONN_SPARK_DEFAULT",
     '{{"conn_type": "spark", "host": "spark://{spark_host}", "port": {spark_port}, "extra": {{"deploy-mode": "client"}}}}'),
    ("KP_LAKE_ROOT", "{lake_root}"),
    ("KP_SPARK__MASTER", "spark://{spark_host}:{spark_port}"),
    ("KP_SPARK__DRIVER_MEMORY", "{spark_driver_memory}"),
    ("KP_SPARK__SHUFFLE_PARTITIONS", "{spark_shuffle_partitions}"),
    ("KP_JUDGE__BACKEND", "{judge_backend}"),
    ("KP_TRUTH_PROVIDER", "{truth_provider}"),
    ("KP_JUDGE__MODEL", "{judge_model}"),
    ("KP_JUDGE__ENDPOINT", "{judge_endpoint}"),
    ("KP_JUDGE__CONCURRENCY", "{judge_concurrency}"),
    ("KP_PAIRS__DAILY_BUDGET", "{daily_budget}"),
    ("KP_TRAIN__DEVICE", "{train_device}"),
    ("KP_SERVE__DEVICE", "{serve_device}"),
    ("KP_SERVE__RERANK_DEPTH", "{rerank_depth}"),
    ("SPARK_LOCAL_IP", "{spark_local_ip}"),
    ("PYSPARK_PYTHON", "{pyspark_python}"),
    ("HF_HUB_OFFLINE", "1"),
)


@dataclasses.dataclass(frozen=True)
class Service:
    """One process of the topology.

    ``kind``: ``postgres`` | ``redis`` | ``airflow-init`` | ``airflow`` | ``spark`` | ``judge``. ``command``: the
    arguments after the program (``airflow``, ``spark-class``, ``redis-server``; templates). ``env``: extra
    environment on top of ``AIRFLOW_ENV`` (templates). ``health``: an HTTP URL template polled until it answers
    200 (``{self}`` is the host the check runs on), or None. ``queue``: the Celery queue a worker consumes.
    ``port``: the context key of the port the service listens on. ``native``: False for services that only exist
    in compose (the native cluster replaces the vLLM server with its own judge server). ``compose``:
    compose-only keys, emitted as is."""

    name: str
    kind: str
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    health: str | None = None
    queue: str | None = None
    port: str | None = None
    native: bool = True
    compose: dict[str, Any] = dataclasses.field(default_factory=dict)


AIRFLOW_INIT_SCRIPT = (
    "set -e\n"
    "airflow db migrate\n"
    'airflow pools set {pool} "$${{LLM_POOL_SLOTS:-2}}" "{pool_description}"\n'
    'echo "keyphrase-pipeline: metadata DB ready, pool {pool} created"\n'
)

SERVICES: tuple[Service, ...] = (
    Service("postgres", "postgres", port="pg_port", compose={
        "image": "postgres:16",
        "environment": {"POSTGRES_USER": "airflow", "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-airflow}",
                        "POSTGRES_DB": "airflow"},
        "volumes": ["postgres-db:/var/lib/postgresql/data"],
        "healthcheck": {"test": ["CMD", "pg_isready", "-U", "airflow"], "interval": "10s", "retries": 5},
        "restart": "always"}),
    Service("redis", "redis", command=("--save", "", "--appendonly", "no"), port="redis_port", compose={
        "image": "redis:7.2-bookworm",
        "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "10s", "retries": 5},
        "restart": "always"}),
    Service("airflow-init", "airflow-init", env=(("LLM_POOL_SLOTS", "{llm_pool_slots}"),)),
    Service("airflow-apiserver", "airflow", command=("api-server", "--port", "{api_port}"),
            health="http://{self}:{api_port}/api/v2/version", port="api_port", compose={
                "ports": ["8080:8080"],
                "healthcheck": {"interval": "30s", "retries": 5}}),
    Service("airflow-scheduler", "airflow", command=("scheduler",), health="http://{self}:{scheduler_health_port}/health",
            port="scheduler_health_port", compose={"healthcheck": {"interval": "30s", "retries": 5}}),
    Service("airflow-dag-processor", "airflow", command=("dag-processor",)),
    Service("airflow-triggerer", "airflow", command=("triggerer",)),
    Service("airflow-worker", "airflow", queue=DEFAULT_QUEUE,
            command=("celery", "worker", "-q", DEFAULT_QUEUE, "--concurrency", "{default_worker_concurrency}")),
    Service("airflow-worker-gpu", "airflow", queue=GPU_QUEUE,
            command=("celery", "worker", "-q", GPU_QUEUE, "--concurrency", "{gpu_worker_concurrency}"),
            env=(("KP_TRAIN__DEVICE", "{gpu_device}"), ("KP_SERVE__DEVICE", "{gpu_device}"),
                 ("KP_JUDGE__DEVICE", "{gpu_device}"),
                 # embedding runs where Spark runs it: on the worker that has the GPU, not on CPU-only executors
                 ("KP_SPARK__MASTER", "{gpu_spark_master}"),
                 ("NVIDIA_VISIBLE_DEVICES", "all")),
            compose={"build": {"context": ".", "dockerfile": "docker/Dockerfile",
                               "args": {"KP_EXTRAS": "gpu,celery", "TORCH_INDEX": "https://download.pytorch.org/whl/cu124"}},
                     "image": "keyphrase-pipeline:gpu",
                     "deploy": {"resources": {"reservations": {"devices": [
                         {"driver": "nvidia", "count": "${GPU_WORKER_GPUS:-1}", "capabilities": ["gpu"]}]}}}}),
    Service("spark-master", "spark", port="spark_ui_port",
            command=("org.apache.spark.deploy.master.Master", "--host", "{spark_host}", "--port", "{spark_port}",
                     "--webui-port", "{spark_ui_port}"),
            health="http://{self}:{spark_ui_port}", compose={
                "ports": ["8081:8081", "7077:7077"], "depends_on": [],
                "healthcheck": {"interval": "30s", "retries": 5}, "restart": "always"}),
    Service("spark-worker", "spark", port="spark_worker_ui_port",
            command=("org.apache.spark.deploy.worker.Worker", "spark://{spark_host}:{spark_port}", "--cores",
                     "{spark_worker_cores}", "--memory", "{spark_worker_memory}", "--webui-port", "{spark_worker_ui_port}"),
            compose={"ports": ["8082:8082"], "depends_on": {"spark-master": {"condition": "service_started"}},
                     "restart": "always"}),
    Service("vllm", "judge", native=False, port="judge_port",
            command=("--model", "${{VLLM_MODEL:-mistralai/Mixtral-8x7B-Instruct-v0.1}}", "--host", "0.0.0.0", "--port",
                     "8000", "--tensor-parallel-size", "${{VLLM_TENSOR_PARALLEL:-2}}", "--max-logprobs", "20"),
            health="http://{self}:8000/health", compose={
                "image": "vllm/vllm-openai:v0.11.0",
                "environment": {"HF_TOKEN": "${HF_TOKEN:-}"},
                "ports": ["8000:8000"],
                "volumes": ["hf-cache:/root/.cache/huggingface"],
                "ipc": "host",
                "deploy": {"resources": {"reservations": {"devices": [
                    {"driver": "nvidia", "count": "${VLLM_GPUS:-2}", "capabilities": ["gpu"]}]}}},
                "healthcheck": {"interval": "30s", "retries": 20},
                "restart": "always"}),
)

# Docker compose's context: service names as hosts, in-container paths, ${VAR:-default} from docker/.env.
COMPOSE: dict[str, str] = {
    "self": "localhost",
    "admin_users": "${AIRFLOW_ADMIN_USERS:-admin:admin}",
    "pg_password": "${POSTGRES_PASSWORD:-airflow}",
    "pg_hostport": "postgres",
    "pg_port": "5432",
    "redis_host": "redis",
    "redis_port": "6379",
    "api_host": "airflow-apiserver",
    "api_port": "8080",
    "scheduler_health_port": "8974",
    "jwt_secret": "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET in docker/.env}",
    "api_secret_key": "${AIRFLOW_API_SECRET_KEY:?set AIRFLOW_API_SECRET_KEY in docker/.env}",
    "dags_folder": "/opt/keyphrase/dags",
    "plugins_folder": "/opt/keyphrase/plugins",
    "parallelism": "16",
    "spark_host": "spark-master",
    "spark_port": "7077",
    "spark_ui_port": "8081",
    "spark_worker_ui_port": "8082",
    "spark_worker_cores": "4",
    "spark_worker_memory": "8g",
    "lake_root": "${KP_LAKE_ROOT:-/opt/keyphrase/var/lake}",
    "spark_driver_memory": "4g",
    "spark_shuffle_partitions": "64",
    "judge_backend": "${KP_JUDGE__BACKEND:-openai}",
    "truth_provider": "${KP_TRUTH_PROVIDER:-}",
    "judge_model": "${KP_JUDGE__MODEL:-mistralai/Mixtral-8x7B-Instruct-v0.1}",
    "judge_endpoint": "${KP_JUDGE__ENDPOINT:-http://vllm:8000/v1}",
    "judge_port": "8000",
    "judge_concurrency": "${KP_JUDGE__CONCURRENCY:-16}",
    "daily_budget": "${KP_PAIRS__DAILY_BUDGET:-4000}",
    "train_device": "${KP_TRAIN__DEVICE:-auto}",
    "serve_device": "${KP_SERVE__DEVICE:-auto}",
    "rerank_depth": "${KP_SERVE__RERANK_DEPTH:-0}",
    "gpu_device": "cuda",
    "gpu_spark_master": "local[*]",
    "spark_local_ip": "",
    "pyspark_python": "/usr/local/bin/python",
    "llm_pool_slots": "${LLM_POOL_SLOTS:-2}",
    "default_worker_concurrency": "4",
    "gpu_worker_concurrency": "1",
}


def render(template: str, ctx: dict[str, str]) -> str:
    """``template`` with its ``{key}`` placeholders filled from ``ctx`` (``str.format``; ``{{``/``}}`` are literal
    braces). Raises KeyError naming a placeholder that ``ctx`` lacks."""
    return template.format(**ctx)


def service(name: str) -> Service:
    """The service called ``name``; KeyError when there is none."""
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no service {name!r} in the topology; known: {[s.name for s in SERVICES]}")


def airflow_env(ctx: dict[str, str], svc: Service | None = None) -> dict[str, str]:
    """The environment of an Airflow process: ``AIRFLOW_ENV`` then ``svc.env``, rendered with ``ctx`` (ordered)."""
    env = {key: render(value, ctx) for key, value in AIRFLOW_ENV}
    for key, value in (svc.env if svc else ()):
        env[key] = render(value, ctx)
    return env


def command(svc: Service, ctx: dict[str, str]) -> list[str]:
    """``svc.command`` rendered with ``ctx`` (the arguments after the program)."""
    return [render(arg, ctx) for arg in svc.command]


def pool_slots_per_gpu_worker() -> int:
    """Slots of pool ``llm`` per ``gpu`` worker: one, the worker's concurrency (``--concurrency 1``)."""
    return 1


# ---- docker-compose.yml --------------------------------------------------------------------------------
COMPOSE_HEADER = """\
# keyphrase-pipeline cluster: Airflow 3 (CeleryExecutor) + Spark standalone + a vLLM judge server.
# GENERATED from keyphrase_pipeline/deploy/topology.py (the table `kp cluster` also starts natively, without
# Docker): edit the table, then `python -m keyphrase_pipeline.deploy.topology` (tests/deploy/test_topology.py checks).
#
#   cp docker/.env.example docker/.env      # then edit secrets, model, GPU counts
#   docker compose --env-file docker/.env up -d --build
#   open http://localhost:8080  (user admin; password: docker compose exec airflow-apiserver \\
#        cat /opt/airflow/simple_auth_manager_passwords.json.generated)
#
# GPU services (airflow-worker-gpu, vllm) need the NVIDIA Container Toolkit. Without GPUs:
#   docker compose --env-file docker/.env up -d --scale airflow-worker-gpu=0 --scale vllm=0
# and set KP_JUDGE__BACKEND=simulated + KP_TRUTH_PROVIDER=keyphrase_pipeline.synthetic.world:load_truth (demo) or an external
# OpenAI-compatible endpoint; the gpu queue then
# needs a worker: add "-q default,gpu" to airflow-worker. See docs/OPERATIONS.md.
"""

SERVICE_COMMENTS = {
    "airflow-worker": "CPU worker: queue \"default\" (Spark drivers, evaluation, index, recommend, publish)",
    "airflow-worker-gpu": "GPU worker: queue \"gpu\" (LLM labelling shards, cross-encoder and bi-encoder training, embedding)",
    "spark-master": "Spark standalone cluster from the same image (same Spark and Python versions as the drivers)",
    "vllm": "The LLM judge: vLLM's OpenAI-compatible server (keyphrase_pipeline.labels.judges.openai_judge talks to it)",
}

COMPOSE_VOLUMES = ("postgres-db", "airflow-home", "lake", "hf-cache")
AIRFLOW_VOLUMES = ("./dags:/opt/keyphrase/dags", "./plugins:/opt/keyphrase/plugins", "./jobs:/opt/keyphrase/jobs",
                   "./keyphrase_pipeline:/opt/keyphrase/keyphrase_pipeline", "lake:/opt/keyphrase/var/lake",
                   "airflow-home:/opt/airflow")


class _Dumper(yaml.SafeDumper):
    """Block YAML the way docker-compose files are written: list items indented under their key, strings that
    need quotes (and ``host:container`` port pairs, comma lists) in double quotes."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str):
    node = dumper.represent_scalar("tag:yaml.org,2002:str", value)
    if '"' in value and "'" not in value:
        node.style = "'"  # JSON inside: single quotes keep it readable
    elif (value == "" or not isinstance(yaml.safe_load(value), str) or re.fullmatch(r"\d+:\d+", value)
          or "," in value):
        node.style = '"'
    return node


_Dumper.add_representer(str, _represent_str)


def _dump(value: Any, indent: int) -> str:
    """``value`` as block YAML, every line indented by ``indent`` spaces (no trailing newline)."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10_000,
                     allow_unicode=True)
    return "\n".join(" " * indent + line for line in text.rstrip("\n").splitlines())


def _flow(values: list[str], indent: int = 4, key: str = "command", width: int = 122) -> str:
    """``key: ["a", "b", ...]`` in YAML flow style (JSON quoting is valid YAML), wrapped before ``width``
    columns with continuation lines aligned after the bracket."""

    head = " " * indent + f"{key}: ["
    lines, line = [], head
    for i, v in enumerate(values):
        item = json.dumps(v) + ("," if i < len(values) - 1 else "]")
        if len(line) + len(item) + 1 > width and line != head:
            lines.append(line.rstrip())
            line = " " * len(head)
        line += item + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


def _healthcheck(svc: Service) -> dict | None:
    hc = svc.compose.get("healthcheck")
    if hc is None:
        return None
    if "test" in hc:
        return hc
    url = render(svc.health or "", COMPOSE)
    return {"test": ["CMD", "curl", "--fail", url], **hc}


def compose_text() -> str:
    """The text of ``docker-compose.yml``, generated from ``SERVICES``, ``AIRFLOW_ENV`` and ``COMPOSE``."""
    env = airflow_env(COMPOSE)
    env_lines = []
    for key, value in env.items():
        env_lines.append(_dump({key: value}, 4))
        if key == "KP_JUDGE__BACKEND":
            env_lines.append("    # ground truth for evaluation and the UI (keyphrase_pipeline.core.truth): empty in "
                             "production; the demo world\n    # (KP_JUDGE__BACKEND=simulated, DAG param `scale`) sets "
                             "keyphrase_pipeline.synthetic.world:load_truth in docker/.env")
    out = [COMPOSE_HEADER,
           "x-airflow-common: &airflow-common",
           "  build:\n    context: .\n    dockerfile: docker/Dockerfile",
           "  image: keyphrase-pipeline:latest",
           '  user: "${AIRFLOW_UID:-50000}:0"',
           "  environment: &airflow-env",
           *env_lines,
           "  volumes: &airflow-volumes",
           "\n".join(f"    - {v}" + ("  # the package (synthetic/: the simulated judge, demo worlds)"
                                      if v.startswith("./keyphrase_pipeline") else "") for v in AIRFLOW_VOLUMES),
           "  depends_on: &airflow-depends",
           _dump({"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}, 4),
           "",
           "services:"]
    init_needed = {"airflow-init": {"condition": "service_completed_successfully"}}
    for svc in SERVICES:
        body: list[str] = []
        if svc.name in SERVICE_COMMENTS:
            body.append(f"  # {SERVICE_COMMENTS[svc.name]}")
        body.append(f"  {svc.name}:")
        if svc.kind == "judge":
            body.append(_dump({"image": svc.compose["image"]}, 4))
            body.append(_flow(command(svc, COMPOSE)))
            body.append(_dump({k: v for k, v in svc.compose.items() if k not in ("image", "healthcheck", "restart")}, 4))
        elif svc.kind in ("postgres", "redis"):
            body.append(_dump({k: v for k, v in svc.compose.items() if k not in ("healthcheck", "restart")}, 4))
            if svc.kind == "redis":
                body.append(_flow(["redis-server", *command(svc, COMPOSE)]))
        elif svc.kind == "airflow-init":
            body.append("    <<: *airflow-common\n    entrypoint: /bin/bash\n    command:\n      - -c\n      - |")
            script = AIRFLOW_INIT_SCRIPT.format(pool=LLM_POOL, pool_description=LLM_POOL_DESCRIPTION)
            body.append("\n".join("        " + line for line in script.rstrip("\n").splitlines()))
            body.append("    environment:\n      <<: *airflow-env")
            body.append(_dump({k: render(v, COMPOSE) for k, v in svc.env}, 6))
            body.append('    restart: "no"')
        else:
            body.append("    <<: *airflow-common")
            if "build" in svc.compose:
                body.append(_dump({"build": svc.compose["build"], "image": svc.compose["image"]}, 4))
            if svc.kind == "spark":
                body.append('    entrypoint: ["spark-class"]')
            args = command(svc, COMPOSE)
            body.append(_flow(args))
            if svc.env:
                body.append("    environment:\n      <<: *airflow-env")
                body.append(_dump({k: render(v, COMPOSE) for k, v in svc.env if k not in ("NVIDIA_VISIBLE_DEVICES",)}
                                  | {k: v for k, v in svc.env if k == "NVIDIA_VISIBLE_DEVICES"}, 6))
            if "deploy" in svc.compose:
                body.append(_dump({"deploy": svc.compose["deploy"]}, 4))
            if "ports" in svc.compose:
                body.append(_dump({"ports": svc.compose["ports"]}, 4))
            if svc.kind == "spark" and "depends_on" in svc.compose:
                deps = svc.compose["depends_on"]
                body.append("    depends_on: []" if deps == [] else _dump({"depends_on": deps}, 4))
        hc = _healthcheck(svc)
        if hc is not None:
            body.append("    healthcheck:")
            body.append(_flow(hc["test"], indent=6, key="test"))
            body.append(_dump({k: v for k, v in hc.items() if k != "test"}, 6))
        if svc.kind == "airflow":
            body.append("    depends_on:\n      <<: *airflow-depends")
            body.append(_dump(init_needed, 6))
        if svc.kind != "airflow-init":
            body.append("    restart: always")
        out.append("\n".join(body) + "\n")
    out.append("volumes:\n" + "\n".join(f"  {v}:" for v in COMPOSE_VOLUMES))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``docker-compose.yml`` from the table (``--check``: exit 1 when the file differs instead)."""
    argv = sys.argv[1:] if argv is None else argv
    text = compose_text()
    if "--check" in argv:
        same = COMPOSE_FILE.read_text() == text
        print("docker-compose.yml is up to date" if same else "docker-compose.yml differs from the table: "
              "run python -m keyphrase_pipeline.deploy.topology")
        return 0 if same else 1
    COMPOSE_FILE.write_text(text)
    print(f"wrote {COMPOSE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
