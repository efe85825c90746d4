"""In-process vLLM offline batch scoring on a GPU worker (optional extra ``keyphrase-pipeline[vllm]``).

``vllm.LLM(model=judge.model)`` scores a whole shard's prompts in one ``LLM.chat`` call with
``SamplingParams(max_tokens=1, temperature=0, logprobs=20)``; P(yes) comes from the first generated
token's top logprobs exactly as for the other backends. vLLM needs a CUDA GPU: it cannot run on the
CPU-only development machine, so only the P(yes) extraction (``p_yes_from_vllm_output``) and ``verdicts``
are unit-tested here, on fake objects of vLLM's shape. An output without a readable yes/no answer is an
``UnusableAnswer`` for that pair (quarantined by the labeller), never a failed batch.
"""

from __future__ import annotations

import logging

import numpy as np

from keyphrase_pipeline.jobs.judges.base import Judge, UnusableAnswer, Verdicts, judge_model_id, p_yes_from_logprobs
from keyphrase_pipeline.jobs.judges.prompt import neutralize_tokens, special_token_strings
from keyphrase_pipeline.core.errors import ConfigError

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


class VLLMJudge(Judge):
    """Judge with in-process vLLM (CUDA GPU): a shard's prompts in one ``LLM.chat`` call, one token with top-20
    logprobs each.

    ``score_prompts`` returns float64 P(yes) in [0, 1], shape ``(n,)``. Raises ConfigError (exit 2) when vLLM is
    not installed or ``judge.model`` is empty; DataError (exit 3) for an output without yes/no logprobs."""

    name = "vllm"

    def __init__(self, settings):
        super().__init__(settings)
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ConfigError("judge.backend=vllm needs vLLM on a CUDA GPU worker: pip install 'keyphrase-pipeline[vllm]' "
                              "(or serve the model with vLLM and use judge.backend=openai)") from None
        self.model = judge_model_id(settings)
        self.llm = LLM(model=settings.judge.model)
        self.params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        self.markers = special_token_strings(self.llm.get_tokenizer())
        log.info("vllm judge %s loaded", self.model)

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
        from keyphrase_pipeline.jobs.judges.prompt import build_prompts

        return self.verdict_prompts(build_prompts(pairs, self.settings) if len(pairs) else [])

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        v = self.verdict_prompts(prompts)
        if v.unusable:
            i, (reason, raw) = next(iter(sorted(v.unusable.items())))
            raise UnusableAnswer(f"vLLM answer {i} unusable ({reason}): {raw[:200]}", reason, raw)
        return v.p_yes
