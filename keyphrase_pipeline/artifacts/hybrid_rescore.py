"""The student's hybrid score in ``kp recommend``: each item's top ``serve.hybrid_depth`` candidates of the FAISS
search (by cosine) re-scored and re-ordered by the student's hybrid score (``keyphrase_pipeline.models.lexical_match``:
the cosine plus a learned bonus for the keyphrase's words, and its words with a digit, found in the item's text),
before the cross-encoder re-rank (``serve.rerank_depth``, off by default) and the cut to ``serve.top_k``.

Applies only to a student that has a hybrid score (``train.hybrid_score`` kept one: its ``kp_model.json`` holds
``hybrid``); any other student is served in its cosine order, as before. A depth below ``serve.top_k`` is raised to
it, so every served row carries the hybrid score and a list is in the order of its scores. The written ``score`` is
the hybrid score (in cosine units, not bounded to [-1, 1]); an item without a row in the day's catalog has no text:
its rows keep the cosine and its order, counted as ``hybrid_items_without_text``. ``serve.score_threshold`` still
gates the search on the cosine. The depth and weights are written beside the lists
(``recommendations/ds=D/_hybrid.json``, in the same atomic write) for ``kp publish``. Rows carried over by
``--changed-only`` keep the order and scores their day wrote (a full pass after changing ``serve.hybrid_depth``
re-scores them).

Cost: the day's catalog read per batch of items (as the re-rank reads it, ``rerank.ItemTexts``; with the re-rank
on too, one read per batch serves both, ``ItemTexts.batch``) and
``serve.hybrid_depth`` word-set comparisons per item in Python (``hybrid_pairs_per_s`` in the run stats); no model.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.artifacts.rerank import ItemTexts, score_top_with_text
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.models.topk import rescore_top

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


class HybridRescorer:
    """Re-scores each item's top ``depth`` candidates with ``hybrid`` (a ``lexical_match.HybridScore``); build it with
    ``for_run``. Counters: ``pairs`` (re-scored), ``seconds`` (spent computing the bonus), ``items`` (re-scored) and
    ``items_without_text`` (searched items without a catalog row: their cosine order kept)."""

    def __init__(self, hybrid, depth: int, item_texts: ItemTexts, student_version: str):
        self.hybrid, self.depth, self.item_texts, self.student_version = hybrid, depth, item_texts, student_version
        self.pairs, self.seconds, self.items, self.items_without_text = 0, 0.0, 0, 0

    @classmethod
    def for_run(cls, settings: Settings, ds: str, student_version: str) -> HybridRescorer | None:
        """The run's re-scorer, or None when ``serve.hybrid_depth`` is 0 or the student has no hybrid score (both
        logged). Opens the day's catalog (footers checked) before the index is read.

        Raises DataError (exit 3) when ``raw/catalog/ds=D`` is missing; SchemaError (exit 3) when it breaks its
        contract; ConfigError (exit 2) when the student's stored hybrid score is not a sound record
        (``bi_encoder.load_hybrid``)."""
        from keyphrase_pipeline.models.bi_encoder import load_hybrid

        depth = settings.serve.hybrid_depth
        if depth <= 0:
            log.info("serve.hybrid_depth=0: the student's cosine order is served")
            return None
        if depth < settings.serve.top_k:  # every served row on one scale, the list in the order of its scores
            log.info("serve.hybrid_depth=%d is below serve.top_k=%d: the top %d are re-scored", depth,
                     settings.serve.top_k, settings.serve.top_k)
            depth = settings.serve.top_k
        student_dir = layout.registry_version_dir(settings, student_version, "students")
        hybrid = load_hybrid(student_dir) if registry.exists(settings, student_version) else None
        if hybrid is None:
            log.info("student %s has no hybrid score (train.hybrid_score off, not kept, or trained before it): its "
                     "cosine order is served", student_version)
            return None
        texts = ItemTexts.open(settings, ds, f"the hybrid score of student {student_version} (serve.hybrid_depth="
                               f"{depth}; 0 serves the cosine order)")
        log.info("re-scoring each item's top %d candidates with student %s's hybrid score (weights per cosine: %s)",
                 depth, student_version, {f: round(w / hybrid.cosine_weight, 4)
                                          for f, w in zip(hybrid.features, hybrid.weights)})
        return cls(hybrid, depth, texts, student_version)

    def record(self) -> dict:
        """What ``kp recommend`` writes beside the lists (``layout.HYBRID_RECORD``) and ``kp publish`` puts in the
        manifest's ``hybrid``: ``{"depth", "score", "student"}`` (``score``: ``HybridScore.as_dict``)."""
        return {"depth": self.depth, "score": self.hybrid.as_dict(), "student": self.student_version}

    def search_k(self, k: int) -> int:
        """How many distinct candidates per item to search for so that the top ``depth`` and the top ``k`` exist."""
        return max(k, self.depth)

    def rescore(self, recs, texts=None):
        """``recs`` (``search_batch``'s frame) with each item's top ``depth`` rows re-ordered by the hybrid score,
        their ``score`` replaced by it, and ranks renumbered; no row dropped (the caller cuts to K). Items without
        catalog text keep their rows and order. ``texts``: the batch's texts already read (``ItemTexts.batch``);
        None reads them from the catalog."""
        cosines, keyphrases = recs["score"].to_numpy(), recs["keyphrase"].to_numpy()

        def score(rows, titles, categories):
            t0 = time.perf_counter()
            out = self.hybrid.score(cosines[rows], titles.tolist(), categories.tolist(), keyphrases[rows].tolist())
            self.seconds += time.perf_counter() - t0
            self.pairs += len(rows)
            return out

        source = texts if texts is not None else self.item_texts
        scores, items, without = score_top_with_text(recs, self.depth, source, score)
        self.items, self.items_without_text = self.items + items, self.items_without_text + without
        return rescore_top(recs, scores, self.depth)

    def stats(self) -> dict:
        """The run stats' ``hybrid_*`` fields."""
        return {"hybrid_depth": self.depth, "hybrid_student": self.student_version,
                "hybrid_weights": self.hybrid.as_dict(), "hybrid_items": self.items,
                "hybrid_items_without_text": self.items_without_text, "hybrid_pairs": self.pairs,
                "hybrid_seconds": round(self.seconds, 3),
                "hybrid_pairs_per_s": round(self.pairs / self.seconds, 1) if self.seconds else None}
