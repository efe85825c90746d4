"""Stage 1: daily 30-day CTR labels from search logs (Spark, incremental, validated).

For the logical date ``ds`` the job

1. aggregates that day's raw events (``raw/events/ds=``) into ``ctr_daily/ds=`` (impressions and
   clicks per (item, keyphrase)) and ``ctr_position_daily/ds=`` (the same by position: the CTR model's rows),
   quarantining bad rows in ``quarantine/events/ds=`` with a ``reason``;
   the last ``ctr.attribution_window_minutes`` of the previous day's raw events are read too (filter
   pushed to the scan), so a click just after midnight counts on its impression just before it and an
   event id already logged there is not counted again;
2. makes sure every day of the window (``settings.ctr.window_days``, default 30, ending at ``ds``) has
   its daily aggregate, computing the missing ones from raw (backfill);
3. sums the window into ``ctr_labels/ds=`` with CTR and the label (1 when CTR > ``ctr_threshold`` and
   impressions >= ``min_impressions``), plus ``_stats.json``: sliding (``ctr_labels/ds=D-1`` + ``ctr_daily/ds=D``
   - ``ctr_daily/ds=D-window_days``, 3 partitions) when D-1's labels are a verified state, else the full sum of
   the window's daily aggregates (:func:`plan_window_sum` says which and why);
4. passes optional search-relevance labels (``raw/sr_labels/ds=``) through to ``sr_labels/ds=``.

Raw events are read for one day per run (plus backfilled days, plus each such day's previous-day tail):
the run's cost does not grow with the history kept. Every output partition is written under a hidden
temporary directory and renamed into place, so readers see the old partition or the new one, never a
half-written one; reruns replace.

Runs on ``local[*]`` by default, on any Spark master by configuration (``KP_SPARK__MASTER``), or under
``spark-submit jobs/ctr_labels.py --ds YYYY-MM-DD`` (master from the submit command). See docs/CTR.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
from functools import reduce
from typing import TYPE_CHECKING

from keyphrase_pipeline.core import conform, layout
from keyphrase_pipeline.core.contracts import check_spark_schema
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import (
    Lake,
    atomic_dir,
    dir_fingerprint,
    ds_range,
    ds_str,
    spark_uri,
    write_text_atomic,
)
from keyphrase_pipeline.core.layout import partition_name

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

STAGE = "ctr_labels"
EVENT_TYPES = ("impression", "click")
# Quarantine reasons, in priority order: a row gets the first that applies.
REASONS = (
    "null_key",  # event_id, ts, item_id, keyphrase_id or event is null
    "unknown_event",  # event is not 'impression' or 'click'
    "bad_position",  # position null, zero or negative
    "ts_outside_day",  # ts not in [D 00:00, D+1 00:00) of its partition D (widened by ctr.clock_skew_minutes)
    "duplicate_event_id_prev_day",  # an event_id already logged in the previous day's tail (that copy counts)
    "duplicate_event_id",  # a later copy of an event_id seen earlier that day (the first is kept)
    "click_without_impression",  # a click on a pair with no valid impression that day nor in the window before it
    "clicks_exceed_impressions",  # every row of a pair whose day has more clicks than impressions (+ carried ones)
)
SR_REASONS = ("null_key", "bad_label", "bad_score", "duplicate_pair")
_KEY_COLUMNS = ("event_id", "ts", "item_id", "keyphrase_id", "event")


# ---------------------------------------------------------------------------------------------
# validation (pure DataFrame -> DataFrame; also used by bench/ctr_labels.py for the naive baseline)
# ---------------------------------------------------------------------------------------------
def _minutes(n: int):
    from pyspark.sql import functions as F

    return F.expr(f"INTERVAL {int(n)} MINUTES")


def _row_checks(events, ctr, day_col: str):
    """``events`` plus ``_r1``: the first row-level reason (null_key, unknown_event, bad_position,
    ts_outside_day) or null. ``day_col`` is a date column: each row's partition day."""
    from pyspark.sql import functions as F

    c = F.col
    ts_type = events.schema["ts"].dataType
    skew = _minutes(ctr.clock_skew_minutes)
    day_start = c(day_col).cast(ts_type)
    day_end = F.date_add(c(day_col), 1).cast(ts_type)
    null_key = reduce(lambda a, b: a | b, [c(k).isNull() for k in _KEY_COLUMNS])
    return events.withColumn(
        "_r1",
        F.when(null_key, F.lit("null_key"))
        .when(~c("event").isin(*EVENT_TYPES), F.lit("unknown_event"))
        .when(c("position").isNull() | (c("position") <= 0), F.lit("bad_position"))
        .when((c("ts") < day_start - skew) | (c("ts") >= day_end + skew), F.lit("ts_outside_day")),
    )


def boundary_context(events, ctr, day_col: str = "_day"):
    """The previous-day context of the next day's classification: the rows of ``events`` that pass the row
    checks and lie in the last ``max(attribution_window_minutes, clock_skew_minutes)`` minutes of their
    partition day (up to ``clock_skew_minutes`` past midnight), each keyed (``_key_day``) to the day after
    its own. ``day_col``: a date column, each row's partition day. Columns: ``events``' plus ``_r1``
    (null), ``_key_day`` (date), ``_ctx`` (true). Pass it to :func:`classify_events` as ``context``."""
    from pyspark.sql import functions as F

    c = F.col
    span = max(int(ctr.attribution_window_minutes), int(ctr.clock_skew_minutes))
    ts_type = events.schema["ts"].dataType
    midnight = F.date_add(c(day_col), 1).cast(ts_type)
    return (
        _row_checks(events, ctr, day_col)
        .where(c("_r1").isNull() & (c("ts") >= midnight - _minutes(span))
               & (c("ts") < midnight + _minutes(ctr.clock_skew_minutes)))
        .withColumn("_key_day", F.date_add(c(day_col), 1))
        .withColumn("_ctx", F.lit(True))
    )


