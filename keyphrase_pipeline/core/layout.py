"""Every path and marker in the lake, named in one place: ask here, never format a lake path by hand.

This docstring is the one copy of the lake's tree (other modules and docs point here). Dataset roots are
``keyphrase_pipeline.core.lake.DATASETS`` (``Lake.path(name, ds=D)``; daily datasets are partitioned by ``ds=YYYY-MM-DD``);
the right-hand column names the function of this module (or ``Lake``) that builds each path::

    raw/catalog/ds=D/, raw/keyphrases/, raw/events/ds=D/, raw/sr_labels/ds=D/   input contracts   Lake.path
    synth/                                            the synthetic world (demo/tests only)   Lake.path("synth")
    synth/world.json                                  the synthetic world's parameters    synth_world_meta_path
    ctr_daily/ds=D/                                   one day's impressions/clicks per pair  Lake.path
    <ctr_labels|sr_labels>/ds=D/                      30-day CTR labels; search-relevance pass-through
    <ctr_labels|sr_labels>/ds=D/_stats.json           the partition's stats (informative) partition_stats_path
                                                      (ctr_labels': also ``window_state``, what the next day's
                                                      sliding window verifies; ctr_labels/ds=D is that state)
    quarantine/<dataset>/ds=D/                        bad input rows with a ``reason`` column
    _conformed/raw/<dataset>/.../<file>-<key>.parquet an input file Spark cannot read as written, copied in
                                                      the contract's types (keyphrase_pipeline.core.conform)
                                                                                          conformed_path
    quarantine/llm_labels/ds=D/shard=NNNNN/batch-NNNNN.parquet   pairs the judge gave no usable answer
                                                      (reason, raw_answer)      label_quarantine_dir, batch_file_name
    pairs/ds=D/_MANIFEST.json                         selection manifest (run id, shards, counts)  pairs_manifest_path
    pairs/ds=D/shard=NNNNN/part-00000.parquet         one shard of the day's pairs        pairs_dir, part_file
    llm_labels/staging/ds=D/shard=NNNNN/batch-NNNNN.parquet   one judged batch          staging_dir, batch_file_name
    llm_labels/staging/ds=D/shard=NNNNN/_DONE         the shard is complete               done_marker
    llm_labels/staging/ds=D/shard=NNNNN/_LEASE        the shard's claim by one live worker shard_lease_path
    llm_labels/staging/ds=D/shard=NNNNN/_JOURNAL.jsonl requests of the batch in flight  shard_journal_path
    llm_labels/store/ds=D/part-00000.parquet          the label store (one file per day, append-only by day)
    llm_labels/store/_PAIR_KEYS.json                  the store's pair_key encoding version  pair_keys_marker
    llm_labels/store/_LEASE                           held by the one process writing the store (merge, key migration)
                                                                                          store_lease_path
    label_reviews/ds=D/part-<uuid>.parquet            one human verdict on a judged pair of label store day D
                                                      (append-only: a new file per verdict)  label_review_file
    registry/CHAMPION, registry/CROSS_LATEST          pointers                            registry_pointer
    registry/champion_history.jsonl                   every promotion                     champion_history_path
    registry/<students|cross>/<v>/                    one trained version                 registry_version_dir
    registry/<students|cross>/<v>/model/              sentence-transformers directory     model_dir, version_model_dir
    registry/<students|cross>/<v>/<file>              train_config.json, data.json, metrics.json, promotion.json,
                                                      history.json, curves.png, calibration.png, MODEL_CARD.md,
                                                      soft_labels.parquet (cross only)    version_file
    registry/students/<v>/onnx/                       exported towers (item/, keyphrase/, triton/, export.json)  onnx_dir
    embeddings/<items|keyphrases>/model=<v>/          embeddings per model version        embeddings_dir
    recommendations/ds=D/part-NNNNN.parquet           the day's top-K keyphrases per item  Lake.path, part_file_name
    serving/builds/ds=D/                              the day's FAISS index build (index.faiss, keyphrases.parquet,
                                                      index_meta.json)                    index_build_dir
    serving/versions/<id>/                            published bundles (manifest.json)   serving_version_dir
    serving/versions/<id>/onnx/<item|keyphrase>/      the bundle's ONNX towers            bundle_tower_dir
    serving/versions/<id>/recommendations/part-00000.parquet   published top-K per item  published_recommendations_dir,
                                                                                          bundle_recommendations_file
    serving/CURRENT                                   pointer: the live bundle            current_pointer
    serving/BAD_VERSIONS.json                         versions rolled back from (never a rollback target)
                                                                                          bad_versions_path
    runs/ds=D/_serving_model                          pointer: the student the day's serving chain uses (pinned
                                                      by ``kp export``)                   serving_model_pin
    runs/ds=D/<stage>.json                            a stage's run metrics (+ wall_seconds, airflow run/task ids
                                                      when run by the DAG)                Lake.run_stats_path
    runs/ds=D/_failed/<stage>.json                    the last failure of the stage's task that day (error, try,
                                                      airflow ids)                        Lake.run_failure_path

Storage: the lake root may be any fsspec URL for the datasets read and written through ``keyphrase_pipeline.core.lake``
(Spark stages, ``read_parquet``, pointers, run metrics), but the model registry, the serving bundles,
the label store's staging and the web UI open files with the local filesystem: the lake must be a
local or mounted filesystem (an NFS/EFS/FUSE mount of a bucket works) until those move to fsspec.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import SUCCESS, Lake, is_local  # noqa: F401 (SUCCESS: the marker written by keyphrase_pipeline.core.lake)

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

# ---- markers -----------------------------------------------------------------------------------------
PAIRS_MANIFEST = "_MANIFEST.json"    # pairs/ds=D: what the selection wrote
PART_FILE = "part-00000.parquet"     # the one file of a directory written by pyarrow/pandas (not Spark)
SHARD_DONE = "_DONE"                 # llm_labels/staging/ds=D/shard=N: every pair of the shard is judged
SHARD_LEASE = "_LEASE"               # staging/ds=D/shard=N and llm_labels/store: the one live worker writing there
SHARD_JOURNAL = "_JOURNAL.jsonl"     # staging/ds=D/shard=N: each request of the batch in flight, sent / answered
PAIR_KEYS_MARKER = "_PAIR_KEYS.json"  # llm_labels/store: which pair_key encoding the store's rows carry
LABEL_QUARANTINE = "llm_labels"      # quarantine/llm_labels/ds=D/shard=N: pairs without a usable judge answer
SERVING_MANIFEST = "manifest.json"   # serving/versions/<id>: checksums of every file of the bundle
INDEX_META = "index_meta.json"       # serving/builds/ds=D: index factory, recall, model version
INDEX_FILE = "index.faiss"           # serving/builds/ds=D and each serving version: the FAISS index
INDEX_IDMAP = "keyphrases.parquet"   # beside the index: keyphrase_id -> text
EXPORT_RECORD = "export.json"        # registry/students/<v>/onnx: what was exported and verified
MODEL_MARKER = "kp_model.json"       # beside every saved model: {"kind": "bi"|"cross", threshold, ...}
HYBRID_RECORD = "_hybrid.json"       # recommendations/ds=D: the student's hybrid score the lists were re-scored with
PARTITION_STATS = "_stats.json"      # ctr_daily, ctr_labels, sr_labels /ds=D: counts of the partition, write_id and
                                     # data_fingerprint; ctr_labels': window_state (the sliding window's record)
SYNTH_WORLD_META = "world.json"      # synth/: the synthetic world's parameters (demo/tests only)
REGISTRY_KINDS = ("students", "cross", "ctr")
REGISTRY_POINTERS = {"students": "CHAMPION", "cross": "CROSS_LATEST", "ctr": "CTR_CHAMPION"}
CONFORMED = "_conformed"             # lake root: conformed copies of input files (keyphrase_pipeline.core.conform)
EMBEDDED = {"items": "item", "keyphrases": "keyphrase"}  # embeddings/<what>/ -> the tower that embeds it


def lake_of(settings_or_lake) -> Lake:
    """Every function here takes the settings object or a ``Lake``."""
    return settings_or_lake if isinstance(settings_or_lake, Lake) else Lake.from_settings(settings_or_lake)


def conformed_path(settings: Settings, source: str) -> str:
    """``_conformed/<source's path under the lake root>``: where ``keyphrase_pipeline.core.conform`` keeps the
    conformed copies of input file (or partition) ``source``; ``_conformed/_outside/<sha1 of source>`` for a
    source outside the lake root. The leading underscore keeps it out of every dataset reader's listing."""

    root = lake_of(settings).root.rstrip("/")
    if source.startswith(root + "/"):
        return f"{root}/{CONFORMED}/{source[len(root) + 1:]}"
    return f"{root}/{CONFORMED}/_outside/{hashlib.sha1(source.encode()).hexdigest()[:16]}"


