"""CTR models in the registry, ready to score: ``load_scorer`` gives a ``CtrScorer`` (its features built from the
embeddings of the student it was trained on, its codebooks, the lake's image vectors) that predicts P(click) at the
reference position with ONNX Runtime (``predict``: batch inference in recommend) or at given positions with torch
(``predict_at``: the held-out evaluation and the gate).

A CTR model is tied to the student whose embeddings it reads (``student_version`` in its ``train_config.json``):
scored with another student's embeddings it would be wrong, so ``champion_scorer`` gives none then, and says why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.artifacts.embeddings import load_embeddings
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, contract_dataset, row_group_batches
from keyphrase_pipeline.models import ctr_model
from keyphrase_pipeline.models.ctr_features import CtrFeatures, VectorTable

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

ITEM_SID, KEYPHRASE_SID = "item_sid", "keyphrase_sid"  # codebook folders inside a CTR version's model/


def load_images(settings: Settings) -> VectorTable | None:
    """The lake's ``raw/item_images`` as a ``VectorTable`` of float32 vectors, or None when the lake has none.

    DataError (exit 3): vectors of different lengths, non-finite values, duplicate item ids; SchemaError when the
    dataset breaks its contract. Memory: ``4 * length`` bytes per item."""
    lake = Lake.from_settings(settings)
    path = lake.path("item_images")
    if not lake.exists(path):
        return None
    dataset = contract_dataset(path, "item_images")
    ids, vecs = [], []
    for _file, batch in row_group_batches(dataset, ["item_id", "image_embedding"], 65_536):
        ids.append(batch.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64))
        vecs.extend(batch.column("image_embedding").to_pylist())
    if not ids:
        return None
    lengths = {len(v) for v in vecs if v is not None}
    if len(lengths) != 1 or any(v is None for v in vecs):
        raise DataError(f"{path}: image vectors must all have one length, found lengths {sorted(lengths)} "
                        f"({sum(v is None for v in vecs)} null)")
    values = np.asarray(vecs, dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: {int((~np.isfinite(values).all(axis=1)).sum())} image vector(s) hold NaN or inf")
    try:
        return VectorTable(np.concatenate(ids), values)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def embedding_tables(settings: Settings, student_version: str,
                     items: bool = True) -> tuple[VectorTable | None, VectorTable]:
    """(items, keyphrases) ``VectorTable`` of the student's embeddings (``load_embeddings``, required); items None
    with ``items=False`` (a caller that streams the item vectors)."""
    table = None
    if items:
        table = VectorTable(*load_embeddings(settings, "items", student_version, required=True))
    return table, VectorTable(*load_embeddings(settings, "keyphrases", student_version, required=True))


def trained_on(settings: Settings, version: str) -> str | None:
    """The student whose embeddings CTR model ``version`` reads (``student_version`` of its ``train_config.json``),
    or None when the file or the field is missing."""
    vdir = layout.registry_version_dir(settings, version, "ctr")
    config = Lake.from_settings(settings).read_json(layout.version_file(vdir, "train_config"), default={}) or {}
    return config.get("student_version")


def build_features(cfg: ctr_model.CtrConfig, items: VectorTable | None, keyphrases: VectorTable,
                   model_dir: str | Path, images: VectorTable | None) -> CtrFeatures:
    """``CtrFeatures`` for ``cfg`` with the semantic-ID codebooks saved in ``model_dir`` (when it uses them).
    ``items`` None: item vectors are streamed to ``build`` (their codes computed there with the item codebook)."""
    from keyphrase_pipeline.models import semantic_ids

    item_codes = kp_codes = item_book = None
    if cfg.use_semantic_ids:
        item_book = semantic_ids.load_codebook(Path(model_dir) / ITEM_SID)
        item_codes = semantic_ids.encode(item_book, items.values) if items is not None else None
        kp_codes = semantic_ids.encode(semantic_ids.load_codebook(Path(model_dir) / KEYPHRASE_SID), keyphrases.values)
    return CtrFeatures(cfg, items, keyphrases, item_codes, kp_codes, images if cfg.use_image else None, item_book)


class CtrScorer:
    """One registered CTR model with its inputs. ``predict(item_ids, keyphrase_ids)`` -> float32 P(click) at the
    reference position (NaN where the item or keyphrase has no embedding), in batches of ``batch_rows``, with ONNX
    Runtime; ``predict_at(item_ids, keyphrase_ids, positions)`` -> (float64 P(click) at those positions, kept mask)
    with the torch model (evaluation)."""

    def __init__(self, version: str, model_dir: str | Path, features: CtrFeatures, student_version: str,
                 batch_rows: int = 65_536):
        self.version, self.model_dir, self.features = version, Path(model_dir), features
        self.cfg, self.student_version, self.batch_rows = features.cfg, student_version, batch_rows
        self._session = self._torch = None

    def predict(self, item_ids, keyphrase_ids, item_vectors=None) -> np.ndarray:
        """float32 P(click) at the reference position per row (NaN: no embedding); ``item_vectors`` (float32
        ``(m, dim)``): each row's item embedding when the scorer streams items (recommend)."""
        import onnxruntime as ort

        if self._session is None:
            self._session = ort.InferenceSession(str(self.model_dir / ctr_model.ONNX_FILE),
                                                 providers=["CPUExecutionProvider"])
        item_ids = np.asarray(item_ids, dtype=np.int64)
        out = np.full(len(item_ids), np.nan, dtype=np.float32)
        for start in range(0, len(item_ids), self.batch_rows):
            sl = slice(start, start + self.batch_rows)
            vecs = None if item_vectors is None else np.asarray(item_vectors)[sl]
            inputs, kept = self.features.build(item_ids[sl], np.asarray(keyphrase_ids)[sl], vecs)
            if kept.any():
                part = out[sl]
                part[kept] = self._session.run(["p_click"], inputs)[0]
                out[sl] = part
        return out

    def predict_at(self, item_ids, keyphrase_ids, positions) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._torch is None:
            self._torch, _cfg = ctr_model.load(self.model_dir)
        inputs, kept = self.features.build(item_ids, keyphrase_ids)
        with torch.no_grad():
            logit, _ = self._torch({k: torch.as_tensor(v) for k, v in inputs.items()},
                                   torch.as_tensor(np.asarray(positions, dtype=np.int64)[kept]))
        return torch.sigmoid(logit).double().numpy(), kept


