"""Export the champion student's towers to ONNX, verified against torch, with optional per-channel int8.

Output ``registry/students/<version>/onnx/``::

    item/model.onnx [+ model.int8.onnx], tokenizer files, tower.json (dim, max_len)
    keyphrase/...                         same graph (one shared encoder), shorter max_len
    triton/item_tower/config.pbtxt, triton/item_tower/1/model.onnx   (and keyphrase_tower)
    export.json                           parity metrics, int8 decision, checksums

Idempotent: a version already exported and verified at the same ``serve.dim`` is skipped unless
``force``. The whole directory is written aside and moved into place, so a half export is never seen.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts.registry import is_exported
from keyphrase_pipeline.artifacts.serving import require_version
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, GateError
from keyphrase_pipeline.core.lake import Lake, atomic_dir, ds_str, local_path
from keyphrase_pipeline.core.layout import model_dir, onnx_dir, registry_version_dir
from keyphrase_pipeline.models import onnx_export as ox
from keyphrase_pipeline.models.devices import check_wheel_set
from keyphrase_pipeline.models.onnx_export import SAMPLE_TEXTS
from keyphrase_pipeline.models.onnx_tower import OnnxTower
from keyphrase_pipeline.models.text import item_text, keyphrase_text

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_ROWS = 256


def _sample_texts(settings: Settings, ds: str | None) -> tuple[list[str], list[str]]:
    """Item and keyphrase texts to verify on: from the day's catalog/keyphrases when present, else built-ins."""

    lake = Lake.from_settings(settings)
    items, keyphrases = [], []
    try:
        import pyarrow.dataset as pads

        if ds and lake.exists(lake.path("catalog", ds=ds)):
            t = pads.dataset(lake.path("catalog", ds=ds), format="parquet", ignore_prefixes=[".", "_"]).head(
                SAMPLE_ROWS, columns=["title", "category"]).to_pandas()
            items = [item_text(a, b) for a, b in zip(t["title"], t["category"])]
        if lake.exists(lake.path("keyphrases")):
            t = pads.dataset(lake.path("keyphrases"), format="parquet", ignore_prefixes=[".", "_"]).head(
                SAMPLE_ROWS, columns=["text"]).to_pandas()
            keyphrases = [keyphrase_text(x) for x in t["text"]]
    except Exception as exc:  # verification still runs on the built-in sample
        log.warning("could not sample texts from the lake (%s); using built-in samples", exc)
    items = items or [t for t in SAMPLE_TEXTS if "[SEP]" in t] + SAMPLE_TEXTS
    keyphrases = keyphrases or [t for t in SAMPLE_TEXTS if "[SEP]" not in t]
    return items, keyphrases


def _check_dims(settings: Settings, version: str) -> None:

    cfg_path = Path(local_path(layout.version_file(registry_version_dir(settings, version), "train_config")))
    if cfg_path.exists():
        dims = json.loads(cfg_path.read_text()).get("matryoshka_dims")
        if dims and settings.serve.dim not in dims:
            raise ConfigError(f"dimension mismatch: serve.dim={settings.serve.dim} but model {version} was trained "
                              f"with matryoshka_dims={dims}")



def _export_towers(src: str, tmp: Path, dim: int) -> dict:
    """Both towers in ``tmp`` (one shared graph, each with its own max_len); returns ``{tower: max_len}``."""

    item_len = ox.tower_max_len(src, "item")
    keyphrase_len = ox.tower_max_len(src, "keyphrase")
    ox.export_tower(src, tmp / "item", dim, item_len)
    ox.copy_tower(tmp / "item", tmp / "keyphrase", keyphrase_len)
    return {"item": item_len, "keyphrase": keyphrase_len}


