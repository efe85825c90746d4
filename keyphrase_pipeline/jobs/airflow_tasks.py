"""Wiring helpers for the Airflow DAGs: the glue between a task's context and a stage's ``run``.

The DAG files in ``dags/`` stay thin (wiring, docs, params, pools, retries) and call the functions here;
this module holds no data logic either: every function builds the run's settings, calls ONE stage's
``run(settings, ds, ...)`` through ``run_stage`` and returns its metrics (JSON-able, so they land in XCom and the UI).
Nothing heavy is imported at module level; stage modules are imported inside the calls, so parsing a
DAG file never imports torch, pyspark or faiss.

Decisions that belong to orchestration, not to any stage, also live here:

* which day a run processes (``resolve_day``: the ``ds`` param, else the data interval's start);
* which settings a manual trigger overrides (``PARAM_OVERRIDES``);
* whether today is a training day (``settings.train.retrain_every_days``, ``force_retrain``, no champion);
* the lake's datasets as Airflow Assets (``ASSETS``), retries/timeouts per stage, the ``llm`` pool,
  and failure callbacks that say clearly what failed and how to rerun it;
* which failures are retried: a deterministic error (ConfigError, DataError, GateError; exit codes 2-4
  from a spark-submit stage, ``SparkSubmitStage``) fails the task at once, anything else is retried
  with backoff (``stage_args``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from keyphrase_pipeline.core.airflow_standalone import LLM_POOL, LLM_POOL_SLOTS  # noqa: F401 (the DAG reads at.LLM_POOL)

log = logging.getLogger(__name__)

DAG_OWNER = "keyphrase-pipeline"
GPU_QUEUE = "gpu"

# Params of a run (trigger form) -> dotted settings they override for that run only.
PARAM_OVERRIDES = {
    "label_budget": "pairs.daily_budget",
    "scale": "synth.scale",
}

# Demo mode (the ``scale`` param, or ``kp demo``): a small training budget, passed explicitly (about 2 + 3.5
# minutes on 2 CPU cores; the step caps decide, the best held-out checkpoint is kept). A retrain warm-starts
# from the previous day's models (the champion, CROSS_LATEST) with 60 + 100 steps. Without it the defaults
# train ``train.epochs`` / ``train.bi_epochs`` over the data from the base encoder with early stopping, which real label sets
# need. A ``KP_TRAIN__*`` variable in the environment wins over these.
DEMO_TRAIN_BUDGET = {"train.cross_max_steps": 150, "train.bi_max_steps": 250, "train.epochs": 10.0,
                     "train.bi_epochs": 10.0,
                     "train.init_from": "champion", "train.cross_init_from": "latest",
                     "train.warm_cross_max_steps": 60, "train.warm_bi_max_steps": 100,
                     "train.kd_list_ratio": 1.0}


# Demo mode plugs the synthetic package in by name (keyphrase_pipeline.core.truth): the world generator for ``ensure_world`` and
# the world's truth for evaluation and the UI. Production runs (no ``scale`` param) never load either.
DEMO_WORLD = "keyphrase_pipeline.synthetic.synth"
DEMO_TRUTH_PROVIDER = "keyphrase_pipeline.synthetic.world:load_truth"


#: The demo's simulated judge errs the way LLM judges do (lenient on brand, size, model and count mismatches,
#: accessory-for-product confusion, errors correlated within a product type, a confidence that tracks being right:
#: docs/LABELLING.md); ``KP_JUDGE__SIMULATED_ERRORS=iid`` picks the iid annotator instead.
DEMO_JUDGE = {"judge.simulated_errors": "llm"}


def env_name(dotted: str) -> str:
    """The environment variable of a dotted setting: ``train.bi_max_steps`` -> ``KP_TRAIN__BI_MAX_STEPS``."""
    section, field = dotted.split(".", 1)
    return f"KP_{section.upper()}__{field.upper()}"


def demo_overrides() -> dict:
    """Demo mode's settings, ``DEMO_TRAIN_BUDGET`` and ``DEMO_JUDGE``, less the fields the environment sets
    (``env_name``): ``{dotted name: value}``."""
    import os

    env = {k.upper() for k in os.environ}  # pydantic-settings reads KP_* names case-insensitively
    return {k: v for k, v in {**DEMO_TRAIN_BUDGET, **DEMO_JUDGE}.items() if env_name(k) not in env}


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
    from keyphrase_pipeline.core.settings import get_settings

    settings = get_settings()
    overrides = {}
    for param, dotted in PARAM_OVERRIDES.items():
        value = (params or {}).get(param)
        if value not in (None, ""):
            overrides[dotted] = value
    if overrides.get("synth.scale"):  # demo mode: the demo's small training budget and judge, its world's truth
        overrides.update(demo_overrides())
        if not settings.truth_provider:
            overrides["truth_provider"] = DEMO_TRUTH_PROVIDER
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
    from keyphrase_pipeline.core.lake import ds_str

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
    from keyphrase_pipeline.core.lake import parse_ds

    every = settings.train.retrain_every_days
    return (parse_ds(ds) - dt.date(1970, 1, 1)).days % every == 0


def _champion(settings) -> str | None:
    from keyphrase_pipeline.jobs import registry

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
    from keyphrase_pipeline.core.lake import Lake

    scale = _param(params, "scale")
    settings = settings_for(params)
    lake = Lake.from_settings(settings)
    if not scale:
        return {"generated": False, "reason": "no scale param: the lake's own inputs are used"}
    if lake.partitions("catalog"):
        return {"generated": False, "reason": "the lake already holds a catalog", "scale": scale}
    import importlib

    synth = importlib.import_module(DEMO_WORLD)  # by name: production code does not import the demo package
    log.info("generating the demo world at scale %s into %s", scale, settings.lake_root)
    stats = synth.run(settings, scale=scale)
    return {"generated": True, "scale": scale, **(stats or {})}


def input_sensor_args() -> dict:
    """Sensor kwargs of ``plan.wait_for_input`` from ``dag.*`` (``DagSettings``): reschedule mode (no worker slot
    held while waiting), ``poke_interval`` = ``dag.input_poke_minutes``, ``timeout`` = ``dag.input_wait_hours``;
    one try (``retries=0``): a sensor that timed out has waited long enough."""
    from keyphrase_pipeline.core.settings import get_settings

    d = get_settings().dag
    return {"mode": "reschedule", "poke_interval": dt.timedelta(minutes=d.input_poke_minutes),
            "timeout": dt.timedelta(hours=d.input_wait_hours), "retries": 0,
            "execution_timeout": dt.timedelta(minutes=TIMEOUT_MIN["plan"])}


def wait_for_input(params: dict | None, ds: str):
    """One check of the sensor ``plan.wait_for_input``: is day ``ds``'s raw input in the lake
    (``keyphrase_pipeline.jobs.inputs.day_inputs``)?

    Returns an ``airflow.sdk.PokeReturnValue``: done (with the check as XCom) when every input is present, else
    not done, logging what is missing and what to do (Airflow checks again after ``dag.input_poke_minutes`` and
    fails the task after ``dag.input_wait_hours``). A present input with a file that breaks its contract (a
    renamed column, an incompatible type: the check every stage runs before reading) fails at once
    (``AirflowFailException`` naming the file and the column): the stages would refuse the same files. A file
    not readable as parquet (still being written, truncated) is waited for like a missing input. In demo
    mode (the ``scale`` param) the world is generated just before, so a day outside it will never come: that
    fails at once (``AirflowFailException``), naming the days the world covers."""
    from airflow.sdk import PokeReturnValue

    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.jobs import inputs

    settings = settings_for(params)
    status = inputs.day_inputs(settings, ds)
    if any(m.get("schema") for m in status["invalid"]):
        from keyphrase_pipeline.core.errors import SchemaError

        raise fail_without_retry(SchemaError(f"input for ds={ds} breaks its contract: "
                                             f"{inputs.describe_invalid(status)}"), "wait_for_input")
    if status["invalid"]:  # a file not readable yet (still being written, truncated): check again later
        log.warning("input for ds=%s has a file that cannot be read yet: %s; checking again in %s min", ds,
                    inputs.describe_invalid(status), settings.dag.input_poke_minutes)
        return PokeReturnValue(is_done=False, xcom_value=status)
    if status["ready"]:
        log.info("input for ds=%s is in the lake: %s", ds, ", ".join(status["present"]))
        return PokeReturnValue(is_done=True, xcom_value=status)
    missing = inputs.describe_missing(status)
    if _param(params, "scale"):
        days = Lake.from_settings(settings).partitions("events")
        span = f"{days[0]} .. {days[-1]}" if days else "no day at all"
        raise fail_without_retry(DataError(f"the demo world has no input for ds={ds} (missing {missing}); its events "
                                           f"cover {span}: trigger with a ds param in that range"), "wait_for_input")
    try:  # the demo world's last day, for the hint
        demo_last = (dt.date.fromisoformat(settings.synth.start_date)
                     + dt.timedelta(days=settings.synth.days - 1)).isoformat()
    except ValueError:
        demo_last = "YYYY-MM-DD"
    log.warning("input for ds=%s has not landed yet: missing %s. Waiting (checked every %s min, for up to %s h). "
                "To try the pipeline on the demo world instead, trigger the DAG with the params "
                '{"scale": "demo", "ds": "%s"}.', ds, missing, settings.dag.input_poke_minutes,
                settings.dag.input_wait_hours, demo_last)
    return PokeReturnValue(is_done=False, xcom_value=status)


# ---- stage calls ---------------------------------------------------------------------------------
def jsonable(result) -> dict:
    """Stage results go to XCom: keep them JSON-able (numpy numbers and paths become str)."""
    import json

    if result is None:
        return {}
    return json.loads(json.dumps(result, default=str))


def deterministic_errors() -> tuple[type[Exception], ...]:
    """The errors a retry cannot fix: bad configuration (ConfigError, exit 2), missing or malformed input
    (DataError/SchemaError, exit 3), a refused quality gate (GateError, exit 4). Everything else (an endpoint
    down, out of memory, a lost executor or JVM, ``JudgeUnavailable``) may pass on a retry."""
    from keyphrase_pipeline.core.errors import ConfigError, DataError, GateError

    return (ConfigError, DataError, GateError)


def fail_without_retry(exc: BaseException, what: str):
    """An ``AirflowFailException`` (the task fails at once, retries left unused) saying why; raise it ``from exc``."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(
        f"{what}: {type(exc).__name__}: {exc} [not retried: the same input and settings give the same error; "
        "fix the cause, then clear the task]")


