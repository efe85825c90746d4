"""A rotation of the student's embedding space before the Matryoshka cut, fitted on relevant pairs.

The served embedding is the first ``serve.dim`` values of the student's, re-normalised (the Matryoshka cut).
Training with ``MatryoshkaLoss`` asks those values to carry the relevance on their own, yet a trained student
still loses AUC to the cut (real judgments: 0.816 at 384-d, 0.796 at 64-d). An orthogonal rotation changes no
full-size cosine, only which directions the cut keeps. This one puts first the directions along which an item
and its relevant keyphrase agree most:

    C = mean over relevant pairs (i, k) of i k^T          (i, k: full-size, L2-normalised tower embeddings)
    S = (C + C^T) / 2 = V diag(w) V^T                     (symmetric part: i^T k = sum_j w_j-weighted terms)
    R = V with columns ordered by |w_j|, largest first

so the cut keeps the ``serve.dim`` directions that carry most of a relevant pair's cosine (with either sign).
It is the symmetric-part eigenbasis of the item-query cross-covariance, the same statistic canonical
correlation and partial-least-squares projections start from; fitted after training, kept only when the
held-out AUC at ``serve.dim`` rises (``stages.train_bi``). Stored as a bias-free, identity-activation
sentence-transformers ``Dense`` layer before ``Normalize``, so ``model.encode``, ``kp score`` and the ONNX
towers (``models.onnx_export``) all apply it.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def fit_rotation(items: np.ndarray, keyphrases: np.ndarray) -> np.ndarray:
    """The orthogonal rotation ``R`` (module docstring) from relevant pairs.

    Args:
        items, keyphrases: ``(n, d)`` float arrays, row ``i`` of each one relevant pair's tower embeddings
            (full size, L2-normalised); ``n >= 1``.
    Returns:
        ``(d, d)`` float32, orthogonal; ``x @ R`` rotates row vectors ``x`` (columns: the new basis, the
        directions with the largest |eigenvalue| of the pairs' symmetrised cross-covariance first).
    Raises:
        ValueError: the arrays differ in shape, are not 2-d, or hold no pair.
    """
    a, b = np.asarray(items, dtype=np.float64), np.asarray(keyphrases, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or not len(a):
        raise ValueError(f"need two (n, d) arrays of the same shape with n >= 1, got {a.shape} and {b.shape}")
    cross = a.T @ b / len(a)
    w, v = np.linalg.eigh((cross + cross.T) / 2)
    return np.ascontiguousarray(v[:, np.argsort(-np.abs(w), kind="stable")]).astype(np.float32)


def rotation_of(model) -> np.ndarray | None:
    """The ``(d, d)`` rotation a student applies before its cut (``x @ R``), or None when it has none.

    A model's rotation is a bias-free, square ``Dense`` module with an identity activation (``with_rotation``);
    any other ``Dense`` is not a rotation."""
    return next((r for r in map(rotation_of_module, model) if r is not None), None)


def with_rotation(model, rotation: np.ndarray):
    """``model`` (a SentenceTransformer: Transformer, Pooling[, Dense rotation], Normalize) whose embeddings are
    rotated by ``rotation`` (``(d, d)``, ``x @ R``) before normalisation: a new model sharing the encoder's
    modules. A rotation already there is composed with the new one (one ``Dense``, never a chain).

    Raises ValueError when ``rotation`` is not ``(d, d)`` for the model's embedding size, or the model's last
    module is not ``Normalize``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules

    d = model.get_embedding_dimension()
    r = np.asarray(rotation, dtype=np.float32)
    if r.shape != (d, d):
        raise ValueError(f"rotation of shape {r.shape} for a {d}-d model")
    modules = list(model)
    if not isinstance(modules[-1], st_modules.Normalize):
        raise ValueError(f"the model's last module is {type(modules[-1]).__name__}, not Normalize")
    before = rotation_of(model)
    total = before @ r if before is not None else r
    head = [m for m in modules[:-1] if rotation_of_module(m) is None]
    dense = st_modules.Dense(d, d, bias=False, activation_function=torch.nn.Identity(),
                             init_weight=torch.tensor(total.T.copy()))
    rotated = SentenceTransformer(modules=[*head, dense, modules[-1]], device=str(model.device))
    rotated.max_seq_length = model.max_seq_length
    return rotated


def rotation_of_module(module) -> np.ndarray | None:
    """``rotation_of`` for one module: its ``x @ R`` matrix when it is a rotation ``Dense``, else None."""
    import torch
    from sentence_transformers.sentence_transformer import modules as st_modules

    if isinstance(module, st_modules.Dense) and module.linear.bias is None \
            and isinstance(module.activation_function, torch.nn.Identity) \
            and module.linear.in_features == module.linear.out_features:
        return module.linear.weight.detach().cpu().numpy().T.copy()
    return None
