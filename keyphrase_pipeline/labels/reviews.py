"""Human review of the LLM judge's labels: a seeded sample of a day's judged pairs, reviewers' agree/disagree
verdicts stored append-only in the lake, the agreement rate per day, judge and prompt version, and the verdicts as
human labels (``human_labels``: training reads them over the judge's labels, ``labels.training_data``).

Verdicts come from the Keyphrases page's label review and from the DAG's adjudication task (Airflow
human-in-the-loop, ``commands.adjudicate``): one store, one path into training.

This is how a team measures its teacher (the judge), and where human labels for ``--labels`` training come from:
``kp label-reviews --export FILE [--from D] [--to D]`` (``export``) writes the newest verdict per pair (across
reviewers), joined to the label store's title, category and keyphrase, as a ``--labels``-ready file (``label``:
agree -> the judge's label, disagree -> its opposite).

Storage (``keyphrase_pipeline.core.layout``): ``label_reviews/ds=D/part-<uuid>.parquet``, contract ``label_reviews``
(``keyphrase_pipeline.core.contracts``, docs/DATA.md). Every verdict is a new file written atomically and never
rewritten (append-only: a reviewer who changes their mind adds a newer verdict; the newest verdict of a reviewer
for a pair counts). ``D`` is the label store day of the reviewed pair.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.contracts import arrow_schema, check_pandas
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, _fs, ds_str, read_parquet, write_parquet_file_atomic, write_text_atomic

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

VERDICTS = ("agree", "disagree")
EXPORT_COLUMNS = ["title", "category", "keyphrase", "label", "item_id", "keyphrase_id", "pair_key", "store_ds",
                  "verdict", "llm_label", "p_yes", "judge", "judge_model", "prompt_version", "reviewer", "reviewed_at"]
log = logging.getLogger(__name__)


class UncheckedPairError(DataError):
    """A verdict's pair is not among the readable files of its label store day, and some of the day's files cannot
    be read: whether the pair was judged cannot be checked (the API answers 409). Exit code 3."""


def lake_relative(lake, text: str) -> str:
    """``text`` with the lake root's absolute path taken out (messages name lake files as ``dataset/ds=D/file``,
    never the server's absolute paths)."""
    root = str(lake.root).rstrip("/")
    return str(text).replace(root + "/", "").replace(root, "<lake>") if root else str(text)


def _check_store_day(lake, ds: str) -> None:
    if ds not in lake.partitions("llm_store"):
        days = lake.partitions("llm_store")
        raise DataError(f"no judged pairs for ds={ds} in the label store ("
                        f"{'days with labels: ' + days[0] + ' .. ' + days[-1] if days else 'the store is empty'})")


def _store_day(settings: Settings, ds: str):
    """The label store's rows of day ``ds`` (pandas, contract ``llm_labels``), sorted by ``pair_key``; DataError when
    the store has no such day."""

    lake = Lake.from_settings(settings)
    _check_store_day(lake, ds)
    df = read_parquet(lake.path("llm_store", ds=ds), contract="llm_labels")
    return df.sort_values("pair_key", kind="mergesort").reset_index(drop=True)


def _store_day_by_file(settings: Settings, ds: str):
    """``(rows, unreadable)``: the label store day ``ds`` read file by file (pandas rows of contract ``llm_labels``
    from the readable files, or None when none is; ``unreadable``: ``"llm_labels/store/ds=D/<file>: <error>"`` for
    each file that is not parquet or breaks the contract). DataError when the store has no such day."""
    import pandas as pd

    lake = Lake.from_settings(settings)
    _check_store_day(lake, ds)
    base = lake.path("llm_store", ds=ds)
    fs, p = _fs(base)
    frames, bad = [], []
    for entry in sorted(fs.find(p)):
        rel = entry[len(p.rstrip("/")) + 1:] if entry.startswith(p.rstrip("/") + "/") else entry.rsplit("/", 1)[-1]
        if any(part.startswith((".", "_")) for part in rel.split("/")) or not rel.endswith(".parquet"):
            continue
        try:
            frames.append(read_parquet(f"{base}/{rel}", contract="llm_labels"))
        except Exception as exc:  # noqa: BLE001 - not parquet (ArrowInvalid), breaks the contract, unreadable
            bad.append(lake_relative(lake, f"{base}/{rel}") + f": {type(exc).__name__}: "
                       + lake_relative(lake, str(exc))[:120])
    rows = pd.concat(frames, ignore_index=True) if frames else None
    return rows, bad


