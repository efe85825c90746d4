"""A table a user hands to ``kp`` (``--labels``, ``--pairs``): read by extension, every CSV column as text, a
repeated column name refused before pandas can rename it.

Spreadsheets, pandas and pyarrow all write a header that names a column twice without complaint. pandas then
reads the second as ``label.1`` (CSV) and pyarrow refuses only when the column is selected (parquet). Either
way, which of the two a command uses would be a guess, and a file written back (``kp score``) would not hold the
columns it read, so :func:`read_user_table` refuses such a file, naming the repeated names, before reading it.
"""

from __future__ import annotations

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
    ``007``, ``1e3``, ``NA`` and ``null`` stay as written; UTF-8, a byte-order mark dropped); any other extension:
    parquet, as stored, a file or a dataset directory (partitioned or not). ``flag`` (e.g. ``"--labels"``) starts
    every message. Columns without a name (a spreadsheet's trailing separators) are not repeated names: pandas
    reads them as ``Unnamed: 4``, ``Unnamed: 5``.

    Raises DataError (exit 3): no such file; a header (CSV/TSV: its first non-blank line, as pandas takes it) or a
    schema (parquet) naming a column twice, naming the repeated names; unreadable (the reader's error, with a hint
    when the text is not UTF-8, or when a file's extension is neither ``.parquet`` nor ``.pq`` and so it was read
    as parquet)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DataError(f"{flag} {path}: no such file")
    suffix = p.suffix.lower()
    sep = TEXT_SEPARATORS.get(suffix)
    try:
        names = _column_names(p, sep)
        repeated = sorted(name for name, n in Counter(names).items() if n > 1 and name != "")
        if repeated:
            where = "header" if sep is not None else "parquet schema"
            raise DataError(f"{flag} {path}: column name(s) {repeated} appear more than once in the {where}; "
                            "rename them (a reader would keep one and rename or refuse the other)")
        if sep is not None:
            return pd.read_csv(p, sep=sep, keep_default_na=False, dtype=str)  # pandas drops a UTF-8 BOM itself
        return pd.read_parquet(p)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem, named as such
        if isinstance(exc, UnicodeDecodeError):
            hint = "; the file is not UTF-8: save it as UTF-8 (e.g. \"CSV UTF-8\" in a spreadsheet)"
        elif sep is None and suffix not in (".parquet", ".pq") and not p.is_dir():
            hint = (f"; a file named {suffix or 'without an extension'} is read as parquet: name a CSV file .csv, "
                    "a TSV file .tsv")
        else:
            hint = ""
        raise DataError(f"{flag} {path}: cannot read ({type(exc).__name__}: {exc}){hint}") from None


def _column_names(p: Path, sep: str | None) -> list[str]:
    """Column names as the file writes them, before any reader renames one: the header row of a CSV/TSV as pandas
    finds it (blank lines skipped, quotes and a BOM handled; an unnamed column is ""), or a parquet file's or
    dataset's schema (footers only, no data read; a partitioned dataset's partition columns included). Raises the
    reader's error when the file is not that format."""
    if sep is None:
        import pyarrow.parquet as pq

        return list(pq.ParquetDataset(p).schema.names)
    import pandas as pd

    head = pd.read_csv(p, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    return head.iloc[0].tolist() if len(head) else []
