"""LLM judges: one interface (``keyphrase_pipeline.labels.judges.base.Judge``), several backends chosen by ``judge.backend``.

========== ================================================= ==========================================
backend    what                                              where
========== ================================================= ==========================================
simulated  the synthetic marketplace's annotator             demo / tests (default)
transformers  a local Hugging Face causal LM, one forward    CPU or GPU worker (e.g. SmolLM2, Llama)
           pass per batch reading yes/no logits
openai     any OpenAI-compatible endpoint (vLLM server,      GPU service or hosted API
           hosted API): one token with logprobs
vllm       in-process vLLM offline batch scoring             GPU workers (optional extra; not here)
========== ================================================= ==========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.labels.judges.base import Judge, JudgeUnavailable, judge_model_id, p_yes_from_logprobs

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

BACKENDS = ("simulated", "transformers", "openai", "vllm")
SIMULATED_JUDGE = "keyphrase_pipeline.synthetic.simulated_judge"  # module of the simulated backend (package ``synthetic``)


def get_judge(settings: Settings) -> Judge:
    """The judge configured by ``settings.judge.backend`` (heavy libraries import only here)."""
    backend = settings.judge.backend
    if backend == "simulated":  # the demo's annotator, loaded by name: production code never imports the demo
        import importlib

        return importlib.import_module(SIMULATED_JUDGE).SimulatedJudge(settings)
    if backend == "transformers":
        from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge

        return TransformersJudge(settings)
    if backend == "openai":
        from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge

        return OpenAIJudge(settings)
    if backend == "vllm":
        from keyphrase_pipeline.labels.judges.vllm_judge import VLLMJudge

        return VLLMJudge(settings)

    raise ConfigError(f"judge.backend {backend!r} is unknown; choose from {BACKENDS}")


__all__ = ["BACKENDS", "Judge", "JudgeUnavailable", "get_judge", "judge_model_id", "p_yes_from_logprobs"]
