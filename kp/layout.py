"""Every path and marker in the lake, named in one place: ask here, never format a lake path by hand.

Dataset roots come from ``kp.lake.DATASETS`` (``Lake.path``); this module names what lies inside them::

    pairs/ds=D/_MANIFEST.json                         selection manifest (run id, shards, counts)
    pairs/ds=D/shard=NNNNN/                           one shard of the day's pairs        shard_dir_name
    llm_labels/staging/ds=D/shard=NNNNN/batch-NNNNN.parquet   one judged batch          batch_file_name
    llm_labels/staging/ds=D/shard=NNNNN/_DONE         the shard is complete
    registry/CHAMPION, registry/CROSS_LATEST          pointers                            registry_pointer
    registry/champion_history.jsonl                   every promotion                     champion_history_path
    registry/<students|cross>/<v>/                    one trained version                 registry_version_dir
    registry/<students|cross>/<v>/model/              sentence-transformers directory     model_dir
    registry/students/<v>/onnx/                       exported towers                     onnx_dir
    embeddings/<items|keyphrases>/model=<v>/          embeddings per model version        embeddings_dir
    serving/builds/ds=D/                              the day's FAISS index build         index_build_dir
    serving/versions/<id>/                            published bundles (manifest.json)   serving_version_dir
    serving/versions/<id>/recommendations/            published top-K per item            published_recommendations_dir
    serving/CURRENT                                   pointer: the live bundle            current_pointer
    runs/ds=D/<stage>.json                            a stage's run metrics               Lake.run_stats_path

Storage: the lake root may be any fsspec URL for the datasets read and written through ``kp.lake``
(Spark stages, ``read_parquet``, pointers, run metrics), but the model registry, the serving bundles,
the label store's staging and the web UI open files with the local filesystem: the lake must be a
local or mounted filesystem (an NFS/EFS/FUSE mount of a bucket works) until those move to fsspec.
"""

from __future__ import annotations

from kp.errors import ConfigError
from kp.lake import SUCCESS, Lake, is_local  # noqa: F401 (SUCCESS: the marker written by kp.lake)

# ---- markers -----------------------------------------------------------------------------------------
PAIRS_MANIFEST = "_MANIFEST.json"    # pairs/ds=D: what the selection wrote
SHARD_DONE = "_DONE"                 # llm_labels/staging/ds=D/shard=N: every pair of the shard is judged
SERVING_MANIFEST = "manifest.json"   # serving/versions/<id>: checksums of every file of the bundle
INDEX_META = "index_meta.json"       # serving/builds/ds=D: index factory, recall, model version
INDEX_FILE = "index.faiss"           # serving/builds/ds=D and each serving version: the FAISS index
INDEX_IDMAP = "keyphrases.parquet"   # beside the index: keyphrase_id -> text
EXPORT_RECORD = "export.json"        # registry/students/<v>/onnx: what was exported and verified
MODEL_MARKER = "kp_model.json"       # beside every saved model: {"kind": "bi"|"cross", threshold, ...}
REGISTRY_KINDS = ("students", "cross")
REGISTRY_POINTERS = {"students": "CHAMPION", "cross": "CROSS_LATEST"}
EMBEDDED = {"items": "item", "keyphrases": "keyphrase"}  # embeddings/<what>/ -> the tower that embeds it


def _lake(settings_or_lake) -> Lake:
    """Every function here takes the settings object or a ``Lake``."""
    return settings_or_lake if isinstance(settings_or_lake, Lake) else Lake.from_settings(settings_or_lake)


# ---- pairs and LLM labels ---------------------------------------------------------------------------
def shard_dir_name(shard: int) -> str:
    """``shard=NNNNN`` (five digits), the directory of one shard of pairs or of its judged batches."""
    return f"shard={int(shard):05d}"


def batch_file_name(index: int) -> str:
    """``batch-NNNNN.parquet``: one judged batch of a shard in the staging area."""
    return f"batch-{int(index):05d}.parquet"


def batch_index(file_name: str) -> int:
    """The batch number of a ``batch-NNNNN.parquet`` name or path (inverse of ``batch_file_name``)."""
    return int(str(file_name).rsplit("batch-", 1)[1].split(".")[0])


BATCH_GLOB = "batch-*.parquet"


