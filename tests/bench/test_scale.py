"""bench/scale.py's measuring parts: the process-tree sampler (CPU and memory of descendants, processes that
outlive their parent, the final CPU of the measured process), Spark event-log counts, and the growth
exponent / flag / day-2 fraction arithmetic. No Spark, no pipeline: a few seconds."""

from __future__ import annotations

import json
import math
import sys

import pytest
from testsupport import load_bench


@pytest.fixture(scope="module")
def scale():
    return load_bench("scale", "bench_scale")


# A grandchild that holds ~MEM MB and burns CPU_S seconds of CPU (process time, so a loaded machine only makes
# it take longer), named like a PySpark worker; its parent and grandparent only wait.
BURN = """
import sys, time
block = b"\\x01" * ({mem} * 1024 * 1024)
while time.process_time() < {cpu}:
    sum(range(10000))
"""
SPAWN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {code!r}, {marker!r}])
{after}
"""


def _tree_cmd(cpu: float, mem: int, marker: str, wait_for_grandchild: bool) -> list[str]:
    burn = BURN.format(mem=mem, cpu=cpu)
    # the child starts the burner; it waits for it, or exits at once and leaves it orphaned
    child = SPAWN.format(code=burn, marker=marker, after="child.wait()" if wait_for_grandchild else "time.sleep(0.3)")
    root = SPAWN.format(code=child, marker="driver", after="child.wait()")
    return [sys.executable, "-c", root]


def test_sampler_counts_grandchild_cpu_and_worker_memory(scale):
    m = scale.measure_command(_tree_cmd(cpu=1.0, mem=150, marker="pyspark.daemon", wait_for_grandchild=True),
                              interval=0.05)
    assert m["returncode"] == 0, m["stderr"]
    assert m["processes"] >= 3  # root, child, grandchild
    assert m["cpu_s"] >= 0.95  # the grandchild's CPU, although root and child only wait
    assert m["cores_used"] == pytest.approx(m["cpu_s"] / m["wall_s"], abs=0.01)
    assert m["worker_peak_rss_mb"] >= 150  # the grandchild's block, on the worker side
    assert m["peak_rss_mb"] < 150  # the two waiting Pythons (driver side) hold little
    assert m["tree_peak_rss_mb"] >= m["worker_peak_rss_mb"]
    assert len(m["load_1m"]) == 2 and all(v >= 0 for v in m["load_1m"])


def test_sampler_puts_a_process_that_execs_into_java_on_the_jvm_side(scale, tmp_path):
    """spark-class's bash execs the JVM under its own pid: the sampler classifies it again when its name changes."""
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.symlink_to(sys.executable)  # a "java" that is a Python holding 150 MB
    hold = "x = bytearray(150 * 1024 * 1024); import time; time.sleep(1.0)"
    m = scale.measure_command(["bash", "-c", f"sleep 0.4; exec {java} -c '{hold}'"], interval=0.05)
    assert m["returncode"] == 0, m["stderr"]
    assert m["jvm_peak_rss_mb"] >= 150 and m["python_peak_rss_mb"] < 150
    assert m["peak_rss_mb"] >= m["jvm_peak_rss_mb"]  # the driver side: the stage's process and its JVM


def test_sampler_follows_an_orphan_after_the_command_exits(scale):
    m = scale.measure_command(_tree_cmd(cpu=1.0, mem=20, marker="x", wait_for_grandchild=False),
                              interval=0.05, linger_s=60)
    assert m["returncode"] == 0, m["stderr"]
    assert m["cpu_s"] >= 0.95  # burnt mostly after the command (root) had exited
    assert m["linger_s"] > 0.2
    assert m["worker_peak_rss_mb"] == 0  # nothing named like a PySpark worker


def test_sampler_reads_the_final_cpu_of_the_command_itself(scale):
    # with a sampling interval longer than the command, only the zombie's last reading can see its CPU
    cmd = [sys.executable, "-c", "import time\nwhile time.process_time() < 0.6: sum(range(10000))"]
    m = scale.measure_command(cmd, interval=30)
    assert m["returncode"] == 0
    assert m["cpu_s"] >= 0.55
    assert m["wall_s"] < 25  # the exit is seen when it happens, not at the next sample


def test_process_kind(scale):
    assert scale.process_kind(["/usr/bin/python", "-m", "pyspark.daemon"]) == "worker"
    assert scale.process_kind(["java", "-cp", "x", "org.apache.spark.deploy.SparkSubmit"]) == "jvm"
    assert scale.process_kind(["/usr/lib/jvm/bin/java", "-Xmx2g"]) == "jvm"
    assert scale.process_kind(["/venv/bin/python", "-m", "kp", "java"]) == "driver"
    assert scale.process_kind(None) == "driver"