def classify_events(events, ctr, day_col: str = "_day", context=None):
    """Add ``reason`` (null for valid rows, else the first reason of ``REASONS`` that applies) and
    ``attributed`` (bool: a valid click counted on an impression of the previous day) to raw events.

    ``events``: raw events (contract ``events``, conformed by ``_conform_events``) with a date column
    ``day_col``, each row's partition day; several days may be classified at once (the naive benchmark
    does): duplicates and per-pair checks stay within a partition day, exactly as in the daily job.
    ``ctr``: ``settings.ctr`` (``attribution_window_minutes``, ``clock_skew_minutes``).
    ``context``: None, or :func:`boundary_context` of the previous days (the tail of D-1 for day D). With it,
    an event id already in D-1's tail is ``duplicate_event_id_prev_day`` on D; a click on D whose pair has no
    valid impression on D counts when D-1's tail has an impression of the pair at most
    ``attribution_window_minutes`` before it (else ``click_without_impression``); and a pair-day may have as
    many clicks as its impressions of D plus its tail impressions of D-1 not clicked in that tail.
    Returns the rows of ``events`` only (context rows are dropped), with their columns plus the two above.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    c = F.col
    cols = list(events.columns)
    df = (_row_checks(events, ctr, day_col)
          .withColumn("_key_day", c(day_col)).withColumn("_ctx", F.lit(False)))
    if context is not None:
        df = df.unionByName(context, allowMissingColumns=True)
    main, is_imp, is_clk = ~c("_ctx"), c("event") == "impression", c("event") == "click"
    # Duplicates among rows that passed the row checks. Context rows (the previous day's copies) sort
    # first: any later copy of theirs is a previous-day duplicate; among the day's own rows the first (by
    # time, then a total order on the remaining columns so that reruns keep the same copy) is kept.
    order = [c("_ctx").desc()] + [c(o).asc_nulls_first()
                                  for o in ("ts", "event", "item_id", "keyphrase_id", "position")]
    if "query" in df.columns:
        order.append(c("query").asc_nulls_first())
    w_id = Window.partitionBy("_key_day", "event_id", c("_r1").isNull()).orderBy(*order)
    seen_before = F.max(c("_ctx").cast("int")).over(w_id) == 1  # running max: a context copy sorts first
    df = df.withColumn(
        "_r2",
        F.coalesce(c("_r1"),
                   F.when(main & seen_before, F.lit("duplicate_event_id_prev_day"))
                   .when(F.row_number().over(w_id) > 1, F.lit("duplicate_event_id"))),
    )
    # Per (item, keyphrase) consistency over the day's remaining rows, with the previous day's tail.
    ok = c("_r2").isNull()
    w_pair = Window.partitionBy("_key_day", "item_id", "keyphrase_id")
    w_time = w_pair.orderBy(c("ts"), c("_ctx").desc()).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    n = lambda cond: F.sum(F.when(cond, 1).otherwise(0)).over(w_pair)  # noqa: E731
    imp = n(ok & main & is_imp)
    carry = F.greatest(n(ok & c("_ctx") & is_imp) - n(ok & c("_ctx") & is_clk), F.lit(0))
    last_tail_imp = F.last(F.when(ok & c("_ctx") & is_imp, c("ts")), ignorenulls=True).over(w_time)
    in_window = last_tail_imp.isNotNull() & (last_tail_imp >= c("ts") - _minutes(ctr.attribution_window_minutes))
    df = (df.withColumn("_imp", imp).withColumn("_carry", carry)
          .withColumn("_attr", main & ok & is_clk & (c("_imp") == 0) & in_window))
    df = df.withColumn(
        "_r3",
        F.coalesce(c("_r2"), F.when(main & is_clk & (c("_imp") == 0) & ~c("_attr"), F.lit("click_without_impression"))),
    )
    clk = F.sum(F.when(main & c("_r3").isNull() & is_clk, 1).otherwise(0)).over(w_pair)
    df = df.withColumn(
        "reason",
        F.coalesce(c("_r3"), F.when(main & (clk > c("_imp") + c("_carry")), F.lit("clicks_exceed_impressions"))),
    )
    return (df.where(main)
            .withColumn("attributed", c("_attr") & c("reason").isNull())
            .select(*cols, "reason", "attributed"))


def aggregate_pairs(valid_events, by: tuple[str, ...] = ()):
    """Valid events -> impressions and clicks per (item, keyphrase) (the ``ctr_daily`` columns).

    Spark DataFrame in (``item_id, keyphrase_id, event`` and the ``by`` columns); out: ``*by, item_id,
    keyphrase_id, impressions`` (long), ``clicks`` (long), one row per pair."""
    from pyspark.sql import functions as F

    return valid_events.groupBy(*by, "item_id", "keyphrase_id").agg(
        F.sum(F.when(F.col("event") == "impression", 1).otherwise(0)).cast("long").alias("impressions"),
        F.sum(F.when(F.col("event") == "click", 1).otherwise(0)).cast("long").alias("clicks"),
    )


def label_pairs(pairs, settings: Settings):
    """Window sums -> the ``ctr_labels`` columns (ctr, label) following ``settings.ctr``.

    Spark DataFrame in: ``item_id, keyphrase_id, impressions, clicks``. Out: ``item_id, keyphrase_id,
    impressions, clicks, ctr`` (double, clicks / impressions, 0.0 without impressions), ``label`` (int 0/1:
    ``ctr > ctr.ctr_threshold`` and ``impressions >= ctr.min_impressions``)."""
    from pyspark.sql import functions as F

    c = F.col
    ctr = F.when(c("impressions") > 0, c("clicks") / c("impressions")).otherwise(F.lit(0.0)).cast("double")
    return (
        pairs.withColumn("ctr", ctr)
        .withColumn(
            "label",
            ((c("ctr") > F.lit(float(settings.ctr.ctr_threshold)))
             & (c("impressions") >= F.lit(int(settings.ctr.min_impressions)))).cast("int"),
        )
        .select("item_id", "keyphrase_id", "impressions", "clicks", "ctr", "label")
    )


def _conform_events(df):
    """Cast raw events to the contract's physical types (any integer width is accepted on input)."""
    from pyspark.sql import functions as F

    return (
        df.withColumn("item_id", F.col("item_id").cast("long"))
        .withColumn("keyphrase_id", F.col("keyphrase_id").cast("long"))
        .withColumn("position", F.col("position").cast("int"))
    )


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _n_files(rows: int, settings: Settings) -> int:
    return max(1, math.ceil(rows / settings.spark.target_file_rows))


