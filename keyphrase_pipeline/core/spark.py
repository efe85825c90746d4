"""SparkSession from settings: ``local[*]`` by default, any master (``spark://``, ``yarn``, ``k8s://``) by configuration.

Under ``spark-submit`` the master and resources come from the submit command; ``get_spark`` then only
adds the job's SQL settings (AQE, dynamic partition overwrite) to the session that exists.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def get_spark(settings, app: str):
    """Return a SparkSession configured for the pipeline (reusing an active one)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    s = settings.spark
    if active is not None:
        spark = active
    else:
        builder = SparkSession.builder.appName(f"{s.app_prefix}-{app}")
        # spark-submit starts the JVM first and hands its gateway to Python (PYSPARK_GATEWAY_PORT):
        # the master then comes from the submit command and must not be overridden here.
        under_submit = bool(os.environ.get("SPARK_SUBMIT_INVOKED") or os.environ.get("PYSPARK_GATEWAY_PORT"))
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
    import sys

    return sys.executable
