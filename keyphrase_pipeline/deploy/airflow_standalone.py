"""``make airflow``: Airflow standalone (api-server, scheduler, dag-processor, triggerer) on localhost:8080
with this project's DAGs and the Keyphrases plugin, DAGs unpaused, small parallelism, pool ``llm``.

On a lake with no events at all it first generates the demo world ending on the day the scheduler will run
(``keyphrase_pipeline.deploy.demo.seed_world_for_airflow``), so a new user sees the scheduled run succeed. Prints the
admin password (SimpleAuthManager writes it to
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``) once the server answers. Ctrl-C stops it.
Environment defaults match the Makefile's; anything already set wins.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from keyphrase_pipeline.stages import LLM_POOL

REPO = Path(__file__).resolve().parents[2]  # the checkout: keyphrase_pipeline/<sub>/<module>.py
log = logging.getLogger(__name__)

# The pool that caps concurrent LLM judge shards (one slot per GPU worker); the DAG assigns it.
LLM_POOL_SLOTS = 2  # the judge's pool on one machine (keyphrase_pipeline.stages.LLM_POOL)
DEMO_MODULE = "keyphrase_pipeline.deploy.demo"  # seed_world_for_airflow

DEFAULTS = {
    "AIRFLOW_HOME": str(REPO / "var" / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__API__PORT": "8080",
    "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[*]"}),
    "KP_LAKE_ROOT": str(REPO / "var" / "lake"),
    # the demo lake's truth for the UI (keyphrase_pipeline.core.truth)
    "KP_TRUTH_PROVIDER": "keyphrase_pipeline.synthetic.world:load_truth",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def environment() -> dict[str, str]:
    """A copy of ``os.environ`` with ``DEFAULTS`` filled in where unset, the execution-API URL on the api-server
    port, ``PYSPARK_PYTHON`` and this interpreter's ``bin`` directory first on ``PATH``.

    ``os.environ`` itself is not changed."""
    env = dict(os.environ)
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    # tasks talk to the api-server's execution API: follow a non-default port
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{env['AIRFLOW__API__PORT']}/execution/")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def admin_password(airflow_home: str) -> str | None:
    """The ``admin`` password SimpleAuthManager generated under ``airflow_home``, or None when the file is
    missing or unreadable (never raises)."""
    path = Path(airflow_home) / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (OSError, ValueError):
        return None


def wait_healthy(url: str, timeout_s: float = 180.0) -> bool:
    """Poll ``url`` every 2 s until it answers HTTP 200 (True) or ``timeout_s`` seconds pass (False).

    Connection errors count as "not yet"; nothing is raised."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


# ---- Airflow admin helpers (also used by `kp demo` and the tests) -------------------------------------
def ensure_pool(name: str = LLM_POOL, slots: int = LLM_POOL_SLOTS,
                description: str = "LLM judge workers (one slot per GPU worker)") -> None:
    """Create (or resize) an Airflow pool in the metadata database."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(name=name, slots=slots, description=description, include_deferred=False)
    log.info("pool %s: %d slot(s)", name, slots)


def airflow_bin() -> str:
    """The ``airflow`` executable of this environment (beside the running Python)."""

    here = Path(sys.executable).parent / "airflow"
    return str(here) if here.exists() else (shutil.which("airflow") or "airflow")


def ensure_metadata_db() -> bool:
    """Run ``airflow db migrate`` unless the metadata DB is already current; True when it migrated."""

    check = subprocess.run([airflow_bin(), "db", "check-migrations", "-t", "0"], capture_output=True, text=True)
    if check.returncode == 0:
        return False
    log.info("migrating the Airflow metadata database")
    done = subprocess.run([airflow_bin(), "db", "migrate"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return True



def latest_scheduled_ds(now: dt.datetime | None = None) -> str:
    """The ``ds`` of the newest complete data interval of the daily DAG (``CronDataIntervalTimetable("0 2 * * *")``,
    UTC): the run at 02:00 on day D+1 processes D, so before 02:00 UTC that is two days ago, else yesterday."""
    now = now or dt.datetime.now(dt.timezone.utc)
    back = 2 if now.hour < 2 else 1
    return (now.date() - dt.timedelta(days=back)).isoformat()


def main() -> int:
    """``make airflow``: migrate the metadata DB, create the ``llm`` pool, start ``airflow standalone`` and wait.

    Prints the URLs and the admin password once the health endpoint answers (or a warning on stderr after
    180 s). Returns the Airflow process's exit code; on Ctrl-C it forwards SIGINT, waits up to 30 s, then
    kills it and returns 130. Raises RuntimeError when ``airflow db migrate`` fails (not a KPError: this is not
    a ``kp`` subcommand)."""
    env = environment()
    os.environ.update(env)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    ensure_metadata_db()
    ensure_pool()
    # demo mode on an empty lake; by name: core does not import the synthetic (demo) package
    importlib.import_module(DEMO_MODULE).seed_world_for_airflow(env, latest_scheduled_ds())
    port = env["AIRFLOW__API__PORT"]
    proc = subprocess.Popen([airflow_bin(), "standalone"], env=env)
    try:
        if wait_healthy(f"http://localhost:{port}/api/v2/monitor/health"):
            # DAGs are created unpaused (DAGS_ARE_PAUSED_AT_CREATION=False); unpause ours in case it existed paused
            subprocess.run([airflow_bin(), "dags", "unpause", "keyphrase_daily"], env=env,
                           capture_output=True, text=True)
            print("\n" + "=" * 72)
            print(f"Airflow is up: http://localhost:{port}   (Keyphrases page: http://localhost:{port}/plugin/keyphrases)")
            print(f"  user: admin   password: {admin_password(env['AIRFLOW_HOME']) or '(see the log above)'}")
            print(f"  DAGs: {env['AIRFLOW__CORE__DAGS_FOLDER']}   lake: {env['KP_LAKE_ROOT']}")
            print("  Trigger a run with params from the DAG page (Trigger -> form). Ctrl-C stops everything.")
            print("=" * 72 + "\n", flush=True)
        else:
            print("Airflow did not become healthy in time; see the log above.", file=sys.stderr)
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 130


if __name__ == "__main__":
    sys.exit(main())
