"""docs/PERFORMANCE.md's scale tables and cost model, generated from ``bench/results/scale.json``.

``bench/scale.py`` measures every daily stage at several catalog sizes; this script turns its result file
into the tables docs/PERFORMANCE.md shows (between the ``<!-- scale:begin -->`` / ``<!-- scale:end -->``
markers), so the doc cannot drift from the committed figures (``tests/bench/test_scale_report.py`` checks it):

1. per stage and size, day 1 (first run) wall seconds, with the cores used, driver/worker peak RSS and Spark
   tasks at the largest size, the growth exponent and day 2's share of day 1's cost;
2. the Spark JVM start paid per daily run;
3. a cost model for a production catalog (``TARGET``: 20M items, 1M keyphrases, 30 days of logs) on a cluster.

The cost model, stated so it can be checked:

* each CPU stage's CPU seconds are fitted as ``fixed + per_item x items`` through the two largest sizes
  measured (day 2, the incremental daily run, for the daily cost; day 1 for the first run, the backfill) and
  extrapolated to ``TARGET["items"]``; the CTR stage's first run aggregates every day of the window, so its
  day-1 fit (measured with the run's ``window_days``, 7) is scaled by ``TARGET["window_days"]`` / that window
  for the first-run column; its daily cost (the sliding window: one new day) does not depend on the window;
  keyphrases and searches grow with items as ``kp synth`` grows them
  (``synth.resolve_scale``), which gives 2M keyphrases at 20M items, twice the target's, so keyphrase-bound
  stages are over- rather than under-estimated. A stage whose time exponent between the two largest sizes is
  above 1.1 is marked: a linear fit underestimates it;
* stages that run on GPUs in production are sized from ``bench/results/gpu_check.json`` (an H200) instead:
  the judge at ``pairs.daily_budget`` pairs a day with a 7-8B model taken as ``JUDGE_7B_SLOWDOWN`` x the
  measured 135M-shape forward pass; training at its row caps (``training_rows_at_target``: the student's rows
  of every task of ``train.label_mix`` at ``train.max_llm_labels``, ``train.kd_max_pairs``,
  ``train.max_ctr_positives``, ``train.max_sr_labels``) for ``train.bi_epochs`` epochs (the
  cross-encoder: ``train.epochs`` over the labels) at the measured
  student and cross-encoder steps/s (batch 32, fp32);
* the GPU stages get ``GPU_WINDOW_HOURS`` of the ``TARGET["hours"]`` and the CPU stages the rest; hours of
  work are turned into executor cores and GPUs at ``PARALLEL_EFFICIENCY`` (Spark task skew, shuffles,
  start-up; data-parallel training is assumed to scale the same way, which was not measured).

    .venv/bin/python bench/scale_report.py            # print the markdown
    .venv/bin/python bench/scale_report.py --write    # replace the block in docs/PERFORMANCE.md
    .venv/bin/python bench/scale_report.py --merge a.json b.json --write   # runs of different sizes -> scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "scale.json"
GPU_RESULTS = ROOT / "bench" / "results" / "gpu_check.json"
DOC = ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- scale:begin (bench/scale_report.py --write) -->", "<!-- scale:end -->"

TARGET = {"items": 20_000_000, "keyphrases": 1_000_000, "window_days": 30, "hours": 4.0}
GPU_STAGES = ("label", "train_cross", "train_bi")  # evaluate is modelled on CPU, as measured (its encoding would move to GPUs)
JUDGE_7B_SLOWDOWN = 50.0  # a 7-8B judge does ~50x the work per prompt of the 135M shape gpu_check times
PARALLEL_EFFICIENCY = 0.6
GPU_WINDOW_HOURS = 1.5  # of TARGET["hours"]: judge and training; the CPU stages get the rest


def _lines(doc: dict) -> dict:
    """(stage, items, day) -> line, for lines that ran (no error, not skipped)."""
    return {(ln["stage"], ln["items"], ln["day"]): ln for ln in doc["lines"]
            if ln.get("stage") and not ln.get("error") and not ln.get("skipped")}


def _fmt(v, nd=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def linear_fit(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float]:
    """(fixed, per_unit) of the line through (x0, y0) and (x1, y1); the slope is floored at 0 and the fixed part
    at 0 (measurement noise can make a flat stage's slope slightly negative). Raises ValueError when x0 == x1."""
    if x1 == x0:
        raise ValueError("two different sizes are needed for a fit")
    slope = max(0.0, (y1 - y0) / (x1 - x0))
    return max(0.0, y1 - slope * x1), slope


def stage_table(doc: dict) -> list[str]:
    """Markdown rows: per stage, day-1 wall seconds per size, cores used / peak RSS / Spark tasks at the largest
    size, the time exponent (smallest to largest), the largest size's day-2 / day-1 wall ratio and flags."""
    by = _lines(doc)
    s = doc["summary"]
    sizes = sorted({k[1] for k in by})
    big = sizes[-1] if sizes else None
    head = ("| stage | " + " | ".join(f"day 1 wall s, {n:,} items" for n in sizes)
            + " | cores used | driver / worker peak RSS MB | Spark tasks | exponent | day 2 / day 1 |")
    out = [head, "|" + "---|" * (len(sizes) + 6)]
    flagged = set(s.get("flags", {}).get("time_exponent_above_1.1", []))
    mem_flag = set(s.get("flags", {}).get("memory_grows_with_items", []))
    stages = [st for st in _stage_order(doc) if any((st, n, 1) in by for n in sizes)]
    for st in stages:
        walls = [_fmt(by[(st, n, 1)]["wall_s"]) if (st, n, 1) in by else "–" for n in sizes]
        b = by.get((st, big, 1), {})
        x = s.get("exponents", {}).get(st)
        marks = ("  **time > 1.1**" if st in flagged else "") + ("  **memory grows**" if st in mem_flag else "")
        frac = s.get("day2_fraction", {}).get(st)
        skipped = any(ln.get("stage") == st and ln.get("day") == 2 and ln.get("skipped") for ln in doc["lines"])
        out.append(f"| `{st}` | " + " | ".join(walls)
                   + f" | {_fmt(b.get('cores_used'), 2)} | {_fmt(b.get('peak_rss_mb'), 0)} / "
                     f"{_fmt(b.get('worker_peak_rss_mb'), 0)} | {_fmt(b.get('spark_tasks'))} | {_fmt(x, 2)}{marks} | "
                   + ("not run (no training)" if skipped and frac is None else _fmt(frac, 2)) + " |")
    total = [sum(by[(st, n, 1)]["wall_s"] for st in stages if (st, n, 1) in by) for n in sizes]
    out.append("| **day 1, all stages** | " + " | ".join(f"**{_fmt(t)}**" for t in total) + " | | | | | |")
    return out


def _stage_order(doc: dict) -> list[str]:
    seen: list[str] = []
    for ln in doc["lines"]:
        st = ln.get("stage")
        if st and st != "synth" and st not in seen:
            seen.append(st)
    return seen


def jvm_table(doc: dict) -> list[str]:
    """Markdown rows: per size and day, the Spark stages' summed ``jvm_start_s`` against the day's wall time."""
    out = ["| items | day | Spark stages | JVM start s (sum) | day's wall s | share |", "|---|---|---|---|---|---|"]
    by = _lines(doc)
    for n in sorted({k[1] for k in by}):
        for day in (1, 2):
            lines = [ln for (st, m, d), ln in by.items() if m == n and d == day]
            if not lines:
                continue
            spark = [ln for ln in lines if ln.get("jvm_start_s")]
            jvm = sum(ln["jvm_start_s"] for ln in spark)
            wall = sum(ln["wall_s"] for ln in lines)
            out.append(f"| {n:,} | {day} | {len(spark)} | {_fmt(jvm)} | {_fmt(wall)} | {jvm / wall:.1%} |")
    return out


def _memory_cell(mem_at: dict | None, stage: str, pipe_at: dict | None = None) -> str:
    """The cost model's memory column for ``stage``: per side, the largest peak at ``TARGET["items"]`` over day 1 and
    day 2, from ``memory_at_target`` of ``stage_memory.json`` (the stage alone, or its item-bound part,
    ``MEMORY_ALIASES``) and of the pipeline's own run (``pipe_at``: ``pipeline_memory`` of scale.json); "not
    measured" with the bound from the code when neither has it."""
    if not mem_at and not pipe_at:
        return "–"
    alias = MEMORY_ALIASES.get(stage, stage)
    recs = [r for r in ((mem_at or {}).get(f"{alias}@day1"), (mem_at or {}).get(f"{alias}@day2")) if r]
    pipe = [r for r in ((pipe_at or {}).get(f"{stage}@day1"), (pipe_at or {}).get(f"{stage}@day2")) if r]
    if not recs and not pipe:
        return f"not measured: {NOT_MEASURED_BOUNDS.get(stage, 'no item-bound structure')}"
    cell = " / ".join(_fmt(max(r.get(name) or 0 for r in recs + pipe), 0) for _, name in SIDES)  # the larger, per side
    src = ([f"`{alias}` alone"] if recs and alias != stage else []) + (["in the pipeline"] if pipe and recs else [])
    return cell + (f" ({', '.join(src)})" if src else "")


MEMORY_ALIASES = {"evaluate": "evaluate_catalog"}  # the stage's item-bound part, measured alone
NOT_MEASURED_BOUNDS = {  # the Spark and label stages bench/stage_memory.py does not run: what bounds them, from the code
    "ctr_labels": "Spark; the JVM <= `spark.driver_memory` + off-heap, the `kp` Python collects counts",
    "select_pairs": "Spark as `ctr_labels`; the `kp` Python holds the day's chosen pairs (`pairs.daily_budget` rows)",
    "merge_labels": "the day's judged pairs and their items' CTR labels (`lake.rows_where`)",
    "export": "the model only",
}


def cost_model(doc: dict, gpu: dict | None, settings=None, mem: dict | None = None) -> tuple[list[str], dict]:
    """Markdown rows and the figures of the production cost model (see the module docstring).

    ``gpu``: ``gpu_check.json`` (its first run) or None (GPU stages are then left out); ``settings``: the
    project's settings (default: ``Settings()``) for the judge budget, label cap, epochs and batch size; ``mem``:
    ``stage_memory.json`` or None, for the memory column (peak MB at ``TARGET["items"]``, ``memory_at_target``).
    Returns (rows, {"cpu_core_hours_daily", "cpu_core_hours_backfill", "gpu_hours_daily", "executor_cores"})."""
    from keyphrase_pipeline.core.settings import Settings

    settings = settings or Settings()
    by = _lines(doc)
    sizes = sorted({k[1] for k in by})
    n = TARGET["items"]
    mem_at = memory_at_target(mem, settings) if mem else None
    pipe = pipeline_memory(doc)
    pipe_at = memory_at_target(pipe, settings) if pipe else None
    rows = ["| stage | per 1k items, CPU s (daily) | fixed CPU s | daily CPU core-h at 20M | first-run CPU core-h at 20M "
            "| peak memory at 20M, MB: Python / JVM / workers | note |",
            "|---|---|---|---|---|---|---|"]
    daily_h = backfill_h = 0.0
    if len(sizes) < 2:
        return rows + ["| (needs two sizes) | | | | | | |"], {}
    x0, x1 = sizes[-2], sizes[-1]
    window = doc.get("settings", {}).get("window_days")
    pairs = doc["summary"].get("exponents_pairs", {})
    for st in _stage_order(doc):
        if st in GPU_STAGES:
            continue
        fits = {}
        for day in (1, 2):
            a, b = by.get((st, x0, day)), by.get((st, x1, day))
            if a and b:
                fits[day] = linear_fit(x0, a["cpu_s"], x1, b["cpu_s"])
        if not fits:
            continue
        daily = fits.get(2, fits.get(1))
        d_h = (daily[0] + daily[1] * n) / 3600
        b_h = (fits[1][0] + fits[1][1] * n) / 3600 if 1 in fits else None
        if st == "ctr_labels" and b_h is not None and window:  # the first run aggregates every day of the window
            b_h *= TARGET["window_days"] / window
        daily_h += d_h
        backfill_h += b_h or 0.0
        x = (pairs.get(st) or {}).get(f"{x0}-{x1}")
        note = "time exponent > 1.1 between the two largest sizes: see the text" if x and x > 1.1 else ""
        rows.append(f"| `{st}` | {_fmt(daily[1] * 1000, 2)} | {_fmt(daily[0])} | {_fmt(d_h, 2)} | {_fmt(b_h, 2)} "
                    f"| {_memory_cell(mem_at, st, pipe_at)} | {note} |")
    rows.append(f"| **CPU stages** | | | **{_fmt(daily_h, 1)}** | **{_fmt(backfill_h, 1)}** | | |")
    figures = {"cpu_core_hours_daily": round(daily_h, 2), "cpu_core_hours_backfill": round(backfill_h, 2)}
    gpu_h = 0.0
    if gpu:
        t = settings.train
        judge_pps = gpu["judge_prompts_per_s_bf16"] / JUDGE_7B_SLOWDOWN
        judge_h = settings.pairs.daily_budget / judge_pps / 3600
        train_rows = training_rows_at_target("train_bi", settings)
        steps = t.bi_epochs * train_rows / t.batch_size
        bi_h = steps / gpu["student_steps_per_s_b32_fp32"] / 3600
        cross_h = t.epochs * t.max_llm_labels / t.batch_size / gpu["cross_steps_per_s_b32_fp32"] / 3600
        gpu_h = judge_h + (bi_h + cross_h) / max(1, t.retrain_every_days)
        def host(stage: str) -> str:  # the worker's host (Python) memory at 20M items, from the pipeline's run
            rec = (pipe_at or {}).get(f"{stage}@day1")
            return _fmt(rec["Python"], 0) if rec else "–"

        rows += ["", "| GPU stage (one H200; PROXY throughputs: random-weight shapes timed by bench/gpu_check.py, "
                 "not the project's code) | throughput | daily GPU hours | host memory at 20M, MB (the worker's "
                 "Python; the memory tables below) |", "|---|---|---|---|",
                 f"| judge, {settings.pairs.daily_budget:,} pairs/day, 7-8B model | {judge_pps:,.0f} prompts/s "
                 f"| {judge_h:.2f} | {host('label')} (the simulated annotator's process; a real judge's: see below) |",
                 f"| student, {t.bi_epochs:g} epoch(s) x {train_rows:,.0f} rows (`{t.label_mix}` at the row caps) "
                 f"| {gpu['student_steps_per_s_b32_fp32']:.1f} steps/s (batch {t.batch_size}) | {bi_h:.2f} "
                 f"| {host('train_bi')} |",
                 f"| cross-encoder, {t.epochs:g} epochs x {t.max_llm_labels:,} labels | "
                 f"{gpu['cross_steps_per_s_b32_fp32']:.1f} steps/s | {cross_h:.2f} | {host('train_cross')} |",
                 f"| **GPU, daily** (training every {t.retrain_every_days} day(s)) | | **{gpu_h:.2f}** | |"]
        figures["gpu_hours_daily"] = round(gpu_h, 2)
    cpu_window = TARGET["hours"] - (GPU_WINDOW_HOURS if gpu else 0.0)
    cores = math.ceil(daily_h / (cpu_window * PARALLEL_EFFICIENCY))
    figures["executor_cores"] = cores
    text = (f"Daily CPU work {daily_h:.1f} core-hours in {cpu_window:g} h of the {TARGET['hours']:g} h, at "
            f"{PARALLEL_EFFICIENCY:.0%} parallel efficiency: **{cores} executor cores** (e.g. "
            f"{math.ceil(cores / 8)} executors x 8 cores); the first run (every item embedded) {backfill_h:.1f} core-hours")
    if gpu:
        gpus = math.ceil(gpu_h / (GPU_WINDOW_HOURS * PARALLEL_EFFICIENCY))
        figures["gpus"] = gpus
        text += (f". GPU work {gpu_h:.1f} GPU-hours in {GPU_WINDOW_HOURS:g} h: **{gpus} H200s** if data-parallel "
                 f"training scales at {PARALLEL_EFFICIENCY:.0%} "
                 "(not measured here; the throughputs are the proxy's, not the project's own code on a GPU)")
    rows += ["", text + "."]
    return rows, figures


# ---- memory (bench/stage_memory.py) --------------------------------------------------------------------------
STAGE_MEMORY = ROOT / "bench" / "results" / "stage_memory.json"
MEM_BEGIN, MEM_END = "<!-- memory:begin (bench/scale_report.py --write) -->", "<!-- memory:end -->"
SIDES = (("python_peak_rss_mb", "Python"), ("jvm_peak_rss_mb", "JVM"), ("worker_peak_rss_mb", "workers"))


def _units(key: str, items: int, settings, top_k: int = 20) -> tuple[float, float] | None:
    """(units the stage holds at ``items``, the most it ever holds: its bound) for the stages whose Python peak has a
    bound set by a setting: recommend's search batch (items; day 2 reads the earlier recommendations in row groups of
    batch x top_k rows), publish's bucket (rows = items x top_k); None for the others."""
    sv = settings.serve
    if key.startswith("recommend@"):  # day 2 reads the earlier recommendations a row group (batch x top_k rows) at a time
        return min(items, sv.recommend_batch_rows), sv.recommend_batch_rows
    if key.startswith("publish@"):
        return min(items * top_k, sv.publish_bucket_rows), sv.publish_bucket_rows
    return None


CARRY_BYTES_PER_ITEM = 40  # recommend --changed-only: a bucket's int64 ids to carry while setdiff1d runs + a 1-byte mask
# (numpy's peak, tracemalloc: 25 bytes an item with no item embedded today, ~36 with some)


KEYPHRASE_OVERHEAD_BYTES = 100  # a keyphrase's id and text in the id map, beside its 4 x dim vector bytes
JVM_OFFHEAP_MB = 1024  # a JVM's RSS beyond its heap (metaspace, code cache, direct buffers, thread stacks)
INDEX_STAGES = ("index", "recommend", "lookup")  # the processes that load the keyphrase index


def _extra_mb(key: str, items: int, settings, mem_settings: dict | None = None) -> tuple[float, str]:
    """(MB, why) a stage adds between the run measured (``items``, its largest size, with ``mem_settings``'
    keyphrases and dim) and ``TARGET`` that a fit over items cannot see, from the code: the keyphrase index at
    ``TARGET["keyphrases"]`` and ``serve.dim`` for the stages that load it; recommend --changed-only's carry bucket
    (``CARRY_BYTES_PER_ITEM`` x items of a bucket, at most ``serve.recommend_carry_bucket_items``)."""
    stage = key.split("@")[0]
    mb, why = 0.0, []
    ms = mem_settings or {}
    if stage in INDEX_STAGES and ms.get("keyphrases"):
        now = (4 * ms.get("serve_dim", 16) + KEYPHRASE_OVERHEAD_BYTES) * ms["keyphrases"]
        then = (4 * settings.serve.dim + KEYPHRASE_OVERHEAD_BYTES) * TARGET["keyphrases"]
        mb += (then - now) / 2 ** 20
        why.append(f"{TARGET['keyphrases']:,} keyphrases at {settings.serve.dim}-d {(then - now) / 2 ** 20:,.0f} MB")
    rows_now = (ms.get("training_rows") or {}).get(key)
    if rows_now is not None and ms.get("bytes_per_training_row"):
        then = training_rows_at_target(stage, settings)
        add = max(0.0, then - rows_now) * ms["bytes_per_training_row"] / 2 ** 20
        mb += add
        why.append(f"{then:,} training rows at {ms['bytes_per_training_row']:,.0f} bytes (training_memory.json) "
                   f"{add:,.0f} MB")
    if key == "recommend@day2":
        cap = settings.serve.recommend_carry_bucket_items
        carry = CARRY_BYTES_PER_ITEM * (min(TARGET["items"], cap) - min(items, cap)) / 2 ** 20
        mb += carry
        why.append(f"carry bucket {carry:,.0f} MB")
    return mb, " + ".join(why)


def _jvm_cap_mb(settings) -> float:
    """The JVM's RSS bound: ``spark.driver_memory`` (its heap, ``-Xmx``; local mode runs the executors in it) plus
    ``JVM_OFFHEAP_MB``."""
    text = str(settings.spark.driver_memory).strip().lower()
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2}
    return float(text[:-1]) * units[text[-1]] + JVM_OFFHEAP_MB if text[-1] in units else float(text) / 2 ** 20 + JVM_OFFHEAP_MB


