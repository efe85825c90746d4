"""SparkSession from settings: ``local[*]`` by default, any master (``spark://``, ``yarn``, ``k8s://``) by configuration.

Under ``spark-submit`` the master and resources come from the submit command; ``get_spark`` then only
adds the job's SQL settings (AQE, dynamic partition overwrite) to the session that exists.

A session is shared by the stages of one process (``kp demo``, ``dag.test()``, a report). When its JVM
dies (killed for memory, crashed: ``Py4JNetworkError: Answer from Java side is empty``, then
``ConnectionRefusedError`` on every call), ``get_spark`` notices before handing the session out
(``spark_health``), drops PySpark's cached context, sessions and gateway (``forget_spark``) and starts a new
JVM, so the next stage goes on. Under ``spark-submit`` the JVM is the parent process and cannot be
replaced: that raises instead (the task is retried).

``read_input`` is the one Spark reader of input partitions (raw events, catalog, keyphrases, search-relevance
labels): every file's footer checked against its contract first (``keyphrase_pipeline.core.conform``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from functools import reduce
from typing import TYPE_CHECKING

from keyphrase_pipeline.core import conform
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import spark_uri
from keyphrase_pipeline.core.layout import conformed_path

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def spark_health() -> str:
    """State of this process's PySpark JVM: ``"none"`` (no gateway yet), ``"alive"`` (gateway answers and its
    SparkContext, if any, runs), ``"stopped"`` (the JVM answers but its SparkContext was shut down) or
    ``"dead"`` (the gateway does not answer: the JVM is gone). Never raises for a dead JVM."""
    from py4j.protocol import Py4JError
    from pyspark import SparkContext

    gateway, sc = SparkContext._gateway, SparkContext._active_spark_context
    if gateway is None and sc is None:
        return "none"
    try:
        if sc is not None and getattr(sc, "_jsc", None) is not None:
            return "stopped" if sc._jsc.sc().isStopped() else "alive"
        SparkContext._jvm.java.lang.System.currentTimeMillis()  # no context: is the gateway itself there?
        return "stopped" if sc is not None else "alive"
    except (Py4JError, OSError, AttributeError) as exc:  # Py4JNetworkError, ConnectionRefusedError, ...
        log.debug("Spark gateway probe failed: %r", exc)
        return "dead"


def forget_spark(dead_gateway: bool) -> None:
    """Drop PySpark's cached SparkContext and SparkSessions (class attributes of ``SparkContext``,
    ``SparkSession``, ``SQLContext``) so the next builder starts afresh; with ``dead_gateway`` also the
    Py4J gateway and its JVM process (``SparkContext._gateway``/``_jvm``), killed if still running and reaped."""

    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql.context import SQLContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unable to cleanly shutdown Spark JVM process"
            try:
                sc.stop()
            except Exception as exc:  # a dead JVM: the Python side is cleaned up below
                log.debug("SparkContext.stop on a dead JVM: %r", exc)
        server = getattr(sc, "_accumulatorServer", None)
        if server is not None:
            server.shutdown()
            sc._accumulatorServer = None
        sc._jsc = None
    with SparkContext._lock:
        SparkContext._active_spark_context = None
        SparkSession._instantiatedSession = None
        SparkSession._activeSession = None
        SQLContext._instantiatedContext = None
        if dead_gateway and SparkContext._gateway is not None:
            gateway = SparkContext._gateway
            SparkContext._gateway = None
            SparkContext._jvm = None
            try:
                gateway.close()
            except Exception as exc:
                log.debug("closing a dead Py4J gateway: %r", exc)
            proc = getattr(gateway, "proc", None)  # the JVM pyspark launched (java_gateway.launch_gateway)
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                try:
                    proc.wait(timeout=30)
                except Exception:
                    pass


def _under_submit() -> bool:
    # spark-submit starts the JVM first and hands its gateway to Python (PYSPARK_GATEWAY_PORT)
    return bool(os.environ.get("SPARK_SUBMIT_INVOKED") or os.environ.get("PYSPARK_GATEWAY_PORT"))


def get_spark(settings: Settings, app: str):
    """Return a SparkSession configured for the pipeline (reusing an active one whose JVM is alive).

    A cached session whose JVM died or whose SparkContext was stopped is dropped (``forget_spark``) and a
    new one started, logged as a warning. Raises RuntimeError when the JVM of a ``spark-submit`` is gone
    (it cannot be replaced from Python; a retry of the task starts a new one)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    from pyspark.sql import SparkSession

    health = spark_health()
    under_submit = _under_submit()
    if health in ("dead", "stopped"):
        if under_submit and health == "dead":
            raise RuntimeError("the Spark JVM of this spark-submit is gone (Py4J gateway does not answer); "
                               "it cannot be restarted from Python: rerun the task")
        log.warning("the Spark JVM behind the cached session is %s: dropping it and starting a new session",
                    "gone" if health == "dead" else "alive but its SparkContext was stopped")
        forget_spark(dead_gateway=health == "dead")
    active = SparkSession.getActiveSession() if health == "alive" else None
    s = settings.spark
    if active is not None:
        spark = active
    else:
        builder = SparkSession.builder.appName(f"{s.app_prefix}-{app}")
        # under spark-submit the master comes from the submit command and must not be overridden here.
        if not under_submit and "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
            builder = builder.master(s.master)
        builder = (
            builder.config("spark.driver.memory", s.driver_memory)
            .config("spark.ui.enabled", str(s.ui_enabled).lower())
            .config("spark.driver.extraJavaOptions",
                    ("-XX:TieredStopAtLevel=1 " if s.fast_start else "") + "-Dio.netty.tryReflectionSetAccessible=true")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        for k, v in s.conf.items():
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        log.info("Spark %s started: master=%s", spark.version, spark.sparkContext.master)
    # SQL settings every job relies on (safe to set on a shared session)
    spark.conf.set("spark.sql.adaptive.enabled", "true")
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "true")
    spark.conf.set("spark.sql.shuffle.partitions", str(s.shuffle_partitions))
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return spark