def test_growth_exponent(scale):
    assert scale.growth_exponent(1000, 10, 10000, 100) == pytest.approx(1.0)
    assert scale.growth_exponent(1000, 10, 10000, 1000) == pytest.approx(2.0)
    assert scale.growth_exponent(3000, 20, 100000, 20) == pytest.approx(0.0)
    assert scale.growth_exponent(3000, 12.0, 30000, 30.0) == pytest.approx(math.log(2.5) / math.log(10))
    assert scale.growth_exponent(1000, 0, 10000, 5) is None
    assert scale.growth_exponent(1000, 5, 1000, 6) is None


def _line(stage, items, day, wall, rss, worker=0.0):
    return {"stage": stage, "items": items, "day": day, "wall_s": wall, "peak_rss_mb": rss, "worker_peak_rss_mb": worker}


def test_summarize_exponents_flags_and_day2_fraction(scale):
    lines = [
        # recommend: time x^1.5 (flagged), driver memory linear in items (flagged: it could stream)
        _line("recommend", 1000, 1, 10.0, 100.0), _line("recommend", 10000, 1, 10.0 * 10 ** 1.5, 1000.0),
        _line("recommend", 100000, 1, 10.0 * 100 ** 1.5, 10000.0),
        _line("recommend", 1000, 2, 5.0, 100.0), _line("recommend", 100000, 2, 100.0, 10000.0),
        # index: linear time, linear memory: not flagged (the index must hold every vector)
        _line("index", 1000, 1, 2.0, 50.0), _line("index", 100000, 1, 200.0, 5000.0),
        # embed_items: flat driver, workers' memory grows like x^0.9 (flagged), day 2 costs 10%
        _line("embed_items", 1000, 1, 20.0, 700.0, 100.0), _line("embed_items", 100000, 1, 40.0, 700.0, 100.0 * 100 ** 0.9),
        _line("embed_items", 1000, 2, 2.0, 700.0), _line("embed_items", 100000, 2, 4.0, 700.0),
        # a failed and a skipped line are left out
        {**_line("train_bi", 1000, 1, 1.0, 1.0), "error": {"returncode": 1}},
        {"stage": "train_bi", "items": 100000, "day": 1, "skipped": True},
        {**_line("synth", 1000, 0, 1.0, 1.0), "dag_stage": False},
    ]
    s = scale.summarize(lines)
    assert s["summary"] is True
    assert s["exponents"]["recommend"] == pytest.approx(1.5, abs=1e-3)
    assert s["exponents_pairs"]["recommend"] == {"1000-10000": pytest.approx(1.5, abs=1e-3),
                                                 "10000-100000": pytest.approx(1.5, abs=1e-3)}
    assert s["exponents"]["index"] == pytest.approx(1.0, abs=1e-3)
    assert s["exponents"]["embed_items"] == pytest.approx(math.log(2) / math.log(100), abs=1e-3)
    assert s["memory_exponents"]["recommend"] == pytest.approx(1.0, abs=1e-3)
    assert s["worker_memory_exponents"]["embed_items"] == pytest.approx(0.9, abs=1e-3)
    assert s["memory_slope_mb_per_1k_items"]["recommend"] == pytest.approx(100.0)
    assert s["day2_fraction"] == {"recommend": pytest.approx(100 / 10000), "embed_items": pytest.approx(0.1)}
    assert s["day2_fraction_by_size"]["embed_items"] == {"1000": 0.1, "100000": 0.1}
    assert s["exponents_day2"]["recommend"] == pytest.approx(math.log(20) / math.log(100), abs=1e-3)
    assert s["flags"]["time_exponent_above_1.1"] == ["recommend"]
    assert s["flags"]["memory_grows_with_items"] == ["embed_items", "recommend"]
    assert "train_bi" not in s["exponents"] and "synth" not in s["exponents"]
    json.dumps(s)  # the summary line is JSON


def test_spark_event_stats(scale, tmp_path):
    events = [
        {"Event": "SparkListenerLogStart", "Spark Version": "4.0.0"},
        {"Event": "SparkListenerApplicationStart", "App Name": "kp-x", "Timestamp": 1_700_000_000_123},
        *[{"Event": "SparkListenerTaskEnd", "Task Metrics": {"Executor Run Time": 1500}} for _ in range(3)],
        {"Event": "SparkListenerStageCompleted"},
    ]
    (tmp_path / "local-1.inprogress").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    # Spark 4's rolling layout: a folder per application, the events in one or more files, a status marker
    v2 = tmp_path / "eventlog_v2_local-2"
    v2.mkdir()
    (v2 / "events_1_local-2").write_text(json.dumps({"Event": "SparkListenerTaskEnd", "Task Metrics": {}}) + "\n")
    (v2 / "events_2_local-2").write_text(json.dumps({"Event": "SparkListenerTaskEnd"}) + "\n")
    (v2 / "appstatus_local-2").write_text(json.dumps({"Event": "SparkListenerTaskEnd"}) + "\n")
    s = scale.spark_event_stats(tmp_path)
    assert s == {"spark_tasks": 5, "spark_stages": 1, "spark_task_s": 4.5, "spark_apps": 2,
                 "app_start_ms": 1_700_000_000_123}
    assert scale.spark_event_stats(tmp_path / "missing")["spark_tasks"] == 0