MEMORY_BOUNDS = {  # stage@day -> (what its memory holds, the bound as a formula of the settings)
    "embed_items@day1": ("Spark: the driver JVM (executors run in it in local mode) and one ONNX session + one Arrow "
                         "batch per Python worker; the `kp` Python holds counts only",
                         "JVM <= `spark.driver_memory` + off-heap; workers: cores x (ONNX session + "
                         "`spark.sql.execution.arrow.maxRecordsPerBatch` rows)"),
    "embed_keyphrases@day1": ("as `embed_items`", "as `embed_items`"),
    "embed_items@day2": ("as day 1; the reuse join (text hashes) is a Spark join, spilled by Spark",
                         "as day 1"),
    "index@day1": ("every keyphrase vector and its id map: grows with keyphrases, not items",
                   "(4 x `serve.dim` + ~100) bytes x keyphrases"),
    "index@day2": ("as day 1", "as day 1"),
    "recommend@day1": ("the index, one search batch and its output rows",
                       "index + per-item bytes x `serve.recommend_batch_rows`"),
    "recommend@day2": ("as day 1 + the carry bucket's ids and seen mask",
                       "index + batch + ~40 bytes x `serve.recommend_carry_bucket_items`"),
    "publish@day1": ("one input batch, then one bucket and its sort",
                     "per-row bytes x `serve.publish_bucket_rows`"),
    "publish@day2": ("as day 1", "as day 1"),
    "lookup@day2": ("one bucket file's footer and one or two row groups",
                    "footer (`serve.publish_bucket_rows` / `serve.lookup_row_group_rows` row groups) + 2 x "
                    "`serve.lookup_row_group_rows` rows"),
    "ctr_labels@day1": ("Spark: the window's events aggregated in the JVM (executors run in it in local mode); the `kp` "
                        "Python collects counts", "JVM <= `spark.driver_memory` + off-heap; Python: counts only"),
    "ctr_labels@day2": ("as day 1: one new day in, one out (the sliding window)", "as day 1"),
    "select_pairs@day1": ("Spark as `ctr_labels`; the `kp` Python and one PySpark worker hold the day's chosen pairs",
                          "JVM as `ctr_labels`; Python: `pairs.daily_budget` rows"),
    "select_pairs@day2": ("as day 1", "as day 1"),
    "label@day1": ("the judge (the simulated annotator here) and one shard of the day's pairs per process",
                   "`pairs.daily_budget` / shards rows + the judge's model (on GPUs in production)"),
    "label@day2": ("as day 1", "as day 1"),
    "merge_labels@day1": ("the day's judged pairs and their items' CTR labels (`lake.rows_where`)",
                          "`pairs.daily_budget` rows"),
    "merge_labels@day2": ("as day 1", "as day 1"),
    "train_cross@day1": ("the cross-encoder, its optimizer and the LLM labels with their texts",
                         "model + `train.max_llm_labels` rows"),
    "train_bi@day1": ("the student, its optimizer, its tasks' rows with their texts (`label_mix`)",
                      "model + `train.max_llm_labels` x 2 (llm, kd) + `train.kd_max_pairs` + "
                      "`train.max_ctr_positives` (+ `train.max_sr_labels` with sr) rows"),
    "evaluate@day1": ("champion and challenger, the LLM labels' held-out split, seeded samples",
                      "models + `train.max_llm_labels` rows + `review.topk_items` + `review.topk_keyphrases`"),
    "export@day1": ("the model being exported to ONNX", "the model only"),
    "export@day2": ("nothing to export (not a training day)", "–"),
    "evaluate_catalog@day2": ("the seeded samples and one row group",
                              "`review.topk_items` + `review.topk_keyphrases` rows + one row group"),
}


