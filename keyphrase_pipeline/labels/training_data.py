"""Training frames for distillation, read from the lake's label sources (or from a user's file).

Sources (each optional except the LLM labels):

* LLM labels: the label store ``llm_labels/store/ds=*`` up to ``ds`` (deduplicated: one row per
  ``pair_key``, then one per ``text_hash``, the latest judgement winning);
* CTR positives: ``ctr_labels/ds=D`` (latest ``D <= ds``), ``label == 1``, joined to the catalog snapshot
  (latest ``<= ds``) and the keyphrase universe for their texts; at most ``train.max_ctr_positives`` of them;
* SR labels: ``sr_labels/ds=D`` (latest ``<= ds``) joined the same way; at most ``train.max_sr_labels``;
* or a user's parquet/CSV with ``title, category, keyphrase, label`` (``--labels FILE``), which replaces the
  LLM labels (CTR/SR are then not read: the file is the whole truth the user wants to train on).

Texts follow the one normalisation rule (``keyphrase_pipeline.models.text.clean``). A pair whose title or
keyphrase is blank after it (``empty``: whitespace, zero-width, BOM or bidi characters only) or unreadable
under the base encoder's tokenizer (``unreadable``: every token special/unknown, e.g. emoji-only) cannot be
learned from: from the lake such pairs are left out and counted in the snapshot (``dropped_texts``:
``{source: {reason: rows}}`` with reasons ``empty_title``, ``unreadable_title``, ``empty_keyphrase``,
``unreadable_keyphrase``; the label store keeps them); in a user's file they are a DataError naming the row.

The held-out test set is chosen by a hash of ``text_hash`` (``in_test_split``), never at random per run,
so it is the same set every day (a pair, once in test, stays in test) and champion and challenger compare
on the same pairs. CTR/SR pairs that are in the LLM test set are dropped from training (no leakage).

Memory does not grow with the catalog (issue 32): the CTR and SR labels are read a batch at a time and capped
(``capped_pairs``: beyond the cap, the pairs with the smallest ``core.hashing.pair_hash``, the same sample on every
run), and only the catalog and keyphrase rows those pairs name are read (``lake.rows_where``), not the snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keyphrase_pipeline.core.contracts import check_pandas
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.hashing import pair_hash
from keyphrase_pipeline.core.lake import Lake, ds_str, parquet_dataset, read_parquet, rows_where, scan
from keyphrase_pipeline.core.user_files import read_user_table
from keyphrase_pipeline.labels.store import text_hash
from keyphrase_pipeline.models.base import resolve_base_model
from keyphrase_pipeline.models.text import EMPTY, clean, text_problems, tokenizer_at

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

REQUIRED_FILE_COLUMNS = ("title", "category", "keyphrase", "label")


def in_test_split(text_hashes, fraction: float) -> np.ndarray:
    """Stable held-out membership: a pair is in test when a hash of its text_hash falls below ``fraction``.

    ``text_hashes``: sequence of str (any key: ``load_training_data`` passes lower-cased keyphrases for a
    user's file); ``fraction`` in [0, 1]. Returns a bool ``np.ndarray`` of shape ``(n,)``."""
    out = np.empty(len(text_hashes), dtype=bool)
    for i, h in enumerate(text_hashes):
        v = int(hashlib.sha1(f"kp-split:{h}".encode()).hexdigest()[:8], 16) / 2**32
        out[i] = v < fraction
    return out


@dataclasses.dataclass
class TrainingData:
    """The frames both trainers and the evaluator read (pandas DataFrames), from ``load_training_data``.

    ``llm``: ``title, category, keyphrase`` (str, cleaned), ``label`` (int32 0/1), ``p`` (float, P(yes) in
    [0, 1], or the file's label), ``text_hash, pair_key`` (str), ``item_id, keyphrase_id`` (int64, -1 when a
    user's file has none), ``split`` (``train`` | ``test``), and from the label store ``source`` (str: which
    selection drew the pair, ``ctr_positive``, ``random``, ...). ``ctr``: CTR positives, ``sr``: search-relevance
    labels, both ``item_id, keyphrase_id, label, title, category, keyphrase`` with no LLM test pair.
    ``snapshot``: JSON-able provenance (stored as ``data.json``)."""

    # pandas DataFrame: title, category, keyphrase, label(int 0/1), p(float), text_hash, pair_key, item_id,
    # keyphrase_id, split
    llm: "object"
    ctr: "object"  # CTR positives: title, category, keyphrase, item_id, keyphrase_id
    sr: "object"  # SR labels: title, category, keyphrase, label
    snapshot: dict  # where the data came from (stored as data.json beside the model)

    @property
    def llm_train(self):
        return self.llm[self.llm["split"] == "train"].reset_index(drop=True)

    @property
    def llm_test(self):
        return self.llm[self.llm["split"] == "test"].reset_index(drop=True)


#: pairs of each source (CTR positives, random) the judge's CTR check needs
MIN_PAIRS_PER_SOURCE = 50


def judge_ctr_auc(llm) -> float | None:
    """ROC AUC of the judge's P(yes) (``p``) between the stored pairs drawn from CTR positives (``source``
    ``ctr_positive``) and those drawn at random (``random``): how well the judge tells pairs buyers clicked from
    arbitrary ones, a check that needs no truth. None without a ``source`` column or with fewer than
    ``MIN_PAIRS_PER_SOURCE`` pairs of either source. (``sklearn.metrics.roc_auc_score``.)"""
    if llm is None or "source" not in llm or "p" not in llm:
        return None
    pick = llm[llm["source"].isin(["ctr_positive", "random"])]
    n_pos = int((pick["source"] == "ctr_positive").sum())
    if n_pos < MIN_PAIRS_PER_SOURCE or len(pick) - n_pos < MIN_PAIRS_PER_SOURCE:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(pick["source"] == "ctr_positive", pick["p"].astype(float)))


