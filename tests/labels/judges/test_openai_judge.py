"""The openai backend against a real local HTTP server speaking the OpenAI chat-completions format."""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest
from testsupport import serve_on_loopback

from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.labels.judges.base import JudgeUnavailable
from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge

P_GOOD = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5))
P_BAD = math.exp(-3.0) / (math.exp(-3.0) + math.exp(-0.05))


class FakeLLM:
    """Answers 'yes'-leaning when the keyphrase mentions 'good'. ``script`` holds one-shot misbehaviours."""

    def __init__(self):
        self.script: list[str] = []
        self.maybe_for: tuple[str, ...] = ()  # prompts holding one of these are always answered "Maybe" (temperature 0)
        self.delay_s = 0.0  # every answer waits this long (a slow endpoint: a worker can be killed mid-batch)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()

    def handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization"))
                    action = fake.script.pop(0) if fake.script else "ok"
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if action == "429":
                    return self._send(429, {"error": "rate limited"}, {"Retry-After": "0"})
                if action == "500":
                    return self._send(500, {"error": "boom"})
                if action == "401":
                    return self._send(401, {"error": "bad key"})
                if action == "504":  # a gateway in front of the model server stopped waiting for it
                    return self._send(504, {"error": "upstream request timeout"})
                if action == "502":  # a gateway whose upstream is down answers at once
                    return self._send(502, {"error": "bad gateway"})
                if action == "slow":
                    time.sleep(1.0)
                if action == "drop":  # the request was received (maybe computed), the connection drops
                    self.close_connection = True
                    return None
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if action == "malformed":
                    return self._send(200, {"choices": [{"message": {"content": "Sure! As an AI"}}]})
                if action == "offformat":
                    lp = [{"token": "Sure", "logprob": -0.1}, {"token": "!", "logprob": -3}]
                    answer = {"token": "Sure", "logprob": -0.1, "top_logprobs": lp}
                    return self._send(200, {"choices": [{"logprobs": {"content": [answer]}}]})
                if any(m in body["messages"][0]["content"] for m in fake.maybe_for):
                    lp = [{"token": "Maybe", "logprob": -0.2}, {"token": "Perhaps", "logprob": -1.9}, {"token": "It", "logprob": -4}]
                    answer = {"token": "Maybe", "logprob": -0.2, "top_logprobs": lp}
                    return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Maybe"},
                                                         "logprobs": {"content": [answer]}}]})
                good = "good" in body["messages"][0]["content"]
                top = ([{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}, {"token": "The", "logprob": -6}]
                       if good else [{"token": " no", "logprob": -0.05}, {"token": " yes", "logprob": -3.0}])
                assert body["max_tokens"] == 1 and body["logprobs"] is True and body["temperature"] == 0
                answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                                       "logprobs": {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                                 "top_logprobs": top}]}}],
                          "model": body["model"], "usage": {"prompt_tokens": len(body["messages"][0]["content"]) // 4}}
                if action == "othermodel":  # a server that serves another model than the one asked for
                    answer["model"] = "other-llm"
                if action == "prefixmodel":  # another model whose name starts with the one asked for
                    answer["model"] = body["model"] + "-mini"
                if action == "dated":  # a hosted API answers with the dated version of the name
                    answer["model"] = body["model"] + "-2024-08-06"
                if action == "swallowed":  # a chat template that drops the user turn: only its own tokens
                    answer["usage"] = {"prompt_tokens": 12}
                self._send(200, answer)

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return H


@pytest.fixture
def server():
    yield from serve_on_loopback(FakeLLM())


PAIRS = pd.DataFrame({"title": ["Blue mug", "Red shoe", "Lamp"], "category": ["Kitchen", "Shoes", "Home"],
                      "keyphrase": ["good mug", "bad idea", "good lamp"]})


def make(settings, server, **judge):
    opts = {"judge.backend": "openai", "judge.model": "test-llm", "judge.endpoint": server.url,
            "judge.api_key": "sk-test-123", "judge.timeout_s": 0.4, "judge.max_retries": 3, "judge.concurrency": 2}
    opts.update({f"judge.{k}": v for k, v in judge.items()})
    return OpenAIJudge(settings.with_overrides(**opts), backoff_base_s=0.01, backoff_max_s=0.05)


def test_scores_from_logprobs_and_sends_the_key(settings, server):
    j = make(settings, server)
    p = j.score(PAIRS)
    assert p == pytest.approx([P_GOOD, P_BAD, P_GOOD])
    assert len(server.requests) == 3 and set(server.auth) == {"Bearer sk-test-123"}
    # requests run concurrently (judge.concurrency=2): their arrival order is not fixed
    assert {r["model"] for r in server.requests} == {"test-llm"}
    assert sum('keyphrase: "good mug"' in r["messages"][0]["content"] for r in server.requests) == 1
    assert "sk-test-123" not in repr(j) and "sk-test-123" not in repr(j.settings)


def test_sends_the_served_name_while_the_identity_carries_the_revision(settings, server):
    j = make(settings, server, model_revision="2026-12")
    assert j.model == "test-llm@rev:2026-12"
    j.score(PAIRS.iloc[:1])
    assert [r["model"] for r in server.requests] == ["test-llm"]


@pytest.mark.parametrize("action, name", [("othermodel", "other-llm"), ("prefixmodel", "test-llm-mini")])
def test_refuses_an_answer_from_another_model(settings, server, action, name):
    server.script = [action]
    j = make(settings, server, concurrency=1)
    with pytest.raises(ConfigError, match=f"answered with model '{name}'.*KP_JUDGE__MODEL"):
        j.score(PAIRS.iloc[:1])
    assert len(server.requests) == 1  # not retried


def test_refuses_a_server_whose_chat_template_drops_the_prompt(settings, server):
    """Same prompt-token count for prompts 60 characters apart: the template kept only its own tokens."""
    pairs = pd.DataFrame({"title": ["Mug", "Mug " + "x" * 60], "category": ["Kitchen"] * 2, "keyphrase": ["a", "b"]})
    server.script = ["swallowed", "swallowed"]
    with pytest.raises(ConfigError, match="12 prompt tokens for prompts of .* chat template drops the user turn"):
        make(settings, server, concurrency=1).score(pairs)
    # a template that keeps the prompt reports more tokens for the longer one: no refusal
    assert len(make(settings, server, concurrency=1).score(pairs)) == 2


def test_model_names_match_exactly_or_with_a_date():
    from keyphrase_pipeline.labels.judges.openai_judge import same_model

    assert same_model("gpt-4o", "gpt-4o") and same_model("gpt-4o-2024-08-06", "gpt-4o")
    assert same_model("gpt-4o-20240806", "gpt-4o")
    assert not same_model("gpt-4o-mini", "gpt-4o") and not same_model("smollm2-135m-v2", "smollm2-135m")
    assert not same_model("gpt-4", "gpt-4o")


def test_a_dated_model_name_or_the_check_switched_off_passes(settings, server):
    server.script = ["dated", "othermodel"]
    assert make(settings, server, concurrency=1).score(PAIRS.iloc[:1]) == pytest.approx([P_GOOD])
    assert make(settings, server, concurrency=1, check_served_model=False).score(PAIRS.iloc[:1]) == \
        pytest.approx([P_GOOD])


def test_retries_429_500_and_timeouts_then_succeeds(settings, server):
    server.script = ["429", "500", "slow"]
    j = make(settings, server, concurrency=1)
    assert j.score(PAIRS.iloc[:1]) == pytest.approx([P_GOOD])
    assert len(server.requests) == 4 and j.requests_sent == 4


def test_gives_up_after_max_retries(settings, server):
    server.script = ["500"] * 10
    j = make(settings, server, concurrency=1, max_retries=2)
    with pytest.raises(JudgeUnavailable, match="after 2 retries"):
        j.score(PAIRS.iloc[:1])
    assert len(server.requests) == 3


def test_an_endpoint_down_stops_the_batch_after_the_requests_in_flight(settings, server):
    """Issue 15 (cluster fault case 3, judge stopped for a minute): once one request has failed for good, the
    batch's requests not sent yet are not sent; before, each of them spent its own retries and backoff, so a
    batch of n pairs took n / concurrency times the retry budget to fail (62 s for 36 pairs on the cluster)."""
    server.script = ["500"] * 100
    j = make(settings, server, concurrency=2, max_retries=2)
    pairs = pd.concat([PAIRS] * 4, ignore_index=True)  # 12 prompts
    v = j.verdicts(pairs)
    assert isinstance(v.error, JudgeUnavailable)
    assert len(server.requests) <= 2 * 3  # the two requests in flight, each with its 2 retries; not 12 * 3
    assert v.p_yes.shape == (12,) and all(x != x for x in v.p_yes)  # none answered, all NaN


def test_retry_after_in_both_forms():
    """Issue 27: ``Retry-After`` is delta-seconds or an HTTP-date (RFC 9110); the date form was ignored."""
    from datetime import datetime, timezone

    from keyphrase_pipeline.labels.judges.openai_judge import retry_after_s

    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=timezone.utc)
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # in the past: at once
    assert retry_after_s("7", now=now) == 7.0 and retry_after_s(" 2.5 ", now=now) == 2.5
    assert retry_after_s("-3", now=now) == 0.0
    assert retry_after_s("soon", now=now) is None and retry_after_s(None) is None and retry_after_s("nan") is None


