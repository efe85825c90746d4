"""The FastAPI app behind the "Keyphrases" page (mounted by Airflow at ``/keyphrases``).

Routes (all need a valid Airflow token and read access to the DAG; the one write needs edit access, see
``keyphrase_ui.auth``)::

    GET /keyphrases/                     the page (redirects to Airflow's login without a session, 403
                                         without read access to the DAG)
    GET /keyphrases/api/overview         champion, serving version, model versions + metrics, promotion
                                         decision, latest run's stats per stage
    GET /keyphrases/api/runs?ds=D        one day's stats per stage (default: latest day)
    GET /keyphrases/api/history?days=N   run history: per day and stage status, duration, Airflow links; key
                                         metrics with units; days deviating from the previous days flagged
    GET /keyphrases/api/plots/history.png?days=N   trend plots of the history's watched metrics
    GET /keyphrases/api/item/<item_id>?k=  why each of the item's top-K keyphrases: student cosine, cross-encoder
                                         P(relevant), LLM label and P(yes) (judge, prompt, date), CTR over ctr.window_days
    GET /keyphrases/api/keyphrase/<id>?limit=   the items the published version recommends the keyphrase to
    GET /keyphrases/api/compare?items=&k=   champion vs the newest challenger: the gate's numbers and reason,
                                         metrics side by side, top-K of sample items, promote/rollback commands
    GET /keyphrases/api/reviews?ds=&n=   label review: a seeded sample of a day's judged pairs, verdicts so far,
                                         agreement per day, judge and prompt version
    POST /keyphrases/api/reviews         {ds, pair_key, verdict: agree|disagree}: store a verdict (append-only);
                                         needs edit permission on the DAG and is CSRF-checked (keyphrase_ui.auth)
    GET /keyphrases/api/plots/reviews.png  agreement with the judge per day, judge and prompt version
    GET /keyphrases/api/items?q=&limit=  items to pick from (latest catalog snapshot)
    GET /keyphrases/api/search?item_id=|q=&k=   top keyphrases with scores from the published index,
                                         with the demo world's truth per keyphrase when known
    GET /keyphrases/api/plots/curves.png?version=&kind=   training curves saved in the registry
    GET /keyphrases/api/plots/scores.png  score distribution of the published recommendations
                                         (split by true relevance on the demo world)

Query parameters are validated (bounded numbers, ASCII ``YYYY-MM-DD`` dates that exist, bounded text):
bad input answers 422, an unknown version or item 404 or an empty result, never a 500.

It only reads the lake (settings from ``KP_*`` in the API server's environment). Stage modules are
imported defensively: before the first run (or before a module exists) the page says "no data yet".
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import threading
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as Path_
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.stages import stats_names
from keyphrase_ui.auth import (
    can_edit,
    can_read,
    forbidden_detail,
    login_url,
    require_editor,
    require_user,
    user_from_request,
)
from keyphrase_ui.history import stage_of

log = logging.getLogger(__name__)

URL_PREFIX = "/keyphrases"
HERE = Path(__file__).resolve().parent
# the order of a day's stats on the page: the world (demo), then the stage table's
STAGES = ["synth", *stats_names()]

# item ids are int64 (keyphrase_pipeline.core.contracts); query text is bounded so one request cannot
# make the server scan or embed megabytes
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_QUERY_CHARS = 200

app = FastAPI(title="Keyphrase recommendations", docs_url=None, redoc_url=None, openapi_url=None)

_CACHE: dict = {}
_LOCK = threading.Lock()


# ---- data access (defensive: the lake may be empty, modules may be missing) -----------------------
def _settings():
    from keyphrase_pipeline.core.settings import get_settings

    return get_settings()


def _lake():
    from keyphrase_pipeline.core.lake import Lake

    return Lake.from_settings(_settings())


def _jsonable(obj):
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _safe(what: str, fn, default):
    try:
        return fn()
    except ImportError as exc:
        log.info("keyphrases UI: %s unavailable (%s)", what, exc)
        return default
    except Exception as exc:  # the page must render whatever state the lake is in
        log.warning("keyphrases UI: %s failed: %s: %s", what, type(exc).__name__, exc)
        return default


def versions(kind: str = "students") -> list[dict]:
    def read():
        from keyphrase_pipeline.artifacts import registry

        out = []
        for v in registry.list_versions(_settings(), kind):
            out.append({k: v.get(k) for k in ("version", "kind", "ds", "created_at", "current", "metrics",
                                                "promotion", "data")})
        return out

    return _safe(f"registry ({kind})", read, [])


def champion() -> str | None:
    def read():
        from keyphrase_pipeline.artifacts import registry

        return registry.champion(_settings())

    return _safe("champion", read, None)


def champion_problem() -> str | None:
    """Why ``registry/CHAMPION`` cannot be read (``registry.UnreadablePointerError``: the file and how to fix it),
    or None when it is readable or absent."""
    try:
        from keyphrase_pipeline.artifacts import registry

        registry.champion(_settings())
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - UnreadablePointerError, or an I/O error reading it
        from keyphrase_pipeline.labels.reviews import lake_relative

        text = str(exc) if "is unreadable" in str(exc) else \
            f"registry/CHAMPION is unreadable: {type(exc).__name__}: {str(exc)[:160]}; fix with `kp promote --version V`"
        return _safe("lake path", lambda: lake_relative(_lake(), text), text)
    return None


def serving_version() -> str | None:
    def read():
        from keyphrase_pipeline.artifacts import serving

        return serving.current_version(_settings())

    return _safe("serving version", read, None)


def published_versions() -> list[str]:
    """Complete published serving versions, oldest first ([] when none or unreadable)."""
    def read():
        from keyphrase_pipeline.artifacts import serving

        return serving.published_versions(_settings())

    return _safe("published versions", read, [])


def run_days_and_notes() -> tuple[list[str], list[str]]:
    """``keyphrase_ui.history.recorded_days``: the run days that are real dates with a record, and a note per
    ``runs/ds=*`` folder left out (([], []) when the lake cannot be listed)."""
    from keyphrase_ui import history as hist

    return _safe("run days", lambda: hist.recorded_days(_lake()), ([], []))


def run_days() -> list[str]:
    return run_days_and_notes()[0]


def run_stats(ds: str | None = None) -> dict:
    """``{"ds": D, "stages": {stage: stats}}`` for day ``ds`` (default: the latest day with stats); ``notes`` names
    the ``runs/ds=*`` folders left out (not a date, empty)."""
    days, notes = run_days_and_notes()
    if ds is None:
        if not days:
            return {"ds": None, "days": [], "stages": {}, **({"notes": notes} if notes else {})}
        ds = days[-1]
    lake = _lake()
    base = Path(lake.run_stats_dir(ds))
    stages = {}
    if base.is_dir():
        for f in sorted(base.glob("*.json")):
            stats = _safe(f"run stats {f}", lambda f=f: lake.read_json(lake.run_stats_path(ds, f.stem)), None)
            if isinstance(stats, dict):
                stages[stage_of(f.stem)] = stats
            else:
                notes.append(f"{layout.partition_name('runs', ds)}/{f.name}: the run stats are unreadable (not a JSON object); rerun the "
                             "stage for that day to rewrite them")
    order = {s: i for i, s in enumerate(STAGES)}
    stages = dict(sorted(stages.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))
    failures = {}
    fdir = Path(lake.run_failure_path(ds, "x")).parent
    if fdir.is_dir():
        for f in sorted(fdir.glob("*.json")):
            rec = _safe(f"failure record {f}", lambda f=f: lake.read_json(str(f)), None)
            if isinstance(rec, dict):
                failures[f.stem] = rec
            else:
                notes.append(f"{layout.partition_name('runs', ds)}/_failed/{f.name}: the failure record is unreadable (not JSON); the task "
                             "log in Airflow has the error")
    return {"ds": ds, "days": days, "stages": stages, "failures": failures, "notes": notes}


def no_run_detail(ds: str, days: list[str]) -> str:
    """What a request for a day without any run record is told (the days that have one, and how to fill it)."""
    have = f"days with runs: {days[0]} .. {days[-1]} ({len(days)})" if days else "no day has a run yet"
    return (f"No run recorded for ds={ds} ({have}). To process that day, trigger the keyphrase_daily DAG with the "
            f"ds param set to {ds} (Airflow: Trigger DAG w/ config), or run the stages with `kp ... --ds {ds}`.")


def status_messages(students: list[dict], champ: str | None, serving: str | None, runs: dict,
                    champ_problem: str | None = None) -> list[dict]:
    """What the page should tell about the lake's state: ``[{level: info|warning|error, text}]``, each saying what
    happened and what to do (empty lake, nothing trained or published, a pointer to a missing version or one that
    cannot be read (``champ_problem``, from ``champion_problem``), a failed stage on the latest day)."""
    out = []
    if not runs.get("days"):
        out.append({"level": "info", "text": "The lake is empty: no run recorded yet. Trigger the keyphrase_daily DAG "
                    "(demo: `kp demo`, or the DAG's `scale` param to generate the synthetic world first)."})
    known = {v["version"] for v in students}
    if champ_problem:
        out.append({"level": "error", "text": champ_problem + (f" (complete versions: {', '.join(sorted(known)[-5:])})"
                                                               if known else "")})
    elif champ and champ not in known:
        alt = f" (complete versions: {', '.join(sorted(known)[-5:])})" if known else ""
        out.append({"level": "error", "text": f"registry/CHAMPION points to {champ}, which is missing from registry/students "
                    f"(deleted, or its model/ directory is incomplete). Promote a complete version: `kp promote --list`, "
                    f"then `kp promote --version <version>`{alt}."})
    elif not champ and students:
        out.append({"level": "warning", "text": "No champion: models were trained but none promoted. Promote one "
                    "(`kp promote --version <version>`) or let the next run's evaluate stage decide."})
    elif not champ:
        out.append({"level": "info", "text": "No model trained yet: the first run of keyphrase_daily trains one (no "
                    "champion means a training day)."})
    if serving:
        published = published_versions()
        if serving not in published:
            alt = f" Published versions on disk: {', '.join(published[-3:])}." if published else ""
            out.append({"level": "error", "text": f"serving/CURRENT points to {serving}, whose bundle is missing or "
                        f"incomplete (no manifest): the live recommendations cannot be read. Roll back to a complete "
                        f"version: `kp rollback --to <version>`, or rerun publish.{alt}"})
    elif runs.get("days"):
        out.append({"level": "warning", "text": "Nothing published yet: the serve group publishes at the end of a "
                    "successful run; see the run history for the stage that stopped it."})
    for note in runs.get("notes") or []:
        out.append({"level": "warning", "text": note})
    latest = runs.get("ds")
    for stage, rec in (runs.get("failures") or {}).items():
        stats = (runs.get("stages") or {}).get(stage) or {}
        if str(rec.get("failed_at", "")) > str(stats.get("written_at", "")):
            out.append({"level": "error", "text": f"Latest day {latest}: stage {stage} failed ({rec.get('error_type')}: "
                        f"{str(rec.get('error', ''))[:300]}). Fix the cause, then clear the task in Airflow (it is "
                        "idempotent for its day): see Run history for the task log."})
    return out


def last_decision(vers: list[dict]) -> dict | None:
    """Why the newest challenger was or was not promoted (from the evaluate stats, else the registry)."""
    for ds in reversed(run_days()):
        stats = _safe("evaluate stats", lambda ds=ds: _lake().read_json(_lake().run_stats_path(ds, "evaluate")), None)
        if isinstance(stats, dict):
            return {"ds": ds, "candidate": stats.get("candidate") or stats.get("version"),
                    "promoted": stats.get("promoted"), "reason": stats.get("reason"), "source": "evaluate"}
    for v in vers:
        promo = v.get("promotion") or {}
        if promo:
            return {"ds": v.get("ds"), "candidate": v.get("version"), "promoted": promo.get("promoted"),
                    "reason": promo.get("reason"), "source": "registry"}
    return None


def _catalog():
    """The latest catalog snapshot as a ``pyarrow.dataset`` (file list and footers only; nothing is loaded whole: the
    page reads items with ``lake.rows_where`` / ``lake.sample_rows``, one row group at a time), or None."""
    def read():
        from keyphrase_pipeline.core.lake import parquet_dataset

        lake = _lake()
        days = lake.partitions("catalog")
        if not days:
            return None
        key = ("catalog", lake.root, days[-1])
        with _LOCK:
            if key not in _CACHE:  # footers checked against the contract once; ids read as int64 whatever wrote them
                _CACHE[key] = parquet_dataset(lake.path("catalog", ds=days[-1]), contract="catalog")
            return _CACHE[key]

    return _safe("catalog", read, None)


CATALOG_COLUMNS = ["item_id", "title", "category"]
CATALOG_BATCH_ROWS = 8192  # rows the title search reads at a time
SCORE_PLOT_ROWS = 200_000  # the score histogram draws at most this many published rows (a seeded sample)


def _world():
    """The lake's ground truth from the configured provider (``keyphrase_pipeline.core.truth``; the demo's synthetic world), or None."""
    def read():
        from keyphrase_pipeline.core.truth import load_truth

        settings = _settings()
        key = ("truth", settings.lake_root, settings.truth_provider)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = load_truth(settings)
            return _CACHE[key]

    return _safe("ground truth", read, None)


def as_item_id(text: str) -> int | None:
    """``text`` as an int64 item id when it is written with ASCII digits (an optional leading ``-``), else
    None. ``str.isdigit`` alone is not enough: it is true for ``'²'`` or ``'٣'``, which ``int`` rejects or
    reads as another number, and a 5,000-digit string is past ``int``'s conversion limit."""
    body = text[1:] if text.startswith("-") else text
    if not (body.isascii() and body.isdigit()) or len(body) > 19:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def items(q: str = "", limit: int = 20) -> list[dict]:
    """Up to ``limit`` catalog items ``{item_id, title, category}`` of the latest snapshot: the item whose id is
    ``q`` first, then those whose title contains ``q`` (literal; case-insensitive by Arrow's Unicode case folding),
    in file order; the first items when ``q`` is empty. Streams the snapshot ``CATALOG_BATCH_ROWS`` rows at a time
    and stops at ``limit`` matches: bounded memory on any catalog (a rare word reads every title once)."""
    def read():
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        dataset = _catalog()
        if dataset is None:
            return []
        text = q.strip()
        item_id = as_item_id(text) if text else None
        first = catalog_item(item_id) if item_id is not None else None
        out: list[dict] = [first] if first else []
        for path in dataset.files:
            for b in pq.ParquetFile(path).iter_batches(batch_size=CATALOG_BATCH_ROWS, columns=CATALOG_COLUMNS):
                t = b
                if text:
                    t = t.filter(pc.match_substring(t.column("title"), text, ignore_case=True).fill_null(False))
                rows = [{"item_id": int(r["item_id"]), "title": r["title"], "category": r["category"]}
                        for r in t.to_pylist() if first is None or int(r["item_id"]) != first["item_id"]]
                out += rows[:limit - len(out)]
                if len(out) >= limit:
                    return out
        return out

    return _safe("catalog", read, [])