def pairs_dir(settings, ds, shard: int | None = None) -> str:
    """``pairs/ds=D/`` or one shard of it, ``pairs/ds=D/shard=NNNNN/`` (contract ``pairs``)."""
    base = _lake(settings).path("pairs", ds=ds)
    return base if shard is None else f"{base}/{shard_dir_name(shard)}"


def pairs_manifest_path(settings, ds) -> str:
    return f"{pairs_dir(settings, ds)}/{PAIRS_MANIFEST}"


def staging_dir(settings, ds, shard: int | None = None) -> str:
    """``llm_labels/staging/ds=D/`` or one shard's ``.../shard=NNNNN/`` (judged batches + ``_DONE``)."""
    base = _lake(settings).path("llm_staging", ds=ds)
    return base if shard is None else f"{base}/{shard_dir_name(shard)}"


def staging_glob(settings, ds, shard: int | None = None) -> str:
    """A glob of the judged batch files of one shard, or of every shard of the day."""
    base = staging_dir(settings, ds, shard)
    return f"{base}/{BATCH_GLOB}" if shard is not None else f"{base}/shard=*/{BATCH_GLOB}"


def done_marker(settings, ds, shard: int) -> str:
    return f"{staging_dir(settings, ds, shard)}/{SHARD_DONE}"


# ---- the model registry (local or mounted filesystem) ------------------------------------------------
def registry_root(settings) -> str:
    lake = _lake(settings)
    if not is_local(lake.root):
        raise ConfigError(f"the model registry needs a local or mounted lake_root, got {lake.root}")
    return lake.path("registry")


def check_kind(kind: str) -> None:
    if kind not in REGISTRY_KINDS:
        raise ConfigError(f"registry kind {kind!r}: choose from {REGISTRY_KINDS}")


def registry_pointer(settings, kind: str = "students") -> str:
    """``registry/CHAMPION`` (students) or ``registry/CROSS_LATEST`` (cross)."""
    check_kind(kind)
    return f"{registry_root(settings)}/{REGISTRY_POINTERS[kind]}"


def champion_history_path(settings) -> str:
    return f"{registry_root(settings)}/champion_history.jsonl"


def registry_kind_dir(settings, kind: str = "students") -> str:
    check_kind(kind)
    return f"{registry_root(settings)}/{kind}"


def registry_version_dir(settings, version: str, kind: str = "students") -> str:
    """``registry/<kind>/<version>/``: the whole version (model/, metrics.json, onnx/, ...)."""
    check_kind(kind)
    if not version or "/" in version or version.startswith((".", "_")):
        raise ConfigError(f"bad version id {version!r}")
    return f"{registry_kind_dir(settings, kind)}/{version}"


def model_dir(settings, version: str, kind: str = "students") -> str:
    """``registry/<kind>/<version>/model/``: the sentence-transformers directory of a version."""
    return f"{registry_version_dir(settings, version, kind)}/model"


def onnx_dir(settings, version: str) -> str:
    """``registry/students/<version>/onnx/``: the exported towers (item/, keyphrase/, triton/, export.json)."""
    return f"{registry_version_dir(settings, version, 'students')}/onnx"


# ---- embeddings, index, serving ------------------------------------------------------------------------
def embeddings_dir(settings, what: str, version: str) -> str:
    """``embeddings/<items|keyphrases>/model=<version>/`` (contract ``embeddings``)."""
    if what not in EMBEDDED:
        raise ConfigError(f"what must be one of {sorted(EMBEDDED)}, got {what!r}")
    return _lake(settings).path("embeddings", what, f"model={version}")


def index_build_dir(settings, ds: str) -> str:
    """``serving/builds/ds=D/``: index.faiss, keyphrases.parquet (id map), index_meta.json."""
    return _lake(settings).path("serving", "builds", ds=ds)


def serving_versions_root(settings) -> str:
    return _lake(settings).path("serving", "versions")


def serving_version_dir(settings, version_id: str) -> str:
    return f"{serving_versions_root(settings)}/{version_id}"


def published_recommendations_dir(settings, version_id: str) -> str:
    return f"{serving_version_dir(settings, version_id)}/recommendations"


def current_pointer(settings) -> str:
    """``serving/CURRENT``: the live published version id."""
    return _lake(settings).path("serving", "CURRENT")
