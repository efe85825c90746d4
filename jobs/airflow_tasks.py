"""Wiring helpers for the Airflow DAGs: the glue between a task's context and a stage's ``run``.

The DAG files in ``dags/`` stay thin (wiring, docs, params, pools, retries) and call the functions here;
this module holds no data logic either: every function builds the run's settings, calls ONE stage's
``run(settings, ds, ...)`` and returns its figures (JSON-able, so they land in XCom and the UI).
Nothing heavy is imported at module level; stage modules are imported inside the calls, so parsing a
DAG file never imports torch, pyspark or faiss.

Decisions that belong to orchestration, not to any stage, also live here:

* which day a run processes (``resolve_day``: the ``ds`` param, else the data interval's start);
* which settings a manual trigger overrides (``PARAM_OVERRIDES``);
* whether today is a training day (``settings.train.retrain_every_days``, ``force_retrain``, no champion);
* the lake's datasets as Airflow Assets (``ASSETS``), retries/timeouts per stage, the ``llm`` pool,
  and failure callbacks that say clearly what failed and how to rerun it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

log = logging.getLogger(__name__)

DAG_OWNER = "keyphrase-pipeline"
LLM_POOL = "llm"
LLM_POOL_SLOTS = 2
GPU_QUEUE = "gpu"

# Params of a run (trigger form) -> dotted settings they override for that run only.
PARAM_OVERRIDES = {
    "label_budget": "pairs.daily_budget",
    "scale": "synth.scale",
}

# Demo mode (the ``scale`` param, or ``kp demo``): a small training budget, passed explicitly (about 2 + 3.5
# minutes on 2 CPU cores; the step caps decide, the best held-out checkpoint is kept). Without it the
# defaults train ``train.epochs`` over the data with early stopping, which real label sets need. A
# ``KP_TRAIN__*`` variable in the environment wins over these.
DEMO_TRAIN_BUDGET = {"train.cross_max_steps": 150, "train.bi_max_steps": 250, "train.epochs": 10.0}


def demo_train_budget() -> dict:
    """``DEMO_TRAIN_BUDGET`` less the fields the environment sets (``KP_TRAIN__<FIELD>``)."""
    import os

    env = {k.upper() for k in os.environ}  # pydantic-settings reads KP_* names case-insensitively
    return {k: v for k, v in DEMO_TRAIN_BUDGET.items() if f"KP_TRAIN__{k.split('.')[1].upper()}" not in env}


# Per-stage execution timeouts (minutes): generous for the demo on 2 CPU cores, tight enough that a
# hung task is failed and retried instead of blocking the daily run (max_active_runs=1).
TIMEOUT_MIN = {
    "plan": 10,
    "synth": 60,
    "ctr_labels": 90,
    "select_pairs": 60,
    "llm_label": 120,
    "label_store": 30,
    "train_cross": 240,
    "train_bi": 360,
    "evaluate": 60,
    "export": 30,
    "embed": 180,
    "index": 90,
    "recommend": 120,
    "publish": 20,
}

# The lake's datasets as Assets: a stable ``kp://`` naming (the lake root differs per deployment, the
# graph should not). ``extra.dataset`` is the Lake dataset name, so a consumer can resolve the real path.
ASSET_DATASETS = {
    "ctr_labels": "ctr_labels",
    "pairs": "pairs",
    "llm_labels": "llm_store",
    "cross_encoder": "registry",
    "bi_encoder": "registry",
    "champion": "registry",
    "onnx_towers": "registry",
    "item_embeddings": "embeddings",
    "keyphrase_embeddings": "embeddings",
    "keyphrase_index": "embeddings",
    "recommendations": "recommendations",
    "serving": "serving",
}


def asset(name: str):
    """The Airflow Asset for one of the lake's datasets (``kp://lake/<name>``)."""
    from airflow.sdk import Asset

    if name not in ASSET_DATASETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSET_DATASETS)}")
    return Asset(name=f"kp.{name}", uri=f"kp://lake/{name}", group="keyphrase-lake",
                 extra={"dataset": ASSET_DATASETS[name]})


def stage_args(stage: str, retries: int = 2) -> dict[str, Any]:
    """Operator kwargs every stage task gets: retries with exponential backoff and a timeout."""
    return {
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(minutes=TIMEOUT_MIN[stage]),
    }


# ---- settings and the day ------------------------------------------------------------------------
def settings_for(params: dict | None = None):
    """The process settings (env ``KP_*``) with the run's Params applied (``PARAM_OVERRIDES``)."""
    from kp.settings import get_settings

    settings = get_settings()
    overrides = {}
    for param, dotted in PARAM_OVERRIDES.items():
        value = (params or {}).get(param)
        if value not in (None, ""):
            overrides[dotted] = value
    if overrides.get("synth.scale"):  # demo mode: the demo's explicit small training budget
        overrides.update(demo_train_budget())
    if overrides:
        log.info("run params override settings: %s", overrides)
        settings = settings.with_overrides(**overrides)
    return settings