def _read_parquet(spark, paths: list[str], contract: str, what: str, lake: Lake | None = None):
    """Read parquet partitions (explicit paths: nothing outside them is listed) and check the contract.

    Inputs other tools write (``conform.INPUT_CONTRACTS``; ``lake`` required) go through ``spark.read_input``:
    every file's footer checked first (SchemaError naming the file and the column), lossless differences conformed."""
    from pyspark.errors import AnalysisException

    if contract in conform.INPUT_CONTRACTS:
        from keyphrase_pipeline.core.spark import read_input

        df = read_input(spark, lake, paths, contract, what)
        check_spark_schema(df.schema, contract, where=paths[0] if len(paths) == 1 else f"{what} ({len(paths)} partitions)")
        return df
    try:
        df = spark.read.parquet(*[spark_uri(p) for p in paths])
    except AnalysisException as exc:
        raise DataError(f"cannot read {what} at {', '.join(paths)}: {str(exc).splitlines()[0]}") from None
    check_spark_schema(df.schema, contract, where=paths[0] if len(paths) == 1 else f"{what} ({len(paths)} partitions)")
    return df


def _write_partition(df, target: str, n_files: int, stats: dict | None, sort_cols: tuple[str, ...] = ()) -> None:
    """Write ``df`` as ``target`` atomically (hidden temp dir, then rename), with ``_stats.json`` inside.

    The saved ``_stats.json`` is ``stats`` (not modified) plus ``write_id`` (a fresh uuid4 hex) and
    ``data_fingerprint`` (``dir_fingerprint`` of the data files just written, which the renamed partition keeps)."""
    with atomic_dir(target) as tmp:
        out = df.coalesce(n_files)
        if sort_cols:
            out = out.sortWithinPartitions(*sort_cols)
        out.write.mode("overwrite").parquet(spark_uri(tmp))
        if stats is not None:
            _write_partition_stats(tmp, {**stats, "write_id": uuid.uuid4().hex, "data_fingerprint": dir_fingerprint(tmp)})


def _write_partition_stats(tmp_dir: str, stats: dict) -> None:

    write_text_atomic(layout.partition_stats_path(tmp_dir), json.dumps(stats, indent=2, sort_keys=True, default=str))


def _read_partition_stats(lake: Lake, path: str) -> dict:
    try:
        return lake.read_json(layout.partition_stats_path(path), default={}) or {}
    except Exception:  # a stats file is informative only; never fail a run on it
        return {}


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------
def read_prev_tail(spark, settings: Settings, ds):
    """The previous day's boundary context for day ``ds`` (see :func:`boundary_context`), or None.

    Reads ``raw/events/ds=D-1/`` (that partition path only) with the filter
    ``D 00:00 - max(attribution_window_minutes, clock_skew_minutes) <= ts < D 00:00 + clock_skew_minutes``
    pushed down to the parquet scan, so row groups entirely before the tail are skipped. Returns
    ``(context DataFrame or None, status)`` with status ``"read"``, ``"missing"`` (no raw D-1: nothing to
    attribute to or dedupe against) or ``"disabled"`` (both settings 0). SchemaError when D-1 breaks the
    contract (named by its path).
    """

    from pyspark.sql import functions as F

    ctr = settings.ctr
    span = max(int(ctr.attribution_window_minutes), int(ctr.clock_skew_minutes))
    if span == 0:
        return None, "disabled"
    lake = Lake.from_settings(settings)
    day = ds_str(ds)
    prev = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    src = lake.path("events", ds=prev)
    if not lake.exists(src):
        return None, "missing"
    raw = _read_parquet(spark, [src], "events", f"raw events {prev} (tail read for {day})", lake)
    midnight = F.lit(f"{day} 00:00:00").cast(raw.schema["ts"].dataType)  # constant: pushed to the scan
    tail = raw.where((F.col("ts") >= midnight - _minutes(span))
                     & (F.col("ts") < midnight + _minutes(ctr.clock_skew_minutes)))
    return boundary_context(_conform_events(tail).withColumn("_day", F.to_date(F.lit(prev))), ctr, "_day"), "read"


