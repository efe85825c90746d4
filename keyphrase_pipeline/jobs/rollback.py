"""Make an earlier published serving version current again (atomic pointer switch).

Without ``--to``: the version that was current before the live one (its manifest's ``previous``, else
the next older kept version). The target's files are checked against its manifest checksums first, so
a corrupted version is never made current.
"""

from __future__ import annotations

import json
import logging

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake

log = logging.getLogger(__name__)


def run(settings, to: str | None = None) -> dict:
    """Switch serving/CURRENT to ``to`` (or the previous version); return {from, to}.

    Raises:
        DataError: (exit 3) nothing published; no earlier kept version; ``to`` not a kept version; the target's
            manifest missing, or a file of it missing or not matching its checksum (CURRENT is then untouched).
        ConfigError: (exit 2) the lake is not local.

    ``to`` equal to CURRENT is accepted (the pointer is rewritten). No run stats are written."""
    from pathlib import Path

    from keyphrase_pipeline.jobs.serving import current_version, published_versions, read_manifest, verify_files
    from keyphrase_pipeline.core.layout import current_pointer, serving_version_dir
    from keyphrase_pipeline.core.lake import local_path

    versions = published_versions(settings)
    current = current_version(settings)
    if to is None:
        if current is None:
            raise DataError("nothing is published: no version to roll back from")
        prev = read_manifest(settings, current).get("previous") if current in versions else None
        if prev not in versions:
            older = versions[:versions.index(current)] if current in versions else versions
            prev = older[-1] if older else None
        if prev is None:
            raise DataError(f"no earlier published version to roll back to from {current} (kept: {versions})")
        to = prev
    elif to not in versions:
        raise DataError(f"unknown published version {to!r}; kept versions: {versions}")
    manifest = read_manifest(settings, to)
    verify_files(Path(local_path(serving_version_dir(settings, to))), manifest["checksums"])
    Lake.from_settings(settings).write_pointer(current_pointer(settings), to)
    log.info("rolled back serving/CURRENT from %s to %s", current, to)
    return {"from": current, "to": to, "model_version": manifest.get("model_version"), "ds": manifest.get("ds")}


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--to", default=None, help="version id to make current (default: the previous one)")


def main(settings, args) -> int:
    """``kp rollback``: ``run`` with ``--to``; prints ``{from, to, model_version, ds}`` as one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.core.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, to=args.to)))
    return 0
