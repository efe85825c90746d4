"""``make cluster-e2e FAULTS=1`` (``python -m keyphrase_pipeline.deploy.cluster_e2e --faults``): the fault cases
(a worker, a Spark worker and the judge killed or stopped mid-run) on the real native topology
(``keyphrase_pipeline.deploy.cluster``), injected into ONE REST-triggered
run of ``keyphrase_daily`` on the tiny world (the e2e's setup, its own lake under ``<cluster>/e2e/faults``):

1. ``gpu_worker_killed``: while a label shard is half judged (its first batch staged), the ``airflow-worker-gpu``
   process tree is SIGKILLed, then ``cluster.up`` starts what is not running (only that worker). Airflow fails the
   orphaned task instance after ``[scheduler] task_instance_heartbeat_timeout`` (60 s here) and retries it; the
   retry takes over the dead holder's lease and judges only what is left.
2. ``spark_worker_killed``: while the ``kp-ctr-labels`` application has executors, the Spark worker running one
   (and its executor) is SIGKILLed; the job must finish on the other worker. The worker is started again
   (``cluster.up``) once the CTR task is done.
3. ``judge_stopped``: once Airflow has failed case 1's orphaned try, while another shard is half judged, the
   judge server is stopped (SIGTERM) for
   ``--judge-outage-s`` (60) seconds, then started again (``cluster.up``).

The judge server answers each request after ``--judge-delay-s`` (``JUDGE_STANDIN_DELAY_S``) so a shard lasts
long enough to be hit, and keeps its counters across its restart (``JUDGE_STANDIN_STATS_FILE``), so its call
count can be compared with the distinct pairs labelled that day (staged + quarantined) and with its own count
of prompts asked more than once (``repeated_prompts``: pairs paid twice).

Each case prints one JSON line (also written, one a line, to ``<cluster>/e2e/faults.json``) with what was seen:
timings, the task instance's tries (state, worker), Spark executors per worker before/after, judge calls vs
distinct pairs. Exit 0 when the run succeeded and every case's checks hold (``case_failures``), 1 otherwise.
A scheduled run the scheduler creates meanwhile is marked failed at once, so only the triggered run works.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.request

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.deploy import cluster
from keyphrase_pipeline.deploy.cluster import http_json
from keyphrase_pipeline.deploy.cluster_e2e import DAG_ID, clear_runs, prepare, say

LABEL_TASK = "llm_labels.llm_label"
CTR_TASK = "ctr.ctr_labels"
CTR_APP = "kp-ctr-labels"


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every descendant (collected first, so none is reparented and missed). Returns the pids
    signalled."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    killed = []
    for p in procs:
        try:
            p.kill()
            killed.append(p.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=15)
    return killed


def shard_progress(lake, ds: str, shard: int) -> dict:
    """Batches staged, pairs staged and whether ``_DONE`` exists for one shard (read from the lake)."""
    from keyphrase_pipeline.labels.store import read_done, staged_keys, staging_files

    return {"batches": len(staging_files(lake, ds, shard)), "pairs_staged": len(staged_keys(lake, ds, shard)),
            "done": read_done(lake, ds, shard) is not None}


def day_pairs(lake, ds: str) -> dict:
    """Distinct pairs labelled for ``ds`` (staged keys + quarantined keys) and staged rows (duplicates show as
    rows > distinct)."""
    from keyphrase_pipeline.labels.store import read_quarantine, read_staging

    staged = read_staging(lake, ds, cols=["pair_key"])
    quarantined = read_quarantine(lake, ds, cols=["pair_key"])
    keys = set(staged["pair_key"]) | set(quarantined["pair_key"])
    return {"distinct_pairs": len(keys), "staged_rows": int(len(staged)), "quarantined_rows": int(len(quarantined))}


def worker_executors(ctx: dict, n_workers: int, app_id: str) -> dict[str, list[dict]]:
    """``{"spark-worker-<i>": [{"id", "state"}]}``: the executors of ``app_id`` each worker reports (running and
    finished)."""

    out = {}
    for i in range(n_workers):
        w = http_json(f"http://127.0.0.1:{int(ctx['spark_worker_ui_port']) + i}/json/") or {}
        out[f"spark-worker-{i + 1}"] = [{"id": e.get("id"), "state": e.get("state", "RUNNING")}
                                        for e in w.get("executors", []) + w.get("finishedexecutors", [])
                                        if e.get("appid") == app_id]
    return out


def case_failures(case: dict) -> list[str]:
    """What a case's JSON line shows to be wrong (empty when it holds)."""
    out = []
    name = case.get("case")
    if not case.get("injected"):
        return [f"{name}: the fault was never injected ({case.get('note', 'its moment never came')})"]
    if case.get("run_state") != "success":
        out.append(f"{name}: the run ended {case.get('run_state')}")
    if case.get("task_final_state") != "success":
        out.append(f"{name}: {case.get('task')} ended {case.get('task_final_state')}")
    if name in ("gpu_worker_killed", "judge_stopped"):
        calls, pairs = case.get("judge_calls"), case.get("distinct_pairs_labelled")
        if case.get("repeated_prompts"):
            out.append(f"{name}: {case['repeated_prompts']} prompt(s) asked twice (a pair paid twice)")
        if calls is None or pairs is None or calls - (case.get("unknown_answers") or 0) > pairs:
            out.append(f"{name}: judge calls {calls} > distinct pairs labelled {pairs}")
    if name == "gpu_worker_killed":
        if (case.get("task_tries") or 0) < 2:
            out.append(f"{name}: the shard was not retried (tries {case.get('task_tries')})")
        if case.get("restarted_by_up") != ["airflow-worker-gpu"]:
            out.append(f"{name}: cluster up restarted {case.get('restarted_by_up')}, not only the gpu worker")
    if name == "spark_worker_killed":
        if case.get("app_state") != "FINISHED":
            out.append(f"{name}: application {case.get('app_state')}")
        if not case.get("killed_worker_had_executor"):
            out.append(f"{name}: the killed worker ran no executor of the job")
        if not case.get("executors_after_kill", {}).get(case.get("surviving_worker"), []):
            out.append(f"{name}: no executor on the surviving worker")
    return out