PIPELINE_STAGES = ("ctr_labels", "select_pairs", "label", "merge_labels", "train_cross", "train_bi", "evaluate",
                   "export")  # the stages bench/stage_memory.py does not run alone: measured inside bench/scale.py
TRAINING_MEMORY = ROOT / "bench" / "results" / "training_memory.json"


def training_rows_at_target(stage: str, settings) -> int:
    """The training rows ``stage`` holds at its caps (a large catalog fills them): ``train_cross`` and ``evaluate``
    the LLM labels (``train.max_llm_labels``); ``train_bi`` one dataset row per task row of ``train.label_mix``:
    llm and kd each the LLM labels, kd also ``train.kd_max_pairs`` teacher-scored pairs, ctr
    ``train.max_ctr_positives``, sr ``train.max_sr_labels``; 0 for the other stages."""
    t = settings.train
    if stage in ("train_cross", "evaluate"):
        return t.max_llm_labels
    if stage != "train_bi":
        return 0
    mix = set(t.label_mix.split("+"))
    return (t.max_llm_labels * (("llm" in mix) + ("kd" in mix)) + t.kd_max_pairs * ("kd" in mix)
            + t.max_ctr_positives * ("ctr" in mix) + t.max_sr_labels * ("sr" in mix))


def pipeline_memory(doc: dict, training: dict | None = None) -> dict | None:
    """The ``PIPELINE_STAGES`` lines of a scale.json that carry the per-side peaks (``python_peak_rss_mb``,
    ``jvm_peak_rss_mb``, ``worker_peak_rss_mb``), shaped as a stage_memory.json (``lines``, ``summary`` by
    ``stage_memory.summarize``, ``sizes``), for ``memory_table`` and ``memory_at_target``; its ``settings`` hold the
    training rows at the largest size (``rows_in``) and ``training``'s ``bytes_per_training_row``
    (``training_memory.json``; default: the committed file), so the trainers are carried to their caps. None when
    the file predates the per-side peaks."""
    lines = [ln for ln in doc["lines"] if ln.get("stage") in PIPELINE_STAGES and ln.get("day") and "error" not in ln
             and not ln.get("skipped") and all(side in ln for side, _ in SIDES)]
    if not lines:
        return None
    sizes = sorted({ln["items"] for ln in lines})
    if training is None and TRAINING_MEMORY.exists():
        training = json.loads(TRAINING_MEMORY.read_text())
    rows = {f"{ln['stage']}@day{ln['day']}": ln.get("rows_in") or 0 for ln in lines
            if ln["items"] == sizes[-1] and ln["stage"] in ("train_cross", "train_bi", "evaluate")}
    return {"lines": lines, "summary": _bench_module("stage_memory").summarize(lines), "sizes": sizes,
            "created_at": doc.get("created_at"), "ok": doc["summary"].get("ok"),
            "settings": {"training_rows": rows,
                         "bytes_per_training_row": (training or {}).get("bytes_per_training_row")}}