def run_stage(stage: str, params: dict | None, ds: str, **kwargs) -> dict:
    """The one task wrapper: ``keyphrase_pipeline.jobs.<stage>.run(settings_for(params), ds, **kwargs)``,
    its metrics JSON-able.

    The stage module is imported here, inside the task, so parsing a DAG file never imports torch,
    pyspark or faiss. A deterministic error (``deterministic_errors``: ConfigError, DataError, GateError)
    fails the task at once: it is re-raised as ``AirflowFailException`` chained to the original, so
    Airflow does not spend its retries and backoff on it. Any other exception propagates unchanged
    (Airflow retries it; ``log_task_failure`` reports the last try), except a full disk, a read-only file system
    or a denied permission under it (``errors.storage_error_from``: a ``StorageError`` naming the path and the
    condition, not retried)."""
    import importlib
    import time

    module = importlib.import_module(f"keyphrase_pipeline.jobs.{stage}")
    settings = settings_for(params)
    name = stats_name(stage, kwargs)
    since, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    try:
        result = jsonable(module.run(settings, ds, **kwargs))
    except deterministic_errors() as exc:
        record_failure(settings, ds, name, exc, time.monotonic() - t0, retried=False, detail=kwargs)
        raise fail_without_retry(exc, f"stage {stage} for ds={ds}") from exc
    except Exception as exc:
        from keyphrase_pipeline.core.errors import storage_error_from

        storage = storage_error_from(exc, settings.lake_root)  # a full disk, a read-only lake: retrying cannot fix it
        record_failure(settings, ds, name, storage or exc, time.monotonic() - t0, retried=storage is None,
                       detail=kwargs)
        if storage is not None:
            raise fail_without_retry(storage, f"stage {stage} for ds={ds}") from exc
        raise
    record_success(settings, ds, name, time.monotonic() - t0, since)
    return result


