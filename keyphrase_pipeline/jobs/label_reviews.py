"""Human review of the LLM judge's labels: a seeded sample of a day's judged pairs, reviewers' agree/disagree
verdicts stored append-only in the lake, and the agreement rate per day, judge and prompt version.

This is how a team measures its teacher (the judge), and where human labels for ``--labels`` training come from.

Storage (``keyphrase_pipeline.core.layout``): ``label_reviews/ds=D/part-<uuid>.parquet``, contract ``label_reviews``
(``keyphrase_pipeline.core.contracts``, docs/DATA.md). Every verdict is a new file written atomically and never
rewritten (append-only: a reviewer who changes their mind adds a newer verdict; the newest verdict of a reviewer
for a pair counts). ``D`` is the label store day of the reviewed pair.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str

VERDICTS = ("agree", "disagree")


def _store_day(settings, ds: str):
    """The label store's rows of day ``ds`` (pandas, contract ``llm_labels``), sorted by ``pair_key``; DataError when
    the store has no such day."""
    from keyphrase_pipeline.core.lake import read_parquet

    lake = Lake.from_settings(settings)
    if ds not in lake.partitions("llm_store"):
        days = lake.partitions("llm_store")
        raise DataError(f"no judged pairs for ds={ds} in the label store ("
                        f"{'days with labels: ' + days[0] + ' .. ' + days[-1] if days else 'the store is empty'})")
    df = read_parquet(lake.path("llm_store", ds=ds), contract="llm_labels")
    return df.sort_values("pair_key", kind="mergesort").reset_index(drop=True)


def sample(settings, ds, n: int):
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


def append(settings, ds, pair_key: str, verdict: str, reviewer: str, now: dt.datetime | None = None) -> dict:
    """Store one reviewer's verdict on a judged pair of label store day ``ds``: a new file
    ``label_reviews/ds=D/part-<uuid>.parquet`` (never an existing one rewritten). The judge, prompt version,
    label and P(yes) are copied from the store, not taken from the caller.

    Returns the stored record (JSON-able). Raises ConfigError (exit 2) for a verdict not in ``VERDICTS`` or an
    empty reviewer; DataError (exit 3) when the pair is not among the day's judged pairs."""
    import pandas as pd

    from keyphrase_pipeline.core.contracts import arrow_schema, check_pandas
    from keyphrase_pipeline.core.lake import write_parquet_file_atomic

    ds = ds_str(ds)
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not reviewer or not str(reviewer).strip():
        raise ConfigError("a review needs the reviewer's name")
    day = _store_day(settings, ds)
    row = day[day["pair_key"] == pair_key]
    if not len(row):
        raise DataError(f"pair {pair_key!r} is not among the judged pairs of ds={ds}")
    r = row.iloc[0]
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    record = {
        "review_id": uuid.uuid4().hex, "reviewed_at": at, "reviewer": str(reviewer), "store_ds": ds,
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


def read(settings, ds=None):
    """Every stored verdict (pandas, contract ``label_reviews`` plus ``ds``), oldest first; only day ``ds`` when
    given. Empty frame with the contract's columns when there is none."""
    import pandas as pd

    from keyphrase_pipeline.core.contracts import arrow_schema
    from keyphrase_pipeline.core.lake import read_parquet

    lake = Lake.from_settings(settings)
    days = lake.partitions("label_reviews")
    if ds is not None:
        days = [d for d in days if d == ds_str(ds)]
    frames = []
    for d in days:
        df = read_parquet(lake.path("label_reviews", ds=d), contract="label_reviews")
        if len(df):
            df["ds"] = d
            frames.append(df)
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
