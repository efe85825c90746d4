"""Make an earlier published serving version current again (atomic pointer switch), and mark the one left bad.

Without ``--to``: ``serving.rollback_target``, the version that was current before the live one (its manifest's
``previous``) when it is kept and not bad, else the newest kept good version of an earlier day. The version
rolled back from (left for an older one; a roll forward marks nothing) is marked bad (``serving/BAD_VERSIONS.json``):
it is never a rollback target again and is
pruned first, so a later rollback cannot land on it. The target's files are checked against its manifest
checksums first, so a corrupted version is never made current. ``--list`` shows the kept versions and marks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts.serving import (
    bad_versions,
    current_version,
    mark_bad,
    published_versions,
    read_manifest,
    rollback_target,
    unmark_bad,
    verify_files,
    version_order,
)
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, local_path
from keyphrase_pipeline.core.layout import current_pointer, serving_version_dir

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, to: str | None = None, reason: str = "", allow_bad: bool = False) -> dict:
    """Switch serving/CURRENT to ``to`` (or ``serving.rollback_target``); mark the version left bad; return
    ``{from, to, model_version, ds, marked_bad}``.

    Args:
        to: a kept published version id; None: the rollback target.
        reason: why (stored with the bad mark; default "kp rollback").
        allow_bad: accept a ``to`` marked bad (its mark is removed): the way to undo a rollback.

    Raises:
        DataError: (exit 3) nothing published; no good earlier version to roll back to; ``to`` not a kept version,
            or marked bad without ``allow_bad``; the target's manifest missing, or a file of it missing or not
            matching its checksum (CURRENT and the marks are then untouched).
        ConfigError: (exit 2) the lake is not local.

    Only a version left for an older one (by day, then publish time) is marked; rolling forward (e.g. undoing a
    rollback with ``allow_bad``) marks nothing. ``to`` equal to CURRENT is accepted (the pointer is rewritten). No run stats are written."""

    versions = published_versions(settings)
    current = current_version(settings)
    bad = bad_versions(settings)
    if to is None:
        if current is None:
            raise DataError("nothing is published: no version to roll back from")
        to = rollback_target(settings, current)
        if to is None:
            raise DataError(f"no earlier good published version to roll back to from {current} (kept: {versions}; "
                            f"marked bad: {sorted(bad)})")
    elif to not in versions:
        gone = (f" (marked bad on {str(bad[to].get('marked_at'))[:10]}: {bad[to].get('reason')}; since pruned)"
                if to in bad else "")
        raise DataError(f"unknown published version {to!r}{gone}; kept versions: {versions}")
    elif to in bad and not allow_bad:
        raise DataError(f"version {to} is marked bad ({bad[to].get('reason')}, {bad[to].get('marked_at')}): not a rollback "
                        "target; pass --allow-bad to make it current anyway (its mark is removed)")
    manifest = read_manifest(settings, to)
    verify_files(Path(local_path(serving_version_dir(settings, to))), manifest["checksums"])
    if to in bad:
        unmark_bad(settings, to)
    Lake.from_settings(settings).write_pointer(current_pointer(settings), to)
    marked = None
    if current in versions and current != to and version_order(read_manifest(settings, current)) > version_order(manifest):
        marked = mark_bad(settings, current, reason or f"kp rollback to {to}")  # left for an older version
    log.info("rolled back serving/CURRENT from %s to %s%s", current, to, " (marked bad)" if marked else "")
    return {"from": current, "to": to, "model_version": manifest.get("model_version"), "ds": manifest.get("ds"),
            "marked_bad": current if marked else None}


def list_versions(settings: Settings) -> list[dict]:
    """The kept published versions, oldest first: ``{version, ds, model_version, created_at, current, bad,
    rollback_target}``, then the bad marks whose bundle was pruned (``kept`` False)."""

    current, bad = current_version(settings), bad_versions(settings)
    target = rollback_target(settings, current)
    out = []
    for v in published_versions(settings):
        m = read_manifest(settings, v)
        out.append({"version": v, "ds": m.get("ds"), "model_version": m.get("model_version"),
                    "created_at": m.get("created_at"), "current": v == current, "bad": bad.get(v),
                    "rollback_target": v == target, "kept": True})
    kept = {r["version"] for r in out}
    out += [{"version": v, "ds": b.get("ds"), "model_version": b.get("model_version"), "bad": b, "kept": False}
            for v, b in sorted(bad.items()) if v not in kept]
    return out


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--to", default=None, help="version id to make current (default: the rollback target)")
    parser.add_argument("--reason", default="", help="why (stored with the bad mark of the version left)")
    parser.add_argument("--allow-bad", action="store_true", help="accept a --to marked bad (removes its mark)")
    parser.add_argument("--list", action="store_true", help="list the kept versions, CURRENT, the target and marks")


def main(settings: Settings, args) -> int:
    """``kp rollback``: ``run`` with ``--to``; prints ``{from, to, model_version, ds, marked_bad}`` as one JSON line
    and returns 0. ``--list``: one JSON line per version (``list_versions``).

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    if getattr(args, "list", False):
        for row in list_versions(settings):
            print(json.dumps(row, default=str))
        return 0
    print(json.dumps(run(settings, to=args.to, reason=args.reason, allow_bad=args.allow_bad)))
    return 0
