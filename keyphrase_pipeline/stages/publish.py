"""Publish the day's index, id map, ONNX towers and recommendations as a new serving version.

The bundle is assembled in a hidden temp directory under ``serving/versions/``, renamed into
``serving/versions/<id>/`` only once complete (``manifest.json`` with checksums of every file is
written last), and made live by atomically rewriting the ``serving/CURRENT`` pointer, only forward in days
(an older day's bundle, from a clear or a backfill, is kept but not made live: ``run``). Readers follow
CURRENT, so they see the old version or the new one, never a part. Any failure before the pointer
switch leaves CURRENT and every published version untouched. The newest ``serve.keep_versions`` good
versions are kept, and always CURRENT and its rollback target (``prune``), for ``kp rollback``.

Gates checked again here: the build's recall must be at least ``serve.min_recall``; the ONNX files
must match the checksums recorded at export; the recommendations must meet their contract.

Memory: the recommendations are streamed into the bundle (``copy_recommendations``), laid out in hash buckets
sorted by item so that a lookup by item id reads one row group (``keyphrase_pipeline.artifacts.item_lookup``); the
peak is one bucket and its sort, about ``serve.publish_bucket_rows`` rows, whatever the catalog. The distinct-item
count is exact, bucket by bucket. The checksums are computed file by file in chunks.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import item_lookup
from keyphrase_pipeline.artifacts.registry import is_exported
from keyphrase_pipeline.artifacts.serving import (
    TOWERS,
    bad_versions,
    current_version,
    published_versions,
    read_manifest,
    rollback_target,
    verify_files,
    version_order,
)
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError, GateError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, contract_dataset, ds_str, local_path
from keyphrase_pipeline.core.layout import current_pointer, index_build_dir, onnx_dir, serving_version_dir
from keyphrase_pipeline.models.ann import ann_recall_of
from keyphrase_pipeline.models.onnx_export import sha256_file

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

TOWER_FILES = ("tower.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _write_manifest(root: Path, manifest: dict) -> None:

    manifest["checksums"] = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
                             if p.is_file() and p.name != layout.SERVING_MANIFEST}
    (root / layout.SERVING_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _check_export(onnx_root: Path, record: dict, model_file: str) -> None:

    wanted = {f"{t}/{model_file}": record["checksums"][f"{t}/{model_file}"] for t in ("item", "keyphrase")}
    verify_files(onnx_root, wanted)


def _recommendations_dataset(path: str):
    """The day's recommendations as a ``pyarrow.dataset`` (``recommend.contract_dataset``: footers only read);
    DataError (exit 3) when ``path`` is missing or holds no row, SchemaError (exit 3) when the schema breaks the
    ``recommendations`` contract."""

    dataset = contract_dataset(path, "recommendations")
    if not dataset.files or not dataset.count_rows():  # row counts from the footers
        raise DataError(f"no recommendations in {path}")
    return dataset


def copy_recommendations(dataset, dest_dir: str, bucket_rows: int, row_group_rows: int, batch_rows: int = 65_536) -> dict:
    """Write the recommendations of ``dataset`` (``_recommendations_dataset``) into ``dest_dir`` laid out for lookup
    by item id (``keyphrase_pipeline.artifacts.item_lookup``): ``ceil(rows / bucket_rows)`` hash buckets, each one
    ``part-BBBBB.parquet`` sorted by (item_id, rank) in row groups of ``row_group_rows``. The input is read in batches
    of ``batch_rows`` rows (once per ``item_lookup.MAX_OPEN_SPILLS`` buckets), each cast to the ``recommendations``
    contract's types (int32 ids or ranks widened; the optional columns (CTR, re-rank) added as nulls when a file lacks them).

    Peak memory: one input batch, then one bucket and its sort (``item_lookup.write_buckets``): set by
    ``bucket_rows``, not by the number of items. Returns ``{"rows", "items" (distinct item_id, exact), "files",
    "buckets", "largest_bucket_rows", "input_reads", "layout"}`` (``layout``: the manifest's
    ``recommendations_layout``). Raises DataError (exit 3) naming the file when an ``item_id`` is null or a value
    does not fit the contract's type (an id beyond int64)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.core.contracts import arrow_schema

    schema = arrow_schema("recommendations")  # every file in the contract's types, optional columns included
    rows = sum(f.count_rows() for f in dataset.get_fragments())  # footers only
    buckets = item_lookup.buckets_for(rows, bucket_rows)

    def batches():
        for path in dataset.files:
            pf = pq.ParquetFile(path)
            names = [n for n in schema.names if n in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=names):
                table = pa.Table.from_batches([batch])
                for field in schema:  # a file written before the CTR model or the re-rank lacks their columns: nulls
                    if field.name not in table.column_names:
                        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
                try:
                    table = table.select(schema.names).cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(f"{path}: recommendations that do not fit the contract's types ({exc})") from None
                ids = table.column("item_id")
                if ids.null_count:
                    raise DataError(f"{path}: column item_id has {ids.null_count} null value(s) in the recommendations")
                yield from table.combine_chunks().to_batches()

    counts = item_lookup.write_buckets(batches, schema, dest_dir, buckets, row_group_rows,
                                       spill_dir=f"{dest_dir}.spill")
    log.info("recommendations: %d rows of %d items in %d buckets (largest %d rows)", counts["rows"], counts["items"],
             buckets, counts["largest_bucket_rows"])
    return {**counts, "layout": item_lookup.layout_record(buckets, row_group_rows)}


