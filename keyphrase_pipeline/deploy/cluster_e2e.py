"""``make cluster-e2e``: use the native cluster (``keyphrase_pipeline.deploy.cluster``) as an operator would, and
print one JSON line of what it did, checked from the outside.

1. Seeds the demo world (scale ``tiny``, 12 days ending yesterday) into its own lake ``<cluster>/e2e/lake`` and
   builds the tests' tiny encoder (hidden 32, Matryoshka [32, 16], a few training steps): the run proves the
   topology, not model quality.
2. (Re)starts the judge server and the Airflow processes with those settings (``KP_*`` pass-through) and makes
   sure everything else is up (``cluster.up``; idempotent).
3. Through the Airflow REST API v2 (token from ``/auth/token``): pauses ``keyphrase_daily``, deletes its old runs,
   **triggers** a run with params (``ds`` = the day before yesterday, ``scale`` tiny, ``label_budget``), and
   unpauses the DAG so the **scheduler creates the run of the latest interval** (``ds`` = yesterday); waits for
   both (``max_active_runs=1``: one after the other).
4. Reads back: run states and per-task durations (REST), the Celery worker each task instance ran on (its
   ``external_executor_id`` found in that worker's log) and its queue, Celery workers answering a ping, the Spark
   applications the standalone master saw (``/json/``) with the workers that ran their executors (each worker's
   ``/json/``), the most label shards that overlapped in time (never above pool ``llm``), the judge server's call
   count (``/stats``), and the published serving version (``serving/CURRENT`` in the lake).

The JSON line goes to stdout (and ``<cluster>/e2e/result.json``); progress to stderr. Exit 0 when both runs
succeeded and every check holds, 1 otherwise. ``--timeout-min`` bounds the wait (default 90).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.deploy import cluster, topology
from keyphrase_pipeline.deploy.cluster import http_json
from keyphrase_pipeline.models.tiny import build_tiny_encoder
from keyphrase_pipeline.stages import GPU_QUEUE, task_ids

DAG_ID = "keyphrase_daily"
TINY_TRAIN = {"matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 24, "epochs": 100,
              "bi_epochs": 100, "evals_per_epoch": 0, "cross_max_length": 48, "learning_rate": 2e-3, "warmup_ratio": 0.0,
              "cross_max_steps": 8, "bi_max_steps": 8, "min_rows": 10, "device": "cpu"}
TINY_SERVE = {"dim": 16, "quantize": False, "recall_sample": 50, "top_k": 10}
#: former DAG task ids -> today's (one name per stage): lines recorded before the rename are checked as today's
RENAMED_TASKS = {"llm_labels.label_shard": "llm_labels.llm_label", "serve.build_index": "serve.index"}
GPU_TASKS = task_ids(GPU_QUEUE)  # the stage table's tasks on the gpu queue


def say(msg: str) -> None:
    print(f"[cluster-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def e2e_env(root: Path, today: dt.date, encoder: str) -> dict[str, str]:
    """The ``KP_*`` settings of the e2e: its own lake, the tiny world ending yesterday, the tiny models."""
    start = today - dt.timedelta(days=12)
    env = {
        "KP_LAKE_ROOT": str(root / "lake"),
        "KP_TRUTH_PROVIDER": "keyphrase_pipeline.synthetic.world:load_truth",
        "KP_SYNTH__SCALE": "tiny", "KP_SYNTH__SEED": "7", "KP_SYNTH__DAYS": "12",
        "KP_SYNTH__START_DATE": start.isoformat(),
        "KP_CTR__WINDOW_DAYS": "7", "KP_CTR__MIN_IMPRESSIONS": "5",
        "KP_PAIRS__DAILY_BUDGET": "300", "KP_PAIRS__SHARD_SIZE": "100",
        "KP_TRAIN__BASE_MODEL": encoder,
        # unattended: nobody answers Required Actions here (make review-e2e tests the human-in-the-loop tasks)
        "KP_REVIEW__APPROVAL": "false", "KP_REVIEW__ADJUDICATION_PAIRS": "0",
    }
    for section, values in (("TRAIN", TINY_TRAIN), ("SERVE", TINY_SERVE)):
        for k, v in values.items():
            env[f"KP_{section}__{k.upper()}"] = json.dumps(v) if isinstance(v, (list, bool)) else str(v)
    return env


class Api:
    """A small Airflow REST API v2 client (JWT from ``/auth/token``)."""

    def __init__(self, base: str, user: str, password: str):
        self.base = base.rstrip("/")
        body = self._raw("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        self.token = body["access_token"]

    def _raw(self, method: str, path: str, payload=None, auth: bool = True):
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def call(self, method: str, path: str, payload=None):
        return self._raw(method, path, payload)


def wait_for(what: str, check, timeout_s: float, every_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            value = None
            last = exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(every_s)


def celery_worker_of(logs: Path, ti_id: str | None) -> str | None:
    """The Celery worker (``default@host`` / ``gpu@host``) whose log mentions the task instance id ``ti_id`` (each
    worker logs ``Workload finished ... workload_id=<TI id>``)."""
    if not ti_id:
        return None

    for svc in topology.SERVICES:
        if svc.queue:
            log = logs / f"{svc.name}.log"
            if log.exists() and ti_id in log.read_text(errors="replace"):
                import socket

                return f"{svc.queue}@{socket.gethostname()}"
    return None


def executor_seen(scheduler_log: Path) -> str | None:
    """The executor the scheduler's log says it loaded (``CeleryExecutor``...), or None."""

    text = scheduler_log.read_text(errors="replace") if scheduler_log.exists() else ""
    found = re.findall(r"Loaded executor: :?(\w+Executor)", text)
    return found[-1] if found else None


