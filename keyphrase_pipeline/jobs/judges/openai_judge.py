"""Any OpenAI-compatible endpoint as the judge: a vLLM server on GPU workers (Mixtral, Llama, Qwen) or a
hosted API.

Each prompt is one chat-completions request asking for ONE token with its log-probabilities
(``max_tokens=1, temperature=0, logprobs=true, top_logprobs=20``); P(yes) comes from the yes/no
variants among them (``keyphrase_pipeline.jobs.judges.base.p_yes_from_logprobs``). Requests run on
``judge.concurrency`` threads over one pooled ``httpx.Client``, paced by ``judge.rate_limit_per_s``,
each with ``judge.timeout_s``; timeouts, connection errors, 429 and 5xx are retried up to
``judge.max_retries`` times with exponential backoff and jitter, honouring ``Retry-After``. Other
4xx (bad key, unknown model) fail at once with ConfigError. An answer without yes/no logprobs (or not a
completion with logprobs) is an ``UnusableAnswer`` for THAT pair: ``verdicts`` returns it with the raw
answer beside the other pairs' P(yes) (the labeller quarantines it), and when a request fails for good the
answers already received in the batch are returned too, so nothing paid for is thrown away.

Endpoint and key: ``judge.endpoint`` / ``judge.api_key`` (``KP_JUDGE__ENDPOINT``, ``KP_JUDGE__API_KEY``),
else the Airflow Connection ``judge.airflow_conn_id`` (host = base URL, password = key, or extra
``{"endpoint": ...}``) when Airflow is importable and the connection exists. The key is never logged.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keyphrase_pipeline.jobs.judges.base import (
    Judge,
    JudgeUnavailable,
    UnusableAnswer,
    Verdicts,
    judge_model_id,
    p_yes_from_logprobs,
)
from keyphrase_pipeline.core.errors import ConfigError, KPError

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


def resolve_endpoint(settings) -> tuple[str, str | None]:
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
    import json

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


class OpenAIJudge(Judge):
    """Judge through an OpenAI-compatible chat-completions endpoint (one token with top-20 logprobs per pair).

    ``score_prompts`` returns float64 P(yes) in [0, 1], shape ``(n,)``. Raises ConfigError (exit 2): no
    endpoint, empty ``judge.model``, or an HTTP 4xx that is not retried (bad key, unknown model); DataError
    (exit 3): an answer that is not JSON or has no yes/no logprob; JudgeUnavailable (exit 1): timeouts,
    connection errors, 408/409/425/429 or 5xx after ``judge.max_retries`` retries (``timeout_s`` seconds
    each; backoff from 0.5 s doubling up to 30 s, with jitter; ``Retry-After`` honoured up to 30 s)."""

    name = "openai"

    def __init__(self, settings, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0):
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
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.pacer = _Pacer(j.rate_limit_per_s)
        self.requests_sent = 0
        self._count_lock = threading.Lock()
        self._prompt_sizes: list[tuple[int, int]] = []  # (prompt characters, usage.prompt_tokens) seen
        log.info("openai judge: model %s at %s (concurrency %d)", self.model, self.endpoint, self.concurrency)

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
        if retry_after:
            try:
                return min(float(retry_after), self.backoff_max_s)
            except ValueError:
                pass
        return min(self.backoff_base_s * (2 ** attempt), self.backoff_max_s) * (0.5 + random.random() / 2)

    def _one(self, prompt: str) -> float:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            self.pacer.wait()
            with self._count_lock:
                self.requests_sent += 1
            retry_after = None
            try:
                resp = self.client.post("/chat/completions", json=self._payload(prompt))
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}"
            else:
                if resp.status_code == 200:
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
        ``judge.check_served_model`` is off; ``same_model``), or from a server whose chat template drops the user turn: its answers report the same
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
        (``keyphrase_pipeline.jobs.llm_label.AnswerJournal``)."""
        p = np.full(len(prompts), np.nan, dtype=np.float64)
        out = Verdicts(p)
        if not prompts:
            return out
        gave_up = threading.Event()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            futures = [pool.submit(self._ask, i, q, journal, gave_up) for i, q in enumerate(prompts)]
            for i, fut in enumerate(futures):
                try:
                    p[i] = fut.result()
                except UnusableAnswer as exc:
                    out.unusable[i] = (exc.reason, exc.raw)
                except KPError as exc:
                    out.error = out.error or exc
                except _NotSent:
                    pass
        return out

    def verdicts(self, pairs, journal=None) -> Verdicts:
        from keyphrase_pipeline.jobs.judges.prompt import build_prompts

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