def sample(settings: Settings, ds, n: int):
    """``n`` judged pairs of the label store day ``ds`` drawn at random with a seed derived from ``ds`` (the same
    sample for every reviewer and every reload of that day). Returns pandas rows of contract ``llm_labels``, in
    sample order; fewer when the day has fewer. Raises DataError (exit 3) when the store has no such day,
    ConfigError (exit 2) when ``ds`` is not a date or ``n`` < 1."""
    import numpy as np

    ds = ds_str(ds)
    if n < 1:
        raise ConfigError(f"sample size must be >= 1, got {n}")
    day = _store_day(settings, ds)
    rng = np.random.default_rng(int(hashlib.sha1(f"kp-label-review:{ds}".encode()).hexdigest()[:8], 16))
    idx = rng.permutation(len(day))[:n]
    return day.iloc[idx].reset_index(drop=True)


def append(settings: Settings, ds, pair_key: str, verdict: str, reviewer: str, now: dt.datetime | None = None,
           review_id: str | None = None, store_day: tuple | None = None) -> dict:
    """Store one reviewer's verdict on a judged pair of label store day ``ds``: a new file
    ``label_reviews/ds=D/part-<uuid>.parquet`` (never an existing one rewritten). The judge, prompt version,
    label and P(yes) are copied from the store, not taken from the caller.

    ``review_id`` (hex): a caller that may record the same answer twice (the DAG's adjudication task, when it is
    cleared and re-run) passes an id derived from the answer, so the second write replaces the same file with the
    same verdict instead of adding a copy. Default: a random id.

    The store day is read file by file: a damaged file of the day does not stop a verdict on a pair found in the
    readable ones. ``store_day``: that read, ``(rows or None, unreadable files)`` as ``_store_day_by_file`` returns
    it, from a caller storing several verdicts on one day (read once, not once per verdict).

    Returns the stored record (JSON-able). Raises ConfigError (exit 2) for a verdict not in ``VERDICTS`` or an
    empty reviewer; DataError (exit 3) when the pair is not among the day's judged pairs; UncheckedPairError (a
    DataError) when it is not in the readable files and some of the day's files cannot be read (naming them)."""
    import pandas as pd

    ds = ds_str(ds)
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not reviewer or not str(reviewer).strip():
        raise ConfigError("a review needs the reviewer's name")
    if not _HEX.fullmatch(str(pair_key or "")):
        raise ConfigError(f"pair_key must be a hex key (the label store's sha1), got {pair_key!r}")
    if review_id is not None and not _HEX.fullmatch(str(review_id)):
        raise ConfigError(f"review_id must be hex, got {review_id!r}")
    day, bad = store_day if store_day is not None else _store_day_by_file(settings, ds)
    row = day[day["pair_key"] == pair_key] if day is not None else []
    if not len(row) and bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UncheckedPairError(
            f"pair {pair_key!r} cannot be checked: it is not in the readable files of label store day ds={ds}, and "
            f"{len(bad)} file(s) of that day cannot be read ({shown}). Rewrite the day with `kp merge-labels --ds "
            f"{ds}` (or clear the day's merge task in Airflow), then give the verdict again")
    if not len(row):
        raise DataError(f"pair {pair_key!r} is not among the judged pairs of ds={ds}")
    r = row.iloc[0]
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    record = {
        "review_id": review_id or uuid.uuid4().hex, "reviewed_at": at, "reviewer": str(reviewer), "store_ds": ds,
        "pair_key": str(pair_key), "item_id": int(r["item_id"]), "keyphrase_id": int(r["keyphrase_id"]),
        "judge": str(r["judge"]), "judge_model": str(r["judge_model"]), "prompt_version": str(r["prompt_version"]),
        "llm_label": int(r["label"]), "p_yes": float(r["p_yes"]), "verdict": verdict,
    }
    df = pd.DataFrame([record]).astype({"item_id": "int64", "keyphrase_id": "int64", "llm_label": "int32",
                                        "p_yes": "float64", "reviewed_at": "datetime64[us]"})
    df = df[[f.name for f in arrow_schema("label_reviews")]]
    check_pandas(df, "label_reviews", where="label review (to write)")
    write_parquet_file_atomic(df, layout.label_review_file(settings, ds, record["review_id"]))
    return {**record, "reviewed_at": at.isoformat() + "Z"}