class Faults:
    """The monitor: polls the run's task instances, the lake and the Spark master, injects each fault once at its
    moment, and records what happens."""

    def __init__(self, cl, ctx, api, lake, ds: str, run_id: str, outage_s: float, kill_after_s: float):
        self.cl, self.ctx, self.api, self.lake, self.ds, self.run_id = cl, ctx, api, lake, ds, run_id
        self.outage_s, self.kill_after_s = outage_s, kill_after_s
        self.t0 = time.monotonic()
        self.gpu: dict = {"case": "gpu_worker_killed", "task": LABEL_TASK, "injected": False}
        self.spark: dict = {"case": "spark_worker_killed", "task": CTR_TASK, "injected": False}
        self.judge: dict = {"case": "judge_stopped", "task": LABEL_TASK, "injected": False}
        self.first_batch_seen: dict[int, float] = {}
        self.states: dict[str, list] = {"gpu": [], "judge": []}
        self.judge_thread: threading.Thread | None = None
        self.spark_restarted = False

    def t(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def tis(self) -> dict[tuple[str, int], dict]:
        rid = urllib.request.quote(self.run_id, safe="")
        out = self.api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{rid}/taskInstances?limit=500")["task_instances"]
        return {(ti["task_id"], ti.get("map_index", -1)): ti for ti in out}

    def judge_stats(self) -> dict:

        return http_json(f"http://127.0.0.1:{self.ctx['judge_port']}/stats") or {}

    # -- case 2 ----------------------------------------------------------------------------------------------
    def poll_spark(self, tis) -> None:

        rec = self.spark
        if not rec["injected"]:
            master = cluster.http_json(f"http://127.0.0.1:{self.ctx['spark_ui_port']}/json/") or {}
            app = next((a for a in master.get("activeapps", []) if a.get("name") == CTR_APP), None)
            if not app:
                return
            ex = worker_executors(self.ctx, cluster.SPARK_WORKERS, app["id"])
            running = [w for w, xs in ex.items() if any(x["state"] == "RUNNING" for x in xs)]
            first = rec.setdefault("t_app_seen", self.t())
            if len(running) < 2 and (not running or self.t() - first < 20):
                return  # wait (up to 20 s) until both workers run an executor
            victim = "spark-worker-1" if "spark-worker-1" in running else running[0]
            pid = cluster.running_pid(self.cl, victim)
            rec.update(app_id=app["id"], executors_before_kill=ex, killed_worker=victim,
                       killed_worker_had_executor=victim in running,
                       surviving_worker=next(w for w in ex if w != victim), t_kill=self.t(),
                       killed_pids=kill_tree(pid) if pid else [], injected=True)
            say(f"case spark_worker_killed: SIGKILLed {victim} (pids {rec['killed_pids']}) while {app['id']} ran "
                f"executors on {running}")
            return
        ti = tis.get((CTR_TASK, -1))
        if ti and ti["state"] in ("success", "failed") and "app_state" not in rec:
            master = cluster.http_json(f"http://127.0.0.1:{self.ctx['spark_ui_port']}/json/") or {}
            app = next((a for a in master.get("completedapps", []) + master.get("activeapps", [])
                        if a["id"] == rec["app_id"]), {})
            rec.update(app_state=app.get("state"), app_duration_s=round((app.get("duration") or 0) / 1000, 1),
                       executors_after_kill=worker_executors(self.ctx, cluster.SPARK_WORKERS, rec["app_id"]),
                       alive_workers_after=master.get("aliveworkers"), t_task_done=self.t(),
                       task_final_state=ti["state"], task_tries=ti.get("try_number"))
            t = time.monotonic()
            report = cluster.up(self.cl)
            rec["restarted_by_up"] = sorted(k for k, v in report.items() if isinstance(v, dict) and v.get("started"))
            rec["restart_s"] = round(time.monotonic() - t, 1)
            say(f"case spark_worker_killed: {CTR_TASK} {ti['state']}, app {rec['app_state']}; cluster up restarted "
                f"{rec['restarted_by_up']}")

    # -- case 1 ----------------------------------------------------------------------------------------------
    def shard_running_half_done(self, tis, exclude: set[int]) -> int | None:
        for (task, idx), ti in sorted(tis.items(), key=lambda kv: kv[0][1]):
            if task != LABEL_TASK or idx in exclude or ti["state"] != "running":
                continue
            if shard_progress(self.lake, self.ds, idx)["batches"] >= 1 and not shard_progress(self.lake, self.ds, idx)["done"]:
                seen = self.first_batch_seen.setdefault(idx, time.monotonic())
                if time.monotonic() - seen >= self.kill_after_s:
                    return idx
        return None

    def poll_gpu(self, tis) -> None:

        rec = self.gpu
        if not rec["injected"]:
            idx = self.shard_running_half_done(tis, set())
            if idx is None:
                return
            pid = cluster.running_pid(self.cl, "airflow-worker-gpu")
            before = self.judge_stats()
            rec.update(map_index=idx, t_kill=self.t(), progress_at_kill=shard_progress(self.lake, self.ds, idx),
                       judge_calls_at_kill=before.get("judge_calls"), try_at_kill=tis[(LABEL_TASK, idx)]["try_number"])
            rec["killed_pids"] = kill_tree(pid) if pid else []
            rec["injected"] = bool(rec["killed_pids"])
            say(f"case gpu_worker_killed: SIGKILLed airflow-worker-gpu (pids {rec['killed_pids']}) in shard {idx} "
                f"at {rec['progress_at_kill']}")
            t = time.monotonic()
            report = cluster.up(self.cl)
            rec["restarted_by_up"] = sorted(k for k, v in report.items() if isinstance(v, dict) and v.get("started"))
            rec["restart_s"] = round(time.monotonic() - t, 1)
            say(f"case gpu_worker_killed: cluster up restarted {rec['restarted_by_up']} in {rec['restart_s']} s")
            return
        self._track(rec, tis, "gpu")

    def _track(self, rec: dict, tis, key: str) -> None:
        ti = tis.get((LABEL_TASK, rec["map_index"]))
        if not ti:
            return
        seen = self.states[key]
        state = (ti["state"], ti.get("try_number"))
        if not seen or seen[-1][1:] != state:
            seen.append((self.t(), *state))
        if ti["state"] in ("success", "failed") and "task_final_state" not in rec:
            rec.update(task_final_state=ti["state"], task_tries=ti.get("try_number"), t_task_done=self.t(),
                       states_seen=[{"t": t, "state": s, "try": n} for t, s, n in seen],
                       shard_done=self._done(rec["map_index"]))

    def _done(self, shard: int) -> dict | None:
        from keyphrase_pipeline.labels.store import read_done

        done = read_done(self.lake, self.ds, shard) or {}
        return {k: done.get(k) for k in ("pairs", "judged", "judge_calls", "already_labelled", "lease_taken_over")}

    # -- case 3 ----------------------------------------------------------------------------------------------
    def poll_judge(self, tis) -> None:

        rec = self.judge
        if not rec["injected"]:
            if not any(state != "running" for _, state, _ in self.states["gpu"]):
                return  # one fault at a time: once Airflow has failed case 1's orphaned try (its retry may follow)
            idx = self.shard_running_half_done(tis, {self.gpu.get("map_index", -1)})
            if idx is None:
                return
            before = self.judge_stats()
            rec.update(map_index=idx, t_stop=self.t(), progress_at_stop=shard_progress(self.lake, self.ds, idx),
                       judge_calls_at_stop=before.get("judge_calls"), try_at_stop=tis[(LABEL_TASK, idx)]["try_number"])
            rec["stop"] = cluster.stop(self.cl, "judge")
            rec["injected"] = True
            say(f"case judge_stopped: judge server {rec['stop']} during shard {idx} at {rec['progress_at_stop']}; "
                f"back in {self.outage_s:.0f} s")

            def restart():
                time.sleep(self.outage_s)
                t = time.monotonic()
                report = cluster.up(self.cl)
                rec["restarted_by_up"] = sorted(k for k, v in report.items() if isinstance(v, dict) and v.get("started"))
                rec["t_restart"] = self.t()
                rec["restart_s"] = round(time.monotonic() - t, 1)
                say(f"case judge_stopped: cluster up restarted {rec['restarted_by_up']}")

            self.judge_thread = threading.Thread(target=restart, daemon=True)
            self.judge_thread.start()
            return
        self._track(rec, tis, "judge")

    def finish_judge_case(self) -> None:
        """What the shard's task logs say about the outage: the judge client's own retries per try (count, first
        and last), whether the try ended in JudgeUnavailable, and so what recovered the shard."""
        rec = self.judge
        if not rec.get("injected"):
            return
        rec.pop("gpu_log_offset", None)
        tdir = (self.cl.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={self.run_id}" / f"task_id={LABEL_TASK}"
                / f"map_index={rec['map_index']}")
        per_try = {}
        for log_file in sorted(tdir.glob("attempt=*.log")):
            text = log_file.read_text(errors="replace")
            stamps = re.findall(r'"timestamp":"([^"]+)","level":"warning","event":"judge request failed', text)
            per_try[log_file.stem.split("=")[1]] = {
                "client_retries_logged": len(stamps), "first_failure": stamps[0] if stamps else None,
                "last_failure": stamps[-1] if stamps else None,
                "judge_unavailable": "still failing after" in text}
        rec["task_logs"] = per_try
        tries = rec.get("task_tries") or 0
        rec["recovered_by"] = ("task retry (the judge client's retries ran out first: JudgeUnavailable, then an "
                               "Airflow retry)" if tries > (rec.get("try_at_stop") or 1)
                               else "the judge client's own retry/backoff (same task try)")


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(prog="cluster-e2e --faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None, help="cluster directory (default var/cluster)")
    ap.add_argument("--timeout-min", type=float, default=45.0)
    ap.add_argument("--label-budget", type=int, default=400, help="pairs judged (shards of 100)")
    ap.add_argument("--judge-delay-s", type=float, default=1.5, help="stand-in judge: seconds per answer")
    ap.add_argument("--judge-outage-s", type=float, default=60.0)
    ap.add_argument("--kill-after-s", type=float, default=3.0,
                    help="inject a label fault this long after the shard's first batch is staged")
    ap.add_argument("--heartbeat-timeout-s", type=int, default=60,
                    help="[scheduler] task_instance_heartbeat_timeout of the cluster (Airflow's default: 300)")
    args = ap.parse_args(argv)
    # the cases slow the judge down and count its calls across an outage: the stand-in does both (a real LLM
    # server is restarted as the stand-in for this run; `make cluster` with CLUSTER_JUDGE=vllm brings it back)
    os.environ["CLUSTER_JUDGE"] = "stand-in"
    cl = cluster.load_cluster(args.root)
    e2e = cl.root / "e2e"
    work = e2e / "faults"
    if (work / "lake").exists():  # a fresh lake: earlier labels would leave nothing to judge
        shutil.rmtree(work / "lake")
    work.mkdir(parents=True, exist_ok=True)
    stats_file = work / "judge_stats.json"
    stats_file.unlink(missing_ok=True)
    os.environ.update({"JUDGE_STANDIN_DELAY_S": str(args.judge_delay_s), "JUDGE_STANDIN_STATS_FILE": str(stats_file),
                       "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout_s),
                       "KP_PAIRS__DAILY_BUDGET": str(args.label_budget)})
    today = dt.datetime.now(dt.timezone.utc).date()
    t0 = time.monotonic()
    settings, _report, ctx, api = prepare(cl, today, work)
    lake = Lake.from_settings(settings)

    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
    clear_runs(api)
    ds = (today - dt.timedelta(days=2)).isoformat()
    conf = {"ds": ds, "scale": "tiny", "label_budget": args.label_budget, "skip_llm": False,
            "full_reembed": False, "force_retrain": False, "force_promote": False}
    run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                   {"dag_run_id": f"e2e_faults__{int(time.time())}", "logical_date": None, "conf": conf})
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    say(f"triggered {run['dag_run_id']} with {conf}")
    f = Faults(cl, ctx, api, lake, ds, run["dag_run_id"], args.judge_outage_s, args.kill_after_s)
    cancelled: list[str] = []
    state = "running"
    deadline = time.monotonic() + args.timeout_min * 60
    last_say = 0.0
    while time.monotonic() < deadline:
        try:
            for r in api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]:
                if r["dag_run_id"] == run["dag_run_id"]:
                    state = r["state"]
                elif r["run_type"] == "scheduled" and r["state"] in ("queued", "running"):
                    api.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(r['dag_run_id'], safe='')}",
                             {"state": "failed"})
                    cancelled.append(r["dag_run_id"])
                    say(f"marked the scheduled run {r['dag_run_id']} failed (only the triggered run is used)")
            tis = f.tis()
            f.poll_spark(tis)
            f.poll_gpu(tis)
            f.poll_judge(tis)
        except (OSError, ValueError, KeyError) as exc:  # a REST hiccup under load: try again
            say(f"poll error: {type(exc).__name__}: {exc}")
            time.sleep(2)
            continue
        if state in ("success", "failed") and (f.judge_thread is None or not f.judge_thread.is_alive()):
            break
        if time.monotonic() - last_say > 60:
            last_say = time.monotonic()
            running = sorted(k[0] + (f"[{k[1]}]" if k[1] >= 0 else "") for k, ti in tis.items() if ti["state"] == "running")
            say(f"run {state}; running: {running}")
        time.sleep(0.5 if not f.spark.get("injected") else 1.5)
    tis = f.tis()
    f.poll_spark(tis)
    for rec, key in ((f.gpu, "gpu"), (f.judge, "judge")):
        if rec.get("injected"):
            f._track(rec, tis, key)
    f.finish_judge_case()
    stats = f.judge_stats()
    pairs = day_pairs(lake, ds)
    common = {"run_state": state, "run_id": run["dag_run_id"], "ds": ds, "label_budget": args.label_budget,
              "judge_calls": stats.get("judge_calls"), "distinct_pairs_labelled": pairs["distinct_pairs"],
              "staged_rows": pairs["staged_rows"], "quarantined_rows": pairs["quarantined_rows"],
              "judge_distinct_prompts": stats.get("distinct_prompts"), "repeated_prompts": stats.get("repeated_prompts"),
              "unknown_answers": stats.get("unknown"), "judge_delay_s": args.judge_delay_s,
              "heartbeat_timeout_s": args.heartbeat_timeout_s, "cancelled_scheduled_runs": cancelled,
              "serving_version": lake.read_pointer(layout.current_pointer(settings)), "wall_s": round(time.monotonic() - t0, 1)}
    lines, failures = [], []
    for rec in (f.gpu, f.spark, f.judge):
        case = {**rec, **(common if rec["case"] != "spark_worker_killed" else
                          {k: common[k] for k in ("run_state", "run_id", "ds", "serving_version", "wall_s")})}
        case["failures"] = case_failures(case)
        failures += case["failures"]
        lines.append(json.dumps(case, default=str))
    (e2e / "faults.json").write_text("\n".join(lines) + "\n")
    for line in lines:
        print(line, flush=True)
    if failures:
        say("FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
