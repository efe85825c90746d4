"""Spark + ONNX Runtime batch inference: embed active items (or all keyphrases) with the champion's towers.

Incremental: a row is embedded again only when its tower input text changed (``text_hash`` = sha1 of
the text, compared with the previous snapshot of the SAME model version) or is new; a new model
version has no previous snapshot, so everything is embedded; ``full=True`` forces all. The output
``embeddings/<what>/model=<version>/`` is always a complete snapshot (unchanged rows carried over),
written aside and moved into place.

Inference runs in ``mapInPandas``: each Python worker opens one ONNX Runtime session per tower
(cached in ``keyphrase_pipeline.models.onnx_tower``) and embeds its rows in batches of ``serve.embed_batch_size``, texts
sorted by length within each Arrow batch to cut padding; each session uses ``spark.task.cpus``
threads, so ``local[N]`` or a cluster's executors run N sessions side by side without
oversubscribing cores. On a cluster the lake (and the exported towers) must be on storage every
executor can read; a non-local ONNX directory is shipped with ``SparkContext.addFile``.
"""

from __future__ import annotations

import hashlib
import json
import logging

from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, is_local, spark_uri

log = logging.getLogger(__name__)

_SOURCE = {"items": ("catalog", "item_id"), "keyphrases": ("keyphrases", "keyphrase_id")}


def input_hash(text: str) -> str:
    """sha1 hex of one tower input text (stored as the embeddings' ``text_hash`` column)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _texts_fn(what: str):
    """mapInPandas function: source rows -> (id, text, text_hash) using the shared text formats."""

    def fn(batches):
        import pandas as pd

        from keyphrase_pipeline.models.text import item_text, keyphrase_text

        for pdf in batches:
            if what == "items":
                ids = pdf["item_id"]
                texts = [item_text(t, c) for t, c in zip(pdf["title"], pdf["category"])]
            else:
                ids = pdf["keyphrase_id"]
                texts = [keyphrase_text(t) for t in pdf["text"]]
            yield pd.DataFrame({"id": ids.astype("Int64"), "text": texts,
                                "text_hash": [input_hash(t) for t in texts]})

    return fn


def _embed_fn(tower_dir: str, model_file: str, batch_size: int, threads: int, device: str, version: str,
              ship: bool, ds: str):
    """mapInPandas function: (id, text, text_hash) -> embeddings contract, one cached session per worker."""

    def fn(batches):
        import pandas as pd

        from keyphrase_pipeline.models.onnx_tower import get_tower

        path = tower_dir
        if ship:
            from pyspark import SparkFiles

            path = SparkFiles.get(tower_dir.rstrip("/").rsplit("/", 1)[-1])
        tower = get_tower(path, model_file, device=device, threads=threads)
        for pdf in batches:
            vecs = tower.embed(pdf["text"].tolist(), batch_size=batch_size)
            yield pd.DataFrame({"id": pdf["id"], "text_hash": pdf["text_hash"], "embedding": list(vecs),
                                "model_version": version, "embedded_ds": ds})

    return fn


def _tower(settings, version: str, what: str) -> tuple[str, str, dict]:
    from keyphrase_pipeline.jobs.export import is_exported
    from keyphrase_pipeline.core.layout import EMBEDDED, onnx_dir

    rec = is_exported(settings, version)
    if not rec:
        raise DataError(f"model {version} is not exported for serve.dim={settings.serve.dim}: run `kp export` first")
    if rec["dim"] != settings.serve.dim:
        raise DataError(f"dimension mismatch: export of {version} is {rec['dim']}-d, serve.dim={settings.serve.dim}")
    return f"{onnx_dir(settings, version)}/{EMBEDDED[what]}", rec.get("model_file", "model.onnx"), rec


def _source_texts(spark, lake: Lake, ds: str, what: str):
    """(cached Spark frame of (id, text, text_hash) to embed, rows, rows quarantined, source path): tower input
    texts of the active items or of the keyphrases; rows with a null id or an empty text go to
    ``quarantine/embed_<what>/ds=D``. DataError when the input is missing or nothing is left."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from keyphrase_pipeline.core.contracts import check_spark_schema

    contract, id_col = _SOURCE[what]
    src = lake.path(contract, ds=ds) if what == "items" else lake.path(contract)
    if not lake.exists(src):
        raise DataError(f"missing input {src}")
    df = spark.read.parquet(spark_uri(src))
    check_spark_schema(df.schema, contract, where=src)
    if what == "items":
        df = df.where(F.col("active"))
        df = df.select("item_id", "title", "category")
    else:
        df = df.select("keyphrase_id", "text")

    text_schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("text", T.StringType()),
                                T.StructField("text_hash", T.StringType())])
    texts = df.mapInPandas(_texts_fn(what), text_schema)
    bad_cond = F.col("id").isNull() | (F.length("text") == 0)
    bad = texts.where(bad_cond)
    n_bad = bad.count()
    if n_bad:
        qpath = lake.path("quarantine", f"embed_{what}", ds=ds)
        with atomic_dir(qpath) as tmp:
            bad.withColumn("reason", F.when(F.col("id").isNull(), F.lit("null id")).otherwise(F.lit("empty text"))) \
                .write.parquet(spark_uri(tmp))
        log.warning("%d %s rows quarantined (null id or empty text) at %s", n_bad, what, qpath)
    texts = texts.where(~bad_cond).dropDuplicates(["id"]).cache()
    total = texts.count()
    if total == 0:
        raise DataError(f"no {what} to embed in {src}")
    return texts, total, n_bad, src


