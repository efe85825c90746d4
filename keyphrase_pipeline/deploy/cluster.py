"""``make cluster``: the deployed topology (``keyphrase_pipeline.deploy.topology``, the table docker-compose.yml is
generated from) started natively on localhost, without Docker, as separate processes.

=====================  ======================================================  ==========================
process                program                                                 default port(s)
=====================  ======================================================  ==========================
postgres               PostgreSQL server (Debian ``postgresql``), as user      5433
                       ``postgres``; Airflow's metadata DB ``airflow``
redis                  ``redis-server`` (Debian ``redis-server``): Celery      6380
                       broker
judge                  ``kp llm-server``: vLLM's OpenAI-compatible server      8000 (``/v1``)
                       (CPU build) with SmolLM2-135M-Instruct; with
                       ``CLUSTER_JUDGE=stand-in`` the simulated annotator
                       (``keyphrase_pipeline.synthetic.judge_server``)
spark-master           ``spark-class ...deploy.master.Master`` (pyspark)       7077, UI 8081
spark-worker-1/2       ``spark-class ...deploy.worker.Worker``, 1 core each    UI 8082, 8083
airflow-apiserver      ``airflow api-server``                                  8080
airflow-scheduler      ``airflow scheduler`` (CeleryExecutor)                  health 8974
airflow-dag-processor  ``airflow dag-processor``
airflow-triggerer      ``airflow triggerer``                                   log server 8794
airflow-worker         ``airflow celery worker -q default``                    log server 8793
airflow-worker-gpu     ``airflow celery worker -q gpu --concurrency 1``        log server 8795
=====================  ======================================================  ==========================

Ports: ``CLUSTER_PORTS="api_port=8090,pg_port=5544"`` or ``kp cluster up --ports ...`` (keys: ``PORT_KEYS``);
the ports of a running cluster are kept in ``var/cluster/cluster.json`` and reused by ``status``/``down``.
Everything lives under ``var/cluster/`` (``CLUSTER_DIR`` moves it): ``logs/<process>.log``,
``pids/<process>.json`` (pid + start time, so a recycled pid is never signalled), ``postgres/data``,
``airflow/`` (AIRFLOW_HOME), ``spark/``, ``secrets.json`` (JWT/API secrets, the DB password; mode 0600).

``up`` is idempotent (a process whose pid file names a live process is left alone; one whose port is taken by
something else is refused, naming the port), checks every program it needs first and refuses with the missing
package named (``ClusterError``, exit 2), then starts the processes in dependency order and waits until each is
healthy (``HEALTH_TIMEOUT_S``). ``down`` stops them in reverse order (SIGTERM to the process group, SIGINT for
PostgreSQL's fast shutdown; SIGKILL after ``STOP_TIMEOUT_S``) and is idempotent too. ``status`` prints each
process's pid, health and resident memory (RSS of the process tree), exit code 0 only when all are healthy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import importlib.util
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.deploy import topology

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

REPO = topology.REPO
log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
STAND_IN_MODEL = "STAND-IN:simulated-annotator-v1 (not an LLM)"  # = synthetic.judge_server.STAND_IN_MODEL
STAND_IN_LLM_MODEL = "STAND-IN:simulated-llm-annotator-v1 (not an LLM)"  # = judge_server.STAND_IN_LLM_MODEL
#: ``CLUSTER_JUDGE``: ``vllm`` (default) runs a real LLM, SmolLM2-135M-Instruct on vLLM's CPU build (``kp llm-server``
#: from ``make llm-server-deps``'s virtualenv); ``stand-in`` the simulated annotator behind the OpenAI protocol
#: (``keyphrase_pipeline.synthetic.judge_server``: instant, for quick runs and the fault cases).
JUDGES = ("vllm", "stand-in")
VLLM_MODEL = "smollm2-135m"  # the name the server serves var/models/smollm2-135m under
VLLM_HEALTH_TIMEOUT_S = 900.0  # a CPU engine compiles for 1-3 minutes, more on a busy machine

DEFAULT_PORTS: dict[str, int] = {
    "pg_port": 5433,
    "redis_port": 6380,
    "judge_port": 8000,
    "spark_port": 7077,
    "spark_ui_port": 8081,
    "spark_worker_ui_port": 8082,  # worker i listens on this + i - 1
    "api_port": 8080,
    "scheduler_health_port": 8974,
    "worker_log_port": 8793,
    "trigger_log_port": 8794,
    "gpu_worker_log_port": 8795,
}
PORT_KEYS = tuple(DEFAULT_PORTS)
SPARK_WORKERS = 2
GPU_WORKERS = 1


class ClusterError(ConfigError):
    """The cluster cannot start (a program or package is missing, a port is taken, a process never became
    healthy): exit code 2, the message names what to install or free."""


# ---- configuration ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Cluster:
    """Where the native cluster lives and which ports it uses."""

    root: Path
    ports: dict[str, int]
    judge: str = "vllm"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"


def parse_ports(text: str) -> dict[str, int]:
    """``"api_port=8090,pg_port=5544"`` -> ``{"api_port": 8090, "pg_port": 5544}``.

    Raises ClusterError for an unknown key or a value that is not a port number (1-65535)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULT_PORTS:
            raise ClusterError(f"cluster port {part!r}: expected KEY=PORT with KEY one of {', '.join(PORT_KEYS)}")
        try:
            port = int(value)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ClusterError(f"cluster port {key}={value!r} is not a port number (1-65535)")
        out[key] = port
    return out


