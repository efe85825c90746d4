"""``make review-e2e``: the daily DAG's human-in-the-loop tasks and publish deadline in a real scheduler run,
answered through the Airflow REST API as an operator's tool would, and checked from the outside.

``airflow standalone`` (scheduler, dag-processor, triggerer, api-server; LocalExecutor, SQLite) runs in its own
``AIRFLOW_HOME`` and lake under ``--workdir`` (default ``var/review_e2e``), on the tiny demo world (12 days ending
yesterday, SIMULATED) with the tests' tiny encoder: the run proves the wiring, not model quality. Settings that make
every case happen in minutes: ``review.margin_band`` 1.0 (every promotion against a champion is a close call),
timeouts of about 100 s, 3 adjudication pairs.

1. The **scheduled** run of yesterday (unpausing the DAG): the first model is promoted without a person (nothing
   to compare with); the day's **adjudication** form is answered through ``PATCH .../hitlDetails`` (pair 1
   relevant, pair 2 not relevant, pair 3 skip): the answers land in the label review store with the user's name.
2. A manual run of the day before (never published) whose logical date puts its **publish deadline** a minute
   after it is created: the deadline alert fires (``runs/ds=D/_alerts/publish_deadline.json``, the triggerer's log).
3. A manual run (``force_retrain``, ``skip_llm``) of the first day whose promotion waits and **nobody answers**:
   the champion is kept at the timeout. Its deadline passes too, but the day was published in time by the
   scheduled run: logged, no alert. Training now reads the adjudicated pairs as human labels (``data.json``).
4. A manual run whose promotion is **rejected** through the API: the champion stays.
5. A manual run whose promotion is **approved** through the API: the challenger becomes the champion and is
   published.
6. A **backfill** of that day again (``POST /api/v2/backfills``, ``reprocess_behavior`` completed, conf
   ``full_reembed`` and ``skip_llm``: re-embedding after a model change): the scheduler runs it; every item is
   embedded again, the champion does not move; no deadline alert recorded for the day; the asset events carry
   their day (``extra["ds"]``). (The day's deadline is hours after the run here, so the callback's backfill branch
   is covered by the unit tests, not by this run.)

While each promotion waits, ``serving/CURRENT`` and ``registry/CHAMPION`` are read: nothing already published
changes. Chromium (Playwright) opens the UI's Required Actions page while a request is pending and looks for it.

Prints one JSON line (also ``<workdir>/result.json``); exit 0 when every check holds (``failed_checks``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.deploy import airflow_standalone as af
from keyphrase_pipeline.deploy.cluster_e2e import Api, e2e_env, say, wait_for
from keyphrase_pipeline.models.tiny import build_tiny_encoder

DAG_ID = "keyphrase_daily"
REPO = Path(__file__).resolve().parents[2]
APPROVAL, ADJUDICATION = "train.approve_promotion", "review.adjudicate"
CHROMIUM = "/usr/bin/chromium"  # Debian's (make browser), as the UI's browser tests use
# An answer within the same instant as the task parks (a script, not a person) can race Airflow 3.3.2: the
# LocalExecutor reports the parked process "success" while the answer has already re-queued the task instance, the
# scheduler marks it up for retry, the retry asks again and the first answer is lost (seen here). The e2e answers
# once the task has been parked at two polls this far apart.
PERSON_DELAY_S = 5.0
TIMEOUT_HOURS = 0.03  # 108 s: the approval's and the adjudication's response timeout here
REVIEW_ENV = {"KP_REVIEW__APPROVAL": "true", "KP_REVIEW__MARGIN_BAND": "1.0", "KP_REVIEW__TOPK_ITEMS": "30",
              "KP_REVIEW__TOPK_KEYPHRASES": "200", "KP_REVIEW__APPROVAL_TIMEOUT_HOURS": str(TIMEOUT_HOURS),
              "KP_REVIEW__ADJUDICATION_PAIRS": "3", "KP_REVIEW__ADJUDICATION_TIMEOUT_HOURS": str(TIMEOUT_HOURS),
              "KP_DAG__PUBLISH_DEADLINE_HOURS": "10",
              # training only when asked (force_retrain) or with no champion: the backfill re-embeds, no more
              "KP_TRAIN__RETRAIN_EVERY_DAYS": "1000"}


def environment(root: Path, port: int, today: dt.date) -> dict[str, str]:
    """The processes' environment: ``airflow_standalone.environment`` in a private ``AIRFLOW_HOME`` on ``port``,
    the cluster e2e's tiny ``KP_*`` settings with ``REVIEW_ENV`` on top."""
    encoder = root / "tiny_encoder"
    if not (encoder / "modules.json").exists():
        build_tiny_encoder(encoder, hidden=32, seed=3)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KP_", "AIRFLOW"))}
    env = {**base, "AIRFLOW_HOME": str(root / "airflow"), "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True", "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        env = af.environment()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    env.update(e2e_env(root, today, str(encoder)))
    env.update(REVIEW_ENV)
    return env


def seconds_before_next_interval(now: dt.datetime) -> float:
    """Seconds from ``now`` (aware) to the next 02:00 UTC, when the daily DAG's scheduler creates a new run."""
    nxt = now.astimezone(dt.UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    if nxt <= now:
        nxt += dt.timedelta(days=1)
    return (nxt - now).total_seconds()


def free_port() -> int:
    """A TCP port nothing listens on now (Airflow's own log servers take 8793 and 8794)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    """``airflow standalone`` under ``env`` with its log in ``log_path``; ``stop`` ends it."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        subprocess.run([af.airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([af.airflow_bin(), "pools", "set", "llm", "2", "LLM judge workers"], env=env, check=True,
                       capture_output=True)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([af.airflow_bin(), "standalone"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def run_path(run_id: str, tail: str = "") -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}{tail}"


def task_state(api: Api, run_id: str, task_id: str) -> str | None:
    return api.call("GET", run_path(run_id, f"/taskInstances/{task_id}")).get("state")


def wait_run(api: Api, run_id: str, timeout_s: float) -> str:
    def done():
        state = api.call("GET", run_path(run_id))["state"]
        return state if state in ("success", "failed") else None

    return wait_for(f"run {run_id} to finish", done, timeout_s, every_s=10)


def wait_awaiting(api: Api, run_id: str, task_id: str, timeout_s: float) -> dict:
    """Wait until ``task_id`` of ``run_id`` waits for a person; returns its HITL detail (REST)."""
    seen = []

    def awaiting():
        state = task_state(api, run_id, task_id)
        if state in ("success", "failed", "skipped", "upstream_failed"):
            raise RuntimeError(f"{task_id} of {run_id} ended {state} without waiting for a person")
        if state != "awaiting_input":
            seen.clear()
            return None
        seen.append(state)
        if len(seen) < 2:  # parked at two polls in a row, as a person would find it: see PERSON_DELAY_S
            return None
        return api.call("GET", run_path(run_id, f"/taskInstances/{task_id}/-1/hitlDetails"))

    return wait_for(f"{task_id} of {run_id} to wait for a person", awaiting, timeout_s, every_s=PERSON_DELAY_S)


def answer(api: Api, run_id: str, task_id: str, chosen: list[str], params_input: dict | None = None) -> dict:
    """The person's answer, as the Required Actions page sends it."""
    return api.call("PATCH", run_path(run_id, f"/taskInstances/{task_id}/-1/hitlDetails"),
                    {"chosen_options": chosen, "params_input": params_input or {}})


def trigger(api: Api, run_id: str, conf: dict, logical_date: str | None = None) -> dict:
    return api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                    {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf})


def pointers(lake: Lake) -> dict:
    """``serving/CURRENT`` and ``registry/CHAMPION`` as they are now."""
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.settings import Settings

    settings = Settings(lake_root=str(lake.root))
    return {"current": lake.read_pointer(layout.current_pointer(settings)),
            "champion": lake.read_pointer(layout.registry_pointer(settings))}


def required_actions_page(base: str, password: str, subject: str, shot: Path) -> dict:
    """Open the UI's Required Actions page in Chromium (Playwright) as admin; does it list ``subject``?"""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"checked": False, "why": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"checked": False, "why": f"no {CHROMIUM} (make browser)"}
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        except Exception as exc:  # noqa: BLE001 - a browser that does not start: said, the run goes on
            return {"checked": False, "why": f"Chromium did not start: {type(exc).__name__}: {str(exc)[:200]}"}
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/auth/login")
            page.locator("input[name='username']").fill("admin")
            page.locator("input[name='password']").fill(password)
            page.locator("button[type='submit']").click()
            page.wait_for_load_state("networkidle")
            page.goto(f"{base}/required_actions")
            page.wait_for_load_state("networkidle")
            try:
                page.get_by_text(subject[:40]).first.wait_for(timeout=30_000)
                shown = True
            except Exception:  # noqa: BLE001 - not listed within 30 s
                shown = False
            page.screenshot(path=str(shot), full_page=True)
            return {"checked": True, "lists_the_request": shown, "screenshot": str(shot)}
        finally:
            browser.close()