def prune(settings: Settings, keep: int, also_keep: tuple[str, ...] = ()) -> list[str]:
    """Delete published versions beyond the newest ``keep`` good ones by (day, publish time); return those removed.

    Never deleted: CURRENT, its rollback target (``serving.rollback_target``) and ``also_keep`` (the version just
    published, so a backfilled day's bundle stays visible until the next publish), whatever their day. Versions
    marked bad (rolled back from) do not count towards ``keep`` and go first; their marks stay in
    ``serving/BAD_VERSIONS.json``. Ordering by day, not publish time, keeps the versions of the latest days (that
    served) over backfills of older days. Deletion errors are ignored; ConfigError (exit 2) on a non-local lake;
    DataError (exit 3) when ``serving/BAD_VERSIONS.json`` is damaged."""

    versions = published_versions(settings)  # oldest first by publish time
    current = current_version(settings)
    protected = {current, rollback_target(settings, current), *also_keep} - {None}
    bad = bad_versions(settings)
    by_day = sorted((v for v in versions if v not in bad), key=lambda v: version_order(read_manifest(settings, v)))
    kept = protected | set(by_day[-keep:] if keep > 0 else [])
    removed = []
    for v in versions:
        if v in kept:
            continue
        shutil.rmtree(local_path(serving_version_dir(settings, v)), ignore_errors=True)
        removed.append(v)
    return removed