def aggregate_day(spark, settings: Settings, ds) -> dict:
    """Aggregate one day's raw events into ``ctr_daily/ds=`` (and its quarantine); return its stats.

    Reads ``raw/events/ds=D/`` and the tail of ``raw/events/ds=D-1/`` (:func:`read_prev_tail`): clicks
    just after midnight count on impressions logged just before it, and ids already logged there are
    dropped. The quarantine partition is written (replacing any earlier one; removed when nothing was bad)
    BEFORE the bad-share check, so a day that fails the check can still be inspected. The daily aggregate
    is written only when the check passes. Raises DataError when the raw day is missing or too bad,
    SchemaError when a column is missing or mistyped.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    lake = Lake.from_settings(settings)
    day = ds_str(ds)
    src = lake.path("events", ds=day)
    if not lake.exists(src):
        raise DataError(f"raw events for {day} are missing ({src})")
    t0 = time.perf_counter()
    raw = _conform_events(_read_parquet(spark, [src], "events", f"raw events {day}", lake))
    context, tail_status = read_prev_tail(spark, settings, day)
    tail_rows = 0
    if context is not None:
        context = context.persist(StorageLevel.MEMORY_AND_DISK)  # small: the last minutes of D-1
        tail_rows = context.count()

    classified = classify_events(raw.withColumn("_day", F.to_date(F.lit(day))), settings.ctr, "_day",
                                 context).drop("_day").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # one pass: rows per reason and, for the valid rows, the number of distinct pairs (output size)
        # and the clicks counted on an impression of the previous day
        counts, pairs, attributed = {}, 0, 0
        for r in classified.groupBy("reason").agg(
                F.count("*").alias("n"), F.countDistinct("item_id", "keyphrase_id").alias("p"),
                F.sum(F.col("attributed").cast("int")).alias("a")).collect():
            counts[r["reason"]] = int(r["n"])
            if r["reason"] is None:
                pairs, attributed = int(r["p"]), int(r["a"] or 0)
        rows_in = sum(counts.values())
        valid_rows = counts.pop(None, 0)
        by_reason = {r: counts.get(r, 0) for r in REASONS if counts.get(r, 0)}
        n_bad = sum(by_reason.values())
        share = n_bad / rows_in if rows_in else 0.0

        quarantine = lake.path("quarantine", "events", ds=day)
        if n_bad:
            _write_partition(classified.where(F.col("reason").isNotNull()).drop("attributed"), quarantine,
                             _n_files(n_bad, settings), None)
            log.warning("events %s: quarantined %d of %d rows (%.3f%%): %s", day, n_bad, rows_in, 100 * share,
                        ", ".join(f"{k}={v}" for k, v in by_reason.items()))
        elif lake.exists(quarantine):  # a rerun on corrected input: drop the stale quarantine (atomically)
            with atomic_dir(quarantine):
                pass
        if share > settings.ctr.max_bad_share:
            raise DataError(
                f"raw events for {day}: {n_bad} of {rows_in} rows are bad ({share:.2%} > max_bad_share "
                f"{settings.ctr.max_bad_share:.2%}): {by_reason}; see {quarantine}"
            )

        stats = {
            "ds": day,
            "rows_in": rows_in,
            "rows_valid": valid_rows,
            "rows_quarantined": n_bad,
            "quarantined_by_reason": by_reason,
            "bad_share": share,
            "pairs": pairs,
            "prev_day_tail": tail_status,
            "prev_day_tail_rows": tail_rows,
            "clicks_attributed_prev_day": attributed,
            "attribution_window_minutes": settings.ctr.attribution_window_minutes,
            "clock_skew_minutes": settings.ctr.clock_skew_minutes,
        }
        valid = classified.where(F.col("reason").isNull())
        # by position first (the CTR model's training rows), then the day's aggregate, whose presence marks the
        # day done: a crash between the two recomputes both on the next run
        by_position = aggregate_pairs(valid, by=("position",)).select(
            "item_id", "keyphrase_id", F.col("position").cast("int").alias("position"), "impressions", "clicks")
        _write_partition(by_position, lake.path("ctr_position_daily", ds=day), _n_files(pairs, settings), None,
                         sort_cols=("item_id", "keyphrase_id", "position"))
        daily = aggregate_pairs(valid)
        _write_partition(daily, lake.path("ctr_daily", ds=day), _n_files(pairs, settings), stats,
                         sort_cols=("item_id", "keyphrase_id"))
    finally:
        classified.unpersist()
        if context is not None:
            context.unpersist()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("ctr_daily %s: %d rows in, %d quarantined, %d pairs, %d clicks on D-1 impressions (tail %s, %d rows) "
             "(%.1fs)", day, rows_in, n_bad, pairs, attributed, tail_status, tail_rows, stats["seconds"])
    return stats


def _plan_window(spark, settings: Settings, lake: Lake, day: str, days: list[str], allow: bool):
    """Which days of the window are aggregated now (``computed``: day -> its stats), reused from ``ctr_daily``
    or missing; DataError naming a missing day (unless ``allow``) or when no day at all has input."""
    computed: dict[str, dict] = {}
    reused: list[str] = []
    missing: list[str] = []
    for d in days:
        has_raw = lake.exists(lake.path("events", ds=d))
        has_daily = lake.exists(lake.path("ctr_daily", ds=d))
        if has_raw and (d == day or not has_daily):
            computed[d] = aggregate_day(spark, settings, d)
        elif has_daily and (d != day or allow):
            reused.append(d)  # for ds itself only when its raw is gone and missing days are allowed
        elif allow:
            log.warning("ctr window %s: no events for %s; skipped (allow_missing)", day, d)
            missing.append(d)
        else:
            raise DataError(
                f"raw events for {d} are missing ({lake.path('events', ds=d)}), needed by the "
                f"{settings.ctr.window_days}-day window ending {day}; rerun with --allow-missing "
                f"(KP_CTR__ALLOW_MISSING_DAYS=true) to skip missing days"
            )
    used = sorted([*computed, *reused])
    if not used:
        raise DataError(f"no input day at all in the {settings.ctr.window_days}-day window ending {day}")
    return computed, reused, missing, used


# ---------------------------------------------------------------------------------------------
# the window sum: sliding (yesterday's labels + today - the day that left) or full (every daily aggregate)
# ---------------------------------------------------------------------------------------------
WINDOW_STATE_VERSION = 1  # the layout of ``window_state`` in ctr_labels/ds=D/_stats.json
_PAIR = ("item_id", "keyphrase_id")


def _day_before(day: str) -> str:

    return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()


def plan_window_sum(settings: Settings, lake: Lake, day: str, days: list[str], sources: dict[str, str | None]):
    """Decide how day ``day``'s window sums are computed: ``("sliding", reason, leaving)`` or ``("full", reason,
    None)``; ``reason`` is one sentence for the log and the run stats.

    ``days``: the window (``ds_range(day, window_days)``); ``sources``: ``{d: dir_fingerprint(ctr_daily/ds=d)}``
    for every day of the window whose aggregate is summed (missing days absent). Sliding means
    ``ctr_labels/ds=D-1`` + ``ctr_daily/ds=D`` - ``ctr_daily/ds=L`` with ``L = D - window_days`` (``leaving``:
    L, or None when the state summed no aggregate of L). It is chosen only when all of these hold, else full:

    * ``ctr.sliding_window`` is true;
    * ``ctr_labels/ds=D-1`` exists and its ``_stats.json`` holds a ``window_state`` of this version, for
      ``ds`` = D-1, the same ``window_days`` and the window ``[L, D-1]``;
    * the state's data files are the ones its ``_stats.json`` recorded (``data_fingerprint``);
    * each day ``L+1 .. D-1`` has exactly the aggregate the state summed (same fingerprint, or absent in both);
    * when the state summed L's aggregate, that aggregate is still there unchanged (it is subtracted).

    Reads only small metadata: the state's ``_stats.json`` and two directory listings (the fingerprints of the
    window's aggregates are passed in)."""
    ctr = settings.ctr
    if not ctr.sliding_window:
        return "full", "ctr.sliding_window is false", None
    prev, leaving = _day_before(day), _day_before(days[0])
    state_path = lake.path("ctr_labels", ds=prev)
    if not lake.exists(state_path):
        return "full", f"no state: {partition_name('ctr_labels', prev)} does not exist (first run, or a gap)", None
    st = _read_partition_stats(lake, state_path)
    ws = st.get("window_state")
    if not isinstance(ws, dict) or not isinstance(ws.get("sources"), dict):
        return "full", (f"{partition_name('ctr_labels', prev)} records no window state (its _stats.json is missing or unreadable, "
                        f"or an older version wrote it)"), None
    if ws.get("version") != WINDOW_STATE_VERSION:
        return "full", (f"{partition_name('ctr_labels', prev)} has window state version {ws.get('version')}, "
                        f"not {WINDOW_STATE_VERSION}"), None
    if st.get("window_days") != ctr.window_days:
        return "full", (f"ctr.window_days changed: {partition_name('ctr_labels', prev)} summed {st.get('window_days')} "
                        f"days, now {ctr.window_days}"), None
    if st.get("ds") != prev or st.get("window") != [leaving, prev]:
        return "full", (f"{partition_name('ctr_labels', prev)} records ds {st.get('ds')} and window {st.get('window')}, "
                        f"not {prev} and [{leaving}, {prev}]"), None
    if not st.get("data_fingerprint") or dir_fingerprint(state_path) != st["data_fingerprint"]:
        return "full", f"the data files of {partition_name('ctr_labels', prev)} are not the ones its _stats.json recorded", None
    recorded = ws["sources"]
    for d in days[:-1]:
        was, now = recorded.get(d), sources.get(d)
        if was != now:
            what = ("was missing when the state was built" if was is None else "is missing now" if now is None
                    else "was rewritten after the state was built (a rerun or a backfill)")
            return "full", f"{partition_name('ctr_daily', d)} {what}", None
    if recorded.get(leaving) is None:  # the state summed nothing of L (missing then): nothing to subtract
        return "sliding", (f"{partition_name('ctr_labels', prev)} + {partition_name('ctr_daily', day)} "
                           f"({partition_name('ctr_daily', leaving)} was not in the state); "
                           f"the {len(days) - 1} days in between verified unchanged"), None
    now = dir_fingerprint(lake.path("ctr_daily", ds=leaving))
    if now != recorded[leaving]:
        what = "is gone" if now is None else "was rewritten"
        return "full", (f"{partition_name('ctr_daily', leaving)}, the day leaving the window, {what} since the state was built: "
                        f"it cannot be subtracted"), None
    return "sliding", (f"{partition_name('ctr_labels', prev)} + {partition_name('ctr_daily', day)} - "
                       f"{partition_name('ctr_daily', leaving)}; the {len(days) - 1} "
                       f"days in between verified unchanged"), leaving


