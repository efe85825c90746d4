"""In-process vLLM offline batch scoring on a GPU worker (optional extra ``keyphrase-pipeline[vllm]``).

``vllm.LLM(model=judge.model)`` scores a whole shard's prompts in one ``LLM.chat`` call with
``SamplingParams(max_tokens=1, temperature=0, logprobs=20)``; P(yes) comes from the first generated
token's top logprobs exactly as for the other backends. vLLM needs a CUDA GPU: it cannot run on the
CPU-only development machine, so only the P(yes) extraction (``p_yes_from_vllm_output``) is unit-tested
here, on a fake output object of vLLM's shape.
"""

from __future__ import annotations

import logging

import numpy as np

from keyphrase_pipeline.jobs.judges.base import Judge, judge_model_id, p_yes_from_logprobs
from keyphrase_pipeline.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def p_yes_from_vllm_output(output) -> float:
    """P(yes) from one ``vllm.RequestOutput``: ``outputs[0].logprobs[0]`` maps token id -> Logprob.

    Returns a float in [0, 1]; DataError (exit 3) when the output has no first-token logprobs or no yes/no
    token among them."""
    try:
        first = output.outputs[0].logprobs[0]
        pairs = [(lp.decoded_token if lp.decoded_token is not None else "", lp.logprob) for lp in first.values()]
    except (AttributeError, IndexError, TypeError) as exc:
        raise DataError(f"vLLM output has no first-token logprobs ({type(exc).__name__}: {exc})") from None
    return p_yes_from_logprobs(pairs)


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
        log.info("vllm judge %s loaded", self.model)

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        outputs = self.llm.chat([[{"role": "user", "content": p}] for p in prompts], self.params, use_tqdm=False)
        return np.array([p_yes_from_vllm_output(o) for o in outputs], dtype=np.float64)