def search(item_id: int | None, text: str | None, k: int) -> dict:
    from keyphrase_pipeline.artifacts import serving

    settings = _settings()
    bundle = serving.load_current(settings)
    item = None
    if item_id is not None:
        item = catalog_item(item_id)
        results = bundle.search(int(item_id), k)
        mode = "published recommendations"
        if not results and item is None:
            raise HTTPException(status_code=404, detail=unknown_item_detail(item_id))
        if not results and item is not None:  # item not in the published batch: embed its text live
            from keyphrase_pipeline.models.text import item_text

            results = bundle.search(item_text(item["title"], item["category"]), k)
            mode = "live search of the published index"
    else:
        results = bundle.search(text, k)
        mode = "live search of the published index"
    truth_known = False
    world = _world() if item_id is not None else None
    if world is not None and results:
        rel = world.is_relevant([int(item_id)] * len(results), [r["keyphrase_id"] for r in results])
        for r, flag in zip(results, rel):
            r["relevant"] = bool(flag)
        truth_known = True
    return {"version": bundle.version, "mode": mode, "item": item, "query": text, "k": k,
            "truth_known": truth_known, "results": results}


def unknown_item_detail(item_id: int) -> str:
    """What a request for an item the catalog does not hold is told (no filesystem path: the lake's location is not
    the visitor's business)."""
    days = _safe("catalog days", lambda: _lake().partitions("catalog"), [])
    where = f"the latest catalog snapshot (catalog ds={days[-1]})" if days else "the catalog (none in the lake yet)"
    return f"item {item_id} is not in {where}: pick an item with the search box (title or id)"