def label_balance(settings: Settings, data: TrainingData) -> dict:
    """Can the LLM labels of ``data`` be trained on? Not when the judge (almost) always answers the same, nor when
    its P(yes) does not tell pairs buyers clicked from random ones.

    Returns ``{"positive_share", "smaller_class_share", "min_share" (train.min_label_class_share), "ctr_auc"
    (``judge_ctr_auc`` or None), "min_ctr_auc" (train.min_judge_ctr_auc), "usable", "why"}``: shares in [0, 1]
    of the LLM labels (train and test), ``why`` None when usable. Labels from a user's ``--labels`` file are
    always usable here (``load_training_data`` refuses a one-class file); each check is off at 0."""
    y = data.llm["label"].to_numpy() if data.llm is not None and len(data.llm) else np.empty(0)
    pos = float(y.mean()) if len(y) else 0.0
    smaller, floor = min(pos, 1.0 - pos), float(settings.train.min_label_class_share)
    from_file = data.snapshot.get("source") == "file"
    ctr_auc, min_auc = (None if from_file else judge_ctr_auc(data.llm)), float(settings.train.min_judge_ctr_auc)
    why = None
    if not from_file and floor > 0 and (not len(y) or smaller < floor):
        why = (f"the judge labelled {pos:.1%} of the {len(y)} stored pairs relevant (a label is P(yes) >= the "
               f"judge.threshold of its labelling run): its smaller class is under train.min_label_class_share "
               f"{floor:g}, so the labels teach nothing; check the judge (kp judge-quality on a synthetic lake, the "
               "day's label stats)")
    elif not from_file and min_auc > 0 and ctr_auc is not None and ctr_auc < min_auc:
        why = (f"the judge's P(yes) ranks the stored pairs drawn from CTR positives above those drawn at random with "
               f"AUC {ctr_auc:.3f}, under train.min_judge_ctr_auc {min_auc:g}: it does not tell clicked pairs from "
               "arbitrary ones, so its labels would teach noise; check the judge (kp judge-quality on a synthetic lake)")
    return {"positive_share": round(pos, 4), "smaller_class_share": round(smaller, 4), "min_share": floor,
            "ctr_auc": None if ctr_auc is None else round(ctr_auc, 4), "min_ctr_auc": min_auc,
            "usable": why is None, "why": why}


# ---- unreadable texts ---------------------------------------------------------------------------------
def encoder_tokenizer(settings: Settings):
    """The tokenizer of the configured base encoder (``train.base_model``, else the packaged MiniLM)."""

    return tokenizer_at(resolve_base_model(settings.train.base_model))