def _bench_module(name: str):
    """``bench/<name>.py`` as the module ``bench.<name>`` (the repository root is on sys.path, above)."""
    import importlib

    return importlib.import_module(f"bench.{name}")


DEMO_ONLY_GROWTH = {  # stage -> why its measured growth is the demo's, not the stage's: the largest peak is kept
    "label": "what grows is the simulated annotator's synthetic world, loaded whole (the demo's judge only); a real "
             "judge's process holds one shard of pairs and its client, the model on the GPU workers",
}


def memory_at_target(mem: dict, settings=None) -> dict:
    """Per stage@day and side: the peak MB at ``TARGET["items"]``. Where ``_units`` knows the bound, the per-unit bytes
    are fitted between the smallest and the largest size measured (units held at each) and the Python peak is
    carried to the bound; elsewhere the largest size's peak, when the stage is flat (``growth_largest`` <= 1.5), else
    a linear extrapolation (marked); a stage ``DEMO_ONLY_GROWTH`` names keeps its largest Python peak, and says why.
    Returns ``{key: {"python": MB, "jvm": MB, "workers": MB, "how": text}}``."""
    from keyphrase_pipeline.core.settings import Settings

    settings = settings or Settings()
    by = {(ln["stage"], ln["day"], ln["items"]): ln for ln in mem["lines"] if "error" not in ln and ln.get("day")}
    out = {}
    for key, rec in mem["summary"].items():
        stage, day = key.split("@day")
        sizes = rec["sizes"]
        if len(sizes) < 2:
            continue
        lo, hi = by[(stage, int(day), sizes[0])], by[(stage, int(day), sizes[-1])]
        res, how = {}, []
        for side, name in SIDES:
            res[name] = hi[side]
            growth = rec.get(f"{side}_growth_largest")
            if side == "jvm_peak_rss_mb" and hi[side] > 0:  # the heap is capped: it grows toward -Xmx, then spills
                res[name] = max(hi[side], _jvm_cap_mb(settings))
                how.append("JVM: `spark.driver_memory` + off-heap")
            elif stage in DEMO_ONLY_GROWTH and side == "python_peak_rss_mb":
                how.append(f"{name}: not carried, {DEMO_ONLY_GROWTH[stage]}")
            elif growth is not None and growth > 1.5:
                res[name] = hi[side] + (hi[side] - lo[side]) / (sizes[-1] - sizes[0]) * (TARGET["items"] - sizes[-1])
                how.append(f"{name}: linear extrapolation, grows")
        u = _units(key, 0, settings)
        if u is not None:
            (u0, _), (u1, _) = _units(key, sizes[0], settings), _units(key, sizes[-1], settings)
            per = max(0.0, (hi["python_peak_rss_mb"] - lo["python_peak_rss_mb"]) / (u1 - u0)) if u1 > u0 else 0.0
            t_units, _ = _units(key, TARGET["items"], settings)
            res["Python"] = hi["python_peak_rss_mb"] + per * (t_units - u1)
            res["per_unit_bytes"] = per * 2 ** 20
            how = [h for h in how if not h.startswith("Python")] + [
                f"bound: {per * 2 ** 20:,.0f} bytes x {t_units:,.0f} (setting)"]
        extra, why = _extra_mb(key, sizes[-1], settings, mem.get("settings"))
        if extra:
            res["Python"] += extra
            how.append(why)
        res["how"] = "; ".join(how) or "flat: the largest size's peak"
        out[key] = res
    return out


