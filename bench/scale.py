"""Benchmark: every stage of the daily DAG on synthetic worlds of several sizes; how each stage's cost grows.

For each size (items; keyphrases and searches/day scale as ``kp synth`` scales them,
``keyphrase_pipeline.synthetic.synth.resolve_scale``) the harness

1. generates a world with ``kp synth --scale N --days W+2`` where W = ``--window-days`` (``ctr.window_days``,
   7 here instead of the production 30 so that small worlds stay cheap; the CTR window is full on day 1);
2. runs **day 1** (the world's second-to-last day: the first full day, nothing computed before: every
   CTR daily aggregate of the window, every item and keyphrase embedded, first model trained) and **day 2**
   (the last day: incremental: 1% of items revised, CTR one new day) through every stage in DAG order,
   each as its own ``kp <command>`` subprocess, as an Airflow task runs it (``dags/keyphrase_daily.py``):
   ``ctr-labels``, ``select-pairs``, ``label --shard S`` per shard (the simulated judge, the demo's
   default), ``merge-labels``, on training days ``train-cross``, ``train-bi --cross V``, ``evaluate
   --candidate V``, then ``export``, ``embed --what items``, ``embed --what keyphrases``, ``index``,
   ``recommend``, ``publish``. Whether a day trains is the DAG's own decision
   (``keyphrase_pipeline.orchestration.planning.plan_day``: no champion yet, or ``is_training_day`` with
   ``train.retrain_every_days``; the setting's default 1 trains every day).
   Training runs at a fixed step budget (``train.cross_max_steps`` / ``train.bi_max_steps`` =
   ``--train-steps``, ``train.epochs`` and ``train.bi_epochs`` 10 as the demo, so the step cap decides), the real
   MiniLM encoder.
3. samples each stage's whole process tree with psutil every ``--interval`` s (the ``kp`` process, its Spark
   JVM, the JVM's Python workers; processes that outlive their parent are followed until they exit):
   ``wall_s`` (start to the ``kp`` process's exit), ``cpu_s`` (user + system of every process seen, the last
   value seen per process), ``cores_used`` = cpu_s / wall_s, ``peak_rss_mb`` (the largest sum of RSS of the
   driver side: the ``kp`` Python and its JVM) and ``worker_peak_rss_mb`` (the same for PySpark's Python
   workers), ``python_workers`` (distinct forked PySpark workers), ``rows_in`` / ``rows_out`` (from the
   stage's run stats in the lake, ``runs/ds=D/<stage>.json``, or its JSON line on stdout), ``spark_tasks``
   (``SparkListenerTaskEnd`` events of a per-stage Spark event log; 0 for stages without Spark) and
   ``jvm_start_s`` (the JVM process's start to the SparkSession handed to the job: ``get_spark``'s log line),
   ``spark_ready_s`` (the task process's start to the same) and ``jvm_to_context_s`` (the JVM's start to
   ``SparkListenerApplicationStart``, the beginning of the SparkContext's set-up).

Prints one JSON line per (stage, size, day), then ``{"summary": true, "exponents": {...}, "day2_fraction":
{...}, "flags": {...}}`` (``summarize``) and writes ``bench/results/scale.json`` (``scale_quick.json`` with
``--quick``): ``{"lines", "summary", "sizes", "created_at", "settings"}``. A stage that fails is reported
as a line with ``error`` (exit code and stderr tail, verbatim); the rest of that size is skipped and the
run exits 1.

    .venv/bin/python bench/scale.py                          # --sizes 3000,30000,100000 (~35 min, quiet 2 cores)
    .venv/bin/python bench/scale.py --quick                  # --sizes 400,1500, 4 training steps
    .venv/bin/python bench/scale.py --sizes 3000 --keep      # keep the lakes (printed) to look inside

RSS sums count pages shared between forked workers once per process; JVM RSS grows with the heap up to
``spark.driver_memory`` whether or not the data needs it. See docs/PERFORMANCE.md ("Scale").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SIZES = (3000, 30000, 100000)
QUICK_SIZES = (400, 1500)
MB = 1024 * 1024

# PySpark's Python workers: the daemon the JVM starts and the workers it forks (same command line).
WORKER_MARKERS = ("pyspark.daemon", "pyspark.worker")

def _key(*names: str):
    """A reader of the first of ``names`` that holds a number in a stage's stats."""
    def read(stats: dict):
        for k in names:
            v = stats.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return v
        return None
    return read


def _sum_of(name: str):
    """A reader of the sum of the numbers in the dict ``stats[name]`` (e.g. select_pairs' candidates by source)."""
    def read(stats: dict):
        v = stats.get(name)
        return sum(x for x in v.values() if isinstance(x, (int, float))) if isinstance(v, dict) else None
    return read