def _long_pairs(df, sign: int = 1):
    from pyspark.sql import functions as F

    return df.select(*[F.col(k).cast("long").alias(k) for k in _PAIR],
                     (F.col("impressions").cast("long") * sign).alias("impressions"),
                     (F.col("clicks").cast("long") * sign).alias("clicks"))


def _sum_pairs(df):
    from pyspark.sql import functions as F

    return df.groupBy(*_PAIR).agg(F.sum("impressions").cast("long").alias("impressions"),
                                  F.sum("clicks").cast("long").alias("clicks"))


def full_window_sum(spark, lake: Lake, used: list[str]):
    """The window sums as the sum of the ``ctr_daily`` partitions of ``used`` (explicit paths): one row per pair
    seen in any of them; columns ``item_id, keyphrase_id, impressions, clicks`` (long)."""
    dailies = _read_parquet(spark, [lake.path("ctr_daily", ds=d) for d in used], "ctr_daily", "ctr_daily")
    return _sum_pairs(_long_pairs(dailies))


def sliding_window_sum(spark, lake: Lake, day: str, add_day: bool, leaving: str | None):
    """The window sums of ``day`` from the state: ``ctr_labels/ds=D-1`` (its impressions and clicks) plus
    ``ctr_daily/ds=D`` (when ``add_day``) minus ``ctr_daily/ds=<leaving>`` (when not None); pairs whose
    impressions and clicks are both 0 are dropped (a full sum never has them: every daily row counts at least one
    event). Reads at most 3 partitions. Same columns as :func:`full_window_sum`; exact (integer sums) when
    :func:`plan_window_sum` said ``sliding``."""
    from pyspark.sql import functions as F

    prev = _day_before(day)
    parts = [_long_pairs(_read_parquet(spark, [lake.path("ctr_labels", ds=prev)], "ctr_labels",
                                       f"ctr_labels {prev} (window state)"))]
    if add_day:
        parts.append(_long_pairs(_read_parquet(spark, [lake.path("ctr_daily", ds=day)], "ctr_daily", "ctr_daily")))
    if leaving is not None:
        parts.append(_long_pairs(_read_parquet(spark, [lake.path("ctr_daily", ds=leaving)], "ctr_daily", "ctr_daily"), -1))
    summed = _sum_pairs(reduce(lambda a, b: a.unionByName(b), parts))
    return summed.where((F.col("impressions") != 0) | (F.col("clicks") != 0))


