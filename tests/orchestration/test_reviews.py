"""The glue between Airflow's human-in-the-loop tasks, deadline alerts and asset partitions and the project's
functions (``keyphrase_pipeline.orchestration.reviews``, ``tasks.tag_partitions``): the shapes Airflow hands over
(a HITL task's XCom, a deadline callback's context) are built here as Airflow 3.3 builds them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil

import pytest
from distill_helpers import DS, trained_world
from testsupport import make_settings


@pytest.fixture
def env_settings(monkeypatch):
    """Put settings into the environment (the tasks read ``get_settings()``); returns a setter."""
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    def use(s):
        for k, v in settings_env(s).items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return s

    yield use
    get_settings.cache_clear()


def _pending(tmp_path, env_settings):
    """A trained lake where evaluate left a promotion waiting for a person (every call is close: band 1.0)."""
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.stages import evaluate

    w = trained_world(make_settings)
    root = tmp_path / "lake"
    shutil.copytree(w["lake"], root)
    s = env_settings(make_settings(root, train=w["settings"].train.model_dump(), serve={"dim": 16},
                                   review={"margin_band": 1.0, "topk_items": 0}))
    broken = f"{DS}-deadbeef"
    shutil.copytree(w["random"], layout.model_dir(s, broken))
    (root / "registry" / "students" / broken / "train_config.json").write_text(json.dumps({"ds": DS}))
    registry.set_champion(s, broken, "setup")
    stats = evaluate.run(s, DS, candidate=w["student"]["version"])
    return s, stats, w["student"]["version"], broken


def _answer(chosen, user="ana", at="2026-10-10T12:00:00+00:00"):
    """A HITL task's XCom as ``HITLOperator.execute_complete`` returns it (``responded_by_user`` None: the
    scheduler applied the defaults at the timeout)."""
    return {"chosen_options": chosen, "params_input": {}, "responded_at": at,
            "responded_by_user": {"id": user, "name": user} if user else None}


def test_the_approval_request_carries_the_figures_and_a_link(tmp_path, env_settings):
    from keyphrase_pipeline.orchestration import reviews

    s, stats, good, broken = _pending(tmp_path, env_settings)
    req = reviews.approval_request(stats)
    assert req["version"] == good and good in req["subject"]
    body = req["body"]
    assert "close call" in body and "| held-out F1 |" in body and f"{stats['metrics']['llm']['f1']:.4f}" in body
    assert f"{stats['champion_metrics']['llm']['f1']:.4f}" in body and broken in body
    assert "/keyphrases/#compare" in body and "**Approve**" in body
    # no person needed: the short-circuit skips the approval
    assert reviews.approval_request({**stats, "review": {"needed": False}}) == {}
    assert reviews.approval_request(None) == {}


@pytest.mark.parametrize("answer, champion, says", [
    (_answer(["Approve"]), "good", "approved by ana"),
    (_answer(["Reject"]), "broken", "rejected by ana"),
    (_answer(["Reject"], user=None), "broken", "no answer within"),  # the timeout's default
])
def test_apply_approval_carries_out_the_answer(tmp_path, env_settings, answer, champion, says):
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.orchestration import reviews

    s, stats, good, broken = _pending(tmp_path, env_settings)
    request = reviews.approval_request(stats)
    with pytest.raises(ConfigError, match="now waits on"):  # the person was asked about another version
        reviews.apply_approval({}, DS, {**request, "version": "2026-01-01-0000"}, answer)
    out = reviews.apply_approval({}, DS, request, answer)
    assert registry.champion(s) == {"good": good, "broken": broken}[champion]
    assert says in out["reason"] and out["review"]["decision"]["at"] in (answer["responded_at"],)


def test_hitl_answer_reads_who_and_when():
    from keyphrase_pipeline.orchestration.reviews import hitl_answer

    assert hitl_answer(_answer(["Approve"])) == (["Approve"], "ana", "2026-10-10T12:00:00+00:00")
    assert hitl_answer(_answer(["Reject"], user=None))[1] is None
    assert hitl_answer(None) == ([], None, None)


def test_approval_and_adjudication_task_arguments():
    from keyphrase_pipeline.orchestration import reviews

    s = make_settings("/tmp/unused", review={"approval_timeout_hours": 2, "adjudication_pairs": 3,
                                             "adjudication_timeout_hours": 5})
    a = reviews.approval_args(s)
    assert a["options"] == ["Approve", "Reject"] and a["defaults"] == ["Reject"]
    assert a["response_timeout"] == dt.timedelta(hours=2)
    e = reviews.adjudication_args(s)
    assert list(e["params"]) == ["pair_1", "pair_2", "pair_3"] and e["response_timeout"] == dt.timedelta(hours=5)
    assert e["params"]["pair_1"].value == "skip"


def test_record_adjudication_maps_form_fields_to_pairs(tmp_path, env_settings, monkeypatch):
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.orchestration import reviews

    s = env_settings(make_settings(tmp_path / "lake"))
    seen = {}

    def fake_record(settings, ds, pairs, answers, reviewer, at):
        seen.update(answers=answers, reviewer=reviewer, at=at)
        return {"recorded": 1}

    monkeypatch.setattr("keyphrase_pipeline.commands.adjudicate.record", fake_record)
    request = {"pairs": [{"pair_key": "aa"}, {"pair_key": "bb"}], "cross_version": "c1"}
    result = {**_answer(["OK"], user="bo"), "params_input": {"pair_1": "not relevant", "pair_2": "skip",
                                                             "pair_3": "skip"}}
    out = reviews.record_adjudication({}, DS, request, result)
    assert seen["answers"] == {"aa": "not relevant", "bb": "skip"} and seen["reviewer"] == "bo"
    assert seen["at"] == dt.datetime(2026, 10, 10, 12, tzinfo=dt.UTC) and out["answered"] and out["offered"] == 2
    stored = Lake.from_settings(s).read_json(Lake.from_settings(s).run_stats_path(DS, "adjudicate"))
    assert stored["recorded"] == 1
    seen.clear()
    out = reviews.record_adjudication({}, DS, request, _answer(["OK"], user=None))  # nobody answered
    assert not seen and out["recorded"] == 0 and not out["answered"]


def test_the_publish_deadline_alert_and_its_callback(tmp_path, env_settings):
    from airflow.sdk import DeadlineReference

    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.orchestration import reviews

    s = env_settings(make_settings(tmp_path / "lake", dag={"publish_deadline_hours": 6}))
    alert = reviews.publish_deadline(s)
    assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
    assert alert.interval == dt.timedelta(days=1, hours=6)  # 6 h after the end of the day's data interval
    assert reviews.publish_deadline(s.with_overrides(**{"dag.publish_deadline_hours": 0})) is None
    # the context the scheduler sends the callback (Deadline.handle_miss): the run as the REST API shows it
    context = {"dag_run": {"dag_id": "keyphrase_daily", "dag_run_id": "scheduled__2026-10-10", "state": "running",
                           "conf": {}, "data_interval_start": "2026-10-10T02:00:00Z",
                           "logical_date": "2026-10-10T02:00:00Z"},
               "deadline": {"id": "x", "deadline_time": "2026-10-11T08:00:00+00:00"}}
    asyncio.run(reviews.publish_deadline_missed(context=context, hours=6))
    lake = Lake.from_settings(s)
    record = lake.read_json(lake.run_alert_path("2026-10-10", "publish_deadline"))
    assert record["run_id"] == "scheduled__2026-10-10" and "were not published by 2026-10-11T08:00" in record["message"]
    # a second run of the day misses it too: the newest alert, the earlier one kept
    later = {**context, "dag_run": {**context["dag_run"], "dag_run_id": "manual__2"}}
    asyncio.run(reviews.publish_deadline_missed(context=later, hours=6))
    record = lake.read_json(lake.run_alert_path("2026-10-10", "publish_deadline"))
    assert record["run_id"] == "manual__2" and [e["run_id"] for e in record["earlier"]] == ["scheduled__2026-10-10"]
    # a backfill run past its deadline is not an alert; nor is a run still open after the day was published in time
    for ds_, extra in (("2026-10-12", {"run_type": "backfill"}), ("2026-10-13", {})):
        run = {**context["dag_run"], **extra, "data_interval_start": f"{ds_}T02:00:00Z", "dag_run_id": f"r-{ds_}"}
        if not extra:
            lake.write_run_stats(ds_, "publish", {"version": "v"})  # written now: before a deadline of tomorrow
            due = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        else:
            due = "2026-10-13T12:00:00+00:00"
        asyncio.run(reviews.publish_deadline_missed(context={"dag_run": run, "deadline": {"deadline_time": due}},
                                                    hours=6))
        assert not lake.exists(lake.run_alert_path(ds_, "publish_deadline")), ds_
    # published, but after the deadline: a miss
    late = {**context["dag_run"], "data_interval_start": "2026-10-13T02:00:00Z", "dag_run_id": "r-late"}
    asyncio.run(reviews.publish_deadline_missed(context={"dag_run": late, "deadline": {
        "deadline_time": "2026-10-14T12:00:00+00:00"}}, hours=6))
    assert lake.read_json(lake.run_alert_path("2026-10-13", "publish_deadline"))["run_id"] == "r-late"
    # a manual run of another day: the ds param names the day
    ds, rec = reviews.deadline_record({**context, "dag_run": {**context["dag_run"], "conf": {"ds": "2026-10-05"}}}, 6)
    assert ds == "2026-10-05" and rec["ds"] == "2026-10-05"


def test_stage_tasks_mark_their_asset_events_with_the_day():
    from keyphrase_pipeline.orchestration.assets import asset
    from keyphrase_pipeline.orchestration.tasks import tag_partitions

    class Accessor:
        def __init__(self):
            self.keys, self.extra = set(), {}

        def add_partitions(self, keys):
            self.keys.update([keys] if isinstance(keys, str) else keys)

    class Events(dict):
        def __missing__(self, key):
            self[key] = Accessor()
            return self[key]

    s = make_settings("/tmp/unused")
    events = Events()
    assert tag_partitions("merge_labels", "2026-10-10", context={"outlet_events": events}, settings=s) == ["llm_store"]
    # the day in the event's extra; no partition key by default (it would stop ordinary asset-scheduled consumers)
    assert events[asset("llm_store")].extra == {"ds": "2026-10-10"} and events[asset("llm_store")].keys == set()
    keyed = s.with_overrides(**{"dag.asset_partition_keys": True})
    assert tag_partitions("embed", "2026-10-10", "items", context={"outlet_events": events},
                          settings=keyed) == ["item_embeddings"]
    assert events[asset("item_embeddings")].keys == {"2026-10-10"}
    assert tag_partitions("ctr_labels", "2026-10-10", context={"outlet_events": events}, settings=s) == ["ctr_labels"]
    assert tag_partitions("merge_labels", "2026-10-10") == []  # outside a running task


def test_a_backfill_run_offers_no_adjudication(tmp_path, env_settings, monkeypatch):
    from keyphrase_pipeline.orchestration import reviews

    env_settings(make_settings(tmp_path / "lake"))
    picked = {"ds": DS, "pairs": [{"pair_key": "aa", "title": "t", "category": "c", "keyphrase": "k",
                                   "llm_label": 1, "p_judge": 0.9, "p_cross": 0.1, "disagreement": 0.8}],
              "cross_version": "c1", "why": ""}
    monkeypatch.setattr("keyphrase_pipeline.commands.adjudicate.pick", lambda settings, ds: picked)
    assert reviews.adjudication_request({}, DS, "scheduled")["pairs"] == picked["pairs"]
    assert reviews.adjudication_request({}, DS, "backfill") == {}
    assert reviews.adjudication_request({}, DS, "manual", labelled=False) == {}  # skip_llm: no pair judged
    assert reviews.adjudication_request({}, DS, "DagRunType.BACKFILL_JOB") == {}