def _param(params: dict | None, name: str, default=None):
    value = (params or {}).get(name, default)
    return default if value in (None, "") else value


def day_from_context(params: dict | None, data_interval_start=None, logical_date=None, run_after=None) -> str:
    """The day a run processes: the ``ds`` param if given, else the data interval's start date.

    With ``CronDataIntervalTimetable("0 2 * * *")`` the run at 02:00 on day D+1 covers
    [D 02:00, D+1 02:00): its start date is D, the previous day. A manual run without a data interval
    falls back to the logical date, else the day before ``run_after``.
    """
    from kp.lake import ds_str

    explicit = _param(params, "ds")
    if explicit:
        return ds_str(str(explicit)[:10])
    for value in (data_interval_start, logical_date):
        if value is not None:
            return value.date().isoformat()
    if run_after is not None:
        return (run_after - dt.timedelta(days=1)).date().isoformat()
    raise ValueError("cannot tell which day to process: no ds param, data interval, logical date or run_after")


def is_training_day(settings, ds: str) -> bool:
    """Retrain on days where (days since 1970-01-01) % ``train.retrain_every_days`` == 0."""
    from kp.lake import parse_ds

    every = settings.train.retrain_every_days
    return (parse_ds(ds) - dt.date(1970, 1, 1)).days % every == 0


def _champion(settings) -> str | None:
    from jobs import registry

    return registry.champion(settings)


def plan_day(params: dict | None, data_interval_start=None, logical_date=None, run_after=None) -> dict:
    """What this run does: its ``ds``, whether it labels, trains, re-embeds everything, force-promotes."""
    settings = settings_for(params)
    ds = day_from_context(params, data_interval_start, logical_date, run_after)
    champion = _champion(settings)
    force_retrain = bool(_param(params, "force_retrain", False))
    if force_retrain:
        train, why = True, "forced by the force_retrain param"
    elif champion is None:
        train, why = True, "no champion model yet"
    elif is_training_day(settings, ds):
        train, why = True, f"training day (retrain_every_days={settings.train.retrain_every_days})"
    else:
        train, why = False, f"not a training day (retrain_every_days={settings.train.retrain_every_days}); serving with champion {champion}"
    plan = {
        "ds": ds,
        "label": not bool(_param(params, "skip_llm", False)),
        "train": train,
        "train_reason": why,
        "full_reembed": bool(_param(params, "full_reembed", False)),
        "force_promote": bool(_param(params, "force_promote", False)),
        "champion_before": champion,
        "lake_root": settings.lake_root,
        "judge_backend": settings.judge.backend,
    }
    log.info("plan for ds=%s: %s", ds, plan)
    return plan


def ensure_world(params: dict | None, ds: str) -> dict:
    """Demo only: generate the synthetic world at the ``scale`` param when the lake has no catalog.

    Without the ``scale`` param this does nothing (a production lake is never touched).
    """
    from kp.lake import Lake

    scale = _param(params, "scale")
    settings = settings_for(params)
    lake = Lake.from_settings(settings)
    if not scale:
        return {"generated": False, "reason": "no scale param: the lake's own inputs are used"}
    if lake.partitions("catalog"):
        return {"generated": False, "reason": "the lake already holds a catalog", "scale": scale}
    from jobs import synth

    log.info("generating the demo world at scale %s into %s", scale, settings.lake_root)
    figures = synth.run(settings, scale=scale)
    return {"generated": True, "scale": scale, **(figures or {})}


# ---- stage calls ---------------------------------------------------------------------------------
def _figures(result) -> dict:
    """Stage results go to XCom: keep them JSON-able."""
    import json

    if result is None:
        return {}
    return json.loads(json.dumps(result, default=str))


def run_ctr_labels(params, ds: str) -> dict:
    from jobs import ctr_labels

    return _figures(ctr_labels.run(settings_for(params), ds))


def run_select_pairs(params, ds: str) -> dict:
    from jobs import select_pairs

    settings = settings_for(params)
    figures = _figures(select_pairs.run(settings, ds, budget=settings.pairs.daily_budget))
    figures["shards"] = [int(s) for s in figures.get("shards", [])]
    log.info("ds=%s: %d shard(s) to label", ds, len(figures["shards"]))
    return figures


def run_llm_label(params, ds: str, shard: int) -> dict:
    from jobs import llm_label

    return _figures(llm_label.run(settings_for(params), ds, int(shard)))


def run_label_store(params, ds: str) -> dict:
    from jobs import label_store

    return _figures(label_store.run(settings_for(params), ds))