def _label_summary(labels):
    """One row over the labels: pairs, positives, impressions, clicks, min/percentiles/max of impressions, min clicks."""
    from pyspark.sql import functions as F

    return labels.agg(
        F.count("*").alias("pairs"),
        F.coalesce(F.sum("label"), F.lit(0)).alias("positives"),
        F.coalesce(F.sum("impressions"), F.lit(0)).alias("impressions"),
        F.coalesce(F.sum("clicks"), F.lit(0)).alias("clicks"),
        F.min("impressions").alias("min"),
        F.percentile_approx("impressions", [0.5, 0.9, 0.99], 10000).alias("pct"),
        F.max("impressions").alias("max"),
        F.min("clicks").alias("min_clicks"),
    ).first()


def _window_stats(settings: Settings, lake: Lake, row, day: str, days: list[str], computed: dict, reused: list[str],
                  missing: list[str], used: list[str], extra_stats: dict | None) -> dict:
    """The run's stats: input rows and quarantine over the window, pairs, positives, impressions
    distribution (``row``: :func:`_label_summary`), which days were computed/reused/missing, output files."""
    pct = row["pct"] or [None, None, None]
    window_rows_in = window_quarantined = 0
    for d in used:
        s = computed.get(d) or _read_partition_stats(lake, lake.path("ctr_daily", ds=d))
        window_rows_in += int(s.get("rows_in", 0))
        window_quarantined += int(s.get("rows_quarantined", 0))
    by_reason: dict[str, int] = {}
    for s in computed.values():
        for k, v in s["quarantined_by_reason"].items():
            by_reason[k] = by_reason.get(k, 0) + v
    return {
        "ds": day,
        "window_days": settings.ctr.window_days,
        "window": [days[0], days[-1]],
        "ctr_threshold": settings.ctr.ctr_threshold,
        "min_impressions": settings.ctr.min_impressions,
        "rows_in": sum(s["rows_in"] for s in computed.values()),
        "rows_quarantined": sum(s["rows_quarantined"] for s in computed.values()),
        "quarantined_by_reason": by_reason,
        "clicks_attributed_prev_day": sum(int(s.get("clicks_attributed_prev_day", 0)) for s in computed.values()),
        "window_rows_in": window_rows_in,
        "window_rows_quarantined": window_quarantined,
        "pairs": int(row["pairs"]),
        "positives": int(row["positives"]),
        "impressions": int(row["impressions"]),
        "clicks": int(row["clicks"]),
        "impressions_dist": {"min": row["min"], "p50": pct[0], "p90": pct[1], "p99": pct[2], "max": row["max"]},
        "days_used": len(used),
        "days_computed": sorted(computed),
        "days_reused": sorted(reused),
        "days_missing": missing,
        "output_files": _n_files(int(row["pairs"]), settings),
        **(extra_stats or {}),
    }


