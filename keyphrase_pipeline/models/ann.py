"""FAISS helpers shared by the index build (``keyphrase_pipeline/stages/index.py``), recommendations, serving and the benchmark:
check a factory string against the data before training (``choose_factory``), build an ID-mapped
inner-product index, set its search parameters, move it to a GPU when there is one, and measure its
recall against exact search (``ann_recall_at_k``).

Vectors are float32 arrays of shape ``(n, dim)``, L2-normalised (inner product = cosine); ids int64 ``(n,)``.
A row that is not such a vector (a NaN/inf value, or all zeros: a broken export, an empty input that got
through) is found by ``vector_problems`` and refused by ``check_vectors``: FAISS would index or search it
without complaint (a NaN keyphrase is never found, a zero item scores 0.0 against everything).

Training: every k-means an index runs (the IVF coarse quantizer with ``nlist`` centroids, PQ/OPQ
codebooks with ``2**nbits`` centroids per sub-vector) needs at least ``k`` training vectors (FAISS
aborts below that) and wants ``MIN_POINTS_PER_CENTROID * k`` (FAISS warns below that). The training
sample is ``TRAIN_SAMPLE`` vectors, raised to ``MIN_POINTS_PER_CENTROID * k`` when the factory needs
more, never more than the data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.models.devices import faiss_on_device

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

ADD_BATCH = 100_000
TRAIN_SAMPLE = 100_000
MIN_POINTS_PER_CENTROID = 39  # FAISS's own threshold: Clustering warns "please provide at least 39 * k"
MIN_NLIST = 2  # an IVF index with fewer lists is a slower exact search: use Flat instead
EXACT = "Flat"
# a row that is not a usable vector (quarantine reasons of ``kp embed``; counted by ``vector_problems``)
NON_FINITE_VECTOR, ZERO_VECTOR = "non-finite vector", "zero vector"
ZERO_NORM = 1e-6  # an L2 norm at or below this is a zero vector (exported towers give unit vectors)


def vector_problems(vectors):
    """Which rows of ``vectors`` are not usable vectors, and why.

    Args:
        vectors: float array ``(n, d)``.
    Returns:
        ``np.ndarray`` of object, shape ``(n,)``: ``NON_FINITE_VECTOR`` where a value is NaN or +-inf,
        ``ZERO_VECTOR`` where the L2 norm is at most ``ZERO_NORM`` (float64 sum of squares), None for a good row.
        ``keyphrase_pipeline.stages.embed`` applies the same rule as a Spark expression.
    """
    import numpy as np

    v = np.asarray(vectors)
    out = np.full(len(v), None, dtype=object)
    if not len(v):
        return out
    finite = np.isfinite(v).all(axis=1)
    sq = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    out[finite & (sq <= ZERO_NORM ** 2)] = ZERO_VECTOR
    out[~finite] = NON_FINITE_VECTOR
    return out


def bad_vectors_error(by_reason: dict, example_id: int, example_reason: str, what: str, where: str) -> DataError:
    """The DataError (exit 3) for embeddings that are not vectors: how many (per reason), one example id, and
    the fix. ``what``: ``items`` or ``keyphrases``; ``where``: the embeddings path."""
    n = sum(by_reason.values())
    counts = ", ".join(f"{r}: {c}" for r, c in sorted(by_reason.items()))
    return DataError(f"{n} {what} embedding(s) in {where} are not vectors ({counts}), e.g. {what[:-1]} id "
                     f"{example_id} ({example_reason}); refused: re-embed with `kp embed --what {what} --full`, "
                     f"which quarantines them")


def check_vectors(ids, vectors, what: str, where: str) -> None:
    """Raise ``bad_vectors_error`` (DataError, exit 3) when a row of ``vectors`` (float ``(n, d)``; ids int
    ``(n,)``) is NaN/inf or zero (``vector_problems``); return None when every row is a vector."""
    import numpy as np

    reasons = vector_problems(vectors)
    bad = np.flatnonzero(reasons != None)  # noqa: E711 (element-wise)
    if len(bad):
        kinds, counts = np.unique(reasons[bad].astype(str), return_counts=True)
        raise bad_vectors_error(dict(zip(kinds.tolist(), counts.tolist())), int(ids[bad[0]]), reasons[bad[0]],
                                what, where)


def set_search_params(index, params: dict) -> None:
    """Apply e.g. ``{"efSearch": 128}`` / ``{"nprobe": 64}`` through faiss's ParameterSpace (IDMap-aware)."""
    import faiss

    ps = faiss.ParameterSpace()
    for key, value in (params or {}).items():
        ps.set_index_parameter(index, key, value)