def _none(stats: dict):
    return None


# stage -> (run-stats file under runs/ds=D/ or None: the stdout JSON only, rows_in reader, rows_out reader,
# could stream). "could stream": its memory need not grow with the whole input; the FAISS index must hold every
# keyphrase vector, so ``index`` is the one stage whose memory is expected to grow. Rows: ctr_labels the raw
# events aggregated today (day 1: every day of the window) -> (item, keyphrase) label rows; select_pairs the
# candidate pairs -> pairs chosen; label pairs -> judged; merge_labels the day's rows; training the rows it
# trains on (train_cross: judged train rows; train_bi: all its tasks' rows, kd included); evaluate the held-out
# rows; export the parity-check texts; embed all rows -> rows embedded now (the rest reused); index the vectors;
# recommend items scored -> recommendation rows; publish the recommendations published.
STAGES: dict[str, tuple] = {
    "ctr_labels": ("ctr_labels", _key("rows_in"), _key("pairs"), True),
    "select_pairs": ("select_pairs", _sum_of("candidates"), _key("pairs"), True),
    "label": (None, _key("pairs"), _key("judged"), True),
    "merge_labels": ("merge_labels", _key("staged_rows", "rows"), _key("rows"), True),
    "train_cross": ("train_cross", _key("train_rows"), _none, True),
    "train_bi": ("train_bi", _sum_of("task_rows"), _none, True),
    "evaluate": ("evaluate", lambda st: _key("llm_test_rows")(st.get("test_set") or {}), _none, True),
    "export": ("export", lambda st: _key("rows")(st.get("parity") or {}), _none, True),
    "embed_items": ("embed_items", _key("rows_total"), _key("embedded_now"), True),
    "embed_keyphrases": ("embed_keyphrases", _key("rows_total"), _key("embedded_now"), True),
    "index": ("index", _key("n"), _key("n"), False),
    "recommend": ("recommend", _key("items_scored"), _key("rows"), True),
    "publish": ("publish", _key("recommendations"), _key("recommendations"), True),
}
TRAIN_STAGES = ("train_cross", "train_bi", "evaluate")


# ---- process-tree sampling -------------------------------------------------------------------------
def process_kind(cmdline: list[str] | None) -> str:
    """``"worker"`` for a PySpark Python worker or its daemon (command line names ``pyspark.daemon`` or
    ``pyspark.worker``), ``"jvm"`` for a Java process (the Spark driver JVM: its first word ends in ``java``),
    else ``"driver"`` (the stage's Python, anything else it starts)."""
    text = " ".join(cmdline or [])
    if any(m in text for m in WORKER_MARKERS):
        return "worker"
    first = (cmdline or [""])[0]
    return "jvm" if first == "java" or first.endswith("/java") else "driver"


def _alive(p) -> bool:
    try:
        return p.is_running()  # same pid and start time: not a reused pid
    except Exception:
        return False