def evaluate_stats(lake: Lake, ds: str) -> dict:
    return lake.read_json(lake.run_stats_path(ds, "evaluate"), default={})


def promotion_case(api: Api, lake: Lake, run_id: str, ds: str, how: str | None, timeout_s: float,
                   logical_date: str | None = None, browser: dict | None = None) -> dict:
    """Trigger a retraining run of ``ds`` and answer its approval ``how`` ("Approve", "Reject", or None: no
    answer); returns what happened."""
    before = pointers(lake)
    trigger(api, run_id, {"ds": ds, "force_retrain": True, "skip_llm": True}, logical_date)
    say(f"{run_id}: triggered (ds={ds}, logical date {logical_date}); waiting for the approval request")
    detail = wait_awaiting(api, run_id, APPROVAL, timeout_s)
    waiting = pointers(lake)
    pending = evaluate_stats(lake, ds).get("review") or {}
    case = {"run_id": run_id, "answer": how, "subject": detail.get("subject"),
            "body_has_figures": "held-out F1" in (detail.get("body") or ""),
            "pending_review": bool(pending.get("pending")), "before": before, "while_waiting": waiting}
    if browser is not None:
        case["required_actions_page"] = required_actions_page(browser["base"], browser["password"],
                                                              detail.get("subject") or "", browser["shot"])
    if how:
        answer(api, run_id, APPROVAL, [how])
        say(f"{run_id}: answered {how}")
    else:
        say(f"{run_id}: nobody answers; the timeout ({TIMEOUT_HOURS * 3600:.0f} s) decides")
    case["state"] = wait_run(api, run_id, timeout_s)
    stats = evaluate_stats(lake, ds)
    case.update({"after": pointers(lake), "candidate": stats.get("version"), "promoted": stats.get("promoted"),
                 "reason": stats.get("reason"), "decision": (stats.get("review") or {}).get("decision"),
                 "approval_state": task_state(api, run_id, APPROVAL)})
    return case