def _python() -> str:

    return sys.executable


def read_input(spark, lake, paths: list[str], contract: str, what: str):
    """Read input partitions ``paths`` (contract in ``conform.INPUT_CONTRACTS``: files other tools write) with
    Spark, after ``keyphrase_pipeline.core.conform.check_files`` has read every file's footer: one DataFrame in
    the contract's columns and types (``conform.spark_read_types``: contract order, an optional column null
    where a file lacks it, columns outside the contract not read).

    When every file has the contract's physical types, the partition folders are read as they are. Otherwise
    the files are grouped by their footer types, each group read in the types Spark infers from it and cast to
    the contract (exact casts; ANSI mode refuses an overflow), files Spark cannot read (``FileCheck.copy``:
    nanosecond timestamps, ...) from a conformed copy under ``layout.conformed_path`` (kept for reruns; copies
    of replaced files removed), and the groups unioned. ``lake``: the ``Lake`` the copies go to; ``what``
    names the input in messages.

    Raises:
        SchemaError: (exit 3) a file breaks the contract (named with the column) before Spark reads anything.
        DataError: (exit 3) no data file at ``paths``, a file is not parquet, or Spark cannot read them.
    """

    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    checks = conform.check_files(paths, contract)
    if not checks:
        raise DataError(f"no data file in {what} at {', '.join(paths)}")
    if not conform.needs_conforming(checks):
        groups = [[spark_uri(p) for p in paths]]
    else:
        readable = [conform.write_conformed_copy(c, contract, conformed_path(lake, c.path.rsplit("/", 1)[0]))
                    if c.copy else c for c in checks]
        for part in paths:
            conform.prune_copies(conformed_path(lake, part), {c.path for c in readable})
        by_sig: dict[tuple, list[str]] = {}
        for c in readable:
            by_sig.setdefault(c.signature, []).append(spark_uri(c.path))
        groups = list(by_sig.values())
        log.warning("%s: files differ from contract %s or from each other: %d footer schema(s), %d file(s) read "
                    "from a conformed copy, all cast to the contract", what, contract, len(groups),
                    sum(bool(c.copy) for c in checks))
    types = conform.spark_read_types(contract)
    try:
        frames = [spark.read.parquet(*g) for g in groups]
    except AnalysisException as exc:
        raise DataError(f"cannot read {what} at {', '.join(paths)}: {str(exc).splitlines()[0]}") from None
    frames = [df.select(*[(F.col(c) if c in df.columns else F.lit(None)).cast(t).alias(c) for c, t in types.items()])
              for df in frames]
    return reduce(lambda a, b: a.unionByName(b), frames)


def reraise_executor_error(exc: BaseException) -> None:
    """Re-raise, as itself, a ConfigError, SchemaError or DataError that a Spark Python worker raised.

    Such an error reaches the driver as pyspark's ``PythonException`` (or a Py4J error) whose text holds the worker's
    traceback; the ``kp`` command line would treat it as unexpected (exit 1, retried). Here the last
    ``<ErrorName>: message`` line of the text becomes that error again (exit 2 or 3, not retried), prefixed "on a
    Spark executor:". Returns without raising for any other exception (the caller re-raises it)."""
    import re

    from keyphrase_pipeline.core.errors import ConfigError, SchemaError

    text = str(exc)
    for cls in (ConfigError, SchemaError, DataError):  # SchemaError before DataError: it is one
        found = re.findall(rf"(?:^|[.\s]){cls.__name__}: (.+)", text)
        if found:
            raise cls(f"on a Spark executor: {found[-1].strip()}") from exc