def memory_table(mem: dict, settings=None, target: bool = True, stages: tuple[str, ...] | None = None) -> list[str]:
    """Markdown rows: per stage@day (those of ``stages`` when given), the Python / JVM / workers peak MB at each size,
    the growth over 10x the items and from the previous size to the largest, what the memory holds and its bound,
    and (``target``) the peak at ``TARGET["items"]`` (``memory_at_target``)."""
    sizes = mem["sizes"]
    at = memory_at_target(mem, settings) if target else {}
    by = {(ln["stage"], ln["day"], ln["items"]): ln for ln in mem["lines"] if "error" not in ln and ln.get("day")}
    head = ("| stage, day | " + " | ".join(f"{n:,} items: Python / JVM / workers MB" for n in sizes)
            + " | growth over 10x items (largest side) | growth, largest size over the previous | what it holds; bound "
            + ("| at 20M items: Python / JVM / workers MB |" if target else "|"))
    out = [head, "|" + "---|" * (len(sizes) + 4 + int(target))]
    for key, rec in mem["summary"].items():
        stage, day = key.split("@day")
        if stages is not None and stage not in stages:
            continue
        cells = []
        for n in sizes:
            ln = by.get((stage, int(day), n))
            cells.append(" / ".join(_fmt(ln[s], 0) for s, _ in SIDES) if ln else "–")
        growths = [rec.get(f"{s}_growth_10x") for s, _ in SIDES if rec.get(s) and max(rec[s]) > 0]
        growths = [g for g in growths if g is not None]
        g = max(growths) if growths else None
        last = None
        if len(sizes) >= 2 and (stage, int(day), sizes[-1]) in by and (stage, int(day), sizes[-2]) in by:
            a, b = by[(stage, int(day), sizes[-2])], by[(stage, int(day), sizes[-1])]
            last = max((b[s] / a[s] for s, _ in SIDES if a[s] > 0), default=None)
        holds, bound = MEMORY_BOUNDS.get(key, ("", ""))
        t = at.get(key, {})
        target_cell = " / ".join(_fmt(t.get(n), 0) for _, n in SIDES) + (f" ({t['how']})" if t.get("how") else "")
        out.append(f"| `{stage}`, day {day} | " + " | ".join(cells) + f" | {_fmt(g, 2)}{'' if g is None or g <= 1.5 else ' **> 1.5**'}"
                   f" | {_fmt(last, 2)} | {holds}; {bound} |" + (f" {target_cell} |" if target else ""))
    return out


