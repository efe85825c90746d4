"""Run history across days for the Keyphrases page: per day and stage a status, a duration and the key
metrics, with days that deviate from the previous days flagged.

Everything comes from the lake (``runs/ds=D/<stage>.json`` written by each stage when it finishes, plus
``runs/ds=D/_failed/<stage>.json`` written by the DAG's task wrappers when a stage's task fails; see
``keyphrase_pipeline.orchestration.tasks.run_stage``). The Airflow metadata database is not read: what the
lake does not record (a task that was never started, one killed before its wrapper could write) shows as
"not run" or "missing", with the reason it was inferred.

Statuses of a stage on a day:

* ``ok``: its run stats exist and no later failure of its task was recorded;
* ``failed``: its task's last failure is newer than its run stats (or it has none); an index build that
  refused to publish (recall below the floor) is failed too;
* ``missing``: no stats and no failure, but later stages ran that day (the DAG runs its groups in sequence):
  it ran outside the DAG without stats, or its stats were lost. The labelling and training groups are
  skipped by design on some days: they are missing only when another stage of the group ran;
* ``not_run``: no record, and nothing after it that needs it ran (a non-training day, labelling skipped,
  an earlier stage failed, or the run has not got there yet: the reason says which it can tell).

Import-light: only the standard library (the API server imports the plugin at start).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import RENAMED_RUN_STATS, RUN_ALERTS
from keyphrase_pipeline.stages import group_stats, stats_names

DAG_ID = "keyphrase_daily"

# the stages whose run stats the DAG writes, in pipeline order (from the stage table)
STAGES = stats_names()
# a run stats file's former name -> its stage (days recorded before a stage was renamed)
FORMER_NAMES = {old: new for new, old in RENAMED_RUN_STATS.items()}


def stage_of(stem: str) -> str:
    """The stage a run stats or failure file is of: its name, or the stage it was written by before a rename."""
    return FORMER_NAMES.get(stem, stem)


# The DAG runs its groups in sequence (ctr -> llm_labels -> train -> serve), so a stage is expected to have run
# when a later one did; except the groups skipped by design on some days (unless one of their stages ran)
LABELLING, TRAINING = group_stats("llm_labels"), group_stats("train")
OPTIONAL = {
    **{s: ("labelling skipped (the skip_llm param)", LABELLING) for s in LABELLING},
    **{s: ("no training that day (only on training days: train.retrain_every_days, force_retrain, or no champion "
           "yet)", TRAINING) for s in TRAINING},
    # the CTR model trains on training days too (serve group), and days before it existed have no stats of it
    "train_ctr": ("no CTR model training that day (training days only; or a day before the stage existed)",
                  ("train_ctr",)),
}

# key metrics: key -> (stage, how to read it, label, unit, kind, watched for deviations)
# kind: "count" (integer, shown with the unit noun), "share" (0-1, shown as %), "score" (0-1, 3 decimals),
# "bool", "text"
METRICS: list[dict] = [
    {"key": "ctr_positives", "stage": "ctr_labels", "path": "positives", "label": "CTR positives", "unit": "pairs",
     "kind": "count", "watch": True},
    {"key": "pairs_selected", "stage": "select_pairs", "path": "pairs", "label": "pairs selected", "unit": "pairs",
     "kind": "count", "watch": False},
    {"key": "pairs_judged", "stage": "merge_labels", "path": "rows", "label": "pairs judged", "unit": "pairs",
     "kind": "count", "watch": True},
    {"key": "yes_rate", "stage": "merge_labels", "path": "yes_rate", "label": "judge yes-rate", "unit": "% of judged",
     "kind": "share", "watch": True},
    {"key": "challenger_f1", "stage": "evaluate", "path": "metrics.llm.f1", "label": "challenger F1",
     "unit": "F1 on LLM test set", "kind": "score", "watch": False},
    {"key": "champion_f1", "stage": "evaluate", "path": None, "label": "champion F1", "unit": "F1 on LLM test set",
     "kind": "score", "watch": True},
    {"key": "promoted", "stage": "evaluate", "path": "promoted", "label": "gate decision", "unit": "",
     "kind": "bool", "watch": False},
    {"key": "items_embedded", "stage": "embed_items", "path": "embedded_now", "label": "items embedded",
     "unit": "items", "kind": "count", "watch": False},
    {"key": "items_reused", "stage": "embed_items", "path": "reused", "label": "items reused", "unit": "items",
     "kind": "count", "watch": False},
    {"key": "index_recall", "stage": "index", "path": "ann_recall_at_k|recall_at_k", "label": "index recall@K",
     "unit": "% of exact top-K", "kind": "share", "watch": True},
    {"key": "recommendations", "stage": "recommend", "path": "rows", "label": "recommendations written",
     "unit": "rows", "kind": "count", "watch": True},
    {"key": "item_coverage", "stage": "recommend", "path": None, "label": "item coverage",
     "unit": "% of embedded items with recs", "kind": "share", "watch": True},
]


def _get(d: dict | None, path: str):
    """The value at a dotted ``path`` of ``d``; ``a|b`` tries ``a`` then ``b`` (keys renamed across versions)."""
    for alt in path.split("|"):
        node = d
        for part in alt.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _parse_time(s) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(s))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _readable_record(f: Path) -> bool:
    """Whether ``f`` holds a JSON object (a run stats or failure record that can be read)."""
    try:
        return isinstance(json.loads(f.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def recorded_days(lake) -> tuple[list[str], list[str]]:
    """``(days, notes)``: the ``runs/ds=D`` folders that name a real date (``YYYY-MM-DD``) and hold at least one
    readable record of a DAG stage (``STAGES``: a stats file ``<stage>.json`` or a failure record
    ``_failed/<stage>.json`` that is a JSON object) or a publish deadline alert (``_alerts/publish_deadline.json``:
    a run still waiting for its input has no stage record yet), sorted; a day with only other records (``promote.json`` of a
    manual ``kp promote``, a rollback) is not a run day (``"ignored runs/ds=D: only records of stages outside the
    keyphrase_daily DAG (...)"``);
    ``notes`` names each entry left out and why (``"ignored runs/ds=X: not a date"``, ``"ignored runs/ds=D: not a
    folder"``, ``"ignored runs/ds=D: no stats or failure record inside"``, ``"ignored runs/ds=D: none of its N
    stats/failure file(s) is readable JSON"``). A stray, empty or damaged folder must neither crash the page nor
    become "the latest run"."""
    notes: list[str] = []
    days: list[str] = []
    for name in lake.partitions("runs"):
        try:
            ok = len(name) == 10 and name.isascii() and dt.date.fromisoformat(name).isoformat() == name
        except ValueError:
            ok = False
        if not ok:
            notes.append(f"ignored {layout.partition_name('runs', name)}: not a date (YYYY-MM-DD); rename or remove the folder")
            continue
        base = Path(lake.run_stats_dir(name))
        if base.exists() and not base.is_dir():
            notes.append(f"ignored {layout.partition_name('runs', name)}: not a folder (a plain file); remove or rename it")
            continue
        every = sorted(base.glob("*.json")) + sorted((base / "_failed").glob("*.json"))
        if (base / RUN_ALERTS / "publish_deadline.json").is_file():
            days.append(name)  # a run that missed its deadline before any stage wrote (waiting for its input)
            continue
        if not every:
            notes.append(f"ignored {layout.partition_name('runs', name)}: no stats or failure record inside (an empty folder)")
            continue
        # only the daily DAG's stages make a run day: a manual `kp promote` / rollback (or any other stage) writes
        # runs/ds=<today>/<stage>.json too, and must neither become "the latest run" nor move the history window
        files = [f for f in every if stage_of(f.stem) in STAGES]
        if not files:
            shown = ", ".join(str(f.relative_to(base)) for f in every[:3]) + (" ..." if len(every) > 3 else "")
            notes.append(f"ignored {layout.partition_name('runs', name)}: only records of stages outside the {DAG_ID} DAG ({shown}: a "
                         "manual action such as `kp promote`), not a run day")
            continue
        if not any(_readable_record(f) for f in files):
            shown = ", ".join(str(f.relative_to(base)) for f in files[:3]) + (" ..." if len(files) > 3 else "")
            notes.append(f"ignored {layout.partition_name('runs', name)}: none of its {len(files)} stats/failure file(s) is readable JSON "
                         f"({shown}: empty or damaged); rerun the day's stages to rewrite them, or remove the folder")
            continue
        days.append(name)
    return days, notes


def read_day(lake, ds: str) -> tuple[dict, dict]:
    """``(stats, failures)`` of day ``ds``: ``{stage: dict}`` from ``runs/ds=D/*.json`` and ``runs/ds=D/_failed/*.json``.
    A file that is not a JSON object is skipped (and named in the stage's record as ``unreadable``)."""
    base = Path(lake.run_stats_dir(ds))
    out: list[dict] = [{}, {}]
    for i, folder in enumerate((base, Path(lake.run_failure_path(ds, "x")).parent)):
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.json")):
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                data = {"unreadable": f"{f.name}: {type(exc).__name__}: {exc}"}
            out[i][stage_of(f.stem)] = data if isinstance(data, dict) else {"unreadable": f"{f.name}: not a JSON object"}
    return out[0], out[1]


def device_text(stats: dict) -> str | None:
    """Where a stage ran, from its run stats (``keyphrase_pipeline.models.devices``): the labelling
    shards' ``judge_devices`` (merge_labels), the trainers' ``device`` and
    ``precision``, the embedding's ONNX Runtime providers (those its executors' sessions held,
    ``executor_providers``, else those the driver chose, ``onnx_providers``), the index's and recommend's
    ``faiss_gpu``; None for a stage that records none (or stats written before devices were recorded)."""
    if isinstance(stats.get("judge_devices"), list) and stats["judge_devices"]:  # the labelling shards' judges
        return "judge: " + ", ".join(str(d) for d in stats["judge_devices"])
    if isinstance(stats.get("device"), str):
        return stats["device"] + (f" ({stats['precision']})" if isinstance(stats.get("precision"), str) else "")
    held = stats.get("executor_providers")
    if isinstance(held, dict) and held:  # {"CUDAExecutionProvider+CPUExecutionProvider": rows}: the first one ran
        first = sorted({str(k).split("+")[0].removesuffix("ExecutionProvider") for k in held})
        return "ONNX Runtime " + " and ".join(first) + (" (executors differ)" if len(first) > 1 else "")
    if isinstance(stats.get("onnx_providers"), list) and stats["onnx_providers"]:
        return "ONNX Runtime " + str(stats["onnx_providers"][0]).removesuffix("ExecutionProvider")
    if isinstance(stats.get("faiss_gpu"), bool):
        return "FAISS on the GPU" if stats["faiss_gpu"] else "FAISS on the CPU"
    return None


def metric_values(stats: dict) -> dict:
    """The key metrics (``METRICS``) of one day's run stats: ``{key: value or None}``."""
    out = {}
    for m in METRICS:
        st = stats.get(m["stage"])
        if m["key"] in ("challenger_f1", "champion_f1") and st and _get(st, "test_set.label_balance.usable") is False:
            v = None  # F1 against labels that teach nothing measures the judge, not the model: no figure, no alarm
        elif m["key"] == "champion_f1":
            # the champion after the gate: the challenger when it was promoted, else the kept champion
            if st is None:
                v = None
            elif st.get("promoted"):
                v = _get(st, "metrics.llm.f1")
            else:
                v = _get(st, "champion_metrics.llm.f1")
            v = _num(v)
        elif m["key"] == "item_coverage":
            rec, emb = stats.get("recommend"), stats.get("embed_items")
            with_recs = _num(_get(rec, "items_with_recs"))
            total = _num(_get(emb, "rows_total"))
            if total is None and rec is not None:
                scored, carried = _num(rec.get("items_scored")), _num(rec.get("items_carried"))
                total = (scored or 0) + (carried or 0) if scored is not None else None
            v = with_recs / total if with_recs is not None and total else None
        elif m["kind"] == "bool":
            raw = _get(st, m["path"]) if st else None
            v = raw if isinstance(raw, bool) else None
        else:
            v = _num(_get(st, m["path"])) if st else None
        out[m["key"]] = v
    return out


def failure_text(fail: dict, where: str = "") -> str:
    """``"<error type><where>: <error>"`` of a failure record, saying so when the record has no error text (a
    record written by hand or by an older task: ``{"error": null}``)."""
    etype, err = fail.get("error_type"), fail.get("error")
    if not etype and not err:
        return f"the failure record has no error text{where}; the task log in Airflow has the error"
    return f"{etype or 'error'}{where}: {err if err not in (None, '') else '(the failure record has no error text)'}"


def stage_status(stats: dict, failures: dict) -> dict:
    """``{stage: {status, reason, seconds, seconds_source, airflow, error}}`` for one day (module docstring)."""
    out: dict[str, dict] = {}
    ran = {s for s in STAGES if s in stats and "unreadable" not in stats[s]}
    for i, stage in enumerate(STAGES):
        st, fail = stats.get(stage), failures.get(stage)
        rec: dict = {"status": None, "reason": "", "seconds": None, "seconds_source": None, "airflow": None,
                     "error": None, "device": None}
        if st is not None and "unreadable" in st:
            rec.update(status="failed", reason=f"run stats unreadable ({st['unreadable']})")
        elif st is not None:
            written, failed_at = _parse_time(st.get("written_at")), _parse_time((fail or {}).get("failed_at"))
            if fail and failed_at and written and failed_at > written:
                rec.update(status="failed", reason=f"failed after its last success ({failure_text(fail)})")
            elif st.get("skipped"):  # e.g. train_cross on labels that teach nothing (training_data.label_balance)
                rec.update(status="ok", reason=f"ok, nothing trained: {st.get('why') or 'its stats say skipped'}")
            elif stage == "index" and st.get("status") == "refused":
                rec.update(status="failed", reason=f"index refused: recall@K {_get(st, 'ann_recall_at_k|recall_at_k')} below the floor "
                                                   f"{st.get('min_recall')} (nothing published from it)")
            else:
                rec.update(status="ok")
                if fail and "unreadable" in fail:
                    rec["reason"] = f"ok; its failure record is unreadable ({fail['unreadable']})"
                elif fail:
                    rec["reason"] = f"ok after a failed try ({fail.get('error_type') or 'its failure record has no error text'})"
            rec["airflow"] = st.get("airflow")
            rec["device"] = device_text(st)
            if _num(st.get("wall_seconds")) is not None:
                rec.update(seconds=float(st["wall_seconds"]), seconds_source="task wall clock")
            elif _num(st.get("seconds")) is not None:
                rec.update(seconds=float(st["seconds"]), seconds_source="the stage's own timer")
        elif fail is not None and "unreadable" in fail:
            rec.update(status="failed", reason=f"failed: its failure record is unreadable ({fail['unreadable']}); "
                                               "the task log in Airflow has the error")
        elif fail is not None:
            where = f" (shard {fail['detail']['shard']})" if isinstance(fail.get("detail"), dict) and \
                "shard" in fail["detail"] else ""
            rec.update(status="failed", reason=f"{failure_text(fail, where)}", airflow=fail.get("airflow"))
            if _num(fail.get("wall_seconds")) is not None:
                rec.update(seconds=float(fail["wall_seconds"]), seconds_source="task wall clock until it failed")
        else:
            later = [s for s in STAGES[i + 1:] if s in ran]
            expected = stage not in OPTIONAL or any(s in ran or s in failures for s in OPTIONAL[stage][1])
            if later and expected:
                rec.update(status="missing", reason=f"no run stats, yet later stages ran that day ({', '.join(later[:3])}"
                                                    f"{', ...' if len(later) > 3 else ''}): it ran outside the DAG "
                                                    "or its stats were lost")
            elif later:
                rec.update(status="not_run", reason=OPTIONAL[stage][0])
            elif any(out[s]["status"] == "failed" for s in STAGES[:i]):
                rec.update(status="not_run", reason="an earlier stage failed")
            else:
                rec.update(status="not_run", reason="no record: not run (yet), or the run stopped before it")
        if fail is not None:
            rec["error"] = {k: fail.get(k) for k in ("error_type", "error", "failed_at", "retried", "detail")}
        out[stage] = rec
    return out


def day_status(stages: dict) -> tuple[str, str]:
    """``(status, reason)`` of a day from its stages: failed > incomplete (a stage missing) > ok (published) >
    partial (some stages recorded, not published) > no_run."""
    failed = [s for s, r in stages.items() if r["status"] == "failed"]
    missing = [s for s, r in stages.items() if r["status"] == "missing"]
    if failed:
        return "failed", f"failed: {', '.join(failed)}"
    if missing:
        return "incomplete", f"no run stats for {', '.join(missing)} although later stages ran"
    if stages.get("publish", {}).get("status") == "ok":
        return "ok", "published"
    if any(r["status"] == "ok" for r in stages.values()):
        return "partial", "some stages ran; nothing published that day (running, or stopped)"
    return "no_run", "no run recorded for this day"


def flag_deviations(days: list[dict], threshold: float, window: int) -> None:
    """Add ``flags`` to each day of ``days`` (``{"ds", "metrics"}``, any order): a watched metric whose value is
    more than ``threshold`` (relative) away from the mean of the same metric over the ``window`` calendar days
    before, counting only days that have a value. Each flag: ``{metric, label, value, mean, n_days, change,
    reason}`` with ``change`` relative ((value - mean) / |mean|; None when the mean is 0)."""
    by_ds = {d["ds"]: d for d in days}
    watched = [m for m in METRICS if m["watch"]]
    for d in days:
        d["flags"] = []
        day = dt.date.fromisoformat(d["ds"])
        for m in watched:
            v = d["metrics"].get(m["key"])
            if v is None:
                continue
            prev = [by_ds[p]["metrics"].get(m["key"]) for p in
                    ((day - dt.timedelta(days=i)).isoformat() for i in range(1, window + 1)) if p in by_ds]
            prev = [p for p in prev if p is not None]
            if not prev:
                continue
            mean = sum(prev) / len(prev)
            if mean == 0:
                if v == 0:
                    continue
                change = None
            else:
                change = (v - mean) / abs(mean)
                if abs(change) <= threshold:
                    continue
            word = "no change measurable (mean 0)" if change is None else \
                f"{'+' if change > 0 else ''}{change:.0%} ({'up' if change > 0 else 'down'})"
            d["flags"].append({
                "metric": m["key"], "label": m["label"], "value": v, "mean": mean, "n_days": len(prev),
                "change": change,
                "reason": f"{m['label']} {format_value(m, v)} vs mean {format_value(m, mean)} of the previous "
                          f"{len(prev)} day(s) with a value (within {window} days): {word}, "
                          f"threshold ±{threshold:.0%}",
            })


def format_value(m: dict, v) -> str:
    """A metric value as text with its unit (``METRICS`` kinds)."""
    if v is None:
        return "–"
    if m["kind"] == "share":
        return f"{v:.1%}"
    if m["kind"] == "score":
        return f"{v:.3f}"
    if m["kind"] == "count":
        return f"{v:,.0f} {m['unit']}"
    return str(v)


def base_path() -> str:
    """The path prefix of Airflow's UI (``[api] base_url``'s path, '' at the root), for links into it."""
    try:
        from urllib.parse import urlparse

        from airflow.configuration import conf

        return urlparse(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")
    except Exception:
        return ""


def run_links(ds: str, stats: dict, failures: dict, stages: dict, prefix: str = "") -> dict:
    """Links into Airflow's UI for a day: ``{run_id, run_url, run_url_exact, run_ids, note}`` and ``task_url`` per stage
    (added to ``stages``). The run id is the one the task wrappers recorded with the stats (the newest record of the
    day); without one, the DAG's runs list filtered by logical date (a manual run for this ds may have another
    logical date, which the note says)."""
    from urllib.parse import quote, urlencode

    from keyphrase_pipeline.stages import stats_tasks

    STATS_TASKS = stats_tasks()

    recs = []
    for rec in list(stats.values()) + list(failures.values()):
        ids = rec.get("airflow") if isinstance(rec, dict) else None
        if isinstance(ids, dict) and ids.get("run_id"):
            recs.append((str(rec.get("written_at") or rec.get("failed_at") or ""), ids))
    recs.sort(key=lambda r: r[0])
    run_ids = list(dict.fromkeys(ids["run_id"] for _, ids in recs))
    dag = quote(DAG_ID, safe="")
    out = {"run_ids": run_ids}
    if recs:
        ids = recs[-1][1]
        run_id = ids["run_id"]
        out.update(run_id=run_id, run_url=f"{prefix}/dags/{quote(ids.get('dag_id') or DAG_ID, safe='')}/runs/"
                                          f"{quote(run_id, safe='')}", run_url_exact=True,
                   note="" if len(run_ids) == 1 else f"{len(run_ids)} DAG runs wrote this day's records; "
                                                     "linked: the newest")
    else:
        q = urlencode({"logical_date_gte": f"{ds}T00:00:00Z", "logical_date_lte": f"{ds}T23:59:59Z"})
        out.update(run_id=None, run_url=f"{prefix}/dags/{dag}/runs?{q}", run_url_exact=False,
                   note="the lake holds no Airflow run id for this day (stats written outside the DAG, or before run "
                        "ids were recorded): the link lists the DAG's runs by logical date; a manual run for this "
                        "ds may have another logical date")
    for stage, rec in stages.items():
        ids = rec.get("airflow")
        if isinstance(ids, dict) and ids.get("run_id") and ids.get("task_id"):
            mapped = f"/mapped/{ids['map_index']}" if isinstance(ids.get("map_index"), int) and ids["map_index"] >= 0 else ""
            rec["task_url"] = (f"{prefix}/dags/{quote(ids.get('dag_id') or DAG_ID, safe='')}/runs/{quote(ids['run_id'], safe='')}"
                               f"/tasks/{quote(ids['task_id'], safe='')}{mapped}")
        elif out["run_id"] and rec["status"] != "not_run" and stage in STATS_TASKS:
            rec["task_url"] = f"{prefix}/dags/{dag}/runs/{quote(out['run_id'], safe='')}/tasks/{STATS_TASKS[stage]}"
        else:
            rec["task_url"] = None
    return out


def day_alerts(lake, ds: str, stats: dict) -> list[dict]:
    """What an operator must know about day ``ds`` beyond its stages: a missed publish deadline
    (``runs/ds=D/_alerts/publish_deadline.json``, written by the DAG's deadline callback), a promotion waiting for a
    person or decided by one (the evaluate stats' ``review``), a label adjudication's answers (``adjudicate``).
    Returns ``[{"kind": "deadline" | "approval" | "adjudication", "text"}]``; an unreadable alert file is named."""
    out = []
    path = Path(lake.run_alert_path(ds, "publish_deadline"))
    if path.exists():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            out.append({"kind": "deadline", "text": f"publish deadline missed: {rec.get('message')} "
                                                    f"(run {rec.get('run_id')}, noticed {rec.get('noticed_at')})"})
        except (OSError, ValueError) as exc:
            out.append({"kind": "deadline", "text": f"publish deadline alert unreadable ({path.name}: {exc})"})
    review = (stats.get("evaluate") or {}).get("review") or {}
    if review.get("needed"):
        decision = review.get("decision") or {}
        version = stats["evaluate"].get("version")
        if not decision:
            out.append({"kind": "approval", "text": f"promotion of {version} waits for a person (Airflow: Required "
                                                    f"Actions): {'; '.join(review.get('reasons') or [])}"})
        else:
            out.append({"kind": "approval", "text": f"promotion of {version} decided by a person: "
                                                    f"{stats['evaluate'].get('reason')}"})
    adj = stats.get("adjudicate") or {}
    if adj:
        text = (f"adjudication: {adj.get('recorded', 0)} of {adj.get('offered', 0)} pair(s) labelled by "
                f"{adj.get('reviewer')} ({adj.get('disagree', 0)} against the judge)" if adj.get("answered") else
                f"adjudication: {adj.get('offered', 0)} pair(s) offered, no answer before the timeout")
        out.append({"kind": "adjudication", "text": text})
    return out


def history(lake, days: int, threshold: float, window: int, prefix: str = "") -> dict:
    """The run history of the ``days`` calendar days ending at the newest day with a record (newest first), from
    the first day with a record on (fewer rows on a lake younger than ``days``; a gap after it is a "no run" day).

    Returns ``{"end", "days_requested", "threshold", "window_days", "stages", "metrics", "days", "message"}``;
    each day: ``{ds, status, reason, stages: {stage: {...}}, metrics: {key: value}, flags: [...], run_id, run_url,
    run_url_exact, run_ids, note, alerts}`` (``alerts``: ``day_alerts``). The previous ``window`` days before the
    first shown day are read too, so its flags are computed like the others'. ``message`` says what to do when the
    lake holds no run at all; ``notes`` names the ``runs/`` folders left out (``recorded_days``)."""
    recorded, notes = recorded_days(lake)
    base = {"days_requested": days, "threshold": threshold, "window_days": window, "stages": STAGES, "notes": notes,
            "metrics": [{k: m[k] for k in ("key", "stage", "label", "unit", "kind", "watch")} for m in METRICS]}
    if not recorded:
        return {**base, "end": None, "days": [],
                "message": "No run recorded yet: the lake has no runs/ds=*/ stats. Trigger the keyphrase_daily DAG "
                           "(Airflow: Trigger DAG; demo: `kp demo` or the `scale` param) and come back when a stage "
                           "has finished."}
    end = dt.date.fromisoformat(recorded[-1])
    # days before the first recorded run are not "days without a run" (the pipeline was not running yet): a
    # fresh lake, e.g. the demo's three days, shows its own days, not a window padded with "no run" rows
    shown = [d for d in ((end - dt.timedelta(days=i)).isoformat() for i in range(days)) if d >= recorded[0]]
    context = [(end - dt.timedelta(days=i)).isoformat() for i in range(days, days + window)]
    rows = []
    have = set(recorded)
    for ds in shown + context:
        stats, failures = read_day(lake, ds) if ds in have else ({}, {})
        stages = stage_status(stats, failures)
        status, reason = day_status(stages)
        row = {"ds": ds, "status": status, "reason": reason, "stages": stages, "metrics": metric_values(stats),
               "alerts": day_alerts(lake, ds, stats) if ds in have else []}
        if status == "no_run":
            row["reason"] = ("no run recorded for this day: the DAG did not run for it (or ran before any stage "
                             "finished). Trigger keyphrase_daily with the ds param set to this day to fill it.")
        if status == "no_run":
            row.update(run_id=None, run_url=None, run_url_exact=False, run_ids=[], note="")
            for rec in stages.values():
                rec["task_url"] = None
        else:
            row.update(run_links(ds, stats, failures, stages, prefix))
        rows.append(row)
    flag_deviations(rows, threshold, window)
    return {**base, "end": end.isoformat(), "days": rows[:len(shown)], "message": ""}
