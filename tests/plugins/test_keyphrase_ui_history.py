"""The run history behind the Keyphrases page (``keyphrase_ui.history``): statuses inferred from the lake's run
stats and failure records, durations, links into Airflow's UI, key metrics and flagged deviations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from ui_helpers import write_run_day

END = "2026-11-10"


def day(offset: int) -> str:
    return (dt.date.fromisoformat(END) - dt.timedelta(days=offset)).isoformat()


@pytest.fixture
def lake(tmp_path):
    from keyphrase_pipeline.core.lake import Lake

    return Lake(str(tmp_path / "lake"))


def history(lake, days=14, threshold=0.25, window=7):
    from keyphrase_ui import history as h

    return h.history(lake, days, threshold, window)


def by_ds(h):
    return {d["ds"]: d for d in h["days"]}


def test_empty_lake_says_what_to_do(lake):
    h = history(lake)
    assert h["days"] == [] and h["end"] is None
    assert "No run recorded yet" in h["message"] and "Trigger the keyphrase_daily DAG" in h["message"]


def test_a_healthy_day_every_stage_ok_with_durations_metrics_and_exact_links(lake):
    ids = {"dag_id": "keyphrase_daily", "run_id": "manual__2026-11-11T02:00:00+00:00", "try_number": 1}
    write_run_day(lake, END, wall={"merge_labels": 61.5, "publish": 2.25}, airflow=ids)
    d = by_ds(history(lake, days=1))[END]
    assert d["status"] == "ok" and all(s["status"] == "ok" for s in d["stages"].values())
    # duration: the task's wall clock when recorded, else the stage's own timer, else nothing
    assert d["stages"]["merge_labels"]["seconds"] == 61.5 and d["stages"]["merge_labels"]["seconds_source"] == "task wall clock"
    assert d["stages"]["ctr_labels"]["seconds"] == 11.7 and "own timer" in d["stages"]["ctr_labels"]["seconds_source"]
    assert d["stages"]["index"]["seconds"] is None
    # links: the DAG run and each task's log, from the ids recorded with the stats (run id URL-quoted)
    run = "manual__2026-11-11T02%3A00%3A00%2B00%3A00"
    assert d["run_url"] == f"/dags/keyphrase_daily/runs/{run}" and d["run_url_exact"] is True
    assert d["stages"]["publish"]["task_url"] == f"/dags/keyphrase_daily/runs/{run}/tasks/group.publish"
    m = d["metrics"]
    assert m["pairs_judged"] == 4000 and m["yes_rate"] == 0.40 and m["ctr_positives"] == 5900
    assert m["champion_f1"] == 0.7214 and m["challenger_f1"] == 0.7112 and m["promoted"] is False  # kept champion
    assert m["items_embedded"] == 42 and m["items_reused"] == 2784 and m["index_recall"] == 1.0
    assert m["recommendations"] == 56520 and m["item_coverage"] == 1.0
    assert d["flags"] == []


def test_promoted_challenger_is_the_champion_f1_and_coverage_is_a_share(lake):
    write_run_day(lake, END, changes={"evaluate": {"promoted": True},
                                      "recommend": {"items_with_recs": 2000}})
    m = by_ds(history(lake, days=1))[END]["metrics"]
    assert m["champion_f1"] == 0.7112 and m["promoted"] is True
    assert m["item_coverage"] == pytest.approx(2000 / 2826)


def test_without_run_ids_the_day_links_to_the_runs_list_and_says_so(lake):
    write_run_day(lake, END)
    d = by_ds(history(lake, days=1))[END]
    assert d["run_url_exact"] is False
    assert d["run_url"].startswith("/dags/keyphrase_daily/runs?logical_date_gte=2026-11-10T00")
    assert "no Airflow run id" in d["note"]
    assert all(s["task_url"] is None for s in d["stages"].values())


def test_failed_stage_later_stages_not_run_and_the_task_link(lake):
    from keyphrase_pipeline.stages import stats_tasks

    STATS_TASKS = stats_tasks()

    write_run_day(lake, END, skip=("index", "recommend", "publish"),
                  airflow={"dag_id": "keyphrase_daily", "run_id": "scheduled__x"})
    lake.write_run_failure(END, "index", {"error_type": "GateError", "error": "recall@20 0.40 < 0.95", "retried": False,
                                          "wall_seconds": 3.5, "airflow": {"dag_id": "keyphrase_daily", "run_id": "scheduled__x",
                                                                           "task_id": "serve.index", "map_index": -1}})
    d = by_ds(history(lake, days=1))[END]
    assert d["status"] == "failed" and "index" in d["reason"]
    ix = d["stages"]["index"]
    assert ix["status"] == "failed" and "GateError" in ix["reason"] and "recall@20 0.40" in ix["reason"]
    assert ix["seconds"] == 3.5 and ix["task_url"] == "/dags/keyphrase_daily/runs/scheduled__x/tasks/serve.index"
    assert d["stages"]["recommend"]["status"] == "not_run" and "earlier stage failed" in d["stages"]["recommend"]["reason"]
    assert d["stages"]["recommend"]["task_url"] is None
    assert STATS_TASKS["index"] == "serve.index"


def test_a_failure_older_than_the_stats_is_an_ok_retry_and_a_newer_one_fails(lake):
    import time

    lake.write_run_failure(END, "merge_labels", {"error_type": "ConnectionError", "error": "judge endpoint down",
                                               "detail": {"shard": 3}})
    time.sleep(0.01)
    write_run_day(lake, END)
    st = by_ds(history(lake, days=1))[END]["stages"]["merge_labels"]
    assert st["status"] == "ok" and "after a failed try" in st["reason"]
    time.sleep(0.01)
    lake.write_run_failure(END, "merge_labels", {"error_type": "ConnectionError", "error": "judge endpoint down"})
    st = by_ds(history(lake, days=1))[END]["stages"]["merge_labels"]
    assert st["status"] == "failed" and "after its last success" in st["reason"]


def test_a_shard_failure_without_stats_names_the_shard(lake):
    write_run_day(lake, END, skip=("merge_labels", "train_cross", "train_bi", "evaluate", "export", "embed_items",
                                   "embed_keyphrases", "index", "recommend", "publish"))
    lake.write_run_failure(END, "merge_labels", {"error_type": "DataError", "error": "12% unparsable", "detail": {"shard": 3}})
    st = by_ds(history(lake, days=1))[END]["stages"]
    assert st["merge_labels"]["status"] == "failed" and "(shard 3)" in st["merge_labels"]["reason"]


def test_index_that_refused_to_publish_is_failed(lake):
    write_run_day(lake, END, skip=("recommend", "publish"),
                  changes={"index": {"status": "refused", "ann_recall_at_k": 0.4}})
    st = by_ds(history(lake, days=1))[END]["stages"]["index"]
    assert st["status"] == "failed" and "recall@K 0.4 below the floor 0.95" in st["reason"]


def test_a_cross_encoder_skipped_on_one_class_labels_says_why_and_no_f1_is_charted(lake):
    """train_cross trains nothing on labels of one class (training_data.label_balance) and the gate cannot compare:
    the stage says why, and F1 against such labels (about 0) is no figure, so it raises no false alarm."""
    why = "the judge labelled 0.0% of the 4000 stored pairs relevant"
    write_run_day(lake, END, changes={"train_cross": {"skipped": True, "version": None, "why": why},
                                      "evaluate": {"promoted": False, "metrics": {"llm": {"f1": 0.0}},
                                                   "champion_metrics": {"llm": {"f1": 0.0}},
                                                   "test_set": {"label_balance": {"usable": False, "why": why}}}})
    d = by_ds(history(lake, days=1))[END]
    assert d["stages"]["train_cross"]["status"] == "ok" and why in d["stages"]["train_cross"]["reason"]
    assert d["metrics"]["challenger_f1"] is None and d["metrics"]["champion_f1"] is None
    assert d["metrics"]["promoted"] is False  # the gate's decision is still shown


def test_index_recall_of_builds_before_the_key_was_renamed(lake):
    write_run_day(lake, END, changes={"index": {"recall_at_k": 0.97}})
    (Path(lake.run_stats_path(END, "index"))).write_text(json.dumps(
        {k: v for k, v in json.loads(Path(lake.run_stats_path(END, "index")).read_text()).items() if k != "ann_recall_at_k"}))
    assert by_ds(history(lake, days=1))[END]["metrics"]["index_recall"] == 0.97


def test_missing_stage_versus_skipped_by_design(lake):
    # no training stats: not a training day (not run, with the reason); no ctr_labels stats while later ones ran: missing
    write_run_day(lake, END, skip=("ctr_labels", "train_cross", "train_bi", "evaluate"))
    d = by_ds(history(lake, days=1))[END]
    assert d["stages"]["ctr_labels"]["status"] == "missing" and "later stages ran" in d["stages"]["ctr_labels"]["reason"]
    assert d["stages"]["train_bi"]["status"] == "not_run" and "training day" in d["stages"]["train_bi"]["reason"]
    assert d["status"] == "incomplete"
    # a training group that ran only in part: the rest of it is missing
    write_run_day(lake, day(1), skip=("train_bi",))
    d = by_ds(history(lake, days=2))[day(1)]
    assert d["stages"]["train_bi"]["status"] == "missing"


def test_a_day_with_no_run_and_a_day_still_running(lake):
    write_run_day(lake, END)
    write_run_day(lake, day(2), skip=("export", "embed_items", "embed_keyphrases", "train_ctr", "index", "recommend",
                                        "publish"))
    h = by_ds(history(lake, days=3))
    assert h[day(1)]["status"] == "no_run" and "Trigger keyphrase_daily with the ds param" in h[day(1)]["reason"]
    assert h[day(1)]["run_url"] is None
    assert h[day(2)]["status"] == "partial" and h[day(2)]["stages"]["publish"]["status"] == "not_run"


def test_a_day_deviating_from_the_previous_week_is_flagged_with_the_reason(lake):
    for i in range(1, 9):
        write_run_day(lake, day(i), changes={"merge_labels": {"yes_rate": 0.40 + 0.01 * (i % 2)}})
    write_run_day(lake, END, changes={"merge_labels": {"yes_rate": 0.60},
                                      "recommend": {"items_with_recs": 1400}})
    h = history(lake, days=9)
    d = by_ds(h)[END]
    flags = {f["metric"]: f for f in d["flags"]}
    assert set(flags) == {"yes_rate", "item_coverage"}, d["flags"]
    y = flags["yes_rate"]
    assert y["n_days"] == 7 and y["mean"] == pytest.approx((4 * 0.41 + 3 * 0.40) / 7)
    assert y["change"] == pytest.approx(0.60 / y["mean"] - 1)
    assert "judge yes-rate 60.0% vs mean 40.6%" in y["reason"] and "up" in y["reason"] and "±25%" in y["reason"]
    assert flags["item_coverage"]["change"] < -0.25 and "down" in flags["item_coverage"]["reason"]
    assert all(not by_ds(h)[day(i)]["flags"] for i in range(1, 9))  # the steady days are not flagged
    # the threshold is the setting's: at 60% nothing is flagged
    assert by_ds(history(lake, days=9, threshold=0.6))[END]["flags"] == []


def test_the_first_shown_day_is_compared_with_days_before_the_window_shown(lake):
    for i in range(1, 8):
        write_run_day(lake, day(i))
    write_run_day(lake, END, changes={"ctr_labels": {"positives": 100}})
    d = history(lake, days=1)["days"]
    assert len(d) == 1 and [f["metric"] for f in d[0]["flags"]] == ["ctr_positives"]


def test_unreadable_stats_are_a_failed_stage_not_a_crash(lake):
    write_run_day(lake, END)
    Path(lake.run_stats_path(END, "recommend")).write_text("{not json")
    st = by_ds(history(lake, days=1))[END]["stages"]["recommend"]
    assert st["status"] == "failed" and "unreadable" in st["reason"]


def test_stats_task_ids_are_tasks_of_the_dag(dagbag):
    from keyphrase_pipeline.stages import stats_tasks

    STATS_TASKS = stats_tasks()
    from keyphrase_ui.history import STAGES

    assert set(STATS_TASKS) == set(STAGES)
    assert set(STATS_TASKS.values()) <= set(dagbag.dags["keyphrase_daily"].task_ids)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))


def test_history_json_is_json(lake):
    write_run_day(lake, END)
    json.dumps(history(lake))


def test_days_before_the_first_recorded_run_are_not_shown_as_missed_runs(lake):
    """A young lake (the demo runs three days) shows its own days, not a 14-day window padded with "no run"
    rows asking to trigger days the pipeline never meant to run; a gap after the first run is still shown."""
    write_run_day(lake, END)
    write_run_day(lake, day(2))
    h = history(lake, days=14)
    assert [d["ds"] for d in h["days"]] == [END, day(1), day(2)]
    assert by_ds(h)[day(1)]["status"] == "no_run"


def test_trend_plot_of_a_young_lake_ticks_each_day_once(lake):
    """The demo's three days: matplotlib's automatic date ticks fell between days and printed each day's label
    several times ("11-02 11-02 11-02 11-03 ..."); the plot ticks whole days only."""
    import importlib

    import matplotlib.pyplot as plt

    ui = importlib.import_module("keyphrase_ui.app")
    for i in range(3):
        write_run_day(lake, day(i))
    fig = ui.history_figure(history(lake, days=14))
    try:
        fig.canvas.draw()
        labels = [t.get_text() for t in fig.axes[-1].get_xticklabels() if t.get_text()]
        assert labels == [day(2)[5:], day(1)[5:], END[5:]], labels
    finally:
        plt.close(fig)


def test_a_day_whose_records_are_all_unreadable_is_not_the_latest_run(lake):
    from keyphrase_ui import history as h

    write_run_day(lake, END)
    write_run_day(lake, day(1))
    future = Path(lake.run_stats_dir("2027-01-01"))
    future.mkdir(parents=True)
    (future / "publish.json").write_text("")
    (future / "index.json").write_text("[1, 2]")
    got = history(lake, days=14)
    assert got["end"] == END and [d["ds"] for d in got["days"]] == [END, day(1)]
    assert any("runs/ds=2027-01-01" in n and "readable" in n for n in got["notes"]), got["notes"]
    days, notes = h.recorded_days(lake)
    assert days == [day(1), END]


def test_small_wording_a_file_is_not_a_folder_and_a_failure_without_error_text(lake):
    import time

    from keyphrase_ui import history as h

    lake.write_run_failure(END, "merge_labels", {"error": None, "try_number": "x"})
    time.sleep(0.01)
    write_run_day(lake, END)
    Path(lake.path("runs"), "ds=2026-11-05").write_text("oops")
    st = by_ds(history(lake, days=1))[END]["stages"]["merge_labels"]
    assert st["status"] == "ok" and "None" not in st["reason"] and "no error text" in st["reason"], st["reason"]
    _, notes = h.recorded_days(lake)
    assert any("runs/ds=2026-11-05" in n and "not a folder" in n for n in notes), notes
    assert not any("empty folder" in n for n in notes if "2026-11-05" in n)
    lake.write_run_failure(day(1), "merge_labels", {"error": None, "try_number": "x"})
    st = by_ds(history(lake, days=2))[day(1)]["stages"]["merge_labels"]
    assert st["status"] == "failed" and "None" not in st["reason"] and "no error text" in st["reason"], st["reason"]


def test_a_manual_promotion_today_is_not_the_latest_run(lake):
    """`kp promote` writes runs/ds=<today>/promote.json: the default window ended on that day with 14 "no run"
    days and hid the real runs. Only the DAG's stages make a run day."""
    from keyphrase_ui import history as h

    write_run_day(lake, day(3))
    write_run_day(lake, day(2))
    lake.write_run_stats(END, "promote", {"version": "bi-x", "reason": "manual"})
    lake.write_run_stats(day(1), "rollback", {"version": "bi-y"})
    lake.write_run_stats(day(2), "promote", {"version": "bi-z"})  # a run day with a manual action stays a run day
    got = history(lake, days=14)
    assert got["end"] == day(2) and [d["ds"] for d in got["days"]] == [day(2), day(3)], got["end"]
    assert by_ds(got)[day(2)]["status"] == "ok"
    days, notes = h.recorded_days(lake)
    assert days == [day(3), day(2)]
    assert any(f"runs/ds={END}" in n and "promote.json" in n and "not a run day" in n for n in notes), notes
    assert any(f"runs/ds={day(1)}" in n and "rollback.json" in n for n in notes), notes


