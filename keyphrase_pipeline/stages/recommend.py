"""Top-K keyphrases per item from the day's index build, above a score threshold, one per buyer query.

Distinct keyphrases: an item's list holds at most one keyphrase per ``keyphrase_identity`` (the tower
text lower-cased, as the evaluation split compares queries): of "Red Shoes" and "red  shoes" the one that
scores best for this item is kept and K is filled from further candidates. FAISS is asked for
``K + SPARE_CANDIDATES`` candidates; an item still short of K distinct keyphrases while its last candidate
was above the threshold is searched again with twice as many, until K are found or the index is exhausted
(``search_batch``). The index itself keeps every keyphrase id (docs/SERVING.md says why).

Vectors that are not vectors: an item embedding with a NaN/inf value or all zeros is refused (DataError
naming how many over the whole input and an example id; nothing is written), never searched: FAISS would
give a NaN item no rows and a zero item K arbitrary keyphrases at score 0.0. Items left without
recommendations (no candidate above ``serve.score_threshold``, plus the items ``kp embed`` quarantined
today for their vectors) are counted; above ``serve.max_items_without_recommendations_share`` of the items
the run is refused (GateError, exit 4; nothing written, the previous output stays).

Parallelism and memory: a bounded-memory stream. The driver loads the index once, lists the item
embedding files with ``pyarrow.dataset`` (the ``embeddings`` contract is checked on the schema, no data
read), reads them one row group at a time (``ParquetFile.iter_batches``), keeps the rows of the build's
``model_version``, cuts and joins them into batches of ``serve.recommend_batch_rows`` items (default 20,000;
``KP_SERVE__RECOMMEND_BATCH_ROWS``) and searches each batch with ``search_batch``; FAISS spreads each batch's
search over all cores with OpenMP, which on one machine is as fast as Spark tasks would be without loading
the index once per worker. Each batch's rows are appended to a parquet file inside the atomic temp
directory (``keyphrase_pipeline.core.lake.atomic_dir``) before the next batch is read, so peak memory is the
index and its id map, about two batches of items and their output rows, and one row group of the input
(Spark writes up to 128 MB), whatever the number of items (``bench/recommend_memory.py``,
docs/PERFORMANCE.md). A failure at any point removes the temp directory: the previous
``recommendations/ds=D`` stays, or there is none. (For catalogs too large for one machine, the same
``search_batch`` function can run inside ``mapInPandas`` over item partitions; the ``spark`` argument is
accepted for that and unused here.)

``changed_only=True`` searches only the items embedded today (``embedded_ds == ds``) and carries the
other items' rows over from the latest earlier recommendations, so the output stays a complete
snapshot; the earlier recommendations are streamed too, in batches. Which items to carry is worked out one hash
bucket of items at a time (``item_lookup.bucket_of``; ``ceil(item rows / serve.recommend_carry_bucket_items)``
buckets, one pass over the embeddings' ``id``/``embedded_ds`` columns and the earlier recommendations each): a
bucket's sorted int64 ids to carry (8 bytes per item, about three times that while ``numpy.setdiff1d`` builds them)
and a one-byte "seen" mask, so that part of the peak is at most ~40 bytes x ``serve.recommend_carry_bucket_items``
(25 bytes an item measured with no item embedded today, ~36 with some; 160 MB at the default 4,000,000), whatever
the catalog; a catalog above it costs one more pass per bucket.

Hybrid score (a student that kept one, ``train.hybrid_score``; ``serve.hybrid_depth`` > 0, default 50): each batch is
searched for max(K, depth) candidates and each item's top ``depth`` re-scored and re-ordered by the student's
hybrid score, the cosine plus a lexical bonus from the items' catalog texts (``keyphrase_pipeline.artifacts.hybrid_rescore``),
before the re-rank below and the cut to K; ``score`` is then that score.

Re-rank (``serve.rerank_depth`` > 0, off by default): each batch is searched for max(K, depth) candidates, their
items' titles read from the day's catalog, and the top ``depth`` put in a cross-encoder's order before K are kept
(``keyphrase_pipeline.artifacts.rerank``); memory adds the model and one batch's depth rows per item.

Output: ``recommendations/ds=D/part-NNNNN.parquet`` + ``_SUCCESS`` (contract ``recommendations``), a new
file after ``spark.target_file_rows`` rows (at an item boundary). There is no global sort: each item's
rows are contiguous and in rank order (1 = best), items follow the order they were read in (fresh items
first, then carried ones); the readers (``kp publish``, serving, pair selection, the UI) group by item.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import item_lookup
from keyphrase_pipeline.artifacts.ctr_scoring import champion_scorer
from keyphrase_pipeline.artifacts.hybrid_rescore import HybridRescorer
from keyphrase_pipeline.artifacts.rerank import Reranker
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import check_arrow_schema
from keyphrase_pipeline.core.errors import DataError, GateError
from keyphrase_pipeline.core.lake import (
    SUCCESS,
    Lake,
    atomic_dir,
    contract_dataset,
    ds_str,
    local_path,
    row_group_batches,
)
from keyphrase_pipeline.core.layout import embeddings_dir, index_build_dir
from keyphrase_pipeline.models.ann import (
    NON_FINITE_VECTOR,
    ZERO_VECTOR,
    bad_vectors_error,
    set_search_params,
    vector_problems,
)
from keyphrase_pipeline.models.devices import check_wheel_set, faiss_on_device, require_faiss_device
from keyphrase_pipeline.models.topk import OUT_COLUMNS, SPARE_CANDIDATES, KeyphraseTable, search_batch

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def _out_schema():
    import pyarrow as pa

    return pa.schema([("item_id", pa.int64()), ("rank", pa.int32()), ("keyphrase_id", pa.int64()),
                      ("keyphrase", pa.string()), ("score", pa.float32()), ("expected_ctr", pa.float32()),
                      ("ctr_model_version", pa.string()), ("rerank_score", pa.float32()),
                      ("rerank_cross_version", pa.string())])


def with_expected_ctr(recs, scorer, ids, vecs, rank_by: str):
    """``recs`` (``search_batch``'s frame for items ``ids`` with embeddings ``vecs``) with ``expected_ctr`` (float32
    P(click) at the CTR model's reference position; NaN without a model) and ``ctr_model_version`` (None without);
    ``rank_by="expected_clicks"`` re-ranks each item's rows by expected CTR (highest first; rows without one last,
    by relevance), the rows themselves (those above ``serve.score_threshold``) unchanged."""
    import numpy as np
    import pandas as pd

    if scorer is None or recs.empty:
        return recs.assign(expected_ctr=np.float32(np.nan), ctr_model_version=None)
    item_ids = recs["item_id"].to_numpy()
    p = scorer.predict(item_ids, recs["keyphrase_id"].to_numpy(), vecs[_positions(ids, item_ids)])
    recs = recs.assign(expected_ctr=p.astype(np.float32), ctr_model_version=scorer.version)
    if rank_by == "expected_clicks":
        key = np.where(np.isnan(p), -1.0, p)
        item_order = pd.factorize(item_ids)[0]  # the frame is item-major: items keep their input order
        recs = recs.iloc[np.lexsort((recs["rank"].to_numpy(), -key, item_order))].reset_index(drop=True)
        recs["rank"] = (recs.groupby("item_id", sort=False).cumcount() + 1).astype(np.int32)
    return recs


_CARRIED = (("expected_ctr", "ctr_model_version"), ("rerank_score", "rerank_cross_version"))  # (value, its model)


def _carried_values(table, schema, scorer, reranker_version: str | None = None):
    """Carried rows (``changed_only``) with their expected CTR kept only when the CTR model that gave it is the one
    scoring today (``scorer``; None: none), and their ``rerank_score`` only when the cross-encoder that gave it is
    today's re-ranker (``reranker_version``, ``Reranker.version``; None: the re-rank is off): another model's (or no
    model's) value would be stale beside today's, so it and its model's name become null (the carried order stays).
    Returns (the table in ``schema``, rows whose expected CTR was dropped, rows whose rerank_score was dropped)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in (c for pair in _CARRIED for c in pair):  # files written before the CTR model or the re-rank lack them
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    table = table.select(schema.names).cast(schema)
    dropped = []
    for (value, model), today in zip(_CARRIED, (scorer.version if scorer else None, reranker_version)):
        keep = pc.fill_null(pc.equal(table.column(model), today), False) if today else \
            pa.array([False] * table.num_rows)
        n = int(pc.sum(pc.and_(pc.invert(keep), pc.is_valid(table.column(value)))).as_py() or 0)
        if n:
            for name in (value, model):
                i = schema.get_field_index(name)
                table = table.set_column(i, name, pc.if_else(keep, table.column(name), pa.scalar(None, schema.field(i).type)))
        dropped.append(n)
    return table, dropped[0], dropped[1]


def _positions(ids, wanted):
    """Row of each of ``wanted`` in the id array ``ids`` (sorted or not; every one of ``wanted`` is in it)."""
    import numpy as np

    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], wanted)]


