"""Stage 2a: choose the day's (item, keyphrase) pairs for the LLM judge, minus those already labelled.

Four sources, mixed in the proportions ``pairs.share_*`` within ``pairs.daily_budget``:

* ``ctr_positive``   — pairs with a CTR label of 1 in ``ctr_labels/ds=D`` (clicks the judge should confirm);
* ``unexposed_topk`` — the published model's top-K recommendations (``serving/CURRENT`` ->
  ``serving/versions/<id>/recommendations``) that had no impression in the CTR window: the pairs
  click data can say nothing about, which is where LLM labels add most. Skipped (its share given to
  the others) while nothing is published;
* ``hard_negative``  — keyphrases that are CTR-positive for OTHER items of the same category, share a
  word with this item's title, and are not positive for this item (same category, wrong attributes);
  bounded for large catalogs: the 50 keyphrases positive for most items of each category, paired with a
  hash sample of items (20x the budget);
* ``random``         — random (item, keyphrase) pairs (hash-sampled, so deterministic).

Item text comes from the active items of ``raw/catalog/ds=D``, keyphrase text from ``raw/keyphrases``;
rows with a null id or a title/keyphrase that is blank under the text rule (``keyphrase_pipeline.models.text.clean``:
whitespace, zero-width, BOM or bidi characters only) are quarantined to ``quarantine/catalog/ds=D`` and
``quarantine/keyphrases/ds=D`` and counted in the run stats. The pairs keep the raw text (the judge prompt
normalises it; ``pair_key`` is unchanged by the rule, so nothing judged before is paid for again).
Each pair gets ``pair_key`` (``labels.store.pair_key``: sha1 of the fields' own sha1s, judge identity and
prompt version included); a Spark
left-anti join against the label store's earlier days removes every pair already judged, so no pair
is paid for twice (pairs staged earlier the same day are skipped by the labeller), and a rerun of the
day selects the same pairs. A pair found by several sources keeps the first in the order
above. The selection is deterministic for (ds, pairs.seed): sampling and ranking use xxhash64, not
``rand()``. Output: shards of near-equal size (``pairs.shard_size``) at ``pairs/ds=D/shard=NNNNN/``
(contract ``pairs``) with ``_MANIFEST.json`` (run id, shards, counts), the whole ``pairs/ds=D``
replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING

import pandas as pd

from keyphrase_pipeline.artifacts import serving
from keyphrase_pipeline.core import conform, layout
from keyphrase_pipeline.core.contracts import arrow_schema, check_spark_schema
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, read_parquet, spark_uri
from keyphrase_pipeline.core.spark import get_spark
from keyphrase_pipeline.labels.judges.base import judge_model_id
from keyphrase_pipeline.labels.store import ensure_pair_keys_current, pair_key_column, read_manifest
from keyphrase_pipeline.models.text import spark_is_blank

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

SOURCES = ("ctr_positive", "unexposed_topk", "hard_negative", "random")
RANDOM_OVERSAMPLE = 1.5
HARD_KP_PER_CATEGORY = 50
HARD_ITEM_OVERSAMPLE = 20


def shares(settings: Settings) -> dict[str, float]:
    """Source -> relative weight from ``settings.pairs.share_*`` (weights, not required to sum to 1)."""
    p = settings.pairs
    return {"ctr_positive": p.share_ctr_positive, "unexposed_topk": p.share_unexposed_topk,
            "hard_negative": p.share_hard_negative, "random": p.share_random}


def allocate(budget: int, share: dict[str, float], available: dict[str, int]) -> dict[str, int]:
    """Split ``budget`` over sources in proportion to ``share``; a source short of pairs gives the rest
    of its quota to the others (still in proportion). Never exceeds what a source has.

    Returns source -> number of pairs (int >= 0) for every key of ``share``; the quotas sum to
    ``min(budget, total available over sources with a positive share)``."""
    quotas = {s: 0 for s in share}
    remaining = int(budget)
    active = [s for s in SOURCES if s in share and share[s] > 0 and available.get(s, 0) > 0]
    while remaining > 0 and active:
        total = sum(share[s] for s in active)
        give = {s: min(available[s] - quotas[s], int(remaining * share[s] / total)) for s in active}
        if sum(give.values()) == 0:  # only rounding leftovers: one each, largest share first
            for s in sorted(active, key=lambda s: (-share[s], SOURCES.index(s))):
                if remaining and quotas[s] < available[s]:
                    quotas[s] += 1
                    remaining -= 1
        else:
            for s, g in give.items():
                quotas[s] += g
                remaining -= g
        active = [s for s in active if quotas[s] < available[s]]
    return quotas


def _tokens(col):
    from pyspark.sql import functions as F

    return F.filter(F.split(F.lower(col), r"[^\p{L}\p{N}]+"), lambda t: F.length(t) > 1)


def _read(spark, lake: Lake, path: str, contract: str):
    if not lake.exists(path):
        raise DataError(f"missing {contract} at {path}")

    if contract in conform.INPUT_CONTRACTS:  # other tools' files: each checked, conformed where lossless
        from keyphrase_pipeline.core.spark import read_input

        df = read_input(spark, lake, [path], contract, contract)
        check_spark_schema(df.schema, contract, where=path)
        return df
    df = spark.read.parquet(path if "://" in path else f"file://{path}")
    check_spark_schema(df.schema, contract, where=path)
    return df


def _published_recommendations(spark, lake: Lake, ds: str):
    """(the recommendations of ``serving.version_before(ds)``: CURRENT if built before ``ds``, else the newest
    version built before it; that version), or (None, None) when none is."""

    version = serving.version_before(lake, ds)
    if not version:
        return None, None
    path = serving.published_recommendations_path(lake, version)
    if not lake.exists(path):
        log.warning("published version %s has no %s: no unexposed_topk pairs today", version, path)
        return None, version
    return _read(spark, lake, path, "recommendations"), version


def _labelled_keys(spark, lake: Lake, ds: str):
    """pair_keys stored on days BEFORE ``ds``, as one Spark frame (or None).

    Only earlier days count, so a rerun of ``ds`` selects exactly what its first run selected (same
    shards, same ``run_id``): the labeller then skips the pairs it already staged for the day and the
    merge rewrites the same partition. Pairs staged today are never judged twice either way, because
    ``keyphrase_pipeline.stages.llm_label`` checks the store and the day's staging again before calling the judge.
    """
    earlier = [d for d in lake.partitions("llm_store") if d < ds]
    if not earlier:
        return None
    paths = [lake.uri("llm_store", ds=d) for d in earlier]
    log.info("anti-join against pairs labelled on %d earlier day(s) (%s .. %s)", len(earlier), earlier[0], earlier[-1])
    return spark.read.parquet(*paths).select("pair_key").distinct()


def _quarantine(spark, lake: Lake, flagged, dataset: str, ds: str) -> dict[str, int]:
    """Write the rows of ``flagged`` with a ``reason`` to ``quarantine/<dataset>/ds=D`` (replacing an earlier
    run's; a stale one is removed when nothing is bad) and return {reason: rows}."""
    from pyspark.sql import functions as F

    bad_rows = flagged.where(F.col("reason").isNotNull())
    by_reason = {r["reason"]: int(r["n"]) for r in bad_rows.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    qpath = lake.path("quarantine", dataset, ds=ds)
    if by_reason:
        with atomic_dir(qpath) as tmp:
            bad_rows.coalesce(1).write.parquet(spark_uri(tmp))
        log.warning("ds=%s: %d %s rows quarantined %s at %s", ds, sum(by_reason.values()), dataset, by_reason, qpath)
    elif lake.exists(qpath):  # a rerun on corrected input: drop the stale quarantine (atomically)
        with atomic_dir(qpath):
            pass
    return by_reason


def _clean_items(spark, lake: Lake, ds: str):
    """The day's active, readable items (item_id, title, category) and {reason: rows} of the catalog rows
    quarantined to ``quarantine/catalog/ds=D``: ``null_item_id``, ``empty_title`` (null, or blank under the
    text rule ``keyphrase_pipeline.models.text.clean``: whitespace, zero-width or bidi characters only).
    The judge is never paid for a pair it cannot read."""
    from pyspark.sql import functions as F

    c = F.col

    catalog = _read(spark, lake, lake.path("catalog", ds=ds), "catalog")
    active = catalog.where(c("active"))
    reason = (F.when(c("item_id").isNull(), F.lit("null_item_id"))
              .when(spark_is_blank("title"), F.lit("empty_title")))
    flagged = active.withColumn("reason", reason)
    by_reason = _quarantine(spark, lake, flagged, "catalog", ds)
    items = (flagged.where(c("reason").isNull()).select("item_id", "title", "category")
             .dropDuplicates(["item_id"]))
    return items, by_reason


def _keyphrases(spark, lake: Lake, ds: str):
    """The keyphrase universe as (keyphrase_id, keyphrase) and {reason: rows} of the keyphrases quarantined
    to ``quarantine/keyphrases/ds=D``: ``null_keyphrase_id``, ``empty_keyphrase`` (null or blank under
    ``keyphrase_pipeline.models.text.clean``)."""
    from pyspark.sql import functions as F

    c = F.col
    raw = _read(spark, lake, lake.path("keyphrases"), "keyphrases")
    flagged = raw.withColumn("reason", F.when(c("keyphrase_id").isNull(), F.lit("null_keyphrase_id"))
                             .when(spark_is_blank("text"), F.lit("empty_keyphrase")))
    by_reason = _quarantine(spark, lake, flagged, "keyphrases", ds)
    good = flagged.where(c("reason").isNull())
    return good.select("keyphrase_id", c("text").alias("keyphrase")).dropDuplicates(["keyphrase_id"]), by_reason


def _ctr_candidates(spark, lake: Lake, ds: str, items, keyphrases, budget: int, seed: int, n_items: int):
    """(candidate frames: ctr_positive and hard_negative pairs, exposed pairs or None) from the day's CTR labels."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    c = F.col

    candidates = []
    ctr_path = lake.path("ctr_labels", ds=ds)
    if lake.exists(ctr_path):
        ctr = _read(spark, lake, ctr_path, "ctr_labels")
        pos = ctr.where(c("label") == 1).select("item_id", "keyphrase_id").distinct()
        exposed = ctr.where(c("impressions") > 0).select("item_id", "keyphrase_id")
        candidates.append(pos.withColumn("source", F.lit("ctr_positive")))
        # bounded at scale: the HARD_KP_PER_CATEGORY keyphrases positive for most items of a category,
        # paired with a hash sample of items big enough for the whole budget
        per_cat = Window.partitionBy("category").orderBy(F.desc("n_pos"), "keyphrase_id")
        pos_cat = (pos.join(items.select("item_id", "category"), "item_id")
                   .groupBy("category", "keyphrase_id").agg(F.count("*").alias("n_pos"))
                   .withColumn("_r", F.row_number().over(per_cat)).where(c("_r") <= HARD_KP_PER_CATEGORY)
                   .select("category", "keyphrase_id"))
        hard_frac = min(1.0, HARD_ITEM_OVERSAMPLE * max(budget, 1) / n_items)
        hard_items = items.where(F.pmod(F.xxhash64(c("item_id"), F.lit(seed), F.lit(ds), F.lit("hard")),
                                        F.lit(1_000_000)) < int(hard_frac * 1_000_000))
        hard = (hard_items.join(pos_cat, "category")
                .join(pos, ["item_id", "keyphrase_id"], "left_anti")
                .join(keyphrases, "keyphrase_id")
                .where(F.arrays_overlap(_tokens(c("title")), _tokens(c("keyphrase"))))
                .select("item_id", "keyphrase_id", F.lit("hard_negative").alias("source")))
        candidates.append(hard)
    else:
        log.warning("no CTR labels for ds=%s at %s: no ctr_positive or hard_negative pairs", ds, ctr_path)
        exposed = None
    return candidates, exposed


def _unexposed_candidates(spark, lake: Lake, ds: str, exposed):
    """(unexposed_topk pairs: recommended but never shown, or None before the first publish; serving version)."""
    from pyspark.sql import functions as F

    recs, serving_version = _published_recommendations(spark, lake, ds)
    if recs is not None:
        unexposed = recs.select("item_id", "keyphrase_id").distinct()
        if exposed is not None:
            unexposed = unexposed.join(exposed, ["item_id", "keyphrase_id"], "left_anti")
        return unexposed.withColumn("source", F.lit("unexposed_topk")), serving_version
    log.info("nothing published yet: the unexposed_topk share goes to the other sources")
    return None, serving_version


def _random_candidates(items, keyphrases, budget: int, seed: int, ds: str, n_items: int, n_keyphrases: int):
    """Random (item, keyphrase) pairs, hash-sampled: enough to fill the whole budget if it came to that."""
    from pyspark.sql import functions as F

    c = F.col

    want = math.ceil(RANDOM_OVERSAMPLE * budget) + 1
    keyphrase_idx = (keyphrases.select("keyphrase_id").orderBy("keyphrase_id").rdd.zipWithIndex()
              .map(lambda r: (r[0][0], r[1])).toDF("keyphrase_id long, kp_idx long"))
    copies = max(1, math.ceil(want / n_items))
    frac = min(1.0, want / n_items)
    rnd = (items.select("item_id")
           .where(F.pmod(F.xxhash64(c("item_id"), F.lit(seed), F.lit(ds), F.lit("item")), F.lit(1_000_000)) < int(frac * 1_000_000))
           .withColumn("copy", F.explode(F.sequence(F.lit(0), F.lit(copies - 1))))
           .withColumn("kp_idx", F.pmod(F.xxhash64(c("item_id"), c("copy"), F.lit(seed), F.lit(ds)), F.lit(n_keyphrases)))
           .join(F.broadcast(keyphrase_idx) if n_keyphrases <= 2_000_000 else keyphrase_idx, "kp_idx")
           .select("item_id", "keyphrase_id", F.lit("random").alias("source")))
    return rnd


def _choose(settings: Settings, spark, lake: Lake, ds: str, candidates: list, items, keyphrases, budget: int, seed: int,
            model: str, version: str):
    """One row per pair_key (the highest-priority source wins), minus pairs already labelled, cut to each
    source's quota; returns (pandas frame of the chosen pairs, candidates per source, available per source, quotas)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    c = F.col

    union = candidates[0]
    for other in candidates[1:]:
        union = union.unionByName(other)
    prio = F.create_map(*[x for i, s in enumerate(SOURCES) for x in (F.lit(s), F.lit(i))])
    text = (union.join(items, "item_id").join(keyphrases, "keyphrase_id")
            .withColumn("pair_key", pair_key_column(model, version))
            .withColumn("prio", prio[c("source")])
            .withColumn("h", F.xxhash64(c("item_id"), c("keyphrase_id"), F.lit(seed), F.lit(ds))))
    first = Window.partitionBy("pair_key").orderBy("prio", "h")
    text = text.withColumn("_n", F.row_number().over(first)).where(c("_n") == 1).drop("_n")
    text = text.persist()
    before = {r["source"]: r["n"] for r in text.groupBy("source").agg(F.count("*").alias("n")).collect()}
    labelled = _labelled_keys(spark, lake, ds)
    fresh = text.join(labelled, "pair_key", "left_anti").persist() if labelled is not None else text
    available = {r["source"]: r["n"] for r in fresh.groupBy("source").agg(F.count("*").alias("n")).collect()}
    quotas = allocate(budget, shares(settings), {s: int(available.get(s, 0)) for s in SOURCES})
    rank = Window.partitionBy("source").orderBy("h", "pair_key")
    quota_map = F.create_map(*[x for s, q in quotas.items() for x in (F.lit(s), F.lit(q))])
    chosen = (fresh.withColumn("_r", F.row_number().over(rank))
              .where(c("_r") <= quota_map[c("source")])
              .select("item_id", "keyphrase_id", "title", "category", "keyphrase", "source", "pair_key", "h"))
    pdf = chosen.toPandas()
    fresh.unpersist()
    text.unpersist()
    return pdf, before, available, quotas


def _shard(pdf: pd.DataFrame, shard_size: int) -> tuple[pd.DataFrame, list[int], str]:
    """Deal the chosen pairs into near-equal shards in hash order; (pairs with ``shard``, shard numbers, run id)."""
    pdf = pdf.sort_values(["h", "pair_key"], kind="mergesort").reset_index(drop=True)
    n = len(pdf)
    n_shards = math.ceil(n / shard_size) if n else 0
    pdf["shard"] = (pd.RangeIndex(n) % max(n_shards, 1)).astype("int32")
    pdf = pdf.drop(columns=["h"])
    run_id = hashlib.sha1("\n".join(sorted(pdf["pair_key"])).encode()).hexdigest()[:16] if n else "empty"
    shards = list(range(n_shards))
    return pdf, shards, run_id


def run(settings: Settings, ds, budget: int | None = None, spark=None) -> dict:
    """Select the day's pairs; returns counts by source and ``shards`` (list of shard numbers).

    Steps: readable items (bad catalog rows quarantined), keyphrases, candidates by source (CTR positives
    and hard negatives, unexposed top-K, random), one pair per pair_key minus those already labelled, cut
    to the quotas, sharded, written atomically to ``pairs/ds=D/``; stats also in ``runs/ds=D/select_pairs.json``.

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD; ``judge.model`` is empty for a non-simulated backend
            (the pair key needs it); a version is published but the lake is not local (``serving/versions``
            is read with local file APIs).
        DataError: (exit 3) a negative ``budget``; ``raw/catalog/ds=D`` or ``raw/keyphrases`` missing; no active
            readable item or no keyphrase (even with ``budget`` 0).
        SchemaError: (exit 3) the catalog, keyphrases, ``ctr_labels/ds=D`` or the published recommendations
            break their contract.

    Spark's own failures are not KPErrors (exit 1). Missing CTR labels or nothing published are not errors:
    those sources are skipped with a warning."""

    t0 = time.perf_counter()
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    spark = spark or get_spark(settings, "select-pairs")
    budget = int(settings.pairs.daily_budget if budget is None else budget)
    if budget < 0:
        raise DataError(f"budget must be >= 0, got {budget}")
    seed = settings.pairs.seed
    model, version = judge_model_id(settings), settings.judge.prompt_version

    items, catalog_bad = _clean_items(spark, lake, ds)
    keyphrases, keyphrases_bad = _keyphrases(spark, lake, ds)
    n_items, n_keyphrases = items.count(), keyphrases.count()
    if n_items == 0 or n_keyphrases == 0:
        raise DataError(f"ds={ds}: {n_items} active items and {n_keyphrases} keyphrases: nothing to pair")
    candidates, exposed = _ctr_candidates(spark, lake, ds, items, keyphrases, budget, seed, n_items)
    unexposed, serving_version = _unexposed_candidates(spark, lake, ds, exposed)
    if unexposed is not None:
        candidates.append(unexposed)
    candidates.append(_random_candidates(items, keyphrases, budget, seed, ds, n_items, n_keyphrases))
    ensure_pair_keys_current(settings)  # a store with v1 keys is migrated once before the anti-join
    pdf, before, available, quotas = _choose(settings, spark, lake, ds, candidates, items, keyphrases, budget,
                                             seed, model, version)
    pdf, shards, run_id = _shard(pdf, settings.pairs.shard_size)
    n, n_shards = len(pdf), len(shards)
    selected = {s: int((pdf["source"] == s).sum()) for s in SOURCES}
    stats = {
        "ds": ds, "budget": budget, "pairs": n, "shards": shards, "shard_sizes": [int((pdf["shard"] == s).sum()) for s in shards],
        "selected": selected, "available": {s: int(available.get(s, 0)) for s in SOURCES},
        "candidates": {s: int(before.get(s, 0)) for s in SOURCES},
        "already_labelled": int(sum(before.values()) - sum(available.values())),
        "catalog_quarantined": int(sum(catalog_bad.values())), "catalog_quarantined_by_reason": catalog_bad,
        "keyphrases_quarantined": int(sum(keyphrases_bad.values())), "keyphrases_quarantined_by_reason": keyphrases_bad,
        "quotas": quotas, "judge_model": model, "prompt_version": version, "serving_version": serving_version,
        "run_id": run_id, "items": int(n_items), "keyphrases": int(n_keyphrases),
    }
    _write_shards(lake, ds, pdf, shards, stats)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    lake.write_run_stats(ds, "select_pairs", stats)
    log.info("ds=%s: %d pairs in %d shards %s (already labelled: %d)", ds, n, n_shards, selected, stats["already_labelled"])
    return stats


def _write_shards(lake: Lake, ds: str, pdf: pd.DataFrame, shards: list[int], stats: dict) -> None:

    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema("pairs")
    with atomic_dir(lake.path("pairs", ds=ds)) as tmp:
        fs, p = fsspec.core.url_to_fs(tmp)
        fs.makedirs(p, exist_ok=True)
        for s in shards:
            part = pdf[pdf["shard"] == s]
            fs.makedirs(f"{p}/{layout.shard_dir_name(s)}", exist_ok=True)
            with fs.open(layout.part_file(f"{p}/{layout.shard_dir_name(s)}"), "wb") as f:
                pq.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False), f)
        manifest = {k: stats[k] for k in ("ds", "run_id", "shards", "shard_sizes", "selected", "judge_model", "prompt_version")}
        with fs.open(f"{p}/{layout.PAIRS_MANIFEST}", "w") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True))


def read_pairs(settings: Settings, ds, shard: int | None = None) -> pd.DataFrame:
    """The day's selected pairs (one shard, or all) as a pandas DataFrame with the ``pairs`` contract columns
    (``item_id, keyphrase_id`` int64, ``title, category, keyphrase, source, pair_key`` str, ``shard`` int32).

    Raises DataError (exit 3) when the day has no pairs manifest (with ``shard`` None) or the shard's
    directory is missing, SchemaError (exit 3) when a shard breaks the contract."""

    lake = Lake.from_settings(settings)
    shards = read_manifest(lake, ds)["shards"] if shard is None else [shard]
    frames = [read_parquet(layout.pairs_dir(lake, ds, s), contract="pairs") for s in shards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(arrow_schema("pairs").names))


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--budget", type=int, default=None, help="override pairs.daily_budget for this run")


def main(settings: Settings, args) -> int:
    """``kp select-pairs``: ``run`` for ``--ds`` (``--budget`` overrides ``pairs.daily_budget``); prints the stats as
    one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""

    stats = run(settings, args.ds, budget=args.budget)
    print(json.dumps(stats, default=str))
    return 0