# run stats file (runs/ds=D/<name>.json) -> the DAG task that writes it (the UI links each stage to its task log)
STATS_TASKS = {
    "ctr_labels": "ctr.ctr_labels",
    "select_pairs": "llm_labels.select_pairs",
    "llm_labels": "llm_labels.merge_labels",
    "train_cross": "train.train_cross",
    "train_bi": "train.train_bi",
    "evaluate": "train.evaluate",
    "export": "serve.export",
    "embed_items": "serve.embed_items",
    "embed_keyphrases": "serve.embed_keyphrases",
    "index": "serve.build_index",
    "recommend": "serve.recommend",
    "publish": "serve.publish",
}


def stats_name(stage: str, kwargs: dict | None = None) -> str:
    """The run stats name a stage module writes (``runs/ds=D/<name>.json``): ``embed`` -> ``embed_<what>``,
    ``label_store`` -> ``llm_labels``; a labelling shard (``llm_label``) is part of ``llm_labels``; else the module name."""
    if stage == "embed":
        return f"embed_{(kwargs or {}).get('what', 'items')}"
    if stage in ("label_store", "llm_label"):
        return "llm_labels"
    return stage


def airflow_ids(context: dict | None = None) -> dict | None:
    """``{dag_id, run_id, task_id, map_index, try_number}`` of the running Airflow task (from ``context``, else the
    current task context), or None outside a task (``kp`` on the command line, a test)."""
    try:
        if context is None:
            from airflow.sdk import get_current_context

            context = get_current_context()
        ti = context.get("ti") or context.get("task_instance")
        ids = {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
               "task_id": getattr(ti, "task_id", None), "map_index": getattr(ti, "map_index", -1),
               "try_number": getattr(ti, "try_number", None)}
    except Exception:  # no task context (not inside a running task), or Airflow not importable
        return None
    ids = {k: (v if isinstance(v, (int, str)) or v is None else str(v)) for k, v in ids.items()}
    return ids if ids["run_id"] and ids["task_id"] else None


