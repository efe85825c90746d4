"""Benchmark of Stage 1 (keyphrase_pipeline/stages/ctr_labels.py): sliding window vs full-window sum vs naive recompute.

A synthetic search log (default 10M events over 60 days, written directly with numpy/pyarrow: Zipf-like
pair popularity, per-pair CTR from a Beta distribution, ~0.2% bad rows) goes into a temporary lake.
The SparkSession is created ONCE, before anything is timed: the JVM start (~10-20 s, the same fixed cost
for every method) is excluded from every figure and from both sides of every ratio. Daily aggregates are
built for days 1..59 (untimed), then in that session, median of ``--repeat`` runs each:

* ``day31_s`` / ``day60_s``: end-to-end ``ctr_labels.run`` (the day's aggregation from raw + the window step
  + stats and writes) for day 31 (state: day 30's labels) and day 60 (state: day 59's), both sliding:
  ``day60_vs_day31`` ~ 1 means the day's cost is flat in the history kept;
* ``full_s``: ``ctr_labels.run`` for day 60 with ``ctr.sliding_window=false`` (the sum of the window's 30
  daily aggregates, what the job did before);
* ``naive_s``: the same 30-day labels recomputed from the window's raw events (same validation rules, per
  day), written the same way;
* ``window_step_sliding_s`` / ``window_step_full_s``: the window step alone inside those runs (the run stats'
  ``window_seconds``: verify the state, sum, label, stats, write), i.e. the Spark jobs that differ.

``ratio_sliding_vs_naive`` = naive_s / day60_s and ``ratio_full_vs_naive`` = naive_s / full_s (end-to-end
daily run vs recompute; speed-ups, higher is better); ``ratio_window_step_*_vs_naive`` the same with the
window step alone. The sliding, full and naive label sets are checked equal. Prints ONE JSON line and writes
``bench/results/ctr_labels.json`` (``ctr_labels_quick.json`` with ``--quick``; ``--name N``: ``N.json``).
``--quick``: ~1M events. Each timed figure is the median of ``--repeat`` runs after untimed warm-ups.
``--boundary``: only the cost of the day-boundary rules (``boundary_cost``: the previous day's tail read vs a
full cross-window event-id dedupe) on the window plus one day; writes ``bench/results/ctr_boundary.json``.

    .venv/bin/python bench/ctr_labels.py --quick
    .venv/bin/python bench/ctr_labels.py --boundary --repeat 3
    .venv/bin/python bench/ctr_labels.py --events 30000000 --name ctr_labels_30m   # 500k events a day
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_range, spark_uri  # noqa: E402
from keyphrase_pipeline.core.settings import load_settings  # noqa: E402
from keyphrase_pipeline.stages import ctr_labels  # noqa: E402


def generate(settings, start: dt.date, days: int, events: int, seed: int = 1) -> int:
    """Write ``events`` raw events over ``days`` days; return the number written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    lake = Lake.from_settings(settings)
    n_items, n_kps = max(1000, events // 50), max(1000, events // 100)
    n_pairs = max(10_000, events // 5)
    pair_item = rng.integers(0, n_items, n_pairs).astype(np.int64)
    pair_kp = rng.integers(0, n_kps, n_pairs).astype(np.int64)
    weight = 1.0 / np.arange(1, n_pairs + 1) ** 0.8
    weight /= weight.sum()
    pair_ctr = rng.beta(0.6, 12.0, n_pairs)  # mean ~0.05: both sides of the threshold
    per_day = events // days
    total = 0
    for i in range(days):
        day = (start + dt.timedelta(days=i)).isoformat()
        n_imp = int(per_day / (1 + pair_ctr.mean()))
        pairs = rng.choice(n_pairs, size=n_imp, p=weight)
        clicked = pairs[rng.random(n_imp) < pair_ctr[pairs]]
        idx = np.concatenate([pairs, clicked])
        is_click = np.concatenate([np.zeros(n_imp, bool), np.ones(len(clicked), bool)])
        n = len(idx)
        position = rng.integers(1, 21, n).astype(np.int32)
        bad = rng.random(n) < 0.001
        position[bad] = 0  # bad_position
        ids = np.char.add(f"{day}-", np.arange(n).astype(str))
        dup = np.flatnonzero(rng.random(n) < 0.001)
        ids[dup] = ids[np.maximum(dup - 1, 0)]  # duplicate_event_id
        secs = rng.integers(0, 86_400_000_000, n)
        table = pa.table({
            "event_id": pa.array(ids.tolist(), pa.string()),
            "ts": pa.array(np.datetime64(day, "us") + secs.astype("timedelta64[us]"), pa.timestamp("us")),
            "item_id": pa.array(pair_item[idx]),
            "keyphrase_id": pa.array(pair_kp[idx]),
            "event": pa.array(np.where(is_click, "click", "impression").tolist(), pa.string()),
            "position": pa.array(position),
        })
        target = lake.path("events", ds=day)
        os.makedirs(target, exist_ok=True)
        pq.write_table(table, f"{target}/part-00000.parquet")
        total += n
    return total


def naive_labels(spark, settings, ds: str, out_dir: str, n_files: int) -> None:
    """The 30-day labels straight from the window's raw events: no daily aggregates."""
    from pyspark.sql import functions as F

    lake = Lake.from_settings(settings)
    days = ds_range(ds, settings.ctr.window_days + 1)  # + the day before: its tail is the first day's context
    raw = (spark.read.option("basePath", spark_uri(lake.path("events")))
           .parquet(*[spark_uri(lake.path("events", ds=d)) for d in days]))
    raw = ctr_labels._conform_events(raw).withColumn("ds", F.to_date(F.col("ds").cast("string")))
    context = ctr_labels.boundary_context(raw, settings.ctr, "ds")
    window = raw.where(F.col("ds") >= F.to_date(F.lit(days[1])))
    valid = ctr_labels.classify_events(window, settings.ctr, "ds", context).where("reason IS NULL")
    labels = ctr_labels.label_pairs(ctr_labels.aggregate_pairs(valid), settings)
    with atomic_dir(out_dir) as tmp:
        labels.coalesce(n_files).sortWithinPartitions("item_id", "keyphrase_id") \
            .write.mode("overwrite").parquet(spark_uri(tmp))


def boundary_cost(spark, settings, days: list[str], repeat: int) -> dict:
    """What the day-boundary rules cost on the last of ``days`` (all generated): the day's aggregation with
    the previous day's tail read (default) and without it (``attribution_window_minutes=0``), the tail read
    alone, and the full cross-window dedupe it replaces: the day's event ids against every event id of the
    ``len(days) - 1`` days before it (a left-semi join on raw ``event_id`` columns)."""
    lake = Lake.from_settings(settings)
    day, history = days[-1], days[:-1]
    no_tail = settings.with_overrides(**{"ctr.attribution_window_minutes": 0})
    def ids(ds_list):
        return spark.read.parquet(*[spark_uri(lake.path("events", ds=d)) for d in ds_list]).select("event_id")

    seen = {}

    def full_dedupe():
        seen["n"] = ids([day]).join(ids(history).distinct(), "event_id", "left_semi").count()

    ctr_labels.aggregate_day(spark, settings, day)  # warm-up (untimed)
    return {
        "day": day,
        "events_day": spark.read.parquet(spark_uri(lake.path("events", ds=day))).count(),
        "aggregate_day_s": round(timed(lambda: ctr_labels.aggregate_day(spark, settings, day), repeat), 3),
        "aggregate_day_no_tail_s": round(timed(lambda: ctr_labels.aggregate_day(spark, no_tail, day), repeat), 3),
        "tail_read_s": round(timed(lambda: ctr_labels.read_prev_tail(spark, settings, day)[0].count(), repeat), 3),
        "tail_rows": ctr_labels.read_prev_tail(spark, settings, day)[0].count(),
        "full_window_dedupe_s": round(timed(full_dedupe, repeat), 3),
        "full_window_dedupe_ids_read": ids(history).count(),
        "full_window_dedupe_hits": seen["n"],
        "attribution_window_minutes": settings.ctr.attribution_window_minutes,
    }


def timed_run(fn, repeat: int) -> tuple[float, list]:
    """Median seconds of ``repeat`` calls of ``fn`` and the list of what each call returned."""
    times, results = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), results


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1M events instead of 10M")
    ap.add_argument("--events", type=int, default=None, help="raw events in total (default 10M; --quick 1M)")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--name", default=None, help="result file name under bench/results/ (default: ctr_labels, "
                    "ctr_labels_quick with --quick, ctr_boundary with --boundary), e.g. for another --events size")
    ap.add_argument("--keep", default=None, help="keep the lake in this directory (default: a temp dir, removed)")
    ap.add_argument("--boundary", action="store_true",
                    help="only the day-boundary cost (boundary_cost) on window+1 days at the same events/day; "
                         "writes bench/results/ctr_boundary.json")
    args = ap.parse_args(argv)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    if args.boundary:  # same events per day as the full run, only the window and the day after it
        events, args.days = events * (args.window + 1) // args.days, args.window + 1
    else:
        assert args.days >= 2 * args.window, "need --days >= 2 * --window"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kp-bench-ctr-"))
    settings = load_settings(lake_root=str(root / "lake"),
                             spark={"master": args.master, "driver_memory": "4g", "shuffle_partitions": 8,
                                    "conf": {"spark.ui.showConsoleProgress": "false"}},
                             ctr={"window_days": args.window})
    start = dt.date(2026, 1, 1)
    day = lambda k: (start + dt.timedelta(days=k - 1)).isoformat()  # noqa: E731  (1-based)
    try:
        t0 = time.perf_counter()
        n_events = generate(settings, start, args.days, events)
        gen_s = time.perf_counter() - t0

        from keyphrase_pipeline.core.spark import get_spark

        spark = get_spark(settings, "bench-ctr-labels")
        if args.boundary:
            result = {"bench": "ctr_boundary", "events": n_events, "days": args.days, "generate_s": round(gen_s, 1),
                      **boundary_cost(spark, settings, [day(k) for k in range(1, args.days + 1)], args.repeat),
                      "repeat": args.repeat, "master": spark.sparkContext.master, "spark": spark.version,
                      "cores": os.cpu_count()}
            return _save(result, args.name or "ctr_boundary")
        t0 = time.perf_counter()
        for k in range(1, args.days):  # the history: daily aggregates of days 1..days-1
            ctr_labels.aggregate_day(spark, settings, day(k))
        history_s = time.perf_counter() - t0

        full_settings = settings.with_overrides(**{"ctr.sliding_window": False})
        d_early, d_late = day(args.window + 1), day(args.days)

        def run(d, s=settings, want=None):
            stats = ctr_labels.run(s, d, spark=spark)
            assert want is None or stats["window_mode"] == want, (d, stats["window_mode"], stats["window_reason"])
            return stats

        # untimed: day 30 (the first state: a full sum, no labels for day 29), which also warms Spark up
        first = run(day(args.window), want="full")
        # day 31 slides on day 30's labels; reruns of day 31 keep that state (day 31's own aggregate is not in it)
        early_s, early = timed_run(lambda: run(d_early, want="sliding"), args.repeat)
        # day 59 has no state (day 58 never ran): full, untimed; then day 60 slides on it
        run(day(args.days - 1), want="full")
        late_s, late = timed_run(lambda: run(d_late, want="sliding"), args.repeat)
        sliding_copy = str(root / "sliding_labels")
        shutil.copytree(Lake.from_settings(settings).path("ctr_labels", ds=d_late), sliding_copy)
        full_s, full = timed_run(lambda: run(d_late, full_settings, want="full"), args.repeat)
        naive_dir = str(root / "naive" / f"ds={d_late}")
        naive_s = timed(lambda: naive_labels(spark, settings, d_late, naive_dir, late[-1]["output_files"]), args.repeat)

        full_df = ctr_labels.read_ctr_labels(spark, settings, d_late)
        sliding_df = spark.read.parquet(spark_uri(sliding_copy))
        naive = spark.read.parquet(spark_uri(naive_dir))

        def same(a, b):
            return a.count() == b.count() and a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()

        med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
        step_sliding, step_full = med(late, "window_seconds"), med(full, "window_seconds")
        result = {
            "bench": "ctr_labels",
            "events": n_events,
            "days": args.days,
            "window_days": args.window,
            "events_per_day": n_events // args.days,
            "jvm_start": "excluded: one SparkSession created before any timing, shared by every method",
            "day31_s": round(early_s, 3),
            "day60_s": round(late_s, 3),
            "day60_vs_day31": round(late_s / early_s, 3),
            "full_s": round(full_s, 3),
            "naive_s": round(naive_s, 3),
            "window_step_sliding_s": round(step_sliding, 3),
            "window_step_full_s": round(step_full, 3),
            # the rest of a run: the day's aggregation from raw (+ its previous-day tail), sr labels, run stats
            "rest_of_run_sliding_s": round(statistics.median(r["seconds"] - r["window_seconds"] for r in late), 3),
            "ratio_sliding_vs_naive": round(naive_s / late_s, 2),
            "ratio_full_vs_naive": round(naive_s / full_s, 2),
            "ratio_window_step_sliding_vs_naive": round(naive_s / step_sliding, 2),
            "ratio_window_step_full_vs_naive": round(naive_s / step_full, 2),
            "ratio_sliding_vs_full": round(full_s / late_s, 2),
            "partitions_read_sliding": late[-1]["partitions_read"],
            "partitions_read_full": full[-1]["partitions_read"],
            "window_mode_day30": first["window_mode"],
            "labels_equal_sliding_full": bool(same(sliding_df, full_df)),
            "labels_equal_sliding_naive": bool(same(sliding_df, naive)),
            "labels_equal_full_naive": bool(same(full_df, naive)),
            "pairs": late[-1]["pairs"],
            "positives": late[-1]["positives"],
            "rows_quarantined_day60": late[-1]["rows_quarantined"],
            "history_build_s": round(history_s, 1),
            "generate_s": round(gen_s, 1),
            "repeat": args.repeat,
            "master": spark.sparkContext.master,
            "spark": spark.version,
            "cores": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "quick": bool(args.quick),
            # earlier keys, kept for comparison with older results
            "incremental_s": round(late_s, 3),
            "speedup": round(naive_s / late_s, 2),
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return _save(result, args.name or ("ctr_labels_quick" if args.quick else "ctr_labels"))


def _save(result: dict, name: str) -> dict:
    out = REPO / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