def build_window(spark, settings: Settings, ds, allow_missing: bool | None = None, extra_stats: dict | None = None) -> dict:
    """Compute ``ctr_labels/ds=`` from the window's daily aggregates; return the run's stats.

    The day ``ds`` itself is always (re)aggregated from raw, so a rerun picks up corrected input.
    Other days reuse their ``ctr_daily`` partition when present, else are computed from raw
    (backfill), else are missing: DataError naming the day, or skipped when ``allow_missing``.

    The window sums come from yesterday's labels, today's aggregate and the aggregate of the day that left
    the window (``sliding``, 3 partitions) when :func:`plan_window_sum` verifies that state, else from every
    daily aggregate of the window (``full``); both give the same integers. The stats record ``window_mode``
    (``sliding`` | ``full``), ``window_reason``, ``partitions_read`` and ``window_state`` (``version`` and
    ``sources``: the fingerprint of each summed daily aggregate, what the next day's run verifies); the
    partition's ``_stats.json`` adds its ``write_id`` and ``data_fingerprint``; ``window_seconds`` (run stats
    only) times the window step (sum, labels, stats, write).

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD.
        DataError: (exit 3) a window day without raw events nor ``ctr_daily`` (unless ``allow_missing``), no
            input day at all, an unreadable partition, or a day over ``ctr.max_bad_share`` (``aggregate_day``).
        SchemaError: (exit 3) raw events, ``ctr_daily`` or the state ``ctr_labels/ds=D-1`` break their contract.
    """
    from pyspark import StorageLevel

    lake = Lake.from_settings(settings)
    day = ds_str(ds)
    allow = settings.ctr.allow_missing_days if allow_missing is None else bool(allow_missing)
    days = ds_range(day, settings.ctr.window_days)
    t0 = time.perf_counter()

    computed, reused, missing, used = _plan_window(spark, settings, lake, day, days, allow)
    t_window = time.perf_counter()
    sources = {d: dir_fingerprint(lake.path("ctr_daily", ds=d)) for d in used}
    mode, reason, leaving = plan_window_sum(settings, lake, day, days, sources)
    if mode == "sliding":
        labels = label_pairs(sliding_window_sum(spark, lake, day, day in used, leaving), settings)
        labels = labels.persist(StorageLevel.MEMORY_AND_DISK)
        row = _label_summary(labels)
        if (row["min"] is not None and row["min"] < 0) or (row["min_clicks"] is not None and row["min_clicks"] < 0):
            # a verified state cannot do this; if it happens the state is wrong: never write negative counts
            labels.unpersist()
            mode, reason = "full", (f"the sliding sums went negative (min impressions {row['min']}, min clicks "
                                    f"{row['min_clicks']}): {partition_name('ctr_labels', _day_before(day))} is inconsistent")
            log.warning("ctr_labels %s: %s; summing the full window", day, reason)
    if mode == "full":
        labels = label_pairs(full_window_sum(spark, lake, used), settings).persist(StorageLevel.MEMORY_AND_DISK)
        row = _label_summary(labels)
    log.info("ctr_labels %s: window sum %s: %s", day, mode, reason)
    try:
        stats = _window_stats(settings, lake, row, day, days, computed, reused, missing, used, extra_stats)
        stats.update({
            "window_mode": mode,
            "window_reason": reason,
            "partitions_read": (1 + (day in used) + (leaving is not None)) if mode == "sliding" else len(used),
            "window_state": {"version": WINDOW_STATE_VERSION, "sources": sources},
        })
        _write_partition(labels, lake.path("ctr_labels", ds=day), stats["output_files"], stats,
                         sort_cols=_PAIR)
    finally:
        labels.unpersist()
    stats["window_seconds"] = round(time.perf_counter() - t_window, 3)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("ctr_labels %s: %d pairs, %d positives, days used %d (computed %d, reused %d, missing %d), window %s "
             "(%d partitions read) in %.1fs", day, stats["pairs"], stats["positives"], len(used), len(computed),
             len(reused), len(missing), mode, stats["partitions_read"], stats["seconds"])
    return stats


