"""LLM shard faults, end to end on the tiny world's real select-pairs shards: a judge worker killed mid-shard,
and the openai judge against a local HTTP endpoint that goes down or hangs. Reruns finish; no pair is
labelled twice, none is lost, and every stored label is the judge's answer for THAT pair.

(tests/jobs/test_llm_label.py covers a crash inside one hand-made shard; here the shards come from
``select_pairs``, the whole day is labelled and merged, and the next selection is checked too.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from keyphrase_pipeline.jobs import label_store, llm_label, select_pairs
from keyphrase_pipeline.jobs.judges.base import JudgeUnavailable
from keyphrase_pipeline.jobs.judges.prompt import build_prompts
from keyphrase_pipeline.synthetic.simulated_judge import SimulatedJudge
from keyphrase_pipeline.jobs.label_store import read_done, read_manifest, read_staging, staging_files
from keyphrase_pipeline.synthetic.world import World, simulated_p_yes
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake
from reliability_helpers import DS, FakeLLM, fast_openai_judge, openai_settings

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
        label_store.run(s, DS)  # a half-labelled day is never merged

    again = DyingJudge(s)
    out = llm_label.run_all(s, DS, judge=again)
    assert out["judged"] == len(selected) - 60
    paid = dying.paid + again.paid
    assert len(paid) == len(set(paid)) == len(selected)  # nothing paid twice, nothing skipped

    merged = label_store.run(s, DS)
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
    merged = label_store.run(s2, DS)
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

    merged = label_store.run(s, DS)
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
