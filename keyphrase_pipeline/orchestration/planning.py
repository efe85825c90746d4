"""What a run does: its day, the settings its Params override, whether it trains, the demo world, the input sensor.

Decisions that belong to orchestration, not to any stage:

* which day a run processes (``day_from_context``: the ``ds`` param, else the data interval's start);
* which settings a manual trigger overrides (``PARAM_OVERRIDES``, the demo's budget and judge);
* whether today is a training day (``settings.train.retrain_every_days``, ``force_retrain``, no champion);
* whether the day's raw input has landed (``wait_for_input``, the sensor).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from typing import TYPE_CHECKING, TypedDict

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.commands import inputs
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, ds_str, parse_ds
from keyphrase_pipeline.orchestration import run_settings
from keyphrase_pipeline.orchestration.tasks import TIMEOUT_PLAN_MIN, fail_without_retry

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


class RunPlan(TypedDict):
    """What one DAG run does (``plan_day``'s XCom, passed to every task as ``plan``)."""

    ds: str  # the day processed, YYYY-MM-DD
    label: bool  # select and judge new pairs today (False: the skip_llm param)
    train: bool  # train the cross-encoder and the student today
    train_reason: str  # why (not) training, for the log and the page
    full_reembed: bool  # embed every item and keyphrase again
    force_promote: bool  # promote the new student even if it does not beat the champion
    champion_before: str | None  # the champion when the run was planned
    lake_root: str
    judge_backend: str



# Demo mode plugs the synthetic package in by name (keyphrase_pipeline.core.truth): the world generator for ``ensure_world`` and
# the world's truth for evaluation and the UI. Production runs (no ``scale`` param) never load either.
DEMO_WORLD = "keyphrase_pipeline.synthetic.synth"



def _param(params: dict | None, name: str, default=None):
    value = (params or {}).get(name, default)
    return default if value in (None, "") else value


def day_from_context(params: dict | None, data_interval_start=None, logical_date=None, run_after=None) -> str:
    """The day a run processes: the ``ds`` param if given, else the data interval's start date.

    With ``CronDataIntervalTimetable("0 2 * * *")`` the run at 02:00 on day D+1 covers
    [D 02:00, D+1 02:00): its start date is D, the previous day. A manual run without a data interval
    falls back to the logical date, else the day before ``run_after``.
    """

    explicit = _param(params, "ds")
    if explicit:
        return ds_str(str(explicit)[:10])
    for value in (data_interval_start, logical_date):
        if value is not None:
            return value.date().isoformat()
    if run_after is not None:
        return (run_after - dt.timedelta(days=1)).date().isoformat()
    raise ValueError("cannot tell which day to process: no ds param, data interval, logical date or run_after")


def is_training_day(settings: Settings, ds: str) -> bool:
    """Retrain on days where (days since 1970-01-01) % ``train.retrain_every_days`` == 0."""

    every = settings.train.retrain_every_days
    return (parse_ds(ds) - dt.date(1970, 1, 1)).days % every == 0


def _champion(settings: Settings) -> str | None:

    return registry.champion(settings)


def plan_day(params: dict | None, data_interval_start=None, logical_date=None, run_after=None) -> RunPlan:
    """What this run does: its ``ds``, whether it labels, trains, re-embeds everything, force-promotes."""
    settings = run_settings.settings_for(params)
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
    plan: RunPlan = {
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

    scale = _param(params, "scale")
    settings = run_settings.settings_for(params)
    lake = Lake.from_settings(settings)
    if not scale:
        return {"generated": False, "reason": "no scale param: the lake's own inputs are used"}
    if lake.partitions("catalog"):
        return {"generated": False, "reason": "the lake already holds a catalog", "scale": scale}

    synth = importlib.import_module(DEMO_WORLD)  # by name: production code does not import the demo package
    log.info("generating the demo world at scale %s into %s", scale, settings.lake_root)
    stats = synth.run(settings, scale=scale)
    return {"generated": True, "scale": scale, **(stats or {})}


def input_sensor_args() -> dict:
    """Sensor kwargs of the task ``plan.wait_for_input`` from ``dag.*`` (``DagSettings``): reschedule mode (no worker slot
    held while waiting), ``poke_interval`` = ``dag.input_poke_minutes``, ``timeout`` = ``dag.input_wait_hours``;
    one try (``retries=0``): a sensor that timed out has waited long enough."""
    from keyphrase_pipeline.core.settings import get_settings

    d = get_settings().dag
    return {"mode": "reschedule", "poke_interval": dt.timedelta(minutes=d.input_poke_minutes),
            "timeout": dt.timedelta(hours=d.input_wait_hours), "retries": 0,
            "execution_timeout": dt.timedelta(minutes=TIMEOUT_PLAN_MIN)}


def wait_for_input(params: dict | None, ds: str):
    """One check of the sensor task ``plan.wait_for_input``: is day ``ds``'s raw input in the lake
    (``keyphrase_pipeline.commands.inputs.day_inputs``)?

    Returns an ``airflow.sdk.PokeReturnValue``: done (with the check as XCom) when every input is present, else
    not done, logging what is missing and what to do (Airflow checks again after ``dag.input_poke_minutes`` and
    fails the task after ``dag.input_wait_hours``). A present input with a file that breaks its contract (a
    renamed column, an incompatible type: the check every stage runs before reading) fails at once
    (``AirflowFailException`` naming the file and the column): the stages would refuse the same files. A file
    not readable as parquet (still being written, truncated) is waited for like a missing input. In demo
    mode (the ``scale`` param) the world is generated just before, so a day outside it will never come: that
    fails at once (``AirflowFailException``), naming the days the world covers."""
    from airflow.sdk import PokeReturnValue

    settings = run_settings.settings_for(params)
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
