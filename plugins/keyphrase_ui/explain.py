"""Why a keyphrase is recommended for an item, and champion vs challenger: the data behind the item, keyphrase and
compare views of the Keyphrases page.

Per recommended (item, keyphrase) pair it gathers, from the lake:

* the student's score (key ``cosine``): the score the published recommendations carry (``serving/versions/<CURRENT>``):
  its cosine, plus its hybrid score's lexical bonus where ``kp recommend`` re-scored the list with one (the
  manifest's ``hybrid``; ``keyphrase_pipeline.models.lexical_match``);
* the cross-encoder's P(relevant): computed on the fly for the K pairs with the newest cross-encoder of the
  registry (``registry/CROSS_LATEST``), cached per (version, item, keyphrases); None with the reason when there is
  no cross-encoder;
* the re-rank score: the P(relevant) that ``kp recommend``'s re-rank (``serve.rerank_depth``) published and
  ordered the list by (unless ``ctr_model.rank_by=expected_clicks`` re-ordered it after), with the cross-encoder
  that gave it (``rerank_cross_version``); None on rows it did not score (re-rank off, or a carried row whose score
  was nulled);
* the LLM judge's label and P(yes) when the pair was judged (``llm_labels/store``): judge backend and model,
  prompt version, when it was labelled and the store day;
* its impressions, clicks and CTR over the CTR window when it was exposed (``ctr_labels`` of the newest day; the
  window is the one that day was computed with, from its ``_stats.json``, else the ``ctr.window_days`` setting).

Heavy libraries (pyarrow, numpy, torch through the cross-encoder) are imported inside the functions: the API
server imports the plugin at start.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_CACHE: dict = {}
_LOCK = threading.Lock()
_CROSS_LOCK = threading.Lock()  # one cross-encoder forward at a time in the API server
CROSS_CACHE_MAX = 2048  # cached (version, item, keyphrases) score lists


def _cached(key, build):
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    value = build()
    with _LOCK:
        _CACHE[key] = value
    return value


def _mtime_sig(root: Path) -> tuple:
    """A cheap signature of the parquet files under ``root`` (names, sizes, mtimes): cache keys change when it does."""
    if not root.is_dir():
        return ()
    return tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in root.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)))


def _read_filtered(path: str, column: str, values: list[int], columns: list[str] | None = None):
    """Rows of the parquet dataset at ``path`` (hive partitions become columns) whose ``column`` is in ``values``,
    as pandas; an empty frame when nothing is there."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    if not Path(path).is_dir():
        return pd.DataFrame(columns=columns or [])
    ds = pads.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"])
    if column not in ds.schema.names:
        return pd.DataFrame(columns=columns or [])
    cols = [c for c in (columns or ds.schema.names) if c in ds.schema.names]
    table = ds.to_table(columns=cols, filter=pc.field(column).isin([int(v) for v in values]))
    return table.to_pandas()


