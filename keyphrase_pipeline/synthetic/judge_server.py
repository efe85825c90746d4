"""STAND-IN judge server: the synthetic world's simulated annotator behind the OpenAI chat-completions protocol
that ``keyphrase_pipeline.labels.judges.openai_judge`` speaks (one token, ``logprobs`` with ``top_logprobs``).

Why a stand-in: ``transformers serve`` (transformers 5.x, the ecosystem's CPU server) accepts
``logprobs``/``top_logprobs`` on ``/v1/chat/completions`` but ignores them (``UNUSED_CHAT_COMPLETION_FIELDS``
in ``transformers/cli/serving/chat_completion.py``: "Ignoring unsupported fields in the request") and answers
``"logprobs": null``, which the openai judge must quarantine as ``malformed_answer``. vLLM (the production
server) needs a GPU. So the native cluster (``kp cluster up``) runs this process on CPU: a real HTTP server, a
real network hop, real retries and outages, with the labels of ``SimulatedJudge``, and it says so: the model
name in every answer is ``STAND_IN_MODEL``, its log lines and ``/health`` say "stand-in".

Protocol: ``POST /v1/chat/completions`` with the judge's payload -> a chat completion whose one token is
``yes`` or ``no`` with ``top_logprobs`` ``[{"token": "yes", "logprob": log p}, {"token": "no", ...}]``, where
p = ``simulated_p_yes`` of the (item, keyphrase) the prompt names. The prompt is parsed with the configured
``judge.prompt_version`` template; the title/category/keyphrase are looked up in the lake's ``raw/catalog`` and
``raw/keyphrases`` (re-read when a prompt names something unknown, so a world seeded after start-up is found).
A prompt that cannot be parsed or names an unknown item/keyphrase gets a 200 answer whose token is ``unknown``
(the judge quarantines it as unusable; it is never guessed). ``GET /health`` (200 once up), ``GET /v1/models``,
``GET /stats`` (``{"judge_calls": N, "answered": N, "unknown": N, "distinct_prompts": N, "repeated_prompts": N}``:
``repeated_prompts`` counts calls for a prompt already answered, i.e. pairs paid twice).

Fault injection and bookkeeping (environment, stand-in only): ``JUDGE_STANDIN_DELAY_S`` delays every answer by
that many seconds (without blocking other requests), so a label shard lasts long enough to be interrupted;
``JUDGE_STANDIN_STATS_FILE`` keeps the counters (and the hashes of the prompts answered) in that JSON file,
rewritten after every call and read at start, so the counts survive a restart of the server (the fault cases
stop it for a minute). Without it the counters start at 0 with each process.

Run: ``python -m keyphrase_pipeline.synthetic.judge_server --host 127.0.0.1 --port 8000`` (settings from
``KP_*``: the lake, ``judge.simulated_accuracy``, ``synth.seed``, the prompt version and its limits).
"""


import argparse
import asyncio
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from pathlib import Path

from keyphrase_pipeline.core.lake import Lake

log = logging.getLogger("kp.judge_stand_in")

STAND_IN_MODEL = "STAND-IN:simulated-annotator-v1 (not an LLM)"
STAND_IN_LLM_MODEL = "STAND-IN:simulated-llm-annotator-v1 (not an LLM)"  # judge.simulated_errors=llm


def stand_in_model(settings) -> str:
    """The name the stand-in serves: its annotator's (``judge.simulated_errors``), so that the two annotators'
    labels never share a judge id (and a pair_key)."""
    return STAND_IN_LLM_MODEL if settings.judge.simulated_errors == "llm" else STAND_IN_MODEL


