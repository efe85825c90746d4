"""A model version's embedding snapshots (``embeddings/<items|keyphrases>/model=<v>/``) read whole, for the stages
that need every vector at hand: the index (keyphrases, a sample of items) and the CTR model (lookups by id).

Memory: ``4 * serve.dim`` bytes per row plus its id (256 + 8 bytes at 64-d): 5.3 GB for 20M items."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.core.layout import embeddings_dir
from keyphrase_pipeline.models.ann import check_vectors

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings


def load_embeddings(settings: Settings, what: str, version: str, required: bool):
    """(ids int64 ``(n,)``, vectors float32 ``(n, serve.dim)``) of the ``what`` embeddings of ``version``, or
    (None, None) when not ``required`` and there are none. DataError: missing/empty when required, a vector
    not ``serve.dim`` long, or NaN/inf/zero vectors (``models.ann.check_vectors``: count and an example id)."""
    path = embeddings_dir(settings, what, version)
    lake = Lake.from_settings(settings)
    if not lake.exists(path):
        if required:
            raise DataError(f"missing {what} embeddings of model {version} at {path}: run `kp embed --what {what}`")
        return None, None
    df = read_parquet(path, contract="embeddings")
    df = df[df["model_version"] == version]
    if df.empty:
        if required:
            raise DataError(f"empty {what} set: no embeddings of model {version} in {path}")
        return None, None
    return _ids_and_vectors(df, settings.serve.dim, what, path)


def _ids_and_vectors(df, dim: int, what: str, path: str):
    """(ids int64, vectors float32 ``(n, dim)``) of an embeddings frame; DataError for a vector not ``dim`` long and
    for NaN/inf/zero vectors (``check_vectors``: a NaN keyphrase would vanish from the index, a zero one match all)."""
    lengths = df["embedding"].map(len)
    if (lengths != dim).any():
        raise DataError(f"dimension mismatch in {path}: embedding sizes {sorted(set(lengths))}, serve.dim={dim}")
    vecs = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    ids = df["id"].to_numpy(dtype=np.int64)
    check_vectors(ids, vecs, what, path)
    return ids, vecs


def sample_embeddings(settings: Settings, what: str, version: str, n: int, seed: int = 0):
    """(ids int64 ``(m,)``, vectors float32 ``(m, serve.dim)``) of a seeded uniform sample of at most ``n`` rows of the
    ``what`` embeddings of ``version`` (``lake.sample_rows``: only the row groups holding a drawn row are read, so
    memory is set by ``n``, not by the catalog), or (None, None) when there are none. DataError as
    ``load_embeddings`` for the sampled rows (a vector not ``serve.dim`` long, NaN/inf/zero vectors)."""
    from keyphrase_pipeline.core.lake import parquet_dataset, sample_rows

    path = embeddings_dir(settings, what, version)
    if not Lake.from_settings(settings).exists(path):
        return None, None
    df = sample_rows(parquet_dataset(path, contract="embeddings"), n, seed, ["id", "embedding", "model_version"]).to_pandas()
    df = df[df["model_version"] == version]
    if df.empty:
        return None, None
    return _ids_and_vectors(df, settings.serve.dim, what, path)