def load_build(settings: Settings, ds: str):
    """(index, id -> keyphrase text frame, meta) of the day's staged build.

    The frame has ``keyphrase_id`` (int64) and ``keyphrase`` (str); ``meta`` is ``index_meta.json``. Raises
    DataError (exit 3) when there is no build for ``ds`` or its dimension is not ``serve.dim``; ConfigError
    (exit 2) on a non-local lake."""
    import faiss
    import pandas as pd

    root = Path(local_path(index_build_dir(settings, ds)))
    if not (root / layout.INDEX_META).exists():
        raise DataError(f"no index build for {ds} at {root}: run `kp index --ds {ds}`")
    meta = json.loads((root / layout.INDEX_META).read_text())
    index = faiss.read_index(str(root / layout.INDEX_FILE))
    if index.d != settings.serve.dim:
        raise DataError(f"dimension mismatch: index of {ds} is {index.d}-d, serve.dim={settings.serve.dim}")
    set_search_params(index, meta.get("search_params", {}))
    keyphrases = pd.read_parquet(root / layout.INDEX_IDMAP)
    return index, keyphrases, meta



def _of(version: str, embedded_ds: str | None = None):
    """The ``keep`` mask of ``row_group_batches`` for rows of model ``version`` (and, given, embedded on ``embedded_ds``)."""
    import pyarrow.compute as pc

    def keep(batch):
        mask = pc.equal(batch.column("model_version"), version)
        return mask if embedded_ds is None else pc.and_kleene(mask, pc.equal(batch.column("embedded_ds"), embedded_ds))

    return keep