def _check_parity(settings: Settings, version: str, src: str, tmp: Path, max_len: dict, items: list[str],
                  keyphrases: list[str]) -> tuple[dict, tuple]:
    """ONNX fp32 vs torch, each tower on its own kind of text: (parity, fp32 embeddings of items and keyphrases).

    Raises GateError beyond ``serve.export_tolerance``."""

    s = settings.serve
    ref_items = ox.torch_embed(src, items, s.dim, max_len["item"])
    ref_keyphrases = ox.torch_embed(src, keyphrases, s.dim, max_len["keyphrase"])
    fp_items = OnnxTower(tmp / "item").embed(items)
    fp_keyphrases = OnnxTower(tmp / "keyphrase").embed(keyphrases)
    p_items, p_keyphrases = ox.compare(ref_items, fp_items), ox.compare(ref_keyphrases, fp_keyphrases)
    parity = {"max_abs_diff": max(p_items["max_abs_diff"], p_keyphrases["max_abs_diff"]),
              "cos_min": min(p_items["cos_min"], p_keyphrases["cos_min"]), "rows": len(items) + len(keyphrases)}
    log.info("ONNX vs torch: max abs diff %.2e, min cosine %.6f", parity["max_abs_diff"], parity["cos_min"])
    if parity["max_abs_diff"] > s.export_tolerance:
        raise GateError(f"ONNX export of {version} differs from torch by {parity['max_abs_diff']:.2e} "
                        f"> serve.export_tolerance={s.export_tolerance}")
    return parity, (fp_items, fp_keyphrases)


def _try_int8(settings: Settings, tmp: Path, fp_items, fp_keyphrases, items: list[str], keyphrases: list[str]) -> tuple[dict, str]:
    """Per-channel int8 when ``serve.quantize``, kept only when close enough to fp32: (int8 record, model file)."""
    import numpy as np

    s = settings.serve
    int8 = {"tried": False, "kept": False}
    model_file = "model.onnx"
    if not s.quantize:
        return int8, model_file
    ox.quantize_int8(tmp / "item" / "model.onnx", tmp / "item" / "model.int8.onnx")
    shutil.copy2(tmp / "item" / "model.int8.onnx", tmp / "keyphrase" / "model.int8.onnx")
    q_items = OnnxTower(tmp / "item", "model.int8.onnx").embed(items)
    q_keyphrases = OnnxTower(tmp / "keyphrase", "model.int8.onnx").embed(keyphrases)
    c = ox.compare(fp_items, q_items)
    c2 = ox.compare(fp_keyphrases, q_keyphrases)
    overlap = ox.topk_overlap(fp_items, fp_keyphrases, q_items, q_keyphrases, min(s.top_k, 10))
    cos_mean = float(np.mean([c["cos_mean"], c2["cos_mean"]]))
    kept = cos_mean >= s.int8_min_cosine and overlap >= s.int8_min_topk_overlap
    int8 = {"tried": True, "kept": kept, "cos_mean": cos_mean, "cos_min": min(c["cos_min"], c2["cos_min"]),
            "topk_overlap": overlap, "min_cosine": s.int8_min_cosine, "min_topk_overlap": s.int8_min_topk_overlap}
    log.info("int8: cosine mean %.4f (min %.4f), top-k overlap %.3f -> %s", cos_mean, int8["cos_min"], overlap,
             "kept" if kept else "dropped")
    if kept:
        model_file = "model.int8.onnx"
    else:
        for t in ("item", "keyphrase"):
            (tmp / t / "model.int8.onnx").unlink()
    return int8, model_file


def _write_triton(tmp: Path, model_file: str, dim: int) -> None:
    """``triton/<tower>_tower/config.pbtxt`` and ``1/model.onnx`` for each tower."""

    for t in ("item", "keyphrase"):
        repo = tmp / "triton" / f"{t}_tower"
        (repo / "1").mkdir(parents=True)
        shutil.copy2(tmp / t / model_file, repo / "1" / "model.onnx")
        (repo / "config.pbtxt").write_text(ox.triton_config(f"{t}_tower", dim))