def backfill_case(api: Api, lake: Lake, ds: str, timeout_s: float) -> dict:
    """A scheduler-managed backfill (``POST /api/v2/backfills``) of day ``ds`` again (``reprocess_behavior``
    completed) with the re-embedding conf the docs give; returns its runs' days and states, the champion before
    and after, the items embedded, the days the asset events of all runs carry (``extra["ds"]``), and any
    deadline alert recorded for the backfilled day."""
    prev = dt.date.fromisoformat(ds)  # the day the scheduled run covered (the lake has labels from it on)
    body = {"dag_id": DAG_ID, "from_date": f"{prev}T00:00:00Z", "to_date": f"{prev}T23:59:59Z",
            "reprocess_behavior": "completed", "max_active_runs": 1,
            "dag_run_conf": {"full_reembed": True, "skip_llm": True}}
    dry = api.call("POST", "/api/v2/backfills/dry_run", body)
    before = pointers(lake)
    backfill = api.call("POST", "/api/v2/backfills", body)
    say(f"backfill {backfill.get('id')} of {prev}: {[b['logical_date'] for b in dry['backfills']]}")

    def runs():
        rs = [r for r in api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
              if r["run_type"] == "backfill"]
        return rs if rs and all(r["state"] in ("success", "failed") for r in rs) else None

    done = wait_for("the backfill's runs", runs, timeout_s, every_s=10)
    events = api.call("GET", "/api/v2/assets/events?limit=500")["asset_events"]
    return {"dry_run_dates": [b["logical_date"] for b in dry["backfills"]], "runs": {r["dag_run_id"]: r["state"]
            for r in done}, "days": sorted({str((r.get("conf") or {}).get("ds") or r["data_interval_start"])[:10]
                                             for r in done}),
            "before": before, "after": pointers(lake),
            "embedded": (lake.read_json(lake.run_stats_path(prev.isoformat(), "embed_items"), default={})
                         .get("embedded_now")),
            "event_days": sorted({str((e.get("extra") or {}).get("ds")) for e in events
                                  if (e.get("extra") or {}).get("ds")}),
            "asset_events": len(events),
            "deadline_alert": lake.read_json(lake.run_alert_path(prev.isoformat(), "publish_deadline"), default={})}