def catalog_item(item_id: int) -> dict | None:
    """``{item_id, title, category}`` of the latest catalog snapshot, or None. Bounded memory
    (``lake.rows_where``: the id column a row group at a time, the rest of the row group that holds it)."""
    def read():
        from keyphrase_pipeline.core.lake import rows_where

        dataset = _catalog()
        if dataset is None:
            return None
        rows = rows_where(dataset, "item_id", [int(item_id)], CATALOG_COLUMNS, limit=1).to_pylist()
        return {"item_id": int(item_id), "title": rows[0]["title"], "category": rows[0]["category"]} if rows else None

    return _safe("catalog", read, None)


def catalog_titles(item_ids) -> dict[int, dict]:
    """``{item_id: {title, category}}`` of the latest catalog snapshot for a few ``item_ids`` (``lake.rows_where``:
    bounded memory); {} without a catalog."""
    def read():
        from keyphrase_pipeline.core.lake import rows_where

        dataset = _catalog()
        if dataset is None or not len(item_ids):
            return {}
        rows = rows_where(dataset, "item_id", [int(i) for i in item_ids], CATALOG_COLUMNS).to_pylist()
        return {int(r["item_id"]): {"title": r["title"], "category": r["category"]} for r in rows}

    return _safe("catalog", read, {})