def _read_day_files(lake, d: str, skipped: list[str]):
    """Day ``d`` of ``label_reviews`` read file by file: the readable files' rows (a list of frames), the others (not
    parquet, or without the contract's columns and types) named in ``skipped`` as
    ``"label_reviews/ds=D/<file>: <error>"`` (paths relative to the lake root)."""

    base = lake.path("label_reviews", ds=d)
    fs, p = _fs(base)
    frames = []
    for entry in sorted(fs.ls(p, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or not name.endswith(".parquet"):
            continue
        try:
            df = read_parquet(f"{base}/{name}", contract="label_reviews")
        except Exception as exc:  # noqa: BLE001 - not parquet (ArrowInvalid), breaks the contract, unreadable
            where = f"{layout.partition_name('label_reviews', d)}/{name}"
            skipped.append(f"{where}: {type(exc).__name__}: {lake_relative(lake, str(exc))[:120]}")
            continue
        ok, reasons = valid_rows(df)
        if reasons:
            skipped.append(f"{layout.partition_name('label_reviews', d)}/{name}: {int((~ok).sum())} of {len(df)} row(s) left out: "
                           + "; ".join(reasons))
            df = df[ok].reset_index(drop=True)
        frames.append(df)
    return frames


_HEX = re.compile(r"[0-9a-fA-F]+")


def _is_date(v) -> bool:
    """Whether ``v`` is a real calendar date written ``YYYY-MM-DD`` (str)."""
    if not isinstance(v, str) or len(v) != 10 or not v.isascii():
        return False
    try:
        return dt.date.fromisoformat(v).isoformat() == v
    except ValueError:
        return False


def valid_rows(df) -> tuple["object", list[str]]:
    """``(ok, reasons)`` for review rows (pandas, contract ``label_reviews``) whose columns passed the contract:
    ``ok`` a boolean Series, False for a row whose values are not usable: ``store_ds`` not a real date
    ``YYYY-MM-DD``, ``verdict`` not in ``VERDICTS``, ``pair_key`` empty or not hex. ``reasons``: one text per
    failing check with the first offending value, e.g. ``"store_ds 'not-a-date' is not a date (YYYY-MM-DD)"``."""
    import pandas as pd

    checks = [
        ("store_ds", df["store_ds"].map(_is_date).astype(bool), "is not a date (YYYY-MM-DD)"),
        ("verdict", df["verdict"].map(lambda v: v in VERDICTS).astype(bool), f"is not one of {VERDICTS}"),
        ("pair_key", df["pair_key"].map(lambda v: isinstance(v, str) and bool(_HEX.fullmatch(v))).astype(bool),
         "is not a non-empty hex key"),
    ]
    ok = pd.Series(True, index=df.index)
    reasons = []
    for col, good, why in checks:
        if not good.all():
            reasons.append(f"{col} {str(df.loc[~good, col].iloc[0])[:40]!r} {why} ({int((~good).sum())} row(s))")
        ok &= good
    return ok, reasons


def read(settings: Settings, ds=None, skipped: list[str] | None = None):
    """Every stored verdict (pandas, contract ``label_reviews`` plus ``ds``), oldest first; only day ``ds`` when
    given. Empty frame with the contract's columns when there is none.

    Each file is read and checked against the contract on its own (a whole-day read would take its schema from
    one file and fill another's missing columns with nulls). A review file that cannot be read (not parquet) or
    lacks the contract's columns, or a ``ds=`` folder that is not a date, is left out, logged, and named in
    ``skipped`` when given (``"label_reviews/ds=D/<file>: <error>"``): one damaged file must not hide every other
    verdict. Values are checked too (``valid_rows``): a row whose ``store_ds`` is not a real date, whose
    ``verdict`` is not agree/disagree or whose ``pair_key`` is not hex is left out and its file named
    (``"label_reviews/ds=D/<file>: N of M row(s) left out: <reasons>"``)."""
    import pandas as pd

    lake = Lake.from_settings(settings)
    days = lake.partitions("label_reviews")
    if ds is not None:
        days = [d for d in days if d == ds_str(ds)]
    frames, bad = [], []
    for d in days:
        try:
            ds_str(d)
        except ConfigError:
            bad.append(f"{layout.partition_name('label_reviews', d)}: not a date (YYYY-MM-DD)")
            continue
        for df in _read_day_files(lake, d, bad):
            if len(df):
                df = df.drop(columns=[c for c in ("ds",) if c in df.columns])
                df["ds"] = d
                frames.append(df)
    if bad:
        log.warning("label reviews: left out %d unreadable file(s): %s", len(bad), "; ".join(bad[:5]))
        if skipped is not None:
            skipped.extend(bad)
    if not frames:
        empty = arrow_schema("label_reviews").empty_table().to_pandas()
        empty["ds"] = pd.Series(dtype=object)
        return empty
    return pd.concat(frames, ignore_index=True).sort_values(["reviewed_at", "review_id"], kind="mergesort") \
        .reset_index(drop=True)


def latest_verdicts(reviews):
    """One row per (reviewer, pair_key): the reviewer's newest verdict."""
    if not len(reviews):
        return reviews
    return reviews.sort_values(["reviewed_at", "review_id"], kind="mergesort") \
        .drop_duplicates(["reviewer", "pair_key"], keep="last").reset_index(drop=True)


def agreement(reviews) -> list[dict]:
    """The share of verdicts that agree with the judge, per label store day, judge (backend:model) and prompt
    version, counting each reviewer's newest verdict per pair: ``[{ds, judge, prompt_version, reviews, agree,
    agreement_rate (0-1), reviewers}]`` sorted by day, judge, prompt version."""
    latest = latest_verdicts(reviews)
    out = []
    if not len(latest):
        return out
    latest = latest.assign(judge_id=latest["judge"] + ":" + latest["judge_model"])
    for (d, judge, prompt), g in latest.groupby(["store_ds", "judge_id", "prompt_version"], sort=True):
        agree = int((g["verdict"] == "agree").sum())
        out.append({"ds": str(d), "judge": str(judge), "prompt_version": str(prompt), "reviews": int(len(g)),
                    "agree": agree, "agreement_rate": agree / len(g), "reviewers": int(g["reviewer"].nunique())})
    return out


def human_labels(settings: Settings, upto_ds=None):
    """The human label of every reviewed pair: the newest verdict per pair across reviewers (label store days up to
    ``upto_ds`` when given), as the label it implies (agree -> the judge's label at review time, disagree -> its
    opposite), with the pair's ``text_hash`` from its label store day: a verdict belongs to the texts, so it still
    applies after the pair is judged again under another key (a new prompt version, a key migration). Unreadable
    review files are left out and logged (``read``); verdicts whose store day or row cannot be read are left out and
    logged.

    Returns pandas ``pair_key`` (str), ``text_hash`` (str), ``human_label`` (int32 0/1), ``reviewer`` (str),
    ``reviewed_at`` (datetime64), one row per text (the newest verdict); empty with these columns when there is
    none."""
    import pandas as pd

    empty = pd.DataFrame({"pair_key": pd.Series(dtype=object), "text_hash": pd.Series(dtype=object),
                          "human_label": pd.Series(dtype="int32"), "reviewer": pd.Series(dtype=object),
                          "reviewed_at": pd.Series(dtype="datetime64[us]")})
    reviews = read(settings)
    if upto_ds is not None and len(reviews):
        reviews = reviews[reviews["store_ds"] <= ds_str(upto_ds)]
    if not len(reviews):
        return empty
    texts = []
    for d in sorted(reviews["store_ds"].unique()):
        try:
            day, bad = _store_day_by_file(settings, d)
        except DataError as exc:
            log.warning("human labels: verdicts on label store day %s left out: %s", d, exc)
            continue
        if bad:
            log.warning("human labels: %d unreadable file(s) of label store day %s: %s", len(bad), d, "; ".join(bad[:3]))
        if day is not None:
            texts.append(day[["pair_key", "text_hash"]].assign(store_ds=d))
    if not texts:
        return empty
    keys = pd.concat(texts, ignore_index=True).drop_duplicates(["store_ds", "pair_key"])
    joined = reviews.merge(keys, on=["store_ds", "pair_key"], how="inner")
    if len(joined) < len(reviews):
        log.warning("human labels: %d verdict(s) whose pair is not in its label store day left out",
                    len(reviews) - len(joined))
    newest = joined.sort_values(["reviewed_at", "review_id"], kind="mergesort").drop_duplicates("text_hash", keep="last")
    llm = newest["llm_label"].astype("int32")
    human = llm.where(newest["verdict"] == "agree", 1 - llm).astype("int32")
    return pd.DataFrame({"pair_key": newest["pair_key"].astype(str).to_numpy(),
                         "text_hash": newest["text_hash"].astype(str).to_numpy(), "human_label": human.to_numpy(),
                         "reviewer": newest["reviewer"].astype(str).to_numpy(),
                         "reviewed_at": newest["reviewed_at"].to_numpy()})


# ---- export: human labels for ``--labels`` training --------------------------------------------------------------
def export_frame(settings: Settings, from_ds=None, to_ds=None) -> tuple["object", dict]:
    """The reviewed pairs as ``--labels`` rows: the newest verdict per pair (across reviewers) of label store days
    ``from_ds`` .. ``to_ds`` (inclusive; open ends when None), joined to the label store for the pair's title,
    category and keyphrase.

    Returns ``(frame, stats)``. ``frame``: pandas, columns ``EXPORT_COLUMNS`` (``title, category, keyphrase`` str,
    ``label`` int32 0/1 = the judge's label when the verdict is agree, its opposite when disagree; then provenance:
    ids, ``pair_key``, ``store_ds``, ``verdict``, ``llm_label``, ``p_yes``, judge, prompt version, reviewer,
    ``reviewed_at`` as ISO text), sorted by ``store_ds``, ``pair_key``. ``stats``: ``{pairs, agree, disagree,
    verdicts_read, skipped_files: [..], not_in_store}`` (``not_in_store``: reviewed pairs whose store row is gone,
    left out).

    Raises ConfigError (exit 2) when a bound is not a date or ``from_ds`` > ``to_ds``; DataError (exit 3) when no
    verdict falls in the range, or a label store day of a reviewed pair is missing or unreadable (naming it)."""
    import pandas as pd

    lo = ds_str(from_ds) if from_ds is not None else None
    hi = ds_str(to_ds) if to_ds is not None else None
    if lo and hi and lo > hi:
        raise ConfigError(f"--from {lo} is after --to {hi}")
    skipped: list[str] = []
    reviews = read(settings, skipped=skipped)
    if len(reviews):
        keep = pd.Series(True, index=reviews.index)
        if lo:
            keep &= reviews["store_ds"] >= lo
        if hi:
            keep &= reviews["store_ds"] <= hi
        reviews = reviews[keep]
    span = f"{lo or 'the first day'} .. {hi or 'the last day'}"
    if not len(reviews):
        raise DataError(f"no label review verdicts for label store days {span}"
                        + (f" ({len(skipped)} unreadable review file(s) left out)" if skipped else "")
                        + ": review judged pairs in the Keyphrases page's Label review view first")
    newest = reviews.sort_values(["reviewed_at", "review_id"], kind="mergesort") \
        .drop_duplicates("pair_key", keep="last")
    texts = []
    for d in sorted(newest["store_ds"].unique()):
        try:
            day = _store_day(settings, d)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged store file: name it and what to do
            lake = Lake.from_settings(settings)
            raise DataError(f"label store day ds={d} cannot be read ({type(exc).__name__}: "
                            f"{lake_relative(lake, str(exc))[:200]}): "
                            f"rewrite it with `kp merge-labels --ds {d}`, or export without it (--from/--to)") from None
        texts.append(day[["pair_key", "title", "category", "keyphrase"]].assign(store_ds=d))
    store = pd.concat(texts, ignore_index=True)
    out = newest.merge(store, on=["store_ds", "pair_key"], how="left")
    missing = out["title"].isna()
    out = out[~missing].copy()
    if not len(out):
        raise DataError(f"none of the {int(missing.sum())} reviewed pair(s) of {span} is in the label store any more")
    # only agree -> the judge's label and disagree -> its opposite; ``read`` already left out any other verdict,
    # and a row that still has one is dropped here rather than read as a disagreement (which flips the label)
    agree, disagree = out["verdict"] == "agree", out["verdict"] == "disagree"
    out = out[agree | disagree].copy()
    agree = out["verdict"] == "agree"
    out["label"] = out["llm_label"].astype("int32").where(agree, 1 - out["llm_label"].astype("int32")).astype("int32")
    out["reviewed_at"] = pd.to_datetime(out["reviewed_at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = out[EXPORT_COLUMNS].sort_values(["store_ds", "pair_key"], kind="mergesort").reset_index(drop=True)
    stats = {"pairs": int(len(out)), "agree": int(agree.sum()), "disagree": int((~agree).sum()),
             "verdicts_read": int(len(reviews)), "skipped_files": skipped, "not_in_store": int(missing.sum()),
             "from": lo, "to": hi}
    return out, stats


def export(settings: Settings, path: str, from_ds=None, to_ds=None) -> dict:
    """Write ``export_frame`` to ``path`` atomically (readers never see a partial file): parquet for ``.parquet`` /
    ``.pq``, CSV for ``.csv``, TSV for ``.tsv`` (UTF-8, header row), ready for ``kp train-bi --labels FILE``
    (``keyphrase_pipeline.labels.training_data.read_labels_file``). Returns the stats plus ``path``.

    Raises ConfigError (exit 2) for another extension; the errors of ``export_frame``."""

    suffix = Path(path).suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
        raise ConfigError(f"--export {path}: write .parquet, .pq, .csv or .tsv (got {suffix or 'no extension'!r})")
    df, stats = export_frame(settings, from_ds, to_ds)
    if suffix in (".csv", ".tsv"):
        write_text_atomic(str(path), df.to_csv(index=False, sep="\t" if suffix == ".tsv" else ","))
    else:
        write_parquet_file_atomic(df, str(path))
    return {**stats, "path": str(path)}
