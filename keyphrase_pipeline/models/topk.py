"""Top-K distinct keyphrases per item from a keyphrase index: the search ``recommend`` runs over every item and the
serving reader over one, so both return the same rows.

Pure numpy/pandas over an index object with ``search(vectors, k) -> (scores, ids)`` and ``ntotal`` (a FAISS index);
nothing here reads the lake.
"""

from __future__ import annotations

from keyphrase_pipeline.models.text import keyphrase_identity

# the recommendations contract as written (keyphrase_pipeline.core.contracts, docs/DATA.md)
OUT_COLUMNS = ["item_id", "rank", "keyphrase_id", "keyphrase", "score"]


# candidates searched beyond K so that repeated keyphrases (one buyer query) can be skipped without a second search
SPARE_CANDIDATES = 10


def keyphrase_text(keyphrases):
    """``keyphrase_id`` -> text as a pandas Series indexed by id (the last row wins for a repeated id), built
    once per run so that each ``search_batch`` call looks texts up without rebuilding a mapping.

    ``keyphrases``: the frame ``load_build`` returns (``keyphrase_id`` int64, ``keyphrase`` str)."""
    kp = keyphrases.drop_duplicates("keyphrase_id", keep="last")
    return kp.set_index("keyphrase_id")["keyphrase"]


class KeyphraseTable:
    """The build's keyphrases as ``search_batch`` looks them up, built once per run: ``ids`` (sorted unique
    int64 ``(m,)``), ``texts`` (object ``(m,)``) and ``codes`` (int64 ``(m,)``, >= 0: equal codes = the same
    ``keyphrase_pipeline.models.text.keyphrase_identity``; a blank text gets a code of its own)."""

    def __init__(self, keyphrases):
        """``keyphrases``: the frame of ``load_build`` or the Series of ``keyphrase_text`` (the last row wins
        for a repeated id)."""
        import numpy as np
        import pandas as pd

        texts = keyphrase_text(keyphrases) if isinstance(keyphrases, pd.DataFrame) else keyphrases
        texts = texts[~texts.index.duplicated(keep="last")].sort_index()
        self.ids = texts.index.to_numpy(dtype=np.int64)
        self.texts = texts.fillna("").astype(str).to_numpy(dtype=object)
        keys = [keyphrase_identity(t) for t in self.texts]
        codes, _ = pd.factorize(pd.Series(keys, dtype=object))
        blank = np.array([not k for k in keys], dtype=bool)
        codes = codes.astype(np.int64)
        codes[blank] = codes.max(initial=-1) + 1 + np.arange(int(blank.sum()))  # blank: never one query
        self.codes = codes

    def _find(self, ids):
        import numpy as np

        if not len(self.ids):
            return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return pos, (self.ids[pos] == ids) & (ids >= 0)

    def codes_of(self, ids):
        """int64 codes of an int64 id array ``(n, f)`` (FAISS's result); an id not in the table (-1: no result)
        gets a negative code unique within its row, so it is never taken for a repeat."""
        import numpy as np

        pos, hit = self._find(ids)
        own = -1 - np.arange(ids.shape[1], dtype=np.int64)[None, :]
        return np.where(hit, self.codes[pos] if len(self.codes) else 0, own)

    def texts_of(self, ids):
        """The texts (object array) of an int64 id array ``(n,)``: "" for an id not in the table."""
        import numpy as np

        pos, hit = self._find(ids)
        out = np.full(len(ids), "", dtype=object)
        out[hit] = self.texts[pos[hit]]
        return out