def published_rows_of_keyphrase(version: str, keyphrase_id: int, limit: int):
    """(the ``limit`` best-scoring rows of serving ``version``'s recommendations that hold ``keyphrase_id``, pandas:
    item_id, rank, keyphrase_id, keyphrase, score; how many rows hold it). Streamed (``lake.iter_rows_where``) into a
    running top-``limit``: memory is one batch and ``limit`` rows, however many items have the keyphrase; every
    row group's keyphrase_id column is read (the bundle is laid out by item, not by keyphrase: 8 bytes a row)."""
    import pandas as pd

    from keyphrase_pipeline.artifacts.serving import published_recommendations_path
    from keyphrase_pipeline.core.lake import iter_rows_where, parquet_dataset

    columns = ["item_id", "rank", "keyphrase_id", "keyphrase", "score"]
    dataset = parquet_dataset(published_recommendations_path(_settings(), version), contract="recommendations")
    best, total = pd.DataFrame(columns=columns), 0
    for part in iter_rows_where(dataset, "keyphrase_id", [int(keyphrase_id)], columns):
        total += part.num_rows
        both = pd.concat([best, part.to_pandas()], ignore_index=True) if len(best) else part.to_pandas()
        best = both.sort_values(["score", "item_id"], ascending=[False, True]).head(limit)
    return best.reset_index(drop=True), total


def item_view(item_id: int, k: int) -> dict:
    """The explanation of an item's top-K (``keyphrase_ui.explain.explain_item``). An item the published version
    recommends keyphrases for but the latest catalog snapshot no longer holds (delisted since) is shown from its
    published rows, without text (so without the cross-encoder's score). Raises HTTPException 404 with what to do for
    an item in neither, or with the serving error when nothing published can be read."""
    from keyphrase_pipeline.artifacts import serving
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_ui import explain

    item = catalog_item(item_id)
    settings = _settings()
    try:
        bundle = serving.load_current(settings)
    except DataError as exc:  # nothing published can be read: that, not the catalog, is what to fix
        raise HTTPException(status_code=404, detail=serving_error_detail(exc)) from None
    results = bundle.search(int(item_id), k)
    mode = "published recommendations"
    if item is None:
        if not results:
            raise HTTPException(status_code=404, detail=unknown_item_detail(item_id))
        item = {"item_id": int(item_id), "title": "(no catalog row)", "category": "–", "in_catalog": False}
        mode = "published recommendations; the item has no row in the latest catalog snapshot"
    elif not results:
        from keyphrase_pipeline.models.text import item_text

        results = bundle.search(item_text(item["title"], item["category"]), k)
        mode = "live search of the published index (the item is not in the published batch)"
    return explain.explain_item(settings, _lake(), item, results, mode, bundle.version, world=_world())


def keyphrase_view(keyphrase_id: int, limit: int) -> dict:
    """Which items the published version recommends ``keyphrase_id`` to (``keyphrase_ui.explain.explain_keyphrase``).
    Raises HTTPException 404 with what to do when nothing is published or the keyphrase is unknown."""
    from keyphrase_ui import explain

    version = serving_version()
    if not version:
        raise HTTPException(status_code=404, detail="nothing is published yet: the serve group of keyphrase_daily "
                                                    "publishes at the end of a successful run")
    try:
        recs, total = published_rows_of_keyphrase(version, keyphrase_id, limit)
    except (OSError, ValueError) as exc:
        raise HTTPException(status_code=404, detail=f"the recommendations of serving version {version} cannot be read "
                                                    f"({type(exc).__name__}): roll back with `kp rollback --to <version>`") from None
    text = recs.loc[recs["keyphrase_id"] == keyphrase_id, "keyphrase"].head(1).tolist()
    if not text:
        def lookup():
            from keyphrase_pipeline.core.lake import read_parquet

            kp = read_parquet(_lake().path("keyphrases"), columns=["keyphrase_id", "text"])
            return kp.loc[kp["keyphrase_id"] == keyphrase_id, "text"].head(1).tolist()

        text = _safe("keyphrases", lookup, [])
        if not text:
            raise HTTPException(status_code=404, detail=f"keyphrase {keyphrase_id} is neither in the published "
                                                        "recommendations nor in raw/keyphrases: open one from an item's top-K")
    best = recs.sort_values(["score", "item_id"], ascending=[False, True]).head(limit)
    titles = catalog_titles(best["item_id"].tolist())
    catalog = None
    if titles:
        import pandas as pd

        catalog = pd.DataFrame([{"item_id": i, **v} for i, v in titles.items()])
    out = explain.explain_keyphrase(_lake(), keyphrase_id, recs, catalog, limit, world=_world(), total=total)
    return {"keyphrase_id": int(keyphrase_id), "keyphrase": text[0], "serving_version": version, **out,
            "note": "" if out["total_items"] else "no item has this keyphrase in its published top-K"}


def champion_history() -> list[dict]:
    """``registry/champion_history.jsonl`` as a list (oldest first; [] when none)."""
    def read():
        import json

        from keyphrase_pipeline.core import layout

        p = Path(layout.champion_history_path(_settings()))
        if not p.is_file():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    return _safe("champion history", read, [])


def compare_view(n_items: int, k: int) -> dict:
    """Champion vs the newest challenger (``keyphrase_ui.explain.compare``) plus both models' top-K for ``n_items``
    sample items (seeded by the challenger's version) when both are embedded."""
    from keyphrase_ui import explain

    settings = _settings()
    champ = champion()
    def target():
        from keyphrase_pipeline.artifacts import serving

        return serving.rollback_target(settings)

    out = explain.compare(settings, _lake(), versions("students"), champ, champion_history(), published_versions(),
                          serving_version(), rollback_target=_safe("rollback target", target, None))
    problem = champion_problem() if champ is None else None
    if problem:
        out["message"] = f"No champion to compare with: {problem}"
    if out["challenger"] and champ and not out["message"]:
        sample = _safe("catalog", lambda: explain.sample_items(_catalog(), n_items, out["challenger"]), None)
        if sample is None or not len(sample):
            out["topk_note"] = "no catalog in the lake: no items to compare on"
        else:
            ids = [int(i) for i in sample["item_id"]]
            titles = sample.set_index("item_id")
            def kp_text():
                from keyphrase_pipeline.core.lake import read_parquet

                kp = read_parquet(_lake().path("keyphrases"), columns=["keyphrase_id", "text"])
                return dict(zip(kp["keyphrase_id"].astype("int64").tolist(), kp["text"]))

            text = _safe("keyphrase texts", kp_text, {})
            rows, note = explain.topk_side_by_side(_lake(), settings, {"champion": out.get("baseline") or champ,
                                                                       "challenger": out["challenger"]},
                                                   ids, k, text, world=_world())
            for r in rows:
                r["title"] = str(titles.loc[r["item_id"], "title"]) if r["item_id"] in titles.index else None
            out["topk"], out["topk_note"] = rows, note
    elif not out["topk_note"]:
        out["topk_note"] = "no champion and challenger to compare"
    return out


