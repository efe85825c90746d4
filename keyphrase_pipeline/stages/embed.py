"""Spark + ONNX Runtime batch inference: embed active items (or all keyphrases) with the champion's towers.

Incremental: a row is embedded again only when its tower input text changed (``text_hash`` = sha1 of
the text, compared with the previous snapshot of the SAME model version) or is new; a new model
version has no previous snapshot, so everything is embedded; ``full=True`` forces all. The output
``embeddings/<what>/model=<version>/`` is always a complete snapshot (unchanged rows carried over),
written aside and moved into place.

Texts the towers cannot tell apart are not embedded (they would all get one vector and be recommended
to each other at cosine 1): a null id (``null id``), a title or keyphrase blank under the text rule of
``keyphrase_pipeline.models.text`` (``empty text``: whitespace, zero-width, BOM or bidi characters only;
checked on every row with a Spark-side Python pass that also computes the hashes) and, among the rows
embedded now, one whose tokens under the tower's own tokenizer are all special/unknown (``unreadable
text``: emoji-only is all ``[UNK]``). Reused rows were checked when they were embedded; a snapshot
written before this check existed is cleaned by ``--full`` or the next model version. The rows go to
``quarantine/embed_<what>/ds=D`` with their ``reason``, counted in the run stats.

Vectors that are not vectors: after inference every row of the new snapshot, embedded now or reused, is
checked with a Spark SQL expression (the rule of ``keyphrase_pipeline.models.ann.vector_problems``): a NaN/inf
value (``non-finite vector``: a broken export) or an L2 norm of at most ``ZERO_NORM`` (``zero vector``) sends
the row to the same quarantine (with its ``embedding``) instead of the snapshot, counted in
``quarantined_by_reason`` and ``vectors_quarantined``. The inference output is persisted (memory and disk)
between this check and the write, so each row is embedded once.

Inference runs in ``mapInPandas``: each Python worker opens one ONNX Runtime session per tower
(cached in ``keyphrase_pipeline.models.onnx_tower``) and embeds its rows in batches of ``serve.embed_batch_size``, texts
sorted by length within each Arrow batch to cut padding; each session uses ``spark.task.cpus``
threads, so ``local[N]`` or a cluster's executors run N sessions side by side without
oversubscribing cores (tasks x threads = cores). The rows to embed are split into one partition per core
(fewer when there are fewer than ``serve.embed_batch_size`` rows per core); the output files are sized
after inference by a shuffle, never by ``coalesce``, which would fold the inference into as many tasks as
files. The run stats say how many inference tasks and distinct Python worker processes ran
(``inference_tasks``, ``inference_workers``). On a cluster the lake (and the exported towers) must be on storage every
executor can read; a non-local ONNX directory is shipped with ``SparkContext.addFile``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts.registry import is_exported
from keyphrase_pipeline.artifacts.serving import serving_model
from keyphrase_pipeline.core.contracts import check_spark_schema, spark_schema
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, is_local, spark_uri
from keyphrase_pipeline.core.layout import EMBEDDED, embeddings_dir, onnx_dir
from keyphrase_pipeline.core.spark import get_spark, read_input, reraise_executor_error
from keyphrase_pipeline.models.ann import NON_FINITE_VECTOR, ZERO_NORM, ZERO_VECTOR
from keyphrase_pipeline.models.devices import check_wheel_set, onnx_providers, provider_names
from keyphrase_pipeline.models.onnx_tower import get_tower
from keyphrase_pipeline.models.text import clean, item_text, keyphrase_text, tokenizer_at, unreadable_mask

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

_SOURCE = {"items": ("catalog", "item_id"), "keyphrases": ("keyphrases", "keyphrase_id")}
# quarantine reasons (``quarantine/embed_<what>/ds=D``)
NULL_ID, EMPTY_TEXT, UNREADABLE_TEXT = "null id", "empty text", "unreadable text"


def input_hash(text: str) -> str:
    """sha1 hex of one tower input text (stored as the embeddings' ``text_hash`` column)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _texts_fn(what: str):
    """mapInPandas function: source rows -> (id, text, text_hash, check, blank) using the shared text formats;
    ``check`` is the field that must be readable on its own (the title for items: ``title [SEP] category``
    with a blank title is not blank, yet every such item of a category would get the same vector)."""

    def fn(batches):
        import pandas as pd

        for pdf in batches:
            if what == "items":
                ids = pdf["item_id"]
                texts = [item_text(t, c) for t, c in zip(pdf["title"], pdf["category"])]
                check = [clean(t) for t in pdf["title"]]
            else:
                ids = pdf["keyphrase_id"]
                texts = [keyphrase_text(t) for t in pdf["text"]]
                check = texts
            yield pd.DataFrame({"id": ids.astype("Int64"), "text": texts,
                                "text_hash": [input_hash(t) for t in texts], "check": check,
                                "blank": [not c for c in check]})

    return fn


def _tower_path(tower_dir: str, ship: bool) -> str:
    """Where an executor finds the tower directory (the copy ``SparkContext.addFile`` shipped, when shipped)."""
    if ship:
        from pyspark import SparkFiles

        return SparkFiles.get(tower_dir.rstrip("/").rsplit("/", 1)[-1])
    return tower_dir


def _readable_fn(tower_dir: str, ship: bool):
    """mapInPandas function: (id, text, text_hash, check) -> the same plus ``reason``: ``unreadable text`` where
    every token of ``check`` is special/unknown under the tower's own tokenizer (emoji-only: all ``[UNK]``)."""

    def fn(batches):

        tokenizer = tokenizer_at(_tower_path(tower_dir, ship))
        for pdf in batches:
            bad = unreadable_mask(pdf["check"].tolist(), tokenizer)
            yield pdf.assign(reason=[UNREADABLE_TEXT if b else None for b in bad])

    return fn


class InferenceLog:
    """Spark ``AccumulatorParam`` (duck-typed, so importing this module does not import pyspark) of who ran
    inference: ``{(pid, partition, providers): (rows, seconds)}`` merged over tasks.

    Each inference task adds one entry keyed by its Python worker's process id, its partition id and the
    ONNX Runtime providers its session actually holds (a tuple of names, in priority order), so the driver
    can tell how many tasks and how many distinct Python worker processes embedded rows (the
    ``inference_tasks`` / ``inference_workers`` run stats), their summed inference seconds, and on which
    providers the executors ran (``executor_providers``: a worker whose ``auto`` found no CUDA shows up there,
    not only in its own log)."""

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):
        for key, (rows, secs) in b.items():
            old = a.get(key, (0, 0.0))
            a[key] = (old[0] + rows, old[1] + secs)
        return a