# ---- pairs and LLM labels ---------------------------------------------------------------------------
def partition_name(dataset: str, ds) -> str:
    """A day partition's name relative to its dataset root, for messages: ``partition_name("ctr_daily", "2026-10-05")``
    is ``"ctr_daily/ds=2026-10-05"``."""
    return f"{dataset}/ds={ds}"


def shard_dir_name(shard: int) -> str:
    """``shard=NNNNN`` (five digits), the directory of one shard of pairs or of its judged batches."""
    return f"shard={int(shard):05d}"


def part_file(directory) -> str:
    """``<directory>/part-00000.parquet``: the single file of a pairs shard, a label-store day or a bundle's
    recommendations."""
    return f"{directory}/{PART_FILE}"


def part_file_name(index: int) -> str:
    """``part-NNNNN.parquet`` (five digits): the ``index``-th file of a directory written in parts by pyarrow
    (``recommendations/ds=D``); ``part_file_name(0)`` is ``PART_FILE``."""
    return f"part-{int(index):05d}.parquet"


def batch_file_name(index: int) -> str:
    """``batch-NNNNN.parquet``: one judged batch of a shard in the staging area."""
    return f"batch-{int(index):05d}.parquet"


def batch_index(file_name: str) -> int:
    """The batch number of a ``batch-NNNNN.parquet`` name or path (inverse of ``batch_file_name``)."""
    return int(str(file_name).rsplit("batch-", 1)[1].split(".")[0])


