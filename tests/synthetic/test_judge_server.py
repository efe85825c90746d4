"""The stand-in judge server answers the openai judge's exact request with the simulated annotator's P(yes) in
top_logprobs, labelled as a stand-in; prompts it cannot place become unusable answers, never guesses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from fastapi.testclient import TestClient

from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels.judges.base import UnusableAnswer, p_yes_from_logprobs
from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge, parse_top_logprobs
from keyphrase_pipeline.labels.judges.prompt import build_prompts
from keyphrase_pipeline.synthetic.judge_server import STAND_IN_MODEL, create_app, prompt_pattern
from keyphrase_pipeline.synthetic.world import World, simulated_p_yes


@pytest.fixture
def pairs(tiny_world):
    lake = Lake.from_settings(tiny_world)
    cat = pads.dataset(lake.path("catalog"), format="parquet", partitioning="hive").to_table(
        columns=["item_id", "title", "category"]).to_pandas().drop_duplicates("item_id").head(6)
    kps = pads.dataset(lake.path("keyphrases"), format="parquet").to_table(
        columns=["keyphrase_id", "text"]).to_pandas().rename(columns={"text": "keyphrase"}).head(5)
    return cat.merge(kps, how="cross").reset_index(drop=True)


def test_answers_the_openai_judge_request_with_the_simulated_p_yes(tiny_world, pairs):
    client = TestClient(create_app(tiny_world))
    judge_settings = tiny_world.model_copy(update={"judge": tiny_world.judge.model_copy(
        update={"backend": "openai", "model": STAND_IN_MODEL, "endpoint": "http://unused/v1"})})
    judge = OpenAIJudge(judge_settings)
    try:
        got = []
        for prompt in build_prompts(pairs, judge_settings):
            resp = client.post("/v1/chat/completions", json=judge._payload(prompt))
            assert resp.status_code == 200
            body = resp.json()
            assert body["model"] == STAND_IN_MODEL and "STAND-IN" in body["model"]
            got.append(p_yes_from_logprobs(parse_top_logprobs(body)))
    finally:
        judge.close()
    want = simulated_p_yes(World.load(tiny_world), pairs["item_id"].to_numpy(), pairs["keyphrase_id"].to_numpy(),
                           accuracy=tiny_world.judge.simulated_accuracy, seed=tiny_world.synth.seed)
    np.testing.assert_allclose(got, want, atol=1e-9)
    stats = client.get("/stats").json()
    assert stats == {"judge_calls": len(pairs), "answered": len(pairs), "unknown": 0,
                     "distinct_prompts": len(pairs), "repeated_prompts": 0}
    health = client.get("/health").json()
    assert health["stand_in"] is True
    assert math.isclose(sum(want > 0.5) + sum(want < 0.5), len(pairs))


def test_an_unknown_pair_is_unusable_not_guessed(tiny_world, pairs):
    client = TestClient(create_app(tiny_world))
    odd = pd.DataFrame([{"title": "no such item anywhere", "category": "nowhere", "keyphrase": pairs["keyphrase"][0]}])
    prompt = build_prompts(odd, tiny_world)[0]
    body = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}]}).json()
    with pytest.raises(UnusableAnswer):
        p_yes_from_logprobs(parse_top_logprobs(body))
    assert client.get("/stats").json()["unknown"] == 1
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 400


def test_prompt_pattern_reads_escaped_quotes_back():
    from keyphrase_pipeline.labels.judges.prompt import build_prompt

    prompt = build_prompt('a "quoted" \\ title', "cat", 'kp "x"', "v1")
    m = prompt_pattern("v1").match(prompt)
    assert m and m.group("title") == 'a \\"quoted\\" \\\\ title' and m.group("keyphrase") == 'kp \\"x\\"'
    assert prompt_pattern("v0").match(build_prompt("t", "c", "k", "v0")).group("keyphrase") == "k"


def test_counts_survive_a_restart_and_a_prompt_asked_twice_is_counted(tmp_path):
    """The fault cases stop the stand-in for a minute: with ``stats_file`` its counters (and the prompts it has
    answered) carry over, so judge calls can be compared with distinct pairs for the whole day."""
    from keyphrase_pipeline.synthetic.judge_server import CallBook

    path = tmp_path / "stats.json"
    book = CallBook(path)
    for prompt in ("a", "b"):
        book.call()
        book.answered(prompt, known=True)
    again = CallBook(path)  # the server restarted
    again.call()
    again.answered("a", known=True)  # asked twice: paid twice
    again.call()
    again.answered("zzz", known=False)
    assert again.snapshot() == {"judge_calls": 4, "answered": 3, "unknown": 1, "distinct_prompts": 3,
                                "repeated_prompts": 1}
    assert CallBook(None).snapshot()["judge_calls"] == 0  # without a file: counted since start


def test_the_delay_holds_each_answer_back(tiny_world, pairs):
    import time

    client = TestClient(create_app(tiny_world, delay_s=0.3))
    prompt = build_prompts(pairs.head(1), tiny_world)[0]
    t = time.monotonic()
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}]})
    assert resp.status_code == 200 and time.monotonic() - t >= 0.3


def test_the_llm_like_annotator_is_served_under_its_own_name(tiny_world, pairs):
    """judge.simulated_errors=llm: another served name (another judge id in the labels) and its own P(yes)."""
    from keyphrase_pipeline.synthetic.judge_server import STAND_IN_LLM_MODEL

    s = tiny_world.with_overrides(**{"judge.simulated_errors": "llm"})
    client = TestClient(create_app(s))
    assert client.get("/v1/models").json()["data"][0]["id"] == STAND_IN_LLM_MODEL
    judge_settings = s.with_overrides(**{"judge.backend": "openai", "judge.model": STAND_IN_LLM_MODEL,
                                         "judge.endpoint": "http://unused/v1"})
    judge = OpenAIJudge(judge_settings)
    try:
        body = client.post("/v1/chat/completions", json=judge._payload(build_prompts(pairs, judge_settings)[0])).json()
    finally:
        judge.close()
    assert body["model"] == STAND_IN_LLM_MODEL
    want = simulated_p_yes(World.load(s), pairs["item_id"].to_numpy()[:1], pairs["keyphrase_id"].to_numpy()[:1],
                           accuracy=s.judge.simulated_accuracy, seed=s.synth.seed, errors="llm")
    assert p_yes_from_logprobs(parse_top_logprobs(body)) == pytest.approx(want[0], abs=1e-9)