def record_success(settings, ds: str, name: str, seconds: float, since: dt.datetime, context: dict | None = None) -> None:
    """Add the task's ``wall_seconds`` (seconds, wall clock of the whole stage call) and ``airflow`` ids to the run
    stats ``name`` the stage just wrote for ``ds`` (nothing when it wrote none since ``since``). Never raises:
    a failure to annotate is logged, the stage's result stands."""
    try:
        from keyphrase_pipeline.core.lake import Lake

        extra = {"wall_seconds": round(float(seconds), 3)}
        ids = airflow_ids(context)
        if ids:
            extra["airflow"] = ids
        if not Lake.from_settings(settings).add_to_run_stats(ds, name, extra, written_since=since):
            log.info("stage %s for ds=%s wrote no run stats this run: wall time %.1f s not recorded", name, ds, seconds)
    except Exception as exc:
        log.warning("could not add wall_seconds to the run stats %s for ds=%s: %s: %s", name, ds, type(exc).__name__, exc)


def record_failure(settings, ds: str, name: str, exc: BaseException, seconds: float, retried: bool,
                   detail: dict | None = None, context: dict | None = None) -> None:
    """Write ``runs/ds=D/_failed/<name>.json`` (``Lake.write_run_failure``): the error's type and message (first
    1,000 characters), whether Airflow retries it, ``wall_seconds``, the Airflow ids and ``detail`` (the stage's
    keyword arguments, e.g. the shard). Never raises: the stage's own exception is what the task reports."""
    try:
        from keyphrase_pipeline.core.lake import Lake

        record = {"error_type": type(exc).__name__, "error": str(exc)[:1000], "retried": bool(retried),
                  "wall_seconds": round(float(seconds), 3), "airflow": airflow_ids(context),
                  "detail": jsonable(detail or {})}
        Lake.from_settings(settings).write_run_failure(ds, name, record)
    except Exception as rec_exc:
        log.warning("could not record the failure of %s for ds=%s: %s: %s", name, ds, type(rec_exc).__name__, rec_exc)