def test_the_backoff_waits_for_a_retry_after_date(settings, server):
    """The delay before a retry is the one an HTTP-date ``Retry-After`` asks for (capped at ``backoff_max_s``)."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    s = settings.with_overrides(**{"judge.backend": "openai", "judge.model": "test-llm", "judge.endpoint": server.url})
    j = OpenAIJudge(s, backoff_base_s=0.01, backoff_max_s=60.0)
    in_20_s = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 18.9 <= j._delay(0, in_20_s) <= 20.0  # the date has whole seconds
    assert j._delay(0, format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)) == 60.0
    assert j._delay(0, "3") == 3.0
    assert j._delay(0, None) <= 0.01


def test_the_timeout_grows_with_observed_latency_and_each_timed_out_try():
    """Issue 27: a request waits at least ``judge.timeout_multiple`` x the p95 latency of the answers seen, and a
    retry after a timeout that multiple of the previous timeout, never more than ``judge.max_timeout_s``."""
    from keyphrase_pipeline.labels.judges.openai_judge import TimeoutPolicy

    p = TimeoutPolicy(base_s=0.1, max_s=2.0, multiple=4.0)
    assert [p.timeout(k) for k in range(4)] == pytest.approx([0.1, 0.4, 1.6, 2.0])
    assert p.latency_s() is None
    for x in [0.01] * 18 + [0.2, 0.2]:  # p95 of these answers: 0.2 s
        p.observe(x)
    assert p.latency_s() == pytest.approx(0.2)
    assert [p.timeout(k) for k in range(3)] == pytest.approx([0.8, 2.0, 2.0])
    for _ in range(300):  # the endpoint is fast again: the window forgets the stall
        p.observe(0.01)
    assert p.timeout(0) == pytest.approx(0.1)  # never below judge.timeout_s


def test_fewer_requests_in_flight_after_a_timeout():
    """Issue 27: each timeout halves the requests in flight (at least 1); answers let it grow back by one."""
    from keyphrase_pipeline.labels.judges.openai_judge import InFlightLimit

    g = InFlightLimit(4)
    g.timed_out()
    assert g.limit == 2
    g.timed_out()
    g.timed_out()
    assert g.limit == 1
    for _ in range(1 + 2):  # grows by one after `limit` answers in a row
        g.answered()
    assert g.limit == 3
    for _ in range(20):
        g.answered()
    assert g.limit == 4


def test_a_slow_endpoint_is_waited_for_after_one_timeout(settings, server):
    """Each answer takes 0.2 s, ``judge.timeout_s`` is 0.1 s: the first request times out (computed by the server
    all the same: counted as possibly paid), its retry waits longer and the later requests wait long enough
    at once. Before, every try timed out until the retries ran out."""
    server.delay_s = 0.2
    j = make(settings, server, concurrency=1, timeout_s=0.1, max_retries=3)
    assert j.score(PAIRS) == pytest.approx([P_GOOD, P_BAD, P_GOOD])
    assert len(server.requests) == 4 and j.possibly_paid == 1
    assert j.timeouts.timeout(0) >= 4 * 0.2


def test_a_connection_dropped_after_sending_is_possibly_paid_and_capped(settings, server):
    """A connection that drops after the request was sent counts as possibly paid like a timeout; after
    ``judge.max_timeout_retries`` (1) such retries the pair is given up (reason ``timed_out``), not retried up to
    ``judge.max_retries`` (3)."""
    server.script = ["drop"]
    j = make(settings, server, concurrency=1)
    assert j.score(PAIRS.iloc[:1]) == pytest.approx([P_GOOD])
    assert len(server.requests) == 2 and j.possibly_paid == 1

    server.script = ["drop"] * 5
    j = make(settings, server, concurrency=1)
    v = j.verdicts(PAIRS.iloc[:1])
    assert len(server.requests) == 2 + 2 and j.possibly_paid == 2 and v.possibly_paid == 2
    assert isinstance(v.error, JudgeUnavailable) and "judge.max_timeout_retries" in str(v.error)
    assert v.unusable[0][0] == "timed_out"


def test_a_gateway_timeout_is_possibly_paid_and_capped(settings, server):
    """Behind a proxy a stall shows as HTTP 504 (the model server may have computed the answer): it counts as
    possibly paid and is capped like a client timeout, not retried up to ``judge.max_retries`` (was: 4 requests,
    none counted)."""
    server.script = ["504"] * 5
    j = make(settings, server, concurrency=1, max_retries=3)
    v = j.verdicts(PAIRS.iloc[:1])
    assert len(server.requests) == 2 and j.possibly_paid == 2
    assert v.unusable[0][0] == "timed_out" and "HTTP 504 from a gateway" in str(v.error)

    server.script = ["502", "502"]  # an instant 502: the upstream is down, the model never saw it: retried
    j = make(settings, server, concurrency=1, max_retries=3)
    assert j.score(PAIRS.iloc[:1]) == pytest.approx([P_GOOD])
    assert len(server.requests) == 2 + 3 and j.possibly_paid == 0


def test_client_errors_fail_at_once(settings, server):
    server.script = ["401"]
    j = make(settings, server, concurrency=1)
    with pytest.raises(ConfigError, match="HTTP 401"):
        j.score(PAIRS.iloc[:1])
    assert len(server.requests) == 1


@pytest.mark.parametrize("action", ["malformed", "offformat"])
def test_malformed_answer_is_a_data_error(settings, server, action):
    server.script = [action]
    j = make(settings, server, concurrency=1)
    with pytest.raises(DataError):
        j.score(PAIRS.iloc[:1])


def test_rate_limit_paces_requests(settings, server):
    from keyphrase_pipeline.labels.judges.openai_judge import _Pacer

    now = [100.0]
    slept = []
    pacer = _Pacer(20.0, clock=lambda: now[0], sleep=slept.append)
    for _ in range(6):  # six back-to-back starts at 20/s: the 2nd waits 50 ms, the 6th 250 ms
        pacer.wait()
    assert slept == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25])
    now[0] = 200.0  # after a pause no wait is owed
    pacer.wait()
    assert len(slept) == 5
    j = make(settings, server, rate_limit_per_s=1000.0)
    assert j.pacer.interval == pytest.approx(0.001)
    assert j.score(PAIRS) == pytest.approx([P_GOOD, P_BAD, P_GOOD])


def test_endpoint_and_key_from_airflow_connection(settings, server, monkeypatch, caplog):
    pytest.importorskip("airflow.sdk")
    monkeypatch.setenv("AIRFLOW_CONN_KP_LLM_TEST", json.dumps({"conn_type": "http", "host": server.url, "password": "sk-from-conn"}))
    s = settings.with_overrides(**{"judge.backend": "openai", "judge.model": "test-llm", "judge.airflow_conn_id": "kp_llm_test"})
    caplog.set_level("DEBUG")
    j = OpenAIJudge(s)
    assert j.endpoint == server.url
    assert j.score(PAIRS.iloc[:1]) == pytest.approx([P_GOOD])
    assert server.auth == ["Bearer sk-from-conn"]
    assert "sk-from-conn" not in caplog.text


def test_no_endpoint_is_a_config_error(settings):
    s = settings.with_overrides(**{"judge.backend": "openai", "judge.model": "m", "judge.airflow_conn_id": ""})
    with pytest.raises(ConfigError, match="endpoint"):
        OpenAIJudge(s)


def _labelling(settings, server, n_pairs=20, **judge):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from labelling_helpers import make_pairs, write_pairs

    s = settings.with_overrides(**{"judge.batch_size": 5, "judge.concurrency": 2,
                                   **{f"judge.{k}": v for k, v in judge.items()}})
    write_pairs(s, "2026-10-12", make_pairs(n_pairs), shard_size=100)
    return s


def test_one_maybe_answer_is_quarantined_and_the_shard_finishes(settings, server):
    """Issue 13: one pair answered "Maybe" (no yes/no token, at temperature 0: the same on every retry) no longer
    fails the shard: it is quarantined with its raw answer, the shard is done, merge proceeds, nothing is paid
    twice."""
    import os

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels import store as label_store
    from keyphrase_pipeline.stages import llm_label, merge_labels

    s = _labelling(settings, server)  # 20 pairs in one shard, chunks of 10; max_unparsable_share 0.05 -> 1 allowed
    server.maybe_for = ('keyphrase: "keyphrase 7"',)
    out = llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=2))
    assert out["judged"] == 19 and out["quarantined"] == 1 and out["quarantined_in_shard"] == 1
    assert out["quarantined_by_reason"] == {"no_yes_no_token": 1} and out["judge_calls"] == 2
    assert len(server.requests) == 20  # every pair asked once
    lake = Lake.from_settings(s)
    q = label_store.read_quarantine(lake, "2026-10-12")
    assert len(q) == 1 and q.loc[0, "keyphrase"] == "keyphrase 7" and q.loc[0, "reason"] == "no_yes_no_token"
    assert '"Maybe"' in q.loc[0, "raw_answer"] and "Perhaps" in q.loc[0, "raw_answer"]
    assert q.loc[0, "judge_model"] == "test-llm" and int(q.loc[0, "keyphrase_id"]) == 7
    assert label_store.read_done(lake, "2026-10-12", 0)["quarantined_in_shard"] == 1

    # a retry (marker gone, e.g. a cleared task) pays for nothing: the 19 answers are staged, the Maybe quarantined
    os.remove(layout.done_marker(lake, "2026-10-12", 0))
    again = llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=2))
    assert again["judge_calls"] == 0 and again["quarantined_in_shard"] == 1 and len(server.requests) == 20

    merged = merge_labels.run(s, "2026-10-12")  # merge-labels proceeds
    assert merged["rows"] == 19 and merged["quarantined"] == 1
    assert merged["quarantined_by_reason"] == {"no_yes_no_token": 1}
    assert merged["quarantine_path"].endswith("quarantine/llm_labels/ds=2026-10-12")


def test_too_many_unusable_answers_fail_the_shard_without_paying_twice(settings, server):
    """Above judge.max_unparsable_share the shard fails (not done, merge refuses) as soon as the share is
    certain; the answers received stay staged or quarantined, so a retry pays only for pairs never asked."""
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels import store as label_store
    from keyphrase_pipeline.stages import llm_label, merge_labels

    s = _labelling(settings, server)
    server.maybe_for = ('keyphrase: "keyphrase 1"', 'keyphrase: "keyphrase 3"')  # 2 of 20 > 5 %: in the first chunk
    server.script = ["ok"] * 10 + ["malformed"]  # and a malformed answer in the second chunk later
    with pytest.raises(DataError, match="max_unparsable_share"):
        llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=2))
    assert len(server.requests) == 10  # stopped after the first chunk: 10 pairs paid, not 20
    lake = Lake.from_settings(s)
    assert label_store.read_done(lake, "2026-10-12", 0) is None
    assert len(label_store.read_staging(lake, "2026-10-12")) == 8
    assert len(label_store.read_quarantine(lake, "2026-10-12")) == 2
    with pytest.raises(DataError, match="not labelled yet"):
        merge_labels.run(s, "2026-10-12")
    with pytest.raises(DataError, match="max_unparsable_share"):  # a plain retry: still too many, pays nothing
        llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=2))
    assert len(server.requests) == 10

    s2 = s.with_overrides(**{"judge.max_unparsable_share": 0.2})  # the operator accepts up to 20 %
    out = llm_label.run(s2, "2026-10-12", 0, judge=make(s2, server, batch_size=5, concurrency=2))
    assert out["judged"] == 9 and out["quarantined"] == 1 and out["quarantined_in_shard"] == 3
    assert out["quarantined_by_reason"] == {"malformed_answer": 1}
    assert len(server.requests) == 20  # the 10 pairs never asked, and nothing else
    merged = merge_labels.run(s2, "2026-10-12")
    assert merged["rows"] == 17 and merged["quarantined"] == 3
    assert merged["quarantined_by_reason"] == {"malformed_answer": 1, "no_yes_no_token": 2}


def test_answers_received_before_the_endpoint_fails_are_kept(settings, server):
    """A request that fails for good mid-batch (here 401) no longer throws away the batch's other answers."""
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels import store as label_store
    from keyphrase_pipeline.stages import llm_label

    s = _labelling(settings, server, n_pairs=10, concurrency=1)
    server.script = ["ok"] * 7 + ["401"]
    with pytest.raises(ConfigError, match="HTTP 401"):
        llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=1))
    # the 7 answers received before the refusal are kept; the 2 requests after it are not sent (issue 15)
    assert len(label_store.read_staging(Lake.from_settings(s), "2026-10-12")) == 7
    assert len(server.requests) == 8
    out = llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=1))
    assert out["judged"] == 3 and len(server.requests) == 11  # 10 pairs + the one refused request