def _split_reusable(spark, lake: Lake, texts, target: str, version: str, full: bool):
    """(rows whose text is unchanged since the stored embeddings of ``version``, with them; rows to embed now;
    whether stored embeddings were used). With ``full`` every row is embedded again."""
    from pyspark.sql import functions as F

    from keyphrase_pipeline.core.contracts import check_spark_schema

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
    return reused, joined.where(~same).select("id", "text", "text_hash"), True


def _embed_and_write(settings, spark, todo, reused, n_todo: int, total: int, target: str, tower_dir: str,
                     model_file: str, version: str, ds: str) -> None:
    """Embed ``todo`` with the ONNX tower on the executors, add the reused rows, write ``target`` atomically
    (contract ``embeddings`` + ``embedded_ds``) and check every vector has ``serve.dim`` values (DataError)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from keyphrase_pipeline.core.contracts import check_spark_schema, spark_schema

    ship = not is_local(tower_dir)
    if ship:
        spark.sparkContext.addFile(tower_dir, recursive=True)
    threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    parts = max(1, min(spark.sparkContext.defaultParallelism, -(-n_todo // settings.serve.embed_batch_size)))
    # contract columns + embedded_ds (the day a row was last embedded; lets `kp recommend --changed-only` find them)
    out_schema = T.StructType(spark_schema("embeddings").fields + [T.StructField("embedded_ds", T.StringType())])
    fresh = todo.repartition(parts).mapInPandas(
        _embed_fn(tower_dir, model_file, settings.serve.embed_batch_size, threads, settings.serve.device, version, ship, ds),
        out_schema)
    result = fresh if reused is None else fresh.unionByName(reused)
    files = max(1, -(-total // settings.spark.target_file_rows))
    with atomic_dir(target) as tmp:
        result.coalesce(files).write.parquet(spark_uri(tmp))

    written = spark.read.parquet(spark_uri(target))
    check_spark_schema(written.schema, "embeddings", where=target)
    dims = written.select(F.size("embedding").alias("d")).distinct().collect()
    if [r.d for r in dims] != [settings.serve.dim]:
        raise DataError(f"dimension mismatch in {target}: embedding sizes {[r.d for r in dims]}, serve.dim={settings.serve.dim}")


def run(settings, ds: str, what: str, full: bool = False, spark=None, version: str | None = None) -> dict:
    """Embed ``what`` ('items' | 'keyphrases') for day ``ds``; return rows total / embedded now / reused.

    Steps: the model version and its ONNX tower, the source texts (bad rows quarantined), the rows whose
    text is unchanged (reused), the others embedded on the executors, all written to
    ``embeddings/<what>/model=<version>/`` (``keyphrase_pipeline.core.layout.embeddings_dir``).

    Output rows: ``id`` (int64), ``text_hash`` (sha1 hex of the tower input), ``embedding`` (``serve.dim`` float32,
    L2-normalised), ``model_version``, ``embedded_ds`` (the day a row was last embedded).

    Raises:
        ConfigError: (exit 2) unknown ``what``; ``ds`` not a date; the lake not local (registry).
        DataError: (exit 3) no champion (and no ``version``) or its model missing; no ONNX export at
            ``serve.dim``; ``raw/catalog/ds=D`` or ``raw/keyphrases`` missing; nothing left to embed after
            quarantine; written vectors not ``serve.dim`` long.
        SchemaError: (exit 3) the input or the previous snapshot breaks its contract.

    Spark and executor-side ONNX Runtime failures are not KPErrors (exit 1)."""
    from keyphrase_pipeline.jobs.serving import require_version
    from keyphrase_pipeline.core.layout import embeddings_dir
    from keyphrase_pipeline.core.spark import get_spark

    if what not in _SOURCE:
        raise ConfigError(f"--what must be items or keyphrases, got {what!r}")
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    version = require_version(settings, version)
    tower_dir, model_file, _rec = _tower(settings, version, what)
    spark = spark or get_spark(settings, f"embed-{what}")

    texts, total, n_bad, _src = _source_texts(spark, lake, ds, what)
    target = embeddings_dir(settings, what, version)
    reused, todo, had_previous = _split_reusable(spark, lake, texts, target, version, full)
    n_todo = todo.count()
    _embed_and_write(settings, spark, todo, reused, n_todo, total, target, tower_dir, model_file, version, ds)
    texts.unpersist()

    stats = {"what": what, "model_version": version, "rows_total": int(total), "embedded_now": int(n_todo),
             "reused": int(total - n_todo), "quarantined": int(n_bad), "full": bool(full or not had_previous),
             "model_file": model_file}
    lake.write_run_stats(ds, f"embed_{what}", stats)
    log.info("embedded %s: %d total, %d now, %d reused (model %s)", what, total, n_todo, total - n_todo, version)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")
    parser.add_argument("--what", required=True, choices=sorted(_SOURCE), help="items or keyphrases")
    parser.add_argument("--full", action="store_true", help="embed everything, ignoring the previous snapshot")


def main(settings, args) -> int:
    """``kp embed``: ``run`` for ``--ds`` and ``--what`` (``--full``: embed everything); prints the stats as one
    JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.core.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds, args.what, full=args.full)))
    return 0
