"""Semantic IDs: a few discrete codes per embedding that similar items (or keyphrases) share.

An embedding is compressed by residual quantisation (RQ): level 1 picks the nearest of ``2**bits`` centroids, level
2 quantises what is left, and so on for ``levels`` levels, so two items with the same first code are near each
other and items sharing more levels are nearer still. The CTR model (``keyphrase_pipeline.models.ctr_model``) learns
one vector per (level, code): a new item with no history borrows what items with its codes learned. The design
follows the related work on aligning sparse IDs with an LLM's dense semantics through a tokenisation step
(docs/CTR_MODEL.md); the quantiser is FAISS's ``IndexResidualQuantizer`` (factory string ``RQ<levels>x<bits>``),
trained with its beam search (``max_beam_size``), not our own k-means.

A codebook is saved with ``faiss.write_index`` (``codebook.faiss``) and read back with ``load_codebook``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from keyphrase_pipeline.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CODEBOOK_FILE = "codebook.faiss"


def train_codebook(vectors: np.ndarray, levels: int, bits: int, seed: int = 0, max_train: int = 200_000):
    """A residual quantiser of ``levels`` x ``bits`` bits trained on ``vectors``.

    Args:
        vectors: float32 ``(n, d)``; a sample of at most ``max_train`` rows (drawn with ``seed``) trains it.
        levels: codes per vector (1-8). bits: bits per code (1-16): ``2**bits`` centroids per level.

    Returns a trained ``faiss.IndexResidualQuantizer`` (encode with ``encode``). Raises ConfigError (exit 2) for
    levels/bits out of range, DataError (exit 3) for fewer vectors than centroids or non-finite values."""
    import faiss

    if not 1 <= levels <= 8 or not 1 <= bits <= 16:
        raise ConfigError(f"semantic IDs need 1-8 levels of 1-16 bits, got {levels} x {bits}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2 ** bits:
        raise DataError(f"semantic IDs: {len(x)} vectors cannot train {2 ** bits} centroids per level "
                        f"(lower ctr_model.sid_bits)")
    if not np.isfinite(x).all():
        raise DataError("semantic IDs: the vectors hold NaN or inf")
    if len(x) > max_train:
        x = x[np.random.default_rng(seed).choice(len(x), max_train, replace=False)]
    index = faiss.IndexResidualQuantizer(x.shape[1], levels, bits)
    index.rq.max_beam_size = 4  # a small beam: a little better than greedy, still fast on a CPU
    index.train(x)
    return index


def encode(codebook, vectors: np.ndarray) -> np.ndarray:
    """The codes of ``vectors`` (float32 ``(n, d)``): int64 ``(n, levels)``, each in ``[0, 2**bits)``.

    FAISS packs the codes into bytes least-significant bit first (``BitstringWriter``); they are unpacked here."""
    rq = codebook.rq
    levels, bits = int(rq.M), int(rq.nbits.at(0))
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, levels), dtype=np.int64)
    packed = codebook.sa_encode(x)  # uint8 (n, code_size)
    flat = np.unpackbits(packed, axis=1, bitorder="little")[:, :levels * bits].reshape(len(x), levels, bits)
    weights = (1 << np.arange(bits, dtype=np.int64))
    return (flat.astype(np.int64) * weights).sum(axis=2)


def save_codebook(codebook, folder: str | Path) -> str:
    """Write ``codebook`` as ``folder/codebook.faiss``; returns the path."""
    import faiss

    path = Path(folder) / CODEBOOK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(codebook, str(path))
    return str(path)


def load_codebook(folder: str | Path):
    """The codebook saved by ``save_codebook`` in ``folder``; DataError (exit 3) when it is missing."""
    import faiss

    path = Path(folder) / CODEBOOK_FILE
    if not path.exists():
        raise DataError(f"no semantic-ID codebook at {path}")
    return faiss.read_index(str(path))


def code_shape(codebook) -> tuple[int, int]:
    """(levels, codes per level) of a codebook."""
    return int(codebook.rq.M), 1 << int(codebook.rq.nbits.at(0))