KILLED_CHILD = """
import pickle, sys
from keyphrase_pipeline.stages import llm_label
from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge
s = pickle.load(open(sys.argv[1], "rb"))
llm_label.run(s, "2026-10-12", 0, judge=OpenAIJudge(s, backoff_base_s=0.01, backoff_max_s=0.05))
"""


def test_a_worker_killed_mid_batch_pays_for_no_pair_twice(settings, server, tmp_path):
    """Issue 15 (cluster fault case 1): a labelling process SIGKILLed in the middle of a batch. Before the
    request journal, the batch in flight was lost and its retry asked the endpoint again for every pair the
    dead worker had already been answered (paid twice). Now the retry stages the journaled answers, quarantines
    the requests that were in flight (``in_flight_at_crash``: maybe answered and billed, never asked again that
    day) and asks only for pairs never sent: no prompt reaches the endpoint twice."""
    import os
    import pickle
    import signal
    import subprocess
    import sys

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels import store as label_store
    from keyphrase_pipeline.stages import llm_label, merge_labels

    s = _labelling(settings, server, n_pairs=20, **{"endpoint": server.url, "backend": "openai",
                                                    "model": "test-llm", "api_key": "sk-test-123",
                                                    "timeout_s": 5.0, "max_retries": 1})
    server.delay_s = 0.25
    path = tmp_path / "settings.pkl"
    path.write_bytes(pickle.dumps(s))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(path)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < 5 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        time.sleep(0.1)  # some answers on their way back, some requests in flight
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lake = Lake.from_settings(s)
    asked_before = len(server.requests)
    assert 5 <= asked_before < 10  # killed inside the first batch of 10: nothing of it was staged as a batch
    assert label_store.read_done(lake, "2026-10-12", 0) is None and not label_store.staging_files(lake, "2026-10-12", 0)

    server.delay_s = 0.0
    out = llm_label.run(s, "2026-10-12", 0, judge=make(s, server, batch_size=5, concurrency=2))
    prompts = [r["messages"][0]["content"] for r in server.requests]
    assert len(prompts) == len(set(prompts)), "a pair was asked (paid) twice"
    rec = out["recovered_from_journal"]
    assert rec["answers"] >= 1 and rec["in_flight"] <= 2 and rec["answers"] + rec["in_flight"] == asked_before
    staged = label_store.read_staging(lake, "2026-10-12")
    q = label_store.read_quarantine(lake, "2026-10-12")
    assert len(staged) + len(q) == 20 and staged["pair_key"].is_unique
    assert set(q["reason"]) <= {llm_label.IN_FLIGHT_REASON} and len(q) == rec["in_flight"]
    assert out["quarantined_in_shard"] == 0  # in-flight requests are not the judge's unusable answers
    assert not os.path.exists(layout.shard_journal_path(lake, "2026-10-12", 0))
    merged = merge_labels.run(s, "2026-10-12")
    assert merged["rows"] == len(staged) and merged["duplicates_in_staging"] == 0


def test_the_journal_ignores_a_torn_last_line(tmp_path):
    from keyphrase_pipeline.stages.llm_label import AnswerJournal, read_journal

    j = AnswerJournal(str(tmp_path / "_JOURNAL.jsonl"), ["a", "b", "c"])
    j.sent(0), j.answered(0, 0.75), j.sent(1), j.sent(2), j.unusable(2, "no_yes_no_token", "Maybe")
    with open(tmp_path / "_JOURNAL.jsonl", "a") as f:
        f.write('{"k": "b", "e": "answ')  # the process died while writing
    got = read_journal(str(tmp_path / "_JOURNAL.jsonl"))
    assert got["a"] == {"k": "a", "e": "answered", "p": 0.75}
    assert got["b"]["e"] == "sent" and got["c"]["reason"] == "no_yes_no_token"
    j.discard()
    assert read_journal(str(tmp_path / "_JOURNAL.jsonl")) == {}
