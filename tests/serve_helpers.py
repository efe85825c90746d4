"""Test world for the serving stage (export, embed, index, recommend, publish): a hand-made catalog and
keyphrase list, a tiny random encoder registered as the champion, serve.dim 16.

Fixtures are imported by the test modules (``from serve_helpers import ...``):
``serve_model`` (session) builds the tiny encoder once; ``serve_world`` is an empty-but-registered lake;
``serve_ready`` (session, read-only template) has everything up to recommendations for DS; ``ready``
is a private writable copy of it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))
from testsupport import make_settings  # noqa: E402

from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic  # noqa: E402

DS = "2026-10-05"
CATS = ["phones", "shoes", "toys", "kitchen"]
WORDS = ["red", "blue", "pro", "max", "mini", "vintage", "new", "sealed", "lego", "nike", "apple", "mixer",
         "boots", "case"]
N_ITEMS, N_KP = 40, 60
_READY: list[Path] = []  # items i % 10 == 9 are inactive -> 36 active


def serve_settings(root: Path, **serve):
    return make_settings(root, serve={"dim": 16, "quantize": False, **serve}, train={"matryoshka_dims": [32, 16]})


def catalog(n_items: int = N_ITEMS) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": pd.Series(range(1, n_items + 1), dtype="int64"),
        "title": [f"{WORDS[i % 14]} {WORDS[(i * 3) % 14]} {WORDS[(i * 5 + 1) % 14]} item {i}" for i in range(n_items)],
        "category": [CATS[i % 4] for i in range(n_items)],
        "updated_at": pd.Timestamp("2026-10-01"),
        "active": [i % 10 != 9 for i in range(n_items)],
    })


def keyphrases(n_kp: int = N_KP) -> pd.DataFrame:
    return pd.DataFrame({
        "keyphrase_id": pd.Series(range(100, 100 + n_kp), dtype="int64"),
        "text": [f"{WORDS[i % 14]} {WORDS[(i * 7 + 2) % 14]} {CATS[i % 4]}" if i % 5 else f"{WORDS[i % 14]} {i}"
                 for i in range(n_kp)],
        "search_volume": pd.Series(range(n_kp), dtype="int64"),
    })


def register(settings, model_src: str, version: str = "v1", champion: bool = True, train_config: dict | None = None):
    import json

    lake = Lake.from_settings(settings)
    dst = Path(lake.path("registry", "students", version, "model"))
    shutil.copytree(model_src, dst)
    (dst.parent / "train_config.json").write_text(json.dumps(train_config or {"matryoshka_dims": [32, 16]}))
    if champion:
        lake.write_pointer(lake.path("registry", "CHAMPION"), version)
    return str(dst)


def write_inputs(settings, ds: str = DS, cat: pd.DataFrame | None = None, kps: pd.DataFrame | None = None):
    lake = Lake.from_settings(settings)
    write_parquet_atomic(catalog() if cat is None else cat, lake.path("catalog", ds=ds))
    write_parquet_atomic(keyphrases() if kps is None else kps, lake.path("keyphrases"))


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory):
    from keyphrase_pipeline.models.tiny import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("serve_model") / "model", hidden=32, seed=1)


@pytest.fixture
def serve_world(tmp_path, serve_model):
    s = serve_settings(tmp_path / "lake")
    write_inputs(s)
    register(s, serve_model)
    return s


@pytest.fixture(scope="session")
def serve_ready(tmp_path_factory, serve_model, spark):
    """Template lake: exported, items + keyphrases embedded, index staged, recommendations for DS."""
    from keyphrase_pipeline.stages import embed, export, index, recommend

    if _READY:  # built once per session even though each test module imports this fixture
        return _READY[0]
    root = tmp_path_factory.mktemp("serve_ready") / "lake"
    s = serve_settings(root)
    write_inputs(s)
    register(s, serve_model)
    export.run(s, DS)
    embed.run(s, DS, "items", spark=spark)
    embed.run(s, DS, "keyphrases", spark=spark)
    index.run(s, DS)
    recommend.run(s, DS)
    _READY.append(root)
    return root


@pytest.fixture
def ready(serve_ready, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(serve_ready, root)
    return serve_settings(root)


def clustered_vectors(n: int, d: int = 16, clusters: int = 10, noise: float = 0.3, seed: int = 0):
    """``n`` L2-normalised float32 vectors of dim ``d`` around ``clusters`` random centres (an ANN's hard case:
    many near neighbours across cell borders)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(clusters, d))  # the same centres for keyphrases and items
    x = centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def embedded_keyphrase_world(root: Path, n_kp: int, n_items: int = 300, dim: int = 16, version: str = "v1", **serve):
    """A lake ready for ``kp index`` without Spark or a model: ``n_kp`` keyphrases and ``n_items`` items with
    clustered embeddings of model ``version`` (the champion; its model directory holds only a marker file)."""
    import numpy as np

    from keyphrase_pipeline.core.layout import embeddings_dir, model_dir

    s = make_settings(root, serve={"dim": dim, "quantize": False, **serve}, train={"matryoshka_dims": [32, dim]})
    lake = Lake.from_settings(s)
    write_parquet_atomic(keyphrases(n_kp), lake.path("keyphrases"))
    model = Path(model_dir(s, version))
    model.mkdir(parents=True)
    (model / "README").write_text("embeddings written by the test; no model needed to index them\n")
    lake.write_pointer(lake.path("registry", "CHAMPION"), version)
    for what, n, first_id, seed in (("keyphrases", n_kp, 100, 0), ("items", n_items, 1, 1)):
        vecs = clustered_vectors(n, dim, seed=seed)
        df = pd.DataFrame({"id": np.arange(first_id, first_id + n, dtype=np.int64), "text_hash": [f"h{i}" for i in range(n)],
                           "embedding": list(vecs), "model_version": version})
        write_parquet_atomic(df, embeddings_dir(s, what, version))
    return s
