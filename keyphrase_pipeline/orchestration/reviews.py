"""Where the daily DAG asks a person, and its publish deadline: the glue between Airflow's human-in-the-loop
tasks and deadline alerts and the project's functions (``stages.evaluate.apply_review``,
``commands.adjudicate``). Settings: ``review.*`` and ``dag.publish_deadline_hours``; docs/OPERATIONS.md.

* **Approval of a close or risky promotion.** ``evaluate`` leaves such a promotion pending; ``approval_request``
  (a short-circuit task) turns its stats into the request's subject and Markdown body, the HITL task
  (options Approve / Reject, default Reject on timeout) waits in the UI's Required Actions and the REST API, and
  ``apply_approval`` carries out the answer. A plain ``HITLOperator`` is used, not ``ApprovalOperator``: the
  latter's Reject skips its downstream tasks, which would skip recording the answer and the serve group.
* **Label adjudication.** ``adjudication_request`` picks the day's pairs (``commands.adjudicate.pick``), an entry
  form with one answer per pair waits, ``record_adjudication`` stores the answers as human labels.
* **Publish deadline.** ``publish_deadline`` builds the DAG's ``DeadlineAlert``; on a miss the scheduler queues
  ``publish_deadline_missed`` on the triggerer, which logs it and records it in the lake
  (``runs/ds=D/_alerts/publish_deadline.json``), where the Keyphrases page shows it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from keyphrase_pipeline.core.lake import Lake, ds_str
from keyphrase_pipeline.orchestration import run_settings

log = logging.getLogger(__name__)

APPROVE, REJECT = "Approve", "Reject"  # the approval task's options (Reject is the default on timeout)
ANSWER_SLOT = "pair_{}"  # the adjudication form's fields: pair_1 .. pair_N
DEADLINE_ALERT = "publish_deadline"  # runs/ds=D/_alerts/publish_deadline.json (Lake.run_alert_path)
PAGE = "/keyphrases/"


def page_link(view: str) -> str:
    """A link to a view of the Keyphrases page (``compare``, ``review/D``), absolute when Airflow's ``api.base_url``
    is set."""
    try:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # noqa: BLE001 - no Airflow configuration (CLI, tests): a relative link
        base = ""
    return f"{base}{PAGE}#{view}"


# ---- approval ------------------------------------------------------------------------------------------
def _f(v, fmt=".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def approval_request(stats: dict | None) -> dict:
    """The approval request for ``evaluate``'s stats: ``{"version", "ds", "subject", "body"}`` (Markdown: the
    gate's figures, the reasons, a link to the page's champion-vs-challenger view), or ``{}`` when no person is
    needed (a short-circuit task: the approval is then skipped)."""
    review = (stats or {}).get("review") or {}
    if not review.get("needed") or review.get("decision"):
        return {}
    m, c = stats.get("metrics") or {}, stats.get("champion_metrics") or {}
    rows = [("held-out F1", "llm.f1"), ("held-out AUC", "llm.auc"), ("precision", "llm.precision"),
            ("recall", "llm.recall")]

    def dig(d, path):
        for part in path.split("."):
            d = (d or {}).get(part)
        return d

    table = ["| metric | champion | challenger |", "|---|---|---|"]
    table += [f"| {label} | {_f(dig(c, p))} | {_f(dig(m, p))} |" for label, p in rows]
    table.append(f"| Pearson r with the cross-encoder | {_f(c.get('rho_cross'), '.3f')} | {_f(m.get('rho_cross'), '.3f')} |")
    topk = review.get("topk_change") or {}
    lines = [f"The gate cannot decide this promotion alone (ds={stats.get('ds')}):", ""]
    lines += [f"- {r}" for r in review["reasons"]]
    lines += ["", *table, ""]
    if topk:
        lines.append(f"Top-{topk['k']} over {topk['keyphrases']} sampled keyphrases: {topk['changed_share']:.0%} of "
                     f"{topk['items']} sampled items keep fewer than half of their keyphrases (mean overlap "
                     f"{topk['mean_overlap']:.0%}).")
    gate = "promote" if review.get("gate_would_promote") else "keep the champion"
    lines += [f"The gate alone would {gate}: {review.get('gate_reason')}", "",
              f"**Approve** makes {stats['version']} the champion (the serve group then exports and serves it); "
              f"**Reject** keeps {stats.get('champion_before')}. No answer: the champion is kept.", "",
              f"Both models side by side: {page_link('compare')}"]
    return {"version": stats["version"], "ds": stats.get("ds"),
            "subject": f"Promote student {stats['version']}? (a close or risky call)", "body": "\n".join(lines)}


def approval_args(settings=None) -> dict:
    """The approval task's kwargs (``HITLOperator``): options Approve / Reject, Reject by default when nobody
    answers within ``review.approval_timeout_hours`` (``response_timeout``)."""
    r = (settings or _settings()).review
    return {"options": [APPROVE, REJECT], "defaults": [REJECT],
            "response_timeout": dt.timedelta(hours=r.approval_timeout_hours)}


def apply_args() -> dict:
    """``apply_approval``'s task kwargs: the evaluate stage's retries and timeout, and the ``kp.champion`` asset as
    its outlet (it is the task that moves the champion on Approve)."""
    from keyphrase_pipeline.orchestration.assets import asset
    from keyphrase_pipeline.orchestration.tasks import stage_args

    return {**stage_args("evaluate"), "outlets": [asset("champion")]}


def _settings():
    from keyphrase_pipeline.core.settings import get_settings

    return get_settings()


def hitl_answer(result: dict | None) -> tuple[list[str], str | None, str | None]:
    """``(chosen options, who answered, when)`` from a HITL task's XCom result; who is None when nobody answered
    (the scheduler applied the defaults at the timeout)."""
    result = result or {}
    user = result.get("responded_by_user") or None
    who = (user.get("name") or user.get("id")) if isinstance(user, dict) else (str(user) if user else None)
    at = result.get("responded_at")
    return list(result.get("chosen_options") or []), who, (str(at) if at else None)


def apply_approval(params: dict | None, ds: str, request: dict | None, result: dict | None) -> dict:
    """Carry out the approval task's answer (``result``: its XCom) on the request the person saw (``request``:
    ``approval_request``'s, whose ``version`` must still be the one waiting) with
    ``stages.evaluate.apply_review``: Approve promotes, Reject keeps the champion, nobody (timeout) keeps it and
    says so. Returns the evaluate stats."""
    from keyphrase_pipeline.stages import evaluate

    chosen, who, at = hitl_answer(result)
    if who is None:
        decision = None
    else:
        decision = evaluate.APPROVE if chosen == [APPROVE] else evaluate.REJECT
    settings = run_settings.settings_for(params)
    return evaluate.apply_review(settings, ds, decision, reviewer=who, at=at, version=(request or {}).get("version"))


# ---- adjudication --------------------------------------------------------------------------------------
def adjudication_request(params: dict | None, ds: str, run_type: str | None = None, labelled: bool = True) -> dict:
    """The day's adjudication request: ``commands.adjudicate.pick`` plus ``subject`` and ``body`` (Markdown), or
    ``{}`` when no pair is offered (a short-circuit task: the form is then skipped; the reason is logged). A
    backfill's runs (``run_type`` "backfill") offer none: a range of days re-run unattended must not wait for a
    person day after day (``kp adjudicate --ds D`` offers a backfilled day's pairs by hand); nor does a run that
    judged no pairs (``labelled`` False: the ``skip_llm`` param), e.g. a re-run of a day to retrain or re-embed."""
    from keyphrase_pipeline.commands import adjudicate

    if not labelled:
        log.info("adjudication ds=%s: not offered: this run judged no pairs (skip_llm)", ds)
        return {}
    if "backfill" in str(run_type or "").lower():
        log.info("adjudication ds=%s: not offered in a backfill run (kp adjudicate --ds %s offers it by hand)", ds, ds)
        return {}
    settings = run_settings.settings_for(params)
    picked = adjudicate.pick(settings, ds)
    if not picked["pairs"]:
        log.info("adjudication ds=%s: no pair offered: %s", ds, picked["why"])
        return {}
    return {**picked, "subject": f"Adjudicate {len(picked['pairs'])} label(s) of {picked['ds']}: judge vs cross-encoder",
            "body": adjudicate.body(picked, page_link(f"review/{picked['ds']}"))}


def adjudication_args(settings=None) -> dict:
    """The entry form's kwargs (``HITLEntryOperator``): ``params`` ``pair_1`` .. ``pair_N`` (N =
    ``review.adjudication_pairs``), each relevant / not relevant / skip (default skip; a request with fewer pairs
    leaves the rest at skip), and ``response_timeout`` = ``review.adjudication_timeout_hours``."""
    from airflow.sdk import Param

    from keyphrase_pipeline.commands.adjudicate import ANSWERS, SKIP

    r = (settings or _settings()).review
    return {"params": {ANSWER_SLOT.format(i): Param(SKIP, enum=list(ANSWERS), title=f"Pair {i}",
                                                    description=f"Pair {i} of the list above")
                       for i in range(1, r.adjudication_pairs + 1)},
            "response_timeout": dt.timedelta(hours=r.adjudication_timeout_hours)}


def record_adjudication(params: dict | None, ds: str, request: dict | None, result: dict | None) -> dict:
    """Store the entry form's answers (``result``: the HITL task's XCom) on the offered pairs (``request``) as human
    labels (``commands.adjudicate.record``) and in ``runs/ds=D/adjudicate.json``. Nobody answered (timeout): nothing
    is stored and the stats say so."""
    from keyphrase_pipeline.commands import adjudicate

    settings = run_settings.settings_for(params)
    pairs = (request or {}).get("pairs") or []
    _, who, at = hitl_answer(result)
    answers_in = (result or {}).get("params_input") or {}
    stats: dict[str, Any] = {"offered": len(pairs), "cross_version": (request or {}).get("cross_version")}
    if who is None:
        stats.update({"recorded": 0, "answered": False, "why": "no answer before review.adjudication_timeout_hours"})
        log.warning("adjudication ds=%s: no answer before the timeout: nothing recorded", ds)
    else:
        answers = {p["pair_key"]: answers_in.get(ANSWER_SLOT.format(i), adjudicate.SKIP)
                   for i, p in enumerate(pairs, 1)}
        when = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
        stats.update({**adjudicate.record(settings, ds, pairs, answers, who, when), "answered": True, "at": at})
    Lake.from_settings(settings).write_run_stats(ds, "adjudicate", stats)
    return stats


# ---- publish deadline ----------------------------------------------------------------------------------
def publish_deadline(settings=None):
    """The DAG's ``DeadlineAlert``: recommendations published by ``dag.publish_deadline_hours`` after the end of
    the run's data interval (reference: the run's logical date, which is the interval's start for this
    schedule, plus one day), or None when the setting is 0. A manual run without a logical date has no
    deadline. The callback (``publish_deadline_missed``) runs on the triggerer."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    hours = (settings or _settings()).dag.publish_deadline_hours
    if not hours:
        return None
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
                         interval=dt.timedelta(days=1, hours=hours),
                         callback=AsyncCallback(publish_deadline_missed, kwargs={"hours": hours}))