def _ids(column, where: str, name: str):
    """An int64 numpy array of an Arrow id column; DataError naming ``where`` and the column when one is null."""
    import numpy as np

    if column.null_count:
        raise DataError(f"{where}: column {name} has {column.null_count} null value(s); every row needs an id")
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _vectors(batch, where: str, dim: int):
    """(ids int64 ``(m,)``, vectors float32 ``(m, dim)``) of an Arrow batch with ``id`` and ``embedding``.

    DataError naming the file, the column and an item id when an embedding is null or not ``dim`` long."""
    import numpy as np
    import pyarrow.compute as pc

    ids = _ids(batch.column("id"), where, "id")
    emb = batch.column("embedding")
    lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != dim)  # a null embedding has a null (NaN) length
    if len(bad):
        first = int(bad[0])
        size = "null" if emb[first].as_py() is None else f"{int(lengths[first])}-d"
        raise DataError(f"dimension mismatch: item embeddings are {size}, index is {dim}-d ({where}, column "
                        f"embedding, item id {int(ids[first])}; {len(bad)} such row(s) in this batch)")
    vecs = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), dim)
    return ids, vecs.astype(np.float32, copy=False)


def _embedding_batches(dataset, keep, batch_rows: int, dim: int):
    """Yield (ids, vectors) of the rows of ``dataset`` that ``keep`` keeps, ``batch_rows`` rows at a time (the
    last batch shorter), whatever the sizes of the files and row groups: the reader's batches are cut and
    joined, so at most about two batches are held at once."""
    import numpy as np

    pend_ids, pend_vecs, pending = [], [], 0
    columns = ["id", "embedding", "model_version"] + (["embedded_ds"] if "embedded_ds" in dataset.schema.names else [])
    for path, batch in row_group_batches(dataset, columns, batch_rows, keep):
        ids, vecs = _vectors(batch, path, dim)
        pend_ids.append(ids)
        pend_vecs.append(vecs)
        pending += len(ids)
        if pending < batch_rows:
            continue
        all_ids = np.concatenate(pend_ids) if len(pend_ids) > 1 else pend_ids[0]
        all_vecs = np.concatenate(pend_vecs) if len(pend_vecs) > 1 else pend_vecs[0]
        full = pending - pending % batch_rows
        for start in range(0, full, batch_rows):
            yield all_ids[start:start + batch_rows], all_vecs[start:start + batch_rows]
        pend_ids, pend_vecs, pending = [all_ids[full:].copy()], [all_vecs[full:].copy()], pending - full
    if pending:
        yield np.concatenate(pend_ids), np.concatenate(pend_vecs)