SMALL_BUCKETS = ROOT / "bench" / "results" / "stage_memory_small_buckets.json"


def render_memory(mem: dict, small: dict | None = None, pipe: dict | None = None) -> str:
    """The memory block (without the markers) for ``mem`` (stage_memory.json), ``small`` (the same bench with
    small buckets, ``stage_memory_small_buckets.json``, or None) and ``pipe`` (``pipeline_memory`` of scale.json:
    the stages that run only inside the pipeline, or None)."""
    st = mem.get("settings", {})
    intro = (f"Generated by `bench/scale_report.py` from `bench/results/stage_memory.json` ({mem.get('created_at', '?')}; "
             f"`bench/stage_memory.py`: each stage alone as its `kp` process; {st.get('keyphrases', 0):,} keyphrases "
             f"held fixed; encoder: {st.get('encoder')}; {st.get('master')} on {st.get('cpus')} cores, "
             f"`spark.driver_memory` {st.get('spark_driver_memory')}; "
             f"{'complete' if mem.get('ok') else 'INCOMPLETE: a stage failed'}; total "
             f"{mem.get('wall_s_total', 0) / 60:.0f} min). Peak RSS per side: the `kp` Python, its Spark JVM, PySpark's "
             "Python workers (summed). Growth: the peak at 10x the smallest size over the smallest, the largest of the "
             "three sides; flat when at most 1.5. At 20M items: see the bound column.")
    parts = [intro, "", *memory_table(mem)]
    if small:
        from keyphrase_pipeline.core.settings import Settings

        ov = small.get("settings", {}).get("overrides", {})
        parts += ["", "The same bench with buckets small enough to be many at every size (`bench/results/"
                  "stage_memory_small_buckets.json`, " + ", ".join(f"`{k}` {v:,}" if isinstance(v, int) else f"`{k}` {v}"
                                                               for k, v in ov.items())
                  + f"; {small.get('created_at', '?')}): the stages the settings bound", "",
                  *memory_table(small, Settings().with_overrides(**ov), target=False, stages=("recommend", "publish",
                                                                                              "lookup"))]
    if pipe:
        bpr = pipe["settings"].get("bytes_per_training_row")
        parts += ["", f"The stages that run only inside the pipeline, from `bench/results/scale.json` "
                  f"({pipe.get('created_at', '?')}; `bench/scale.py`: the whole DAG on a synthetic world with the real "
                  f"MiniLM-L6 encoder, keyphrases and searches growing with the items, so the stages bound by them grow "
                  f"too; {'complete' if pipe.get('ok') else 'INCOMPLETE'}). At 20M items the JVM is capped as above, and "
                  "the trainers' and evaluate's rows are carried to their caps"
                  + (f" at {bpr:,.0f} bytes a row (`bench/results/training_memory.json`: the rows with their texts "
                     "and the trainer's datasets, measured without a model)" if bpr else "") + ":", "",
                  *memory_table(pipe)]
    return "\n".join(parts) + "\n"