def without_deadline(dag):
    """``dag`` with its deadline alerts removed, for an in-process ``dag.test()`` run (the demo, tests): in Airflow
    3.3.2 ``dag.test()`` cannot finish a successful run of a DAG that has one (``DagRun.update_state`` looks the
    alert up by its serialized form, a dict, where the scheduler has its id), and no scheduler watches deadlines
    there anyway. Returns ``dag``."""
    dag.deadline = None
    return dag


def deadline_record(context: dict, hours: float) -> tuple[str, dict]:
    """``(ds, record)`` of a missed publish deadline from the callback's context (``{"dag_run": {...},
    "deadline": {"deadline_time", ...}}``, as the scheduler sends it): the day is the run's ``ds`` param when
    given, else its data interval's start."""
    run = context.get("dag_run") or {}
    conf = run.get("conf") or {}
    start = run.get("data_interval_start") or run.get("logical_date") or ""
    ds = conf.get("ds") or str(start)[:10]
    deadline = (context.get("deadline") or {}).get("deadline_time")
    run_id = run.get("dag_run_id") or run.get("run_id")  # DAGRunResponse names it dag_run_id
    record = {"alert": "publish_deadline_missed", "ds": ds, "dag_id": run.get("dag_id"), "run_id": run_id,
              "run_type": str(run.get("run_type") or ""),
              "deadline": str(deadline), "hours_after_interval": hours,
              "run_state_at_alert": run.get("state"), "noticed_at": dt.datetime.now(dt.UTC).isoformat(),
              "message": (f"recommendations for ds={ds} were not published by {deadline} "
                          f"(dag.publish_deadline_hours={hours} after the data interval)")}
    return ds_str(ds), record