def _embed_fn(tower_dir: str, model_file: str, batch_size: int, threads: int, device: str, version: str,
              ship: bool, ds: str, tracker=None):
    """mapInPandas function: (id, text, text_hash) -> embeddings contract, one cached session per worker
    (``threads`` intra-op threads); when ``tracker`` (an ``InferenceLog`` accumulator) is given, each task
    adds ``{(pid, partition, session providers): (rows, seconds)}`` to it."""

    def fn(batches):
        import pandas as pd
        from pyspark import TaskContext

        tower = get_tower(_tower_path(tower_dir, ship), model_file, device=device, threads=threads)
        rows, secs = 0, 0.0
        for pdf in batches:
            t0 = time.perf_counter()
            vecs = tower.embed(pdf["text"].tolist(), batch_size=batch_size)
            secs += time.perf_counter() - t0
            rows += len(pdf)
            yield pd.DataFrame({"id": pdf["id"], "text_hash": pdf["text_hash"], "embedding": list(vecs),
                                "model_version": version, "embedded_ds": ds})
        if tracker is not None and rows:
            ctx = TaskContext.get()
            key = (os.getpid(), ctx.partitionId() if ctx else -1, tuple(tower.session.get_providers()))
            tracker.add({key: (rows, secs)})

    return fn


