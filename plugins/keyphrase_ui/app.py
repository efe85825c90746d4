"""The FastAPI app behind the "Keyphrases" page (mounted by Airflow at ``/keyphrases``).

Routes (all need a valid Airflow token, see ``keyphrase_ui.auth``)::

    GET /keyphrases/                     the page (redirects to Airflow's login without a session, 403
                                         without read access to the DAG)
    GET /keyphrases/api/overview         champion, serving version, model versions + metrics, promotion
                                         decision, latest run's stats per stage
    GET /keyphrases/api/runs?ds=D        one day's stats per stage (default: latest day)
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

from keyphrase_pipeline.core import layout

import io
import logging
import math
import threading
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from keyphrase_ui.auth import can_read, forbidden_detail, login_url, require_user, user_from_request

log = logging.getLogger(__name__)

URL_PREFIX = "/keyphrases"
HERE = Path(__file__).resolve().parent
STAGES = ["synth", "ctr_labels", "select_pairs", "llm_labels", "train_cross", "train_bi", "evaluate",
          "export", "embed_items", "embed_keyphrases", "embed", "index", "recommend", "publish"]

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
        from keyphrase_pipeline.jobs import registry

        out = []
        for v in registry.list_versions(_settings(), kind):
            out.append({k: v.get(k) for k in ("version", "kind", "ds", "created_at", "current", "metrics",
                                                "promotion", "data")})
        return out

    return _safe(f"registry ({kind})", read, [])


def champion() -> str | None:
    def read():
        from keyphrase_pipeline.jobs import registry

        return registry.champion(_settings())

    return _safe("champion", read, None)


def serving_version() -> str | None:
    def read():
        from keyphrase_pipeline.jobs import serving

        return serving.current_version(_settings())

    return _safe("serving version", read, None)


def run_days() -> list[str]:
    return _safe("run days", lambda: _lake().partitions("runs"), [])


def run_stats(ds: str | None = None) -> dict:
    """``{"ds": D, "stages": {stage: stats}}`` for day ``ds`` (default: the latest day with stats)."""
    days = run_days()
    if ds is None:
        if not days:
            return {"ds": None, "days": [], "stages": {}}
        ds = days[-1]
    lake = _lake()
    base = Path(lake.run_stats_dir(ds))
    stages = {}
    if base.is_dir():
        for f in sorted(base.glob("*.json")):
            stats = _safe(f"run stats {f}", lambda f=f: lake.read_json(lake.run_stats_path(ds, f.stem)), None)
            if isinstance(stats, dict):
                stages[f.stem] = stats
    order = {s: i for i, s in enumerate(STAGES)}
    stages = dict(sorted(stages.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))
    return {"ds": ds, "days": days, "stages": stages}


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
    def read():
        from keyphrase_pipeline.core.lake import read_parquet

        lake = _lake()
        days = lake.partitions("catalog")
        if not days:
            return None
        key = ("catalog", lake.root, days[-1])
        with _LOCK:
            if key not in _CACHE:
                df = read_parquet(lake.path("catalog", ds=days[-1]), columns=["item_id", "title", "category"])
                _CACHE[key] = df.sort_values("item_id").reset_index(drop=True)
            return _CACHE[key]

    return _safe("catalog", read, None)


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
    """Up to ``limit`` catalog items ``{item_id, title, category}`` (latest snapshot, by item id) whose title
    contains ``q`` (case-insensitive, literal) or whose id is ``q``; all items when ``q`` is empty."""
    df = _catalog()
    if df is None or df.empty:
        return []
    q = q.strip()
    if q:
        mask = df["title"].str.contains(q, case=False, regex=False, na=False)
        item_id = as_item_id(q)
        if item_id is not None:
            mask |= df["item_id"] == item_id
        df = df[mask]
    return [{"item_id": int(r.item_id), "title": r.title, "category": r.category} for r in df.head(limit).itertuples()]


def search(item_id: int | None, text: str | None, k: int) -> dict:
    from keyphrase_pipeline.jobs import serving

    settings = _settings()
    bundle = serving.load_current(settings)
    item = None
    if item_id is not None:
        df = _catalog()
        if df is not None:
            row = df[df["item_id"] == item_id]
            if len(row):
                item = {"item_id": int(item_id), "title": row.iloc[0]["title"], "category": row.iloc[0]["category"]}
        results = bundle.search(int(item_id), k)
        mode = "published recommendations"
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
        import pandas as pd

        from keyphrase_pipeline.jobs.serving import published_recommendations_path

        recs = pd.read_parquet(published_recommendations_path(_settings(), version),
                               columns=["item_id", "keyphrase_id", "score"])
        fig, ax = plt.subplots(figsize=(6, 3.2))
        world = _world()
        if world is not None and len(recs):
            rel = world.is_relevant(recs["item_id"].to_numpy(), recs["keyphrase_id"].to_numpy())
            ax.hist(recs["score"][rel], bins=40, alpha=0.6, label=f"truly relevant ({rel.mean():.0%})")
            ax.hist(recs["score"][~rel], bins=40, alpha=0.6, label="not relevant")
            ax.legend()
        else:
            ax.hist(recs["score"], bins=40)
        ax.set_xlabel("cosine score")
        ax.set_ylabel("recommendations")
        ax.set_title(f"published version {version}: {len(recs):,} recommendations")
        return _png(fig)

    png = _safe("score plot", build, None)
    if png is not None:
        with _LOCK:
            _CACHE[key] = png
    return png


def curves_file(kind: str, version: str | None) -> Path | None:
    if kind not in ("students", "cross"):
        return None
    vers = versions(kind)
    if not vers:
        return None
    chosen = next((v for v in vers if v["version"] == version), None) if version else \
        next((v for v in vers if v.get("current")), vers[0])
    if chosen is None:
        return None

    def path():

        return Path(layout.version_file(layout.registry_version_dir(_settings(), chosen["version"], kind), "curves"))

    p = _safe("curves path", path, None)
    return p if p is not None and p.is_file() else None


# ---- routes ---------------------------------------------------------------------------------------
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
    return JSONResponse(_jsonable({
        "user": getattr(user, "username", None) or str(user),
        "lake_root": settings.lake_root,
        "judge_backend": settings.judge.backend,
        "synthetic_world": truth is not None,
        "champion": champion(),
        "serving_version": serving_version(),
        "versions": students,
        "cross_versions": versions("cross"),
        "last_decision": last_decision(students),
        "runs": run_stats(),
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
    return JSONResponse(_jsonable(run_stats(ds)))


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
            raise HTTPException(status_code=404, detail=str(exc)) from None
        raise


@app.get("/api/plots/scores.png")
def scores_png(user=Depends(require_user)):
    png = score_plot()
    if png is None:
        raise HTTPException(status_code=404, detail="no published recommendations yet")
    return Response(png, media_type="image/png")


@app.get("/api/plots/curves.png")
def curves_png(kind: Literal["students", "cross"] = "students", version: str | None = Query(None, max_length=200),
               user=Depends(require_user)):
    p = curves_file(kind, version)
    if p is None:
        raise HTTPException(status_code=404, detail="no training curves for that version yet")
    return Response(p.read_bytes(), media_type="image/png")