class TreeSampler:
    """Samples the CPU time and RSS of a process tree rooted at ``pid`` (psutil), one ``sample()`` at a time.

    Every process ever seen under the root (found again each sample by ``children(recursive=True)`` of the
    root and of every known live process, so one that outlives its parent is still followed) keeps the
    largest user + system CPU seconds seen (its last value, a process's CPU time never falls) and the
    largest RSS. Per sample, the RSS of the live processes is summed by kind (``process_kind``); the peaks
    of those sums are the tree's peak memory. A process that starts and ends between two samples is missed;
    the CPU a process burns after its last sample is missed (at most one interval per process).
    """

    def __init__(self, pid: int, kind=process_kind):
        import psutil

        self._psutil = psutil
        self.root_pid = pid
        self._kind = kind
        self._procs: dict[tuple[int, float], object] = {}  # (pid, create_time) -> psutil.Process
        self.info: dict[tuple[int, float], dict] = {}  # (pid, create_time) -> {kind, name, ppid, cpu_s, rss_mb}
        self.peak_mb = {"driver": 0.0, "jvm": 0.0, "worker": 0.0, "driver_side": 0.0, "all": 0.0}
        self.samples = 0
        try:
            self._root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._root = None

    def _track(self, p) -> tuple[int, float] | None:
        ps = self._psutil
        try:
            key = (p.pid, p.create_time())
        except (ps.NoSuchProcess, ps.AccessDenied):
            return None
        if key not in self._procs:
            try:
                cmd, name, ppid = p.cmdline(), p.name(), p.ppid()
            except (ps.NoSuchProcess, ps.AccessDenied):
                cmd, name, ppid = [], "?", None
            self._procs[key] = p
            self.info[key] = {"kind": self._kind(cmd), "name": name, "ppid": ppid, "cpu_s": 0.0, "rss_mb": 0.0,
                              "first_seen": time.time(), "create_time": key[1]}
        return key

    def sample(self) -> int:
        """Take one sample; return how many of the tracked processes are still running (zombies excluded)."""
        ps = self._psutil
        found: list = []
        anchors = [self._root] if self._root is not None else []
        anchors += [p for p in self._procs.values() if p is not self._root and _alive(p)]
        seen_pids: set[int] = set()
        for anchor in anchors:
            try:
                family = [anchor] + anchor.children(recursive=True)
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                family = [anchor]
            for p in family:
                if p.pid not in seen_pids:
                    seen_pids.add(p.pid)
                    found.append(p)
        sums = {"driver": 0.0, "jvm": 0.0, "worker": 0.0}
        running = 0
        for p in found:
            key = self._track(p)
            if key is None:
                continue
            rec = self.info[key]
            try:
                with p.oneshot():
                    t = p.cpu_times()  # readable for a zombie too: its final values
                    status = p.status()
                    rss = p.memory_info().rss / MB if status != ps.STATUS_ZOMBIE else 0.0
                    name = p.name() if status != ps.STATUS_ZOMBIE else rec["name"]
                    if name != rec["name"]:  # exec'd (spark-class's bash becomes the JVM, same pid): classify again
                        rec["name"], rec["kind"] = name, self._kind(p.cmdline())
            except (ps.NoSuchProcess, ps.AccessDenied):
                continue
            rec["cpu_s"] = max(rec["cpu_s"], float(t.user + t.system))
            rec["rss_mb"] = max(rec["rss_mb"], rss)
            sums[rec["kind"]] += rss
            if status != ps.STATUS_ZOMBIE:
                running += 1
        for k, v in sums.items():
            self.peak_mb[k] = max(self.peak_mb[k], v)
        self.peak_mb["driver_side"] = max(self.peak_mb["driver_side"], sums["driver"] + sums["jvm"])
        self.peak_mb["all"] = max(self.peak_mb["all"], sums["driver"] + sums["jvm"] + sums["worker"])
        self.samples += 1
        return running

    def result(self) -> dict:
        """``cpu_s`` (sum over every process seen), ``peak_rss_mb`` (driver side: the stage's Python and its JVM,
        summed per sample), ``python_peak_rss_mb`` (the stage's Python alone), ``jvm_peak_rss_mb`` (the JVM alone),
        ``worker_peak_rss_mb``, ``tree_peak_rss_mb``, ``processes`` seen, ``python_workers`` (forked PySpark workers: worker-kind
        processes whose parent is worker-kind too, i.e. forks of the daemon), ``samples``."""
        infos = list(self.info.values())
        worker_pids = {k[0] for k, v in self.info.items() if v["kind"] == "worker"}
        return {
            "cpu_s": round(sum(v["cpu_s"] for v in infos), 2),
            "peak_rss_mb": round(self.peak_mb["driver_side"], 1),
            "python_peak_rss_mb": round(self.peak_mb["driver"], 1),
            "jvm_peak_rss_mb": round(self.peak_mb["jvm"], 1),
            "worker_peak_rss_mb": round(self.peak_mb["worker"], 1),
            "tree_peak_rss_mb": round(self.peak_mb["all"], 1),
            "processes": len(infos),
            "python_workers": sum(1 for v in infos if v["kind"] == "worker" and v["ppid"] in worker_pids),
            "samples": self.samples,
        }

    def first_process_named(self, name: str) -> dict | None:
        """The earliest-started process seen whose name is ``name`` (e.g. ``java``), or None."""
        hits = [v for v in self.info.values() if v["name"] == name]
        return min(hits, key=lambda v: v["create_time"]) if hits else None


def _watch_exit(pid: int) -> tuple[threading.Event, list[float]]:
    """A thread that blocks until child ``pid`` exits and then records ``time.perf_counter()``; the child is
    left a zombie (``WNOWAIT``) so that its final CPU times can still be read. Returns (event, [exit time])."""
    exited, when = threading.Event(), []

    def wait():
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        when.append(time.perf_counter())
        exited.set()

    threading.Thread(target=wait, daemon=True, name=f"wait-{pid}").start()
    return exited, when


