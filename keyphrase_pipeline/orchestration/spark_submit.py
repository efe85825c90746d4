"""Stages the DAG submits with spark-submit: the entry point it submits (``jobs/<name>.py`` at the top of the
checkout) and ``SparkSubmitStage``, the Spark provider's operator that fails at once on a deterministic exit code.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.orchestration import run_settings
from keyphrase_pipeline.orchestration.tasks import (
    deterministic_errors,
    fail_without_retry,
    record_failure,
    record_success,
    tag_partitions,
)
from keyphrase_pipeline.stages import BY_NAME


def spark_application(stage: str) -> str:
    """Absolute path of the stage's entry point for ``spark-submit``: ``jobs/<stage>.py`` at the top of the
    checkout, or ``spark.jobs_dir`` (``KP_SPARK__JOBS_DIR``: another folder holding the same files, e.g. in an
    image that installs the package without the checkout). ConfigError (exit 2) when the file is not there or
    the stage is unknown."""

    from keyphrase_pipeline.core.settings import get_settings

    if stage not in BY_NAME:
        raise ConfigError(f"unknown stage {stage!r} for spark-submit; stages: {', '.join(BY_NAME)}")
    jobs = Path(get_settings().spark.jobs_dir or Path(__file__).resolve().parents[2] / "jobs")
    path = jobs / f"{stage}.py"
    if not path.is_file():
        raise ConfigError(f"spark-submit entry point {path} not found: run from a checkout (its jobs/ folder) "
                          "or set KP_SPARK__JOBS_DIR to a folder holding <stage>.py")
    return str(path)


def deterministic_exit_codes() -> dict[int, str]:
    """``kp`` exit codes of the deterministic errors: {2: "ConfigError", 3: "DataError", 4: "GateError"}."""
    return {cls.exit_code: cls.__name__ for cls in deterministic_errors()}


def spark_submit_exit_code(exc: BaseException) -> int | None:
    """The exit code in the Spark provider's "Cannot execute: ... Error code is: N." failure, else None.

    In client mode (``local[*]``, ``spark://`` and YARN/k8s client deploy) spark-submit exits with the
    Python application's own exit code, i.e. the ``kp`` exit code of the stage (``keyphrase_pipeline/cli.py``)."""

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

            name = str(self.application).rsplit("/", 1)[-1].removesuffix(".py")
            since, t0 = dt.datetime.now(dt.UTC), time.monotonic()
            ds = self._ds()
            try:
                result = super().execute(context)
            except Exception as exc:
                code = spark_submit_exit_code(exc)
                meaning = deterministic_exit_codes().get(code)
                if ds:
                    record_failure(run_settings.settings_for(context.get("params")), ds, name, exc, time.monotonic() - t0,
                                   retried=meaning is None, detail={"exit_code": code}, context=context)
                if meaning is None:
                    raise
                app = str(self.application).rsplit("/", 1)[-1]
                raise fail_without_retry(exc, f"spark-submit {app} exited {code} ({meaning})") from exc
            if ds:
                settings = run_settings.settings_for(context.get("params"))
                record_success(settings, ds, name, time.monotonic() - t0, since, context=context)
                tag_partitions(name, ds, context=context, settings=settings)
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