BATCH_GLOB = "batch-*.parquet"


def pairs_dir(settings: Settings, ds, shard: int | None = None) -> str:
    """``pairs/ds=D/`` or one shard of it, ``pairs/ds=D/shard=NNNNN/`` (contract ``pairs``)."""
    base = lake_of(settings).path("pairs", ds=ds)
    return base if shard is None else f"{base}/{shard_dir_name(shard)}"


def pairs_manifest_path(settings: Settings, ds) -> str:
    """``pairs/ds=D/_MANIFEST.json``: the selection's run id, shard list and counts (written by ``kp select-pairs``)."""
    return f"{pairs_dir(settings, ds)}/{PAIRS_MANIFEST}"


def staging_dir(settings: Settings, ds, shard: int | None = None) -> str:
    """``llm_labels/staging/ds=D/`` or one shard's ``.../shard=NNNNN/`` (judged batches + ``_DONE``)."""
    base = lake_of(settings).path("llm_staging", ds=ds)
    return base if shard is None else f"{base}/{shard_dir_name(shard)}"


def staging_glob(settings: Settings, ds, shard: int | None = None) -> str:
    """A glob of the judged batch files of one shard, or of every shard of the day."""
    base = staging_dir(settings, ds, shard)
    return f"{base}/{BATCH_GLOB}" if shard is not None else f"{base}/shard=*/{BATCH_GLOB}"


def done_marker(settings: Settings, ds, shard: int) -> str:
    """``llm_labels/staging/ds=D/shard=NNNNN/_DONE``: JSON stats of a fully judged shard, with the pairs run id."""
    return f"{staging_dir(settings, ds, shard)}/{SHARD_DONE}"


def shard_lease_path(settings: Settings, ds, shard: int) -> str:
    """``llm_labels/staging/ds=D/shard=NNNNN/_LEASE``: the claim of the worker labelling the shard now."""
    return f"{staging_dir(settings, ds, shard)}/{SHARD_LEASE}"


def shard_journal_path(settings: Settings, ds, shard: int) -> str:
    """``llm_labels/staging/ds=D/shard=NNNNN/_JOURNAL.jsonl``: one JSON line per request of the batch being judged
    (sent, answered with P(yes), unusable, failed), fsynced; removed once the batch is staged. A worker killed
    mid-batch leaves it for the retry (``keyphrase_pipeline.stages.llm_label``: nothing answered is asked again)."""
    return f"{staging_dir(settings, ds, shard)}/{SHARD_JOURNAL}"


def label_quarantine_dir(settings: Settings, ds, shard: int | None = None) -> str:
    """``quarantine/llm_labels/ds=D/`` or one shard's ``.../shard=NNNNN/``: one ``batch-NNNNN.parquet`` per judged
    batch that held pairs without a usable answer (same batch number as the batch's staged labels)."""
    base = lake_of(settings).path("quarantine", LABEL_QUARANTINE, ds=ds)
    return base if shard is None else f"{base}/{shard_dir_name(shard)}"