def test_parse_stdout_json(scale):
    assert scale.parse_stdout_json(json.dumps({"a": 1}, indent=2)) == {"a": 1}
    assert scale.parse_stdout_json("noise\n{\"b\": 2}\n") == {"b": 2}
    assert scale.parse_stdout_json("no json here") == {}


def _measurement(wall, cpu, rss, stats, returncode=0, stderr="", load=(1.0, 2.0)):
    return {"load_1m": list(load), "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, "python_peak_rss_mb": rss, "jvm_peak_rss_mb": 0.0,
            "worker_peak_rss_mb": 0.0, "tree_peak_rss_mb": rss,
            "python_workers": 0, "linger_s": 0.0, "returncode": returncode, "stderr": stderr, "result": stats,
            "stats": {}, "started_at": 100.0, "java_started_at": 101.0, "session_ready_at": 106.0,
            "spark": {"spark_tasks": 2, "spark_task_s": 1.0, "app_start_ms": 105_000}}


def test_make_line_sums_shards_and_reports_errors_verbatim(scale):
    shards = [_measurement(2.0, 1.0, 150.0, {"pairs": 500, "judged": 500}, load=(0.5, 1.5)),
              _measurement(3.0, 2.0, 170.0, {"pairs": 300, "judged": 290}, load=(1.5, 2.5))]
    line = scale.make_line("label", 400, 1, shards)
    assert {k: line[k] for k in ("stage", "items", "day", "wall_s", "cpu_s", "peak_rss_mb", "rows_in", "rows_out",
                                 "spark_tasks", "processes_run")} == {
        "stage": "label", "items": 400, "day": 1, "wall_s": 5.0, "cpu_s": 3.0, "peak_rss_mb": 170.0,
        "rows_in": 800, "rows_out": 790, "spark_tasks": 4, "processes_run": 2}
    assert line["cores_used"] == pytest.approx(0.6)
    assert line["load_1m"] == [0.5, 2.5]  # the machine's load at the first start and the last end
    assert line["jvm_to_context_s"] == pytest.approx(8.0)  # 2 x (105 - 101)
    assert line["jvm_start_s"] == pytest.approx(10.0)  # 2 x (106 - 101)
    assert line["spark_ready_s"] == pytest.approx(12.0)  # 2 x (106 - 100)
    assert "error" not in line
    failed = scale.make_line("select_pairs", 400, 1, [_measurement(1.0, 1.0, 1.0, {"candidates": {"a": 3, "b": 4}},
                                                                  returncode=3, stderr="x" * 5000 + "DataError: boom")])
    assert failed["rows_in"] == 7 and failed["rows_out"] is None
    assert failed["error"]["returncode"] == 3 and failed["error"]["stderr_tail"].endswith("DataError: boom")


def test_java_start_is_on_the_commands_clock(scale, tmp_path):
    # a child named "java" started ~0.5 s after the command: its start is reported on the time.time() clock
    # of started_at (psutil's create_time is boot time in whole seconds + ticks, off by up to a second or more)
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\nsleep 2\n")  # long enough for the 50 ms sampler to see it on a loaded machine
    java.chmod(0o755)
    code = f"import subprocess, time\ntime.sleep(0.5)\nsubprocess.run([{str(java)!r}])"
    m = scale.measure_command([sys.executable, "-c", code], interval=0.05)
    assert m["returncode"] == 0, m["stderr"]
    assert 0.4 <= m["java_started_at"] - m["started_at"] <= 0.5 + m["wall_s"]


def test_session_ready_at_reads_get_sparks_log_line(scale):
    import datetime as dt

    err = ("WARNING: Using incubator modules: jdk.incubator.vector\n"
           "2026-11-30 02:09:43,100 INFO keyphrase_pipeline.stages.ctr_labels: reading\n"
           "2026-11-30 02:09:49,207 INFO keyphrase_pipeline.core.spark: Spark 4.2.0 started: master=local[*]\n"
           "2026-11-30 02:09:59,000 INFO keyphrase_pipeline.core.spark: Spark 4.2.0 started: master=local[*]\n")
    assert scale.session_ready_at(err) == pytest.approx(dt.datetime(2026, 11, 30, 2, 9, 49, 207000).timestamp())
    assert scale.session_ready_at("no spark here") is None
