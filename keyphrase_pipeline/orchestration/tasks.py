"""The one task wrapper (``run_stage``) and what every stage task shares: retries and timeouts from the stage
table, which failures are retried, run stats and failure records, failure callbacks, the pool and the queue.

* which failures are retried: a deterministic error (ConfigError, DataError, GateError; exit codes 2-4 from a
  spark-submit stage, ``spark_submit.SparkSubmitStage``) fails the task at once, anything else is retried with
  backoff (``stage_args``);
* a stage's metrics are returned JSON-able, so they land in XCom and on the Keyphrases page.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from keyphrase_pipeline.core.errors import ConfigError, DataError, GateError
from keyphrase_pipeline.orchestration import run_settings
from keyphrase_pipeline.orchestration.assets import asset
from keyphrase_pipeline.stages import BY_NAME as STAGE_BY_NAME
from keyphrase_pipeline.stages import GPU_QUEUE, LLM_POOL  # noqa: F401 (the DAG and deploy read them here too)
from keyphrase_pipeline.stages import stats_name as stage_stats_name

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

DAG_OWNER = "keyphrase-pipeline"
TIMEOUT_PLAN_MIN = 10  # the plan group's tasks (and the DAG's default)
TIMEOUT_SYNTH_MIN = 60  # demo only: generating the synthetic world


def stage_args(stage: str, retries: int = 2) -> dict[str, Any]:
    """Operator kwargs every stage task gets: retries with exponential backoff and the stage table's timeout
    (``Stage.timeout_min``; ``plan`` and ``synth``, the DAG's own tasks: ``TIMEOUT_PLAN_MIN``, ``TIMEOUT_SYNTH_MIN``).
    KeyError for an unknown stage."""
    own = {"plan": TIMEOUT_PLAN_MIN, "synth": TIMEOUT_SYNTH_MIN}
    if stage in own:
        minutes = own[stage]
    elif stage in STAGE_BY_NAME:
        minutes = STAGE_BY_NAME[stage].timeout_min
    else:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_BY_NAME)}, and plan, synth")
    return {
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(minutes=minutes),
    }


def task_args(stage: str, variant: str | None = None, retries: int = 2) -> dict[str, Any]:
    """``stage_args`` plus the task's ``outlets`` (Airflow Assets), ``queue`` and ``pool`` from the stage table: the
    kwargs of one stage's task in the DAG. ``variant``: for a stage with variants (``embed``: ``items``,
    ``keyphrases``)."""
    s = STAGE_BY_NAME[stage]
    outlets = [asset(name) for name in s.outlets_of(variant)]
    return {**stage_args(stage, retries), "queue": s.queue, **({"pool": s.pool} if s.pool else {}),
            **({"outlets": outlets} if outlets else {})}


# ---- stage calls ---------------------------------------------------------------------------------
def jsonable(result) -> dict:
    """Stage results go to XCom: keep them JSON-able (numpy numbers and paths become str)."""

    if result is None:
        return {}
    return json.loads(json.dumps(result, default=str))


def deterministic_errors() -> tuple[type[Exception], ...]:
    """The errors a retry cannot fix: bad configuration (ConfigError, exit 2), missing or malformed input
    (DataError/SchemaError, exit 3), a refused quality gate (GateError, exit 4). Everything else (an endpoint
    down, out of memory, a lost executor or JVM, ``JudgeUnavailable``) may pass on a retry."""

    return (ConfigError, DataError, GateError)


def fail_without_retry(exc: BaseException, what: str):
    """An ``AirflowFailException`` (the task fails at once, retries left unused) saying why; raise it ``from exc``."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(
        f"{what}: {type(exc).__name__}: {exc} [not retried: the same input and settings give the same error; "
        "fix the cause, then clear the task]")


def run_stage(stage: str, params: dict | None, ds: str, **kwargs) -> dict:
    """The one task wrapper: ``keyphrase_pipeline.stages.<stage>.run(settings_for(params), ds, **kwargs)``,
    its metrics JSON-able.

    The stage module is imported here, inside the task, so parsing a DAG file never imports torch,
    pyspark or faiss. A deterministic error (``deterministic_errors``: ConfigError, DataError, GateError)
    fails the task at once: it is re-raised as ``AirflowFailException`` chained to the original, so
    Airflow does not spend its retries and backoff on it. Any other exception propagates unchanged
    (Airflow retries it; ``log_task_failure`` reports the last try), except a full disk, a read-only file system
    or a denied permission under it (``errors.storage_error_from``: a ``StorageError`` naming the path and the
    condition, not retried)."""

    module = importlib.import_module(STAGE_BY_NAME[stage].module)
    try:
        settings = run_settings.settings_for(params)
    except deterministic_errors() as exc:  # the configuration itself is invalid: nowhere to record it, no retry
        raise fail_without_retry(exc, f"stage {stage} for ds={ds}: its settings") from exc
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
    tag_partitions(stage, ds, kwargs.get("what"), settings=settings)
    return result


def tag_partitions(stage: str, ds: str, variant: str | None = None, context: dict | None = None,
                   settings: Settings | None = None) -> list[str]:
    """Mark the asset events of a stage's task with the day it wrote: ``extra["ds"]`` always (a consumer DAG
    scheduled on ``kp.recommendations`` reads ``triggering_asset_events`` to know which day landed), and with
    ``dag.asset_partition_keys`` the event's partition key too (Airflow 3.3 asset partitions, for partition-aware
    consumers). Off by default: Airflow 3.3 does not queue a DAG with an ordinary asset schedule for an event that
    has a partition key (``AssetManager``), so keyed events would stop the documented ``schedule=[Asset(...)]``
    consumers. Returns the asset names marked; [] outside an Airflow task (CLI, tests)."""
    if context is None:
        try:
            from airflow.sdk import get_current_context

            context = get_current_context()
        except Exception:  # noqa: BLE001 - not inside a running task
            return []
    events = context.get("outlet_events")
    if events is None:
        return []
    if settings is None:
        settings = run_settings.settings_for(context.get("params"))
    tagged = []
    for name in STAGE_BY_NAME[stage].outlets_of(variant):
        event = events[asset(name)]
        event.extra["ds"] = str(ds)
        if settings.dag.asset_partition_keys:
            event.add_partitions(str(ds))
        tagged.append(name)
    return tagged


def stats_name(stage: str, kwargs: dict | None = None) -> str:
    """The run stats name a stage's task writes or reports to (``runs/ds=D/<name>.json``, from the stage table):
    ``embed`` with ``what=keyphrases`` -> ``embed_keyphrases``; a labelling shard (``llm_label``) ->
    ``merge_labels``; else the stage's name."""
    return stage_stats_name(stage, (kwargs or {}).get("what"))


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


def record_success(settings: Settings, ds: str, name: str, seconds: float, since: dt.datetime, context: dict | None = None) -> None:
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


def record_failure(settings: Settings, ds: str, name: str, exc: BaseException, seconds: float, retried: bool,
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
