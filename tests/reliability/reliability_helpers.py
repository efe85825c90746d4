"""Helpers of the fault-injection suite (imported by its tests; conftest.py holds the fixtures)."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "jobs") not in sys.path:
    sys.path.append(str(TESTS / "jobs"))

DS = "2026-10-12"  # the tiny world's last day (12 days from 2026-10-01)
LLM_MODEL = "fake-llm"


from testsupport import make_settings  # noqa: E402,F401  (re-exported for the suite)


class FakeLLM:
    """OpenAI chat-completions with logprobs. ``state``: "up" answers, "down" answers 503, "hang" sleeps past
    the client's timeout. ``fail_after``: go down after that many 200 answers. Records every prompt
    answered with 200 (what a real API bills), also when the client gave up waiting before the answer was
    sent: the answer was computed all the same. ``stall_s`` / ``stall_for_s``: requests received within
    ``stall_for_s`` seconds of the first one (None: all) take ``stall_s`` seconds to compute (a stalling or
    slow endpoint); ``wait_idle`` waits until every request received has been computed."""

    def __init__(self):
        self.state = "up"
        self.delay_s = 0.0  # seconds before each answer (keeps a worker busy for the concurrency tests)
        self.stall_s = 0.0
        self.stall_for_s: float | None = None
        self.first_at: float | None = None
        self.busy = 0
        self.maybe: set[str] = set()  # prompts answered "Maybe" (no yes/no token; billed like any answer)
        self.fail_after: int | None = None
        self.answered: list[str] = []
        self.refused = 0
        self.lock = threading.Lock()

    @staticmethod
    def p_yes(prompt: str) -> float:
        return min(max((zlib.crc32(prompt.encode()) % 1000) / 999.0, 1e-6), 1 - 1e-6)

    def handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                with fake.lock:
                    fake.busy += 1
                try:
                    self._post()
                finally:
                    with fake.lock:
                        fake.busy -= 1

            def _post(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with fake.lock:
                    now = time.monotonic()
                    fake.first_at = now if fake.first_at is None else fake.first_at
                    stalled = fake.stall_s > 0 and (fake.stall_for_s is None or now - fake.first_at < fake.stall_for_s)
                    if fake.fail_after is not None and len(fake.answered) >= fake.fail_after:
                        fake.state = "down"
                        fake.fail_after = None
                    state = fake.state
                    if state == "down":
                        fake.refused += 1
                if state == "down":
                    return self._send(503, {"error": "overloaded"})
                if state == "hang":
                    time.sleep(1.0)
                    return self._send(503, {"error": "too late"})
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if stalled:
                    time.sleep(fake.stall_s)
                if prompt in fake.maybe:
                    top = [{"token": "Maybe", "logprob": -0.3}, {"token": "Perhaps", "logprob": -1.6}]
                    with fake.lock:
                        fake.answered.append(prompt)
                    return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Maybe"},
                                                         "logprobs": {"content": [{"token": "Maybe", "logprob": -0.3,
                                                                                   "top_logprobs": top}]}}]})
                p = fake.p_yes(prompt)
                top = [{"token": "Yes", "logprob": math.log(p)}, {"token": "No", "logprob": math.log(1 - p)}]
                with fake.lock:
                    fake.answered.append(prompt)
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes"},
                                              "logprobs": {"content": [{"token": "Yes", "logprob": top[0]["logprob"],
                                                                        "top_logprobs": top}]}}]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and left: the answer was computed (and billed) anyway
                    self.close_connection = True

        return H

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no request is being computed (so ``answered`` counts every answer computed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.busy:
                    return
            time.sleep(0.01)
        raise AssertionError("the fake endpoint is still computing")


def openai_settings(settings, server, **judge):
    opts = {"judge.backend": "openai", "judge.model": LLM_MODEL, "judge.endpoint": server.url,
            "judge.api_key": "sk-local", "judge.timeout_s": 0.3, "judge.max_retries": 1, "judge.concurrency": 1,
            "judge.batch_size": 5}
    opts.update({f"judge.{k}": v for k, v in judge.items()})
    return settings.with_overrides(**opts)


def fast_openai_judge(settings):
    """The real OpenAIJudge with millisecond backoff (the test must not sleep for seconds)."""
    from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge

    return OpenAIJudge(settings, backoff_base_s=0.001, backoff_max_s=0.01)


def label_in_another_process(lake_root: str, overrides: dict, ds: str, shard: int, go, results) -> None:
    """Child process body (multiprocessing, spawn): label ``shard`` with the real OpenAIJudge once ``go`` is set;
    put ("ready", pid) once set up, then ("ok", stats + worker_pid) or ("error", exception class, message) on
    ``results``."""
    from keyphrase_pipeline.stages import llm_label

    settings = make_settings(Path(lake_root)).with_overrides(**overrides)
    judge = fast_openai_judge(settings)
    results.put(("ready", os.getpid()))
    go.wait(60)
    try:
        results.put(("ok", {**llm_label.run(settings, ds, shard, judge=judge), "worker_pid": os.getpid()}))
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(("error", type(exc).__name__, str(exc)))
