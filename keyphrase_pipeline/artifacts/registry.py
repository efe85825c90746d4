"""The model registry: versioned model directories under the lake, and pointers to the ones in use.

Layout::

    registry/students/<version>/   model/ (sentence-transformers), train_config.json, data.json,
                                   metrics.json, promotion.json, MODEL_CARD.md, curves.png
    registry/cross/<version>/      model/ (CrossEncoder), soft_labels.parquet, the same json/card/curves
    registry/ctr/<version>/        model/ (ctr_model.pt, ctr_config.json, the semantic-ID codebooks, ctr_model.onnx),
                                   the same json
    registry/CHAMPION              the promoted student version (read by export/serving)
    registry/CROSS_LATEST          the newest cross-encoder assistant
    registry/CTR_CHAMPION          the promoted CTR model (read by recommend: expected_ctr)
    registry/champion_history.jsonl  one line per champion switch (who, when, why)

A version id is ``<ds>-<8 hex>``: a hash of (ds, training configuration, data snapshot), so rerunning a day
with the same inputs gives the same id. A committed version is immutable: a rerun that arrives at an id already
in the registry reuses that version (``reusable``) and never rewrites it (its promotion record, its ONNX export,
the champion's weights); other inputs give another id, which goes through the gate. Directories are written under
a hidden temp name and renamed into place; pointers switch atomically (``Lake.write_pointer``).
Model directories are written with local file APIs: the registry must be on a local or mounted path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, commit_dir, ds_str, local_path, tmp_sibling
from keyphrase_pipeline.core.layout import model_dir, onnx_dir
from keyphrase_pipeline.models.onnx_export import tower_max_len

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

def _lake(settings: Settings) -> Lake:
    layout.registry_root(settings)  # ConfigError unless the lake is local or mounted
    return Lake.from_settings(settings)


def version_id(ds: str, config: dict, data: dict) -> str:
    """Deterministic id for (ds, config, data): ``<ds>-<8 hex>``."""
    blob = json.dumps({"ds": ds_str(ds), "config": config, "data": data}, sort_keys=True, default=str)
    return f"{ds_str(ds)}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def target_dir(settings: Settings, version: str, kind: str, out: str | None) -> str:
    """Where a training run writes: ``out`` (resolved) when given, else the registry version directory."""
    if out:
        return str(Path(out).resolve())
    return layout.registry_version_dir(settings, version, kind)


def exists(settings: Settings, version: str, kind: str = "students") -> bool:
    """True when ``registry/<kind>/<version>/model/`` is a directory.

    Raises ConfigError (exit 2) for a bad version id (empty, None, with ``/``, starting with ``.`` or ``_``), an
    unknown ``kind`` or a non-local lake."""
    return Path(layout.model_dir(settings, version, kind)).is_dir()


class UnreadablePointerError(DataError):
    """``registry/CHAMPION`` or ``registry/CROSS_LATEST`` exists but cannot be decoded as text (a damaged file).
    Exit code 3; the message names the file (relative to the lake root) and how to rewrite it."""


def _pointer(settings: Settings, kind: str) -> str | None:
    path = layout.registry_pointer(settings, kind)
    try:
        return _lake(settings).read_pointer(path)
    except (UnicodeDecodeError, ValueError) as exc:
        name = f"registry/{Path(path).name}"
        fix = ("fix with `kp promote --version V` (a complete version: `kp promote --list`)" if kind == "students"
               else f"fix by writing a version of registry/{kind} into it (or let the next training day set it)")
        raise UnreadablePointerError(f"{name} is unreadable: {type(exc).__name__}: {str(exc)[:120]}; {fix}") from None


def champion(settings: Settings) -> str | None:
    """The promoted student version, or None before the first promotion. Raises UnreadablePointerError (a
    DataError, exit 3) when ``registry/CHAMPION`` cannot be decoded."""
    return _pointer(settings, "students")


def champion_or_none(settings: Settings) -> str | None:
    """``champion``, but None (logged) when the pointer is unreadable: for code that is about to rewrite it or only
    marks the current version (``set_champion``, ``list_versions``)."""
    try:
        return champion(settings)
    except UnreadablePointerError as exc:
        log.warning("%s", exc)
        return None


def ctr_champion(settings: Settings) -> str | None:
    """The promoted CTR model version (``registry/CTR_CHAMPION``), or None before the first. Raises
    UnreadablePointerError (exit 3) when the pointer cannot be decoded."""
    return _pointer(settings, "ctr")


def set_ctr_champion(settings: Settings, version: str, reason: str) -> None:
    """Atomically make CTR model ``version`` the one recommend uses; its promotion.json says why. ConfigError (exit 2)
    when that version has no model directory."""
    if not exists(settings, version, "ctr"):
        raise ConfigError(f"no CTR model version {version!r} in {layout.registry_kind_dir(settings, 'ctr')}")
    lake = _lake(settings)
    vdir = layout.registry_version_dir(settings, version, "ctr")
    promo_path = layout.version_file(vdir, "promotion")
    promo = lake.read_json(promo_path, default={}) if Path(promo_path).exists() else {}
    try:
        previous = ctr_champion(settings)
    except UnreadablePointerError:
        previous = None
    promo.update({"promoted": True, "reason": reason, "champion_at": dt.datetime.now(dt.UTC).isoformat(),
                  "previous_champion": previous})
    lake.write_json(promo_path, promo)
    lake.write_pointer(layout.registry_pointer(settings, "ctr"), version)
    log.info("CTR champion: %s -> %s (%s)", previous, version, reason)


def latest_cross(settings: Settings) -> str | None:
    """The newest cross-encoder version (its directory: ``keyphrase_pipeline.core.layout.registry_version_dir(settings, v, "cross")``).
    Raises UnreadablePointerError when ``registry/CROSS_LATEST`` cannot be decoded."""
    return _pointer(settings, "cross")


_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}-[0-9a-f]+$")  # what ``version_id`` makes: <ds>-<hex>


def version_day(version) -> str | None:
    """The day (YYYY-MM-DD) of a version id ``version_id`` made (``<ds>-<hex>``); None for any other name."""
    return version[:10] if isinstance(version, str) and _DATED.match(version) else None


def warm_start_version(settings: Settings, kind: str, ds: str, include_day: bool = False) -> str | None:
    """The version a warm start of day ``ds`` begins from, or None when there is none.

    ``kind="students"``: the champion; ``"cross"``: ``CROSS_LATEST``; either only when it was trained for a day
    before ``ds``. Otherwise the newest earlier-day version: the champion history (newest first) for students,
    the registry's cross-encoder versions for the assistant. Never a version of ``ds`` itself or a later day:
    a rerun of the day starts from the same model while the earlier days' registry is unchanged (so its version
    id, which hashes the start, is the same; after a rollback of the champion it starts from the rolled-back-to
    model, another start and another id), and a backfill never starts from a model that has seen later labels.
    Only ids ``version_id`` makes (``<ds>-<hex>``) whose model directory exists qualify; other names in the
    pointer or the history are passed over. ``include_day=True``: a version of ``ds`` itself qualifies too (the
    distillation teacher of day ``ds``: that day's cross-encoder, never a later day's on a backfill).

    Raises UnreadablePointerError (exit 3) when the pointer cannot be decoded; ConfigError (exit 2) for an
    unknown ``kind`` or a non-local lake."""
    day = ds_str(ds)

    def earlier(v) -> bool:  # a trained version of a day before ``day`` (a hand-made name never qualifies)
        return (version_day(v) is not None and (v[:10] <= day if include_day else v[:10] < day)
                and exists(settings, v, kind))

    current = champion(settings) if kind == "students" else latest_cross(settings)
    if earlier(current):
        return current
    if kind == "students":
        hist = Path(layout.champion_history_path(settings))
        candidates = []
        for line in reversed(hist.read_text(encoding="utf-8").splitlines() if hist.exists() else []):
            try:
                candidates.append(json.loads(line).get("version"))
            except (ValueError, AttributeError):  # a torn or foreign line: the history is advisory here
                continue
    else:
        candidates = [v["version"] for v in sorted(list_versions(settings, "cross"),
                                                   key=lambda v: (v["version"][:10], v["created_at"]), reverse=True)]
    return next((v for v in candidates if earlier(v)), None)


def start_model_dir(settings: Settings, kind: str, ds: str, base: str, warm: bool) -> str:
    """The model directory training of day ``ds`` starts from: with ``warm`` (``train.init_from=champion`` for
    students, ``train.cross_init_from=latest`` for the cross-encoder) the ``warm_start_version``'s model when
    there is one (logged), else ``base`` (the base encoder). Raises what ``warm_start_version`` raises."""
    if warm:
        version = warm_start_version(settings, kind, ds)
        if version:
            log.info("%s: warm start from %s", kind, version)
            return layout.model_dir(settings, version, kind)
        log.info("%s: no version from a day before %s to warm-start from: starting from the base encoder", kind, ds)
    return base


def resolve_cross(settings: Settings, cross: str | None, what: str = "--cross") -> tuple[str | None, str | None]:
    """(model directory, registry version or None) for a cross-encoder reference: a version id, a version
    directory (its ``model/`` is taken) or a model directory. (None, None) for an empty ``cross``. A directory of
    this lake's registry (``registry/cross/<v>`` or its ``model/``) is that version, however it is spelled.

    Raises ConfigError (exit 2), naming ``what`` (the option or setting it came from), when ``cross`` is neither a
    directory nor a cross-encoder version of the registry (or is an invalid version id)."""
    if not cross:
        return None, None
    p = Path(cross)
    if p.is_dir():
        real = p.resolve()  # symlinks, "..", "." and trailing slashes: the directory itself
        version_dir = real if Path(layout.version_model_dir(real)).is_dir() else real.parent
        if (version_dir.parent == Path(layout.registry_kind_dir(settings, "cross")).resolve()
                and real in (version_dir, Path(layout.version_model_dir(version_dir)))
                and not version_dir.name.startswith((".", "_"))):
            return layout.model_dir(settings, version_dir.name, "cross"), version_dir.name
        if Path(layout.version_model_dir(p)).is_dir():
            return layout.version_model_dir(p), None
        return str(p), None
    if exists(settings, cross, "cross"):
        return layout.model_dir(settings, cross, "cross"), cross
    raise ConfigError(f"{what} {cross!r}: neither a directory nor a cross-encoder version in the registry")


def set_latest_cross(settings: Settings, version: str) -> None:
    """Atomically point ``registry/CROSS_LATEST`` at ``version``; ConfigError (exit 2) when that cross-encoder
    version has no model directory (or the lake is not local)."""
    if not exists(settings, version, "cross"):
        raise ConfigError(f"no cross-encoder version {version!r} in {layout.registry_root(settings)}/cross")
    lake = _lake(settings)
    lake.write_pointer(layout.registry_pointer(settings, "cross"), version)


def set_champion(settings: Settings, version: str, reason: str) -> None:
    """Atomically make ``version`` the champion; record why in its promotion.json and the history."""
    if not exists(settings, version, "students"):
        raise ConfigError(f"no student version {version!r} in {layout.registry_kind_dir(settings, 'students')}")
    lake = _lake(settings)
    previous = champion_or_none(settings)  # an unreadable pointer is what a manual promotion repairs
    now = dt.datetime.now(dt.UTC).isoformat()
    vdir = layout.registry_version_dir(settings, version)
    promo_path = layout.version_file(vdir, "promotion")
    promo = lake.read_json(promo_path, default={}) if Path(promo_path).exists() else {}
    promo.update({"promoted": True, "reason": reason, "champion_at": now, "previous_champion": previous})
    lake.write_json(promo_path, promo)
    lake.write_pointer(layout.registry_pointer(settings, "students"), version)
    hist = Path(layout.champion_history_path(settings))
    with open(hist, "a", encoding="utf-8") as f:
        f.write(json.dumps({"at": now, "version": version, "previous": previous, "reason": reason}) + "\n")
    log.info("champion: %s -> %s (%s)", previous, version, reason)


def _read(path: Path) -> dict:
    """A version's JSON record, or {} when it is missing, unreadable or not a JSON object (a damaged file)."""
    try:
        value = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def list_versions(settings: Settings, kind: str = "students") -> list[dict]:
    """Every complete version of ``kind``, newest first, with metrics, promotion and data info."""
    base = Path(layout.registry_kind_dir(settings, kind))
    if not base.is_dir():
        return []
    try:
        current = _pointer(settings, kind)  # the champion, the newest cross-encoder, the CTR champion
    except UnreadablePointerError as exc:  # the versions are still listed; none is marked current
        log.warning("%s", exc)
        current = None
    out = []
    for d in base.iterdir():
        if d.name.startswith((".", "_")) or not Path(layout.version_model_dir(d)).is_dir():
            continue
        cfg = _read(Path(layout.version_file(d, "train_config")))
        out.append({
            "version": d.name,
            "kind": kind,
            "dir": str(d),
            "created_at": cfg.get("created_at") or dt.datetime.fromtimestamp(d.stat().st_mtime, dt.UTC).isoformat(),
            "ds": cfg.get("ds") or d.name[:10],
            "current": d.name == current,
            "config": cfg,
            "data": _read(Path(layout.version_file(d, "data"))),
            "metrics": _read(Path(layout.version_file(d, "metrics"))),
            "promotion": _read(Path(layout.version_file(d, "promotion"))),
        })
    out.sort(key=lambda v: (v["created_at"], v["version"]), reverse=True)
    return out


