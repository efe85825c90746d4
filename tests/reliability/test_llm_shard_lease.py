"""Two workers on one shard (issue 13): a retried task whose first try is still alive, or a manual rerun beside
the scheduled one, must not both pay the judge. Real processes, the real OpenAIJudge and a local
OpenAI-compatible endpoint that counts every answer it bills; plus the lease's stale-holder takeover."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from labelling_helpers import CountingJudge, make_pairs, write_pairs
from reliability_helpers import DS, label_in_another_process

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels import store as label_store
from keyphrase_pipeline.labels.lease import BOOT_ID, HOST, LeaseBusy, LeaseLost, read_lease
from keyphrase_pipeline.stages import llm_label, merge_labels

N_PAIRS = 40


@pytest.fixture
def shard_world(settings):
    s = settings.with_overrides(**{"judge.batch_size": 5, "judge.concurrency": 1, "judge.lease_ttl_s": 2.0,
                                   "judge.lease_wait_s": 120.0})
    assert write_pairs(s, DS, make_pairs(N_PAIRS), shard_size=100) == [0]
    return s


def test_two_processes_labelling_the_same_shard_pay_for_each_pair_once(shard_world, llm_server):
    s = shard_world
    llm_server.delay_s = 0.04  # 40 answers, one at a time: the holder is busy for ~2 s
    overrides = {"judge.backend": "openai", "judge.model": "fake-llm", "judge.endpoint": llm_server.url,
                 "judge.api_key": "sk-local", "judge.timeout_s": 5.0, "judge.max_retries": 1, "judge.concurrency": 1,
                 "judge.batch_size": 5, "judge.lease_ttl_s": 2.0, "judge.lease_wait_s": 120.0}
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=label_in_another_process, args=(s.lake_root, overrides, DS, 0, go, results))
               for _ in range(2)]
    for w in workers:
        w.start()
    ready = [results.get(timeout=120) for _ in workers]  # both imported and built their judge
    assert [r[0] for r in ready] == ["ready", "ready"]
    go.set()  # both start labelling at the same moment
    out = [results.get(timeout=180) for _ in workers]
    for w in workers:
        w.join(30)
    assert [o[0] for o in out] == ["ok", "ok"], out
    billed = Counter(llm_server.answered)
    assert len(billed) == N_PAIRS and set(billed.values()) == {1}  # each pair judged exactly once
    stats = sorted((o[1] for o in out), key=lambda st: st["judged"])
    waiter, holder = stats
    assert holder["judged"] == N_PAIRS and not holder["skipped"]
    # the second worker waited for the holder and reports the shard as done by it, paying nothing
    assert waiter["skipped"] and waiter["judged"] == 0 and waiter["judge_calls"] == 0
    assert waiter["waited_for"].split(":")[1] == str(holder["worker_pid"])  # host:pid:token of the holder
    assert {waiter["worker_pid"], holder["worker_pid"]} == {r[1] for r in ready}
    lake = Lake.from_settings(s)
    assert not os.path.exists(layout.shard_lease_path(lake, DS, 0))  # released
    assert merge_labels.run(s, DS)["rows"] == N_PAIRS


def _plant_lease(path: str, age_s: float, **info) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = {"token": "t-planted", "holder": "deadhost:4242:t-plante", "host": "deadhost", "pid": 4242, **info}
    with open(path, "w") as f:
        json.dump(body, f)
    past = time.time() - age_s
    os.utime(path, (past, past))


def test_a_stale_lease_is_taken_over_and_reported(shard_world):
    s = shard_world  # lease_ttl_s = 2
    lake = Lake.from_settings(s)
    path = layout.shard_lease_path(lake, DS, 0)
    _plant_lease(path, age_s=30)  # a worker on another machine stopped beating 30 s ago
    judge = CountingJudge(s)
    out = llm_label.run(s, DS, 0, judge=judge)
    assert out["judged"] == N_PAIRS and judge.scored == N_PAIRS
    assert out["lease_taken_over"]["holder"] == "deadhost:4242:t-plante"
    assert "no heartbeat" in out["lease_taken_over"]["reason"]
    assert not os.path.exists(path) and label_store.read_done(lake, DS, 0)["lease_taken_over"]


def test_a_dead_holder_on_this_host_is_taken_over_at_once(shard_world):
    s = shard_world.with_overrides(**{"judge.lease_ttl_s": 3600.0})  # its heartbeat is fresh: only the pid tells
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = layout.shard_lease_path(Lake.from_settings(s), DS, 0)
    _plant_lease(path, age_s=0, host=HOST, boot_id=BOOT_ID, pid=dead.pid, holder=f"{HOST}:{dead.pid}:t-plante")
    out = llm_label.run(s, DS, 0, judge=CountingJudge(s))
    assert out["judged"] == N_PAIRS and f"pid {dead.pid}" in out["lease_taken_over"]["reason"]


def test_a_live_holder_makes_the_second_worker_give_up_cleanly(shard_world):
    s = shard_world.with_overrides(**{"judge.lease_ttl_s": 3600.0, "judge.lease_wait_s": 0.3})
    path = layout.shard_lease_path(Lake.from_settings(s), DS, 0)
    _plant_lease(path, age_s=0)  # beating now, on another machine
    judge = CountingJudge(s)
    with pytest.raises(LeaseBusy, match="deadhost:4242") as err:
        llm_label.run(s, DS, 0, judge=judge)
    assert err.value.exit_code == 1 and judge.calls == 0  # retry later; nothing paid
    assert read_lease(path)["token"] == "t-planted"  # the holder's lease is untouched


class LeaseThief(CountingJudge):
    """Another worker takes the shard over while this one judges its second batch (e.g. its heartbeat stalled)."""

    def __init__(self, settings, path):
        super().__init__(settings)
        self.path = path

    def score(self, pairs):
        if self.calls == 1:
            os.remove(self.path)
            _plant_lease(self.path, age_s=0, token="t-thief", holder="otherhost:1:t-thief")
        return super().score(pairs)


def test_a_worker_that_lost_its_lease_stops_paying(shard_world):
    s = shard_world
    lake = Lake.from_settings(s)
    path = layout.shard_lease_path(lake, DS, 0)
    judge = LeaseThief(s, path)
    with pytest.raises(LeaseLost, match="otherhost"):
        llm_label.run(s, DS, 0, judge=judge)
    assert judge.calls == 2  # stopped before the third paid call
    assert len(label_store.read_staging(lake, DS)) == 10  # the two batches it paid for are kept
    assert label_store.read_done(lake, DS, 0) is None
    assert read_lease(path)["token"] == "t-thief"  # and it did not remove the new holder's lease
