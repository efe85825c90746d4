"""The cross-encoder re-rank of ``kp recommend`` (``serve.rerank_depth`` > 0; off by default).

The student's FAISS search retrieves each item's top ``serve.rerank_depth`` distinct keyphrases; the cross-encoder
reads each (title, category, keyphrase) pair of them and their order becomes its P(relevant), highest first, before
the top ``serve.top_k`` are kept (``keyphrase_pipeline.models.topk.rerank_top``). The student keeps retrieval, the
teacher decides the order: on the simulated attr world this lifted precision@20 against the truth by +0.083 to
+0.088 at depth 200 and precision@5 by +0.12 to +0.15 re-ordering the top 20, 3 seeds each (``bench/rerank_gain.py``,
docs/TRAINING.md, "Re-ranking each item's top-K"); not measured on real data.

Which cross-encoder: ``serve.rerank_cross`` (a registry cross version or a model directory) or, empty, the served
student's own teacher, the ``cross_version`` its ``train_config.json`` records. So a rerun of a day re-ranks with
the same model as long as the student is the same. The items' texts come from the day's catalog
(``raw/catalog/ds=D``, the rows ``kp embed`` embedded), read per batch of items with
``keyphrase_pipeline.core.lake.rows_where``: bounded in memory, but a batch's ids span the whole id range, so each
batch reads the catalog's ``item_id`` column and most of its row groups (catalog bytes x batches in all; once per
batch with the student's hybrid re-score on too: ``ItemTexts.batch`` hands one read to both steps).

Cost: ``rerank_depth`` pairs per item searched, scored in chunks of ``CHUNK_PAIRS`` pairs, with a progress line
(pairs, rate, minutes left) every ``PROGRESS_SECONDS``; 212-217 pairs/s on 2 CPU cores through ``kp recommend`` on
the demo world (``bench/rerank_recommend.py``, docs/SERVING.md, where precision@5 against the simulated truth rose
by +0.117 at depth 20), so a catalog of millions needs a GPU worker (``serve.device``). Memory: the model, one
batch of items' candidate rows and one chunk's pair texts, set by ``serve.recommend_batch_rows`` x
max(``top_k``, ``rerank_depth``) and ``CHUNK_PAIRS``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, parquet_dataset, rows_where
from keyphrase_pipeline.models.topk import rerank_top

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

CHUNK_PAIRS = 2_048  # pairs per cross-encoder call (and per list of pair texts held at once): ~10 s on 2 CPU cores
PROGRESS_SECONDS = 30.0  # at most one progress line per this many seconds (and one at the end of each batch)


class ItemTexts:
    """The items' texts in the day's catalog (``raw/catalog/ds=D``), read per batch of ids; build it with ``open``.
    Used by the cross-encoder re-rank here and the student's hybrid re-score (``artifacts.hybrid_rescore``)."""

    def __init__(self, catalog):
        self.catalog = catalog  # a pyarrow dataset of the catalog contract

    @classmethod
    def open(cls, settings: Settings, ds: str, needed_by: str) -> ItemTexts:
        """The day's catalog, its files' footers checked. Raises DataError (exit 3) naming ``needed_by`` (the
        setting that needs the titles) when ``raw/catalog/ds=D`` is missing; SchemaError (exit 3) when it breaks its
        contract."""
        catalog_path = Lake.from_settings(settings).path("catalog", ds=ds)
        try:
            return cls(parquet_dataset(catalog_path, "catalog"))
        except DataError:
            raise DataError(f"{needed_by} needs the items' titles: no catalog for {ds} at {catalog_path}") from None

    def texts(self, item_ids):
        """(titles, categories): object arrays aligned with int64 ``item_ids`` ``(n,)`` from the day's catalog; the
        title is None or NaN where an id has no catalog row (its category ""). An item with several rows: its last
        active row in file order, else its last row."""
        import pandas as pd
        import pyarrow.compute as pc

        wanted = np.unique(np.asarray(item_ids, dtype=np.int64))
        table = rows_where(self.catalog, "item_id", wanted, ["item_id", "title", "category", "active"])
        table = table.set_column(3, "active", pc.fill_null(table.column("active"), False))
        rows = table.to_pandas().sort_values("active", kind="stable")
        rows = rows.drop_duplicates("item_id", keep="last").set_index("item_id")
        ids = pd.Index(np.asarray(item_ids, dtype=np.int64))
        found = rows.reindex(ids)
        return found["title"].to_numpy(dtype=object), found["category"].fillna("").to_numpy(dtype=object)

    def batch(self, item_ids) -> BatchTexts:
        """The texts of one batch's int64 ``item_ids`` read from the catalog once, for every step of ``kp recommend``
        that needs them (the hybrid re-score, then the re-rank): a ``BatchTexts`` answering ``texts`` from memory."""
        wanted = np.unique(np.asarray(item_ids, dtype=np.int64))
        return BatchTexts(wanted, *self.texts(wanted))