def reusable(settings: Settings, version: str, kind: str) -> dict | None:
    """The committed version ``version`` of ``kind`` when it exists, as a training run's stats: ``{version, path,
    reused: True, why, ...metrics.json's top-level numbers}``; None when there is none (train it).

    A committed version is the same model a rerun would train (same day, configuration and data snapshot) and may
    already be evaluated, promoted or exported: it is never rewritten (module docstring). ``why`` says what it
    already is (the champion, the newest cross-encoder, evaluated, exported). Raises ConfigError (exit 2) for a bad id or kind."""
    if not exists(settings, version, kind):
        return None
    vdir = Path(layout.registry_version_dir(settings, version, kind))
    roles = []
    try:
        if version == _pointer(settings, kind):
            roles.append({"students": "the champion", "cross": "the newest cross-encoder",
                          "ctr": "the CTR champion"}[kind])
    except UnreadablePointerError:
        pass
    promotion = _read(Path(layout.version_file(vdir, "promotion")))
    if promotion:
        roles.append("evaluated (promoted)" if promotion.get("promoted") else "evaluated (not promoted)")
    if kind == "students" and Path(layout.onnx_dir(settings, version)).is_dir():
        roles.append("exported")
    metrics = _read(Path(layout.version_file(vdir, "metrics")))
    why = (f"version {version} is already in the registry ({', '.join(roles) or 'trained'}); a committed version is "
           "never rewritten: reusing it, training skipped")
    log.warning("%s", why)
    return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None},
            "version": version, "path": str(vdir), "reused": True, "why": why}


