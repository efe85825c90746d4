"""Is a day's input in the lake? The raw partitions the daily run reads for day ``ds``, checked before it starts.

The daily DAG's first step after planning (``plan.wait_for_input``, a sensor in ``reschedule`` mode: it holds
no worker slot between checks) waits for them instead of letting the CTR job fail on a missing partition and
burn its retries. Upstream logs often land late; a day whose input never comes fails once, at the sensor's
timeout, with the missing paths in its message. The input contracts (``keyphrase_pipeline.core.contracts``):

* ``raw/events/ds=D/``   the day's search log (impressions and clicks): the CTR job;
* ``raw/catalog/ds=D/``  the day's catalog snapshot: pair selection, item embedding;
* ``raw/keyphrases/``    the keyphrase inventory: pair selection, keyphrase embedding.

A partition counts as present when its folder holds at least one data file (``*.parquet``, ``*.csv``,
``*.json``); a writer that lands files atomically (write, then rename the folder) gives exactly that. Each
present partition (and ``raw/sr_labels/ds=D/`` when there) then has every file's parquet footer checked
against its contract, the check the stages run before reading (``keyphrase_pipeline.core.conform.check_files``):
a file with a renamed or missing column or an incompatible type makes the day not ready (``invalid``, naming
the file and the column); what is conformed on read (timestamp units and zones, integer and float widths)
is listed under ``conformed``. The same check runs from the command line: ``kp inputs --ds D`` (exit 0 when
ready, 3 when something is missing or invalid).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.conform import check_files
from keyphrase_pipeline.core.errors import DataError, SchemaError
from keyphrase_pipeline.core.errors import DataError as _DataError
from keyphrase_pipeline.core.lake import Lake, _fs, ds_str

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

# (dataset, partitioned by ds, what needs it)
REQUIRED: list[tuple[str, bool, str]] = [
    ("events", True, "CTR labels"),
    ("catalog", True, "pair selection and item embedding"),
    ("keyphrases", False, "pair selection and keyphrase embedding"),
]
OPTIONAL: list[tuple[str, bool, str]] = [("sr_input", True, "search-relevance labels")]  # checked when present
DATA_SUFFIXES = (".parquet", ".csv", ".json")


def _has_data(lake: Lake, path: str) -> bool:
    """True when ``path`` is a folder holding at least one data file (searched recursively, hidden/underscore
    files such as ``_SUCCESS`` not counted) or is itself a data file."""

    fs, p = _fs(path)
    if not fs.exists(p):
        return False
    if fs.isfile(p):
        return p.endswith(DATA_SUFFIXES)
    for f in fs.find(p):
        name = f.rsplit("/", 1)[-1]
        if not name.startswith(("_", ".")) and name.endswith(DATA_SUFFIXES):
            return True
    return False


def day_inputs(settings: Settings, ds: str) -> dict:
    """Which of day ``ds``'s inputs (``REQUIRED``) are in the lake, and do their files keep their contracts?

    Returns ``{"ds", "ready": bool, "present": [path, ...], "missing": [{"path", "needed_for"}, ...],
    "invalid": [{"path", "needed_for", "error", "schema": bool}, ...], "conformed": [{"file", "columns": [str]}, ...]}`` (paths
    as ``Lake.path`` gives them); ready when nothing is missing or invalid. ``invalid``: a present partition (of
    ``REQUIRED``, or ``OPTIONAL`` when there) with a file the stages would refuse (``conform.check_files``:
    a missing/renamed column, an incompatible type, not parquet), ``error`` naming the file and the column.
    Raises ConfigError (exit 2) when ``ds`` is not YYYY-MM-DD."""

    lake = Lake.from_settings(settings)
    day = ds_str(ds)
    present, missing, invalid, conformed = [], [], [], []
    for required, (dataset, daily, needed_for) in [(True, r) for r in REQUIRED] + [(False, o) for o in OPTIONAL]:
        path = lake.path(dataset, ds=day) if daily else lake.path(dataset)
        if not _has_data(lake, path):
            if required:
                missing.append({"path": path, "needed_for": needed_for})
            continue
        present.append(path)
        try:
            checks = check_files(path, dataset)
        except _DataError as exc:  # SchemaError too
            from keyphrase_pipeline.core.errors import SchemaError as _SchemaError

            # schema: a column renamed or of another type (the writer's contract is broken: it will not heal);
            # else a file not readable as parquet, e.g. one still being written (may heal: the sensor waits)
            invalid.append({"path": path, "needed_for": needed_for, "error": str(exc),
                            "schema": isinstance(exc, _SchemaError)})
            continue
        conformed += [{"file": c.path, "columns": list(c.notes)} for c in checks if c.notes]
    return {"ds": day, "ready": not missing and not invalid, "present": present, "missing": missing,
            "invalid": invalid, "conformed": conformed}


def describe_missing(status: dict) -> str:
    """One line naming what ``day_inputs`` found missing, e.g. for a log or an error message."""
    return "; ".join(f"{m['path']} (for {m['needed_for']})" for m in status["missing"]) or "nothing"


def describe_invalid(status: dict) -> str:
    """One line naming the partitions ``day_inputs`` found invalid, with each error (file and column)."""
    return "; ".join(f"{m['error']} (for {m['needed_for']})" for m in status.get("invalid", [])) or "nothing"


def add_arguments(parser) -> None:
    """Add this command's options to ``parser`` (argparse)."""
    parser.add_argument("--ds", required=True, help="logical date (YYYY-MM-DD)")


def main(settings: Settings, args) -> int:
    """``kp inputs``: ``day_inputs`` for ``--ds`` as one JSON line; returns 0 when every input is present and
    keeps its contract.

    Raises SchemaError (exit 3) naming each invalid file and column, DataError (exit 3) naming the missing
    paths; ConfigError (exit 2) for a bad ``--ds``."""

    status = day_inputs(settings, args.ds)
    print(json.dumps(status))
    if status["invalid"]:
        raise SchemaError(f"input for ds={status['ds']} breaks its contract: {describe_invalid(status)}"
                          + (f"; missing: {describe_missing(status)}" if status["missing"] else ""))
    if not status["ready"]:
        raise DataError(f"input for ds={status['ds']} is missing: {describe_missing(status)}")
    return 0