def label_quarantine_glob(settings: Settings, ds, shard: int | None = None) -> str:
    """A glob of the quarantined batch files of one shard, or of every shard of the day."""
    base = label_quarantine_dir(settings, ds, shard)
    return f"{base}/{BATCH_GLOB}" if shard is not None else f"{base}/shard=*/{BATCH_GLOB}"


def pair_keys_marker(settings: Settings) -> str:
    """``llm_labels/store/_PAIR_KEYS.json``: {"version": N, ...}, the pair_key encoding of every stored row."""
    return lake_of(settings).path("llm_store", PAIR_KEYS_MARKER)


def store_lease_path(settings: Settings) -> str:
    """``llm_labels/store/_LEASE``: held by the one process writing the label store (a merge, the key migration)."""
    return lake_of(settings).path("llm_store", SHARD_LEASE)


def label_review_file(settings: Settings, ds, review_id: str) -> str:
    """``label_reviews/ds=D/part-<review_id>.parquet``: one reviewer's verdict (contract ``label_reviews``); a new
    file per verdict, never rewritten. ConfigError (exit 2) for a ``review_id`` that is not plain hex."""
    if not review_id or not all(c in "0123456789abcdef" for c in review_id):
        raise ConfigError(f"bad review id {review_id!r}")
    return f"{lake_of(settings).path('label_reviews', ds=ds)}/part-{review_id}.parquet"


# ---- the model registry (local or mounted filesystem) ------------------------------------------------
def registry_root(settings: Settings) -> str:
    """``registry/``; ConfigError (exit 2) unless the lake root is local or mounted (the registry uses local
    file APIs)."""
    lake = lake_of(settings)
    if not is_local(lake.root):
        raise ConfigError(f"the model registry needs a local or mounted lake_root, got {lake.root}")
    return lake.path("registry")


def check_kind(kind: str) -> None:
    """Raise ConfigError (exit 2) unless ``kind`` is ``students``, ``cross`` or ``ctr``."""
    if kind not in REGISTRY_KINDS:
        raise ConfigError(f"registry kind {kind!r}: choose from {REGISTRY_KINDS}")


def registry_pointer(settings: Settings, kind: str = "students") -> str:
    """``registry/CHAMPION`` (students), ``registry/CROSS_LATEST`` (cross) or ``registry/CTR_CHAMPION`` (ctr)."""
    check_kind(kind)
    return f"{registry_root(settings)}/{REGISTRY_POINTERS[kind]}"


def champion_history_path(settings: Settings) -> str:
    """``registry/champion_history.jsonl``: one JSON line per champion switch (ConfigError on a non-local lake)."""
    return f"{registry_root(settings)}/champion_history.jsonl"


def registry_kind_dir(settings: Settings, kind: str = "students") -> str:
    """``registry/<students|cross>/``; ConfigError (exit 2) for another kind or a non-local lake."""
    check_kind(kind)
    return f"{registry_root(settings)}/{kind}"


def registry_version_dir(settings: Settings, version: str, kind: str = "students") -> str:
    """``registry/<kind>/<version>/``: the whole version (model/, metrics.json, onnx/, ...)."""
    check_kind(kind)
    if not version or "/" in version or version.startswith((".", "_")):
        raise ConfigError(f"bad version id {version!r}")
    return f"{registry_kind_dir(settings, kind)}/{version}"


def model_dir(settings: Settings, version: str, kind: str = "students") -> str:
    """``registry/<kind>/<version>/model/``: the sentence-transformers directory of a version."""
    return version_model_dir(registry_version_dir(settings, version, kind))


def onnx_dir(settings: Settings, version: str) -> str:
    """``registry/students/<version>/onnx/``: the exported towers (item/, keyphrase/, triton/, export.json)."""
    return f"{registry_version_dir(settings, version, 'students')}/{ONNX_SUBDIR}"


# ---- inside one registry version: functions of the version directory, so the trainers can write a temp
# directory before the atomic commit and readers can pass the final one ------------------------------
MODEL_SUBDIR = "model"
ONNX_SUBDIR = "onnx"
VERSION_FILES = {
    "train_config": "train_config.json",  # the training configuration (ds, dim, tasks, ...)
    "data": "data.json",                  # the training data snapshot
    "metrics": "metrics.json",            # held-out metrics (+ the evaluation's, added by `kp evaluate`)
    "promotion": "promotion.json",        # the promotion decision of `kp evaluate`
    "history": "history.json",            # per-epoch training history
    "curves": "curves.png",
    "calibration": "calibration.png",
    "card": "MODEL_CARD.md",
    "soft_labels": "soft_labels.parquet",  # cross only: its scores of every labelled pair (the students' teacher)
}