def review_view(ds: str | None, n: int, user) -> dict:
    """The label review of a label store day (default: the newest): a seeded sample of its judged pairs with the
    verdicts so far (the user's own and the counts), the agreement per day, judge and prompt version, and whether
    the user may review. HTTPException 404 with what to do for a day without judged pairs."""
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.labels import reviews as label_reviews

    settings = _settings()
    days = _safe("label store days", lambda: _lake().partitions("llm_store"), [])
    name = getattr(user, "username", None) or str(user)
    skipped: list[str] = []
    base = {"user": name, "can_review": can_edit(user), "days": days, "sample": [], "agreement": [], "message": "",
            "notes": []}
    reviews = _safe("label reviews", lambda: label_reviews.read(settings, skipped=skipped), None)
    if reviews is not None:
        base["agreement"] = label_reviews.agreement(reviews)
    else:
        base["notes"].append("the stored verdicts cannot be read (label_reviews/): counts and agreement are not shown; "
                             "the API server's log has the error")
    if skipped:
        base["notes"].append(reviews_skipped_note(skipped))
    if not days:
        return {**base, "ds": None, "message": "No judged pairs yet: the labelling group of keyphrase_daily "
                "(select_pairs, llm_label, merge_labels) judges pairs each day; review them here afterwards."}
    ds = ds or days[-1]
    try:
        rows = label_reviews.sample(settings, ds, n)
    except DataError as exc:
        raise HTTPException(status_code=404, detail=f"{exc}: pick a day that has labels") from None
    except Exception as exc:  # noqa: BLE001 - a damaged label store file (ArrowInvalid): no sample, say why
        log.warning("keyphrases UI: label store day %s unreadable: %s: %s", ds, type(exc).__name__, exc)
        day = layout.partition_name('llm_labels/store', ds)
        base["notes"].append(f"the label store day {day} cannot be read ({type(exc).__name__}): no "
                             f"sample to review. Rewrite it with `kp merge-labels --ds {ds}` (or clear the day's merge "
                             "task in Airflow), or pick another day.")
        return {**base, "ds": ds}
    latest = label_reviews.latest_verdicts(reviews) if reviews is not None and len(reviews) else None
    sample = []
    for r in rows.to_dict("records"):
        mine, counts = None, {"agree": 0, "disagree": 0}
        if latest is not None:
            got = latest[latest["pair_key"] == r["pair_key"]]
            for v in got.to_dict("records"):
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
                if v["reviewer"] == name:
                    mine = v["verdict"]
        at = r["labelled_at"]
        sample.append({"pair_key": r["pair_key"], "item_id": int(r["item_id"]), "keyphrase_id": int(r["keyphrase_id"]),
                       "title": r["title"], "category": r["category"], "keyphrase": r["keyphrase"], "source": r["source"],
                       "label": "yes" if int(r["label"]) == 1 else "no", "p_yes": float(r["p_yes"]),
                       "judge": f"{r['judge']}:{r['judge_model']}", "prompt_version": r["prompt_version"],
                       "labelled_at": at.isoformat() if hasattr(at, "isoformat") else str(at),
                       "my_verdict": mine, "verdicts": counts})
    note = "" if base["can_review"] else f"{name} may view but not review: reviewing needs edit permission on the DAG"
    return {**base, "ds": ds, "sample": sample, "message": note,
            "sampling": f"{len(sample)} of the day's judged pairs, drawn with a seed fixed for ds={ds} (same for every "
                        "reviewer); verdicts are stored append-only in label_reviews/"}


def reviews_skipped_note(skipped: list[str]) -> str:
    """The note for review files ``label_reviews.read`` left out (not parquet, or without the contract's columns;
    named relative to the lake root)."""
    shown = "; ".join(s[:160] for s in skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return (f"{len(skipped)} unreadable review file(s) (or files with invalid rows) left out of the counts: {shown}. "
            "Move the damaged file(s) out "
            "of label_reviews/ (other verdicts are unaffected; a verdict lost with one can be given again).")


def reviews_plot() -> bytes | None:
    """Agreement rate with the judge per label store day, one line per judge and prompt version (n per point);
    unreadable review files are left out (``label_reviews.read``)."""
    from keyphrase_pipeline.labels import reviews as label_reviews

    reviews = _safe("label reviews", lambda: label_reviews.read(_settings()), None)
    if reviews is None:
        return None
    rows = label_reviews.agreement(reviews)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["judge"], r["prompt_version"]), []).append(r)
    for (judge, prompt), rs in groups.items():
        x = [dt.date.fromisoformat(r["ds"]) for r in rs]
        y = [100 * r["agreement_rate"] for r in rs]
        ax.plot(x, y, marker="o", label=f"{judge} · prompt {prompt}")
        for xi, yi, r in zip(x, y, rs):
            ax.annotate(f"n={r['reviews']}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    days = sorted({dt.date.fromisoformat(r["ds"]) for r in rows})
    ax.set_xlim(days[0] - dt.timedelta(days=1), days[-1] + dt.timedelta(days=1))  # one day: not a span of years
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.set_ylim(0, 112)
    ax.set_ylabel("agreeing with the judge (%)")
    ax.set_title("Label review: agreement with the LLM judge per day")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


# ---- plots ----------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def score_plot() -> bytes | None:
    """Histogram of published recommendation scores; on the demo world split by true relevance."""
    version = serving_version()
    if not version:
        return None
    key = ("scores", _lake().root, version)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]

    def build():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pyarrow.dataset as pads

        from keyphrase_pipeline.artifacts.serving import published_recommendations_path
        from keyphrase_pipeline.core.lake import sample_rows

        dataset = pads.dataset(published_recommendations_path(_settings(), version), format="parquet",
                               ignore_prefixes=[".", "_"])
        total = dataset.count_rows()  # footers only
        recs = sample_rows(dataset, SCORE_PLOT_ROWS, 0, ["item_id", "keyphrase_id", "score"]).to_pandas()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        world = _world()
        if world is not None and len(recs):
            rel = world.is_relevant(recs["item_id"].to_numpy(), recs["keyphrase_id"].to_numpy())
            ax.hist(recs["score"][rel], bins=40, alpha=0.6, label=f"truly relevant ({rel.mean():.0%})")
            ax.hist(recs["score"][~rel], bins=40, alpha=0.6, label="not relevant")
            ax.legend()
        else:
            ax.hist(recs["score"], bins=40)
        ax.set_xlabel("student score (cosine, + hybrid bonus where re-scored)")
        ax.set_ylabel("recommendations")
        shown = f"{len(recs):,} recommendations" if len(recs) == total else \
            f"a sample of {len(recs):,} of {total:,} recommendations"
        ax.set_title(f"published version {version}: {shown}")
        return _png(fig)

    png = _safe("score plot", build, None)
    if png is not None:
        with _LOCK:
            _CACHE[key] = png
    return png