def failed_checks(result: dict) -> list[str]:
    """What the JSON line shows to be wrong (empty when all holds)."""
    out = []
    first = result.get("scheduled") or {}
    if first.get("state") != "success" or not first.get("champion"):
        out.append(f"the scheduled run: {first.get('state')}, champion {first.get('champion')}")
    adj = result.get("adjudication") or {}
    if adj.get("recorded") != 2 or adj.get("reviewers") != ["admin"] or adj.get("stats", {}).get("disagree", -1) < 0:
        out.append(f"adjudication: {adj}")
    cases = result.get("cases") or {}
    expect = {"no_answer": (False, "no answer within", True), "reject": (False, "rejected by admin", False),
              "approve": (True, "approved by admin", False)}
    for name, (promoted, says, timed_out) in expect.items():
        c = cases.get(name) or {}
        if c.get("state") != "success":
            out.append(f"{name}: run {c.get('state')}")
            continue
        if not c.get("pending_review") or not c.get("body_has_figures"):
            out.append(f"{name}: the request was not pending with its figures")
        if c.get("while_waiting") != c.get("before"):
            out.append(f"{name}: what is published changed while the run waited: {c.get('before')} -> "
                       f"{c.get('while_waiting')}")
        if c.get("promoted") is not promoted or says not in (c.get("reason") or ""):
            out.append(f"{name}: promoted {c.get('promoted')}, reason {c.get('reason')!r}")
        if (c.get("decision") or {}).get("timed_out") is not timed_out:
            out.append(f"{name}: decision {c.get('decision')}")
        champion_after = (c.get("after") or {}).get("champion")
        want = c.get("candidate") if promoted else (c.get("before") or {}).get("champion")
        if champion_after != want:
            out.append(f"{name}: champion after {champion_after}, expected {want}")
    approve = cases.get("approve") or {}
    if approve.get("after", {}).get("current") == approve.get("before", {}).get("current"):
        out.append("approve: nothing new was published after the approval")
    deadline = result.get("deadline") or {}
    if not deadline.get("alert") or deadline.get("alert", {}).get("run_id") != deadline.get("run_id") \
            or deadline.get("state") != "success" or not deadline.get("in_triggerer_log"):
        out.append(f"deadline: {deadline}")
    quiet = deadline.get("published_day_not_alerted") or {}
    if quiet.get("alert") or not quiet.get("logged"):
        out.append(f"deadline: a re-run of a day published in time was alerted (or not logged): {quiet}")
    if (result.get("human_labels") or {}).get("applied", 0) < 2:
        out.append(f"human labels in training: {result.get('human_labels')}")
    bf = result.get("backfill") or {}
    day = first.get("ds")
    if not bf.get("runs") or set(bf["runs"].values()) != {"success"} or bf.get("days") != [day]:
        out.append(f"backfill: runs {bf.get('runs')} days {bf.get('days')}, expected one successful run of {day}")
    elif bf.get("after", {}).get("champion") != bf.get("before", {}).get("champion"):
        out.append("backfill: the re-embedding backfill moved the champion")
    elif not bf.get("embedded"):
        out.append("backfill: nothing re-embedded (full_reembed)")
    if day and day not in set(bf.get("event_days") or []):
        out.append(f"asset events carry the days {bf.get('event_days')}, not {day}")
    if bf.get("deadline_alert"):
        out.append("backfill: a publish deadline alert for the backfilled day (a backfill is not late)")
    page = (cases.get("reject") or {}).get("required_actions_page") or {}
    if not page.get("checked"):
        out.append(f"the Required Actions page was not checked: {page.get('why')}")
    elif not page.get("lists_the_request"):
        out.append("the Required Actions page did not list the request")
    return out