def version_file(version_dir, name: str) -> str:
    """``<version_dir>/<file>`` for ``name`` in ``VERSION_FILES`` (e.g. ``version_file(d, "metrics")``)."""
    if name not in VERSION_FILES:
        raise ConfigError(f"unknown registry version file {name!r}: choose from {sorted(VERSION_FILES)}")
    return f"{version_dir}/{VERSION_FILES[name]}"


def version_model_dir(version_dir) -> str:
    """``<version_dir>/model``: the saved model of a registry version directory (``model_dir`` by id)."""
    return f"{version_dir}/{MODEL_SUBDIR}"


# ---- embeddings, index, serving ------------------------------------------------------------------------
def embeddings_dir(settings: Settings, what: str, version: str) -> str:
    """``embeddings/<items|keyphrases>/model=<version>/`` (contract ``embeddings``)."""
    if what not in EMBEDDED:
        raise ConfigError(f"what must be one of {sorted(EMBEDDED)}, got {what!r}")
    return lake_of(settings).path("embeddings", what, f"model={version}")


def index_build_dir(settings: Settings, ds: str) -> str:
    """``serving/builds/ds=D/``: index.faiss, keyphrases.parquet (id map), index_meta.json."""
    return lake_of(settings).path("serving", "builds", ds=ds)


def serving_versions_root(settings: Settings) -> str:
    """``serving/versions/``: one directory per published bundle (plus hidden temp directories)."""
    return lake_of(settings).path("serving", "versions")


def serving_version_dir(settings: Settings, version_id: str) -> str:
    """``serving/versions/<version_id>/``: one published bundle (``manifest.json``, index, towers, recommendations)."""
    return f"{serving_versions_root(settings)}/{version_id}"


RECS_SUBDIR = "recommendations"


def bundle_tower_dir(bundle_dir, tower: str) -> str:
    """``<bundle>/onnx/<item|keyphrase>``: one ONNX tower of a published bundle."""
    return f"{bundle_dir}/{ONNX_SUBDIR}/{tower}"


def bundle_recommendations_dir(bundle_dir) -> str:
    """``<bundle>/recommendations``: the published top-K of a bundle directory (temp or final)."""
    return f"{bundle_dir}/{RECS_SUBDIR}"


def bundle_recommendations_file(bundle_dir) -> str:
    """``<bundle>/recommendations/part-00000.parquet``: the first file ``kp publish`` writes there (a new
    ``part-NNNNN.parquet`` after every ``spark.target_file_rows`` rows)."""
    return part_file(bundle_recommendations_dir(bundle_dir))


def published_recommendations_dir(settings: Settings, version_id: str) -> str:
    """``serving/versions/<id>/recommendations/`` (contract ``recommendations``)."""
    return bundle_recommendations_dir(serving_version_dir(settings, version_id))


def partition_stats_path(partition_dir) -> str:
    """``<partition>/_stats.json``: the stats ``kp ctr-labels`` writes inside its partitions (temp or final)."""
    return f"{partition_dir}/{PARTITION_STATS}"


def synth_world_meta_path(settings: Settings) -> str:
    """``synth/world.json``: the synthetic world's parameters (only the ``synthetic`` package reads it)."""
    return lake_of(settings).path("synth", SYNTH_WORLD_META)


def current_pointer(settings: Settings) -> str:
    """``serving/CURRENT``: the live published version id."""
    return lake_of(settings).path("serving", "CURRENT")


def bad_versions_path(settings: Settings) -> str:
    """``serving/BAD_VERSIONS.json``: ``{version: {marked_at, reason, ds, model_version}}`` of the published
    versions rolled back from (``kp rollback``): never a rollback target again."""
    return lake_of(settings).path("serving", "BAD_VERSIONS.json")


def serving_model_pin(settings: Settings, ds) -> str:
    """``runs/ds=D/_serving_model``: pointer to the student version whose towers day ``ds`` exports, embeds,
    indexes and publishes (written by ``kp export``), so a promotion during the run applies to the next run."""
    return f"{lake_of(settings).run_stats_dir(ds)}/_serving_model"
