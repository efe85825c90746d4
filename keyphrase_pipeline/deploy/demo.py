"""Run the daily DAG on the demo marketplace for a few consecutive days and print a summary.

``kp demo [--days 3] [--scale demo]``: generates the synthetic world when the lake has none, then runs
the real ``keyphrase_daily`` DAG with ``dag.test()`` (in-process, every real task, the CTR stage through
``spark-submit``) for the last ``days`` days of the world. Training happens on the first day when there
is no champion yet and again on the last day (``force_retrain``; ``--no-retrain-last`` to skip it); the
days between only label, embed, index, recommend and publish with the champion, which is how the
pipeline behaves with ``train.retrain_every_days`` > 1. It writes ``var/demo/summary.json``.

The LLM judge of the demo is the SIMULATED annotator that errs like an LLM judge
(``judge.simulated_errors=llm``, ``run_settings.DEMO_JUDGE``; ``KP_JUDGE__SIMULATED_ERRORS=iid`` for the one whose
errors are independent) unless ``KP_JUDGE__BACKEND`` says otherwise: ``KP_JUDGE__BACKEND=openai`` with
``KP_JUDGE__ENDPOINT`` and ``KP_JUDGE__MODEL`` labels through a real LLM server (``kp llm-server``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import registry, serving
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.deploy import airflow_standalone as af
from keyphrase_pipeline.orchestration import reviews, run_settings

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # the checkout: keyphrase_pipeline/<sub>/<module>.py
DAG_ID = "keyphrase_daily"
SUMMARY = REPO / "var" / "demo" / "summary.json"


def _pick(d: dict | None, *keys, default=None):
    """The first of ``keys`` (dotted paths allowed) present in ``d``."""
    for key in keys:
        node = d or {}
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return default


def _prepare_env(settings: Settings) -> None:
    """Make the tasks (in this process and in spark-submit) see the same settings and tools."""
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    os.environ.update(settings_env(settings))
    os.environ.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": settings.spark.master}))
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    get_settings.cache_clear()


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[DAG_ID]
    for task in dag.tasks:  # dag.test() would sit out retry delays; in the demo a failure should show at once
        task.retries = 0
    return reviews.without_deadline(dag)  # no scheduler watches deadlines in dag.test()


def day_row(lake, ds: str, states: dict, seconds: float) -> dict:
    """One summary row for day ``ds``: the DAG run's state, ``seconds`` as minutes, and the headline numbers of the
    day's run stats (``runs/ds=D/*.json``; None where a stage wrote none); ``states`` maps task id -> state."""
    def stats(stage):
        path = lake.run_stats_path(ds, stage)
        return lake.read_json(path) if lake.exists(path) else {}

    labels, pairs, ev = stats("merge_labels"), stats("select_pairs"), stats("evaluate")
    index, items, recs, ctr = stats("index"), stats("embed_items"), stats("recommend"), stats("train_ctr")
    ctr_ok = states.get("serve.train_ctr") == "success" and not ctr.get("skipped")
    return {
        "ds": ds,
        "state": states.get("__run__"),
        "minutes": round(seconds / 60, 1),
        "pairs_selected": _pick(pairs, "pairs", "selected"),
        "labels_new": _pick(labels, "new_rows", "rows_added", "rows", "labels"),
        "yes_rate": _pick(labels, "yes_rate", "mean_label", "mean_p_yes"),
        "trained": states.get("train.train_bi") == "success",
        "promoted": _pick(ev, "promoted") if states.get("train.evaluate") == "success" else None,
        "promotion_reason": _pick(ev, "reason") if states.get("train.evaluate") == "success" else None,
        "items_embedded": _pick(items, "embedded_now", "embedded", "rows_embedded", "items_embedded"),
        "index_recall": _pick(index, "ann_recall_at_k", "recall_at_k", "recall"),
        "recommendations": _pick(recs, "rows", "recommendations", "pairs"),
        "ctr_model_auc": _pick(ctr, "heldout.challenger.all.auc") if ctr_ok else None,
        "ctr_prior_auc": _pick(ctr, "heldout.position_prior.all.auc") if ctr_ok else None,
        "ctr_model_promoted": ctr.get("promoted") if ctr_ok else None,
        "expected_ctr_rows": _pick(recs, "expected_ctr_rows"),
        "tasks": {k: v for k, v in states.items() if k != "__run__"},
    }


