"""The bi-encoder student: ONE shared encoder serving two towers (item and keyphrase), mean pooling,
L2-normalised, trained with Matryoshka losses so an embedding's first ``serve.dim`` values are a usable
embedding on their own (cut, then re-normalised).

Tower inputs come from ``keyphrase_pipeline.models.text`` (item: ``title [SEP] category``; keyphrase: the query text), so
training, scoring, ONNX export and batch inference all see the same strings.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.cut_rotation import rotation_of_module
from keyphrase_pipeline.models.devices import resolve_device
from keyphrase_pipeline.models.text import item_text, keyphrase_text

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

MARKER = layout.MODEL_MARKER  # written beside every model we save: {"kind": "bi"|"cross", ...}


def write_marker(model_dir: str | Path, kind: str, **extra) -> None:
    """Write ``kp_model.json`` (``{"kind": kind, **extra}``, e.g. ``threshold``) into the existing ``model_dir``.

    Overwrites in place (not atomic); OSError when the directory does not exist."""
    Path(model_dir, MARKER).write_text(json.dumps({"kind": kind, **extra}, indent=2, sort_keys=True))


def read_marker(model_dir: str | Path) -> dict:
    """The ``kp_model.json`` of ``model_dir`` as a dict; {} when there is none.

    Raises json.JSONDecodeError (a ValueError; ``kp`` exit 1) when the file is not JSON."""
    p = Path(model_dir, MARKER)
    return json.loads(p.read_text()) if p.exists() else {}


def model_kind(model_dir: str | Path) -> str | None:
    """'bi', 'cross', 'onnx' (or another marker's kind) or None, from our marker, else from the files present.

    A registry version directory is looked through to its ``model/``. None for a missing directory or one
    that is none of these. json.JSONDecodeError (exit 1) when ``kp_model.json`` or ``config.json`` is not JSON."""
    d = Path(model_dir)
    if not d.is_dir():
        return None
    marker = read_marker(d)
    if marker.get("kind"):
        return marker["kind"]
    if (d / "item.onnx").exists() and (d / "keyphrase.onnx").exists():
        return "onnx"
    if (d / layout.EXPORT_RECORD).exists() and (d / "item" / "tower.json").exists() and (d / "keyphrase" / "tower.json").exists():
        return "onnx"  # `kp export` output (layout.onnx_dir)
    if Path(layout.version_model_dir(d)).is_dir():  # a registry version directory
        return model_kind(layout.version_model_dir(d))
    cfg = d / "config.json"
    if cfg.exists():
        archs = json.loads(cfg.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in archs):
            return "cross"
        if (d / "modules.json").exists():
            return "bi"
    return None


def build_student(settings: Settings, base: str | None = None):
    """A SentenceTransformer to train: from ``base`` (a sentence-transformers or HF encoder directory),
    else the configured base encoder. Mean pooling + Normalize are added when the base lacks them. A rotation
    before the cut (``models.cut_rotation``, from a warm start) is frozen: training never makes it non-orthogonal.

    Raises ConfigError (exit 2): ``train.base_model`` is not a directory, or a ``train.matryoshka_dims`` value
    exceeds the encoder's embedding size."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules

    path = base or resolve_base_model(settings.train.base_model)
    device = resolve_device(settings.train.device)
    if Path(path, "modules.json").exists():
        model = SentenceTransformer(path, device=device, local_files_only=True)
    else:  # a bare Hugging Face encoder: add mean pooling and normalisation
        transformer = st_modules.Transformer(path, max_seq_length=settings.train.max_seq_length)
        pooling = st_modules.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling, st_modules.Normalize()], device=device)
    model.max_seq_length = settings.train.max_seq_length

    for module in model:  # a warm start from a rotated student: its rotation stays a rotation (frozen)
        if rotation_of_module(module) is not None:
            module.requires_grad_(False)
    dim = model.get_embedding_dimension()
    too_big = [d for d in settings.train.matryoshka_dims if d > dim]
    if too_big:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"train.matryoshka_dims {too_big} exceed the encoder's embedding size {dim}")
    return model


def load_student(model_dir: str, device: str = "auto"):
    """The SentenceTransformer at ``model_dir`` (a model directory or a registry version directory holding
    ``model/``), on ``device`` (``auto``: GPU when visible). Raises ConfigError when there is no ``modules.json``."""
    from sentence_transformers import SentenceTransformer

    if not Path(model_dir, "modules.json").exists() and Path(layout.version_model_dir(model_dir), "modules.json").exists():
        model_dir = layout.version_model_dir(model_dir)  # a registry version directory
    if not Path(model_dir, "modules.json").exists():
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"{model_dir} is not a sentence-transformers model directory (no modules.json)")
    return SentenceTransformer(str(model_dir), device=resolve_device(device), local_files_only=True)


def _cut(emb: np.ndarray, dim: int | None) -> np.ndarray:
    """The first ``dim`` columns of ``(n, d)`` embeddings (Matryoshka cut), L2-normalised, float32."""
    if dim is not None and dim < emb.shape[1]:
        emb = emb[:, :dim]
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.maximum(norms, 1e-12)).astype(np.float32)