def render(doc: dict, gpu: dict | None, mem: dict | None = None) -> str:
    """The markdown block (without the markers) for ``doc`` (scale.json), ``gpu`` (gpu_check run or None) and
    ``mem`` (stage_memory.json or None: the cost model's memory column)."""
    st = doc.get("settings", {})
    s = doc["summary"]
    intro = (f"Generated by `bench/scale_report.py` from `bench/results/scale.json` ({doc.get('created_at', '?')}; "
             f"sizes {', '.join(f'{n:,}' for n in doc['sizes'])} items; CTR window {st.get('window_days')} days; "
             f"{st.get('train_steps')} training steps; retrain every {st.get('retrain_every_days') or 1} day(s); "
             f"{st.get('master')} on {st.get('cpus')} cores; "
             f"{'complete' if s.get('ok') else 'INCOMPLETE: ' + str(s.get('interrupted') or 'a stage failed')}; "
             f"total {s.get('wall_s_total', 0) / 60:.0f} min). Exponent: log(wall ratio) / log(size ratio), day 1, "
             f"smallest to largest size.")
    loads = [ln.get("load_1m") for ln in doc["lines"] if ln.get("load_1m")]
    if loads:
        peak = max(max(x) for x in loads)
        intro += f" Machine load (1-minute average) during the stages: up to {peak:.1f} on {st.get('cpus')} cores."
    rows, _ = cost_model(doc, gpu, mem=mem)
    parts = [intro, "", *stage_table(doc), "", "Spark JVM start per daily run (`jvm_start_s`, summed over the "
             "day's Spark stages):", "", *jvm_table(doc), "",
             f"Cost model for {TARGET['items']:,} items, {TARGET['keyphrases']:,} keyphrases, "
             f"{TARGET['window_days']} days of logs, daily run in {TARGET['hours']:g} hours (assumptions: "
             "`bench/scale_report.py`'s docstring):", "", *rows]
    return "\n".join(parts) + "\n"