def load_cluster(root: str | os.PathLike | None = None, ports: str | None = None) -> Cluster:
    """The cluster under ``root`` (default ``$CLUSTER_DIR`` or ``var/cluster``): the ports recorded by a previous
    ``up``, else the defaults, overridden by ``$CLUSTER_PORTS`` then ``ports``."""
    root = Path(root or os.environ.get("CLUSTER_DIR") or REPO / "var" / "cluster").resolve()
    chosen = dict(DEFAULT_PORTS)
    judge = "vllm"
    state = root / "cluster.json"
    if state.exists():
        try:
            recorded = json.loads(state.read_text())
            chosen.update({k: int(v) for k, v in recorded.get("ports", {}).items() if k in DEFAULT_PORTS})
            judge = recorded.get("judge", judge)
        except (OSError, ValueError):
            pass
    chosen.update(parse_ports(os.environ.get("CLUSTER_PORTS", "")))
    chosen.update(parse_ports(ports or ""))
    judge = os.environ.get("CLUSTER_JUDGE") or judge
    if judge not in JUDGES:
        raise ClusterError(f"CLUSTER_JUDGE={judge!r}: choose one of {', '.join(JUDGES)}")
    return Cluster(root, chosen, judge)


def vllm_python() -> str:
    """The vLLM virtualenv's interpreter, as ``kp llm-server`` resolves it (``vllm_server.server_python``)."""
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.labels.judges.vllm_runtime import resolve_python

    return resolve_python(load_settings())


def stand_in_model() -> str:
    """The stand-in's served name: its annotator's judge id (``judge.simulated_errors`` llm: the LLM-like one), so
    labels of the two annotators never share a pair_key; read from the settings as the stand-in reads it
    (``synthetic.judge_server.stand_in_model``, which core may not import)."""
    from keyphrase_pipeline.core.settings import load_settings

    if load_settings().judge.simulated_errors == "llm":
        return STAND_IN_LLM_MODEL
    return STAND_IN_MODEL


def cluster_secrets(cl: Cluster) -> dict[str, str]:
    """The cluster's secrets (JWT secret, API secret key, DB password), created once in ``secrets.json`` (0600)."""
    path = cl.root / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    cl.root.mkdir(parents=True, exist_ok=True)
    values = {"jwt_secret": secrets.token_urlsafe(48), "api_secret_key": secrets.token_urlsafe(24),
              "pg_password": secrets.token_hex(12)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    return values


def native_context(cl: Cluster, secret: dict[str, str] | None = None) -> dict[str, str]:
    """The values that fill the topology's templates for this machine (see ``topology.COMPOSE`` for Docker's)."""
    secret = secret or cluster_secrets(cl)
    p = {k: str(v) for k, v in cl.ports.items()}
    return {
        "self": "127.0.0.1",
        "admin_users": os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"),
        "pg_password": secret["pg_password"],
        "pg_hostport": f"127.0.0.1:{p['pg_port']}",
        "redis_host": "127.0.0.1",
        "api_host": "127.0.0.1",
        "jwt_secret": secret["jwt_secret"],
        "api_secret_key": secret["api_secret_key"],
        "dags_folder": str(REPO / "dags"),
        "plugins_folder": str(REPO / "plugins"),
        "parallelism": "4",
        "spark_host": "127.0.0.1",
        "spark_worker_cores": "1",
        "spark_worker_memory": "1g",
        "lake_root": os.environ.get("KP_LAKE_ROOT", str(REPO / "var" / "lake")),
        "spark_driver_memory": "1g",
        "spark_shuffle_partitions": "4",
        "judge_backend": "openai",
        "truth_provider": os.environ.get("KP_TRUTH_PROVIDER", "keyphrase_pipeline.synthetic.world:load_truth"),
        "judge_model": VLLM_MODEL if cl.judge == "vllm" else stand_in_model(),
        "judge_endpoint": f"http://127.0.0.1:{p['judge_port']}/v1",
        "judge_concurrency": "4",
        "daily_budget": os.environ.get("KP_PAIRS__DAILY_BUDGET", "4000"),
        "train_device": "cpu",
        "serve_device": "cpu",
        "rerank_depth": os.environ.get("KP_SERVE__RERANK_DEPTH", "0"),
        "gpu_device": "cpu",  # the "gpu" worker of a CPU machine: same queue, CPU torch
        "gpu_spark_master": f"spark://127.0.0.1:{p['spark_port']}",  # CPU executors serve a CPU "gpu" worker
        "spark_local_ip": "127.0.0.1",
        "pyspark_python": sys.executable,
        "llm_pool_slots": str(GPU_WORKERS * topology.pool_slots_per_gpu_worker()),
        "default_worker_concurrency": "2",
        "gpu_worker_concurrency": "1",
        **p,
    }


def base_env(cl: Cluster) -> dict[str, str]:
    """The environment every process starts from: ``os.environ`` without the caller's Airflow/KP settings (the
    cluster's own come from the table), this interpreter's ``bin`` first on PATH, offline Hugging Face."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "KP_")) and k not in ("AIRFLOW_HOME", "PYSPARK_PYTHON")}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    # the checkout that started the cluster first on the path: its tasks run this code, not whatever checkout a
    # shared virtualenv's editable install points at
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def passthrough_settings(table_env: dict[str, str]) -> dict[str, str]:
    """The caller's ``KP_*`` settings that the table does not set (``KP_TRAIN__*``, ``KP_SYNTH__SEED``, ...): the
    processes started by ``up`` get them, so ``KP_TRAIN__DEVICE=cpu make cluster`` works as with ``make airflow``.
    The table's own ``KP_*`` values (lake, Spark master, judge endpoint) are not overridden this way."""
    return {k: v for k, v in os.environ.items() if k.startswith("KP_") and k not in table_env and k != "KP_RUN_SLOW"}


# Airflow settings a caller may pass to the cluster's Airflow processes (the rest come from the table): the fault
# cases (``cluster_e2e --faults``) shorten the time after which a task whose worker was killed is failed and retried.
CALLER_AIRFLOW_SETTINGS = ("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",)


def airflow_process_env(cl: Cluster, ctx: dict[str, str], svc: topology.Service | None = None) -> dict[str, str]:
    """Environment of an Airflow process of the native cluster: the table's (``topology.airflow_env``) plus what
    only a one-machine deployment needs (AIRFLOW_HOME, distinct log-server ports, the api-server port) and the
    caller's other ``KP_*`` settings (``passthrough_settings``)."""
    env = base_env(cl)
    table = topology.airflow_env(ctx, svc)
    env.update(passthrough_settings(table))
    env.update(table)
    env.update({
        "AIRFLOW_HOME": str(cl.airflow_home),
        "AIRFLOW__API__PORT": ctx["api_port"],
        "AIRFLOW__API__HOST": "127.0.0.1",  # one machine: nothing listens beyond localhost
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": ctx["scheduler_health_port"],
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": ctx["gpu_worker_log_port" if svc and svc.queue == topology.GPU_QUEUE
                                                        else "worker_log_port"],
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": ctx["trigger_log_port"],
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "True",
    })
    env.update({k: os.environ[k] for k in CALLER_AIRFLOW_SETTINGS if os.environ.get(k)})
    return env