def run(settings: Settings, ds: str, make_current: bool = False) -> dict:
    """Assemble, verify and switch to a new serving version for day ``ds``; return its manifest stats.

    Every check runs before anything is written; on failure ``serving/CURRENT`` is untouched.

    CURRENT only moves forward in days: when the live version is of a later day than ``ds`` (a cleared or
    backfilled older day), the bundle is published and kept but CURRENT stays, unless ``make_current``
    (``--make-current``); the stats say so (``current_moved`` False, ``current_reason``) and the log warns. A
    rerun of the live day moves CURRENT to the new bundle.

    Raises:
        ConfigError: (exit 2) ``ds`` not a date; the lake not local.
        DataError: (exit 3) no index build for ``ds``; its dimension is not ``serve.dim``; its model has no
            verified ONNX export; an ONNX file missing or not matching the export's checksum; the recommendations
            of ``ds`` missing or empty.
        SchemaError: (exit 3) the recommendations break their contract.
        GateError: (exit 4) the build's recall is below ``serve.min_recall`` (checked before the dimension).

    An ``index_meta.json`` with neither ``ann_recall_at_k`` nor ``recall_at_k`` raises KeyError (exit 1)."""

    ds = ds_str(ds)
    s = settings.serve
    lake = Lake.from_settings(settings)
    build = Path(local_path(index_build_dir(settings, ds)))
    if not (build / layout.INDEX_META).exists():
        raise DataError(f"no index build for {ds} at {build}: run `kp index --ds {ds}`")
    meta = json.loads((build / layout.INDEX_META).read_text())
    recall = ann_recall_of(meta)
    if recall < s.min_recall:
        raise GateError(f"index of {ds} has ANN recall@{meta['k']} {recall:.4f} < serve.min_recall={s.min_recall}")
    if meta["dim"] != s.dim:
        raise DataError(f"dimension mismatch: index of {ds} is {meta['dim']}-d, serve.dim={s.dim}")
    version = meta["model_version"]
    record = is_exported(settings, version)
    if not record:
        raise DataError(f"model {version} has no verified ONNX export at serve.dim={s.dim}: run `kp export`")
    model_file = record.get("model_file", "model.onnx")
    onnx_root = Path(local_path(onnx_dir(settings, version)))
    _check_export(onnx_root, record, model_file)
    recs_path = lake.path("recommendations", ds=ds)
    recs = _recommendations_dataset(recs_path)

    bad_versions(settings)  # a damaged marks file fails here, before anything is written (DataError, exit 3)
    previous = current_version(settings)
    previous_ds = _live_day(settings, previous)
    move = make_current or previous_ds is None or previous_ds <= ds
    why = ("--make-current" if make_current and previous_ds is not None and previous_ds > ds
           else "first publish" if previous is None else f"day {ds} is not older than the live day {previous_ds}"
           if move else f"the live version {previous} is of a later day ({previous_ds}); CURRENT only moves "
           f"forward in days (publish with --make-current, or `kp rollback --to` this version, to serve it)")
    now = dt.datetime.now(dt.UTC)
    vid = f"{ds}.{now:%Y%m%dT%H%M%S%f}"
    target = serving_version_dir(settings, vid)
    with atomic_dir(target) as tmp_uri:
        tmp = Path(local_path(tmp_uri))
        tmp.mkdir(parents=True, exist_ok=True)
        for name in (layout.INDEX_FILE, layout.INDEX_IDMAP, layout.INDEX_META):
            shutil.copy2(build / name, tmp / name)
        for tower in TOWERS:
            tower_dir = Path(layout.bundle_tower_dir(tmp, tower))
            tower_dir.mkdir(parents=True)
            for name in (model_file, *TOWER_FILES):
                if (onnx_root / tower / name).exists():
                    shutil.copy2(onnx_root / tower / name, tower_dir / name)
        Path(layout.bundle_recommendations_dir(tmp)).mkdir()
        counts = copy_recommendations(recs, layout.bundle_recommendations_dir(tmp), s.publish_bucket_rows,
                                      s.lookup_row_group_rows)
        manifest = {
            "version": vid, "ds": ds, "model_version": version, "created_at": now.isoformat(), "previous": previous,
            "dim": s.dim, "top_k": s.top_k, "item_model_file": model_file, "keyphrase_model_file": model_file,
            "index": {**{k: meta[k] for k in ("factory", "exact", "search_params", "n", "k")}, "ann_recall_at_k": recall},
            "ann_recall_at_k": recall,
            "counts": {"keyphrases": int(meta["n"]), "items": counts["items"], "recommendations": counts["rows"]},
            "recommendations_layout": counts["layout"],
            "export": {"parity": record.get("parity"), "int8": record.get("int8")},
            "hybrid": _hybrid_served(lake, ds, version),
        }
        _write_manifest(tmp, manifest)
    if move:
        lake.write_pointer(current_pointer(settings), vid)
        log.info("published %s (model %s, %d items, recall %.4f); previous %s", vid, version,
                 manifest["counts"]["items"], recall, previous)
    else:
        log.warning("published %s (model %s, %d items) but CURRENT stays %s: %s", vid, version,
                    manifest["counts"]["items"], previous, why)
    try:  # after the switch a failure here must not fail (and retry) a publish that happened
        removed, prune_error = prune(settings, s.keep_versions, also_keep=(vid,)), None
    except Exception as exc:  # noqa: BLE001 - reported in the stats and the log
        removed, prune_error = [], f"{type(exc).__name__}: {exc}"
        log.warning("published %s, but pruning old versions failed: %s", vid, prune_error)
    stats = {"version": vid, "previous": previous, "model_version": version, "ann_recall_at_k": recall,
             **manifest["counts"], "buckets": counts["buckets"], "current_moved": move, "current": vid if move else previous,
             "current_reason": why, "pruned": removed, **({"prune_error": prune_error} if prune_error else {}),
             "path": target}
    lake.write_run_stats(ds, "publish", stats)
    return stats


def _hybrid_served(lake: Lake, ds: str, version: str) -> dict | None:
    """``{"depth", "score", "student"}``: the student's hybrid score (``models.lexical_match``, as stored) and the
    depth ``kp recommend`` re-scored day ``ds``'s lists with, from the record it wrote beside them
    (``layout.HYBRID_RECORD``) when it is of ``version``; else None (the lists are in cosine order). The serving
    reader's live search re-scores the same way (``artifacts.serving.ServingBundle.search``)."""
    record = lake.read_json(f"{lake.path('recommendations', ds=ds)}/{layout.HYBRID_RECORD}", default={}) or {}
    return record if record.get("depth") and record.get("student") == version else None


def _live_day(settings: Settings, version: str | None) -> str | None:
    """The day of the live version's bundle (from its manifest, else its id); None before the first publish."""

    if version is None:
        return None
    try:
        return str(read_manifest(settings, version).get("ds") or "") or None
    except DataError:  # the bundle is gone (deleted by hand): its id starts with its day (``<ds>.<timestamp>``)
        import re

        return version[:10] if re.match(r"^\d{4}-\d{2}-\d{2}\.", version) else None


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD) whose build and recommendations to publish")
    parser.add_argument("--make-current", action="store_true",
                        help="switch CURRENT to this bundle even when the live one is of a later day (default: an "
                             "older day's bundle is published and kept, CURRENT stays)")


def main(settings: Settings, args) -> int:
    """``kp publish``: ``run`` for ``--ds``; prints the stats as one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.ds, make_current=args.make_current), default=str))
    return 0
