"""Any OpenAI-compatible endpoint as the judge: a vLLM server on GPU workers (Mixtral, Llama, Qwen) or a
hosted API.

Each prompt is one chat-completions request asking for ONE token with its log-probabilities
(``max_tokens=1, temperature=0, logprobs=true, top_logprobs=20``); P(yes) comes from the yes/no
variants among them (``keyphrase_pipeline.labels.judges.base.p_yes_from_logprobs``). Requests run on
``judge.concurrency`` threads over one pooled ``httpx.Client``, paced by ``judge.rate_limit_per_s``;
timeouts, connection errors, 429 and 5xx are retried up to ``judge.max_retries`` times with exponential
backoff and jitter, honouring ``Retry-After`` (delta-seconds or an HTTP-date). Other 4xx (bad key, unknown
model) fail at once with ConfigError.

A request that timed out, or whose connection dropped after it was sent, was probably computed (and billed)
by the server all the same: it is counted as *possibly paid* (``possibly_paid``, ``Verdicts.possibly_paid``).
So the timeout adapts (``TimeoutPolicy``): at least ``judge.timeout_s``, at least ``judge.timeout_multiple`` x
the p95 latency of the recent answers, and for the retry after such a request that multiple of the timeout that
ran out, never above ``judge.max_timeout_s``; each one halves the requests in flight (``InFlightLimit``), which
answers let grow back; and a pair is sent again after one at most ``judge.max_timeout_retries`` times, then given
up (``JudgeTimedOut``, quarantined by the labeller as ``timed_out``: not asked again that day). An answer without yes/no logprobs (or not a
completion with logprobs) is an ``UnusableAnswer`` for THAT pair: ``verdicts`` returns it with the raw
answer beside the other pairs' P(yes) (the labeller quarantines it), and when a request fails for good the
answers already received in the batch are returned too, so nothing paid for is thrown away.

Endpoint and key: ``judge.endpoint`` / ``judge.api_key`` (``KP_JUDGE__ENDPOINT``, ``KP_JUDGE__API_KEY``),
else the Airflow Connection ``judge.airflow_conn_id`` (host = base URL, password = key, or extra
``{"endpoint": ...}``) when Airflow is importable and the connection exists. The key is never logged.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError, KPError
from keyphrase_pipeline.labels.judges.base import (
    TIMED_OUT_REASON,
    Judge,
    JudgeTimedOut,
    JudgeUnavailable,
    UnusableAnswer,
    Verdicts,
    judge_model_id,
    p_yes_from_logprobs,
)
from keyphrase_pipeline.labels.judges.prompt import build_prompts

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def same_model(answered: str, configured: str) -> bool:
    """Whether an answer's ``model`` is the configured one: the same name, or that name with a date suffix (hosted
    APIs answer ``gpt-4o-2024-08-06`` for ``gpt-4o``). ``gpt-4o-mini`` is not ``gpt-4o``; a vLLM alias (a second
    ``--served-model-name``) is answered under the first name, so aliases need ``judge.check_served_model`` off."""
    return answered == configured or re.fullmatch(re.escape(configured) + r"-\d{4}-?\d{2}-?\d{2}", answered) is not None


class _NotSent(Exception):
    """A request of a batch not sent because another one had already failed for good."""


def connection_from_airflow(conn_id: str) -> tuple[str, str | None] | None:
    """(endpoint, key) from an Airflow Connection, or None when Airflow or the connection is absent."""
    if not conn_id:
        return None
    try:
        from airflow.sdk import BaseHook
    except Exception:  # airflow not installed / not importable here
        return None
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:
        return None
    extra = getattr(conn, "extra_dejson", {}) or {}
    endpoint = extra.get("endpoint") or ""
    host = conn.host or ""
    if not endpoint and host:
        if host.startswith(("http://", "https://")):
            endpoint = host
        else:
            scheme = conn.schema if conn.schema in ("http", "https") else "http"
            endpoint = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "") + "/v1"
    if not endpoint:
        return None
    return endpoint, (conn.password or None)


def resolve_endpoint(settings: Settings) -> tuple[str, str | None]:
    """(base URL without trailing ``/``, API key or None) from ``judge.endpoint``/``judge.api_key``, missing parts
    from the Airflow Connection ``judge.airflow_conn_id``.

    Raises ConfigError (exit 2) when no endpoint is found."""
    j = settings.judge
    endpoint = j.endpoint
    key = j.api_key.get_secret_value() if j.api_key is not None else None
    if not endpoint or key is None:
        found = connection_from_airflow(j.airflow_conn_id)
        if found:
            endpoint = endpoint or found[0]
            key = key if key is not None else found[1]
            log.info("judge endpoint from Airflow connection %r", j.airflow_conn_id)
    if not endpoint:
        raise ConfigError("the openai judge needs judge.endpoint (KP_JUDGE__ENDPOINT) or an Airflow connection "
                          f"{j.airflow_conn_id!r}")
    return endpoint.rstrip("/"), key


def parse_top_logprobs(body: dict) -> list[tuple[str, float]]:
    """The first answer token's top logprobs from a chat-completions (or completions) response.

    Returns [(token, logprob)]; DataError (exit 3) when ``body`` lacks that structure."""
    try:
        choice = body["choices"][0]
        lp = choice["logprobs"]
        if isinstance(lp, dict) and lp.get("content") is not None:  # chat completions
            first = lp["content"][0]
            tops = first.get("top_logprobs") or [{"token": first["token"], "logprob": first["logprob"]}]
            return [(t["token"], t["logprob"]) for t in tops]
        tops = lp["top_logprobs"][0]  # legacy completions: [{token: logprob}]
        return list(tops.items())
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UnusableAnswer(f"judge answer is not an OpenAI completion with logprobs ({type(exc).__name__}: {exc}); "
                             f"got {str(body)[:300]!r}", "malformed_answer", str(body)) from None


def raw_answer(body: dict, tops: list[tuple[str, float]]) -> str:
    """The answer as a short JSON text for the quarantine: the message content and the top logprobs."""

    content = None
    try:
        content = body["choices"][0].get("message", {}).get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return json.dumps({"content": content, "top_logprobs": [[str(t), v] for t, v in tops[:20]]}, default=str)


class _Pacer:
    """At most ``rate`` request starts per second across threads (0 = unlimited)."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()
        self.clock, self.sleep = clock, sleep

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            self.sleep(at - now)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (RFC 9110 10.2.3): delta-seconds (``"7"``, a decimal is
    accepted) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, read with ``email.utils.parsedate_to_datetime``,
    counted from ``now``, default the current UTC time). Returns seconds >= 0 (a date in the past or a negative
    number: 0), or None when ``value`` is absent or neither form (never raises)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            at = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if at is None:
            return None
        if at.tzinfo is None:  # "-0000" zone: UTC by RFC 5322
            at = at.replace(tzinfo=timezone.utc)
        seconds = (at - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class TimeoutPolicy:
    """The seconds one request may wait for its answer, from the latency of the answers seen (thread-safe).

    ``timeout(k)`` for a pair whose ``k`` earlier requests timed out (or dropped after sending):
    ``min(max_s, max(base_s, multiple * p) * multiple ** k)``, ``p`` the ``percentile`` of the last ``window``
    answer latencies (``observe``, seconds; ignored while none). ``base_s`` is ``judge.timeout_s``, ``max_s``
    ``judge.max_timeout_s`` (raised to ``base_s`` if below), ``multiple`` ``judge.timeout_multiple``. A retry
    after a timeout thus waits longer instead of being computed again for nothing, and an endpoint seen to be
    slow is waited for from the first request."""

    def __init__(self, base_s: float, max_s: float, multiple: float, percentile: float = 95.0, window: int = 256):
        self.base_s = float(base_s)
        self.max_s = max(float(max_s), self.base_s)
        self.multiple = float(multiple)
        self.percentile = float(percentile)
        self._seen: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Record the latency of one answer (seconds from sending to the response)."""
        with self._lock:
            self._seen.append(float(seconds))

    def latency_s(self) -> float | None:
        """The ``percentile`` of the recorded latencies in seconds, None before the first answer."""
        with self._lock:
            seen = list(self._seen)
        return float(np.percentile(seen, self.percentile)) if seen else None

    def timeout(self, timed_out: int = 0) -> float:
        """Seconds the next request of a pair may wait, ``timed_out`` of its requests having timed out before."""
        p = self.latency_s()
        t = self.base_s if p is None else max(self.base_s, self.multiple * p)
        return min(self.max_s, t * self.multiple ** timed_out)


class InFlightLimit:
    """How many requests may be in flight at once (a context manager around each request; thread-safe).

    ``limit`` starts at ``concurrency``; each request that timed out or dropped after sending halves it (at
    least 1: an endpoint that stalls gets fewer requests that it may compute for nothing), and it grows back by
    one after ``limit`` answers in a row."""

    def __init__(self, concurrency: int):
        self.concurrency = int(concurrency)
        self.limit = self.concurrency
        self.in_flight = 0
        self._streak = 0
        self._cond = threading.Condition()

    def __enter__(self) -> "InFlightLimit":
        with self._cond:
            self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def timed_out(self) -> None:
        """A request timed out (or dropped after sending): halve the limit."""
        with self._cond:
            if self.limit > 1:
                log.warning("judge endpoint slower than its timeout: %d request(s) in flight at most, was %d",
                            self.limit // 2, self.limit)
            self.limit = max(1, self.limit // 2)
            self._streak = 0

    def answered(self) -> None:
        """An answer arrived: after ``limit`` in a row, one more request may be in flight."""
        with self._cond:
            self._streak += 1
            if self._streak >= self.limit and self.limit < self.concurrency:
                self.limit += 1
                self._streak = 0
                self._cond.notify_all()


class OpenAIJudge(Judge):
    """Judge through an OpenAI-compatible chat-completions endpoint (one token with top-20 logprobs per pair).

    ``score_prompts`` returns float64 P(yes) in [0, 1], shape ``(n,)``. Raises ConfigError (exit 2): no
    endpoint, empty ``judge.model``, or an HTTP 4xx that is not retried (bad key, unknown model); DataError
    (exit 3): an answer that is not JSON or has no yes/no logprob; JudgeUnavailable (exit 1): timeouts,
    connection errors, 408/409/425/429 or 5xx after ``judge.max_retries`` retries (each waiting
    ``TimeoutPolicy.timeout`` seconds; backoff from 0.5 s doubling up to 30 s, with jitter; ``Retry-After``
    honoured up to 30 s); JudgeTimedOut (exit 1): more than ``judge.max_timeout_retries`` of a pair's requests
    timed out or dropped after sending. ``possibly_paid`` counts such requests over the judge's life."""

    name = "openai"

    def __init__(self, settings: Settings, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0):
        super().__init__(settings)
        import httpx

        j = settings.judge
        self.model = judge_model_id(settings)
        self.served_model = j.model
        self.check_answer_model = j.check_served_model
        self.endpoint, key = resolve_endpoint(settings)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=self.endpoint, headers=headers, timeout=httpx.Timeout(j.timeout_s),
                                   limits=httpx.Limits(max_connections=j.concurrency))
        self.concurrency = j.concurrency
        self.max_retries = j.max_retries
        self.max_timeout_retries = j.max_timeout_retries
        self.timeouts = TimeoutPolicy(j.timeout_s, j.max_timeout_s, j.timeout_multiple)
        self.in_flight = InFlightLimit(j.concurrency)
        self.possibly_paid = 0  # requests that timed out or dropped after sending (maybe computed and billed)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.pacer = _Pacer(j.rate_limit_per_s)
        self.requests_sent = 0
        self._count_lock = threading.Lock()
        self._prompt_sizes: list[tuple[int, int]] = []  # (prompt characters, usage.prompt_tokens) seen
        log.info("openai judge: model %s at %s (concurrency %d)", self.model, self.endpoint, self.concurrency)

    @property
    def runs_on(self) -> str:
        """``remote <endpoint>``: the server decides the device (its own stats or metrics say which)."""
        return f"remote {self.endpoint}"

    def _payload(self, prompt: str) -> dict:
        return {
            "model": self.served_model,  # the name as served; self.model may carry "@rev:<revision>"
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 20,
        }

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry ``attempt + 1``: what ``Retry-After`` asks (``retry_after_s``), else exponential
        backoff with jitter; at most ``backoff_max_s``."""
        wait = retry_after_s(retry_after)
        if wait is not None:
            return min(wait, self.backoff_max_s)
        return min(self.backoff_base_s * (2 ** attempt), self.backoff_max_s) * (0.5 + random.random() / 2)

    def _unanswered(self, unanswered: list[str], what: str) -> None:
        """Count one possibly-paid request of a pair (sent, no answer: a client timeout, a dropped connection, a
        gateway's 504 or slow 502) and give the pair up (``JudgeTimedOut``) past ``judge.max_timeout_retries`` of them."""
        unanswered.append(what)
        self.in_flight.timed_out()
        with self._count_lock:
            self.possibly_paid += 1
        if len(unanswered) > self.max_timeout_retries:
            raise JudgeTimedOut(
                f"judge endpoint {self.endpoint}: {len(unanswered)} requests for the same pair got no answer "
                f"({', '.join(unanswered)}), each maybe computed and billed; given up after "
                f"judge.max_timeout_retries={self.max_timeout_retries} (not asked again today; raise "
                "judge.max_timeout_s for a slow endpoint, or the gateway's own timeout)") from None

    def _one(self, prompt: str) -> float:
        import httpx

        last = ""
        unanswered: list[str] = []  # the requests of this pair that timed out or dropped after sending
        for attempt in range(self.max_retries + 1):
            self.pacer.wait()
            with self._count_lock:
                self.requests_sent += 1
            retry_after = None
            try:
                with self.in_flight:
                    timeout = self.timeouts.timeout(len(unanswered))  # once in flight: the latest latencies count
                    t0 = time.monotonic()
                    resp = self.client.post("/chat/completions", json=self._payload(prompt),
                                            timeout=httpx.Timeout(timeout, connect=min(timeout, self.timeouts.base_s)))
                    latency = time.monotonic() - t0
            except (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                # sent, and no answer came back: the endpoint may have computed (and billed) it all the same
                last = f"{type(exc).__name__}"
                self._unanswered(unanswered, f"{last} after {timeout:.3g} s")
            except (httpx.TimeoutException, httpx.TransportError) as exc:  # not sent: connect, pool, write
                last = f"{type(exc).__name__}"
            else:
                # a proxy stopped waiting; the model server behind may not have. A 504 always; a 502 only after a
                # long wait (an instant 502 is an upstream that is down or restarting: never reached the model)
                if resp.status_code == 504 or (resp.status_code == 502 and latency >= self.timeouts.base_s):
                    last = f"HTTP {resp.status_code}"
                    self._unanswered(unanswered, f"{last} from a gateway after {latency:.3g} s")
                if resp.status_code == 200:
                    self.timeouts.observe(latency)
                    self.in_flight.answered()
                    try:
                        body = resp.json()
                    except ValueError:
                        raise UnusableAnswer(f"judge answer is not JSON: {resp.text[:200]!r}", "malformed_answer",
                                             resp.text) from None
                    self._check_answer(body, prompt)
                    tops = parse_top_logprobs(body)
                    try:
                        return p_yes_from_logprobs(tops)
                    except UnusableAnswer as exc:
                        raise UnusableAnswer(str(exc), exc.reason, raw_answer(body, tops)) from None
                if resp.status_code not in RETRY_STATUS:
                    raise ConfigError(f"judge endpoint refused the request: HTTP {resp.status_code} "
                                      f"{resp.text[:200]!r} (check judge.model, the endpoint and the key)")
                last = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                log.warning("judge request failed (%s); retry %d/%d in %.2fs", last, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise JudgeUnavailable(f"judge endpoint {self.endpoint} still failing after {self.max_retries} retries ({last})")

    def _check_answer(self, body, prompt: str) -> None:
        """Refuse (ConfigError, exit 2) an answer from another model than ``judge.model`` (unless
        ``judge.check_served_model`` is off; ``same_model``), or from a server whose chat template drops the user
        turn: its answers report the same
        ``usage.prompt_tokens`` for prompts whose lengths differ by 48 characters or more (the template's own
        tokens only). Servers that do not report usage (or report 0) are not checked for the latter."""
        if not isinstance(body, dict):
            return
        answered = body.get("model")
        if self.check_answer_model and isinstance(answered, str) and answered and \
                not same_model(answered, self.served_model):
            raise ConfigError(f"judge endpoint {self.endpoint} answered with model {answered!r}, not judge.model "
                              f"{self.served_model!r}: set KP_JUDGE__MODEL to the served name (or "
                              "KP_JUDGE__CHECK_SERVED_MODEL=false for a gateway that renames models)")
        usage = body.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int) or tokens <= 0:
            return
        with self._count_lock:
            seen = self._prompt_sizes
            if len(seen) < 64:
                seen.append((len(prompt), tokens))
            lengths = [n for n, _ in seen]
            constant = len({t for _, t in seen}) == 1 and max(lengths) - min(lengths) >= 48
        if constant:
            raise ConfigError(f"judge endpoint {self.endpoint} read {tokens} prompt tokens for prompts of "
                              f"{min(lengths)} to {max(lengths)} characters: its chat template drops the user turn. "
                              "Serve the model with a template that keeps it (vLLM: --chat-template), or set "
                              "judge.model to one that has one")

    # llm_label passes a journal: each request is recorded as sent before it goes out and as answered (or
    # unusable, failed) as soon as its answer arrives, so a worker killed mid-batch loses nothing paid for
    journals_requests = True

    def _ask(self, i: int, prompt: str, journal, gave_up: threading.Event) -> float:
        """``_one(prompt)``, recorded in ``journal`` when given (sent, then answered/unusable/failed). Not sent at
        all (``_NotSent``) once another request of the batch has failed for good (``gave_up``): when the endpoint
        is down, the batch stops after the requests in flight have used their retries, instead of every
        remaining request spending its own ``max_retries`` backoff first."""
        if gave_up.is_set():
            raise _NotSent()
        if journal is not None:
            journal.sent(i)
        try:
            p = self._one(prompt)
        except UnusableAnswer as exc:
            if journal is not None:
                journal.unusable(i, exc.reason, exc.raw)
            raise
        except JudgeTimedOut as exc:  # maybe billed: quarantined (not asked again today), like an unusable answer
            gave_up.set()
            if journal is not None:
                journal.unusable(i, TIMED_OUT_REASON, str(exc))
            raise
        except KPError:
            gave_up.set()
            if journal is not None:
                journal.failed(i)
            raise
        if journal is not None:
            journal.answered(i, p)
        return p

    def verdict_prompts(self, prompts: list[str], journal=None) -> Verdicts:
        """Every prompt asked (``judge.concurrency`` threads); an unreadable answer is kept as unusable, and a
        request that failed for good (JudgeUnavailable, ConfigError) leaves NaN while the answers already
        received are still returned, with the first such failure as ``error``; the batch's requests not sent
        yet are then not sent (NaN too). ``journal`` (optional): an object with ``sent(i)``,
        ``answered(i, p)``, ``unusable(i, reason, raw)``, ``failed(i)``, called from the request threads
        (``keyphrase_pipeline.stages.llm_label.AnswerJournal``). A pair given up after
        ``judge.max_timeout_retries`` (``JudgeTimedOut``) is in ``unusable`` with reason ``TIMED_OUT_REASON``
        (and journaled so) and is the ``error`` too; ``possibly_paid`` counts this call's requests that timed out
        or dropped after sending."""
        p = np.full(len(prompts), np.nan, dtype=np.float64)
        out = Verdicts(p)
        if not prompts:
            return out
        gave_up = threading.Event()
        paid_before = self.possibly_paid
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            futures = [pool.submit(self._ask, i, q, journal, gave_up) for i, q in enumerate(prompts)]
            for i, fut in enumerate(futures):
                try:
                    p[i] = fut.result()
                except UnusableAnswer as exc:
                    out.unusable[i] = (exc.reason, exc.raw)
                except JudgeTimedOut as exc:
                    out.unusable[i] = (TIMED_OUT_REASON, str(exc))
                    out.error = out.error or exc
                except KPError as exc:
                    out.error = out.error or exc
                except _NotSent:
                    pass
        out.possibly_paid = self.possibly_paid - paid_before
        return out

    def verdicts(self, pairs, journal=None) -> Verdicts:

        return self.verdict_prompts(build_prompts(pairs, self.settings) if len(pairs) else [], journal=journal)

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        v = self.verdict_prompts(prompts)
        if v.error is not None:
            raise v.error
        if v.unusable:
            i, (reason, raw) = next(iter(sorted(v.unusable.items())))
            raise UnusableAnswer(f"judge answer {i} unusable ({reason}): {raw[:200]}", reason, raw)
        return v.p_yes

    def close(self) -> None:
        self.client.close()
