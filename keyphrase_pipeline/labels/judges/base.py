"""The judge interface shared by every backend, and the one way P(yes) is computed from answer tokens.

A judge turns (title, category, keyphrase) pairs into ``p_yes`` in [0, 1]:
``P(yes) = p(yes) / (p(yes) + p(no))`` where p(yes) sums the probability of every answer token that
reads "yes" once case, spaces and tokenizer word markers are ignored (``yes``, `` Yes``, ``▁YES``,
``Ġyes``), and likewise for "no". Nothing else the model might say is parsed.

An answer that cannot be read (no yes/no token among the top logprobs, a malformed response) is an
``UnusableAnswer`` for that ONE pair: ``Judge.verdicts`` returns it beside the other pairs' P(yes), and
the labeller quarantines the pair with the raw answer instead of failing (and re-paying) the batch.

The judge identity (``judge_model_id``) is hashed into every ``pair_key``: the served model name (plus
``judge.model_revision``) for HTTP/vLLM judges, and a fingerprint of the files for a local model directory,
so other weights at another (or the same) path never reuse a label.
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError, DataError, KPError
from keyphrase_pipeline.labels.judges.prompt import build_prompts

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

SIMULATED_MODEL = "simulated-annotator-v1"
SIMULATED_LLM_MODEL = "simulated-llm-annotator-v1"  # judge.simulated_errors=llm: another judge, other labels


TIMED_OUT_REASON = "timed_out"  # quarantine reason: asked 1 + judge.max_timeout_retries times, no answer came back


class JudgeUnavailable(KPError):
    """The judge service kept failing (timeouts, 429, 5xx) after every retry. Exit code 1: retry later."""


class JudgeTimedOut(JudgeUnavailable):
    """One pair's requests timed out (or their connection dropped after sending) more than
    ``judge.max_timeout_retries`` times: each may have been computed and billed, so the pair is not asked again
    that day (quarantined as ``TIMED_OUT_REASON``). Exit code 1."""


class UnusableAnswer(DataError):
    """One pair's answer cannot be read. ``reason``: ``no_yes_no_token`` (neither yes nor no among the top
    logprobs), ``invalid_logprob`` (a yes/no logprob that is not a number <= 0) or ``malformed_answer`` (not a
    completion with logprobs); ``raw``: the answer as received (cut to 1000 characters)."""

    def __init__(self, message: str, reason: str, raw: object = ""):
        super().__init__(message)
        self.reason = reason
        self.raw = (raw if isinstance(raw, str) else repr(raw))[:1000]


@dataclass
class Verdicts:
    """What one judge call gave for a batch of n pairs.

    ``p_yes``: float64 (n,), P(yes) in [0, 1], NaN where a pair has no answer; ``unusable``: row -> (reason, raw
    answer) for pairs answered but unreadable (to quarantine: asking again would pay for the same answer);
    ``error``: a failure (endpoint down, refused) that left the other NaN rows unanswered: the caller keeps what
    was answered, then raises it. A pair given up after ``judge.max_timeout_retries`` requests without an answer
    (openai judge) is in ``unusable`` with reason ``TIMED_OUT_REASON`` (asking again might pay again) and
    ``error`` is its ``JudgeTimedOut``. ``possibly_paid``: requests of this call that timed out or whose
    connection dropped after they were sent (the endpoint may have computed and billed them)."""

    p_yes: np.ndarray
    unusable: dict[int, tuple[str, str]] = field(default_factory=dict)
    error: Exception | None = None
    possibly_paid: int = 0

    @classmethod
    def of(cls, p_yes) -> "Verdicts":
        return cls(np.asarray(p_yes, dtype=np.float64))


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
            raise UnusableAnswer(f"judge answer has a non-numeric logprob for token {token!r}: {logprob!r}",
                                 "invalid_logprob", items[:20]) from None
        if math.isnan(lp) or lp > 1e-6:
            raise UnusableAnswer(f"judge answer has an invalid logprob for token {token!r}: {logprob!r}",
                                 "invalid_logprob", items[:20])
        p[word] += math.exp(lp)
        seen = True
    total = p["yes"] + p["no"]
    if not seen or total <= 0.0:
        raise UnusableAnswer(f"judge answer holds no yes/no token among its top logprobs: {[t for t, _ in items[:20]]!r}",
                             "no_yes_no_token", items[:20])
    return p["yes"] / total


# files of a local model directory that decide what the judge answers (hashed whole; they are small)
_CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.txt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")
_SAMPLE = 1 << 16  # bytes read from the start, middle and end of each weight file


def model_dir_fingerprint(path: str | os.PathLike) -> str:
    """sha1 hex of a local model directory's identity: the content of its config/tokenizer/chat-template files
    and, for every weight file (``*.safetensors``, ``*.bin``, ``*.gguf``, ..., and weight indexes), its name,
    size and three 64 KiB samples of its bytes (start, middle, end). Retrained or fine-tuned weights of the
    same shape differ in the sampled bytes; a copy of the directory elsewhere (new paths, new mtimes) keeps
    the fingerprint, so labels move with the model and are never paid twice. Reads about 200 KiB per file.

    Raises ConfigError when ``path`` is not a directory or holds neither config.json nor a weight file."""

    root = os.fspath(path)
    if not os.path.isdir(root):
        raise ConfigError(f"judge.model {root!r} is not a local model directory")
    h = hashlib.sha1(b"kp-model-fingerprint/1")
    names = sorted(os.listdir(root))
    weights = [n for n in names if n.endswith(_WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(root, n))]
    configs = [n for n in names if n in _CONFIG_FILES]
    if "config.json" not in configs and not weights:
        raise ConfigError(f"judge.model {root!r} holds neither config.json nor weight files")
    for n in configs:
        with open(os.path.join(root, n), "rb") as f:
            data = f.read()
        h.update(f"config {n} {len(data)}\n".encode())
        h.update(data)
    for n in weights:
        p = os.path.join(root, n)
        size = os.path.getsize(p)
        h.update(f"weights {n} {size}\n".encode())
        with open(p, "rb") as f:
            for at in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                f.seek(at)
                h.update(f.read(_SAMPLE))
    return h.hexdigest()


def judge_model_id(settings: Settings) -> str:
    """The judge identity stored with labels (``judge_model``) and hashed into ``pair_key``, known without
    loading the judge.

    * ``simulated``: ``simulated-annotator-v1`` (``simulated-llm-annotator-v1`` with ``judge.simulated_errors``
      llm);
    * ``transformers`` (and ``vllm`` given a local directory): ``<directory name>@<first 12 hex of
      model_dir_fingerprint>``, so different weights at the same or another path are a different judge;
    * ``openai`` / ``vllm`` with a served or hub name: the name as configured.

    ``judge.model_revision`` (when set) is appended as ``@rev:<revision>``: bump it when the weights behind a
    served model name change. Raises ConfigError when ``judge.model`` is empty or not a local directory for
    the transformers backend."""
    j = settings.judge
    if j.backend == "simulated":
        return SIMULATED_LLM_MODEL if getattr(j, "simulated_errors", "iid") == "llm" else SIMULATED_MODEL

    if not j.model:
        raise ConfigError(f"judge.model is empty: the {j.backend} backend needs a model "
                          f"({'a local directory' if j.backend == 'transformers' else 'a served model name'})")
    if j.backend == "transformers" or (j.backend == "vllm" and os.path.isdir(j.model)):
        if not os.path.isdir(j.model):
            raise ConfigError(f"judge.model {j.model!r} must be a local model directory for the {j.backend} judge "
                              "(e.g. python -m keyphrase_pipeline.labels.judges.smollm2 var/models/smollm2-135m)")
        ident = f"{os.path.basename(os.path.normpath(j.model))}@{model_dir_fingerprint(j.model)[:12]}"
    else:
        ident = j.model
    revision = getattr(j, "model_revision", "")
    return f"{ident}@rev:{revision}" if revision else ident


def legacy_judge_model_id(settings: Settings) -> str:
    """The judge id that label stores written before pair_key v2 carry for this configuration (the directory's
    NAME for local models, which cannot tell two models apart; the configured name otherwise)."""
    j = settings.judge
    if j.backend == "simulated":
        return SIMULATED_MODEL
    if j.backend == "transformers":
        return os.path.basename(os.path.normpath(j.model))
    return j.model


class Judge(ABC):
    """A backend that scores pairs. Subclasses implement ``score_prompts`` (or override ``score``)."""

    name: str = "base"  # backend name stored in the label's `judge` column
    model: str = ""  # judge model id stored in `judge_model` and hashed into `pair_key`

    @property
    def runs_on(self) -> str:
        """Where the judging computes, for the run stats (``judge_device``) and the Keyphrases page: a local
        backend says its device and precision (``cuda:0 (bf16)``), a remote one its endpoint. Default: ``here``."""
        return "here"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.prompt_version = settings.judge.prompt_version

    def verdicts(self, pairs) -> Verdicts:
        """``Verdicts`` for each pair of the frame. This default calls ``score`` (every pair answered or an
        exception); backends that can fail per pair (openai, vllm) override it to return the unusable answers
        beside the others, so a batch is never lost (and re-paid) for one odd answer."""
        return Verdicts.of(self.score(pairs))

    def score(self, pairs) -> np.ndarray:
        """P(yes) for each pair (DataFrame with title, category, keyphrase[, item_id, keyphrase_id]).

        Returns float64 ``np.ndarray`` of shape ``(len(pairs),)``, values in [0, 1]; ``(0,)`` for no pairs.
        ConfigError (exit 2) for an unknown ``judge.prompt_version``; backends add their own errors.
        Strict: raises DataError (``UnusableAnswer``) when any pair's answer is unreadable."""

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