# ---- programs and refusal ----------------------------------------------------------------------------------
def find_postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program (``postgres``, ``initdb``, ``pg_isready``, ``createdb``): on PATH, else the
    newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off PATH)."""

    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    return cands[-1] if cands else None


def spark_class() -> str | None:
    """``spark-class`` of the installed pyspark (its ``bin/``), or None."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "bin" / "spark-class"
    return str(path) if path.exists() else None


def _dist(name: str) -> str | None:
    """The installed version of distribution ``name`` or None (without importing it: importing ``airflow``
    here would read a config before the cluster's environment is set)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# (what, how to find it, the package that provides it)
REQUIREMENTS: tuple[tuple[str, Callable[[], str | None], str], ...] = (
    ("PostgreSQL server (postgres)", lambda: find_postgres_bin("postgres"), "Debian package `postgresql` (apt-get install postgresql)"),
    ("PostgreSQL initdb", lambda: find_postgres_bin("initdb"), "Debian package `postgresql` (apt-get install postgresql)"),
    ("PostgreSQL pg_isready", lambda: find_postgres_bin("pg_isready"), "Debian package `postgresql-client` (apt-get install postgresql)"),
    ("Redis server (redis-server)", lambda: shutil.which("redis-server"), "Debian package `redis-server` (apt-get install redis-server)"),
    ("Java runtime (java)", lambda: shutil.which("java"), "Debian package `openjdk-17-jre-headless`"),
    ("Spark launcher (spark-class)", spark_class, "PyPI package `pyspark` (the project's dependency)"),
    ("Airflow CLI (airflow)", lambda: shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which("airflow"),
     "PyPI package `apache-airflow` (the project's dependency)"),
    ("Airflow Celery provider", lambda: _dist("apache-airflow-providers-celery"),
     "PyPI package `apache-airflow-providers-celery` (pip install -e '.[cluster]')"),
    ("Redis client for Celery", lambda: importlib.util.find_spec("redis") and "ok",
     "PyPI package `redis` (pip install -e '.[cluster]')"),
    ("PostgreSQL driver (psycopg2)", lambda: importlib.util.find_spec("psycopg2") and "ok",
     "PyPI package `psycopg2-binary` (pip install -e '.[cluster]')"),
    ("PostgreSQL async driver (asyncpg)", lambda: importlib.util.find_spec("asyncpg") and "ok",
     "PyPI package `asyncpg` (pip install -e '.[cluster]'; Airflow 3 opens an async engine on its metadata DB)"),
    ("judge server (uvicorn, fastapi)", lambda: importlib.util.find_spec("uvicorn") and importlib.util.find_spec("fastapi") and "ok",
     "PyPI packages `uvicorn` and `fastapi` (installed with apache-airflow)"),
)


def missing_requirements(requirements=None) -> list[str]:
    """One line per program/package the cluster needs and cannot find: ``"<what> not found: install <package>"``
    (``requirements`` defaults to ``REQUIREMENTS``)."""
    out = []
    for what, find, package in (REQUIREMENTS if requirements is None else requirements):
        try:
            ok = find()
        except (ImportError, ValueError):
            ok = None
        if not ok:
            out.append(f"{what} not found: install {package}")
    return out


def check_requirements(requirements=None) -> None:
    """Raise ClusterError listing every missing program/package (nothing is started then)."""
    missing = missing_requirements(requirements)
    if missing:
        raise ClusterError("cannot start the cluster:\n  " + "\n  ".join(missing))


# ---- processes ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Proc:
    """One native process: ``argv``, ``env``, the user it runs as (None: the caller), ``health`` (a callable
    returning (ok, detail)), the port it must find free, the signal that stops it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health: Callable[[], tuple[bool, str]]
    port: int | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    cwd: str | None = None
    prepare: Callable[[], None] | None = None
    health_timeout_s: float | None = None  # longer than up()'s for a slow starter (the vLLM engine)


