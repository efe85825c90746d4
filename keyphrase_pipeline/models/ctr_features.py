"""The CTR model's inputs for (item, keyphrase) rows: ids hashed, vectors and semantic-ID codes looked up by id, the
image vector where the item has one. One ``CtrFeatures`` serves training (``stages.train_ctr``) and batch
inference (``stages.recommend`` through ``artifacts.ctr_scoring``), so the two cannot build different inputs.

Memory: the vector tables (``4 * dim`` bytes per item and keyphrase), the codes (``2 * sid_levels`` bytes per
row, int16) and the image table; one call's arrays are proportional to its rows."""

from __future__ import annotations

import numpy as np

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.models.ctr_model import ITEM_SALT, KEYPHRASE_SALT, CtrConfig, id_bucket


class VectorTable:
    """Rows by int64 id: ``rows(ids)`` gives each id's row (or -1) by binary search over the sorted ids.

    ``ids`` int64 ``(n,)`` (unique), ``values`` ``(n, ...)`` any dtype; memory is the two arrays. DataError (exit 3)
    for duplicate ids."""

    def __init__(self, ids: np.ndarray, values: np.ndarray):
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        if len(self.ids) > 1 and (np.diff(self.ids) == 0).any():
            raise DataError(f"{int((np.diff(self.ids) == 0).sum())} duplicate id(s) in a vector table")
        self.values = np.asarray(values)[order]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """int64 ``(m,)`` row of each id in ``self.values``, -1 where the id is not in the table."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.searchsorted(self.ids, ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[at] == ids, at, -1).astype(np.int64)


class CtrFeatures:
    """Inputs of ``cfg``'s model for rows of (item_id, keyphrase_id).

    Args:
        cfg: the model's configuration (which parts it uses).
        items: ``VectorTable`` of float32 ``(n, cfg.emb_dim)`` item embeddings (the student's), or None when the
            caller streams them (``build(..., item_vectors=...)``: batch inference over a catalog too large to hold).
        keyphrases: ``VectorTable`` of the keyphrase embeddings.
        item_codes / keyphrase_codes: int ``(n, cfg.sid_levels)`` semantic-ID codes aligned with the tables' rows
            (``models.semantic_ids.encode``), or None when ``cfg.use_semantic_ids`` is off (or items are streamed).
        images: ``VectorTable`` of float32 ``(n, cfg.image_dim)`` image vectors, or None (no item has one).
        item_codebook: the item codebook, to encode streamed item vectors (``cfg.use_semantic_ids`` with
            ``items`` None)."""

    def __init__(self, cfg: CtrConfig, items: VectorTable | None, keyphrases: VectorTable, item_codes=None,
                 keyphrase_codes=None, images: VectorTable | None = None, item_codebook=None):
        self.cfg, self.items, self.keyphrases, self.images = cfg, items, keyphrases, images
        self.item_codes = None if item_codes is None else np.asarray(item_codes, dtype=np.int16)
        self.keyphrase_codes = None if keyphrase_codes is None else np.asarray(keyphrase_codes, dtype=np.int16)
        self.item_codebook = item_codebook

    def build(self, item_ids: np.ndarray, keyphrase_ids: np.ndarray,
              item_vectors: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(inputs, kept): ``inputs`` maps each name of ``cfg.inputs()`` to an array over the kept rows (dtypes and
        shapes of ``ctr_model.example_inputs``); ``kept`` bool ``(m,)``: rows whose item and keyphrase both have an
        embedding (the others cannot be scored and are left out, by every model alike). ``item_vectors`` float32
        ``(m, emb_dim)``: each row's item embedding, given instead of looked up (streamed items)."""
        from keyphrase_pipeline.models import semantic_ids

        cfg = self.cfg
        item_ids = np.asarray(item_ids, dtype=np.int64)
        keyphrase_ids = np.asarray(keyphrase_ids, dtype=np.int64)
        kr = self.keyphrases.rows(keyphrase_ids)
        if item_vectors is None:
            ir = self.items.rows(item_ids)
            kept = (ir >= 0) & (kr >= 0)
            ir = ir[kept]
            item_vecs = self.items.values[ir] if cfg.use_semantics else None
            item_codes = self.item_codes[ir] if cfg.use_semantic_ids else None
        else:
            kept = kr >= 0
            item_vecs = np.asarray(item_vectors, dtype=np.float32)[kept]
            item_codes = semantic_ids.encode(self.item_codebook, item_vecs) if cfg.use_semantic_ids else None
        kr, item_ids, keyphrase_ids = kr[kept], item_ids[kept], keyphrase_ids[kept]
        out: dict[str, np.ndarray] = {}
        if cfg.use_ids:
            out["item_bucket"] = id_bucket(item_ids, cfg.id_buckets, ITEM_SALT)
            out["keyphrase_bucket"] = id_bucket(keyphrase_ids, cfg.id_buckets, KEYPHRASE_SALT)
        if cfg.use_semantics:
            out["item_vec"] = np.ascontiguousarray(item_vecs, dtype=np.float32)
            out["keyphrase_vec"] = np.ascontiguousarray(self.keyphrases.values[kr], dtype=np.float32)
        if cfg.use_semantic_ids:
            out["item_codes"] = np.asarray(item_codes).astype(np.int64)
            out["keyphrase_codes"] = self.keyphrase_codes[kr].astype(np.int64)
        if cfg.use_image:
            image = np.zeros((len(kr), cfg.image_dim), dtype=np.float32)
            has = np.zeros(len(kr), dtype=np.float32)
            if self.images is not None:
                rows = self.images.rows(item_ids)
                found = rows >= 0
                image[found] = self.images.values[rows[found]]
                has[found] = 1.0
            out["image"], out["has_image"] = image, has
        return out, kept