def search_params_for(factory: str, settings: Settings) -> dict:
    """Search parameters for an index factory string from ``serve.ann_ef_search`` / ``serve.ann_nprobe``."""
    f = factory.upper()
    params = {}
    if "HNSW" in f:
        params["efSearch"] = settings.serve.ann_ef_search
    if "IVF" in f:
        params["nprobe"] = settings.serve.ann_nprobe
    return params


def _parse_factory(factory: str, d: int):
    """``faiss.index_factory(d, "IDMap,<factory>", METRIC_INNER_PRODUCT)``; ConfigError when FAISS rejects the string."""
    import faiss

    try:
        return faiss.index_factory(d, f"IDMap,{factory}", faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ConfigError(f"serve.ann_factory={factory!r} is not a FAISS index factory string for {d}-d "
                          f"inner-product vectors (e.g. 'IVF4096,Flat', 'HNSW32,Flat', 'IVF1024,PQ16'): {first}") from exc


def kmeans_sizes(index) -> list[tuple[str, int]]:
    """The k-means runs training ``index`` needs, as ``(what, k)``: ``("IVF", nlist)`` for an IVF coarse
    quantizer (FAISS's own ``try_extract_index_ivf``), ``("PQ", 2**nbits)`` for each product quantizer,
    ``("OPQ", 256)`` for an OPQ rotation. Empty for an index that needs no training (Flat, HNSW,Flat)."""
    import faiss

    sizes = []
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        sizes.append(("IVF", int(ivf.nlist)))
    keep = [index]  # sub-objects are views into their parent: keep every parent alive while walking
    stack = [index]
    while stack:
        node = faiss.downcast_index(stack.pop())
        keep.append(node)
        pq = getattr(node, "pq", None)
        if pq is not None and hasattr(pq, "ksub"):
            sizes.append(("PQ", int(pq.ksub)))
        if isinstance(node, faiss.IndexPreTransform):
            for i in range(node.chain.size()):
                if isinstance(faiss.downcast_VectorTransform(node.chain.at(i)), faiss.OPQMatrix):
                    sizes.append(("OPQ", 256))  # OPQMatrix trains its own 8-bit PQ
        for attr in ("index", "base_index", "storage"):
            child = getattr(node, attr, None)
            if isinstance(child, faiss.Index):
                stack.append(child)
    return sizes


def train_sample_size(n: int, k: int) -> int:
    """Vectors to train a k-means of ``k`` centroids on, out of ``n``: ``TRAIN_SAMPLE`` raised to
    ``MIN_POINTS_PER_CENTROID * k`` when that is more, capped at ``n``."""
    return int(min(n, max(TRAIN_SAMPLE, MIN_POINTS_PER_CENTROID * k)))


@dataclass(frozen=True)
class IndexChoice:
    """What ``choose_factory`` decided: the factory to build, the one asked for, the training sample size
    (0 = no training) and, when they differ, why (``note``, for the log and ``index_meta.json``)."""

    factory: str
    requested: str
    train_sample: int
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.factory == EXACT


def choose_factory(factory: str, n: int, d: int) -> IndexChoice:
    """Check ``factory`` against ``n`` vectors of dim ``d`` before anything is trained.

    Every k-means of the factory must get ``MIN_POINTS_PER_CENTROID`` (39) training vectors per centroid.
    When the data is too small for that: an IVF factory gets a smaller ``nlist`` (``n // 39``, the rest of
    the string kept: ``IVF4096,Flat`` on 602 vectors becomes ``IVF15,Flat``); below ``MIN_NLIST`` lists, or
    when PQ/OPQ codebooks (fixed by their bits) cannot be trained, exact search (``Flat``) is used, which
    at that size is cheap. Raises ConfigError (exit 2) when FAISS rejects the string or the IVF size
    cannot be rewritten (say which setting to change)."""
    import faiss

    probe = _parse_factory(factory, d)
    if probe.is_trained:
        return IndexChoice(factory, factory, 0)
    sizes = kmeans_sizes(probe)
    codebooks = [(what, k) for what, k in sizes if what != "IVF"]
    nlist = next((k for what, k in sizes if what == "IVF"), None)
    want = MIN_POINTS_PER_CENTROID
    if codebooks:
        what, k = max(codebooks, key=lambda wk: wk[1])
        if n < want * k:
            return IndexChoice(EXACT, factory, 0,
                               f"{factory!r} trains {what} codebooks of {k} centroids, which needs {want * k} "
                               f"training vectors ({want} per centroid); only {n}: exact search (Flat) instead")
    if nlist is not None and n < want * nlist:
        smaller = n // want
        if smaller < MIN_NLIST:
            return IndexChoice(EXACT, factory, 0,
                               f"{factory!r} has {nlist} IVF lists, which needs {want * nlist} training vectors "
                               f"({want} per list); only {n}: exact search (Flat) instead")
        fitted, count = re.subn(rf"IVF{nlist}(?!\d)", f"IVF{smaller}", factory, count=1)
        check = _parse_factory(fitted, d) if count else None
        ivf = faiss.try_extract_index_ivf(check) if check is not None else None
        if not ivf or ivf.nlist != smaller:
            raise ConfigError(f"serve.ann_factory={factory!r} has {nlist} IVF lists, which needs {want * nlist} training "
                              f"vectors ({want} per list); there are only {n}: set serve.ann_factory with at most "
                              f"IVF{smaller}, or serve.exact_index_max >= {n} for exact search")
        note = (f"{factory!r} has {nlist} IVF lists, which needs {want * nlist} training vectors ({want} per list); "
                f"only {n}: {fitted!r} instead")
        return IndexChoice(fitted, factory, train_sample_size(n, max(k for _, k in kmeans_sizes(check))), note)
    return IndexChoice(factory, factory, train_sample_size(n, max((k for _, k in sizes), default=0)))


def build_index(vectors, ids, factory: str, search_params: dict | None = None, seed: int = 0):
    """An ``IDMap,<factory>`` inner-product index holding ``vectors`` under ``ids`` (trained on a sample).

    ``vectors``: float32 ``(n, d)``, L2-normalised; ``ids``: int64 ``(n,)``. The training sample is
    ``train_sample_size(n, k)`` vectors for the factory's largest k-means (``kmeans_sizes``). Returns a
    ``faiss.Index`` of dim ``d``. Raises ConfigError (exit 2), checked before training, when FAISS rejects
    the factory string or ``n`` is below a k-means' centroid count (FAISS would abort); below 39 vectors
    per centroid it only warns (``choose_factory`` decides what to build for the pipeline)."""
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n = len(vectors)
    index = _parse_factory(factory, vectors.shape[1])
    if not index.is_trained:
        sizes = kmeans_sizes(index)
        what, k = max(sizes, key=lambda wk: wk[1]) if sizes else ("", 0)
        if n < k:
            raise ConfigError(f"cannot train FAISS index {factory!r} on {n} vectors: its {what} k-means has {k} "
                              f"centroids and needs at least {k} vectors ({MIN_POINTS_PER_CENTROID * k} to train well); "
                              f"use a smaller IVF nlist or fewer PQ bits, or exact search (Flat)")
        if n < MIN_POINTS_PER_CENTROID * k:
            log.warning("training %s on %d vectors: its %s k-means (%d centroids) wants %d", factory, n, what, k,
                        MIN_POINTS_PER_CENTROID * k)
        size = train_sample_size(n, k)
        rng = np.random.default_rng(seed)
        sample = vectors if size >= n else vectors[rng.choice(n, size, replace=False)]
        try:
            index.train(sample)
        except RuntimeError as exc:  # a structure kmeans_sizes does not know; say what to change
            raise ConfigError(f"FAISS could not train {factory!r} on {len(sample)} of {n} vectors: "
                              f"{str(exc).strip().splitlines()[-1]}; change serve.ann_factory") from exc
    for start in range(0, len(vectors), ADD_BATCH):
        index.add_with_ids(vectors[start:start + ADD_BATCH], ids[start:start + ADD_BATCH])
    set_search_params(index, search_params or {})
    return index


def ann_recall_at_k(index, vectors, ids, queries, k: int, device: str = "auto") -> float:
    """Mean |index top-k ∩ exact top-k| / k over ``queries`` (exact = brute-force inner product).

    ``queries``: float32 ``(q, d)``; ``k`` is capped at ``len(vectors)``. Returns a float in [0, 1] (0.0 for no
    queries). Not to be confused with ``keyphrase_pipeline.stages.evaluate.relevance_recall_at_k`` (relevant keyphrases found)."""
    import numpy as np

    k = max(1, min(k, len(vectors)))
    exact = build_index(vectors, ids, "Flat")
    _, truth = faiss_on_device(exact, device, k=k).search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, got = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = [len(set(t[t >= 0]) & set(g[g >= 0])) / k for t, g in zip(truth, got)]
    return float(np.mean(hits)) if hits else 0.0


def ann_recall_of(meta: dict) -> float:
    """The ANN recall@k stored in an ``index_meta.json`` (key ``ann_recall_at_k``; builds written before
    the rename stored it as ``recall_at_k``). Raises KeyError when neither is present."""
    return float(meta["ann_recall_at_k"] if "ann_recall_at_k" in meta else meta["recall_at_k"])