def prompt_pattern(version: str) -> re.Pattern:
    """A regex with named groups ``title``, ``category`` (v1), ``keyphrase`` matching prompts of ``version``."""
    from keyphrase_pipeline.labels.judges.prompt import template

    quoted = r'((?:[^"\\]|\\.)*)'
    parts = re.split(r"\{(title|category|keyphrase)\}", template(version))
    rx = ""
    for i, part in enumerate(parts):
        rx += re.escape(part) if i % 2 == 0 else quoted.replace("(", f"(?P<{part}>", 1)
    return re.compile(rx + r"\Z", re.S)


class Lookup:
    """(quoted title, quoted category) -> item_id and quoted keyphrase -> keyphrase_id, built with the very
    functions that build the prompts (so sanitising and escaping agree), from the lake's raw tables."""

    def __init__(self, settings):
        self.settings = settings
        self.items: dict[tuple[str, str], int] = {}
        self.keyphrases: dict[str, int] = {}
        self.loaded_at = 0.0
        self.lock = threading.Lock()

    def reload(self, min_interval_s: float = 5.0) -> None:
        import pyarrow.dataset as ds

        from keyphrase_pipeline.labels.judges.prompt import MAX_CATEGORY_CHARS, neutralize_markers, quote, sanitize

        with self.lock:
            if time.monotonic() - self.loaded_at < min_interval_s:
                return
            self.loaded_at = time.monotonic()
            j = self.settings.judge
            lake = Lake.from_settings(self.settings)

            def q(text, n):
                return quote(neutralize_markers(sanitize(text, n)))

            try:
                cat = ds.dataset(lake.path("catalog"), format="parquet", partitioning="hive").to_table(
                    columns=["item_id", "title", "category"]).to_pandas()
                kps = ds.dataset(lake.path("keyphrases"), format="parquet").to_table(
                    columns=["keyphrase_id", "text"]).to_pandas().rename(columns={"text": "keyphrase"})
            except (OSError, ValueError) as exc:  # no world yet (pyarrow: FileNotFoundError, ArrowInvalid)
                log.warning("stand-in judge: cannot read the lake's raw/catalog, raw/keyphrases yet (%s)", exc)
                return
            cat = cat.dropna(subset=["item_id"])
            self.items = {(q(t, j.max_title_chars), q(c, MAX_CATEGORY_CHARS)): int(i)
                          for i, t, c in zip(cat["item_id"], cat["title"], cat["category"], strict=True)}
            kps = kps.dropna(subset=["keyphrase_id"])
            self.keyphrases = {q(k, j.max_keyphrase_chars): int(i)
                               for i, k in zip(kps["keyphrase_id"], kps["keyphrase"], strict=True)}
            log.info("stand-in judge: %d items, %d keyphrases from %s", len(self.items), len(self.keyphrases),
                     lake.root if hasattr(lake, "root") else "the lake")

    def ids(self, title: str, category: str, keyphrase: str) -> tuple[int, int] | None:
        for attempt in range(2):
            item = self.items.get((title, category))
            kp = self.keyphrases.get(keyphrase)
            if item is not None and kp is not None:
                return item, kp
            if attempt == 0:
                self.reload()
        return None