def _pidfile(cl: Cluster, name: str) -> Path:
    return cl.pids / f"{name}.json"


def running_pid(cl: Cluster, name: str) -> int | None:
    """The pid of ``name`` when its pid file names a live process started at the recorded time, else None (a
    stale pid file, e.g. after a reboot or a recycled pid, counts as not running)."""
    import psutil

    path = _pidfile(cl, name)
    try:
        rec = json.loads(path.read_text())
        proc = psutil.Process(int(rec["pid"]))
        if abs(proc.create_time() - float(rec["create_time"])) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.pid
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


def port_key(cl: Cluster, port: int) -> str:
    """The ``CLUSTER_PORTS`` key that sets ``port`` (a Spark worker's UI port counts from ``spark_worker_ui_port``)."""
    for key, value in cl.ports.items():
        if value == port:
            return key
    base = cl.ports["spark_worker_ui_port"]
    return "spark_worker_ui_port" if base <= port < base + SPARK_WORKERS else "?"


def port_holder(port: int) -> str:
    """``", held by pid N (name)"`` for the process listening on TCP ``port`` when it can be seen, else ``""``."""
    try:
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return f", held by pid {c.pid} ({psutil.Process(c.pid).name()})"
    except Exception:  # noqa: BLE001 - no permission or the process just exited: the port alone is still said
        pass
    return ""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(True, body prefix) when GET ``url`` answers 200, else (False, why). Never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, resp.read(300).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def http_json(url: str, timeout: float = 3.0):
    """GET ``url`` as JSON, or None on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def redis_ping(port: int) -> tuple[bool, str]:
    """Redis ``PING`` over a raw socket: (True, "PONG") when the server answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
        return answer.startswith(b"+PONG"), answer.decode("ascii", "replace").strip()
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def start(cl: Cluster, p: Proc) -> int:
    """Start ``p`` detached (own session/process group), stdout+stderr appended to ``logs/<name>.log``; record
    its pid and start time. Returns the pid."""
    import psutil

    cl.logs.mkdir(parents=True, exist_ok=True)
    cl.pids.mkdir(parents=True, exist_ok=True)
    if p.prepare:
        p.prepare()
    with open(cl.logs / f"{p.name}.log", "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} kp cluster: starting {p.name}: "
                  f"{' '.join(p.argv)}\n".encode())
        out.flush()
        kwargs = {"user": p.user} if p.user and os.geteuid() == 0 else {}
        proc = subprocess.Popen(p.argv, env=p.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=p.cwd or str(REPO), start_new_session=True, **kwargs)
    rec = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "argv": p.argv,
           "port": p.port, "stop_signal": int(p.stop_signal)}
    _pidfile(cl, p.name).write_text(json.dumps(rec))
    return proc.pid


