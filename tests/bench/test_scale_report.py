"""bench/scale_report.py: the tables and the production cost model docs/PERFORMANCE.md shows, from a
scale.json. Synthetic result files; no pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport import load_bench

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, file: str):
    return load_bench(file.removesuffix(".py"), name, register=True)


@pytest.fixture(scope="module")
def report():
    return _load("bench_scale_report", "scale_report.py")


@pytest.fixture(scope="module")
def scale():
    return _load("bench_scale_for_report", "scale.py")


def _line(stage, items, day, wall, cpu, jvm=None, **kw):
    return {"stage": stage, "items": items, "day": day, "wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall,
            "peak_rss_mb": 500.0, "worker_peak_rss_mb": 100.0, "spark_tasks": 2, "jvm_start_s": jvm,
            "load_1m": [1.0, 2.0], **kw}


def _doc(scale, lines):
    summary = scale.summarize(lines)
    summary.update({"ok": True, "wall_s_total": 600.0})
    return {"lines": lines, "summary": summary, "sizes": sorted({ln["items"] for ln in lines}),
            "created_at": "2026-11-30T00:00:00+00:00",
            "settings": {"window_days": 7, "train_steps": 40, "retrain_every_days": None, "master": "local[*]",
                         "cpus": 2}}


GPU = {"judge_prompts_per_s_bf16": 5000.0, "student_steps_per_s_b32_fp32": 40.0, "cross_steps_per_s_b32_fp32": 80.0}


def test_linear_fit(report):
    assert report.linear_fit(1000, 12.0, 2000, 22.0) == pytest.approx((2.0, 0.01))
    assert report.linear_fit(1000, 12.0, 2000, 11.0) == pytest.approx((11.0, 0.0))  # noise: no negative slope
    with pytest.raises(ValueError):
        report.linear_fit(5, 1.0, 5, 2.0)


def test_cost_model_extrapolates_cpu_stages_linearly_and_sizes_gpu_stages_from_gpu_check(report, scale):
    from keyphrase_pipeline.core.settings import Settings

    lines = [
        # CTR: day 2 (daily) 10 s fixed + 1 ms per item; day 1 (first run) 30 s + 4 ms per item
        _line("ctr_labels", 1000, 1, 40.0, 34.0, jvm=12.0), _line("ctr_labels", 10000, 1, 80.0, 70.0, jvm=12.0),
        _line("ctr_labels", 1000, 2, 20.0, 11.0, jvm=12.0), _line("ctr_labels", 10000, 2, 30.0, 20.0, jvm=12.0),
        # training runs on GPUs in production: left out of the CPU sum
        _line("train_bi", 1000, 1, 100.0, 180.0), _line("train_bi", 10000, 1, 100.0, 190.0),
        {"stage": "train_bi", "items": 1000, "day": 2, "skipped": True, "reason": "not a training day"},
    ]
    s = Settings().with_overrides(**{"pairs.daily_budget": 1000, "train.max_llm_labels": 32_000, "train.epochs": 1.0,
                                     "train.bi_epochs": 1.0, "train.batch_size": 32})
    rows, fig = report.cost_model(_doc(scale, lines), GPU, s)
    daily_h = (10.0 + 0.001 * 20_000_000) / 3600
    # the first run aggregates every day of the window: measured with 7 days, the target keeps 30
    backfill_h = (30.0 + 0.004 * 20_000_000) / 3600 * 30 / 7
    assert fig["cpu_core_hours_daily"] == pytest.approx(daily_h, abs=0.01)
    assert fig["cpu_core_hours_backfill"] == pytest.approx(backfill_h, abs=0.01)
    judge_h = 1000 / (5000.0 / report.JUDGE_7B_SLOWDOWN) / 3600
    bi_h = report.training_rows_at_target("train_bi", s) / 32 / 40.0 / 3600  # the student at its row caps
    cross_h = 32_000 / 32 / 80.0 / 3600
    assert fig["gpu_hours_daily"] == pytest.approx(judge_h + bi_h + cross_h, abs=0.01)
    window = report.TARGET["hours"] - report.GPU_WINDOW_HOURS
    assert fig["executor_cores"] == -(-daily_h // (window * report.PARALLEL_EFFICIENCY))
    assert fig["gpus"] == -(-fig["gpu_hours_daily"] // (report.GPU_WINDOW_HOURS * report.PARALLEL_EFFICIENCY))
    assert not any("train_bi" in r for r in rows[:4])  # a GPU stage is not in the CPU table
    # the GPU table has the workers' host memory column (from scale.json's per-side peaks: none in this doc)
    assert any("host memory at 20M" in r for r in rows) and any(r.startswith("| student,") and r.endswith("| – |")
                                                                 for r in rows)


def test_render_tables_and_flags(report, scale):
    lines = [_line("ctr_labels", 1000, 1, 40.0, 34.0, jvm=12.0), _line("ctr_labels", 10000, 1, 80.0, 70.0, jvm=11.0),
             _line("embed_items", 1000, 1, 10.0, 18.0, jvm=13.0), _line("embed_items", 10000, 1, 150.0, 290.0, jvm=13.0),
             _line("embed_items", 10000, 2, 15.0, 20.0, jvm=13.0)]
    block = report.render(_doc(scale, lines), None)
    assert "| `embed_items` | 10.0 | 150.0 |" in block and "**time > 1.1**" in block  # 15x time for 10x items
    assert "| `ctr_labels` | 40.0 | 80.0 |" in block
    assert "| 10,000 | 1 | 2 | 24.0 | 230.0 | 10.4% |" in block  # JVM start summed over the day's Spark stages
    assert "| 0.10 |" in block  # embed_items' day 2 / day 1 at the largest size
    assert "up to 2.0 on 2 cores" in block


def test_replace_block(report):
    text = f"a\n{report.BEGIN}\nold\n{report.END}\nb\n"
    assert report.replace_block(text, "new\n") == f"a\n{report.BEGIN}\nnew\n{report.END}\nb\n"
    with pytest.raises(ValueError):
        report.replace_block("no markers", "x")


def test_merge_results_recomputes_the_summary_over_both_runs(report, scale):
    small = _doc(scale, [_line("ctr_labels", 1000, 1, 40.0, 34.0)])
    big = _doc(scale, [_line("ctr_labels", 10000, 1, 80.0, 70.0)])
    merged = report.merge_results([small, big])
    assert merged["sizes"] == [1000, 10000] and len(merged["runs"]) == 2
    assert merged["summary"]["exponents"]["ctr_labels"] == pytest.approx(0.301, abs=1e-3)  # log10(2) per decade
    with pytest.raises(ValueError, match="measured twice"):
        report.merge_results([small, small])
    other = {**big, "settings": {**big["settings"], "train_steps": 4}}
    with pytest.raises(ValueError, match="different settings"):
        report.merge_results([small, other])


def test_performance_doc_holds_the_tables_generated_from_the_committed_results(report):
    """docs/PERFORMANCE.md's scale block is exactly what the committed bench/results/scale.json (and gpu_check.json)
    give: a doc figure cannot drift from the file it cites (regenerate with bench/scale_report.py --write)."""
    import json

    doc = (REPO / "docs" / "PERFORMANCE.md").read_text()
    mem = report.load_memory()
    block = report.render(json.loads((REPO / "bench" / "results" / "scale.json").read_text()), report.load_gpu(), mem)
    assert report.replace_block(doc, block) == doc
    assert "| `embed_items` |" in block and "executor cores" in block
    # the memory block and the cost model's memory column come from bench/results/stage_memory.json (issue 32)
    assert mem is not None and mem["sizes"] == [10_000, 100_000, 300_000] and mem["ok"]
    small = json.loads(report.SMALL_BUCKETS.read_text())
    pipe = report.pipeline_memory(json.loads((REPO / "bench" / "results" / "scale.json").read_text()))
    mem_block = report.render_memory(mem, small, pipe)
    assert report.replace_block(doc, mem_block, report.MEM_BEGIN, report.MEM_END) == doc
    # the pipeline-only stages, JVM apart, from scale.json; the trainers at their caps from training_memory.json
    assert pipe is not None and "| `train_bi`, day 1 |" in mem_block and "| `ctr_labels`, day 1 |" in mem_block
    assert pipe["settings"]["bytes_per_training_row"] == json.loads(report.TRAINING_MEMORY.read_text())[
        "bytes_per_training_row"] and "bytes a row" in mem_block
    assert "peak memory at 20M, MB" in block and "| `recommend`, day 2 |" in mem_block
    # the small-bucket run did carry bucket by bucket at the largest size (not one bucket, as the defaults do there)
    carry = [ln["result"]["carry_buckets"] for ln in small["lines"] if ln["stage"] == "recommend" and ln["day"] == 2]
    assert carry[-1] > 1 and small["settings"]["overrides"]["serve.recommend_carry_bucket_items"] == 50_000


def _mem_line(stage, items, day, python, jvm=0.0, workers=0.0):
    return {"stage": stage, "items": items, "day": day, "python_peak_rss_mb": python, "jvm_peak_rss_mb": jvm,
            "worker_peak_rss_mb": workers}


def test_memory_at_target_carries_bounded_stages_to_their_setting_and_extrapolates_growing_ones(report):
    sm = load_bench("stage_memory", "bench_stage_memory")
    from keyphrase_pipeline.core.settings import Settings

    s = Settings().with_overrides(**{"serve.publish_bucket_rows": 1_000_000})
    lines = [  # publish: 10k items = 200k rows, 100k items = 2M rows (one 1M-row bucket): 100 MB per 800k rows
        _mem_line("publish", 10_000, 1, 200.0), _mem_line("publish", 100_000, 1, 300.0),
        # a Spark stage whose JVM stays under its heap cap: flat, its largest peak kept
        _mem_line("embed_items", 10_000, 1, 160.0, jvm=1000.0, workers=900.0),
        _mem_line("embed_items", 100_000, 1, 161.0, jvm=1300.0, workers=930.0),
        # a stage that grows 3x over 10x: extrapolated linearly, and flagged
        _mem_line("evaluate_catalog", 10_000, 2, 100.0), _mem_line("evaluate_catalog", 100_000, 2, 300.0),
        # recommend --changed-only: the batch (20,000 items) is full at 100k; the carry bucket is added from the code
        _mem_line("recommend", 10_000, 2, 250.0), _mem_line("recommend", 100_000, 2, 350.0)]
    mem = {"lines": lines, "summary": sm.summarize(lines), "sizes": [10_000, 100_000], "settings": {}, "ok": True}
    assert mem["summary"]["publish@day1"]["python_peak_rss_mb_growth_10x"] == 1.5
    assert mem["summary"]["evaluate_catalog@day2"]["flat"] is False and mem["summary"]["embed_items@day1"]["flat"]
    at = report.memory_at_target(mem, s)
    assert at["publish@day1"]["Python"] == pytest.approx(300.0)  # the bucket (1M rows) was full at 100k items
    assert at["publish@day1"]["per_unit_bytes"] == pytest.approx(100 * 2 ** 20 / 800_000)
    # the JVM's heap is capped (-Xmx): at 20M items it is bounded by spark.driver_memory + off-heap, not extrapolated
    assert at["embed_items@day1"]["JVM"] == report._jvm_cap_mb(s) == 2048 + report.JVM_OFFHEAP_MB
    assert at["embed_items@day1"]["Python"] == 161.0 and "spark.driver_memory" in at["embed_items@day1"]["how"]
    assert at["evaluate_catalog@day2"]["Python"] == pytest.approx(300 + 200 / 90_000 * (20_000_000 - 100_000))
    assert "grows" in at["evaluate_catalog@day2"]["how"]
    carry = report.CARRY_BYTES_PER_ITEM * (s.serve.recommend_carry_bucket_items - 100_000) / 2 ** 20
    assert at["recommend@day2"]["Python"] == pytest.approx(350.0 + carry) and "carry bucket" in at["recommend@day2"]["how"]
    table = "\n".join(report.memory_table(mem, s))
    assert "| `evaluate_catalog`, day 2 |" in table and "**> 1.5**" in table


def test_pipeline_memory_measures_the_pipeline_only_stages_and_carries_training_to_its_caps(report):
    """The stages bench/stage_memory.py does not run alone come from scale.json's per-side peaks: the JVM is capped
    at spark.driver_memory + off-heap, the trainers carried from the rows they held to the rows their caps allow, at
    training_memory.json's bytes a row (issue 32)."""
    from keyphrase_pipeline.core.settings import Settings

    def ln(stage, items, python, jvm=0.0, **kw):
        return {**_mem_line(stage, items, 1, python, jvm), **kw}

    lines = [ln("ctr_labels", 3000, 150.0, 1200.0), ln("ctr_labels", 30000, 152.0, 1300.0),
             ln("train_bi", 3000, 1300.0, rows_in=10_000), ln("train_bi", 30000, 1350.0, rows_in=20_000),
             ln("label", 3000, 160.0), ln("label", 30000, 260.0),  # the simulated annotator's world grows
             {"stage": "train_bi", "items": 3000, "day": 2, "skipped": True},
             _mem_line("embed_items", 3000, 1, 100.0)]  # measured alone by stage_memory.py: not here
    doc = {"lines": lines, "summary": {"ok": True}, "created_at": "2026-12-06"}
    pipe = report.pipeline_memory(doc, training={"bytes_per_training_row": 1000.0})
    assert pipe["sizes"] == [3000, 30000] and set(pipe["summary"]) == {"ctr_labels@day1", "train_bi@day1", "label@day1"}
    s = Settings()
    at = report.memory_at_target(pipe, s)
    assert at["ctr_labels@day1"]["JVM"] == report._jvm_cap_mb(s) and at["ctr_labels@day1"]["Python"] == 152.0
    rows = report.training_rows_at_target("train_bi", s)  # llm + kd (judged) + kd extra + ctr, the defaults' mix
    assert rows == 2 * s.train.max_llm_labels + s.train.kd_max_pairs + s.train.max_ctr_positives
    assert at["train_bi@day1"]["Python"] == pytest.approx(1350.0 + (rows - 20_000) * 1000.0 / 2 ** 20)
    assert "training rows" in at["train_bi@day1"]["how"]
    # the demo judge's growth is its synthetic world: not carried to 20M, and said so
    assert at["label@day1"]["Python"] == 260.0 and "simulated annotator" in at["label@day1"]["how"]
    sr = s.with_overrides(**{"train.label_mix": "llm+sr"})
    assert report.training_rows_at_target("train_bi", sr) == s.train.max_llm_labels + s.train.max_sr_labels
    assert report.training_rows_at_target("train_cross", s) == s.train.max_llm_labels
    # the cost model's cell: from the pipeline's run when stage_memory.json does not have the stage
    assert report._memory_cell(None, "ctr_labels", at).startswith(f"152 / {report._jvm_cap_mb(s):,.0f} / 0")
    assert report._memory_cell({}, "merge_labels", at).startswith("not measured")
    table = "\n".join(report.render_memory({"lines": [], "summary": {}, "sizes": []}, None, pipe).splitlines())
    assert "| `train_bi`, day 1 |" in table and "1,000 bytes a row" in table
    # a scale.json from before the per-side peaks has none
    assert report.pipeline_memory({"lines": [{"stage": "ctr_labels", "items": 3000, "day": 1, "peak_rss_mb": 9.0}],
                                   "summary": {}}) is None
