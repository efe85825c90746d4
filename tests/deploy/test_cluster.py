"""The native cluster (keyphrase_pipeline.deploy.cluster): its processes come from the topology table, it refuses
clearly when a program is missing or a port is taken, and up/down are idempotent with pids tracked.

Fast tests use stand-in processes (``sleep``) for the PID logic; the slow test at the end starts the real
topology (Postgres, Redis, judge, Spark, Airflow Celery) on shifted ports, checks health, and stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from keyphrase_pipeline.deploy import cluster, topology
from keyphrase_pipeline.deploy.cluster import Cluster, ClusterError, Proc


@pytest.fixture
def cl(tmp_path):
    """A cluster of the default kind (its judge: the vLLM server)."""
    return Cluster(tmp_path / "cluster", dict(cluster.DEFAULT_PORTS))


@pytest.fixture
def no_vllm_check(monkeypatch):
    """up() with processes patched out: the judge's virtualenv is not what these tests are about (a fresh
    clone has none; test_up_without_the_vllm_virtualenv_names_the_make_target checks that case)."""
    monkeypatch.setattr("keyphrase_pipeline.labels.judges.vllm_runtime.has_vllm", lambda python: True)


def sleeper(name: str, port: int | None = None, healthy: bool = True) -> Proc:
    return Proc(name, ["sleep", "120"], dict(os.environ), lambda: (healthy, "ok" if healthy else "no"), port)


# ---- ports -----------------------------------------------------------------------------------------
def test_parse_ports_accepts_known_keys_and_refuses_the_rest():
    assert cluster.parse_ports("api_port=8090, pg_port=5544") == {"api_port": 8090, "pg_port": 5544}
    assert cluster.parse_ports("") == {}
    with pytest.raises(ClusterError, match="api_prot"):
        cluster.parse_ports("api_prot=8090")
    with pytest.raises(ClusterError, match="not a port number"):
        cluster.parse_ports("api_port=99999")
    with pytest.raises(ClusterError, match="KEY=PORT"):
        cluster.parse_ports("api_port")


def test_ports_recorded_then_env_then_argument(tmp_path, monkeypatch):
    root = tmp_path / "c"
    root.mkdir()
    (root / "cluster.json").write_text(json.dumps({"ports": {"api_port": 9001, "redis_port": 9002}}))
    monkeypatch.setenv("CLUSTER_PORTS", "redis_port=9003,judge_port=9004")
    got = cluster.load_cluster(root, "judge_port=9005")
    assert got.ports["api_port"] == 9001 and got.ports["redis_port"] == 9003 and got.ports["judge_port"] == 9005
    assert got.ports["pg_port"] == cluster.DEFAULT_PORTS["pg_port"]


# ---- one table for compose and the native cluster ------------------------------------------------------
def test_native_airflow_processes_use_the_table(cl):
    ctx = cluster.native_context(cl)
    procs = {p.name: p for p in cluster.processes(cl, ctx)}
    assert list(procs) == ["postgres", "redis", "judge", "spark-master", "spark-worker-1", "spark-worker-2",
                           "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                           "airflow-worker", "airflow-worker-gpu"]
    compose = {s.name: s for s in topology.SERVICES}
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-worker-gpu"):
        p, svc = procs[name], compose[name]
        assert p.argv[1:1 + len(svc.command)] == topology.command(svc, ctx)
        # every variable of the shared table, with the native values
        assert {k for k, _ in topology.AIRFLOW_ENV} <= set(p.env)
        assert p.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert p.env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:@127.0.0.1:{cl.ports['redis_port']}/0"
        assert p.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert p.env["KP_SPARK__MASTER"] == f"spark://127.0.0.1:{cl.ports['spark_port']}"
        conn = json.loads(p.env["AIRFLOW_CONN_SPARK_DEFAULT"])
        assert (conn["host"], conn["port"]) == ("spark://127.0.0.1", cl.ports["spark_port"])
        assert p.env["KP_JUDGE__BACKEND"] == "openai"
        assert p.env["KP_JUDGE__ENDPOINT"] == f"http://127.0.0.1:{cl.ports['judge_port']}/v1"
        assert p.env["AIRFLOW_HOME"] == str(cl.airflow_home)
        # one machine: the API and the scheduler's health server listen on localhost only
        assert p.env["AIRFLOW__API__HOST"] == p.env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
        # the tasks import this checkout's code, not a shared virtualenv's editable install of another one
        assert p.env["PYTHONPATH"].split(os.pathsep)[0] == str(cluster.REPO)
    assert procs["airflow-worker"].argv[2:6] == ["worker", "-q", "default", "--concurrency"]
    assert procs["airflow-worker-gpu"].argv[2:5] == ["worker", "-q", "gpu"]
    assert procs["airflow-worker-gpu"].argv[-2:] == ["--celery-hostname", "gpu@%h"]
    assert procs["airflow-worker"].argv[-2:] == ["--celery-hostname", "default@%h"]
    # two workers on one host: distinct log-server ports
    assert (procs["airflow-worker"].env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]
            != procs["airflow-worker-gpu"].env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"])
    assert procs["spark-worker-1"].argv[1:3] == ["org.apache.spark.deploy.worker.Worker",
                                                 f"spark://127.0.0.1:{cl.ports['spark_port']}"]
    assert procs["spark-worker-1"].argv[procs["spark-worker-1"].argv.index("--cores") + 1] == "1"
    assert procs["spark-worker-1"].port != procs["spark-worker-2"].port
    assert procs["postgres"].stop_signal == signal.SIGINT
    assert procs["spark-master"].env["SPARK_MASTER_OPTS"] == "-Dspark.master.rest.enabled=false"
    assert ctx["llm_pool_slots"] == str(cluster.GPU_WORKERS)


def test_the_judge_is_a_real_llm_server_unless_the_stand_in_is_asked_for(cl, monkeypatch):
    """Default: ``kp llm-server`` (vLLM, SmolLM2) serving the name the workers send; CLUSTER_JUDGE=stand-in: the
    simulated annotator. The choice is kept in cluster.json for status, down and the e2e."""
    judge = {p.name: p for p in cluster.processes(cl)}["judge"]
    assert judge.argv[1:] == ["llm-server", "--host", "127.0.0.1", "--port", str(cl.ports["judge_port"])]
    assert judge.env["KP_JUDGE__MODEL"] == cluster.VLLM_MODEL == cluster.native_context(cl)["judge_model"]
    assert judge.env["KP_JUDGE__VLLM__DTYPE"] == "float32" and judge.health_timeout_s >= 600
    worker = {p.name: p for p in cluster.processes(cl)}["airflow-worker-gpu"]
    assert worker.env["KP_JUDGE__MODEL"] == cluster.VLLM_MODEL and worker.env["KP_JUDGE__BACKEND"] == "openai"

    monkeypatch.setenv("CLUSTER_JUDGE", "stand-in")
    stand_in = cluster.load_cluster(cl.root)
    assert stand_in.judge == "stand-in"
    procs = {p.name: p for p in cluster.processes(stand_in)}
    assert "keyphrase_pipeline.synthetic.judge_server" in procs["judge"].argv
    assert procs["airflow-worker"].env["KP_JUDGE__MODEL"] == cluster.STAND_IN_MODEL
    monkeypatch.setenv("CLUSTER_JUDGE", "gpt")
    with pytest.raises(cluster.ClusterError, match="CLUSTER_JUDGE='gpt'"):
        cluster.load_cluster(cl.root)


def test_up_without_the_vllm_virtualenv_names_the_make_target(cl, monkeypatch, tmp_path):
    """Refused before any port is looked at or anything started."""
    monkeypatch.setenv("KP_JUDGE__VLLM__PYTHON", str(tmp_path / "none" / "python"))
    monkeypatch.setattr(cluster, "check_requirements", lambda: None)
    monkeypatch.setattr(cluster, "port_in_use", lambda *a: pytest.fail("ports checked before the virtualenv"))
    monkeypatch.setattr(cluster, "start", lambda *a: pytest.fail("started without vLLM"))
    with pytest.raises(cluster.ClusterError, match="cannot import vllm.*make llm-server-deps, or CLUSTER_JUDGE=stand-in"):
        cluster.up(cl, only=["judge"])


def test_a_judge_of_another_kind_is_restarted_with_the_airflow_processes(cl, monkeypatch):
    """After a run on the stand-in (the fault cases), `make cluster` asks for the vLLM judge again: the running
    stand-in and the Airflow processes (which name the judge's model) are stopped so that up starts the right ones."""
    stopped = []
    monkeypatch.setattr(cluster, "running_pid", lambda c, name: 123 if name == "judge" else None)
    monkeypatch.setattr(cluster, "stop", lambda c, name: stopped.append(name))
    cl.root.mkdir(parents=True)
    cl.state_file.write_text(json.dumps({"ports": cl.ports, "judge": "stand-in", "judge_model": cluster.STAND_IN_MODEL}))
    assert cluster.switch_judge(cl)[0] == "judge" and stopped[0] == "judge"
    assert "airflow-worker-gpu" in stopped and "postgres" not in stopped
    stopped.clear()
    cl.state_file.write_text(json.dumps({"ports": cl.ports, "judge": "vllm", "judge_model": cluster.VLLM_MODEL}))
    assert cluster.switch_judge(cl) == [] and stopped == []
    # the LLM-like annotator is another stand-in model: switching to it restarts too
    monkeypatch.setenv("KP_JUDGE__SIMULATED_ERRORS", "llm")
    stand_in = Cluster(cl.root, cl.ports, judge="stand-in")
    assert cluster.native_context(stand_in)["judge_model"] == cluster.STAND_IN_LLM_MODEL
    assert cluster.switch_judge(stand_in)[0] == "judge"


def test_judge_calls_from_vllm_metrics():
    from keyphrase_pipeline.deploy.cluster_e2e import prometheus_total

    text = ("# HELP vllm:request_success_total Count\n"
            'vllm:request_success_total{engine="0",finished_reason="length",model_name="smollm2-135m"} 204.0\n'
            'vllm:request_success_total{engine="0",finished_reason="stop",model_name="smollm2-135m"} 3.0\n'
            'vllm:request_success_total_created{engine="0"} 1.7e9\n')
    assert prometheus_total(text, "vllm:request_success_total") == 207
    assert prometheus_total("", "vllm:request_success_total") is None


def test_secrets_are_created_once_and_private(cl):
    first = cluster.cluster_secrets(cl)
    assert cluster.cluster_secrets(cl) == first and len(first["jwt_secret"]) >= 32
    assert oct((cl.root / "secrets.json").stat().st_mode & 0o777) == "0o600"


# ---- refusal --------------------------------------------------------------------------------------------
def test_a_missing_program_is_named_with_its_package(monkeypatch):
    real_which = cluster.shutil.which
    monkeypatch.setattr(cluster.shutil, "which", lambda name, **kw: None if name == "redis-server" else real_which(name, **kw))
    missing = cluster.missing_requirements()
    assert any("redis-server" in m and "Debian package `redis-server`" in m for m in missing), missing
    with pytest.raises(ClusterError, match="redis-server") as err:
        cluster.check_requirements()
    assert err.value.exit_code == 2


def test_up_refuses_before_starting_anything(cl, monkeypatch, no_vllm_check):
    monkeypatch.setattr(cluster, "REQUIREMENTS", (("Java runtime (java)", lambda: None, "Debian package `openjdk-17-jre-headless`"),))
    started = []
    monkeypatch.setattr(cluster, "start", lambda *a, **k: started.append(a))
    with pytest.raises(ClusterError, match="openjdk-17-jre-headless"):
        cluster.up(cl)
    assert started == []


def test_cli_prints_the_refusal_and_exits_2(cl, monkeypatch, capsys):
    monkeypatch.setattr(cluster, "REQUIREMENTS", (("PostgreSQL server (postgres)", lambda: None,
                                                    "Debian package `postgresql`"),))
    assert cluster.cli(["up", "--root", str(cl.root)]) == 2
    assert "Debian package `postgresql`" in capsys.readouterr().err


def test_a_port_held_by_someone_else_is_refused(cl, monkeypatch, no_vllm_check):
    monkeypatch.setattr(cluster, "check_requirements", lambda *a: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        monkeypatch.setattr(cluster, "processes", lambda cl, ctx=None: [sleeper("redis", port)])
        cl.ports["redis_port"] = port
        with pytest.raises(ClusterError, match=rf"redis: port {port} \(redis_port, held by pid {os.getpid()} "):
            cluster.up(cl)
    assert not (cl.pids / "redis.json").exists()


def test_cli_refuses_a_mistyped_port_key_with_exit_2(cl, monkeypatch, capsys):
    monkeypatch.setenv("CLUSTER_PORTS", "judge=8001")
    assert cluster.cli(["status", "--root", str(cl.root)]) == 2
    err = capsys.readouterr().err
    assert "'judge=8001'" in err and "judge_port" in err and "Traceback" not in err


# ---- pids, idempotent up/down -----------------------------------------------------------------------------
def test_pid_file_tracks_the_process_and_ignores_a_recycled_pid(cl):
    pid = cluster.start(cl, sleeper("a"))
    try:
        assert cluster.running_pid(cl, "a") == pid
        rec = json.loads((cl.pids / "a.json").read_text())
        assert rec["pid"] == pid and rec["argv"] == ["sleep", "120"]
        # same pid, other start time: not ours (a recycled pid is never signalled)
        (cl.pids / "a.json").write_text(json.dumps({**rec, "create_time": rec["create_time"] - 1000}))
        assert cluster.running_pid(cl, "a") is None
        assert cluster.stop(cl, "a") == "not running"
        assert os.path.exists(f"/proc/{pid}")  # left alone
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_up_and_down_are_idempotent(cl, monkeypatch, no_vllm_check):
    monkeypatch.setattr(cluster, "check_requirements", lambda *a: None)
    monkeypatch.setattr(cluster, "processes", lambda cl, ctx=None: [sleeper("redis"), sleeper("judge")])
    first = cluster.up(cl)
    try:
        assert first["redis"]["started"] and first["judge"]["started"]
        second = cluster.up(cl)
        assert not second["redis"]["started"] and second["redis"]["pid"] == first["redis"]["pid"]
        st = cluster.status(cl)
        assert st["redis"]["running"] and st["redis"]["healthy"] and st["redis"]["rss_mb"] > 0
        assert json.loads(cl.state_file.read_text())["ports"] == cl.ports
        assert (cl.logs / "redis.log").read_text().count("kp cluster: starting redis") == 1
    finally:
        stopped = cluster.down(cl)
    assert stopped["judge"].startswith("stopped") and stopped["redis"].startswith("stopped")
    assert not os.path.exists(f"/proc/{first['redis']['pid']}") or cluster.running_pid(cl, "redis") is None
    assert cluster.down(cl) == {"judge": "not running", "redis": "not running"}
    assert not cluster.status(cl)["redis"]["running"]


def test_a_process_that_dies_at_start_is_reported_with_its_log(cl, monkeypatch, no_vllm_check):
    monkeypatch.setattr(cluster, "check_requirements", lambda *a: None)
    dying = Proc("redis", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], dict(os.environ),
                 lambda: (False, "no answer"))
    monkeypatch.setattr(cluster, "processes", lambda cl, ctx=None: [dying])
    with pytest.raises(ClusterError, match="redis did not become healthy: exited.*redis.log"):
        cluster.up(cl, timeout_s=20)
    assert "boom" in (cl.logs / "redis.log").read_text()


def test_stop_kills_what_ignores_the_signal(cl):
    stubborn = Proc("stubborn", [sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(120)"], dict(os.environ), lambda: (True, ""))
    pid = cluster.start(cl, stubborn)
    import time

    deadline = time.time() + 20
    while "\nready\n" not in (cl.logs / "stubborn.log").read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert cluster.stop(cl, "stubborn", timeout_s=1) == "killed"
    assert cluster.running_pid(cl, "stubborn") is None
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


# ---- the real topology (slow) ------------------------------------------------------------------------------
def _free_port_block(n: int) -> int:
    """A base port with n free ports above it."""
    for base in range(21000, 60000, 100):
        if not any(cluster.port_in_use(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


@pytest.mark.slow
def test_real_cluster_comes_up_healthy_and_goes_down(tmp_path):
    missing = cluster.missing_requirements()
    if missing:
        pytest.skip("cluster programs missing: " + "; ".join(missing))
    base = _free_port_block(20)
    ports = {k: base + i for i, k in enumerate(cluster.PORT_KEYS)}
    ports["spark_worker_ui_port"] = base + 15  # worker 2 takes the next one
    import tempfile

    # PostgreSQL runs as user postgres: pytest's tmp_path (0700, root) is out of its reach
    root = Path(tempfile.mkdtemp(prefix="kp-cluster-test-"))
    root.chmod(0o755)
    cl = Cluster(root / "cluster", ports, judge="stand-in")  # the topology's up/health/down; the LLM server: cluster-e2e
    env_lake = os.environ.get("KP_LAKE_ROOT")
    os.environ["KP_LAKE_ROOT"] = str(tmp_path / "lake")
    try:
        report = cluster.up(cl, timeout_s=400)
        st = cluster.status(cl)
        assert all(r["healthy"] for r in st.values()), {k: v["detail"] for k, v in st.items() if not v["healthy"]}
        assert st["spark-master"]["detail"].startswith("2 worker(s)")
        assert st["airflow-worker-gpu"]["detail"].startswith("gpu@")
        print(json.dumps({"seconds_to_healthy": {k: v.get("seconds_to_healthy") for k, v in report.items()
                                                 if isinstance(v, dict)}, "total_s": report["total_seconds"],
                          "rss_mb": {k: v["rss_mb"] for k, v in st.items()}}))
        again = cluster.up(cl, timeout_s=120)  # idempotent: nothing restarted
        assert not any(v.get("started") for v in again.values() if isinstance(v, dict))
    finally:
        stopped = cluster.down(cl)
        if env_lake is None:
            os.environ.pop("KP_LAKE_ROOT", None)
        else:
            os.environ["KP_LAKE_ROOT"] = env_lake
    assert all(v.startswith(("stopped", "killed")) for v in stopped.values()), stopped
    assert not any(cluster.port_in_use(p) for k, p in ports.items() if k != "scheduler_health_port")
    import shutil

    shutil.rmtree(root, ignore_errors=True)