def _split_today(dataset, version: str, ds: str, batch_rows: int, bucket: int = 0, buckets: int = 1):
    """(ids to carry over: sorted unique int64, number of rows embedded today) for ``changed_only``, among the items of
    hash bucket ``bucket`` of ``buckets`` (``item_lookup.bucket_of``): the items of the model not embedded on ``ds``,
    less any id that also has a row embedded on ``ds``. Reads only the ``id`` and ``embedded_ds`` columns, in
    batches; the result is 8 bytes per item of the bucket (about three times that while ``numpy.setdiff1d`` runs)."""
    import numpy as np
    import pyarrow.compute as pc

    other, today = [], []
    for path, batch in row_group_batches(dataset, ["id", "embedded_ds", "model_version"], max(batch_rows, 100_000), _of(version)):
        ids = _ids(batch.column("id"), path, "id")
        is_today = pc.equal(batch.column("embedded_ds"), ds).fill_null(False).to_numpy(zero_copy_only=False)
        if buckets > 1:
            mine = item_lookup.bucket_of(ids, buckets) == bucket
            ids, is_today = ids[mine], is_today[mine]
        other.append(ids[~is_today])
        today.append(ids[is_today])
    today_ids = np.concatenate(today) if today else np.zeros(0, np.int64)
    other_ids = np.concatenate(other) if other else np.zeros(0, np.int64)
    del other, today
    return np.setdiff1d(other_ids, today_ids), len(today_ids)


def _carry(prev, keep, schema, scorer, parts, batch_rows: int, k: int, reranker_version: str | None = None) -> dict:
    """Stream the previous recommendations ``prev`` and append the rows of the items in ``keep`` (sorted int64) to
    ``parts``; return ``{"items" (of keep with rows), "rows", "score_sum", "stale_ctr", "stale_rerank"}``
    (``_carried_values``). Memory: one row group of
    ``prev``, ``keep`` and a one-byte "seen" mask per id of it."""
    import numpy as np
    import pyarrow as pa

    out = {"items": 0, "rows": 0, "score_sum": 0.0, "stale_ctr": 0, "stale_rerank": 0}
    if not len(keep):
        return out
    seen = np.zeros(len(keep), dtype=bool)
    carry = OUT_COLUMNS + [c for pair in _CARRIED for c in pair if c in prev.schema.names]
    for _, batch in row_group_batches(prev, carry, batch_rows * max(k, 1)):
        item_ids = _ids(batch.column("item_id"), "previous recommendations", "item_id")
        pos = np.minimum(np.searchsorted(keep, item_ids), len(keep) - 1)
        hit = keep[pos] == item_ids
        if not hit.any():
            continue
        seen[pos[hit]] = True
        table = pa.Table.from_batches([batch.select(carry)]).filter(pa.array(hit))
        table, stale, stale_rerank = _carried_values(table, schema, scorer, reranker_version)
        out["stale_ctr"] += stale
        out["stale_rerank"] += stale_rerank
        parts.write(table)
        out["rows"] += table.num_rows
        out["score_sum"] += float(table.column("score").to_numpy().astype(np.float64).sum())
    out["items"] = int(seen.sum())
    return out