def measure_command(cmd: list[str], env: dict | None = None, interval: float = 0.2, timeout_s: float | None = None,
                    stdout_path: str | Path | None = None, stderr_path: str | Path | None = None,
                    linger_s: float = 60.0, cwd: str | Path | None = None) -> dict:
    """Run ``cmd`` and sample its process tree every ``interval`` seconds (``TreeSampler``) until it exits.

    Returns ``returncode``, ``wall_s`` (start to the command's own exit), ``cpu_s``, ``cores_used``,
    ``peak_rss_mb``, ``worker_peak_rss_mb``, ``tree_peak_rss_mb``, ``processes``, ``python_workers``,
    ``linger_s`` (how long processes it started ran on after it exited; they are followed for at most
    ``linger_s`` seconds), ``started_at`` (epoch seconds), ``load_1m`` (the machine's 1-minute load average
    at the start and at the end: above the command's own ``cores_used``, other work shared the cores),
    ``java_started_at`` (epoch seconds of its first
    ``java`` process on the same clock as ``started_at``, or None) and ``stdout``/``stderr`` (text; also written to the given paths). On
    ``timeout_s`` the whole tree is killed and ``returncode`` is -9. Raises OSError when ``cmd`` cannot be
    started.
    """
    out_f = open(stdout_path, "w+") if stdout_path else tempfile.TemporaryFile("w+")
    err_f = open(stderr_path, "w+") if stderr_path else tempfile.TemporaryFile("w+")
    try:
        started = time.time()
        load_start = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
        exited, when = _watch_exit(proc.pid)
        sampler = TreeSampler(proc.pid)
        killed = False
        try:
            while True:
                sampler.sample()
                if exited.wait(interval):
                    break
                if not killed and timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                    _kill_tree(proc.pid)
                    killed = True
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the stage's processes go with us
            _kill_tree(proc.pid)
            proc.wait()
            raise
        wall = when[0] - t0
        sampler.sample()  # the root as a zombie: its final CPU times
        t_exit = time.perf_counter()
        while sampler.sample() and time.perf_counter() - t_exit < linger_s:  # e.g. a JVM shutting down after it
            time.sleep(interval)
        linger = time.perf_counter() - t_exit
        load_end = os.getloadavg()[0]
        rc = proc.wait()
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    finally:
        out_f.close()
        err_f.close()
    res = sampler.result()
    java = sampler.first_process_named("java")
    root = next((v for k, v in sampler.info.items() if k[0] == proc.pid), None)
    # a process's create_time is boot time (whole seconds) + ticks: off from time.time() by up to a second or
    # more; only its difference to the root's create_time is used, added to the root's time.time() start
    java_at = started + (java["create_time"] - root["create_time"]) if java and root else None
    return {"returncode": -9 if killed else rc, "wall_s": round(wall, 2), **res,
            "cores_used": round(res["cpu_s"] / wall, 2) if wall > 0 else 0.0,
            "linger_s": round(linger, 2), "started_at": started, "java_started_at": java_at,
            "load_1m": [round(load_start, 2), round(load_end, 2)], "stdout": stdout, "stderr": stderr}


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


# ---- Spark event logs ---------------------------------------------------------------------------------
def spark_event_stats(folder: str | Path) -> dict:
    """Counts from the Spark event logs under ``folder`` (a file per application, ``.inprogress`` included, or
    Spark 4's rolling ``eventlog_v2_<app>/events_<n>_<app>`` folders):
    ``spark_tasks`` (``SparkListenerTaskEnd`` events), ``spark_stages`` (``SparkListenerStageCompleted``),
    ``spark_task_s`` (sum of the tasks' executor run time, seconds), ``spark_apps`` and ``app_start_ms``
    (the first ``SparkListenerApplicationStart`` timestamp, epoch ms, or None). Zeros for an empty or
    missing folder (a stage without Spark)."""
    out = {"spark_tasks": 0, "spark_stages": 0, "spark_task_s": 0.0, "spark_apps": 0, "app_start_ms": None}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    run_ms = 0
    apps = set()
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("appstatus_"):
            continue
        # Spark 4 rolls logs by default: eventlog_v2_<app>/events_<n>_<app>; a plain log is the file <app>
        apps.add(f.parent.name if f.parent.name.startswith("eventlog_v2_") else f.name.removesuffix(".inprogress"))
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if '"SparkListenerTaskEnd"' in line:
                    out["spark_tasks"] += 1
                    try:
                        run_ms += int((json.loads(line).get("Task Metrics") or {}).get("Executor Run Time", 0))
                    except (json.JSONDecodeError, TypeError, ValueError):
                        pass
                elif '"SparkListenerStageCompleted"' in line:
                    out["spark_stages"] += 1
                elif '"SparkListenerApplicationStart"' in line:
                    try:
                        ts = int(json.loads(line)["Timestamp"])
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue
                    out["app_start_ms"] = ts if out["app_start_ms"] is None else min(out["app_start_ms"], ts)
    out["spark_task_s"] = round(run_ms / 1000, 2)
    out["spark_apps"] = len(apps)
    return out