def text_reasons(df, tokenizer=None) -> "object":
    """Per row of ``df`` (title, keyphrase columns): the first problem, ``empty_title`` / ``unreadable_title`` /
    ``empty_keyphrase`` / ``unreadable_keyphrase`` (``keyphrase_pipeline.models.text.text_problems``), or None.
    Returns a pandas Series of object aligned with ``df``."""

    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for col in ("title", "keyphrase"):
        todo = out.isna().to_numpy()
        if not todo.any():
            break
        problems = text_problems(df.loc[todo, col].tolist(), tokenizer)
        out.loc[todo] = [None if p is None else f"{p}_{col}" for p in problems]
    return out


def drop_unreadable(df, tokenizer, source: str) -> tuple["object", dict[str, int]]:
    """``df`` without the rows ``text_reasons`` flags, and {reason: rows dropped} (logged when any)."""
    if len(df) == 0:
        return df, {}
    reasons = text_reasons(df, tokenizer)
    bad = reasons.notna()
    counts = {str(k): int(v) for k, v in reasons[bad].value_counts().sort_index().items()}
    if counts:
        log.warning("%s: left out %d pair(s) the encoder cannot read: %s", source, int(bad.sum()), counts)
    return df[~bad.to_numpy()].reset_index(drop=True), counts