def serving_error_detail(exc: Exception) -> str:
    """A serving DataError's message plus what to do about it."""
    text = str(exc)
    if "nothing is published yet" in text:
        return text + " (the serve group of keyphrase_daily publishes at the end of a successful run)"
    if "not found" in text or "no manifest" in text or "corrupted bundle" in text:
        return (f"{text}. The live version is missing or damaged: roll back to a complete one with `kp rollback --to "
                "<version>` (or rerun the day's publish task).")
    return text


def curves_detail(kind: str, version: str | None) -> str:
    """Why there is no training-curves PNG for ``version`` of ``kind``, and what to do."""
    vers = [v["version"] for v in versions(kind)] if kind in ("students", "cross") else []
    if not vers:
        return f"no {kind} model trained yet: the train group of keyphrase_daily trains one on a training day"
    if version and version not in vers:
        return (f"no {kind} version {version!r} in the registry (missing or deleted); known: "
                f"{', '.join(vers[:5])}{' ...' if len(vers) > 5 else ''}")
    problem = champion_problem() if kind == "students" and not version else None
    if problem:
        return (f"{problem}: no champion curves to show; or ask for a version with ?version= (known: "
                f"{', '.join(vers[:5])}{' ...' if len(vers) > 5 else ''})")
    champ = champion() if kind == "students" and not version else None
    if champ and champ not in vers:
        return (f"registry/CHAMPION points to {champ}, which is missing from registry/students: no champion curves to "
                f"show. Promote a complete version (`kp promote --version <version>`), or ask for one with "
                f"?version= (known: {', '.join(vers[:5])}{' ...' if len(vers) > 5 else ''})")
    return f"{kind} version {version or vers[0]} has no curves.png (trained before curves were saved)"


def curves_file(kind: str, version: str | None) -> Path | None:
    if kind not in ("students", "cross"):
        return None
    vers = versions(kind)
    if not vers:
        return None
    if version:
        chosen = next((v for v in vers if v["version"] == version), None)
    else:
        chosen = next((v for v in vers if v.get("current")), None)
        if chosen is None and kind == "students" and champion_problem():
            return None  # the champion pointer cannot be read: say so (curves_detail), not another version's curves
        if chosen is None:
            champ = champion() if kind == "students" else None
            if champ and champ not in {v["version"] for v in vers}:
                return None  # the champion pointer is broken: say so (curves_detail), not another version's curves
            chosen = vers[0]
    if chosen is None:
        return None

    def path():

        return Path(layout.version_file(layout.registry_version_dir(_settings(), chosen["version"], kind), "curves"))

    p = _safe("curves path", path, None)
    return p if p is not None and p.is_file() else None


def run_history(days: int) -> dict:
    """``keyphrase_ui.history.history`` for the configured lake and ``ui.*`` settings (see that module)."""
    from keyphrase_ui import history as hist

    settings = _settings()
    return hist.history(_lake(), days, settings.ui.deviation_threshold, settings.ui.deviation_window_days,
                        prefix=hist.base_path())


def history_plot(days: int) -> bytes | None:
    """Trend plots of the watched metrics over the last ``days`` days (one panel each, flagged days in red);
    None when the lake has no run."""
    data = run_history(days)
    if not data["days"]:
        return None
    return _png(history_figure(data))