def main(argv: list[str] | None = None) -> int:
    """``make review-e2e``: see the module docstring. Returns 0 when every check holds, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="review_e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(REPO / "var" / "review_e2e"))
    ap.add_argument("--port", type=int, default=0, help="the api-server's port (default: a free one)")
    ap.add_argument("--timeout-min", type=float, default=20, help="the most a run may take")
    args = ap.parse_args(argv)
    wait = seconds_before_next_interval(dt.datetime.now(dt.UTC))
    if wait < 40 * 60:  # the scheduler would start the next day's run in the middle of the cases
        say(f"the next scheduled interval starts in {wait / 60:.0f} min (02:00 UTC): waiting for it to pass first")
        time.sleep(wait + 60)
    root = Path(args.workdir)
    for sub in ("airflow", "lake"):  # every run starts from nothing (the encoder is kept)
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(dt.UTC).date()
    port = args.port or free_port()
    env = environment(root, port, today)
    os.environ.update({k: v for k, v in env.items() if k.startswith("KP_")})
    from keyphrase_pipeline.core.settings import get_settings, load_settings
    from keyphrase_pipeline.synthetic import synth

    get_settings.cache_clear()
    settings = load_settings()
    say(f"seeding the SIMULATED tiny world into {settings.lake_root}")
    synth.run(settings)
    lake = Lake.from_settings(settings)
    t0, timeout_s = time.monotonic(), args.timeout_min * 60
    airflow = Airflow(env, root / "standalone.log")
    result: dict = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cases": {}}
    try:
        base = f"http://127.0.0.1:{port}"
        if not af.wait_healthy(f"{base}/api/v2/monitor/health", 240):
            raise RuntimeError(f"airflow standalone did not come up: see {root / 'standalone.log'}")
        password = wait_for("the admin password", lambda: af.admin_password(env["AIRFLOW_HOME"]), 60, every_s=2)
        api = Api(base, "admin", password)
        wait_for("the DAG to be parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}"), 300)

        # 1. the scheduled run of yesterday, and its adjudication
        api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        sched = wait_for("the scheduled run", lambda: next(
            (r for r in api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"] if r["run_type"] == "scheduled"),
            None), 120)
        rid, ds = sched["dag_run_id"], af.latest_scheduled_ds()
        say(f"{rid}: the scheduled run (ds={ds}); waiting for its adjudication request")
        detail = wait_awaiting(api, rid, ADJUDICATION, timeout_s)
        answer(api, rid, ADJUDICATION, ["OK"], {"pair_1": "relevant", "pair_2": "not relevant", "pair_3": "skip"})
        state = wait_run(api, rid, timeout_s)
        adj = lake.read_json(lake.run_stats_path(ds, "adjudicate"), default={})
        from keyphrase_pipeline.labels.reviews import read

        verdicts = read(settings)
        result["scheduled"] = {"run_id": rid, "ds": ds, "state": state, **pointers(lake)}
        result["adjudication"] = {"subject": detail.get("subject"), "params": sorted(detail.get("params") or {}),
                                  "recorded": int(len(verdicts)), "reviewers": sorted(set(verdicts["reviewer"])),
                                  "stats": {k: adj.get(k) for k in ("recorded", "agree", "disagree", "skipped",
                                                                    "offered")}}

        # 2. the day before, never published, in a run whose publish deadline passes a minute after it is created
        late_ds = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
        late_id = f"review_e2e_late__{int(time.time())}"
        logical = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1, hours=10) + dt.timedelta(seconds=60))
        trigger(api, late_id, {"ds": late_ds, "skip_llm": True}, logical.isoformat())
        say(f"{late_id}: triggered (ds={late_ds}); its publish deadline is {logical + dt.timedelta(days=1, hours=10)}")
        late_state = wait_run(api, late_id, timeout_s)

        def alert_of_the_run():
            rec = lake.read_json(lake.run_alert_path(late_ds, "publish_deadline"), default={})
            return rec if rec.get("run_id") == late_id else None

        alert = wait_for("the deadline alert of the run", alert_of_the_run, 180, every_s=5)
        log_text = (root / "standalone.log").read_text(errors="replace")
        result["deadline"] = {"run_id": late_id, "ds": late_ds, "state": late_state, "alert": alert,
                              "in_triggerer_log": f"PUBLISH DEADLINE MISSED: recommendations for ds={late_ds}" in log_text}

        # 3. no answer; its day was published in time by the scheduled run, so its own deadline passing is no alert
        logical = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1, hours=10) + dt.timedelta(seconds=60))
        no_answer = promotion_case(api, lake, f"review_e2e_no_answer__{int(time.time())}", ds, None, timeout_s,
                                   logical_date=logical.isoformat())
        result["cases"]["no_answer"] = no_answer
        time.sleep(30)  # the deadline passed during the wait: let the triggerer run its callback
        result["deadline"]["published_day_not_alerted"] = {
            "ds": ds, "alert": lake.read_json(lake.run_alert_path(ds, "publish_deadline"), default={}),
            "logged": f"publish deadline of ds={ds} passed while run {no_answer['run_id']} is still open" in
                      (root / "standalone.log").read_text(errors="replace")}
        from keyphrase_pipeline.core import layout

        vdir = layout.registry_version_dir(settings, no_answer["candidate"])
        data = lake.read_json(layout.version_file(vdir, "data"), default={})
        result["human_labels"] = data.get("human_labels")

        # 4. reject (Chromium looks at Required Actions meanwhile), 5. approve
        shot = root / "required_actions.png"
        result["cases"]["reject"] = promotion_case(
            api, lake, f"review_e2e_reject__{int(time.time())}", ds, "Reject", timeout_s,
            browser={"base": base, "password": password, "shot": shot})
        result["cases"]["approve"] = promotion_case(api, lake, f"review_e2e_approve__{int(time.time())}", ds,
                                                    "Approve", timeout_s)

        # 6. a backfill of the day again, re-embedding everything (the scheduler runs it)
        result["backfill"] = backfill_case(api, lake, ds, timeout_s)
    finally:
        airflow.stop()
    result["minutes"] = round((time.monotonic() - t0) / 60, 1)
    result["failed_checks"] = failed_checks(result)
    line = json.dumps(result, default=str)
    (root / "result.json").write_text(line + "\n")
    print(line)
    say("all checks hold" if not result["failed_checks"] else f"FAILED: {result['failed_checks']}")
    return 0 if not result["failed_checks"] else 1


if __name__ == "__main__":
    sys.exit(main())