def stop(cl: Cluster, name: str, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Stop ``name``: its stop signal to its process group, then SIGKILL after ``timeout_s``. Returns what
    happened (``"stopped"``, ``"killed"``, ``"not running"``); the pid file is removed."""
    import psutil

    pid = running_pid(cl, name)
    path = _pidfile(cl, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return "not running"
    rec = json.loads(path.read_text())
    sig = int(rec.get("stop_signal", signal.SIGTERM))
    proc = psutil.Process(pid)
    try:
        group = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        group = [proc]
    try:
        os.killpg(pid, sig)  # start_new_session: the process group id is the pid
    except ProcessLookupError:
        pass
    gone, alive = psutil.wait_procs(group, timeout=timeout_s)
    what = "stopped"
    if alive:
        for q in alive:
            try:
                q.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        what = "killed"
    path.unlink(missing_ok=True)
    return what


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB (0 when gone)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


# ---- the topology, natively --------------------------------------------------------------------------------
def processes(cl: Cluster, ctx: dict[str, str] | None = None) -> list[Proc]:
    """Every native process in start order (postgres, redis, judge, Spark, Airflow), from the topology table."""
    ctx = ctx or native_context(cl)
    env = base_env(cl)
    procs: list[Proc] = []
    pg_data = cl.root / "postgres" / "data"
    pg_user = "postgres" if os.geteuid() == 0 else None
    pg_isready = find_postgres_bin("pg_isready") or "pg_isready"

    def pg_health() -> tuple[bool, str]:
        r = subprocess.run([pg_isready, "-h", "127.0.0.1", "-p", ctx["pg_port"], "-d", "airflow", "-U", "airflow"],
                           capture_output=True, text=True)
        return r.returncode == 0, r.stdout.strip()

    procs.append(Proc("postgres", [find_postgres_bin("postgres") or "postgres", "-D", str(pg_data),
                                   "-p", ctx["pg_port"], "-h", "127.0.0.1", "-c", "unix_socket_directories=",
                                   "-c", "max_connections=200"],
                      env, pg_health, int(ctx["pg_port"]), user=pg_user, stop_signal=signal.SIGINT,
                      prepare=lambda: init_postgres(cl, ctx, pg_user)))
    redis = topology.service("redis")
    procs.append(Proc("redis", ["redis-server", "--port", ctx["redis_port"], "--bind", "127.0.0.1",
                                "--dir", str(cl.root / "redis"), *topology.command(redis, ctx)],
                      env, lambda: redis_ping(int(ctx["redis_port"])), int(ctx["redis_port"]),
                      prepare=lambda: (cl.root / "redis").mkdir(parents=True, exist_ok=True)))
    judge_env = dict(env)
    table_kp = {k: v for k, v in topology.airflow_env(ctx).items() if k.startswith("KP_")}
    judge_env.update(passthrough_settings(table_kp))  # e.g. KP_SYNTH__SEED: the simulated annotator's seed
    judge_env.update(table_kp)
    if cl.judge == "vllm":  # a real LLM: SmolLM2-135M on vLLM's CPU build, as the vllm service of the compose file
        judge_env.update({"KP_JUDGE__VLLM__DTYPE": "float32", "KP_JUDGE__VLLM__MAX_MODEL_LEN": "1024"})
        kp = shutil.which("kp", path=str(Path(sys.executable).parent)) or "kp"
        procs.append(Proc("judge", [kp, "llm-server", "--host", "127.0.0.1", "--port", ctx["judge_port"]],
                          judge_env, lambda: http_ok(f"http://127.0.0.1:{ctx['judge_port']}/health"),
                          int(ctx["judge_port"]), cwd=str(REPO), health_timeout_s=VLLM_HEALTH_TIMEOUT_S))
    else:
        procs.append(Proc("judge", [sys.executable, "-m", "keyphrase_pipeline.synthetic.judge_server",
                                    "--host", "127.0.0.1", "--port", ctx["judge_port"]],
                          judge_env, lambda: http_ok(f"http://127.0.0.1:{ctx['judge_port']}/health"),
                          int(ctx["judge_port"])))
    spark_env = dict(env)
    spark_env.update({"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                      "SPARK_LOG_DIR": str(cl.root / "spark"), "SPARK_WORKER_DIR": str(cl.root / "spark" / "work")})
    master = topology.service("spark-master")
    master_env = dict(spark_env, SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false")  # no REST submission port
    procs.append(Proc("spark-master", [spark_class() or "spark-class", *topology.command(master, ctx)], master_env,
                      lambda: spark_master_health(ctx), int(ctx["spark_port"])))
    worker = topology.service("spark-worker")
    for i in range(1, SPARK_WORKERS + 1):
        wctx = dict(ctx, spark_worker_ui_port=str(int(ctx["spark_worker_ui_port"]) + i - 1))
        wdir = cl.root / "spark" / f"worker-{i}"
        procs.append(Proc(f"spark-worker-{i}", [spark_class() or "spark-class", *topology.command(worker, wctx),
                                                "--host", "127.0.0.1", "--work-dir", str(wdir)],
                          spark_env, (lambda port=wctx["spark_worker_ui_port"]: spark_worker_health(port)),
                          int(wctx["spark_worker_ui_port"]),
                          prepare=lambda d=wdir: d.mkdir(parents=True, exist_ok=True)))
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    for svc in topology.SERVICES:
        if svc.kind != "airflow":
            continue
        name = svc.name
        argv = [airflow, *topology.command(svc, ctx)]
        if svc.queue:
            argv += ["--celery-hostname", f"{svc.queue}@%h"]
        if svc.health:
            url = topology.render(svc.health, ctx)
            if name == "airflow-apiserver":
                url = f"http://127.0.0.1:{ctx['api_port']}/api/v2/monitor/health"
            health = functools.partial(http_ok, url)
        elif name in ("airflow-dag-processor", "airflow-triggerer"):
            health = functools.partial(component_health, ctx, name.split("-", 1)[1].replace("-", "_"))
        else:
            health = functools.partial(celery_health, cl, ctx, svc.queue)
        port = {"airflow-apiserver": "api_port", "airflow-scheduler": "scheduler_health_port",
                "airflow-triggerer": "trigger_log_port", "airflow-worker": "worker_log_port",
                "airflow-worker-gpu": "gpu_worker_log_port"}.get(name)
        procs.append(Proc(name, argv, airflow_process_env(cl, ctx, svc), health, int(ctx[port]) if port else None))
    return procs


def spark_master_health(ctx: dict[str, str]) -> tuple[bool, str]:
    """The master's JSON endpoint answers; detail: alive workers and cores."""
    info = http_json(f"http://127.0.0.1:{ctx['spark_ui_port']}/json/")
    if not info:
        return False, "master UI does not answer"
    return info.get("status") == "ALIVE", f"{info.get('aliveworkers', 0)} worker(s), {info.get('cores', 0)} core(s)"


def spark_worker_health(ui_port: str) -> tuple[bool, str]:
    """A worker's JSON endpoint answers and it is registered with a master; detail: its cores and master."""
    info = http_json(f"http://127.0.0.1:{ui_port}/json/")
    if not info:
        return False, "worker UI does not answer"
    return bool(info.get("masterurl")), f"{info.get('cores', 0)} core(s), master {info.get('masterurl')}"


def component_health(ctx: dict[str, str], key: str) -> tuple[bool, str]:
    """A component's state in the api-server's ``/api/v2/monitor/health`` (``dag_processor``, ``triggerer``)."""
    info = http_json(f"http://127.0.0.1:{ctx['api_port']}/api/v2/monitor/health")
    if not info:
        return False, "api-server does not answer"
    status = (info.get(key) or {}).get("status")
    return status == "healthy", f"{key}: {status}"


def celery_health(cl: Cluster, ctx: dict[str, str], queue: str | None) -> tuple[bool, str]:
    """The Celery worker ``<queue>@<host>`` answers a broker ping (``celery inspect ping``)."""
    env = airflow_process_env(cl, ctx)
    dest = f"{queue}@{socket.gethostname()}"
    r = subprocess.run([sys.executable, "-m", "celery", "-A", "airflow.providers.celery.executors.celery_executor.app",
                        "inspect", "ping", "-d", dest, "-t", "3"], env=env, capture_output=True, text=True, timeout=120)
    return r.returncode == 0 and "pong" in r.stdout, dest + (": pong" if r.returncode == 0 else ": no answer")


def init_postgres(cl: Cluster, ctx: dict[str, str], user: str | None) -> None:
    """``initdb`` (superuser ``airflow``, password auth over TCP) once; the database is created by ``up``."""
    data = cl.root / "postgres" / "data"
    if (data / "PG_VERSION").exists():
        return
    base = cl.root / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(base, user)
        reach = subprocess.run(["test", "-w", str(base)], user=user, capture_output=True)
        if reach.returncode != 0:
            raise ClusterError(f"user {user!r} (PostgreSQL refuses to run as root) cannot reach {base}: give the "
                               f"directories above it o+x (chmod o+x ...), or choose another --root/CLUSTER_DIR")
    pwfile = base / "pwfile"
    pwfile.write_text(ctx["pg_password"] + "\n")
    if user:
        shutil.chown(base, user)
        shutil.chown(pwfile, user)
    kwargs = {"user": user} if user else {}
    r = subprocess.run([find_postgres_bin("initdb") or "initdb", "-D", str(data), "-U", "airflow", f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       capture_output=True, text=True, **kwargs)
    pwfile.unlink(missing_ok=True)
    if r.returncode != 0:
        raise ClusterError(f"initdb failed for {data}:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")


def ensure_database(ctx: dict[str, str]) -> None:
    """Create the ``airflow`` database when it does not exist yet."""
    env = dict(os.environ, PGPASSWORD=ctx["pg_password"])
    createdb = find_postgres_bin("createdb") or "createdb"
    r = subprocess.run([createdb, "-h", "127.0.0.1", "-p", ctx["pg_port"], "-U", "airflow", "airflow"],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0 and "already exists" not in r.stderr:
        raise ClusterError(f"createdb airflow failed: {r.stderr.strip()}")


def init_airflow(cl: Cluster, ctx: dict[str, str]) -> None:
    """``airflow db migrate`` and ``airflow pools set llm <slots>`` (the compose file's airflow-init)."""
    env = airflow_process_env(cl, ctx, topology.service("airflow-init"))
    cl.airflow_home.mkdir(parents=True, exist_ok=True)
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    logf = cl.logs / "airflow-init.log"
    with open(logf, "ab") as out:
        for argv in ([airflow, "db", "migrate"],
                     [airflow, "pools", "set", topology.LLM_POOL, ctx["llm_pool_slots"], topology.LLM_POOL_DESCRIPTION]):
            out.write(f"\n==== {' '.join(argv)}\n".encode())
            out.flush()
            r = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
            if r.returncode != 0:
                raise ClusterError(f"{' '.join(argv[1:3])} failed (exit {r.returncode}); see {logf}")


def wait_healthy(p: Proc, cl: Cluster, timeout_s: float = HEALTH_TIMEOUT_S) -> tuple[bool, str]:
    """Poll ``p.health`` every second until it is ok (True, detail), the process exits, or ``timeout_s`` pass."""
    deadline = time.monotonic() + timeout_s
    detail = ""
    while time.monotonic() < deadline:
        ok, detail = p.health()
        if ok:
            return True, detail
        if running_pid(cl, p.name) is None:
            return False, f"exited ({detail}); see {cl.logs / (p.name + '.log')}"
        time.sleep(1.0)
    return False, f"not healthy after {timeout_s:.0f} s ({detail}); see {cl.logs / (p.name + '.log')}"


def switch_judge(cl: Cluster) -> list[str]:
    """When the judge running was started as another kind or model than ``cl`` asks for (``CLUSTER_JUDGE``, the
    stand-in's annotator), stop it and the Airflow processes (their ``KP_JUDGE__MODEL`` names it) so that ``up``
    starts them again; returns what was stopped. Reads the ``judge_model`` the last ``up`` recorded."""
    try:
        recorded = json.loads(cl.state_file.read_text()).get("judge_model")
    except (OSError, ValueError):
        recorded = None
    wanted = native_context(cl)["judge_model"]
    if recorded is None or recorded == wanted or running_pid(cl, "judge") is None:
        return []
    names = ["judge"] + [p.name for p in processes(cl) if p.name.startswith("airflow-")]
    log.warning("the judge running serves %r, not %r: restarting it and the Airflow processes", recorded, wanted)
    for name in names:
        stop(cl, name)
    return names


def up(cl: Cluster, only: list[str] | None = None, timeout_s: float = HEALTH_TIMEOUT_S) -> dict:
    """Start every process that is not running yet (in order, each healthy before the next that needs it).

    Returns ``{name: {"pid", "seconds_to_healthy", "detail", "started"}}``; writes ``cluster.json``. Raises
    ClusterError: a missing program/package (nothing started), a port held by a process that is not ours,
    initdb/migration failure, or a process that did not become healthy (the ones started stay up: see
    ``status``, the logs, then ``down``)."""
    check_requirements()
    if cl.judge == "vllm" and (not only or "judge" in only):
        from keyphrase_pipeline.labels.judges.vllm_runtime import has_vllm

        py = vllm_python()
        if not has_vllm(py):
            raise ClusterError(f"the judge (CLUSTER_JUDGE=vllm) needs vLLM's virtualenv: {py} cannot import vllm. Run "
                               "make llm-server-deps, or CLUSTER_JUDGE=stand-in for the simulated annotator")
    cl.root.mkdir(parents=True, exist_ok=True)
    switch_judge(cl)
    ctx = native_context(cl)
    procs = [p for p in processes(cl, ctx) if not only or p.name in only]
    busy = [f"{p.name}: port {p.port} ({port_key(cl, p.port)}{port_holder(p.port)})" for p in procs
            if p.port and running_pid(cl, p.name) is None and port_in_use(p.port)]
    if busy:
        raise ClusterError("ports in use by another program (free them or choose others with CLUSTER_PORTS=KEY=PORT,...): "
                           + "; ".join(busy))
    cl.state_file.write_text(json.dumps({"ports": cl.ports, "root": str(cl.root), "judge": cl.judge,
                                         "judge_model": ctx["judge_model"]}, indent=1))
    report: dict = {}
    t0 = time.monotonic()
    for p in procs:
        if p.name == "airflow-apiserver":
            ensure_database(ctx)
            t = time.monotonic()
            init_airflow(cl, ctx)
            report["airflow-init"] = {"seconds": round(time.monotonic() - t, 1)}
        pid = running_pid(cl, p.name)
        started = pid is None
        t = time.monotonic()
        if started:
            pid = start(cl, p)
            log.info("started %s (pid %d)", p.name, pid)
        # Airflow components and Spark workers are waited for together below; the rest before going on
        if p.name.startswith("airflow-") or p.name.startswith("spark-worker"):
            report[p.name] = {"pid": pid, "started": started, "t_start": t}
            continue
        ok, detail = wait_healthy(p, cl, max(timeout_s, p.health_timeout_s or 0.0))
        if not ok:
            raise ClusterError(f"{p.name} did not become healthy: {detail}")
        report[p.name] = {"pid": pid, "started": started, "seconds_to_healthy": round(time.monotonic() - t, 1),
                          "detail": detail}
    for p in procs:
        rec = report[p.name]
        if "t_start" not in rec:
            continue
        ok, detail = wait_healthy(p, cl, max(10.0, timeout_s - (time.monotonic() - rec["t_start"])))
        t_start = rec.pop("t_start")
        if not ok:
            raise ClusterError(f"{p.name} did not become healthy: {detail}")
        rec.update(seconds_to_healthy=round(time.monotonic() - t_start, 1), detail=detail)
    report["total_seconds"] = round(time.monotonic() - t0, 1)
    (cl.root / "up.json").write_text(json.dumps(report, indent=1))
    return report


def down(cl: Cluster) -> dict[str, str]:
    """Stop every process of the cluster, in reverse start order, one tier at a time (Airflow processes, then
    Spark workers, then the rest one by one; each tier's processes in parallel). Returns ``{name: what happened}``
    in stop order; pid files of processes no longer in the topology are stopped too."""

    names = [p.name for p in processes(cl, native_context(cl))]
    known = {f.stem for f in cl.pids.glob("*.json")} if cl.pids.exists() else set()
    order = list(reversed(names)) + sorted(known - set(names))
    tiers: list[list[str]] = []
    for name in order:
        tier = name.split("-")[0] if name.startswith(("airflow-", "spark-worker-")) else name
        if tiers and tiers[-1][0].split("-")[0] == tier and tier in ("airflow", "spark"):
            tiers[-1].append(name)
        else:
            tiers.append([name])

    def one(name: str) -> str:
        t = time.monotonic()
        what = stop(cl, name)
        return what if what == "not running" else f"{what} in {time.monotonic() - t:.1f} s"

    out: dict[str, str] = {}
    for tier in tiers:
        with ThreadPoolExecutor(max_workers=len(tier)) as pool:
            out.update(zip(tier, pool.map(one, tier)))
    return out


def status(cl: Cluster) -> dict[str, dict]:
    """``{name: {"pid", "running", "healthy", "detail", "rss_mb", "port"}}`` for every process."""
    out = {}
    for p in processes(cl, native_context(cl)):
        pid = running_pid(cl, p.name)
        ok, detail = p.health() if pid else (False, "not running")
        out[p.name] = {"pid": pid, "running": pid is not None, "healthy": bool(ok), "detail": detail,
                       "rss_mb": tree_rss_mb(pid) if pid else 0.0, "port": p.port}
    return out


def connection_env(cl: Cluster) -> dict[str, str]:
    """The environment a client (``kp``, the e2e driver, a shell) needs to use this cluster: the Airflow and
    ``KP_*`` settings of the table (metadata DB, broker, Spark master, judge endpoint, lake)."""
    return airflow_process_env(cl, native_context(cl))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``kp cluster`` options: the action, ``--ports``, ``--root``, ``--only``, ``--json``."""
    ap.add_argument("action", choices=["up", "down", "status", "env"],
                    help="up: start what is not running; down: stop everything; status: pid/health/RSS per process "
                         "(exit 1 unless all healthy); env: shell exports to use the cluster from a shell")
    ap.add_argument("--ports", default=None, help="KEY=PORT,... (keys: " + ", ".join(PORT_KEYS) + ")")
    ap.add_argument("--root", default=None, help="cluster directory (default var/cluster or $CLUSTER_DIR)")
    ap.add_argument("--only", default=None, help="comma-separated process names (default: all)")
    ap.add_argument("--json", action="store_true", help="status as JSON")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """``kp cluster ACTION``: the settings are not used (the cluster's come from the topology table)."""
    return run(args)


def cli(argv: list[str] | None = None) -> int:
    """``python -m keyphrase_pipeline.deploy.cluster ACTION`` (what ``make cluster`` runs)."""
    ap = argparse.ArgumentParser(prog="kp cluster", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Carry out ``args.action``; ClusterError is printed on stderr and returned as its exit code (2)."""
    try:
        cl = load_cluster(args.root, args.ports)  # a mistyped CLUSTER_PORTS key is a ClusterError too
        if args.action == "up":
            report = up(cl, args.only.split(",") if args.only else None)
            for name, rec in report.items():
                if isinstance(rec, dict) and "seconds_to_healthy" in rec:
                    print(f"  {name:22s} pid {rec['pid']:>7}  {'started' if rec['started'] else 'was running'}  "
                          f"healthy after {rec['seconds_to_healthy']:6.1f} s  {rec['detail'][:60]}")
            ctx = native_context(cl)
            home = cl.airflow_home
            pw = topology_admin_password(home)
            print(f"cluster up in {report['total_seconds']} s: Airflow http://127.0.0.1:{ctx['api_port']} (admin / {pw}), "
                  f"Spark master spark://127.0.0.1:{ctx['spark_port']} (UI http://127.0.0.1:{ctx['spark_ui_port']}), "
                  f"judge {ctx['judge_endpoint']} ({ctx['judge_model']}{', simulated' if cl.judge == 'stand-in' else ''}), "
                  f"logs {cl.logs}")
            return 0
        if args.action == "down":
            for name, what in down(cl).items():
                print(f"  {name:22s} {what}")
            return 0
        if args.action == "env":
            for k, v in connection_env(cl).items():
                if k.startswith(("AIRFLOW", "KP_", "SPARK_", "PYSPARK_")):
                    print(f"export {k}={shlex.quote(v)}")
            return 0
        st = status(cl)
        if args.json:
            print(json.dumps(st))
        else:
            for name, rec in st.items():
                print(f"  {name:22s} {'up  ' if rec['running'] else 'down'} pid {str(rec['pid'] or '-'):>7}  "
                      f"{'healthy  ' if rec['healthy'] else 'UNHEALTHY'} rss {rec['rss_mb']:8.1f} MiB  "
                      f"port {rec['port'] or '-':<5}  {rec['detail'][:70]}")
        return 0 if all(r["healthy"] for r in st.values()) else 1
    except ClusterError as exc:
        print(f"kp cluster {args.action}: {exc}", file=sys.stderr)
        return exc.exit_code


def topology_admin_password(airflow_home: Path) -> str:
    """The generated ``admin`` password of SimpleAuthManager under ``airflow_home`` (or a hint)."""
    try:
        return json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text()).get("admin", "?")
    except (OSError, ValueError):
        return f"(see {airflow_home}/simple_auth_manager_passwords.json.generated)"


if __name__ == "__main__":
    sys.exit(cli())