def load_scorer(settings: Settings, version: str, tables=None, images=None, stream_items: bool = False) -> CtrScorer:
    """The CTR model ``version`` of the registry as a ``CtrScorer``. ``tables``: (items, keyphrases) of its student
    when already loaded; ``images``: the image table when already loaded; ``stream_items``: load only the keyphrase
    embeddings (the caller passes each row's item vector to ``predict``). DataError when the version is missing
    or its files are incomplete."""
    vdir = layout.registry_version_dir(settings, version, "ctr")
    mdir = layout.version_model_dir(vdir)
    if not (Path(mdir) / ctr_model.CONFIG_FILE).exists():
        raise DataError(f"CTR model {version} is not in the registry ({mdir})")
    student = trained_on(settings, version)
    if not student:
        raise DataError(f"CTR model {version} does not record the student it was trained on ({vdir})")
    cfg = ctr_model.CtrConfig.from_json((Path(mdir) / ctr_model.CONFIG_FILE).read_text())
    items, keyphrases = tables if tables is not None else embedding_tables(settings, student, items=not stream_items)
    if cfg.use_image and images is None:
        images = load_images(settings)
    if cfg.use_image and images is not None and images.values.shape[1] != cfg.image_dim:
        raise DataError(f"CTR model {version} was trained on image vectors of length {cfg.image_dim}; "
                        f"raw/item_images now holds length {images.values.shape[1]}: it is retrained on the next "
                        "training day (until then no expected CTR)")
    return CtrScorer(version, mdir, build_features(cfg, items, keyphrases, mdir, images), student)


def champion_scorer(settings: Settings, student_version: str, tables=None, images=None,
                    stream_items: bool = False) -> tuple[CtrScorer | None, str]:
    """(the CTR champion as a scorer, why) when it was trained on ``student_version``'s embeddings; (None, why not)
    when there is no CTR champion, it was trained on another student, or it cannot be loaded (logged)."""
    try:
        version = registry.ctr_champion(settings)
    except registry.UnreadablePointerError as exc:
        return None, str(exc)
    if not version:
        return None, "no CTR model has been promoted yet"
    trained = trained_on(settings, version)
    if trained != student_version:
        return None, (f"the CTR champion {version} reads the embeddings of student {trained}, "
                      f"not of {student_version}: it is retrained on the next training day")
    try:
        return load_scorer(settings, version, tables, images, stream_items), f"CTR champion {version}"
    except (DataError, OSError, ValueError) as exc:
        log.warning("the CTR champion %s cannot be loaded: %s", version, exc)
        return None, f"the CTR champion {version} cannot be loaded: {exc}"