def _when(value) -> dt.datetime | None:
    """An aware datetime from an ISO text or a datetime (naive: UTC); None when unreadable."""
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def published_at(lake, ds: str) -> dt.datetime | None:
    """When day ``ds``'s recommendations were published (its ``publish`` run stats' ``written_at``), or None."""
    stats = lake.read_json(lake.run_stats_path(ds, "publish"), default={})
    return _when(stats["written_at"]) if stats.get("written_at") else None


async def publish_deadline_missed(context: dict | None = None, hours: float = 0.0, **_: Any) -> None:
    """The publish deadline's callback (triggerer): log the miss at ERROR and record it in the lake,
    ``runs/ds=D/_alerts/publish_deadline.json`` (the Keyphrases page's run history shows it). A day that missed
    its deadline in several runs keeps the newest alert, the earlier ones under ``earlier``.

    Airflow fires the alert for any run not finished by the deadline; two such cases are not a late publish and
    are only logged: a backfill run (it re-runs an old day on purpose), and a run whose day was published before
    the deadline but that is still open (the day's adjudication waits for a person after serving)."""
    import asyncio

    ds, record = deadline_record(context or {}, hours)
    if "backfill" in str(record.get("run_type") or "").lower():
        log.info("publish deadline of ds=%s passed in backfill run %s: not an alert (a backfill re-runs old days)",
                 ds, record["run_id"])
        return

    def write():
        lake = Lake.from_settings(run_settings.settings_for(None))
        published = published_at(lake, ds)
        due = _when(record["deadline"])
        if published is not None and due is not None and published <= due:
            # the run is still open after serving (e.g. the day's adjudication waits for a person): not late
            log.info("publish deadline of ds=%s passed while run %s is still open, but ds was published at %s, "
                     "before it: no alert", ds, record["run_id"], published.isoformat())
            return
        log.error("PUBLISH DEADLINE MISSED: %s (run %s)", record["message"], record["run_id"])
        path = lake.run_alert_path(ds, DEADLINE_ALERT)
        before = lake.read_json(path, default={}) if lake.exists(path) else {}
        if before:
            record["earlier"] = [*before.pop("earlier", []), before]
        lake.write_json(path, record)

    await asyncio.to_thread(write)