def _write_record(settings: Settings, version: str, tmp: Path, model_file: str, parity: dict, int8: dict, max_len: dict) -> None:
    """``export.json``: what was exported and verified, with the checksum of every file written before it."""

    s = settings.serve
    checksums = {str(p.relative_to(tmp)): ox.sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    record = {"version": version, "dim": s.dim, "verified": True, "quantize_tried": s.quantize,
              "model_file": model_file, "parity": parity, "int8": int8,
              "max_len": {"item": max_len["item"], "keyphrase": max_len["keyphrase"]}, "checksums": checksums}
    (tmp / layout.EXPORT_RECORD).write_text(json.dumps(record, indent=2))


def run(settings: Settings, ds: str | None = None, version: str | None = None, force: bool = False) -> dict:
    """Export, verify (GateError beyond ``serve.export_tolerance``), optionally quantise; return its stats.

    ``ds`` picks the verification texts (that day's catalog) and the day of the run stats, and pins ``version``
    as the model the day's serving chain uses (``serving.serving_model``: a promotion during the run applies to
    the next run); without it no run stats are written and nothing is pinned.

    Raises:
        ConfigError: (exit 2) ``serve.dim`` not among the student's Matryoshka dims or above the encoder's hidden
            size; a model that does not mean-pool; ``ds`` not a date; the lake not local.
        DataError: (exit 3) no champion (and no ``version``), or the version's model directory missing.
        GateError: (exit 4) ONNX and torch embeddings differ by more than ``serve.export_tolerance`` (max absolute
            difference of embedding values); nothing is written.

    A dropped int8 model is a result, not an error. Exporter and ONNX Runtime errors propagate (exit 1)."""
    check_wheel_set()  # one build of ONNX Runtime: never a mix of CPU and GPU wheels

    s = settings.serve
    lake = Lake.from_settings(settings)
    version = require_version(settings, version)
    _check_dims(settings, version)
    day = ds_str(ds) if ds else None
    if day:  # the serving chain of the day (embed, index, recommend, publish) uses these towers
        from keyphrase_pipeline.artifacts.serving import pin_serving_model

        pin_serving_model(settings, day, version)
    done = None if force else is_exported(settings, version)
    if done:
        log.info("model %s already exported and verified at dim %d: skipping (force to redo)", version, s.dim)
        stats = {"version": version, "skipped": True, **{k: done[k] for k in ("parity", "int8") if k in done}}
        if day:
            lake.write_run_stats(day, "export", stats)
        return stats

    src = str(local_path(model_dir(settings, version)))
    items, keyphrases = _sample_texts(settings, day)
    with atomic_dir(onnx_dir(settings, version)) as tmp_uri:
        tmp = Path(local_path(tmp_uri))
        max_len = _export_towers(src, tmp, s.dim)
        parity, (fp_items, fp_keyphrases) = _check_parity(settings, version, src, tmp, max_len, items, keyphrases)
        int8, model_file = _try_int8(settings, tmp, fp_items, fp_keyphrases, items, keyphrases)
        _write_triton(tmp, model_file, s.dim)
        _write_record(settings, version, tmp, model_file, parity, int8, max_len)

    stats = {"version": version, "skipped": False, "dim": s.dim, "model_file": model_file, "parity": parity, "int8": int8}
    if day:
        lake.write_run_stats(day, "export", stats)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="logical date (YYYY-MM-DD): samples verification texts from that catalog")
    parser.add_argument("--version", default=None, help="registry student version (default: registry/CHAMPION)")
    parser.add_argument("--force", action="store_true", help="export again even when already exported and verified")


def main(settings: Settings, args) -> int:
    """``kp export``: ``run`` with ``--ds``, ``--version``, ``--force``; prints the stats as one JSON line and
    returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    stats = run(settings, args.ds, version=args.version, force=args.force)
    print(json.dumps(stats, default=str))
    return 0