class CallBook:
    """The server's counters (``judge_calls``, ``answered``, ``unknown``) and the set of prompt hashes answered,
    optionally persisted in ``path`` (JSON, atomically replaced after every call; loaded when it exists)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.counts = {"judge_calls": 0, "answered": 0, "unknown": 0}
        self.seen: set[str] = set()
        self.repeated = 0
        self.lock = threading.Lock()
        if self.path and self.path.exists():
            saved = json.loads(self.path.read_text())
            self.counts.update({k: int(saved.get(k, 0)) for k in self.counts})
            self.seen = set(saved.get("prompt_hashes", []))
            self.repeated = int(saved.get("repeated_prompts", 0))

    def call(self) -> None:
        with self.lock:
            self.counts["judge_calls"] += 1
            self._save()

    def answered(self, prompt: str, known: bool) -> None:
        """Count an answer to ``prompt`` (``known``: a real verdict, else ``unknown``); a prompt answered before
        counts as repeated."""
        digest = hashlib.sha1(prompt.encode("utf-8", "replace")).hexdigest()
        with self.lock:
            self.counts["answered" if known else "unknown"] += 1
            if digest in self.seen:
                self.repeated += 1
            self.seen.add(digest)
            self._save()

    def snapshot(self) -> dict:
        with self.lock:
            return {**self.counts, "distinct_prompts": len(self.seen), "repeated_prompts": self.repeated}

    def _save(self) -> None:
        if not self.path:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.counts, "repeated_prompts": self.repeated,
                                   "prompt_hashes": sorted(self.seen)}))
        os.replace(tmp, self.path)


def create_app(settings, delay_s: float | None = None, stats_file: str | None = None):
    """The FastAPI application (see the module docstring for its routes). ``delay_s`` / ``stats_file`` default to
    ``JUDGE_STANDIN_DELAY_S`` / ``JUDGE_STANDIN_STATS_FILE``."""
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from keyphrase_pipeline.synthetic.world import World, simulated_p_yes

    app = FastAPI(title="keyphrase-pipeline STAND-IN judge (simulated annotator, not an LLM)")
    pattern = prompt_pattern(settings.judge.prompt_version)
    lookup = Lookup(settings)
    if delay_s is None:
        delay_s = float(os.environ.get("JUDGE_STANDIN_DELAY_S") or 0.0)
    book = CallBook(stats_file if stats_file is not None else os.environ.get("JUDGE_STANDIN_STATS_FILE"))
    state: dict = {"world": None}
    served = stand_in_model(settings)

    def world():
        if state["world"] is None:
            state["world"] = World.load(settings)
        return state["world"]

    def completion(token: str, tops: list[tuple[str, float]]) -> dict:
        return {
            "id": f"standin-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": served, "system_fingerprint": "kp-stand-in",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": token},
                         "logprobs": {"content": [{"token": token, "logprob": tops[0][1],
                                                   "top_logprobs": [{"token": t, "logprob": v} for t, v in tops]}]}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        }

    @app.get("/health")
    def health():
        return {"status": "ok", "stand_in": True, "model": served}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "kp-stand-in"}]}

    @app.get("/stats")
    def get_stats():
        return book.snapshot()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        book.call()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        try:
            prompt = body["messages"][-1]["content"]
        except (KeyError, IndexError, TypeError):
            return JSONResponse({"error": {"message": "messages[-1].content is required", "type": "invalid_request"}},
                                status_code=400)
        m = pattern.match(prompt if isinstance(prompt, str) else "")
        found = m and lookup.ids(m.group("title"), m.groupdict().get("category") or "", m.group("keyphrase"))
        if not found:
            book.answered(prompt if isinstance(prompt, str) else repr(prompt), known=False)
            log.warning("stand-in judge: prompt names no known item/keyphrase: %.200r", prompt)
            return completion("unknown", [("unknown", 0.0)])
        p = float(simulated_p_yes(world(), np.array([found[0]]), np.array([found[1]]),
                                  accuracy=settings.judge.simulated_accuracy, seed=settings.synth.seed,
                                  errors=settings.judge.simulated_errors)[0])
        book.answered(prompt, known=True)
        yes, no = ("yes", math.log(p)), ("no", math.log1p(-p))
        return completion("yes" if p >= 0.5 else "no", [yes, no] if p >= 0.5 else [no, yes])

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in judge with uvicorn until stopped (SIGTERM/SIGINT)."""
    import uvicorn

    from keyphrase_pipeline.core.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    log.warning("STAND-IN judge (simulated annotator behind the OpenAI protocol, NOT an LLM) on http://%s:%d/v1, "
                "model name %r, lake %s, delay %s s, stats file %s", args.host, args.port, stand_in_model(settings),
                settings.lake_root, os.environ.get("JUDGE_STANDIN_DELAY_S") or 0,
                os.environ.get("JUDGE_STANDIN_STATS_FILE") or "-")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