def encode_items(model, titles, categories, dim: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Item-tower embeddings of ``title [SEP] category`` (``keyphrase_pipeline.models.text.item_text``).

    Args:
        titles, categories: equal-length sequences of str (a category may be None or empty); a longer one is
            cut silently to the shorter (``zip``), so check lengths first.
        dim: the Matryoshka cut (``serve.dim``); None, or a value >= the model's size, keeps the full dimension.
    Returns:
        ``np.ndarray`` of shape ``(n, dim)``, float32, each row L2-normalised (inner product = cosine);
        an all-zero embedding stays zero.
    """
    texts = [item_text(t, c) for t, c in zip(titles, categories)]
    return _cut(model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False), dim)


def encode_keyphrases(model, keyphrases, dim: int | None = None, batch_size: int = 128) -> np.ndarray:
    """Keyphrase-tower embeddings of the query text (``keyphrase_pipeline.models.text.keyphrase_text``).

    ``keyphrases``: sequence of str (None/NaN become ""). Returns ``np.ndarray`` of shape ``(n, dim)`` (``dim``
    None: the model's), float32, rows L2-normalised."""
    texts = [keyphrase_text(k) for k in keyphrases]
    return _cut(model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False), dim)


def score_pairs(model, titles, categories, keyphrases, dim: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each (item, keyphrase) pair at ``dim`` (the serving cut).

    Returns ``np.ndarray`` of shape ``(n,)``, float32, cosine in [-1, 1]; row ``i`` scores
    (``titles[i]``, ``categories[i]``) against ``keyphrases[i]``; ``(0,)`` for no titles. The three sequences
    must have equal length; this is not checked (``encode_items`` zips titles and categories)."""
    if len(titles) == 0:
        return np.zeros(0, dtype=np.float32)
    a = encode_items(model, titles, categories, dim, batch_size)
    b = encode_keyphrases(model, keyphrases, dim, batch_size)
    return (a * b).sum(axis=1)


def save_student(model, model_dir: str, settings: Settings, threshold: float | None = None, hybrid=None) -> str:
    """Save the SentenceTransformer and our marker (serving cut, Matryoshka dims and, when known, the
    ``threshold`` at ``serve.dim`` chosen on held-out pairs, for ``kp score``, on the scale of the served score;
    ``hybrid``, a ``models.lexical_match.HybridScore`` or None, stored as ``hybrid``). Creates ``model_dir``;
    returns it."""
    os.makedirs(model_dir, exist_ok=True)
    model.save(str(model_dir))
    write_marker(model_dir, "bi", serve_dim=settings.serve.dim, matryoshka_dims=list(settings.train.matryoshka_dims),
                 **({"threshold": float(threshold)} if threshold is not None else {}),
                 **({"hybrid": hybrid.as_dict()} if hybrid is not None else {}))
    return str(model_dir)


def load_hybrid(model_dir: str | Path):
    """The student's hybrid score (``models.lexical_match.HybridScore``) stored in its ``kp_model.json``, or None
    (none stored: its served score is the cosine). ``model_dir``: a model directory or a registry version directory.

    Raises ConfigError (exit 2) for a stored hybrid that is not a sound record (``HybridScore.from_dict``: another
    features version, a feature unknown or missing, a weight that is not a finite number, ...)."""
    from keyphrase_pipeline.models.lexical_match import HybridScore

    d = Path(model_dir)
    if not (d / MARKER).exists() and Path(layout.version_model_dir(d), MARKER).exists():
        d = Path(layout.version_model_dir(d))
    try:
        return HybridScore.from_dict(read_marker(d).get("hybrid"))
    except ValueError as exc:
        from keyphrase_pipeline.core.errors import ConfigError

        raise ConfigError(f"{d / MARKER}: {exc}") from None


def served_scores(model, hybrid, titles, categories, keyphrases, dim: int | None = None) -> np.ndarray:
    """The student's score of each pair as served: ``score_pairs`` at ``dim``, plus ``hybrid``'s lexical bonus when
    it has one (``load_hybrid``; None: the cosine). float32 ``(n,)``."""
    cosines = score_pairs(model, titles, categories, keyphrases, dim=dim)
    return served_columns(hybrid, cosines, titles, categories, keyphrases)["score"]


def served_columns(hybrid, cosines, titles, categories, keyphrases) -> dict[str, np.ndarray]:
    """The served score of pairs whose cosines (float ``(n,)``, at ``serve.dim``) are known: ``{"score": cosines}``
    without a hybrid score (``hybrid`` None); else ``{"score": cosines + hybrid's lexical bonus, "cosine": cosines}``
    (``HybridScore.score``: float32 ``(n,)``). Without a hybrid score ``cosines`` is returned as given, in its own
    dtype (``score_pairs`` gives float32). Raises ValueError on unequal lengths when there is a hybrid score; without
    one the texts are not read."""
    if hybrid is None:
        return {"score": cosines}
    return {"score": hybrid.score(cosines, titles, categories, keyphrases), "cosine": cosines}
