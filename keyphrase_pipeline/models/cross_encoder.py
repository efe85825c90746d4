"""The cross-encoder assistant: reads ``keyphrase [SEP] category [SEP] title`` (``keyphrase_pipeline.models.text.cross_text``)
and outputs P(relevant) from one logit through a sigmoid. Trained on LLM labels; its soft scores are the
distillation targets of the bi-encoder student."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.bi_encoder import write_marker
from keyphrase_pipeline.models.devices import resolve_device
from keyphrase_pipeline.models.text import cross_text

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings


def build_cross(settings: Settings, base: str | None = None):
    """A CrossEncoder with one output on ``base`` or the configured encoder: a fresh classification head on a base
    encoder; an earlier cross-encoder's directory keeps its head (the warm start, ``train.cross_init_from``).

    Raises ConfigError (exit 2) when ``train.base_model`` is set but is not a directory."""
    from sentence_transformers.cross_encoder import CrossEncoder

    path = base or resolve_base_model(settings.train.base_model)
    return CrossEncoder(path, num_labels=1, max_length=settings.train.cross_max_length,
                        device=resolve_device(settings.train.device), local_files_only=True)


def load_cross(model_dir: str, device: str = "auto", setting: str = "train.device"):
    """The CrossEncoder at ``model_dir`` on ``device`` (the value of the device setting ``setting``, which errors
    name); ConfigError when there is no ``config.json`` or the device is not usable."""
    from sentence_transformers.cross_encoder import CrossEncoder

    if not Path(model_dir, "config.json").exists():
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"{model_dir} is not a cross-encoder model directory (no config.json)")
    return CrossEncoder(str(model_dir), device=resolve_device(device, setting), local_files_only=True)


def predict_pairs(model, titles, categories, keyphrases, batch_size: int = 128) -> np.ndarray:
    """P(relevant) for each pair (sigmoid of the single logit).

    Args:
        titles, categories, keyphrases: equal-length sequences of str; the model reads
            ``keyphrase [SEP] category [SEP] title`` (``keyphrase_pipeline.models.text.cross_text``).
    Returns:
        ``np.ndarray`` of shape ``(n,)``, float32 in [0, 1]; empty input gives shape ``(0,)``.
    """
    import torch

    pairs = [cross_text(k, c, t) for t, c, k in zip(titles, categories, keyphrases)]
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    scores = model.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Sigmoid(),
                           show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(scores, dtype=np.float32).reshape(-1)


def save_cross(model, model_dir: str, threshold: float | None = None) -> str:
    """Save the CrossEncoder and our marker; ``threshold`` (P(relevant) cut in [0, 1] chosen on held-out pairs)
    is stored in the marker for ``kp score``. Creates ``model_dir``; returns it."""

    os.makedirs(model_dir, exist_ok=True)
    model.save(str(model_dir))
    write_marker(model_dir, "cross", **({"threshold": float(threshold)} if threshold is not None else {}))
    return str(model_dir)
