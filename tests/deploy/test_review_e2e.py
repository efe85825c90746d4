"""``make review-e2e`` (a real scheduler run answered through the REST API): its recorded result holds every
check, and each check can fail. The run itself takes about 20 minutes and needs free ports and Chromium: it is
not part of ``make test`` (run ``make review-e2e``; the result lands in ``var/review_e2e/result.json``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from keyphrase_pipeline.deploy import review_e2e

RECORDED = Path(__file__).parent / "review_e2e_result.json"


def _recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_the_recorded_run_passes_every_check():
    result = _recorded()
    assert result["failed_checks"] == [] and review_e2e.failed_checks(result) == []
    # what the run did, as recorded
    assert result["scheduled"]["state"] == "success"
    assert set(result["cases"]) == {"no_answer", "reject", "approve"}
    assert result["cases"]["reject"]["required_actions_page"]["lists_the_request"] is True
    assert result["deadline"]["in_triggerer_log"] is True


def _break(path: str, value):
    def apply(r):
        d = r
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return apply


@pytest.mark.parametrize("breakage, expect", [
    (_break("scheduled.state", "failed"), "the scheduled run"),
    (_break("adjudication.recorded", 0), "adjudication"),
    (_break("adjudication.reviewers", ["nobody"]), "adjudication"),
    (_break("cases.reject.promoted", True), "reject: promoted"),
    (_break("cases.approve.promoted", False), "approve: promoted"),
    (_break("cases.no_answer.reason", "rejected by admin"), "no_answer: promoted"),
    (_break("cases.no_answer.decision.timed_out", False), "no_answer: decision"),
    (_break("cases.reject.while_waiting.current", "changed"), "reject: what is published changed"),
    (_break("cases.approve.pending_review", False), "approve: the request was not pending"),
    (_break("cases.approve.after.champion", "someone-else"), "approve: champion after"),
    (_break("cases.reject.after.champion", "someone-else"), "reject: champion after"),
    (_break("cases.approve.state", "failed"), "approve: run failed"),
    (_break("deadline.alert", None), "deadline"),
    (_break("deadline.in_triggerer_log", False), "deadline"),
    (_break("deadline.published_day_not_alerted.alert", {"run_id": "x"}), "a re-run of a day published in time"),
    (_break("human_labels", {"applied": 0}), "human labels"),
    (_break("cases.reject.required_actions_page.lists_the_request", False), "Required Actions"),
    (_break("backfill.runs", {}), "backfill: runs"),
    (_break("backfill.after.champion", "moved"), "backfill: the re-embedding backfill moved the champion"),
    (_break("backfill.embedded", 0), "backfill: nothing re-embedded"),
    (_break("backfill.event_days", []), "asset events carry the days"),
    (_break("backfill.deadline_alert", {"run_id": "x"}), "backfill: a publish deadline alert"),
])
def test_each_check_can_fail(breakage, expect):
    result = copy.deepcopy(_recorded())
    breakage(result)
    assert any(expect in f for f in review_e2e.failed_checks(result)), review_e2e.failed_checks(result)


def test_nothing_new_published_after_an_approval_fails():
    result = copy.deepcopy(_recorded())
    result["cases"]["approve"]["after"]["current"] = result["cases"]["approve"]["before"]["current"]
    assert "approve: nothing new was published after the approval" in review_e2e.failed_checks(result)


def test_the_e2e_waits_out_the_next_scheduled_interval():
    import datetime as dt

    utc = dt.timezone.utc
    assert review_e2e.seconds_before_next_interval(dt.datetime(2026, 12, 6, 1, 50, tzinfo=utc)) == 600
    assert review_e2e.seconds_before_next_interval(dt.datetime(2026, 12, 6, 2, 0, tzinfo=utc)) == 86400
    assert review_e2e.seconds_before_next_interval(dt.datetime(2026, 12, 6, 3, 0, tzinfo=utc)) == 23 * 3600