SESSION_READY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ keyphrase_pipeline\.core\.spark: Spark \S+ started",
                           re.MULTILINE)


def session_ready_at(stderr: str) -> float | None:
    """Epoch seconds at which the stage's SparkSession was ready: the first ``keyphrase_pipeline.core.spark:
    Spark <version> started`` log line (``core.spark.get_spark``, logged right after ``getOrCreate``; the
    ``kp`` log format ``keyphrase_pipeline.cli.configure_logging``, local time), or None (no Spark, or INFO not logged)."""
    m = SESSION_READY.search(stderr or "")
    if not m:
        return None
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


# ---- growth exponents ----------------------------------------------------------------------------------
def growth_exponent(x0: float, y0: float, x1: float, y1: float) -> float | None:
    """log(y1 / y0) / log(x1 / x0): the exponent b of y ~ x^b between two points. None when a value is not
    positive or x0 == x1 (no size ratio to divide by)."""
    if min(x0, x1, y0, y1) <= 0 or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def summarize(lines: list[dict], time_flag: float = 1.1, memory_flag: float = 0.8) -> dict:
    """The summary line from the per-stage lines (those with ``error`` or ``skipped`` are left out).

    * ``exponents``: per stage, day 1, wall-time exponent between the smallest and the largest size;
      ``exponents_pairs``: the same per consecutive pair of sizes (``"3000-30000": x``);
      ``exponents_day2``: smallest-largest on day 2;
    * ``memory_exponents``: the same for ``peak_rss_mb`` (driver side) and ``worker_memory_exponents`` for
      ``worker_peak_rss_mb``; ``memory_slope_mb_per_1k_items``: driver peak MB added per 1,000 items
      (smallest to largest; the fixed part of a process's memory dilutes the exponent, the slope is what
      extrapolates);
    * ``day2_fraction``: day-2 wall / day-1 wall per stage at the largest size, ``day2_fraction_by_size``
      every size;
    * ``flags``: ``time_exponent_above_<time_flag>``: stages whose time exponent exceeds it;
      ``memory_grows_with_items``: stages that could stream (``STAGES``) whose driver or worker memory
      exponent exceeds ``memory_flag``.
    """
    ok = [ln for ln in lines if not ln.get("error") and not ln.get("skipped") and ln.get("stage") in STAGES]
    by = {(ln["stage"], ln["items"], ln["day"]): ln for ln in ok}
    stages = [s for s in STAGES if any(k[0] == s for k in by)]
    summary: dict = {"summary": True, "exponents": {}, "exponents_pairs": {}, "exponents_day2": {},
                     "memory_exponents": {}, "worker_memory_exponents": {}, "memory_slope_mb_per_1k_items": {},
                     "day2_fraction": {}, "day2_fraction_by_size": {}}

    def rnd(v, nd=3):
        return None if v is None else round(v, nd)

    for stage in stages:
        for day, key in ((1, "exponents"), (2, "exponents_day2")):
            sizes = sorted(k[1] for k in by if k[0] == stage and k[2] == day)
            if len(sizes) < 2:
                continue
            a, b = by[(stage, sizes[0], day)], by[(stage, sizes[-1], day)]
            summary[key][stage] = rnd(growth_exponent(sizes[0], a["wall_s"], sizes[-1], b["wall_s"]))
            if day == 1:
                summary["exponents_pairs"][stage] = {
                    f"{x0}-{x1}": rnd(growth_exponent(x0, by[(stage, x0, 1)]["wall_s"], x1, by[(stage, x1, 1)]["wall_s"]))
                    for x0, x1 in zip(sizes, sizes[1:])}
                summary["memory_exponents"][stage] = rnd(
                    growth_exponent(sizes[0], a["peak_rss_mb"], sizes[-1], b["peak_rss_mb"]))
                summary["worker_memory_exponents"][stage] = rnd(
                    growth_exponent(sizes[0], a.get("worker_peak_rss_mb", 0), sizes[-1], b.get("worker_peak_rss_mb", 0)))
                summary["memory_slope_mb_per_1k_items"][stage] = rnd(
                    (b["peak_rss_mb"] - a["peak_rss_mb"]) / (sizes[-1] - sizes[0]) * 1000, 2)
        fractions = {}
        for items in sorted({k[1] for k in by if k[0] == stage}):
            d1, d2 = by.get((stage, items, 1)), by.get((stage, items, 2))
            if d1 and d2 and d1["wall_s"] > 0:
                fractions[str(items)] = round(d2["wall_s"] / d1["wall_s"], 3)
        if fractions:
            summary["day2_fraction_by_size"][stage] = fractions
            summary["day2_fraction"][stage] = fractions[max(fractions, key=int)]
    time_key = f"time_exponent_above_{time_flag}"
    summary["flags"] = {
        time_key: sorted(s for s, x in summary["exponents"].items() if x is not None and x > time_flag),
        "memory_grows_with_items": sorted(
            s for s in stages if STAGES[s][3] and any(
                x is not None and x > memory_flag
                for x in (summary["memory_exponents"].get(s), summary["worker_memory_exponents"].get(s)))),
    }
    return summary


