"""A table a user hands to ``kp`` (``--labels``, ``--pairs``): read by extension, every CSV column as text, a
repeated column name refused before pandas can rename it.

Spreadsheets, pandas and pyarrow all write a header that names a column twice without complaint. pandas then
reads the second as ``label.1`` (CSV) and pyarrow refuses only when the column is selected (parquet). Either
way, which of the two a command uses would be a guess, and a file written back (``kp score``) would not hold the
columns it read, so :func:`read_user_table` refuses such a file, naming the repeated names, before reading it.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

TEXT_SEPARATORS = {".csv": ",", ".tsv": "\t"}  # read as text; any other extension is read as parquet


def read_user_table(path: str, flag: str) -> "pd.DataFrame":
    """The table at ``path`` as a pandas DataFrame, columns as the file names them.

    ``.csv`` / ``.tsv`` (by extension, case-insensitive): every column as text (``dtype=str``, no NA guessing:
    ``007``, ``1e3``, ``NA`` and ``null`` stay as written; a UTF-8 byte-order mark is dropped); any other
    extension: parquet, as stored. ``flag`` (e.g. ``"--labels"``) starts every message.

    Raises DataError (exit 3): no such file; a header (CSV/TSV) or schema (parquet) naming a column twice,
    naming the repeated names; unreadable (the reader's error, with a hint when the extension is neither
    ``.parquet`` nor ``.pq`` and so was read as parquet)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DataError(f"{flag} {path}: no such file")
    suffix = p.suffix.lower()
    sep = TEXT_SEPARATORS.get(suffix)
    try:
        names = _header(p, sep)
        repeated = sorted(name for name, n in Counter(names).items() if n > 1)
        if repeated:
            raise DataError(f"{flag} {path}: column name(s) {repeated} appear more than once in the header; "
                            "rename them (a reader would keep one and rename or refuse the other)")
        if sep is not None:
            return pd.read_csv(p, sep=sep, keep_default_na=False, dtype=str)  # pandas drops a UTF-8 BOM itself
        return pd.read_parquet(p)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem, named as such
        hint = "" if sep is not None or suffix in (".parquet", ".pq") else (
            f"; a file named {suffix or 'without an extension'} is read as parquet: name a CSV file .csv, "
            "a TSV file .tsv")
        raise DataError(f"{flag} {path}: cannot read ({type(exc).__name__}: {exc}){hint}") from None


def _header(p: Path, sep: str | None) -> list[str]:
    """Column names as the file writes them, before any reader renames one: a CSV/TSV's first row, or a
    parquet footer's schema (no data read). Raises the reader's error when the file is not that format."""
    if sep is None:
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    with p.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter=sep), [])