def cross_ref(cross: dict | None) -> str | None:
    """The cross-encoder a student distils from: train_cross's version, else its path (``--out``)."""
    return (cross.get("version") or cross.get("path")) if cross else None


def spark_application(stage: str) -> str:
    """Absolute path of a stage module for ``spark-submit`` (found without importing it)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / f"{stage}.py")


def deterministic_exit_codes() -> dict[int, str]:
    """``kp`` exit codes of the deterministic errors: {2: "ConfigError", 3: "DataError", 4: "GateError"}."""
    return {cls.exit_code: cls.__name__ for cls in deterministic_errors()}


def spark_submit_exit_code(exc: BaseException) -> int | None:
    """The exit code in the Spark provider's "Cannot execute: ... Error code is: N." failure, else None.

    In client mode (``local[*]``, ``spark://`` and YARN/k8s client deploy) spark-submit exits with the
    Python application's own exit code, i.e. the ``kp`` exit code of the stage (``core/cli.py``)."""
    import re

    m = re.search(r"Error code is: (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _make_spark_submit_stage():
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    class SparkSubmitStage(SparkSubmitOperator):
        """``SparkSubmitOperator`` for a stage module (``spark_application``): when spark-submit exits with a
        deterministic ``kp`` exit code (2 ConfigError, 3 DataError, 4 GateError: the job ran and refused),
        the task fails at once (``AirflowFailException``); any other failure (exit 1, a lost JVM or
        executor, a cluster that is down) is raised unchanged and retried."""

        def execute(self, context):
            import time

            name = str(self.application).rsplit("/", 1)[-1].removesuffix(".py")
            since, t0 = dt.datetime.now(dt.UTC), time.monotonic()
            ds = self._ds()
            try:
                result = super().execute(context)
            except Exception as exc:
                code = spark_submit_exit_code(exc)
                meaning = deterministic_exit_codes().get(code)
                if ds:
                    record_failure(settings_for(context.get("params")), ds, name, exc, time.monotonic() - t0,
                                   retried=meaning is None, detail={"exit_code": code}, context=context)
                if meaning is None:
                    raise
                app = str(self.application).rsplit("/", 1)[-1]
                raise fail_without_retry(exc, f"spark-submit {app} exited {code} ({meaning})") from exc
            if ds:
                record_success(settings_for(context.get("params")), ds, name, time.monotonic() - t0, since, context=context)
            return result

        def _ds(self) -> str | None:
            """The ``--ds`` of the (rendered) application arguments, or None."""
            args = [str(a) for a in (self.application_args or [])]
            return args[args.index("--ds") + 1] if "--ds" in args[:-1] else None

    SparkSubmitStage.__module__ = __name__
    SparkSubmitStage.__qualname__ = "SparkSubmitStage"
    return SparkSubmitStage


_LAZY_CLASSES: dict[str, type] = {}


def __getattr__(name: str):
    """``SparkSubmitStage`` (PEP 562): built on first use, so importing this module never imports the
    Spark provider (the DAG file that uses it imports it anyway)."""
    if name == "SparkSubmitStage":
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _make_spark_submit_stage()
        return _LAZY_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