def max_overlap(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, ISO end) open at one instant."""
    events = []
    for start, end in intervals:
        if start and end:
            events += [(start, 1), (end, -1)]
    best = cur = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        cur += step
        best = max(best, cur)
    return best


def spark_apps(ctx: dict[str, str], n_workers: int) -> list[dict]:
    """Applications the master saw, each with the workers that ran its executors."""

    master = http_json(f"http://127.0.0.1:{ctx['spark_ui_port']}/json/") or {}
    apps = {a["id"]: {"id": a["id"], "name": a["name"], "state": a["state"], "cores": a.get("cores"), "executors_on": []}
            for a in master.get("activeapps", []) + master.get("completedapps", [])}
    for i in range(n_workers):
        w = http_json(f"http://127.0.0.1:{int(ctx['spark_worker_ui_port']) + i}/json/") or {}
        for ex in w.get("executors", []) + w.get("finishedexecutors", []):
            app = apps.get(ex.get("appid"))
            if app is not None:
                app["executors_on"].append(w.get("id"))
    return list(apps.values())


def failed_checks(result: dict) -> list[str]:
    """What the e2e's JSON line shows to be wrong (empty when all holds): both runs successful, CeleryExecutor,
    two Celery workers, GPU tasks on the ``gpu`` queue and worker, the rest on ``default``, Spark applications on
    the master, label shards never above pool ``llm``, judge calls made, a serving version published."""
    out = []
    if result.get("runs") != {"manual": "success", "scheduled": "success"}:
        out.append(f"runs {result.get('runs')}")
    if result.get("executor") != "CeleryExecutor":
        out.append(f"executor {result.get('executor')}")
    if result.get("celery_workers") != 2:
        out.append(f"celery_workers {result.get('celery_workers')}")
    for recorded, host in (result.get("task_hosts") or {}).items():
        task = RENAMED_TASKS.get(recorded, recorded)  # a line recorded before a task was renamed
        want = "gpu" if task in GPU_TASKS else "default"
        if host.get("queue") != want or not (host.get("hostname") or "").startswith(f"{want}@") \
                or "," in (host.get("hostname") or ""):
            out.append(f"{task} ran on queue {host.get('queue')} worker {host.get('hostname')}, not {want}")
    if not any(RENAMED_TASKS.get(t, t) in GPU_TASKS for t in (result.get("task_hosts") or {})):
        out.append("no task ran on the gpu worker")
    if not result.get("spark_apps"):
        out.append("no Spark application on the master")
    if (result.get("max_parallel_label_shards") or 0) > (result.get("llm_pool_slots") or 0):
        out.append(f"{result.get('max_parallel_label_shards')} label shards at once > pool {result.get('llm_pool_slots')}")
    if not result.get("judge_calls"):
        out.append("no judge call")
    if not result.get("serving_version"):
        out.append("nothing published")
    return out


def prepare(cl, today: dt.date, workdir: Path | None = None):
    """Steps 1-2: seed the tiny world and build the tiny encoder under ``workdir`` (default ``<cluster>/e2e``),
    restart the judge and the Airflow processes with those settings, make sure the rest is up, log in to the REST
    API and wait for the DAG. Returns ``(settings, up_report, ctx, api)``."""

    root = workdir or cl.root / "e2e"
    root.mkdir(parents=True, exist_ok=True)

    encoder = root / "tiny_encoder"
    if not (encoder / "modules.json").exists():
        build_tiny_encoder(encoder, hidden=32, seed=3)
    env = e2e_env(root, today, str(encoder))
    os.environ.update(env)
    from keyphrase_pipeline.core.settings import get_settings, load_settings
    from keyphrase_pipeline.synthetic import synth

    get_settings.cache_clear()
    settings = load_settings()

    meta = Path(layout.synth_world_meta_path(Lake.from_settings(settings)))
    if not meta.exists() or json.loads(meta.read_text()).get("start_date") != env["KP_SYNTH__START_DATE"]:
        say(f"seeding the tiny demo world {env['KP_SYNTH__START_DATE']} .. {today - dt.timedelta(days=1)} into {settings.lake_root}")
        synth.run(settings)

    # 2. processes that read these settings are restarted with them; the rest only made sure of
    for name in ["judge"] + [p.name for p in cluster.processes(cl) if p.name.startswith("airflow-")]:
        cluster.stop(cl, name)
    say("starting / checking the cluster")
    report = cluster.up(cl)
    ctx = cluster.native_context(cl)
    password = cluster.topology_admin_password(cl.airflow_home)
    api = Api(f"http://127.0.0.1:{ctx['api_port']}", "admin", password)
    wait_for("the DAG to be parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}"), 300)
    return settings, report, ctx, api


def judge_call_count(cl, ctx) -> int | None:
    """Chat completions the judge answered: the stand-in's ``/stats``, or vLLM's Prometheus counter
    ``vllm:request_success_total`` (summed over its labels) from ``/metrics``; None when unreadable."""

    base = f"http://127.0.0.1:{ctx['judge_port']}"
    if cl.judge != "vllm":
        return (cluster.http_json(f"{base}/stats") or {}).get("judge_calls")
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return prometheus_total(text, "vllm:request_success_total")


def prometheus_total(text: str, name: str) -> int | None:
    """The sum of a Prometheus counter's samples (every label set) in exposition ``text``; None when absent."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and (line[len(name):len(name) + 1] in ("{", " "))]
    return int(sum(values)) if values else None