# ---- one stage, one world -----------------------------------------------------------------------------
def parse_stdout_json(text: str) -> dict:
    """The command's JSON result on stdout: the whole text (indented JSON), else its last JSON line, else {}."""
    text = text.strip()
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else {}
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def kp_command() -> list[str]:
    """``kp`` next to this Python (the installed entry point), else ``python -m keyphrase_pipeline.cli``."""
    kp = Path(sys.executable).parent / "kp"
    return [str(kp)] if kp.exists() else [sys.executable, "-m", "keyphrase_pipeline.cli"]


class World:
    """One synthetic world's lake and the environment its stage processes run with."""

    def __init__(self, items: int, workdir: Path, args):
        from keyphrase_pipeline.core.settings import load_settings, settings_env
        from keyphrase_pipeline.orchestration import run_settings

        self.items = items
        self.dir = workdir / f"items_{items}"
        self.logs = self.dir / "logs"
        self.events = self.dir / "eventlogs"
        self.logs.mkdir(parents=True, exist_ok=True)
        overrides = {
            "ctr.window_days": args.window_days, "synth.days": args.window_days + 2, "synth.scale": str(items),
            "train.cross_max_steps": args.train_steps, "train.bi_max_steps": args.train_steps,
            "train.epochs": run_settings.DEMO_TRAIN_BUDGET["train.epochs"],
            "train.bi_epochs": run_settings.DEMO_TRAIN_BUDGET["train.bi_epochs"],
            "spark.master": args.master,
            "truth_provider": run_settings.DEMO_TRUTH_PROVIDER,  # demo mode: evaluation against the world's truth
        }
        if args.retrain_every_days:
            overrides["train.retrain_every_days"] = args.retrain_every_days
        # the bench's own environment (KP_* included) is the base, as a task's would be
        self.settings = load_settings(lake_root=str(self.dir / "lake")).with_overrides(**overrides)
        self.env = {**os.environ, **settings_env(self.settings)}
        self.env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                         "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
                         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                         "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
        self.args = args

    def plan(self, ds: str) -> dict:
        """The DAG's plan for ``ds`` (``planning.plan_day`` with this world's settings)."""
        from keyphrase_pipeline.core.settings import get_settings
        from keyphrase_pipeline.orchestration import planning

        saved = {k: os.environ.get(k) for k in self.env if k.startswith("KP_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("KP_")})
        get_settings.cache_clear()
        try:
            return planning.plan_day({"ds": ds})
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            get_settings.cache_clear()

    def run_stage(self, stage: str, day: int, ds: str | None, argv: list[str], tag: str = "") -> dict:
        """Run ``kp <argv>`` as one measured subprocess with its own Spark event-log folder; the raw
        measurement plus ``spark`` (``spark_event_stats``), ``result`` (stdout JSON) and ``stats`` (run stats)."""
        name = f"d{day}_{stage}{tag}"
        evdir = self.events / name
        evdir.mkdir(parents=True, exist_ok=True)
        conf = {**self.settings.spark.conf, "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": evdir.resolve().as_uri(), "spark.eventLog.compress": "false"}
        env = {**self.env, "KP_SPARK__CONF": json.dumps(conf)}
        m = measure_command(kp_command() + argv, env=env, interval=self.args.interval, timeout_s=self.args.stage_timeout,
                            stdout_path=self.logs / f"{name}.out", stderr_path=self.logs / f"{name}.err", cwd=ROOT)
        m["spark"] = spark_event_stats(evdir)
        m["session_ready_at"] = session_ready_at(m["stderr"])
        m["result"] = parse_stdout_json(m["stdout"])
        m["stats"] = {}
        stats_name = STAGES.get(stage, (None,))[0]
        if ds and stats_name:
            from keyphrase_pipeline.core.lake import Lake

            lake = Lake.from_settings(self.settings)
            path = lake.run_stats_path(ds, stats_name)
            if lake.exists(path):
                m["stats"] = lake.read_json(path)
        return m


def make_line(stage: str, items: int, day: int, ms: list[dict]) -> dict:
    """One output line from one or more measurements of the same stage (the label shards: times and tasks
    summed, peaks the largest)."""
    wall = sum(m["wall_s"] for m in ms)
    cpu = sum(m["cpu_s"] for m in ms)
    sources = [{**m["result"], **m["stats"]} for m in ms]
    rows_in = [STAGES[stage][1](s) for s in sources]
    rows_out = [STAGES[stage][2](s) for s in sources]
    line = {
        "stage": stage, "items": items, "day": day, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "cores_used": round(cpu / wall, 2) if wall > 0 else 0.0,
        "peak_rss_mb": max(m["peak_rss_mb"] for m in ms),
        "worker_peak_rss_mb": max(m["worker_peak_rss_mb"] for m in ms),
        "python_peak_rss_mb": max(m["python_peak_rss_mb"] for m in ms),
        "jvm_peak_rss_mb": max(m["jvm_peak_rss_mb"] for m in ms),
        "rows_in": sum(r for r in rows_in if r is not None) if any(r is not None for r in rows_in) else None,
        "rows_out": sum(r for r in rows_out if r is not None) if any(r is not None for r in rows_out) else None,
        "spark_tasks": sum(m["spark"]["spark_tasks"] for m in ms),
        "spark_task_s": round(sum(m["spark"]["spark_task_s"] for m in ms), 2),
        "python_workers": max(m["python_workers"] for m in ms),
        "jvm_start_s": None, "spark_ready_s": None,
        "tree_peak_rss_mb": max(m["tree_peak_rss_mb"] for m in ms),
        "linger_s": round(sum(m["linger_s"] for m in ms), 2),
        "load_1m": [ms[0]["load_1m"][0], ms[-1]["load_1m"][1]],  # the machine's, at the first start and the last end
    }
    # Spark's start, per process: the JVM process's start -> the SparkSession handed to the job (get_spark's
    # "Spark ... started" log line): jvm_start_s; the task process's start (Python imports included) -> the
    # same: spark_ready_s; the JVM's start -> SparkListenerApplicationStart (the SparkContext's constructor
    # begins; SparkContext and SparkSession set-up come after it): jvm_to_context_s
    def total(pairs):
        vals = [b - a for a, b in pairs if a is not None and b is not None]
        return round(sum(vals), 2) if vals else None

    line["jvm_start_s"] = total((m["java_started_at"], m.get("session_ready_at")) for m in ms)
    line["spark_ready_s"] = total((m["started_at"], m.get("session_ready_at")) for m in ms)
    app_start = [m["spark"]["app_start_ms"] / 1000 if m["spark"]["app_start_ms"] else None for m in ms]
    line["jvm_to_context_s"] = total((m["java_started_at"], a) for m, a in zip(ms, app_start))
    if len(ms) > 1:
        line["processes_run"] = len(ms)
    bad = [m for m in ms if m["returncode"] != 0]
    if bad:
        line["error"] = {"returncode": bad[0]["returncode"], "stderr_tail": bad[0]["stderr"][-3000:]}
    return line


def emit(line: dict, lines: list[dict]) -> None:
    lines.append(line)
    print(json.dumps(line), flush=True)


def run_world(items: int, workdir: Path, args, lines: list[dict]) -> bool:
    """Generate the world, run day 1 and day 2 through the DAG's stages; append the lines. False on a failure."""
    w = World(items, workdir, args)
    log = lambda msg: print(f"[scale {items}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"lake {w.dir / 'lake'}")
    m = w.run_stage("synth", 0, None, ["synth", "--scale", str(items), "--days", str(args.window_days + 2)])
    line = {"stage": "synth", "items": items, "day": 0, "wall_s": m["wall_s"], "cpu_s": m["cpu_s"],
            "cores_used": m["cores_used"], "peak_rss_mb": m["peak_rss_mb"], "dag_stage": False}
    if m["returncode"] != 0:
        line["error"] = {"returncode": m["returncode"], "stderr_tail": m["stderr"][-3000:]}
        emit(line, lines)
        return False
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake

    lake = Lake.from_settings(w.settings)
    meta = lake.read_json(layout.synth_world_meta_path(lake))
    line.update({k: meta.get("stats", {}).get(k) for k in ("keyphrases", "searches_per_day", "events")})
    emit(line, lines)
    days = lake.partitions("events")
    for day, ds in ((1, days[-2]), (2, days[-1])):
        plan = w.plan(ds)
        log(f"day {day} ds={ds}: train={plan['train']} ({plan['train_reason']})")

        def stage(name, argv, tag="", day=day, ds=ds):
            m = w.run_stage(name, day, ds, argv, tag)
            log(f"day {day} {name}{tag}: rc={m['returncode']} wall={m['wall_s']}s cpu={m['cpu_s']}s")
            return m

        def done(name, ms, *, day=day, **extra) -> bool:
            line = make_line(name, items, day, ms)
            line.update(extra)
            emit(line, lines)
            return "error" not in line

        if not done("ctr_labels", [stage("ctr_labels", ["ctr-labels", "--ds", ds])]):
            return False
        sel = stage("select_pairs", ["select-pairs", "--ds", ds])
        if not done("select_pairs", [sel]):
            return False
        shards = [int(s) for s in (sel["result"].get("shards") or sel["stats"].get("shards") or [])]
        label_ms = [stage("label", ["llm-label", "--ds", ds, "--shard", str(s)], tag=f"_s{s}") for s in shards]
        if label_ms and not done("label", label_ms, shards=len(shards)):
            return False
        if not done("merge_labels", [stage("merge_labels", ["merge-labels", "--ds", ds])]):
            return False
        if plan["train"]:
            cross = stage("train_cross", ["train-cross", "--ds", ds])
            if not done("train_cross", [cross], train_steps=args.train_steps):
                return False
            ref = cross["result"].get("version") or cross["result"].get("path")
            bi = stage("train_bi", ["train-bi", "--ds", ds] + (["--cross", str(ref)] if ref else []))
            if not done("train_bi", [bi], train_steps=args.train_steps):
                return False
            cand = bi["result"].get("version")
            ev = stage("evaluate", ["evaluate", "--ds", ds] + (["--candidate", str(cand)] if cand else []))
            if not done("evaluate", [ev], promoted=ev["result"].get("promoted")):
                return False
        else:
            for name in TRAIN_STAGES:
                emit({"stage": name, "items": items, "day": day, "skipped": True, "reason": plan["train_reason"]}, lines)
        for name, argv in (("export", ["export", "--ds", ds]),
                           ("embed_items", ["embed", "--ds", ds, "--what", "items"]),
                           ("embed_keyphrases", ["embed", "--ds", ds, "--what", "keyphrases"]),
                           ("index", ["index", "--ds", ds]),
                           ("recommend", ["recommend", "--ds", ds]),
                           ("publish", ["publish", "--ds", ds])):
            if not done(name, [stage(name, argv)]):
                return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"sizes {','.join(map(str, QUICK_SIZES))}, 4 training steps")
    p.add_argument("--sizes", default=None, help=f"comma-separated item counts (default {','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--window-days", type=int, default=7, help="ctr.window_days; the world has this + 2 days")
    p.add_argument("--train-steps", type=int, default=None, help="cross and bi step cap (default 40; --quick 4)")
    p.add_argument("--retrain-every-days", type=int, default=None,
                   help="train.retrain_every_days (default: the settings', 1 = the DAG trains every day)")
    p.add_argument("--master", default="local[*]", help="spark.master")
    p.add_argument("--interval", type=float, default=0.2, help="sampling interval, seconds")
    p.add_argument("--stage-timeout", type=float, default=4 * 3600, help="kill a stage after this many seconds")
    p.add_argument("--workdir", default=None, help="where the worlds go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the worlds, logs and event logs")
    p.add_argument("--out", default=None, help="result file (default bench/results/scale[_quick].json)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.train_steps is None:
        args.train_steps = 4 if args.quick else 40
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("scale_quick.json" if args.quick else "scale.json")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="kp-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[scale] sizes {sizes}, window {args.window_days} days, {args.train_steps} training steps, "
          f"work in {workdir}", file=sys.stderr, flush=True)
    t0 = time.time()
    lines: list[dict] = []
    ok, interrupted = True, None

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        for items in sorted(sizes):
            ok = run_world(items, workdir, args, lines) and ok
    except (KeyboardInterrupt, SystemExit) as exc:  # the lines so far are still written, marked interrupted
        ok, interrupted = False, f"{type(exc).__name__}{f' {exc.code}' if isinstance(exc, SystemExit) else ''}"
        print(f"[scale] interrupted ({interrupted}): writing the {len(lines)} lines measured so far",
              file=sys.stderr, flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(lines)
    summary.update({"bench": "scale", "quick": args.quick, "sizes": sorted(sizes), "ok": ok, "interrupted": interrupted,
                    "wall_s_total": round(time.time() - t0, 1), "results_file": str(out)})
    doc = {"lines": lines, "summary": summary, "sizes": sorted(sizes),
           "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "settings": {"window_days": args.window_days, "synth_days": args.window_days + 2,
                        "train_steps": args.train_steps, "retrain_every_days": args.retrain_every_days,
                        "master": args.master, "interval_s": args.interval, "cpus": os.cpu_count()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0 if ok else (143 if interrupted else 1)


if __name__ == "__main__":
    sys.exit(main())