def load_memory(path: Path = STAGE_MEMORY) -> dict | None:
    """``stage_memory.json`` (``bench/stage_memory.py``'s committed result), or None."""
    return json.loads(path.read_text()) if path.exists() else None


def load_gpu(path: Path = GPU_RESULTS) -> dict | None:
    """The first run of ``gpu_check.json`` that ran on CUDA, or None."""
    if not path.exists():
        return None
    runs = json.loads(path.read_text()).get("runs", [])
    return next((r for r in runs if r.get("device") == "cuda"), None)


def replace_block(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with what lies between ``begin`` and ``end`` replaced by ``block``; ValueError without markers."""
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers {begin!r} / {end!r} not found")
    return text[: i + len(begin)] + "\n" + block + text[j:]


def merge_results(docs: list[dict]) -> dict:
    """One scale.json from several ``bench/scale.py`` runs with the same settings (e.g. the small sizes in one
    run, the largest in another): their lines concatenated, the summary recomputed (``scale.summarize``) over all
    of them, each run's own summary kept under ``runs``. Raises ValueError when the runs' settings differ (other
    than nothing) or a (stage, items, day) appears twice."""
    scale = _bench_module("scale")
    first = docs[0]["settings"]
    keys: set = set()
    lines: list[dict] = []
    for d in docs:
        if d["settings"] != first:
            raise ValueError(f"runs with different settings: {d['settings']} vs {first}")
        for ln in d["lines"]:
            k = (ln.get("stage"), ln.get("items"), ln.get("day"))
            if k in keys:
                raise ValueError(f"{k} measured twice")
            keys.add(k)
            lines.append(ln)
    summary = scale.summarize(lines)
    sizes = sorted({n for d in docs for n in d["sizes"]})
    summary.update({"bench": "scale", "quick": False, "sizes": sizes,
                    "ok": all(d["summary"].get("ok") for d in docs),
                    "interrupted": next((d["summary"].get("interrupted") for d in docs if d["summary"].get("interrupted")), None),
                    "wall_s_total": round(sum(d["summary"].get("wall_s_total", 0) for d in docs), 1)})
    return {"lines": lines, "summary": summary, "sizes": sizes, "created_at": max(d["created_at"] for d in docs),
            "settings": first, "runs": [{"sizes": d["sizes"], "created_at": d["created_at"], **{
                k: d["summary"].get(k) for k in ("ok", "interrupted", "wall_s_total")}} for d in docs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--merge", nargs="+", default=None, metavar="RUN_JSON",
                   help="merge these scale.py result files into --results first (same settings, different sizes)")
    p.add_argument("--write", action="store_true", help=f"replace the block in {DOC.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.merge:
        merged = merge_results([json.loads(Path(f).read_text()) for f in args.merge])
        Path(args.results).write_text(json.dumps(merged, indent=1) + "\n")
    mem = load_memory()
    block = render(json.loads(Path(args.results).read_text()), load_gpu(), mem)
    small = json.loads(SMALL_BUCKETS.read_text()) if SMALL_BUCKETS.exists() else None
    pipe = pipeline_memory(json.loads(Path(args.results).read_text()))
    mem_block = render_memory(mem, small, pipe) if mem else None
    if args.write:
        text = replace_block(DOC.read_text(), block)
        if mem_block:
            text = replace_block(text, mem_block, MEM_BEGIN, MEM_END)
        DOC.write_text(text)
    else:
        print(block)
        if mem_block:
            print(mem_block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