def _distinct_ranks(scores, ids, codes, k: int, threshold: float):
    """(keep bool ``(n, f)``, rank int64 ``(n, f)``, short bool ``(n,)``) of one FAISS result (rows sorted best
    first): keep the first candidate of each code per row above ``threshold`` (a prefix of the row), at most
    ``k``; ``rank`` counts the kept ones up to each position; ``short``: fewer than ``k`` kept while the row's
    last candidate was above the threshold (a wider search may find more)."""
    import numpy as np

    valid = (ids >= 0) & (scores >= threshold)
    order = np.argsort(codes, axis=1, kind="stable")  # equal codes stay in rank order: the best comes first
    in_order = np.take_along_axis(codes, order, axis=1)
    repeat_sorted = np.zeros(codes.shape, dtype=bool)
    repeat_sorted[:, 1:] = in_order[:, 1:] == in_order[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    keep = valid & ~repeat
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= k
    short = (rank[:, -1] < k) & valid[:, -1] if codes.shape[1] else np.zeros(len(codes), dtype=bool)
    return keep, rank, short


def search_batch(index, keyphrases, item_ids, vectors, k: int, threshold: float):
    """Recommendations frame for a batch of items: up to ``k`` distinct keyphrases each (ranks 1..k), rows below
    ``threshold`` dropped.

    Distinct: one keyphrase per ``keyphrase_identity`` per item, the best-scoring one; the index is searched
    for ``k + SPARE_CANDIDATES`` candidates, and the items still short of ``k`` while their last candidate
    was above ``threshold`` again with twice as many, until ``k`` are found or all ``index.ntotal`` are seen.

    ``keyphrases``: a ``KeyphraseTable`` (build it once per run), the id -> text frame of ``load_build`` or the
    Series of ``keyphrase_text``; ``item_ids``: int ``(n,)``; ``vectors``: float32 ``(n, index.d)``,
    L2-normalised; ``threshold``: a cosine in [-1, 1]. Returns a pandas DataFrame with the ``recommendations``
    columns: ``item_id`` int64, ``rank`` int32 (1 = best), ``keyphrase_id`` int64, ``keyphrase`` str ("" when
    not in ``keyphrases``), ``score`` float32; item-major in input order, each item's rows in rank order."""
    import numpy as np
    import pandas as pd

    table = keyphrases if isinstance(keyphrases, KeyphraseTable) else KeyphraseTable(keyphrases)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    total = int(index.ntotal)
    fetch = min(total, k + SPARE_CANDIDATES)
    rows = np.arange(len(item_ids))
    parts = []  # (row, rank, keyphrase_id, score) of the rows done in each pass
    while len(rows) and fetch > 0:
        scores, ids = index.search(vectors[rows], fetch)
        keep, rank, short = _distinct_ranks(scores, ids, table.codes_of(ids), k, threshold)
        again = short & (fetch < total)
        r, c = np.nonzero(keep & ~again[:, None])
        parts.append((rows[r], rank[r, c], ids[r, c], scores[r, c]))
        rows, fetch = rows[again], min(total, fetch * 2)
    row, rank, kid, score = (np.concatenate(p) for p in zip(*parts)) if parts else [np.zeros(0, np.int64)] * 4
    if len(parts) > 1:  # items searched again come last: back to input order
        order = np.lexsort((rank, row))
        row, rank, kid, score = row[order], rank[order], kid[order], score[order]
    kid = kid.astype(np.int64)
    return pd.DataFrame({"item_id": item_ids[row], "rank": rank.astype(np.int32), "keyphrase_id": kid,
                         "keyphrase": pd.Series(table.texts_of(kid), dtype=object),
                         "score": score.astype(np.float32)})[OUT_COLUMNS]


def rerank_top(recs, scores, depth: int, k: int):
    """Each item's first ``depth`` rows of ``recs`` re-ordered by ``scores``, then the first ``k`` rows kept.

    ``recs``: a ``search_batch`` frame (item-major, each item's rows in rank order), typically searched for
    ``max(k, depth)`` rows per item; ``scores``: float ``(len(recs),)``, the re-ranker's score of each row (a
    cross-encoder's P(relevant)), read only on rows of rank <= ``depth`` and NaN where there is none (an item
    with no text to score). Within an item, the scored rows of its top ``depth`` come first, by score (highest
    first; ties by the student's rank), then the rest in the student's order: an item without scores keeps its
    order. Returns the frame cut to ``k`` rows per item, ranks renumbered from 1, with ``rerank_score`` (float32,
    NaN on rows not re-ranked); ``score`` stays the student's. ``depth`` 0 re-orders nothing. Raises
    ValueError when ``scores`` does not hold one value per row. (The re-rank
    of retrieved candidates by a cross-encoder is the usual retrieve-and-re-rank design; sentence-transformers'
    "Retrieve & Re-Rank" documentation describes it.)"""
    import numpy as np
    import pandas as pd

    rank = recs["rank"].to_numpy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(recs):
        raise ValueError(f"{len(s)} scores for {len(recs)} rows")
    scored = (rank <= depth) & np.isfinite(s)
    item_order = pd.factorize(recs["item_id"].to_numpy())[0]  # the frame is item-major: items keep their input order
    order = np.lexsort((rank, -np.where(scored, s, 0.0), ~scored, item_order))
    out = recs.iloc[order].reset_index(drop=True)
    out["rerank_score"] = np.where(scored, s, np.nan)[order].astype(np.float32)
    out["rank"] = (out.groupby("item_id", sort=False).cumcount() + 1).astype(np.int32)
    return out[out["rank"] <= k].reset_index(drop=True)


def rescore_top(recs, scores, depth: int):
    """Each item's first ``depth`` rows of ``recs`` re-ordered by ``scores``, which replace their ``score``; no row
    dropped. For the student's hybrid score (``keyphrase_pipeline.models.lexical_match``): ``kp recommend``
    (``artifacts.hybrid_rescore``) and the serving reader's live search re-score the same way.

    ``recs``: a ``search_batch`` frame; ``scores``: float ``(len(recs),)``, read on rows of rank <= ``depth``, NaN
    where there is none (an item without text keeps its rows, scores and order). Returns a new frame, ranks
    renumbered from 1 (``rerank_top``'s order: scored rows first, highest first, ties by the earlier rank). Raises
    ValueError when ``scores`` does not hold one value per row."""
    import numpy as np

    out = rerank_top(recs, scores, depth, len(recs) + 1)
    new = out.pop("rerank_score").to_numpy()
    out["score"] = np.where(np.isfinite(new), new, out["score"].to_numpy()).astype(np.float32)
    return out