def seed_world_for_airflow(env: dict[str, str], last_day: str) -> dict | None:
    """Demo mode of ``make airflow``: when the lake at ``env["KP_LAKE_ROOT"]`` holds no raw events at all, generate
    the synthetic demo world (``keyphrase_pipeline.synthetic.synth``, scale ``KP_SYNTH__SCALE`` or demo) so that its
    last day is ``last_day`` (``keyphrase_pipeline.deploy.airflow_standalone.latest_scheduled_ds``): the run the
    scheduler creates at once then finds its input and succeeds,
    instead of waiting for input that never comes. A lake that has events is left alone (returns None);
    ``KP_DEMO_SEED=0`` turns it off. When the lake holds a synthetic world (just generated or from before), the
    demo's small training budget and judge (``keyphrase_pipeline.orchestration.run_settings.DEMO_TRAIN_BUDGET``, ``DEMO_JUDGE``)
    go into ``env`` where unset, since scheduled runs have no ``scale`` param. Returns the new world's stats, or None.
    Raises ConfigError (exit 2) for a bad scale."""
    from keyphrase_pipeline.core.settings import Settings

    settings = Settings(lake_root=env["KP_LAKE_ROOT"])
    lake = Lake.from_settings(settings)
    stats = None
    if env.get("KP_DEMO_SEED", "1") != "0" and not lake.partitions("events"):
        stats = _generate_for_airflow(settings, lake, env, last_day)
    if lake.exists(layout.synth_world_meta_path(lake)):
        for dotted, value in {**run_settings.DEMO_TRAIN_BUDGET, **run_settings.DEMO_JUDGE}.items():
            env.setdefault(run_settings.env_name(dotted), str(value))
    return stats


def _generate_for_airflow(settings: Settings, lake, env: dict[str, str], last_day: str) -> dict:
    from keyphrase_pipeline.synthetic import synth

    last = dt.date.fromisoformat(last_day)
    days = settings.synth.days
    start = (last - dt.timedelta(days=days - 1)).isoformat()
    scale = env.get("KP_SYNTH__SCALE") or "demo"
    print(f"The lake {lake.root} is empty: generating the SIMULATED demo world (scale {scale}, {start} .. {last}) "
          "so that the scheduled run for its last day has input (KP_DEMO_SEED=0 turns this off).", flush=True)
    return synth.run(settings, scale=scale, days=days, start_date=start)