def _tower(settings: Settings, version: str, what: str) -> tuple[str, str, dict]:

    rec = is_exported(settings, version)
    if not rec:
        raise DataError(f"model {version} is not exported for serve.dim={settings.serve.dim}: run `kp export` first")
    if rec["dim"] != settings.serve.dim:
        raise DataError(f"dimension mismatch: export of {version} is {rec['dim']}-d, serve.dim={settings.serve.dim}")
    return f"{onnx_dir(settings, version)}/{EMBEDDED[what]}", rec.get("model_file", "model.onnx"), rec


def _source_texts(spark, lake: Lake, ds: str, what: str):
    """(cached Spark frame of (id, text, text_hash, check) to embed, rows, Spark frame of the bad rows with a
    ``reason``, source path): tower input texts of the active items or of the keyphrases. Bad: ``null id``;
    ``empty text``, the title (items) or keyphrase blank under ``keyphrase_pipeline.models.text.clean``
    (whitespace, zero-width, BOM or bidi characters only). DataError when the input is missing."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    contract, id_col = _SOURCE[what]
    src = lake.path(contract, ds=ds) if what == "items" else lake.path(contract)
    if not lake.exists(src):
        raise DataError(f"missing input {src}")

    df = read_input(spark, lake, [src], contract, f"{what} input")  # each file checked, conformed where lossless
    check_spark_schema(df.schema, contract, where=src)
    if what == "items":
        df = df.where(F.col("active"))
        df = df.select("item_id", "title", "category")
    else:
        df = df.select("keyphrase_id", "text")

    text_schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("text", T.StringType()),
                                T.StructField("text_hash", T.StringType()), T.StructField("check", T.StringType()),
                                T.StructField("blank", T.BooleanType())])
    flagged = (df.mapInPandas(_texts_fn(what), text_schema)
               .withColumn("reason", F.when(F.col("id").isNull(), F.lit(NULL_ID))
                           .when(F.col("blank"), F.lit(EMPTY_TEXT)))
               .drop("blank").persist(StorageLevel.MEMORY_AND_DISK))
    bad = flagged.where(F.col("reason").isNotNull())
    texts = flagged.where(F.col("reason").isNull()).drop("reason").dropDuplicates(["id"]).cache()
    total = texts.count()
    return texts, total, bad, flagged, src


def _write_quarantine(lake: Lake, ds: str, what: str, bad) -> dict[str, int]:
    """Write the bad rows (id, text, text_hash, check, reason; ``embedding`` for bad vectors, null otherwise) to
    ``quarantine/embed_<what>/ds=D`` (replacing an earlier run's; a stale one is emptied when nothing is bad);
    return {reason: rows}."""
    from pyspark.sql import functions as F

    bad = bad.persist()
    by_reason = {r["reason"]: int(r["n"]) for r in bad.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    qpath = lake.path("quarantine", f"embed_{what}", ds=ds)
    if by_reason:
        with atomic_dir(qpath) as tmp:
            bad.coalesce(1).write.parquet(spark_uri(tmp))
        log.warning("%d %s rows quarantined %s at %s", sum(by_reason.values()), what, by_reason, qpath)
    elif lake.exists(qpath):
        with atomic_dir(qpath):
            pass
    bad.unpersist()
    return by_reason


def _split_reusable(spark, lake: Lake, texts, target: str, version: str, full: bool):
    """(rows whose text is unchanged since the stored embeddings of ``version``, with them; rows to embed now;
    whether stored embeddings were used). With ``full`` every row is embedded again."""
    from pyspark.sql import functions as F

    prev = None
    if not full and lake.exists(target):
        prev = spark.read.parquet(spark_uri(target))
        check_spark_schema(prev.schema, "embeddings", where=target)
        prev_ds = F.col("embedded_ds") if "embedded_ds" in prev.columns else F.lit(None).cast("string")
        prev = prev.where(F.col("model_version") == version).select(
            "id", F.col("text_hash").alias("prev_hash"), "embedding", prev_ds.alias("embedded_ds"))
    if prev is None:
        return None, texts, False
    joined = texts.join(prev, "id", "left")
    same = F.col("prev_hash").isNotNull() & (F.col("prev_hash") == F.col("text_hash"))
    reused = joined.where(same).select("id", "text_hash", "embedding", F.lit(version).alias("model_version"),
                                       "embedded_ds")
    return reused, joined.where(~same).select("id", "text", "text_hash", "check"), True


def _vector_reason():
    """Spark Column: ``non-finite vector`` when a value of ``embedding`` is NaN, +-inf or null, ``zero vector`` when
    its L2 norm is at most ``ZERO_NORM`` (sum of squares in double), else null; the rule of
    ``keyphrase_pipeline.models.ann.vector_problems``, as Spark SQL higher-order functions (no Python UDF)."""
    from pyspark.sql import functions as F

    e = F.col("embedding")
    non_finite = F.exists(e, lambda x: x.isNull() | F.isnan(x) | (F.abs(x.cast("double")) == F.lit(float("inf"))))
    sq = F.aggregate(e, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x.cast("double"))
    return F.when(non_finite, F.lit(NON_FINITE_VECTOR)).when(sq <= ZERO_NORM ** 2, F.lit(ZERO_VECTOR))


def _embed(settings: Settings, spark, todo, reused, n_todo: int, tower_dir: str, model_file: str, version: str, ds: str):
    """Embed ``todo`` with the ONNX tower on the executors, add the reused rows and check every vector.

    Returns (frame, counts, inference stats). ``frame``: persisted (memory and disk, so nothing is embedded
    twice), the ``embeddings`` contract columns + ``embedded_ds`` + ``fresh`` (bool: embedded now) + ``reason``
    (``_vector_reason``: null for a usable vector); ``counts``: ``{(reason or None, fresh): rows}``, the action
    that runs the inference.

    Parallelism: ``todo`` is split into ``min(defaultParallelism, ceil(rows / serve.embed_batch_size))``
    partitions, one inference task each, so every core Spark was given runs one ONNX Runtime session of
    ``spark.task.cpus`` threads (tasks x threads = cores). Inference stats: tasks, distinct Python worker
    processes, threads per session, summed inference seconds, and ``executor_providers``
    (``{"CUDAExecutionProvider+CPUExecutionProvider": rows, ...}``: the providers the executors' sessions held,
    by rows embedded)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    ship = not is_local(tower_dir)
    threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    parts = max(1, min(spark.sparkContext.defaultParallelism, -(-n_todo // settings.serve.embed_batch_size)))
    # contract columns + embedded_ds (the day a row was last embedded; lets `kp recommend --changed-only` find them)
    out_schema = T.StructType(spark_schema("embeddings").fields + [T.StructField("embedded_ds", T.StringType())])
    tracker = spark.sparkContext.accumulator({}, InferenceLog())
    fresh = todo.repartition(parts).mapInPandas(
        _embed_fn(tower_dir, model_file, settings.serve.embed_batch_size, threads, settings.serve.device, version, ship,
                  ds, tracker),
        out_schema).withColumn("fresh", F.lit(True))
    result = fresh if reused is None else fresh.unionByName(reused.withColumn("fresh", F.lit(False)))
    result = result.withColumn("reason", _vector_reason()).persist(StorageLevel.MEMORY_AND_DISK)
    counts = {(r["reason"], bool(r["fresh"])): int(r["n"])
              for r in result.groupBy("reason", "fresh").agg(F.count("*").alias("n")).collect()}
    done = tracker.value
    on = {}
    for (_pid, _part, providers), (rows, _secs) in done.items():
        on["+".join(providers)] = on.get("+".join(providers), 0) + int(rows)
    return result, counts, {"inference_partitions": int(parts),
                            "inference_tasks": len({part for _pid, part, _on in done}),
                            "inference_workers": len({pid for pid, _part, _on in done}), "session_threads": threads,
                            "inference_seconds": round(sum(secs for _rows, secs in done.values()), 3),
                            "executor_providers": on}


def _write_snapshot(settings: Settings, spark, good, total: int, target: str) -> None:
    """Write ``good`` (contract ``embeddings`` + ``embedded_ds``) to ``target`` atomically, in files of about
    ``spark.target_file_rows`` rows, and check every vector has ``serve.dim`` values (DataError).

    The files are sized by a shuffle (``repartition``), never by ``coalesce``, which would fold the work before
    it into as many tasks as files."""
    from pyspark.sql import functions as F

    files = max(1, -(-total // settings.spark.target_file_rows))
    with atomic_dir(target) as tmp:
        good.repartition(files).write.parquet(spark_uri(tmp))

    written = spark.read.parquet(spark_uri(target))
    check_spark_schema(written.schema, "embeddings", where=target)
    dims = written.select(F.size("embedding").alias("d")).distinct().collect()
    if [r.d for r in dims] != [settings.serve.dim]:
        raise DataError(f"dimension mismatch in {target}: embedding sizes {[r.d for r in dims]}, serve.dim={settings.serve.dim}")


def run(settings: Settings, ds: str, what: str, full: bool = False, spark=None, version: str | None = None) -> dict:
    """Embed ``what`` ('items' | 'keyphrases') for day ``ds``; return rows total / embedded now / reused.

    Steps: the model version and its ONNX tower, the source texts (rows with a null id or a blank title /
    keyphrase quarantined), the rows whose text is unchanged (reused), the others checked with the tower's
    tokenizer (``unreadable text``: all tokens special/unknown, e.g. emoji-only, quarantined) and embedded
    on the executors; then every vector, reused or new, is checked (``non-finite vector``: a NaN/inf value;
    ``zero vector``: all zeros; quarantined with the ``embedding``); every bad row goes to
    ``quarantine/embed_<what>/ds=D`` with its ``reason``, the good ones to ``embeddings/<what>/model=<version>/``
    (``keyphrase_pipeline.core.layout.embeddings_dir``).

    Output rows: ``id`` (int64), ``text_hash`` (sha1 hex of the tower input), ``embedding`` (``serve.dim`` float32,
    L2-normalised, finite, not zero), ``model_version``, ``embedded_ds`` (the day a row was last embedded).

    Stats: ``rows_total`` (rows written), ``embedded_now`` / ``reused`` (of them, embedded by this run / carried
    over), ``quarantined``, ``quarantined_by_reason`` (all reasons), ``vectors_quarantined`` (non-finite or zero
    vectors, embedded now or reused), ``full``, ``model_file`` and the inference stats.

    Raises:
        ConfigError: (exit 2) unknown ``what``; ``ds`` not a date; the lake not local (registry).
        DataError: (exit 3) no model (``version``, else the one the day's export pinned, else the champion) or its
        model missing; no ONNX export at
            ``serve.dim``; ``raw/catalog/ds=D`` or ``raw/keyphrases`` missing; nothing left to embed after
            quarantine (blank or unreadable texts, then NaN/inf or zero vectors; the quarantine is written
            first); written vectors not ``serve.dim`` long.
        SchemaError: (exit 3) the input or the previous snapshot breaks its contract.

    Spark and executor-side ONNX Runtime failures are not KPErrors (exit 1)."""

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if what not in _SOURCE:
        raise ConfigError(f"--what must be items or keyphrases, got {what!r}")
    ds = ds_str(ds)
    check_wheel_set()  # one build of ONNX Runtime and FAISS: never a mix of CPU and GPU wheels
    providers = onnx_providers(settings.serve.device)  # a cuda that is not there fails here, not on the executors
    lake = Lake.from_settings(settings)
    version = serving_model(settings, ds, version)  # pinned by the day's export
    tower_dir, model_file, _rec = _tower(settings, version, what)
    spark = spark or get_spark(settings, f"embed-{what}")

    ship = not is_local(tower_dir)
    if ship:
        spark.sparkContext.addFile(tower_dir, recursive=True)
    texts, total, bad, flagged, src = _source_texts(spark, lake, ds, what)
    target = embeddings_dir(settings, what, version)
    reused, todo, had_previous = _split_reusable(spark, lake, texts, target, version, full)
    # the rows to embed now are checked with the tower's tokenizer (reused rows were, when first embedded)
    checked = todo.mapInPandas(_readable_fn(tower_dir, ship), T.StructType(
        todo.schema.fields + [T.StructField("reason", T.StringType())])).persist()
    text_bad = bad.unionByName(checked.where(F.col("reason").isNotNull()))
    todo = checked.where(F.col("reason").isNull()).select("id", "text", "text_hash")
    n_todo = todo.count()
    total -= checked.where(F.col("reason").isNotNull()).count()
    if total == 0:
        by_reason = _write_quarantine(lake, ds, what, text_bad)
        raise DataError(f"no {what} to embed in {src} (quarantined: {by_reason})")
    t0 = time.perf_counter()
    try:
        vectors, counts, inference = _embed(settings, spark, todo, reused, n_todo, tower_dir, model_file, version, ds)
    except Exception as exc:  # an executor whose session did not get CUDA raised ConfigError there: exit 2 here too
        reraise_executor_error(exc)
        raise
    # rows whose vector is not a vector join the quarantine, with their text and the embedding as found
    bad_vectors = (vectors.where(F.col("reason").isNotNull()).select("id", "text_hash", "embedding", "reason")
                   .join(texts.select("id", "text", "check"), "id", "left"))
    by_reason = _write_quarantine(lake, ds, what, text_bad.unionByName(bad_vectors, allowMissingColumns=True))
    flagged.unpersist()
    good_now = counts.get((None, True), 0)
    total = good_now + counts.get((None, False), 0)
    n_vec_bad = sum(n for (reason, _fresh), n in counts.items() if reason is not None)
    if total == 0:
        raise DataError(f"no {what} left to write to {target}: every vector is NaN/inf or zero (quarantined: "
                        f"{by_reason}; see {lake.path('quarantine', f'embed_{what}', ds=ds)}): check the export")
    _write_snapshot(settings, spark, vectors.where(F.col("reason").isNull()).drop("fresh", "reason"), total, target)
    inference["write_seconds"] = round(time.perf_counter() - t0, 3)
    vectors.unpersist()
    checked.unpersist()
    texts.unpersist()
    n_bad = sum(by_reason.values())

    stats = {"what": what, "model_version": version, "rows_total": int(total), "embedded_now": int(good_now),
             "reused": int(total - good_now), "quarantined": int(n_bad), "quarantined_by_reason": by_reason,
             "vectors_quarantined": int(n_vec_bad),
             "full": bool(full or not had_previous), "model_file": model_file, "onnx_providers": provider_names(providers),
             **inference}
    lake.write_run_stats(ds, f"embed_{what}", stats)
    if n_vec_bad:
        log.warning("%s: %d vector(s) NaN/inf or zero quarantined (%s)", what, n_vec_bad, by_reason)
    log.info("embedded %s: %d total, %d now, %d reused (model %s)", what, total, good_now, total - good_now, version)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")
    parser.add_argument("--what", required=True, choices=sorted(_SOURCE), help="items or keyphrases")
    parser.add_argument("--full", action="store_true", help="embed everything, ignoring the previous snapshot")


def main(settings: Settings, args) -> int:
    """``kp embed``: ``run`` for ``--ds`` and ``--what`` (``--full``: embed everything); prints the stats as one
    JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds, args.what, full=args.full)))
    return 0
