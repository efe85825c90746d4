"""The judge interface shared by every backend, and the one way P(yes) is computed from answer tokens.

A judge turns (title, category, keyphrase) pairs into ``p_yes`` in [0, 1]:
``P(yes) = p(yes) / (p(yes) + p(no))`` where p(yes) sums the probability of every answer token that
reads "yes" once case, spaces and tokenizer word markers are ignored (``yes``, `` Yes``, ``▁YES``,
``Ġyes``), and likewise for "no". Nothing else the model might say is parsed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np

from keyphrase_pipeline.core.errors import DataError, KPError

SIMULATED_MODEL = "simulated-annotator-v1"


class JudgeUnavailable(KPError):
    """The judge service kept failing (timeouts, 429, 5xx) after every retry. Exit code 1: retry later."""


def answer_word(token: str) -> str | None:
    """'yes' / 'no' when a token spells that answer (any case, leading space/word marker), else None."""
    w = token.replace("\u2581", " ").replace("\u0120", " ").strip().strip(".,!:;\"'").lower()
    return w if w in ("yes", "no") else None


def p_yes_from_logprobs(top: Mapping[str, float] | Iterable[tuple[str, float]]) -> float:
    """P(yes) from one position's top log-probabilities ({token: logprob} or (token, logprob) pairs).

    Log-probabilities are natural logs (<= 0). Returns a float in [0, 1]. Raises DataError (exit 3) when
    neither a yes nor a no token is among them (a malformed or off-format answer), or when a yes/no token's
    logprob is not a number, NaN or positive.
    """
    items = list(top.items() if isinstance(top, Mapping) else top)
    p = {"yes": 0.0, "no": 0.0}
    seen = False
    for token, logprob in items:
        word = answer_word(str(token))
        if word is None:
            continue
        try:
            lp = float(logprob)
        except (TypeError, ValueError):
            raise DataError(f"judge answer has a non-numeric logprob for token {token!r}: {logprob!r}") from None
        if math.isnan(lp) or lp > 1e-6:
            raise DataError(f"judge answer has an invalid logprob for token {token!r}: {logprob!r}")
        p[word] += math.exp(lp)
        seen = True
    total = p["yes"] + p["no"]
    if not seen or total <= 0.0:
        raise DataError(f"judge answer holds no yes/no token among its top logprobs: {[t for t, _ in items[:20]]!r}")
    return p["yes"] / total


def judge_model_id(settings) -> str:
    """The judge model id stored with labels (and hashed into pair_key), known without loading the judge.

    Raises ConfigError (exit 2) when ``judge.model`` is empty for a non-simulated backend."""
    j = settings.judge
    if j.backend == "simulated":
        return SIMULATED_MODEL
    if not j.model:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"judge.model is empty: the {j.backend} backend needs a model "
                          f"({'a local directory' if j.backend == 'transformers' else 'a served model name'})")
    if j.backend == "transformers":
        import os

        # a local directory: its name, so the same model at another path keeps its labels
        return os.path.basename(os.path.normpath(j.model))
    return j.model


class Judge(ABC):
    """A backend that scores pairs. Subclasses implement ``score_prompts`` (or override ``score``)."""

    name: str = "base"  # backend name stored in the label's `judge` column
    model: str = ""  # judge model id stored in `judge_model` and hashed into `pair_key`

    def __init__(self, settings):
        self.settings = settings
        self.prompt_version = settings.judge.prompt_version

    def score(self, pairs) -> np.ndarray:
        """P(yes) for each pair (DataFrame with title, category, keyphrase[, item_id, keyphrase_id]).

        Returns float64 ``np.ndarray`` of shape ``(len(pairs),)``, values in [0, 1]; ``(0,)`` for no pairs.
        ConfigError (exit 2) for an unknown ``judge.prompt_version``; backends add their own errors."""
        from keyphrase_pipeline.jobs.judges.prompt import build_prompts

        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.score_prompts(build_prompts(pairs, self.settings))

    @abstractmethod
    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        """P(yes) for each ready-made prompt."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients/models."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} judge={self.name} model={self.model} prompt={self.prompt_version}>"