def pass_through_sr_labels(spark, settings: Settings, ds) -> dict | None:
    """Validate and dedupe ``raw/sr_labels/ds=`` into ``sr_labels/ds=``; None when there is no input.

    Bad rows (null keys, label not 0/1, null/NaN score, a second row for the same pair) go to
    ``quarantine/sr_labels/ds=``; for duplicates the row with the highest label, then score, is kept.
    The quarantine partition is always rewritten (empty when nothing is bad).

    Raises:
        DataError: (exit 3) unreadable input, or invalid rows (duplicates not counted) above ``ctr.max_bad_share``
            of the input (the quarantine is written, ``sr_labels/ds=`` is not).
        SchemaError: (exit 3) ``raw/sr_labels/ds=`` breaks contract ``sr_input``.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    lake = Lake.from_settings(settings)
    day = ds_str(ds)
    src = lake.path("sr_input", ds=day)
    if not lake.exists(src):
        return None
    c = F.col
    df = _read_parquet(spark, [src], "sr_input", f"search-relevance labels {day}", lake)
    df = (df.withColumn("item_id", c("item_id").cast("long")).withColumn("keyphrase_id", c("keyphrase_id").cast("long"))
          .withColumn("score", c("score").cast("double")).withColumn("label", c("label").cast("int")))
    r1 = (F.when(c("item_id").isNull() | c("keyphrase_id").isNull(), F.lit("null_key"))
          .when(c("label").isNull() | ~c("label").isin(0, 1), F.lit("bad_label"))
          .when(c("score").isNull() | F.isnan("score"), F.lit("bad_score")))
    df = df.withColumn("_r1", r1)
    w = Window.partitionBy("item_id", "keyphrase_id", c("_r1").isNull()).orderBy(c("label").desc(), c("score").desc())
    df = df.withColumn("reason", F.coalesce(c("_r1"), F.when(F.row_number().over(w) > 1, F.lit("duplicate_pair"))))
    df = df.drop("_r1").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r["reason"]: int(r["n"]) for r in df.groupBy("reason").agg(F.count("*").alias("n")).collect()}
        rows_in = sum(counts.values())
        kept = counts.pop(None, 0)
        by_reason = {r: counts.get(r, 0) for r in SR_REASONS if counts.get(r, 0)}
        n_bad = sum(by_reason.values())
        _write_partition(df.where(c("reason").isNotNull()), lake.path("quarantine", "sr_labels", ds=day),
                         _n_files(n_bad, settings), None)
        # duplicates are expected in merged label feeds; only invalid rows count against the limit
        n_invalid = n_bad - by_reason.get("duplicate_pair", 0)
        if rows_in and n_invalid / rows_in > settings.ctr.max_bad_share:
            raise DataError(f"search-relevance labels for {day}: {n_invalid} of {rows_in} rows invalid "
                            f"({n_invalid / rows_in:.2%} > max_bad_share): {by_reason}")
        stats = {"rows_in": rows_in, "rows": kept, "rows_quarantined": n_bad, "quarantined_by_reason": by_reason}
        _write_partition(df.where(c("reason").isNull()).select("item_id", "keyphrase_id", "score", "label"),
                         lake.path("sr_labels", ds=day), _n_files(kept, settings), stats,
                         sort_cols=("item_id", "keyphrase_id"))
    finally:
        df.unpersist()
    log.info("sr_labels %s: %d rows kept of %d (%s)", day, kept, rows_in, by_reason or "none quarantined")
    return stats


def run(settings: Settings, ds, allow_missing: bool | None = None, spark=None) -> dict:
    """Compute the CTR labels (and pass search-relevance labels through) for logical date ``ds``.

    Returns the run's stats (also in ``ctr_labels/ds=/_stats.json`` and ``runs/ds=/ctr_labels.json``).
    ``allow_missing`` overrides ``settings.ctr.allow_missing_days``; ``spark`` defaults to
    ``keyphrase_pipeline.core.spark.get_spark(settings, "ctr-labels")``.

    Search-relevance labels are processed first: when they fail, no CTR labels are computed for the day;
    when the CTR window then fails, the day's new ``sr_labels`` stay written.

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD.
        DataError: (exit 3) raw events of ``ds`` (or of a window day, unless ``allow_missing``) missing or
            unreadable, no input day in the window, or a bad-row share above ``ctr.max_bad_share`` (events, or
            invalid search-relevance rows).
        SchemaError: (exit 3) ``events``, ``sr_input`` or ``ctr_daily`` break their contract.

    Spark's own failures (a write error, a lost executor) are not KPErrors: ``kp`` exit 1.
    """
    day = ds_str(ds)
    if spark is None:
        from keyphrase_pipeline.core.spark import get_spark

        spark = get_spark(settings, "ctr-labels")
    t0 = time.perf_counter()
    sr = pass_through_sr_labels(spark, settings, day)
    stats = build_window(spark, settings, day, allow_missing=allow_missing, extra_stats={"sr_labels": sr})
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    Lake.from_settings(settings).write_run_stats(day, STAGE, stats)
    return stats


def read_ctr_labels(spark, settings: Settings, ds):
    """The CTR labels of ``ds`` as a Spark DataFrame (contract ``ctr_labels`` checked).

    Raises DataError (exit 3) when absent or unreadable, SchemaError (exit 3) when the contract is broken,
    ConfigError (exit 2) when ``ds`` is not a date."""
    lake = Lake.from_settings(settings)
    path = lake.path("ctr_labels", ds=ds_str(ds))
    if not lake.exists(path):
        raise DataError(f"no CTR labels for {ds_str(ds)} at {path}: run `kp ctr-labels --ds {ds_str(ds)}` first")
    return _read_parquet(spark, [path], "ctr_labels", "ctr_labels")


# ---------------------------------------------------------------------------------------------
# command line: `kp ctr-labels` and `spark-submit jobs/ctr_labels.py`
# ---------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD (the window ends on this day)")
    parser.add_argument("--allow-missing", action="store_true", default=None,
                        help="skip window days with no raw events instead of failing (settings.ctr.allow_missing_days)")


def main(settings: Settings, args) -> int:
    """``kp ctr-labels``: ``run`` for ``--ds``; prints one JSON line (ds, pairs, positives, rows_in, rows_quarantined,
    days_used, days_computed, days_missing, window_mode, seconds) and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    stats = run(settings, args.ds, allow_missing=args.allow_missing)
    keys = ("ds", "pairs", "positives", "rows_in", "rows_quarantined", "days_used", "days_computed", "days_missing",
            "window_mode", "seconds")
    print(json.dumps({k: stats[k] for k in keys}, default=str))
    return 0