def new_version_tmp(settings: Settings, version: str, kind: str) -> str:
    """A hidden temp directory beside the version's final place (commit with ``commit_version``)."""

    target = layout.registry_version_dir(settings, version, kind)
    tmp = tmp_sibling(target)
    os.makedirs(tmp, exist_ok=True)
    return tmp


def commit_version(settings: Settings, tmp: str, version: str, kind: str) -> str:
    """Move a fully written version directory into place (replacing a rerun of the same id)."""

    target = layout.registry_version_dir(settings, version, kind)
    commit_dir(tmp, target)
    return target


def is_exported(settings: Settings, version: str) -> dict | None:
    """The export record (``export.json`` as a dict) when ``version`` is exported and verified at the current
    ``serve.dim`` with the current ``serve.quantize`` and its item tower at the length the model was trained at
    (``onnx_export.tower_max_len``; an export written before the towers followed the model's length is redone),
    else None.

    ConfigError (exit 2) for a bad version id or a non-local lake; json.JSONDecodeError (exit 1) for a
    corrupt record."""

    path = Path(local_path(onnx_dir(settings, version))) / layout.EXPORT_RECORD
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if not (rec.get("verified") and rec.get("dim") == settings.serve.dim
            and rec.get("quantize_tried") == settings.serve.quantize):
        return None

    src = Path(local_path(model_dir(settings, version)))
    if not (src / "config.json").exists():
        return rec
    served, trained = (rec.get("max_len") or {}).get("item"), tower_max_len(str(src), "item")
    if served != trained:
        log.info("export of %s serves item text at %s tokens, the model was trained at %d: not current", version,
                 served, trained)
        return None
    return rec