def test_compare_after_a_promotion_shows_that_decision_against_the_champion_it_replaced():
    """When the newest challenger was promoted, the view shows ITS gate decision against the champion it replaced
    (not the older version's 'first model' decision), and reads evaluate's relevance_recall_at_k rows."""
    from keyphrase_ui import explain

    new = {"version": "2026-11-04-b", "promotion": {"promoted": True, "champion_before": "2026-11-02-a", "ds": "2026-11-04",
                                                    "reason": "F1 0.7162 vs champion 0.7053: not worse",
                                                    "champion_metrics": {"llm": {"f1": 0.7053}}},
           "metrics": {"eval": {"llm": {"f1": 0.7162},
                                "relevance_recall_at_k": {"tail": {"relevance_recall_at_k": 0.82}}}}}
    old = {"version": "2026-11-02-a", "promotion": {"promoted": True, "reason": "first model: no champion"},
           "metrics": {"eval": {"llm": {"f1": 0.70}}}}
    out = explain.compare(None, None, [new, old], "2026-11-04-b", [], ["p1"], "p1")
    assert out["challenger"] == "2026-11-04-b" and out["baseline"] == "2026-11-02-a"
    assert out["gate"]["promoted"] is True and out["gate"]["reason"].startswith("F1 0.7162")
    rows = {m["label"]: m for m in out["metrics"]}
    assert rows["F1 vs LLM labels (held-out test set)"]["champion"] == 0.7053
    assert rows["recall@K of truly relevant (tail items)"]["challenger"] == 0.82
    assert not any(c["command"].startswith("kp promote --version 2026-11-04-b") for c in out["commands"])
    # not promoted: the newest non-champion is the challenger, against the champion (unchanged behaviour)
    new["promotion"]["promoted"] = False
    out = explain.compare(None, None, [new, old], "2026-11-02-a", [], ["p1"], "p1")
    assert out["challenger"] == "2026-11-04-b" and "baseline" not in out


