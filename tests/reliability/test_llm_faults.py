"""LLM shard faults, end to end on the tiny world's real select-pairs shards: a judge worker killed mid-shard,
and the openai judge against a local HTTP endpoint that goes down or hangs. Reruns finish; no pair is
labelled twice, none is lost, and every stored label is the judge's answer for THAT pair.

(tests/stages/test_llm_label.py covers a crash inside one hand-made shard; here the shards come from
``select_pairs``, the whole day is labelled and merged, and the next selection is checked too.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from reliability_helpers import DS, FakeLLM, fast_openai_judge, openai_settings

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels import store as label_store
from keyphrase_pipeline.labels.judges.base import JudgeUnavailable
from keyphrase_pipeline.labels.judges.prompt import build_prompts
from keyphrase_pipeline.labels.store import read_done, read_manifest, read_staging, staging_files
from keyphrase_pipeline.stages import llm_label, merge_labels, select_pairs
from keyphrase_pipeline.synthetic.simulated_judge import SimulatedJudge
from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

pytestmark = pytest.mark.spark


class DyingJudge(SimulatedJudge):
    """The real simulated annotator, counting what it is paid for, killed after ``fail_after`` batches."""

    def __init__(self, settings, fail_after: int | None = None):
        super().__init__(settings)
        self.fail_after = fail_after
        self.calls = 0
        self.paid: list[tuple[int, int]] = []

    def score(self, pairs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("worker killed (SIGKILL stand-in)")
        self.calls += 1
        self.paid += list(zip(pairs["item_id"].astype(int), pairs["keyphrase_id"].astype(int)))
        return super().score(pairs)


def test_killed_worker_then_rerun_labels_every_selected_pair_once(pairs_world, spark):
    s = pairs_world
    lake = Lake.from_settings(s)
    manifest = read_manifest(lake, DS)
    selected = select_pairs.read_pairs(s, DS)
    assert len(manifest["shards"]) >= 2 and len(selected) > 100

    dying = DyingJudge(s, fail_after=3)  # 3 batches of 20 pairs, then the worker dies inside shard 0
    with pytest.raises(RuntimeError, match="killed"):
        llm_label.run_all(s, DS, judge=dying)
    assert len(read_staging(lake, DS)) == 60 and read_done(lake, DS, manifest["shards"][0]) is None
    with pytest.raises(DataError, match="not labelled yet"):
        merge_labels.run(s, DS)  # a half-labelled day is never merged

    again = DyingJudge(s)
    out = llm_label.run_all(s, DS, judge=again)
    assert out["judged"] == len(selected) - 60
    paid = dying.paid + again.paid
    assert len(paid) == len(set(paid)) == len(selected)  # nothing paid twice, nothing skipped

    merged = merge_labels.run(s, DS)
    assert merged["rows"] == len(selected) and merged["duplicates_in_staging"] == 0
    stored = label_store.read_labels(s)
    assert stored["pair_key"].is_unique
    assert set(zip(stored.item_id, stored.keyphrase_id)) == set(zip(selected.item_id, selected.keyphrase_id))
    # not corrupted: every stored answer is the annotator's answer for that very pair
    expect = simulated_p_yes(World.load(s), stored["item_id"].to_numpy(), stored["keyphrase_id"].to_numpy(),
                             accuracy=s.judge.simulated_accuracy, seed=s.synth.seed)
    np.testing.assert_allclose(stored["p_yes"].to_numpy(), expect)

    # a rerun of the day (Airflow "clear") selects the same pairs and pays for none of them again
    select_pairs.run(s, DS, spark=spark)
    assert set(select_pairs.read_pairs(s, DS)["pair_key"]) == set(selected["pair_key"])
    rerun = DyingJudge(s)
    llm_label.run_all(s, DS, judge=rerun)
    assert rerun.calls == 0

    # and the next day's selection never asks for a stored pair again
    import shutil

    next_day = "2026-10-13"
    shutil.copytree(lake.path("catalog", ds=DS), lake.path("catalog", ds=next_day))
    select_pairs.run(s, next_day, spark=spark)
    fresh = select_pairs.read_pairs(s, next_day)
    assert len(fresh) > 0 and not set(fresh["pair_key"]) & set(stored["pair_key"])


def test_openai_endpoint_down_or_hanging_then_back(pairs_world, llm_server):
    s = openai_settings(pairs_world, llm_server)  # chunks of 5 prompts, 1 retry, 0.3 s timeout
    lake = Lake.from_settings(s)
    shards = read_manifest(lake, DS)["shards"]
    selected = select_pairs.read_pairs(s, DS)

    # 1) the endpoint dies after 23 answers: 4 chunks are staged, and the 3 answers of the 5th chunk received
    # before it died are staged too (paid for: kept, not thrown away with the failed chunk)
    llm_server.fail_after = 23
    with pytest.raises(JudgeUnavailable):
        llm_label.run(s, DS, shards[0], judge=fast_openai_judge(s))
    assert llm_server.refused >= 2  # the request and its one retry (and the chunk's last prompt)
    assert len(read_staging(lake, DS)) == 23 and read_done(lake, DS, shards[0]) is None

    # 2) it hangs past the client timeout on another shard: nothing staged, nothing answered
    llm_server.state = "hang"
    with pytest.raises(JudgeUnavailable):
        llm_label.run(s, DS, shards[1], judge=fast_openai_judge(s))
    assert staging_files(lake, DS, shards[1]) == [] and len(llm_server.answered) == 23

    # 3) back up: the reruns finish every shard, two workers per chunk this time
    llm_server.state = "up"
    s2 = s.with_overrides(**{"judge.concurrency": 2})
    for shard in shards:
        llm_label.run(s2, DS, shard, judge=fast_openai_judge(s2))
    merged = merge_labels.run(s2, DS)
    assert merged["rows"] == len(selected)

    billed = Counter(llm_server.answered)
    assert len(billed) == len(selected)  # every pair asked...
    assert max(billed.values()) == 1  # ...and none paid twice, not even the chunk in flight when it died
    stored = label_store.read_labels(s2)
    prompts = build_prompts(stored, s2)
    # every stored P(yes) is the endpoint's answer to that pair's own prompt (no mix-up across threads)
    np.testing.assert_allclose(stored["p_yes"].to_numpy(), [FakeLLM.p_yes(p) for p in prompts], atol=1e-9)
    assert set(stored["judge_model"]) == {"fake-llm"}


def test_maybe_answers_are_quarantined_and_the_day_still_merges(pairs_world, llm_server):
    """Issue 13: the endpoint answers "Maybe" (no yes/no token; temperature 0, so on every retry too) for one pair
    of every shard. Each is quarantined with its raw answer, every shard finishes, merge-labels proceeds and
    counts them, and a rerun of the day pays for nothing."""
    s = openai_settings(pairs_world, llm_server, concurrency=2)  # shards of 100: max_unparsable_share 0.05 -> 5 each
    lake = Lake.from_settings(s)
    shards = read_manifest(lake, DS)["shards"]
    selected = select_pairs.read_pairs(s, DS)
    odd = pd.concat([select_pairs.read_pairs(s, DS, sh).head(1) for sh in shards], ignore_index=True)
    llm_server.maybe = set(build_prompts(odd, s))
    assert len(llm_server.maybe) == len(shards) >= 2

    out = llm_label.run_all(s, DS, judge=fast_openai_judge(s))
    assert out["quarantined"] == len(shards) and out["judged"] == len(selected) - len(shards)
    assert all(read_done(lake, DS, sh)["quarantined_in_shard"] == 1 for sh in shards)
    billed = Counter(llm_server.answered)
    assert len(billed) == len(selected) and max(billed.values()) == 1

    merged = merge_labels.run(s, DS)
    assert merged["rows"] == len(selected) - len(shards)
    assert merged["quarantined"] == len(shards) and merged["quarantined_by_reason"] == {"no_yes_no_token": len(shards)}
    q = label_store.read_quarantine(lake, DS)
    assert set(q["pair_key"]) == set(label_store.pair_keys(odd, "fake-llm", s.judge.prompt_version))
    assert q["raw_answer"].str.contains('"Maybe"').all() and set(q["judge_model"]) == {"fake-llm"}

    import os

    from keyphrase_pipeline.core import layout

    for sh in shards:  # an operator clears the whole day (markers gone): nothing is asked again
        os.remove(layout.done_marker(lake, DS, sh))
    assert llm_label.run_all(s, DS, judge=fast_openai_judge(s))["judge_calls"] == 0
    assert len(llm_server.answered) == len(selected)


def _hand_made_shard(tmp_path, server, n_pairs: int, **judge):
    """Settings for the openai judge at ``server`` and one shard of ``n_pairs`` hand-made pairs (no Spark)."""
    from labelling_helpers import make_pairs, write_pairs
    from reliability_helpers import make_settings

    s = openai_settings(make_settings(tmp_path / "lake"), server, **judge)
    write_pairs(s, DS, make_pairs(n_pairs), shard_size=100)
    return s


def test_a_brief_stall_pays_again_only_for_the_requests_in_flight_when_it_began(tmp_path, llm_server):
    """Issue 27: ``judge.timeout_s`` (0.1 s) below the endpoint's latency during a 0.5 s stall (0.2 s per answer).
    Before, every retry timed out too and was computed all the same: 28 answers for 20 pairs. Now the retry
    after a timeout waits longer, the observed latency raises every later timeout and the requests in flight
    are cut down, so only the requests in flight when the stall began are computed twice; the stats count them."""
    s = _hand_made_shard(tmp_path, llm_server, 20, timeout_s=0.1, max_retries=5, concurrency=2)
    llm_server.stall_s, llm_server.stall_for_s = 0.2, 0.5
    out = llm_label.run(s, DS, 0, judge=fast_openai_judge(s))
    llm_server.wait_idle()
    computed = len(llm_server.answered)
    assert out["judged"] == 20 and len(set(llm_server.answered)) == 20
    assert computed <= 20 * (1 + s.judge.max_timeout_retries)  # the policy's bound
    assert computed - 20 <= s.judge.concurrency  # in practice: the requests in flight when it stalled
    assert out["possibly_paid"] == computed - 20 >= 1  # every request computed for nothing is counted
    assert out["timed_out_pairs"] == 0


def test_a_slow_endpoint_is_waited_for_and_its_answers_are_kept(tmp_path, llm_server):
    """Issue 27: an endpoint constantly slower (0.2 s) than ``judge.timeout_s`` (0.1 s). Before, every request timed
    out on every retry of every Airflow try: the endpoint computed 4 answers per pair per try and none was
    stored. Now the retry waits long enough, the answers are stored in the first try and the later tries pay
    nothing."""
    s = _hand_made_shard(tmp_path, llm_server, 4, timeout_s=0.1, max_retries=3, concurrency=2)
    llm_server.stall_s = 0.2
    outs = []
    for _ in range(3):  # three Airflow tries
        try:
            outs.append(llm_label.run(s, DS, 0, judge=fast_openai_judge(s)))
        except JudgeUnavailable as exc:
            outs.append(exc)
    llm_server.wait_idle()
    computed = len(llm_server.answered)
    lake = Lake.from_settings(s)
    assert len(read_staging(lake, DS)) == 4 and read_done(lake, DS, 0) is not None
    assert computed <= 4 * (1 + s.judge.max_timeout_retries)
    assert outs[0]["judged"] == 4 and outs[0]["possibly_paid"] == computed - 4
    assert [o["judge_calls"] for o in outs[1:]] == [0, 0]


def test_an_endpoint_slower_than_the_longest_timeout_is_given_up_after_the_cap(tmp_path, llm_server, caplog):
    """Issue 27: an endpoint slower (0.35 s) than even ``judge.max_timeout_s`` (0.2 s). A pair is sent again after a
    timeout at most ``judge.max_timeout_retries`` (1) times; then it is quarantined as ``timed_out`` (not asked
    again that day, whatever the number of Airflow tries) and the try fails (exit 1). Before: 4 requests
    computed per pair per try, 24 over three tries for 4 pairs."""
    s = _hand_made_shard(tmp_path, llm_server, 4, timeout_s=0.1, max_timeout_s=0.2, max_retries=3, concurrency=2)
    llm_server.stall_s = 0.35
    caplog.set_level("WARNING")
    outs, judges = [], []
    for _ in range(3):  # three Airflow tries
        judges.append(fast_openai_judge(s))
        try:
            outs.append(llm_label.run(s, DS, 0, judge=judges[-1]))
        except JudgeUnavailable as exc:
            outs.append(exc)
    llm_server.wait_idle()
    computed = len(llm_server.answered)
    assert computed <= 4 * (1 + s.judge.max_timeout_retries)
    assert sum(j.possibly_paid for j in judges) == computed  # each one counted by the client
    assert "possibly paid" in caplog.text
    assert isinstance(outs[0], JudgeUnavailable) and "judge.max_timeout_retries" in str(outs[0])
    lake = Lake.from_settings(s)
    q = label_store.read_quarantine(lake, DS)
    assert set(q["reason"]) == {llm_label.TIMED_OUT_REASON} and q["pair_key"].is_unique
    assert len(read_staging(lake, DS)) == 0 and len(q) == computed // 2
    assert isinstance(outs[-1], dict) and outs[-1]["judge_calls"] == 0  # nothing left to ask that day