class BatchTexts:
    """One batch's item texts held in memory (``ItemTexts.batch``): ``texts`` as ``ItemTexts.texts`` for any ids of
    the batch; an id outside it, like an id without a catalog row, gets no title."""

    def __init__(self, item_ids: np.ndarray, titles: np.ndarray, categories: np.ndarray):
        import pandas as pd

        self._index = pd.Index(item_ids)
        self._titles, self._categories = titles, categories

    def texts(self, item_ids):
        """(titles, categories) object arrays aligned with ``item_ids`` ``(n,)``; title None where unknown."""
        at = self._index.get_indexer(np.asarray(item_ids, dtype=np.int64))
        known = at >= 0
        titles = np.full(len(at), None, dtype=object)
        categories = np.full(len(at), "", dtype=object)
        titles[known], categories[known] = self._titles[at[known]], self._categories[at[known]]
        return titles, categories


def score_top_with_text(recs, depth: int, texts, score) -> tuple[np.ndarray, int, int]:
    """Scores each item's top ``depth`` rows of ``recs`` (``search_batch``'s frame: ``item_id``, ``keyphrase``,
    ``rank`` from 1) that have a title in ``texts`` (an ``ItemTexts`` or ``BatchTexts``), the step the hybrid
    re-score and the cross-encoder re-rank share. ``score(rows, titles, categories)`` gets the int positions of the
    rows and their texts (object arrays) and returns their float32 scores.

    Returns (scores float32 ``(len(recs),)``, NaN on rows not scored; items scored; items without text: searched
    items none of whose top rows has a title)."""
    import pandas as pd

    scores = np.full(len(recs), np.nan, dtype=np.float32)
    if not len(recs):
        return scores, 0, 0
    deep = np.flatnonzero(recs["rank"].to_numpy() <= depth)
    titles, categories = texts.texts(recs["item_id"].to_numpy()[deep])
    has_text = pd.notna(titles)  # None or NaN: no catalog row
    rows = deep[has_text]
    scores[rows] = score(rows, titles[has_text], categories[has_text])
    items = recs["item_id"].to_numpy()
    scored_items = np.unique(items[rows])
    return scores, len(scored_items), len(np.setdiff1d(np.unique(items), scored_items))


def teacher_of(settings: Settings, version: str) -> str | None:
    """The cross-encoder version student ``version`` was distilled from (``cross_version`` of its
    ``train_config.json``); None when it records none (no kd task, or a teacher given as a directory)."""
    path = layout.version_file(layout.registry_version_dir(settings, version, "students"), "train_config")
    return (Lake.from_settings(settings).read_json(path, default={}) or {}).get("cross_version") or None