def _read_filtered_skipping(path: str, column: str, values: list[int], columns: list[str] | None = None,
                            root: str | None = None) -> tuple[object, list[str]]:
    """``_read_filtered`` that survives damaged files: ``(frame, unreadable)``. When the dataset cannot be read as a
    whole (a file that is not parquet: pyarrow's ArrowInvalid, an I/O error), each file is read on its own, the ones
    that fail are left out and named in ``unreadable`` (``"<path relative to root>: <error type>"``); the frame holds
    the rows of the readable files (hive ``k=v`` folders become string columns, as in the whole read)."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    try:
        return _read_filtered(path, column, values, columns), []
    except Exception as exc:  # noqa: BLE001 - any reader failure: find the damaged file(s) below
        log.warning("keyphrases UI: reading %s failed (%s: %s): reading its files one by one", path,
                    type(exc).__name__, str(exc)[:200])
    base = Path(path)
    frames, bad = [], []
    for f in sorted(base.rglob("*.parquet")):
        rel = f.relative_to(base)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        try:
            one = pads.dataset(str(f), format="parquet")
            if column not in one.schema.names:
                continue
            cols = [c for c in (columns or one.schema.names) if c in one.schema.names]
            df = one.to_table(columns=cols, filter=pc.field(column).isin([int(v) for v in values])).to_pandas()
        except Exception as exc:  # noqa: BLE001
            shown = f.relative_to(root) if root and f.is_relative_to(root) else f
            bad.append(f"{shown}: {type(exc).__name__}")
            continue
        for part in rel.parts[:-1]:
            if "=" in part:
                k, v = part.split("=", 1)
                if (columns is None or k in columns) and k not in df.columns:
                    df[k] = v
        frames.append(df)
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or [])
    return out, bad


def _root(lake) -> str | None:
    return str(lake.root) if Path(str(lake.root)).is_dir() else None


# ---- the label store -----------------------------------------------------------------------------------
LABEL_COLUMNS = ["item_id", "keyphrase_id", "title", "category", "keyphrase", "source", "p_yes", "label", "judge",
                 "judge_model", "prompt_version", "labelled_at", "pair_key", "ds"]


def judged(lake, column: str, value: int, notes: list[str] | None = None):
    """Every judged row of the label store with ``column`` (``item_id`` or ``keyphrase_id``) == ``value``, newest
    label first (pandas; ``ds`` is the store day). Empty frame when the store is empty. A damaged store file is
    left out and, when ``notes`` is given, a note naming it and what to do is appended there."""
    df, bad = _read_filtered_skipping(lake.path("llm_store"), column, [value], LABEL_COLUMNS, _root(lake))
    if bad and notes is not None:
        import re

        days = sorted({m.group(1) for b in bad for m in [re.search(r"ds=([0-9]{4}-[0-9]{2}-[0-9]{2})", b)] if m})
        cmds = ", ".join(f"`kp merge-labels --ds {d}`" for d in days[:3]) or "`kp merge-labels --ds <day>`"
        notes.append(unreadable_note("label store", bad, f"LLM labels of {'that day' if len(days) == 1 else 'those days'} "
                                     f"are not shown; rewrite {'it' if len(days) == 1 else 'each'} with {cmds} "
                                     "(or clear the day's merge task in Airflow)"))
    if len(df):
        df = df.sort_values("labelled_at", ascending=False, kind="mergesort").reset_index(drop=True)
    return df


def unreadable_note(what: str, bad: list[str], todo: str) -> str:
    """The note the views show for damaged files: which files, and what to do."""
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"unreadable {what} file(s), left out: {shown}. {todo}"


def label_record(row) -> dict:
    """One judged row as the API shows it."""
    at = row["labelled_at"]
    return {"label": "yes" if int(row["label"]) == 1 else "no", "p_yes": float(row["p_yes"]),
            "judge": f"{row['judge']}:{row['judge_model']}", "prompt_version": str(row["prompt_version"]),
            "labelled_at": at.isoformat() if hasattr(at, "isoformat") else str(at), "store_day": str(row.get("ds", "")),
            "source": str(row.get("source", ""))}


# ---- CTR labels ------------------------------------------------------------------------------------------
def ctr_rows(lake, column: str, value: int, notes: list[str] | None = None) -> tuple[str | None, object]:
    """``(day, frame)``: the newest ``ctr_labels`` day's rows (its ``ctr.window_days`` window) with ``column`` ==
    ``value``. A damaged file of that day is left out and, when ``notes`` is given, named there with what to do."""
    days = lake.partitions("ctr_labels")
    if not days:
        return None, None
    df, bad = _read_filtered_skipping(lake.path("ctr_labels", ds=days[-1]), column, [value],
                                      ["item_id", "keyphrase_id", "impressions", "clicks", "ctr", "label"], _root(lake))
    if bad and notes is not None:
        notes.append(unreadable_note("CTR label", bad, f"CTR numbers are not shown; rewrite the day with `kp ctr-labels "
                                     f"--ds {days[-1]}` (or clear its ctr_labels task in Airflow)"))
    return days[-1], df


def ctr_window(lake, settings, ctr_day: str) -> tuple[int, str]:
    """``(window_days, source)``: the CTR window day ``ctr_day`` was computed with, from its
    ``ctr_labels/ds=D/_stats.json`` (``window_days``, written by ``kp ctr-labels``); when that file is missing,
    unreadable or has no whole number there, the current ``ctr.window_days`` setting, and ``source`` says so."""
    from keyphrase_pipeline.core import layout

    rel = f"{layout.partition_name('ctr_labels', ctr_day)}/{Path(layout.partition_stats_path('x')).name}"
    try:
        stats = lake.read_json(layout.partition_stats_path(lake.path("ctr_labels", ds=ctr_day)), default={})
    except Exception as exc:  # noqa: BLE001 - not JSON, unreadable
        stats, why = None, f"{rel} is unreadable ({type(exc).__name__})"
    else:
        why = f"{rel} is missing" if not stats else f"{rel} has no window_days"
    w = stats.get("window_days") if isinstance(stats, dict) else None
    if isinstance(w, int) and not isinstance(w, bool) and w > 0:
        return w, f"the window that day was computed with ({rel})"
    return int(settings.ctr.window_days), f"{why}: assumed the current ctr.window_days setting"


# ---- the cross-encoder -------------------------------------------------------------------------------------
def cross_encoder(settings) -> tuple[str | None, str | None]:
    """``(version, model_dir)`` of the newest cross-encoder, or ``(None, reason)`` when there is none."""
    from keyphrase_pipeline.artifacts import registry
    from keyphrase_pipeline.core import layout

    version = registry.latest_cross(settings)
    if not version:
        return None, "no cross-encoder in the registry yet (registry/CROSS_LATEST unset: trained on training days)"
    model_dir = layout.model_dir(settings, version, "cross")
    if not Path(model_dir, "config.json").is_file():
        return None, f"registry/CROSS_LATEST points to {version}, whose model directory is missing or incomplete"
    return version, model_dir


def cross_scores(settings, item_id: int, title: str, category: str, keyphrases: list[tuple[int, str]]) -> dict:
    """``{"version", "scores": {keyphrase_id: P(relevant)}, "note"}``: the newest cross-encoder's scores of the pairs
    (computed once per (version, item, keyphrases), then cached). ``scores`` is {} and ``note`` says why when
    there is no cross-encoder or it fails to load."""
    version, where = cross_encoder(settings)
    if version is None:
        return {"version": None, "scores": {}, "note": where}
    key = ("cross", version, int(item_id), tuple(k for k, _ in keyphrases))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    try:
        from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs

        with _CROSS_LOCK:
            model = _cached(("cross_model", version), lambda: load_cross(where, device="cpu"))
            scores = predict_pairs(model, [title] * len(keyphrases), [category] * len(keyphrases),
                                   [t for _, t in keyphrases])
    except Exception as exc:
        log.warning("keyphrases UI: cross-encoder %s failed: %s: %s", version, type(exc).__name__, exc)
        return {"version": version, "scores": {}, "note": f"cross-encoder {version} could not score: {type(exc).__name__}: {exc}"}
    out = {"version": version, "scores": {int(k): float(s) for (k, _), s in zip(keyphrases, scores)},
           "note": "P(relevant) of the newest cross-encoder, computed for these pairs now"}
    with _LOCK:
        if sum(1 for k in _CACHE if k[0] == "cross") >= CROSS_CACHE_MAX:
            for k in [k for k in _CACHE if k[0] == "cross"][: CROSS_CACHE_MAX // 2]:
                del _CACHE[k]
        _CACHE[key] = out
    return out


def _finite(value) -> float | None:
    """``value`` as a float, or None when it is missing or not a finite number (NaN from a parquet null)."""
    import math

    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def rerank_note(versions: list[str], mode: str) -> str:
    """The item view's line on the re-rank: which cross-encoder(s) ``versions`` gave the published scores, or why
    no row carries one (``mode``: how the rows were found; a live search never carries them)."""
    if versions:
        return (f"re-rank: P(relevant) of cross-encoder {', '.join(versions)}, published by recommend "
                "(serve.rerank_depth > 0), which ordered the scored rows (unless ctr_model.rank_by=expected_clicks "
                "re-ordered them after); – : a row it did not score")
    if mode.startswith("live"):
        return "re-rank: – (a live search of the index carries no published re-rank score)"
    return ("re-rank: – (no row carries a published re-rank score: serve.rerank_depth 0, an item without catalog "
            "text, or rows carried by --changed-only from an older cross-encoder)")


# ---- views -------------------------------------------------------------------------------------------------------
def explain_item(settings, lake, item: dict, results: list[dict], mode: str, version: str, world=None) -> dict:
    """The item view: ``item`` ({item_id, title, category}; ``in_catalog`` False: no text, no cross-encoder score),
    its top-K ``results`` (``ServingBundle.search`` rows)
    each with ``cosine``, ``cross`` (P(relevant) or None), ``llm`` (label record or None), ``ctr`` (impressions,
    clicks, ctr, label or None), ``expected_ctr`` (the CTR model's P(click) at its reference position, or None),
    ``rerank`` (the published re-rank score, or None) and ``relevant`` (demo truth or None); plus the item's judged
    pairs that are not in its top-K (``judged_elsewhere``) and ``rerank_note`` (which cross-encoder gave the published
    re-rank scores, or why no row has one). A re-rank score that is not a finite number is shown as None."""
    item_id = int(item["item_id"])
    kps = [(int(r["keyphrase_id"]), r["keyphrase"]) for r in results]
    if item.get("in_catalog", True):
        cross = cross_scores(settings, item_id, item["title"], item["category"], kps)
    else:  # published rows of an item the latest catalog no longer holds: no text to score
        cross = {"version": None, "scores": {},
                 "note": "the item has no row in the latest catalog snapshot, so no title to score"}
    notes: list[str] = []
    labels = judged(lake, "item_id", item_id, notes)
    latest = {}
    for row in labels.to_dict("records"):
        latest.setdefault(int(row["keyphrase_id"]), row)  # newest first
    ctr_day, ctr = ctr_rows(lake, "item_id", item_id, notes)
    window, window_source = ctr_window(lake, settings, ctr_day) if ctr_day else (int(settings.ctr.window_days), "")
    ctr_by = {int(r["keyphrase_id"]): r for r in ctr.to_dict("records")} if ctr is not None else {}
    rel = None
    if world is not None and results:
        rel = world.is_relevant([item_id] * len(results), [r["keyphrase_id"] for r in results])
    rows = []
    for i, r in enumerate(results):
        kid = int(r["keyphrase_id"])
        c = ctr_by.get(kid)
        rows.append({
            "rank": int(r["rank"]), "keyphrase_id": kid, "keyphrase": r["keyphrase"], "cosine": float(r["score"]),
            "cross": cross["scores"].get(kid),
            "llm": label_record(latest[kid]) if kid in latest else None,
            "ctr": {"impressions": int(c["impressions"]), "clicks": int(c["clicks"]), "ctr": float(c["ctr"]),
                    "label": int(c["label"])} if c is not None else None,
            "relevant": bool(rel[i]) if rel is not None else None,
            "expected_ctr": r.get("expected_ctr"),
            "rerank": _finite(r.get("rerank_score")),
        })
    shown = {r["keyphrase_id"] for r in rows}
    models = sorted({str(r["ctr_model_version"]) for r in results if r.get("ctr_model_version")})
    reranked = sorted({str(r.get("rerank_cross_version") or "(not recorded)")
                       for r, row in zip(results, rows) if row["rerank"] is not None})
    elsewhere = [{"keyphrase_id": k, "keyphrase": str(row["keyphrase"]), **label_record(row)}
                 for k, row in latest.items() if k not in shown][:20]
    return {
        "item": item, "serving_version": version, "mode": mode, "k": len(rows), "results": rows,
        "cross_version": cross["version"], "cross_note": cross["note"],
        "ctr_day": ctr_day, "ctr_window_days": window,
        "ctr_note": (f"{window}-day impressions and clicks from ctr_labels of {ctr_day} ({window_source}); – : the "
                     "pair was not exposed in that window") if ctr_day else
        "no CTR labels in the lake yet (the ctr stage writes them)", "notes": notes,
        "labels_note": f"{len(labels)} judged pair(s) of this item in the label store" if len(labels) else
        "no pair of this item was judged yet",
        "judged_elsewhere": elsewhere, "truth_known": rel is not None,
        "expected_ctr_note": (f"expected CTR: P(click) at position 1 from CTR model {', '.join(models)}, beside the "
                              "observed CTR of the window" if models else
                              "expected CTR: – (no CTR model scored this version's recommendations)"),
        "rerank_note": rerank_note(reranked, mode),
    }


def explain_keyphrase(lake, keyphrase_id: int, recs, catalog, limit: int, world=None, total: int | None = None) -> dict:
    """The keyphrase view: the items whose published top-K holds ``keyphrase_id`` (``recs``: published recommendation
    rows, at least the ``limit`` best of this keyphrase), best score first, with titles, the LLM label when judged,
    truth on the demo world. ``total``: how many published rows hold the keyphrase (default: those in ``recs``)."""
    import pandas as pd

    mine = recs[recs["keyphrase_id"] == int(keyphrase_id)].sort_values(["score", "item_id"], ascending=[False, True])
    total = int(len(mine)) if total is None else int(total)
    mine = mine.head(limit)
    if catalog is not None and len(mine):
        mine = mine.merge(catalog, on="item_id", how="left")
    else:
        mine = mine.assign(title=None, category=None)
    notes: list[str] = []
    labels = judged(lake, "keyphrase_id", int(keyphrase_id), notes)
    latest = {}
    for row in labels.to_dict("records"):
        latest.setdefault(int(row["item_id"]), row)
    rel = world.is_relevant(mine["item_id"].to_numpy(), [int(keyphrase_id)] * len(mine)) \
        if world is not None and len(mine) else None
    items = []
    for i, r in enumerate(mine.to_dict("records")):
        iid = int(r["item_id"])
        items.append({"item_id": iid, "title": None if pd.isna(r.get("title")) else r.get("title"),
                      "category": None if pd.isna(r.get("category")) else r.get("category"),
                      "rank": int(r["rank"]), "cosine": float(r["score"]),
                      "llm": label_record(latest[iid]) if iid in latest else None,
                      "relevant": bool(rel[i]) if rel is not None else None})
    return {"total_items": total, "items": items, "judged_items": int(labels["item_id"].nunique()) if len(labels) else 0,
            "truth_known": rel is not None, "notes": notes}


# ---- champion vs challenger ------------------------------------------------------------------------------------
MAX_KEYPHRASES_ON_THE_FLY = 200_000  # brute-force top-K over more keyphrase embeddings than this is not done per request
METRIC_ROWS = [  # (label, path in an evaluation dict, unit)
    ("F1 vs LLM labels (held-out test set)", "llm.f1", "F1"),
    ("precision vs LLM labels", "llm.precision", "share"),
    ("recall vs LLM labels", "llm.recall", "share"),
    ("ROC AUC vs LLM labels", "llm.auc", "AUC"),
    ("test pairs", "llm.n", "pairs"),
    ("Pearson with the cross-encoder", "rho_cross", "rho"),
    ("F1 vs the demo world's truth", "truth.f1", "F1"),
    # evaluate writes relevance_recall_at_k (older versions: recall_at_k); "a|b": the first path present
    ("recall@K of truly relevant (tail items)",
     "relevance_recall_at_k.tail.relevance_recall_at_k|recall_at_k.tail.recall_at_k", "share"),
    ("recall@K of truly relevant (head items)",
     "relevance_recall_at_k.head.relevance_recall_at_k|recall_at_k.head.recall_at_k", "share"),
]


def _dig(d, path: str):
    """The value at dotted ``path`` in nested dicts ``d``; ``"a.b|c.d"``: the first alternative present; else None
    (``keyphrase_ui.history._get``)."""
    from keyphrase_ui.history import _get

    return _get(d, path)


def _embeddings(lake, settings, what: str, version: str, ids: list[int] | None = None):
    """``(ids int64 (n,), vectors float32 (n, d))`` of ``embeddings/<what>/model=<version>`` (only ``ids`` when given;
    empty arrays when none of them is there); None when that version was not embedded."""
    import numpy as np

    from keyphrase_pipeline.core import layout

    path = layout.embeddings_dir(settings, what, version)
    if not Path(path).is_dir():
        return None
    if ids is not None:
        df = _read_filtered(path, "id", ids, ["id", "embedding"])
    else:
        import pyarrow.dataset as pads

        df = pads.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_"]) \
            .to_table(columns=["id", "embedding"]).to_pandas()
    if not len(df):
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return df["id"].to_numpy(dtype=np.int64), np.stack(df["embedding"].to_numpy()).astype(np.float32)


def _keyphrase_matrix(lake, settings, version: str):
    """Cached ``(ids, vectors)`` of a version's keyphrase embeddings (None when not embedded)."""
    from keyphrase_pipeline.core import layout

    path = Path(layout.embeddings_dir(settings, "keyphrases", version))
    return _cached(("kp_emb", str(path), _mtime_sig(path)), lambda: _embeddings(lake, settings, "keyphrases", version))


def sample_items(catalog, n: int, seed: str):
    """``n`` catalog rows (pandas: item_id, title, category) drawn from ``catalog`` (a ``pyarrow.dataset`` of the
    snapshot) with a seed derived from ``seed`` (stable for a day); only the row groups holding a drawn row are read
    (``lake.sample_rows``). None without a catalog."""
    import hashlib

    from keyphrase_pipeline.core.lake import sample_rows

    if catalog is None:
        return None
    rng_seed = int(hashlib.sha1(seed.encode()).hexdigest()[:8], 16)
    return sample_rows(catalog, n, rng_seed, ["item_id", "title", "category"]).to_pandas()


def topk_side_by_side(lake, settings, versions: dict[str, str], item_ids: list[int], k: int, keyphrase_text: dict,
                      world=None) -> tuple[list[dict], str]:
    """Top-``k`` keyphrases of ``item_ids`` under each model of ``versions`` ({role: version}), by exact cosine over
    each version's own item and keyphrase embeddings. Returns ``(rows, note)``; rows are [] and ``note`` says why when
    a version is not embedded (the serve group embeds the champion only) or has too many keyphrases to search here."""
    import numpy as np

    mats, items = {}, {}
    for role, v in versions.items():
        kp = _keyphrase_matrix(lake, settings, v)
        it = _embeddings(lake, settings, "items", v, item_ids)
        if kp is None or it is None or not len(kp[0]):
            return [], (f"top-K side by side needs both models' item and keyphrase embeddings; the {role} {v} has none "
                        "(the serve group embeds only the champion: `kp export --version V`, then `kp embed --what items "
                        "--version V` and `--what keyphrases` embed another): metrics only")
        if len(kp[0]) > MAX_KEYPHRASES_ON_THE_FLY:
            return [], (f"the {role} {v} has {len(kp[0]):,} keyphrase embeddings, more than this page searches per "
                        f"request ({MAX_KEYPHRASES_ON_THE_FLY:,}): metrics only")
        mats[role], items[role] = kp, dict(zip(it[0].tolist(), it[1]))
    rows = []
    for iid in item_ids:
        if not all(iid in items[r] for r in versions):
            continue
        row = {"item_id": int(iid)}
        tops = {}
        for role in versions:
            ids, mat = mats[role]
            scores = mat @ items[role][iid]
            kk = min(k, len(ids))
            top = np.argpartition(-scores, kk - 1)[:kk]
            top = top[np.argsort(-scores[top], kind="stable")]
            tops[role] = [int(ids[j]) for j in top]
            rel = world.is_relevant([iid] * kk, tops[role]) if world is not None else None
            row[role] = [{"keyphrase_id": int(ids[j]), "keyphrase": keyphrase_text.get(int(ids[j]), ""),
                          "cosine": float(scores[j]), "relevant": None if rel is None else bool(rel[n])}
                         for n, j in enumerate(top)]
            row[f"{role}_relevant"] = int(np.sum(rel)) if rel is not None else None
        a, b = list(versions)
        row["overlap"] = len(set(tops[a]) & set(tops[b]))
        rows.append(row)
    return rows, f"exact cosine top-{k} over each model's own embeddings; overlap = keyphrases in both lists"


def compare(settings, lake, students: list[dict], champ: str | None, history: list[dict], published: list[str],
            serving: str | None, rollback_target: str | None = None) -> dict:
    """Champion vs the newest challenger (newest student version that is not the champion): the gate's numbers and
    reason (the challenger's ``promotion.json``, written by evaluate), both models' metrics on the same test set, and
    the manual commands (``kp rollback`` only when ``rollback_target``, ``serving.rollback_target``, exists: a
    version rolled back from is never offered). ``message`` says what is missing when there is no champion or no
    challenger."""
    by = {v["version"]: v for v in students}
    out = {"champion": champ, "challenger": None, "message": "", "gate": None, "metrics": [], "commands": [],
           "topk": [], "topk_note": ""}
    if not students:
        out["message"] = "No model trained yet: the train group of keyphrase_daily trains the first one."
        return out
    if not champ or champ not in by:
        why = "registry/CHAMPION points to a missing version " + champ if champ else "registry/CHAMPION unset"
        out["message"] = (f"No champion to compare with ({why}): "
                          "promote one with `kp promote --version <version>` (`kp promote --list`).")
    newest = students[0]
    promo_newest = newest.get("promotion") or {}
    before = promo_newest.get("champion_before")
    if newest["version"] == champ and promo_newest.get("promoted") and before in by and before != champ:
        # the newest challenger WAS promoted: the decision to show is that one, against the champion it replaced
        ch = newest
        out["challenger"], out["baseline"] = ch["version"], before
        out["labels"] = {"champion": "Replaced champion", "challenger": "Promoted challenger (now the champion)"}
        out["baseline_note"] = (f"the newest challenger {ch['version']} was promoted (ds {promo_newest.get('ds')}): shown "
                                f"against the champion it replaced, {before}")
    else:
        challengers = [v for v in students if v["version"] != champ]
        if not challengers:
            out["message"] = out["message"] or ("No challenger yet: only the champion was trained. The next training day "
                                                "(train.retrain_every_days, or the force_retrain param) trains one.")
            return out
        ch = challengers[0]
        out["challenger"] = ch["version"]
    promo = ch.get("promotion") or {}
    ch_eval = (ch.get("metrics") or {}).get("eval") or {}
    same_day = promo.get("champion_metrics")
    base_version = out.get("baseline") or champ
    champ_eval = same_day if isinstance(same_day, dict) else ((by.get(base_version) or {}).get("metrics") or {}).get("eval") or {}
    out["metrics_note"] = ("both evaluated by the challenger's evaluate run, on the same held-out test set" if
                           isinstance(same_day, dict) else
                           "the champion's numbers are from its own evaluation (another day's test set): compare with care")
    for label, path, unit in METRIC_ROWS:
        a, b = _dig(champ_eval, path), _dig(ch_eval, path)
        if a is None and b is None:
            continue
        out["metrics"].append({"label": label, "unit": unit, "champion": a, "challenger": b,
                               "difference": (b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None})
    if promo:
        f1_ch, f1_champ, tol = _dig(ch_eval, "llm.f1"), _dig(same_day or {}, "llm.f1"), promo.get("tolerance")
        out["gate"] = {"promoted": promo.get("promoted"), "reason": promo.get("reason"), "tolerance": tol,
                       "challenger_f1": f1_ch, "champion_f1": f1_champ, "evaluated_at": promo.get("evaluated_at"),
                       "ds": promo.get("ds"), "champion_before": promo.get("champion_before"),
                       "rule": "promoted when the challenger's F1 >= the champion's F1 - train.promote_tolerance "
                               "(same held-out LLM test set); first model or force_promote: promoted"}
    else:
        out["gate"] = {"promoted": None, "reason": "not evaluated yet (no promotion.json): evaluate runs after train_bi"}
    prev = next((h.get("previous") for h in reversed(history) if h.get("version") == champ and h.get("previous")), None)
    cmds = [] if out.get("baseline") else [
        {"what": f"promote the challenger {ch['version']} (serving follows at the next run's serve group, or trigger "
                 "keyphrase_daily now)",
         "command": f"kp promote --version {ch['version']} --reason \"reviewed: <why>\""}]
    if prev:
        cmds.append({"what": f"roll the champion back to the previous one, {prev}",
                     "command": f"kp promote --version {prev} --reason \"rollback: <why>\""})
    if rollback_target:
        cmds.append({"what": f"roll serving back to the previous good published version ({rollback_target}); the "
                             "live one is then marked bad", "command": "kp rollback --reason \"<why>\""})
        cmds.append({"what": "or to a chosen published version (see the list first)", "command": "kp rollback --list"})
    else:
        cmds.append({"what": "roll serving back: not possible now, no earlier good version is published (kp rollback "
                             "needs one; serve.keep_versions are kept)", "command": "kp rollback --list"})
    cmds.append({"what": "list the student versions with their F1 and promotion state", "command": "kp promote --list"})
    out["commands"] = cmds
    return out