# ---- a user's file ------------------------------------------------------------------------------------
def read_labels_file(path: str, min_rows: int, tokenizer=None) -> "object":
    """Read and validate a user's pairs file (parquet, or CSV/TSV by extension); DataError naming the problem.

    Needs ``title, keyphrase, label`` (``category`` optional, then empty); ``label`` is a number in [0, 1]
    (a probability is kept in ``p``; ``label = p >= 0.5``). Returns a pandas DataFrame ``title, category,
    keyphrase`` (str, normalised by ``keyphrase_pipeline.models.text.clean``; every column read as
    text, so ``007``, ``1e3``, ``NA``, ``null`` stay as written), ``label`` (int32), ``p`` (float64), ``text_hash,
    pair_key`` (the same sha1),
    ``item_id, keyphrase_id`` (int64, -1 when absent), one row per text (the last duplicate kept; how many rows
    were duplicates and how many pairs had conflicting labels is logged as a warning and kept in the frame's
    ``attrs["file_stats"]``: ``rows``, ``duplicate_rows``, ``conflicting_pairs``).

    Read by ``keyphrase_pipeline.core.user_files.read_user_table``.
    Raises DataError (exit 3): no such file, unreadable, a header naming a column twice, missing columns, a blank
    title or keyphrase (or, with ``tokenizer``, one whose tokens are all special/unknown: emoji-only), naming the column, count and
    first row; a label not a number in [0, 1]; fewer than ``min_rows`` distinct pairs (counted after duplicates are dropped).
    (``load_training_data`` also refuses a file whose pairs are all in one class.)"""

    df = read_user_table(path, "--labels")
    need = [c for c in REQUIRED_FILE_COLUMNS if c != "category"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        has = [str(c) for c in df.columns]
        hint = ""
        if len(has) == 1 and any(d in has[0] for d in (";", "\t", "|")):
            hint = " (one column whose name holds a separator: is the file comma-separated?)"
        elif any(c.strip().lower() in REQUIRED_FILE_COLUMNS for c in has):
            hint = " (column names are case- and space-sensitive)"
        raise DataError(f"--labels {path}: missing column(s) {missing}; need {need} (and optionally 'category'), "
                        f"has {has}{hint}")
    if "category" not in df.columns:  # many catalogs have none: the model inputs then carry no category part
        df = df.assign(category="")
    df = df.copy()
    for col in ("title", "category", "keyphrase"):
        df[col] = [clean(v) for v in df[col]]
    for col in ("title", "keyphrase"):
        problems = np.array(text_problems(df[col].tolist(), tokenizer), dtype=object)
        for problem, what in ((EMPTY, "empty"), ("unreadable", "unreadable (every token unknown to the encoder, "
                                                 "e.g. emoji only)")):
            rows = np.flatnonzero(problems == problem)
            if len(rows):
                raise DataError(f"--labels {path}: {len(rows)} row(s) with {what} {col!r} (first at 0-based row {int(rows[0])})")
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = labels.isna() | (labels < 0) | (labels > 1)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        value = df["label"].iloc[first]
        value = value.item() if hasattr(value, "item") else value  # numpy scalar -> plain Python in the message
        raise DataError(f"--labels {path}: {int(bad.sum())} label(s) not a number in [0, 1] "
                        f"(first at 0-based row {first}: {value!r})")
    df["p"] = labels.astype(float)
    df["label"] = (df["p"] >= 0.5).astype("int32")
    df["text_hash"] = [text_hash(t, c, k) for t, c, k in zip(df["title"], df["category"], df["keyphrase"])]
    df["pair_key"] = df["text_hash"]
    for col in ("item_id", "keyphrase_id"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(-1).astype("int64") if col in df.columns else -1
    rows = len(df)
    conflicting = int((df.groupby("text_hash")["label"].nunique() > 1).sum())
    df = df.drop_duplicates("text_hash", keep="last").reset_index(drop=True)
    stats = {"rows": rows, "duplicate_rows": rows - len(df), "conflicting_pairs": conflicting}
    if stats["duplicate_rows"]:
        log.warning("--labels %s: %d of %d rows repeat a pair (same title, category and keyphrase after "
                    "normalisation); %d pair(s) carry conflicting labels; the last row of each pair is kept",
                    path, stats["duplicate_rows"], rows, conflicting)
    if len(df) < min_rows:
        raise DataError(f"--labels {path}: only {len(df)} distinct pairs ({rows} rows, {stats['duplicate_rows']} "
                        f"repeating a pair); train.min_rows is {min_rows}")
    out = df[["title", "category", "keyphrase", "label", "p", "text_hash", "pair_key", "item_id", "keyphrase_id"]]
    out.attrs["file_stats"] = stats
    return out


# ---- the lake ----------------------------------------------------------------------------------------
def latest_partition(lake: Lake, dataset: str, ds: str) -> str | None:
    """The newest ``ds`` partition of ``dataset`` on or before ``ds`` (``YYYY-MM-DD``), or None.

    ConfigError (exit 2) when ``ds`` is not a date; KeyError for an unknown dataset name."""
    days = [d for d in lake.partitions(dataset) if d <= ds_str(ds)]
    return days[-1] if days else None


def read_llm_labels(settings: Settings, ds: str) -> tuple["object", list[str]]:
    """The label store up to ``ds``, deduplicated, at most the ``train.max_llm_labels`` most recent labels
    (``labels.store.read_labels``: newest days first, older days not read past the cap); returns (frame, store
    days the frame's rows come from).

    The frame has the ``TrainingData.llm`` columns but ``split``; ``p`` is the judge's P(yes). Raises DataError
    (exit 3) when the store has no day up to ``ds``, SchemaError (exit 3) when it breaks contract
    ``llm_labels``, ConfigError (exit 2) when ``ds`` is not a date."""

    lake = Lake.from_settings(settings)
    days = [d for d in lake.partitions("llm_store") if d <= ds_str(ds)]
    if not days:
        raise DataError(f"no LLM labels in the label store {lake.path('llm_store')} up to {ds_str(ds)}")
    try:
        from keyphrase_pipeline.labels.store import read_labels
    except ImportError:  # pragma: no cover
        read_labels = None
    if read_labels is not None:
        df = read_labels(settings, upto_ds=ds, max_rows=settings.train.max_llm_labels)
        if len(df) and df["ds"].min() > days[0]:
            log.info("label store capped at the %d most recent labels (train.max_llm_labels): read days %s..%s of "
                     "%s..%s", settings.train.max_llm_labels, df["ds"].min(), days[-1], days[0], days[-1])
            days = [d for d in days if d >= df["ds"].min()]
    else:  # pragma: no cover
        df = pd.concat([read_parquet(lake.path("llm_store", ds=d), contract="llm_labels") for d in days],
                       ignore_index=True)

    check_pandas(df, "llm_labels", where=lake.path("llm_store"))
    df = df.sort_values("labelled_at", kind="stable")
    df = df.drop_duplicates("pair_key", keep="last").drop_duplicates("text_hash", keep="last")
    df = df.reset_index(drop=True)
    for col in ("title", "category", "keyphrase"):
        df[col] = [clean(v) for v in df[col]]
    df["p"] = df["p_yes"].astype(float)
    df["label"] = df["label"].astype("int32")
    df, human = apply_human_labels(settings, df, ds)
    out = df[["title", "category", "keyphrase", "label", "p", "text_hash", "pair_key", "item_id", "keyphrase_id",
              "source"]]
    out.attrs["human_labels"] = human
    return out, days


def apply_human_labels(settings: Settings, df, ds: str):
    """``df`` (label store rows with ``text_hash``, ``label`` int32, ``p`` float) with every pair a person reviewed
    (``labels.reviews.human_labels``: the page's label review, the DAG's adjudication; matched by the texts'
    ``text_hash``, so a verdict still applies after the pair is judged again under another key) labelled as that
    person said:
    ``label`` the human label, ``p`` 1.0 or 0.0. Returns ``(frame, {"applied": pairs with a human label,
    "changed": of those, pairs whose label the person changed})``; the frame is a copy when any label applies."""
    from keyphrase_pipeline.labels.reviews import human_labels

    human = human_labels(settings, upto_ds=ds)
    if not len(human) or not len(df):
        return df, {"applied": 0, "changed": 0}
    said = df["text_hash"].map(dict(zip(human["text_hash"], human["human_label"].astype(int))))
    has = said.notna().to_numpy()
    if not has.any():
        return df, {"applied": 0, "changed": 0}
    df = df.copy()
    new = said[has].astype("int32").to_numpy()
    changed = int((df.loc[has, "label"].to_numpy() != new).sum())
    df.loc[has, "label"] = new
    df.loc[has, "p"] = new.astype(float)
    log.info("human labels: %d pair(s) of the label store labelled by a person (%d changed from the judge's)",
             int(has.sum()), changed)
    return df, {"applied": int(has.sum()), "changed": changed}


def _catalog_ds(settings: Settings, ds: str) -> str:
    """The catalog snapshot the texts come from: the newest on or before ``ds``; DataError when there is none."""
    lake = Lake.from_settings(settings)
    cat_ds = latest_partition(lake, "catalog", ds)
    if cat_ds is None:
        raise DataError(f"no catalog snapshot under {lake.path('catalog')} up to {ds_str(ds)}")
    return cat_ds


def _texts(settings: Settings, cat_ds: str, item_ids, keyphrase_ids):
    """(catalog rows item_id/title/category of ``item_ids``, keyphrase rows keyphrase_id/keyphrase of
    ``keyphrase_ids``; int64 arrays or iterables): only those rows, read a batch at a time (``lake.rows_where``),
    so memory follows the pairs, not the catalog. SchemaError when the snapshot or the keyphrases break their
    contract; DataError when ``raw/keyphrases`` is missing."""
    lake = Lake.from_settings(settings)
    catalog = rows_where(parquet_dataset(lake.path("catalog", ds=cat_ds), "catalog"), "item_id", item_ids,
                         ["item_id", "title", "category"]).to_pandas()
    keyphrases = rows_where(parquet_dataset(lake.path("keyphrases"), "keyphrases"), "keyphrase_id", keyphrase_ids,
                            ["keyphrase_id", "text"]).to_pandas()
    return catalog, keyphrases.rename(columns={"text": "keyphrase"})


def capped_pairs(path: str, contract: str, cap: int, positives_only: bool = False, batch_rows: int = 65_536,
                 what: str = "pairs", setting: str = "the cap"):
    """The ``item_id, keyphrase_id, label`` rows of the ``contract`` dataset at ``path`` (those with ``label == 1``
    when ``positives_only``; rows with a null id, or an unsigned one past int64, are left out), at most ``cap`` of
    them: beyond it, exactly the ``cap`` rows with the smallest ``core.hashing.pair_hash`` (a uniform sample of the
    pairs, the same on every run and machine).

    Returns (pandas frame in the contract's types, rows before the cap). Streamed, ``batch_rows`` rows at a time: a
    counting pass, then a pass keeping the rows under a hash threshold set for ``cap + 6 sqrt(cap) + 100`` of them
    (six standard deviations over the cap; in the rare case that keeps fewer than ``cap``, one more pass with twice
    the share). Memory is about ``cap`` rows (24 bytes each), whatever the dataset's size. A capped read is logged,
    naming ``what`` was read and the ``setting`` that caps it. SchemaError (exit 3) when the files break
    ``contract``; DataError when ``path`` is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = parquet_dataset(path, contract)
    cols = ["item_id", "keyphrase_id", "label"]

    def keep(b):  # a null id, or an unsigned id past int64 (which no catalog row can hold), is left out
        ok = pc.and_(pc.is_valid(b.column("item_id")), pc.is_valid(b.column("keyphrase_id")))
        for c in ("item_id", "keyphrase_id"):
            if pa.types.is_uint64(b.column(c).type):
                ok = pc.and_(ok, pc.less_equal(b.column(c), pa.scalar(2 ** 63 - 1, pa.uint64())))
        return pc.and_(ok, pc.equal(b.column("label"), 1)) if positives_only else ok

    total = sum(t.num_rows for t in scan(data, cols, batch_rows, keep))
    want = min(cap, total)
    share = min(1.0, (cap + 6 * cap ** 0.5 + 100) / total) if total else 1.0
    schema = pa.schema([data.schema.field(c) for c in cols])
    while True:
        limit = np.uint64(2 ** 64 - 1) if share >= 1.0 else np.uint64(int(share * 2 ** 64))
        parts, hashes = [], []
        for t in scan(data, cols, batch_rows, keep):
            h = pair_hash(t.column("item_id").to_numpy(), t.column("keyphrase_id").to_numpy())
            mask = h <= limit
            if mask.any():
                parts.append(t.filter(pa.array(mask)))
                hashes.append(h[mask])
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        if table.num_rows >= want or share >= 1.0:
            break
        share = min(1.0, share * 2)
    if table.num_rows > cap:
        order = np.argsort(np.concatenate(hashes), kind="stable")[:cap]
        table = table.take(pa.array(np.sort(order)))
    if total > table.num_rows:
        log.info("%s capped at %s=%d: a hash sample of %d of %d", what, setting, cap, table.num_rows, total)
    return table.to_pandas(), total


def _join_texts(df, catalog, keyphrases, tokenizer, source: str):
    """(``df`` joined to its texts, normalised, without the pairs the encoder cannot read; {reason: rows}, with
    ``no_text`` for pairs whose item is not in the catalog snapshot or whose keyphrase is not in raw/keyphrases)."""
    out = df.merge(catalog, on="item_id", how="inner").merge(keyphrases, on="keyphrase_id", how="inner")
    for col in ("title", "category", "keyphrase"):
        out[col] = [clean(v) for v in out[col]]
    missing = len(df) - len(out)  # a duplicated catalog id adds rows: counted only when rows went missing
    out, counts = drop_unreadable(out, tokenizer, source)
    if missing > 0:
        log.warning("%s: left out %d pair(s) with no text (item not in the catalog snapshot or keyphrase not in "
                    "raw/keyphrases)", source, missing)
        counts = {**counts, "no_text": missing}
    return out, counts


def load_training_data(settings: Settings, ds: str, labels: str | None = None, need_ctr: bool = True,
                       need_sr: bool = True) -> TrainingData:
    """Everything the trainers and the evaluator need, with the stable test split applied.

    ``labels``: a user's file (``read_labels_file``), which replaces the lake's labels; ``need_ctr`` /
    ``need_sr``: read those labels (lake only).

    Raises:
        ConfigError: (exit 2) ``ds`` is not YYYY-MM-DD.
        DataError: (exit 3) the ``labels`` file problems of ``read_labels_file``, or all its pairs in one class;
            no label store day up to
            ``ds``; fewer than ``train.min_rows`` stored labels after deduplication; CTR/SR labels needed but no
            catalog snapshot up to ``ds`` or no ``raw/keyphrases``; a held-out split with no test or no train pair.
        SchemaError: (exit 3) the label store, catalog, keyphrases, ``ctr_labels`` or ``sr_labels`` break their
            contract.
    """

    ds = ds_str(ds)
    frac = settings.train.test_fraction
    empty_pairs = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                [("title", str), ("category", str), ("keyphrase", str),
                                 ("item_id", "int64"), ("keyphrase_id", "int64"), ("label", "int32")]})
    tokenizer = encoder_tokenizer(settings)
    if labels:
        llm = read_labels_file(labels, settings.train.min_rows, tokenizer)
        classes = sorted(set(llm["label"].tolist()))
        if len(classes) < 2:
            raise DataError(f"--labels {labels}: every one of the {len(llm)} pairs is labelled "
                            f"{'relevant (1)' if classes == [1] else 'not relevant (0)'}; training and the held-out "
                            f"threshold need both relevant and not relevant pairs")
        snapshot = {"source": "file", "labels_file": str(Path(labels).resolve()), "llm_rows": len(llm),
                    **{f"file_{k}": v for k, v in llm.attrs.get("file_stats", {}).items()}}
        ctr = sr = empty_pairs
    else:
        llm, days = read_llm_labels(settings, ds)
        human = llm.attrs.get("human_labels", {"applied": 0, "changed": 0})
        llm, dropped = drop_unreadable(llm, tokenizer, "label store")
        snapshot = {"source": "lake", "label_store_days": days, "llm_rows": len(llm), "dropped_texts": {"llm": dropped},
                    "human_labels": human}
        if len(llm) < settings.train.min_rows:
            raise DataError(f"only {len(llm)} LLM-labelled pairs up to {ds}; train.min_rows is {settings.train.min_rows}")
        ctr = sr = empty_pairs
        lake = Lake.from_settings(settings)
        ctr_ds = latest_partition(lake, "ctr_labels", ds) if need_ctr else None
        sr_ds = latest_partition(lake, "sr_labels", ds) if need_sr else None
        c = s = None
        if ctr_ds:
            c, n = capped_pairs(lake.path("ctr_labels", ds=ctr_ds), "ctr_labels", settings.train.max_ctr_positives,
                                positives_only=True, what="CTR positives", setting="train.max_ctr_positives")
            snapshot["ctr_positives_read"] = {"rows": len(c), "of": n}
        if sr_ds:
            s, n = capped_pairs(lake.path("sr_labels", ds=sr_ds), "sr_labels", settings.train.max_sr_labels,
                                what="SR labels", setting="train.max_sr_labels")
            snapshot["sr_labels_read"] = {"rows": len(s), "of": n}
        if ctr_ds or sr_ds:
            cat_ds = _catalog_ds(settings, ds)
            snapshot["catalog_ds"] = cat_ds
            frames = [f for f in (c, s) if f is not None]
            catalog, keyphrases = _texts(settings, cat_ds, np.concatenate([f["item_id"].to_numpy() for f in frames]),
                                         np.concatenate([f["keyphrase_id"].to_numpy() for f in frames]))
        if c is not None:
            ctr, snapshot["dropped_texts"]["ctr"] = _join_texts(c, catalog, keyphrases, tokenizer, "CTR positives")
        if s is not None:
            sr, snapshot["dropped_texts"]["sr"] = _join_texts(s, catalog, keyphrases, tokenizer, "SR labels")
        snapshot.update({"ctr_ds": ctr_ds, "sr_ds": sr_ds})
    llm = llm.copy()
    # A user's file is split by keyphrase (no query on both sides, so the held-out metrics and the early
    # stopping they drive measure queries the model has not seen, as in production); the label store by
    # pair (a pair, once in test, stays in test as the store grows, for champion/challenger comparisons).
    split_keys = llm["keyphrase"].str.lower().tolist() if labels else llm["text_hash"].tolist()
    llm["split"] = np.where(in_test_split(split_keys, frac), "test", "train")
    # no leakage: CTR/SR pairs that are LLM test pairs are not trained on
    test_ids = set(zip(llm.loc[llm["split"] == "test", "item_id"], llm.loc[llm["split"] == "test", "keyphrase_id"]))
    test_ids.discard((-1, -1))

    def _drop_test(df):
        if len(df) == 0 or not test_ids:
            return df.reset_index(drop=True)
        keep = [(i, k) not in test_ids for i, k in zip(df["item_id"], df["keyphrase_id"])]
        return df[keep].reset_index(drop=True)

    ctr, sr = _drop_test(ctr), _drop_test(sr)
    n_test = int((llm["split"] == "test").sum())
    snapshot.update({"llm_train_rows": len(llm) - n_test, "llm_test_rows": n_test,
                     "ctr_positive_rows": len(ctr), "sr_rows": len(sr), "test_fraction": frac})
    if n_test == 0 or n_test == len(llm):
        by = (f"by keyphrase, and the file has {llm['keyphrase'].str.lower().nunique()} distinct keyphrase(s): a "
              "keyphrase's pairs all fall on one side, so give pairs of more keyphrases" if labels
              else "by pair")
        raise DataError(f"held-out split of {len(llm)} pairs gave {n_test} test pairs: need some of each "
                        f"(train.test_fraction={frac}; the split is {by})")
    log.info("training data for %s: %s", ds, snapshot)
    return TrainingData(llm=llm, ctr=ctr, sr=sr, snapshot=snapshot)