class Reranker:
    """Re-orders each item's top ``depth`` candidates by a cross-encoder; build it with ``for_run``.

    Attributes: ``depth`` (int), ``cross_dir`` (str), ``cross_version`` (str or None: a directory outside the
    registry), counters ``pairs`` (scored), ``seconds`` (spent scoring), ``items`` (re-ranked) and
    ``items_without_text`` (searched items with no catalog row: served in the student's order)."""

    def __init__(self, model, depth: int, catalog, cross_dir: str, cross_version: str | None, batch_size: int):
        self.model, self.depth, self.catalog, self.batch_size = model, depth, catalog, batch_size
        self.cross_dir, self.cross_version = cross_dir, cross_version
        self.pairs, self.seconds, self.items, self.items_without_text = 0, 0.0, 0, 0
        self.planned, self._logged_at, self._started = 0, 0.0, time.perf_counter()

    def plan(self, items: int, candidates: int) -> None:
        """Log the run's cost before it starts: about ``items`` x min(depth, ``candidates``) pairs (``candidates``:
        the keyphrases in the index; fewer above the score threshold)."""
        self.planned, self._started = int(items) * min(self.depth, int(candidates)), time.perf_counter()
        if self.depth > candidates:
            log.info("serve.rerank_depth=%d is more than the index's %d keyphrases: each item's %d are re-ranked",
                     self.depth, candidates, candidates)
        log.info("re-rank: up to %d items x %d candidates = %d cross-encoder pairs", items,
                 min(self.depth, int(candidates)), self.planned)

    @classmethod
    def for_run(cls, settings: Settings, ds: str, student_version: str) -> Reranker | None:
        """The run's re-ranker, or None when ``serve.rerank_depth`` is 0. Resolves the cross-encoder, opens the day's
        catalog (its files' footers checked) and then loads the model on ``serve.device``: ``kp recommend`` calls it
        before it reads the index, so a bad setting or a missing catalog fails before any work.

        Raises ConfigError (exit 2) when the student records no teacher and ``serve.rerank_cross`` is empty, or
        ``rerank_cross`` is neither a directory nor a registry cross version, or the directory holds no model;
        DataError (exit 3) when ``raw/catalog/ds=D`` is missing; SchemaError (exit 3) when it breaks its contract.
        Logs a warning when ``ctr_model.rank_by`` is ``expected_clicks`` and the depth is not above ``serve.top_k``
        (the expected-CTR order then leaves the cross-encoder next to nothing to decide)."""
        s = settings.serve
        if s.rerank_depth <= 0:
            return None
        if settings.ctr_model.rank_by == "expected_clicks" and s.rerank_depth <= s.top_k:
            log.warning("serve.rerank_depth=%d <= serve.top_k=%d with ctr_model.rank_by=expected_clicks: the served "
                        "keyphrases are the student's top %d in expected-CTR order whatever the cross-encoder says; "
                        "a depth above top_k lets it choose which are served", s.rerank_depth, s.top_k, s.top_k)
        ref, what = s.rerank_cross, "serve.rerank_cross"
        if not ref:
            ref, what = teacher_of(settings, student_version), f"the teacher of student {student_version}"
            if not ref:
                raise ConfigError(f"serve.rerank_depth={s.rerank_depth} but student {student_version} records no "
                                  "cross-encoder teacher (cross_version in its train_config.json): set "
                                  "serve.rerank_cross (KP_SERVE__RERANK_CROSS) to a cross version or model directory, "
                                  "or serve.rerank_depth=0")
        cross_dir, cross_version = registry.resolve_cross(settings, ref, what)
        from keyphrase_pipeline.models.bi_encoder import model_kind

        kind = model_kind(cross_dir)
        if kind != "cross":  # a student would load as a CrossEncoder with a fresh, untrained head: random scores
            raise ConfigError(f"{what} {ref!r}: {cross_dir} is not a cross-encoder (found: {kind or 'no model'}); give "
                              "a registry cross version (registry/cross/<version>) or a `kp train-cross` model directory")
        catalog = ItemTexts.open(settings, ds, f"serve.rerank_depth={s.rerank_depth}")
        from keyphrase_pipeline.models.cross_encoder import load_cross

        model = load_cross(cross_dir, s.device, "serve.device")  # last: the checks above cost nothing
        log.info("re-ranking each item's top %d candidates with cross-encoder %s (%s) on %s", s.rerank_depth,
                 cross_version or "(a directory)", cross_dir, getattr(model, "device", s.device))
        return cls(model, s.rerank_depth, catalog, cross_dir, cross_version, s.rerank_batch_size)

    def search_k(self, k: int) -> int:
        """How many distinct candidates per item to search for so that the top ``depth`` and the top ``k`` exist."""
        return max(k, self.depth)

    @property
    def version(self) -> str:
        """What the rows' ``rerank_cross_version`` records: the registry version, else the model directory."""
        return self.cross_version or self.cross_dir

    def score(self, titles, categories, keyphrases) -> np.ndarray:
        """P(relevant) float32 ``(n,)`` of the pairs, ``CHUNK_PAIRS`` at a time; a progress line (pairs scored of
        those planned, the cross-encoder's rate, and the minutes left at the run's wall-clock pace since ``plan``,
        search and catalog reads included) every ``PROGRESS_SECONDS`` and at the end."""
        from keyphrase_pipeline.models.cross_encoder import predict_pairs

        out = np.empty(len(titles), dtype=np.float32)
        for start in range(0, len(titles), CHUNK_PAIRS):
            end = min(start + CHUNK_PAIRS, len(titles))
            t0 = time.perf_counter()
            out[start:end] = predict_pairs(self.model, titles[start:end], categories[start:end], keyphrases[start:end],
                                           batch_size=self.batch_size)
            self.seconds += time.perf_counter() - t0
            self.pairs += end - start
            if self.seconds - self._logged_at >= PROGRESS_SECONDS or end == len(titles):
                self._logged_at = self.seconds
                rate = self.pairs / max(self.seconds, 1e-9)
                pace = (time.perf_counter() - self._started) / self.pairs  # wall seconds per pair so far
                left = max(self.planned - self.pairs, 0) * pace / 60
                log.info("re-rank: %d of ~%d pairs scored (%.0f pairs/s, ~%.0f min left)", self.pairs,
                         max(self.planned, self.pairs), rate, left)
        return out

    def rerank(self, recs, k: int, texts=None):
        """``recs`` (``search_batch``'s frame, ``search_k(k)`` rows per item) with each item's top ``depth`` in the
        cross-encoder's order, cut to ``k`` rows per item, with ``rerank_score`` (``topk.rerank_top``) and
        ``rerank_cross_version`` (``version`` on the rows it scored, None elsewhere). ``texts``: the batch's texts
        already read (``ItemTexts.batch``); None reads them from the catalog."""
        keyphrases = recs["keyphrase"].to_numpy()
        scores, items, without = score_top_with_text(
            recs, self.depth, texts if texts is not None else self.catalog,
            lambda rows, titles, categories: self.score(titles, categories, keyphrases[rows]))
        self.items, self.items_without_text = self.items + items, self.items_without_text + without
        out = rerank_top(recs, scores, self.depth, k)
        return out.assign(rerank_cross_version=np.where(out["rerank_score"].notna(), self.version, None))

    def stats(self) -> dict:
        """The run stats' ``rerank_*`` fields."""
        return {"rerank_depth": self.depth, "rerank_cross_version": self.cross_version,
                "rerank_cross_dir": self.cross_dir, "rerank_items": self.items,
                "rerank_items_without_text": self.items_without_text, "rerank_pairs": self.pairs,
                "rerank_seconds": round(self.seconds, 3),
                "rerank_pairs_per_s": round(self.pairs / self.seconds, 1) if self.seconds else None}