class _Parts:
    """Append Arrow tables to ``part-NNNNN.parquet`` files in ``directory`` (one row group per table); a new file
    is started once ``max_rows`` rows are in the current one, only where the item changes, so an item's rows
    stay in one file."""

    def __init__(self, directory: Path, max_rows: int):
        self.directory, self.max_rows, self.schema = directory, max_rows, _out_schema()
        self.files, self._writer, self._rows, self._last = 0, None, 0, None

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return
        first = table.column("item_id")[0].as_py()
        if self._writer is not None and self._rows >= self.max_rows and first != self._last:
            self._writer.close()
            self._writer = None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.directory / layout.part_file_name(self.files), self.schema)
            self.files, self._rows = self.files + 1, 0
        self._writer.write_table(table)
        self._rows += table.num_rows
        self._last = table.column("item_id")[-1].as_py()

    def finish(self) -> None:
        """Close the last file; with no rows at all, write one empty file so the schema is still there."""
        import pyarrow.parquet as pq

        self.close()
        if self.files == 0:
            pq.write_table(self.schema.empty_table(), self.directory / layout.part_file_name(0))
            self.files = 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def run(settings: Settings, ds: str, changed_only: bool = False, spark=None) -> dict:
    """Write ``recommendations/ds=D/``, streaming the item embeddings in batches of ``serve.recommend_batch_rows``;
    return the stats (also written to ``runs/ds=D/recommend.json``).

    Stats: ``items_scored`` (items searched today), ``items_carried`` (items whose rows were carried over from
    the earlier recommendations), ``rows`` (written), ``items_with_recs`` (items with at least one row),
    ``mean_recs_per_item`` (rows / items_with_recs), ``mean_score`` (mean ``score`` of the rows written), ``top_k``,
    ``score_threshold``, ``changed_only``, ``batches`` (``search_batch`` calls) and ``batch_rows`` (the setting);
    ``items_without_recs`` (items searched or carried that got no row), ``items_quarantined_vectors`` (items
    ``kp embed`` quarantined today as ``non-finite vector`` / ``zero vector``, from ``runs/ds=D/embed_items.json``
    of the same model; 0 when absent), ``items_without_recs_share`` (both over all those items) and
    ``max_items_without_recs_share`` (the gate), ``status`` (``written`` or ``refused``); ``rerank_depth`` and, with
    the cross-encoder re-rank on (``serve.rerank_depth`` > 0, ``keyphrase_pipeline.artifacts.rerank``),
    ``Reranker.stats``' ``rerank_*`` fields; ``hybrid_depth`` (0 when the student's cosine order is served) and,
    with the hybrid score applied, ``HybridRescorer.stats``' ``hybrid_*`` fields; ``rerank_dropped_carried``
    (carried rows whose ``rerank_score`` was another cross-encoder's, nulled). Item ids are assumed unique in the
    embeddings (``kp embed`` writes one row per id).

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; the lake not local; ``serve.device`` not usable, or a search deeper
            than FAISS gives on the GPU; with ``serve.rerank_depth`` > 0, no teacher recorded for the student and no
            ``serve.rerank_cross``, or a ``serve.rerank_cross`` that is no cross-encoder (raised before the index
            is read).
        DataError: (exit 3) no index build for ``ds``; a student with a hybrid score and ``serve.hybrid_depth`` > 0
            but no catalog for ``ds`` (raised before the index is read); item embeddings of the build's model missing or empty; a
            dimension mismatch between index, ``serve.dim`` and item embeddings, or a null embedding or id
            (the message names the file, the column and the item id); item embeddings that are not vectors
            (NaN/inf values or all zeros: how many over the whole input, per reason, and an example item id); with
            the re-rank on, no catalog for ``ds`` (raised before the index is read).
        SchemaError: (exit 3) the embeddings or the previous recommendations (``changed_only``) break their
            contract; with the re-rank on, the day's catalog breaks its contract (its absence: DataError).
        GateError: (exit 4) ``items_without_recs_share`` above ``serve.max_items_without_recommendations_share``
            (the run stats, with ``status`` refused, are written).
    Nothing is written when any of these is raised mid-stream: the previous ``recommendations/ds=D`` stays.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as pads

    ds = ds_str(ds)
    check_wheel_set()  # one build of ONNX Runtime and FAISS: never a mix of CPU and GPU wheels
    # a cuda that is not there, or a top_k FAISS cannot give on the GPU, fails here, before any work
    s = settings.serve
    deepest = max(s.top_k, s.rerank_depth, s.hybrid_depth)
    k_from = ("serve.top_k" if deepest == s.top_k else "serve.rerank_depth" if deepest == s.rerank_depth
              else "serve.hybrid_depth")  # what may set the search's depth (checked before the student is known)
    search_fetch = deepest + SPARE_CANDIDATES  # search_batch's first search per item, at most
    require_faiss_device(s.device, k=search_fetch, k_from=k_from)
    batch_rows = s.recommend_batch_rows
    lake = Lake.from_settings(settings)
    # serve.rerank_depth > 0: its teacher, catalog and model checked and loaded before the index is read
    built = _build_version(settings, ds)  # None: load_build below says there is no build
    reranker = Reranker.for_run(settings, ds, built) if s.rerank_depth and built else None
    hybrid = HybridRescorer.for_run(settings, ds, built) if built else None  # the student's hybrid score, if any
    index, keyphrases, meta = load_build(settings, ds)
    texts = KeyphraseTable(keyphrases)
    version = meta["model_version"]
    emb_path = embeddings_dir(settings, "items", version)
    if not lake.exists(emb_path):
        raise DataError(f"missing item embeddings of model {version} at {emb_path}: run `kp embed --what items`")
    items = contract_dataset(emb_path, "embeddings")

    prev_days = [d for d in lake.partitions("recommendations") if d < ds]
    carrying = changed_only and bool(prev_days) and "embedded_ds" in items.schema.names
    if carrying:  # today's items are searched; the rest carried bucket by bucket (s.recommend_carry_bucket_items)
        search_filter = _of(version, ds)
        n_todo = items.count_rows(filter=(pads.field("model_version") == version) & (pads.field("embedded_ds") == ds))
        carry_buckets = item_lookup.buckets_for(sum(f.count_rows() for f in items.get_fragments()),
                                                s.recommend_carry_bucket_items)  # rows from the footers
    else:
        search_filter, carry_buckets = _of(version), 0
        n_todo = items.count_rows(filter=pads.field("model_version") == version)  # the column alone
    if n_todo == 0 and not carrying:
        raise DataError(f"no item embeddings of model {version} in {emb_path}")
    prev = contract_dataset(lake.path("recommendations", ds=prev_days[-1]), "recommendations") if carrying else None

    schema = _out_schema()
    check_arrow_schema(schema, "recommendations", where="recommendations (to write)")
    k = min(s.top_k, index.ntotal)
    k_search = min(max(reranker.search_k(k) if reranker else k, hybrid.search_k(k) if hybrid else k), index.ntotal)
    if reranker:
        reranker.plan(n_todo, index.ntotal)
    scorer, ctr_why = None, "ctr_model.enabled is false"
    if settings.ctr_model.enabled:  # expected CTR beside relevance: the CTR champion trained on this student
        scorer, ctr_why = champion_scorer(settings, version, stream_items=True)
        log.info("expected CTR: %s", ctr_why if scorer is None else f"CTR model {scorer.version}")
    search_index = faiss_on_device(index, s.device, k=search_fetch, k_from=k_from)
    faiss_gpu = search_index is not index  # where the search runs (auto keeps HNSW, or a large top_k, on the CPU)
    rows = scored = batches = with_recs = predicted = stale_ctr = stale_rerank = to_carry = carried = 0
    score_sum = 0.0
    bad_by_reason, bad_example = {}, None  # item vectors that are not vectors: counted over the whole input, refused
    target = lake.path("recommendations", ds=ds)
    with atomic_dir(target) as tmp:
        out_dir = Path(local_path(tmp))
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = _Parts(out_dir, settings.spark.target_file_rows)
        try:
            for ids, vecs in _embedding_batches(items, search_filter, batch_rows, index.d):
                reasons = vector_problems(vecs)
                bad = np.flatnonzero(reasons != None)  # noqa: E711 (element-wise)
                if len(bad) or bad_by_reason:  # once one is found, only count: nothing will be written
                    for reason in reasons[bad]:
                        bad_by_reason[reason] = bad_by_reason.get(reason, 0) + 1
                    if bad_example is None and len(bad):
                        bad_example = (int(ids[bad[0]]), reasons[bad[0]])
                    continue
                recs = search_batch(search_index, texts, ids, vecs, k_search, s.score_threshold)
                # both steps on: the batch's item texts read from the catalog once, for both
                batch_texts = (hybrid.item_texts.batch(recs["item_id"].to_numpy()) if hybrid and reranker
                               else None)
                recs = hybrid.rescore(recs, batch_texts) if hybrid else recs
                recs = reranker.rerank(recs, k, batch_texts) if reranker else recs[recs["rank"] <= k].assign(
                    rerank_score=np.float32(np.nan), rerank_cross_version=None)
                recs = with_expected_ctr(recs, scorer, ids, vecs, settings.ctr_model.rank_by)
                predicted += int(np.isfinite(recs["expected_ctr"].to_numpy()).sum())
                parts.write(pa.Table.from_pandas(recs, schema=schema, preserve_index=False))
                batches, scored, rows = batches + 1, scored + len(ids), rows + len(recs)
                with_recs += int(recs["item_id"].nunique())
                score_sum += float(recs["score"].to_numpy(np.float64).sum())
                log.log(logging.INFO if batches % 50 == 0 or scored == n_todo else logging.DEBUG,
                        "searched %d / %d items (%d batches)", scored, n_todo, batches)
                del recs, ids, vecs  # freed before the next batch is read and searched
            if bad_by_reason:
                raise bad_vectors_error(bad_by_reason, *bad_example, "items", emb_path)
            for bucket in range(carry_buckets):
                keep, _ = _split_today(items, version, ds, batch_rows, bucket, carry_buckets)
                done = _carry(prev, keep, schema, scorer, parts, batch_rows, k, reranker.version if reranker else None)
                stale_rerank += done["stale_rerank"]
                to_carry += len(keep)
                carried, rows = carried + done["items"], rows + done["rows"]
                score_sum, stale_ctr = score_sum + done["score_sum"], stale_ctr + done["stale_ctr"]
                if carry_buckets > 1:
                    log.info("carried bucket %d / %d: %d items", bucket + 1, carry_buckets, done["items"])
                del keep
            if scored + to_carry == 0:
                raise DataError(f"no item embeddings of model {version} in {emb_path}")
            parts.finish()
        finally:
            parts.close()
        with_recs += carried
        if reranker and reranker.items_without_text:
            log.warning("re-rank: %d of %d items searched have no row in the day's catalog: served in the student's "
                        "order (rerank_items_without_text)", reranker.items_without_text, scored)
        without = int(scored + to_carry - with_recs)
        quarantined = _vectors_quarantined(lake, ds, version)
        share = (without + quarantined) / (scored + to_carry + quarantined) if scored + to_carry + quarantined else 0.0
        stats = {"model_version": version, "items_scored": int(scored), "items_carried": carried,
                 "rows": int(rows), "items_with_recs": int(with_recs), "faiss_gpu": faiss_gpu,
                 "ctr_model_version": scorer.version if scorer else None, "expected_ctr_rows": int(predicted),
                 "expected_ctr_why": ctr_why, "rank_by": settings.ctr_model.rank_by,
                 "expected_ctr_dropped_carried": int(stale_ctr),
                 "mean_recs_per_item": rows / with_recs if with_recs else 0.0,
                 "mean_score": score_sum / rows if rows else 0.0, "top_k": int(k),
                 "score_threshold": s.score_threshold, "changed_only": bool(changed_only),
                 "batches": int(batches), "batch_rows": int(batch_rows), "files": int(parts.files),
                 "carry_buckets": int(carry_buckets),
                 **(reranker.stats() if reranker else {"rerank_depth": 0}),
                 **(hybrid.stats() if hybrid else {"hybrid_depth": 0}), "rerank_dropped_carried": int(stale_rerank),
                 "items_without_recs": without, "items_quarantined_vectors": quarantined,
                 "items_without_recs_share": round(share, 6),
                 "max_items_without_recs_share": s.max_items_without_recommendations_share}
        if share > s.max_items_without_recommendations_share:  # raised inside atomic_dir: nothing is written
            lake.write_run_stats(ds, "recommend", {**stats, "status": "refused"})
            raise GateError(f"{without + quarantined} of {scored + to_carry + quarantined} items ({share:.2%}) have no "
                            f"recommendations ({without} with no keyphrase scoring >= serve.score_threshold="
                            f"{s.score_threshold}, {quarantined} quarantined by `kp embed` for their vectors), above "
                            f"serve.max_items_without_recommendations_share={s.max_items_without_recommendations_share}: "
                            f"the day's recommendations are not written")
        if hybrid:  # what publish records and the live search re-scores with, written with the lists themselves
            (out_dir / layout.HYBRID_RECORD).write_text(json.dumps(hybrid.record()))
        (out_dir / SUCCESS).write_bytes(b"")
    stats["status"] = "written"
    lake.write_run_stats(ds, "recommend", stats)
    return stats


def _build_version(settings: Settings, ds: str) -> str | None:
    """The student version of the day's index build (``index_meta.json``'s ``model_version``, read without the
    index); None when there is no build (``load_build`` then says so)."""
    path = Path(local_path(index_build_dir(settings, ds))) / layout.INDEX_META
    return json.loads(path.read_text()).get("model_version") if path.exists() else None


def _vectors_quarantined(lake: Lake, ds: str, version: str) -> int:
    """Items ``kp embed`` quarantined on ``ds`` as not vectors (``non-finite vector``, ``zero vector``), from its run
    stats when they are of model ``version``; 0 when there are none."""

    stats = lake.read_json(lake.run_stats_path(ds, "embed_items"), default={})
    if stats.get("model_version") != version:
        return 0
    by_reason = stats.get("quarantined_by_reason") or {}
    return int(sum(by_reason.get(r, 0) for r in (NON_FINITE_VECTOR, ZERO_VECTOR)))


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")
    parser.add_argument("--changed-only", action="store_true",
                        help="search only items embedded today; carry the rest over from the last recommendations")


def main(settings: Settings, args) -> int:
    """``kp recommend``: ``run`` for ``--ds`` (``--changed-only``: only items embedded today); prints the stats as
    one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds, changed_only=args.changed_only)))
    return 0