def run(settings: Settings, days: int = 3, scale: str = "demo", retrain_last: bool = True) -> dict:
    """Generate the world if missing, run the DAG for the world's last ``days`` days; return the summary.

    Stops at the first day whose DAG run fails (``summary["ok"]`` is then False; that is not an exception).
    Writes ``var/demo/summary.json`` and prints a table. Raises ConfigError (exit 2) for ``days`` < 1 or a bad
    setting, DataError (exit 3) when the world has fewer days of events, RuntimeError (exit 1) when the DAG
    file does not import or ``airflow db migrate`` fails."""
    from keyphrase_pipeline.labels.judges.base import judge_model_id

    started = time.time()
    if days < 1:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError("--days must be >= 1")
    # the demo retrains only on the first day (no champion) and the last; in between the champion serves
    # the demo's own small training budget, passed explicitly (keyphrase_pipeline.orchestration.run_settings.DEMO_TRAIN_BUDGET)
    settings = settings.with_overrides(**{"synth.scale": scale, "train.retrain_every_days": 10_000,
                                          "truth_provider": settings.truth_provider or run_settings.DEMO_TRUTH_PROVIDER,
                                          **run_settings.demo_overrides()})
    log.info("demo training budget: %s", {k: getattr(getattr(settings, k.split(".")[0]), k.split(".")[1])
                                          for k in run_settings.DEMO_TRAIN_BUDGET})
    lake = Lake.from_settings(settings)
    if not lake.exists(layout.synth_world_meta_path(lake)):
        from keyphrase_pipeline.synthetic import synth

        log.info("no demo world in %s: generating one at scale %r", lake.root, scale)
        synth.run(settings, scale=scale)
    all_days = lake.partitions("events")
    if len(all_days) < days:
        from keyphrase_pipeline.core.errors import DataError

        raise DataError(f"the world has {len(all_days)} day(s) of events, fewer than --days {days}")
    run_days = all_days[-days:]

    _prepare_env(settings)
    af.ensure_metadata_db()
    af.ensure_pool()
    dag = _load_dag()
    judge = settings.judge.backend
    errs = ("errs like an LLM judge: lenient on attribute mismatches, accessory confusion, errors correlated "
            "within a product type" if settings.judge.simulated_errors == "llm"
            else f"agrees with the demo world's hidden truth {settings.judge.simulated_accuracy:.0%} of the time, "
                 "its errors independent")
    judge_line = (f"the LLM judge is the SIMULATED annotator (a stand-in that {errs}), not a real LLM"
                  if judge == "simulated" else f"the LLM judge backend is {judge!r}")
    print(f"kp demo: {len(run_days)} day(s) {run_days[0]} .. {run_days[-1]} on {lake.root}; {judge_line}.", flush=True)

    rows = []
    for i, ds in enumerate(run_days):
        conf = {"ds": ds, "force_retrain": bool(retrain_last and i == len(run_days) - 1 and len(run_days) > 1)}
        t0 = time.time()
        print(f"kp demo: running {DAG_ID} for ds={ds} (conf {conf}) ...", flush=True)
        dr = dag.test(run_conf=conf)
        states = {ti.task_id: (ti.state.value if hasattr(ti.state, "value") else ti.state)
                  for ti in dr.get_task_instances() if ti.map_index in (-1, 0)}
        states["__run__"] = dr.state.value if hasattr(dr.state, "value") else str(dr.state)
        row = day_row(lake, ds, states, time.time() - t0)
        rows.append(row)
        if states["__run__"] != "success":
            failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
            print(f"kp demo: the run for {ds} FAILED at {failed}; see the task logs above.", flush=True)
            break

    summary = {
        "ok": all(r["state"] == "success" for r in rows) and len(rows) == len(run_days),
        "judge": judge_line, "judge_model": judge_model_id(settings),
        "lake_root": lake.root,
        "days": rows,
        "champion": registry.champion(settings),
        "serving_version": serving.current_version(settings),
        "outputs": {
            "recommendations": lake.path("recommendations", ds=run_days[-1]),
            "serving": lake.path("serving"),
            "registry": lake.path("registry"),
            "run_stats": lake.path("runs"),
        },
        "minutes_total": round((time.time() - started) / 60, 1),
    }
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = SUMMARY.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, SUMMARY)
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    """Print ``run``'s summary on stdout: one row per day, the judge, the champion, the outputs' paths."""
    cols = [("ds", 10), ("state", 8), ("minutes", 7), ("pairs_selected", 6), ("labels_new", 6), ("yes_rate", 8),
            ("trained", 7), ("promoted", 8), ("items_embedded", 8), ("index_recall", 8), ("recommendations", 8),
            ("ctr_model_auc", 7)]
    heads = ["day", "state", "min", "pairs", "labels", "yes", "trained", "promoted", "embedded", "recall", "recs",
             "ctr_auc"]

    def fmt(v, w):
        if isinstance(v, float):
            v = f"{v:.3f}"
        return str("-" if v is None else v)[:w].ljust(w)

    print()
    print("  ".join(h.ljust(w) for h, (_, w) in zip(heads, cols)))
    for r in summary["days"]:
        print("  ".join(fmt(r.get(k), w) for k, w in cols))
    print()
    print(f"Judge: {summary['judge']}.")
    print(f"Champion model: {summary['champion']}; published serving version: {summary['serving_version']}")
    for name, path in summary["outputs"].items():
        print(f"  {name:<16} {path}")
    print(f"Summary: {SUMMARY}   ({summary['minutes_total']} min in all)")
    print("See it in Airflow: `make airflow`, then the Keyphrases page.")


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--days", type=int, default=3, help="how many consecutive days to run (the world's last days)")
    parser.add_argument("--scale", default="demo", help="world scale when it must be generated (tiny|demo|small|large)")
    parser.add_argument("--no-retrain-last", action="store_true", help="do not retrain on the last day")


def main(settings: Settings, args) -> int:
    """``kp demo``: ``run`` with ``--days``, ``--scale``, ``--no-retrain-last``; prints progress and the summary
    table. Returns 0 when every day's DAG run succeeded, 1 otherwise (a failed task is not raised).

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    summary = run(settings, days=args.days, scale=args.scale, retrain_last=not args.no_retrain_last)
    return 0 if summary["ok"] else 1