def history_figure(data: dict):
    """The matplotlib figure of ``history_plot`` for a non-empty ``keyphrase_ui.history.history`` result. The
    x axis ticks whole days only (at most ~8 labels): on a young lake (the demo's 3 days) matplotlib's automatic
    date ticks would fall between days and repeat each day's label."""
    import matplotlib

    from keyphrase_ui import history as hist

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = list(reversed(data["days"]))  # oldest first
    x = [dt.date.fromisoformat(d["ds"]) for d in rows]
    shown = [m for m in hist.METRICS if m["watch"]] + [m for m in hist.METRICS if m["key"] == "items_embedded"]
    ncols = 2
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 2.1 * nrows), sharex=True, squeeze=False)
    for ax, m in zip(axes.flat, shown):
        scale = 100.0 if m["kind"] == "share" else 1.0
        ys = [d["metrics"].get(m["key"]) for d in rows]
        pts = [(xi, y * scale) for xi, y in zip(x, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, color="#2b6cb0")
        flagged = [(xi, y * scale) for xi, y, d in zip(x, ys, rows)
                   if y is not None and any(f["metric"] == m["key"] for f in d.get("flags", []))]
        if flagged:
            ax.scatter([p[0] for p in flagged], [p[1] for p in flagged], s=42, color="#c53030", zorder=3,
                       label="flagged")
            ax.legend(loc="best", fontsize=7, frameon=False)
        unit = "%" if m["kind"] == "share" else m["unit"]
        ax.set_title(f"{m['label']} ({unit})" if unit else m["label"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="#718096")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    step = max(1, math.ceil(len(x) / 8))
    for ax in axes[-1]:
        ax.xaxis.set_major_locator(mdates.DayLocator(interval=step))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        ax.set_xlim(x[0] - dt.timedelta(hours=12), x[-1] + dt.timedelta(hours=12))
    fig.suptitle(f"Run history {rows[0]['ds']} .. {rows[-1]['ds']} (red: deviates > "
                 f"{data['threshold']:.0%} from the previous {data['window_days']} days' mean)", fontsize=10)
    fig.tight_layout()
    return fig


# ---- routes ---------------------------------------------------------------------------------------
@app.exception_handler(Exception)
async def unexpected_error(request: Request, exc: Exception):
    """An unexpected error answers JSON naming it (logged with its traceback here), never a stack trace page."""
    log.exception("keyphrases UI: %s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": f"the Keyphrases page could not answer {request.url.path}: {type(exc).__name__}: "
                                   f"{str(exc)[:300]}. The API server's log has the details."}, status_code=500)


MAX_ECHO_CHARS = 200  # a 422 quotes at most this much of the rejected input


def _clip(value):
    """``value`` with every string longer than ``MAX_ECHO_CHARS`` cut (noting how long it was), recursively."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO_CHARS else \
            f"{value[:MAX_ECHO_CHARS]}... ({len(value):,} characters, cut)"
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clip(v) for v in value]
    return value


def _clip_input(err):
    """One 422 error with its ``input`` cut to ``MAX_ECHO_CHARS`` of its JSON form when longer (a 100 KB list or
    object is not echoed in full either; a short input is left as it is)."""
    if not isinstance(err, dict) or "input" not in err or isinstance(err["input"], str):
        return err  # a string was already cut by ``_clip``, saying how long it was
    text = json.dumps(err["input"], ensure_ascii=False, default=str)
    if len(text) <= MAX_ECHO_CHARS:
        return err
    return {**err, "input": f"{text[:MAX_ECHO_CHARS]}... ({len(text):,} characters, cut)"}


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError):
    """422 as FastAPI words it, but echoing at most ``MAX_ECHO_CHARS`` of each rejected input (a 100 KB parameter is
    not sent back in full)."""
    from fastapi.encoders import jsonable_encoder

    errors = [{k: v for k, v in err.items() if k != "url"} for err in exc.errors()]
    return JSONResponse({"detail": [_clip_input(e) for e in _clip(jsonable_encoder(errors))]}, status_code=422)


@app.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request):
    """The page: a redirect to Airflow's login without a valid token, 403 without read access to the DAG
    (the permission every API route requires, ``keyphrase_ui.auth.require_user``)."""
    user = await user_from_request(request)
    if user is None:
        return RedirectResponse(login_url(f"{URL_PREFIX}/"), status_code=303)
    if not can_read(user):
        from html import escape

        return HTMLResponse(f"<!doctype html><title>Forbidden</title><h1>403 Forbidden</h1><p>{escape(forbidden_detail())}</p>",
                            status_code=403)
    return HTMLResponse((HERE / "templates" / "index.html").read_text(encoding="utf-8"))


@app.get("/static/icon.svg", include_in_schema=False)
def icon():  # the nav icon: public, no data in it
    return Response((HERE / "static" / "icon.svg").read_bytes(), media_type="image/svg+xml")


@app.get("/api/overview")
def overview(user=Depends(require_user)):
    students = versions("students")
    settings = _settings()
    truth = _world()  # logs why truth metrics are skipped when no provider is configured
    champ, serving, runs_now = champion(), serving_version(), run_stats()
    problem = champion_problem() if champ is None else None
    return JSONResponse(_jsonable({
        "user": getattr(user, "username", None) or str(user),
        "lake_root": settings.lake_root,
        "judge_backend": settings.judge.backend,
        "synthetic_world": truth is not None,
        "champion": champ,
        "serving_version": serving,
        "versions": students,
        "cross_versions": versions("cross"),
        "last_decision": last_decision(students),
        "runs": runs_now,
        "champion_problem": problem,
        "messages": status_messages(students, champ, serving, runs_now, problem),
    }))


@app.get("/api/runs")
def runs(ds: str | None = Query(None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), user=Depends(require_user)):
    # [0-9], not \d: \d also matches '٣' or '２'; and the pattern lets 2026-13-45 through, so parse it too
    if ds is not None:
        import datetime as dt

        try:
            ds = dt.date.fromisoformat(ds).isoformat()
        except ValueError:
            raise HTTPException(status_code=422, detail=f"ds must be a real date YYYY-MM-DD, got {ds!r}") from None
        days = run_days()
        if ds not in days:
            raise HTTPException(status_code=404, detail=no_run_detail(ds, days))
    out = run_stats(ds)
    if out["ds"] is None:
        out["message"] = ("No run recorded yet: the lake has no runs/ds=*/ stats. Trigger the keyphrase_daily DAG "
                          "(Airflow: Trigger DAG; demo: `kp demo`), or run the stages for a day with "
                          "`kp ctr-labels --ds YYYY-MM-DD` and the following commands (`kp --help`).")
    return JSONResponse(_jsonable(out))


@app.get("/api/history")
def history_route(days: int | None = Query(None, ge=1, le=366), user=Depends(require_user)):
    """Per day (newest first) and stage: status, duration, task links; key metrics with units; flagged deviations."""
    days = days or _settings().ui.history_days
    return JSONResponse(_jsonable(run_history(days)))


@app.get("/api/plots/history.png")
def history_png(days: int | None = Query(None, ge=1, le=366), user=Depends(require_user)):
    png = history_plot(days or _settings().ui.history_days)
    if png is None:
        raise HTTPException(status_code=404, detail="no run recorded yet: trigger the keyphrase_daily DAG")
    return Response(png, media_type="image/png")


@app.get("/api/items")
def list_items(q: str = Query("", max_length=MAX_QUERY_CHARS), limit: int = Query(20, ge=1, le=200),
               user=Depends(require_user)):
    return JSONResponse(items(q, limit))


@app.get("/api/search")
def search_route(item_id: int | None = Query(None, ge=INT64_MIN, le=INT64_MAX),
                 q: str | None = Query(None, max_length=MAX_QUERY_CHARS), k: int = Query(10, ge=1, le=100),
                 user=Depends(require_user)):
    if item_id is None and not (q or "").strip():
        raise HTTPException(status_code=422, detail="give item_id or q")
    try:
        return JSONResponse(_jsonable(search(item_id, q, k)))
    except ImportError as exc:
        raise HTTPException(status_code=503, detail=f"serving not available yet: {exc}") from None
    except Exception as exc:
        from keyphrase_pipeline.core.errors import DataError

        if isinstance(exc, DataError):
            raise HTTPException(status_code=404, detail=serving_error_detail(exc)) from None
        raise


@app.get("/api/item/{item_id}")
def item_route(item_id: int = Path_(..., ge=INT64_MIN, le=INT64_MAX), k: int = Query(10, ge=1, le=100),
               user=Depends(require_user)):
    """Why each keyphrase is recommended for the item: cosine, cross-encoder, LLM label, CTR (``item_view``)."""
    return JSONResponse(_jsonable(item_view(item_id, k)))


@app.get("/api/keyphrase/{keyphrase_id}")
def keyphrase_route(keyphrase_id: int = Path_(..., ge=INT64_MIN, le=INT64_MAX), limit: int = Query(50, ge=1, le=500),
                    user=Depends(require_user)):
    """The items the published version recommends the keyphrase to (``keyphrase_view``)."""
    return JSONResponse(_jsonable(keyphrase_view(keyphrase_id, limit)))


@app.get("/api/compare")
def compare_route(items: int = Query(5, ge=1, le=20), k: int = Query(10, ge=1, le=50), user=Depends(require_user)):
    """Champion vs the newest challenger: gate numbers and reason, metrics side by side, top-K on sample items,
    the manual promote/rollback commands (``compare_view``)."""
    return JSONResponse(_jsonable(compare_view(items, k)))


@app.get("/api/reviews")
def reviews_route(ds: str | None = Query(None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
                  n: int | None = Query(None, ge=1, le=500), user=Depends(require_user)):
    """The label review of a day: sample, verdicts, agreement (``review_view``)."""
    if ds is not None:
        try:
            ds = dt.date.fromisoformat(ds).isoformat()
        except ValueError:
            raise HTTPException(status_code=422, detail=f"ds must be a real date YYYY-MM-DD, got {ds!r}") from None
    return JSONResponse(_jsonable(review_view(ds, n or _settings().ui.review_sample_size, user)))


class ReviewIn(BaseModel):
    """A verdict on one judged pair of label store day ``ds``."""

    ds: str = Field(..., pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    pair_key: str = Field(..., min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    verdict: Literal["agree", "disagree"]


@app.post("/api/reviews", status_code=201)
def post_review(body: ReviewIn, user=Depends(require_editor)):
    """Store the signed-in editor's verdict (append-only, ``keyphrase_pipeline.labels.reviews.append``)."""
    from keyphrase_pipeline.core.errors import ConfigError, DataError
    from keyphrase_pipeline.labels import reviews as label_reviews

    try:
        ds = dt.date.fromisoformat(body.ds).isoformat()
    except ValueError:
        raise HTTPException(status_code=422, detail=f"ds must be a real date YYYY-MM-DD, got {body.ds!r}") from None
    name = getattr(user, "username", None) or str(user)
    try:
        rec = label_reviews.append(_settings(), ds, body.pair_key, body.verdict, name)
    except label_reviews.UncheckedPairError as exc:  # the store day has unreadable files and the pair is not found
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except DataError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return JSONResponse(_jsonable(rec), status_code=201)


@app.get("/api/reviews/export")
def reviews_export(from_: str | None = Query(None, alias="from", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
                   to: str | None = Query(None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), user=Depends(require_user)):
    """The reviewed pairs as a ``--labels`` CSV (``label_reviews.export_frame``: newest verdict per pair, label =
    the judge's label when agreed, its opposite when not); 404 with what to do when there is none."""
    from keyphrase_pipeline.core.errors import ConfigError, DataError
    from keyphrase_pipeline.labels import reviews as label_reviews

    try:
        df, stats = label_reviews.export_frame(_settings(), from_, to)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except DataError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    headers = {"Content-Disposition": 'attachment; filename="label_reviews.csv"',
               "X-Skipped-Review-Files": str(len(stats["skipped_files"]))}
    return Response(df.to_csv(index=False), media_type="text/csv; charset=utf-8", headers=headers)


@app.get("/api/plots/reviews.png")
def reviews_png(user=Depends(require_user)):
    png = reviews_plot()
    if png is None:
        raise HTTPException(status_code=404, detail="no label reviews yet: review a sample of judged pairs in the "
                                                    "Label review view")
    return Response(png, media_type="image/png")


@app.get("/api/plots/scores.png")
def scores_png(user=Depends(require_user)):
    png = score_plot()
    if png is None:
        version = serving_version()
        raise HTTPException(status_code=404, detail=(
            f"the recommendations of serving version {version} cannot be read (missing or damaged bundle): roll back "
            "with `kp rollback --to <version>`") if version else "no published recommendations yet: the serve group "
            "of keyphrase_daily publishes at the end of a successful run")
    return Response(png, media_type="image/png")


@app.get("/api/plots/curves.png")
def curves_png(kind: Literal["students", "cross"] = "students", version: str | None = Query(None, max_length=200),
               user=Depends(require_user)):
    p = curves_file(kind, version)
    if p is None:
        raise HTTPException(status_code=404, detail=curves_detail(kind, version))
    return Response(p.read_bytes(), media_type="image/png")