def test_a_day_recorded_before_the_merge_stage_was_renamed_reads_as_merge_labels(lake):
    """Lakes written before the rename hold ``runs/ds=D/llm_labels.json`` (and ``_failed/llm_labels.json``): the page
    shows them in the merge_labels row, with their metrics, and ``Lake.run_stats_path`` finds them."""
    write_run_day(lake, END)
    new = Path(lake.run_stats_path(END, "merge_labels"))
    new.rename(new.with_name("llm_labels.json"))
    assert lake.run_stats_path(END, "merge_labels").endswith("/llm_labels.json")
    st = by_ds(history(lake, days=1))[END]
    assert st["stages"]["merge_labels"]["status"] == "ok" and "llm_labels" not in st["stages"]
    assert st["metrics"]["pairs_judged"] == 4000
    lake.write_run_stats(END, "merge_labels", {"rows": 10, "yes_rate": 0.5})  # a rerun writes the new name: it wins
    assert lake.run_stats_path(END, "merge_labels").endswith("/merge_labels.json")
    assert by_ds(history(lake, days=1))[END]["metrics"]["pairs_judged"] == 10


def test_each_stage_says_where_it_ran():
    """The page's per-stage record carries where the stage ran, from its run stats (models.devices)."""
    from keyphrase_ui.history import device_text

    assert device_text({"device": "cuda", "precision": "bf16"}) == "cuda (bf16)"
    assert device_text({"device": "cpu"}) == "cpu"
    assert device_text({"onnx_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}) == "ONNX Runtime CUDA"
    # what the executors' sessions held wins over what the driver chose: an executor without CUDA shows
    held = {"onnx_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "executor_providers": {"CUDAExecutionProvider+CPUExecutionProvider": 90, "CPUExecutionProvider": 10}}
    assert device_text(held) == "ONNX Runtime CPU and CUDA (executors differ)"
    assert device_text({**held, "executor_providers": {"CPUExecutionProvider": 100}}) == "ONNX Runtime CPU"
    assert device_text({"judge_devices": ["cuda:0 (bf16)", "remote http://vllm:8000/v1"]}) == \
        "judge: cuda:0 (bf16), remote http://vllm:8000/v1"
    assert device_text({"faiss_gpu": True}) == "FAISS on the GPU" and device_text({"faiss_gpu": False}) == "FAISS on the CPU"
    assert device_text({"rows": 3}) is None and device_text({"device": 3}) is None


def test_the_history_carries_the_device_of_a_stage(lake):
    write_run_day(lake, END, changes={"train_bi": {"device": "cuda", "precision": "bf16"}})
    st = by_ds(history(lake, days=1))[END]["stages"]
    assert st["train_bi"]["device"] == "cuda (bf16)" and st["publish"]["device"] is None


def test_a_day_lists_its_deadline_alert_approval_and_adjudication(lake):
    write_run_day(lake, END, changes={"evaluate": {"version": "v2", "promoted": False, "review": {
        "needed": True, "pending": True, "reasons": ["close call: F1 0.80 is +0.001 from the gate's threshold"]}}})
    write_run_day(lake, day(1), changes={"evaluate": {"version": "v1", "promoted": True, "reason": "approved by ana",
                                                      "review": {"needed": True, "decision": {"decision": "approve"}}}})
    lake.write_run_stats(day(1), "adjudicate", {"answered": True, "recorded": 2, "offered": 3, "reviewer": "ana",
                                                "disagree": 1})
    lake.write_json(lake.run_alert_path(END, "publish_deadline"),
                    {"message": "recommendations for ds=2026-11-10 were not published by 2026-11-11T12:00",
                     "run_id": "scheduled__x", "noticed_at": "2026-11-11T12:00:30"})
    days = by_ds(history(lake))
    alerts = {a["kind"]: a["text"] for a in days[END]["alerts"]}
    assert alerts["deadline"].startswith("publish deadline missed: recommendations for ds=2026-11-10")
    assert "scheduled__x" in alerts["deadline"]
    assert alerts["approval"].startswith("promotion of v2 waits for a person") and "close call" in alerts["approval"]
    earlier = {a["kind"]: a["text"] for a in days[day(1)]["alerts"]}
    assert earlier["approval"] == "promotion of v1 decided by a person: approved by ana"
    assert earlier["adjudication"] == "adjudication: 2 of 3 pair(s) labelled by ana (1 against the judge)"
    assert days[day(1)]["status"] == days[END]["status"]  # the records are not stages: the day's status is unchanged
    (Path(lake.run_alert_path(END, "publish_deadline"))).write_text("{not json")
    assert "unreadable" in by_ds(history(lake))[END]["alerts"][0]["text"]


def test_a_day_with_only_a_deadline_alert_is_shown(lake):
    """A run still waiting for its input when its deadline passed has no stage record, only the alert."""
    write_run_day(lake, day(1))
    lake.write_json(lake.run_alert_path(END, "publish_deadline"), {"message": "not published by noon", "run_id": "r"})
    days = by_ds(history(lake))
    assert END in days and days[END]["alerts"][0]["kind"] == "deadline"