def clear_runs(api) -> None:
    """Delete every run of the DAG (a queued or running one is marked failed first: the API refuses to delete it).

    ``api``: the REST client of ``prepare``. Raises urllib.error.HTTPError when the API still refuses after ~30 s."""
    for run in api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"
        if run["state"] in ("queued", "running"):
            api.call("PATCH", path, {"state": "failed"})
        for attempt in range(10):
            try:
                api.call("DELETE", path)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 409 or attempt == 9:
                    raise
                time.sleep(3)


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(prog="cluster-e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None, help="cluster directory (default var/cluster)")
    ap.add_argument("--timeout-min", type=float, default=90.0)
    ap.add_argument("--label-budget", type=int, default=200)
    ap.add_argument("--faults", action="store_true",
                    help="run the fault cases instead (keyphrase_pipeline.deploy.cluster_faults): kill the gpu "
                         "worker mid-shard, a Spark worker during the CTR job, stop the judge for a minute")
    args = ap.parse_args(argv)
    if args.faults:  # its own process: cluster_faults builds on this module, which must not import it back
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--faults"]
        return subprocess.call([sys.executable, "-m", "keyphrase_pipeline.deploy.cluster_faults", *rest])
    cl = cluster.load_cluster(args.root)
    root = cl.root / "e2e"
    today = dt.datetime.now(dt.timezone.utc).date()
    t0 = time.monotonic()
    settings, report, ctx, api = prepare(cl, today)

    # 3. REST: trigger with params, and let the scheduler create the latest interval's run
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
    clear_runs(api)  # e.g. the scheduled run a fresh cluster started at once, waiting for its input
    manual_ds = (today - dt.timedelta(days=2)).isoformat()
    conf = {"ds": manual_ds, "scale": "tiny", "label_budget": args.label_budget, "skip_llm": False,
            "full_reembed": False, "force_retrain": False, "force_promote": False}
    manual = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                      {"dag_run_id": f"e2e_manual__{int(time.time())}", "logical_date": None, "conf": conf})
    say(f"triggered {manual['dag_run_id']} with {conf}")
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    say("unpaused: the scheduler creates the latest interval's run")

    def runs():
        return api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]

    def done():
        rs = runs()
        m = [r for r in rs if r["dag_run_id"] == manual["dag_run_id"]]
        s = [r for r in rs if r["run_type"] == "scheduled"]
        terminal = ("success", "failed")
        if m and s and m[0]["state"] in terminal and s[0]["state"] in terminal:
            return m[0], s[0]
        say("runs: " + ", ".join(f"{r['dag_run_id']}={r['state']}" for r in rs))
        return None

    try:
        manual_run, scheduled_run = wait_for("both runs to finish", done, args.timeout_min * 60, every_s=30)
    except TimeoutError as exc:
        say(str(exc))
        rs = runs()
        manual_run = next((r for r in rs if r["dag_run_id"] == manual["dag_run_id"]), {"state": "missing"})
        scheduled_run = next((r for r in rs if r["run_type"] == "scheduled"), {"state": "missing", "dag_run_id": None})

    # 4. what happened, from the outside
    task_hosts: dict[str, dict] = {}
    durations: dict[str, dict] = {}
    shard_windows = []
    for label, run in (("manual", manual_run), ("scheduled", scheduled_run)):
        if not run.get("dag_run_id"):
            continue
        rid = urllib.request.quote(run["dag_run_id"], safe="")
        tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{rid}/taskInstances?limit=500")["task_instances"]
        durations[label] = {}
        for ti in tis:
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            durations[label][key] = {"state": ti["state"], "seconds": round(ti["duration"] or 0.0, 1)}
            if ti["state"] in ("success", "failed") and ti.get("start_date"):
                worker = celery_worker_of(cl.logs, ti.get("id"))  # the worker logs "workload_id=<TI id>"
                host = task_hosts.setdefault(ti["task_id"], {"queue": ti["queue"], "hostname": worker})
                if worker and host["hostname"] != worker:
                    host["hostname"] = ",".join(sorted({*host["hostname"].split(","), worker}))
            if ti["task_id"] == "llm_labels.llm_label" and ti["state"] == "success":
                shard_windows.append((ti["start_date"], ti["end_date"]))
    workers = sum(1 for q in ("default", "gpu") if cluster.celery_health(cl, ctx, q)[0])
    apps = spark_apps(ctx, cluster.SPARK_WORKERS)
    judge_calls = judge_call_count(cl, ctx)

    serving = Lake.from_settings(settings).read_pointer(layout.current_pointer(settings))
    pool = next((p for p in api.call("GET", "/api/v2/pools")["pools"] if p["name"] == "llm"), {})
    result = {
        "executor": executor_seen(cl.logs / "airflow-scheduler.log"),
        "runs": {"manual": manual_run.get("state"), "scheduled": scheduled_run.get("state")},
        "run_ids": {"manual": manual_run.get("dag_run_id"), "scheduled": scheduled_run.get("dag_run_id")},
        "ds": {"manual": manual_ds, "scheduled": (today - dt.timedelta(days=1)).isoformat()},
        "task_hosts": task_hosts,
        "task_durations_s": durations,
        "celery_workers": workers,
        "spark_master": f"spark://127.0.0.1:{ctx['spark_port']}",
        "spark_apps": len(apps),
        "spark_app_detail": [{k: a[k] for k in ("name", "state", "executors_on")} for a in apps],
        "max_parallel_label_shards": max_overlap(shard_windows),
        "llm_pool_slots": pool.get("slots"),
        "judge_calls": judge_calls,
        "judge": (f"real LLM: {ctx['judge_model']} (SmolLM2-135M-Instruct) on vLLM's CPU build (kp llm-server)"
                  if cl.judge == "vllm" else
                  "STAND-IN simulated annotator behind the OpenAI protocol (keyphrase_pipeline.synthetic.judge_server)"),
        "serving_version": serving,
        "cluster_up_s": report.get("total_seconds"),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    line = json.dumps(result, sort_keys=False)
    (root / "result.json").write_text(line + "\n")
    print(line, flush=True)
    failures = failed_checks(result)
    if failures:
        say("FAILED checks: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