def run_train_cross(params, ds: str) -> dict:
    from jobs import train_cross

    return _figures(train_cross.run(settings_for(params), ds))


def run_train_bi(params, ds: str, cross: dict | None = None) -> dict:
    from jobs import train_bi

    ref = None
    if cross:
        ref = cross.get("version") or cross.get("path")
    return _figures(train_bi.run(settings_for(params), ds, cross=ref))


def run_evaluate(params, ds: str, bi: dict | None, force_promote: bool = False) -> dict:
    from jobs import evaluate

    candidate = (bi or {}).get("version")
    figures = _figures(evaluate.run(settings_for(params), ds, candidate=candidate, force_promote=force_promote))
    log.info("ds=%s: challenger %s %s (%s)", ds, candidate,
             "PROMOTED" if figures.get("promoted") else "not promoted", figures.get("reason"))
    return figures


def run_export(params, ds: str) -> dict:
    from jobs import export

    return _figures(export.run(settings_for(params), ds))


def run_embed(params, ds: str, what: str, full: bool = False) -> dict:
    from jobs import embed

    return _figures(embed.run(settings_for(params), ds, what=what, full=bool(full)))


def run_index(params, ds: str) -> dict:
    from jobs import index

    return _figures(index.run(settings_for(params), ds))


def run_recommend(params, ds: str) -> dict:
    from jobs import recommend

    return _figures(recommend.run(settings_for(params), ds))


def run_publish(params, ds: str) -> dict:
    from jobs import publish

    return _figures(publish.run(settings_for(params), ds))


def spark_application(stage: str) -> str:
    """Absolute path of a stage module for ``spark-submit`` (found without importing it)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / f"{stage}.py")


# ---- callbacks and pools -------------------------------------------------------------------------
def log_task_failure(context) -> None:
    """on_failure_callback for tasks: one clear line with the day, the try and how to rerun."""
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    params = context.get("params") or {}
    ds = params.get("ds") or context.get("ds")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    shard = f" [map_index={map_index}]" if map_index not in (None, -1) else ""
    log.error(
        "KEYPHRASE PIPELINE TASK FAILED: dag=%s task=%s%s ds=%s try=%s error=%s: %s. "
        "Fix the cause, then clear the task (it is idempotent for its ds): "
        "airflow tasks clear %s -t '^%s$' -s %s -e %s",
        dag_id, task_id, shard, ds, getattr(ti, "try_number", "?"), type(exc).__name__ if exc else "?", exc,
        dag_id, task_id, ds, ds,
    )


def log_dag_failure(context) -> None:
    """on_failure_callback for the DAG run."""
    dr = context.get("dag_run")
    log.error("KEYPHRASE PIPELINE RUN FAILED: dag=%s run_id=%s reason=%s",
              getattr(dr, "dag_id", "?"), getattr(dr, "run_id", "?"), context.get("reason"))


def ensure_pool(name: str = LLM_POOL, slots: int = LLM_POOL_SLOTS,
                description: str = "LLM judge workers (one slot per GPU worker)") -> None:
    """Create (or resize) an Airflow pool in the metadata database."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(name=name, slots=slots, description=description, include_deferred=False)
    log.info("pool %s: %d slot(s)", name, slots)


def airflow_bin() -> str:
    """The ``airflow`` executable of this environment (beside the running Python)."""
    import shutil
    import sys
    from pathlib import Path

    here = Path(sys.executable).parent / "airflow"
    return str(here) if here.exists() else (shutil.which("airflow") or "airflow")


def ensure_metadata_db() -> bool:
    """Run ``airflow db migrate`` unless the metadata DB is already current; True when it migrated."""
    import subprocess

    check = subprocess.run([airflow_bin(), "db", "check-migrations", "-t", "0"], capture_output=True, text=True)
    if check.returncode == 0:
        return False
    log.info("migrating the Airflow metadata database")
    done = subprocess.run([airflow_bin(), "db", "migrate"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return True


def settings_env(settings) -> dict[str, str]:
    """``KP_*`` environment variables that reproduce ``settings`` in another process (or a task run by
    ``dag.test``/``spark-submit``): nested fields as ``KP_SECTION__FIELD``, lists/dicts as JSON. Secrets
    are left out (pass them through the environment or an Airflow Connection)."""
    import json

    env: dict[str, str] = {}

    def walk(prefix: str, data: dict) -> None:
        for key, value in data.items():
            name = f"{prefix}{key.upper()}"
            if key == "api_key":
                continue
            if isinstance(value, dict) and prefix == "KP_":
                walk(f"{name}__", value)
            elif isinstance(value, (dict, list)):
                env[name] = json.dumps(value)
            elif isinstance(value, bool):
                env[name] = "true" if value else "false"
            elif value is not None:
                env[name] = str(value)

    walk("KP_", settings.model_dump(mode="json"))
    return env
