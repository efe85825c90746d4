"""The Keyphrases plugin, mounted by Airflow's own API app: auth is enforced, and the API shows the real
published version, run stats, model versions, search results with the demo world's truth, and plots."""

from __future__ import annotations

from pathlib import Path

import pytest

API_ROUTES = ["/keyphrases/api/overview", "/keyphrases/api/runs", "/keyphrases/api/items",
              "/keyphrases/api/search?q=phone", "/keyphrases/api/plots/scores.png",
              "/keyphrases/api/plots/curves.png", "/keyphrases/api/history", "/keyphrases/api/plots/history.png"]


def auth(api):
    return {"Authorization": f"Bearer {api['token']}"}


def test_plugin_is_registered_in_airflow_navigation(airflow_api):
    c = airflow_api["client"]
    plugins = c.get("/api/v2/plugins", headers=auth(airflow_api)).json()
    ours = [p for p in plugins["plugins"] if p["name"] == "keyphrases"]
    assert len(ours) == 1, plugins
    view = ours[0]["external_views"][0]
    assert view["name"] == "Keyphrases" and view["destination"] == "nav" and view["href"] == "/keyphrases/"
    assert ours[0]["fastapi_apps"][0]["url_prefix"] == "/keyphrases"


@pytest.mark.parametrize("route", API_ROUTES)
def test_api_refuses_requests_without_a_valid_token(airflow_api, route):
    c = airflow_api["client"]
    c.cookies.clear()
    assert c.get(route).status_code == 401
    assert c.get(route, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    assert c.get(route, headers={"Authorization": f"Bearer {airflow_api['token'][:-4]}AAAA"}).status_code == 401
    assert c.get(route, headers=auth(airflow_api)).status_code == 200


def test_page_redirects_to_login_and_accepts_the_ui_cookie(airflow_api):
    c = airflow_api["client"]
    c.cookies.clear()
    r = c.get("/keyphrases/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/auth/login")
    assert "next=%2Fkeyphrases%2F" in r.headers["location"]
    c.cookies.set("_token", airflow_api["token"])
    try:
        r = c.get("/keyphrases/", follow_redirects=False)
        assert r.status_code == 200 and "Keyphrase recommendations" in r.text
        assert c.get("/keyphrases/api/overview").status_code == 200  # the cookie alone authenticates
    finally:
        c.cookies.clear()


def token_without_read_access() -> str:
    """A token the API server's own auth manager signs for a user whose role grants nothing (SimpleAuthManager:
    no role), i.e. logged in but not allowed to read the DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="visitor", role=None))


@pytest.mark.parametrize("route", ["/keyphrases/", *API_ROUTES])
def test_logged_in_without_read_access_is_forbidden_page_included(airflow_api, route):
    c = airflow_api["client"]
    c.cookies.clear()
    visitor = {"Authorization": f"Bearer {token_without_read_access()}"}
    r = c.get(route, headers=visitor, follow_redirects=False)
    assert r.status_code == 403, (route, r.status_code, r.text[:200])
    assert "not allowed to read DAG keyphrase_daily" in r.text
    assert airflow_api["version"] not in r.text  # nothing from the lake
    assert c.get(route, headers=auth(airflow_api), follow_redirects=False).status_code == 200


def test_page_refuses_the_ui_cookie_of_a_user_without_read_access(airflow_api):
    c = airflow_api["client"]
    c.cookies.clear()
    c.cookies.set("_token", token_without_read_access())
    try:
        r = c.get("/keyphrases/", follow_redirects=False)
        assert r.status_code == 403 and "Keyphrase recommendations" not in r.text
    finally:
        c.cookies.clear()


def test_overview_shows_models_decision_and_run_stats(airflow_api):
    o = airflow_api["client"].get("/keyphrases/api/overview", headers=auth(airflow_api)).json()
    assert o["champion"] == airflow_api["version"]
    assert o["serving_version"]
    assert o["synthetic_world"] is True and o["judge_backend"] == "simulated"
    v = next(v for v in o["versions"] if v["current"])
    assert v["version"] == airflow_api["version"]
    assert v["metrics"]["heldout"]["f1"] == pytest.approx(0.625)
    assert o["versions"][0]["version"] == airflow_api["challenger"]  # newest first
    assert o["last_decision"]["promoted"] is False and "champion kept" in o["last_decision"]["reason"]
    assert o["runs"]["ds"] == airflow_api["ds"]
    assert {"index", "recommend", "publish", "embed_items", "evaluate"} <= set(o["runs"]["stages"])


def test_items_search_with_truth(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    items = c.get("/keyphrases/api/items?limit=5", headers=h).json()
    assert 1 <= len(items) <= 5 and {"item_id", "title", "category"} <= set(items[0])
    word = items[0]["title"].split()[0]
    found = c.get(f"/keyphrases/api/items?q={word}&limit=50", headers=h).json()
    assert found and all(word.lower() in i["title"].lower() for i in found)

    r = c.get(f"/keyphrases/api/search?item_id={items[0]['item_id']}&k=5", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"]["item_id"] == items[0]["item_id"] and body["truth_known"] is True
    res = body["results"]
    assert 1 <= len(res) <= 5
    assert [x["rank"] for x in res] == sorted(x["rank"] for x in res)
    assert all(isinstance(x["relevant"], bool) and isinstance(x["score"], float) for x in res)
    scores = [x["score"] for x in res]
    assert scores == sorted(scores, reverse=True)

    text = c.get(f"/keyphrases/api/search?q={items[0]['title']}&k=3", headers=h).json()
    assert len(text["results"]) == 3 and text["truth_known"] is False
    assert c.get("/keyphrases/api/search", headers=h).status_code == 422


def test_plots_are_pngs(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    for route in ("/keyphrases/api/plots/scores.png", "/keyphrases/api/plots/curves.png"):
        r = c.get(route, headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.get("/keyphrases/api/plots/curves.png?version=nope", headers=h).status_code == 404


def test_empty_lake_says_no_data(monkeypatch, tmp_path):
    """Before the first run the app answers with empty data rather than errors."""
    import importlib

    ui = importlib.import_module("keyphrase_ui.app")  # the module (the package exports the FastAPI object as `app`)
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "empty"))
    get_settings.cache_clear()
    try:
        assert ui.versions() == [] and ui.champion() is None and ui.serving_version() is None
        assert ui.run_stats() == {"ds": None, "days": [], "stages": {}}
        assert ui.items() == [] and ui.score_plot() is None and ui.last_decision([]) is None
    finally:
        get_settings.cache_clear()


def test_item_search_puts_the_exact_id_first(monkeypatch, tmp_path):
    """An id typed in the search box finds that item first, even when many titles before it contain the digits."""
    import importlib

    import pandas as pd

    ui = importlib.import_module("keyphrase_ui.app")
    from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "lake"))
    get_settings.cache_clear()
    try:
        n = 100
        cat = pd.DataFrame({"item_id": list(range(1000, 1000 + n)) + [5], "title": [f"model 5{i}" for i in range(n)] + ["plain"],
                            "category": "c", "updated_at": pd.Timestamp("2026-01-01"), "active": True})
        write_parquet_atomic(cat, Lake.from_settings(get_settings()).path("catalog", ds="2026-01-01"))
        found = ui.items("5", limit=20)
        assert found[0] == {"item_id": 5, "title": "plain", "category": "c"} and len(found) == 20
        assert [r["item_id"] for r in found[1:]] == list(range(1000, 1019))  # then titles holding "5", in file order
        assert ui.items("MODEL 51", limit=3)[0]["title"] == "model 51" and ui.items("", limit=2)[0]["item_id"] == 1000
    finally:
        get_settings.cache_clear()


# ---- every query parameter of every route, fuzzed: a 4xx or a result, never a 500 -----------------
def plugin_query_params() -> dict[str, list[str]]:
    """``{mounted path: [query parameter names]}`` for every GET route of the plugin app (dependencies
    included), read from the app itself so that a new route or parameter is fuzzed without editing this."""
    from fastapi.dependencies.utils import get_flat_dependant
    from fastapi.routing import APIRoute

    from keyphrase_ui.app import URL_PREFIX, app

    out = {}
    for route in app.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods:
            flat = get_flat_dependant(route.dependant)
            out[URL_PREFIX + route.path] = sorted(p.alias for p in flat.query_params)
    return out


# values that broke (or could break) a route: unicode digits str.isdigit() accepts and int() may not,
# numbers past int64 and past int()'s 4,300-digit limit, impossible dates, control characters, raw bytes
HOSTILE = ["", " ", "\t", "²", "³", "٣", "१२", "１２", "Ⅻ", "½", "9" * 5000, "-" + "9" * 5000, "9" * 19, "9" * 30,
           "0", "-1", "-" + "9" * 30, "1e309", "nan", "inf", "0x10", "1_000", str(2**63), str(-(2**63) - 1),
           "2026-13-45", "2026-02-30", "0000-00-00", "٣٣٣٣-11-11", "２０２６-１０-１２", "2026-10-1²", "2026-10-12\n",
           "\x00", "\x1b[31m", "a\r\nb", "../../etc/passwd", "%", "x" * 5000, "students", "cross", "nope",
           b"\xff\xfe", b"\xc0"]


def _hostile_values():
    from hypothesis import strategies as st

    text = st.characters(exclude_categories=("Cs",))  # surrogates cannot be UTF-8 encoded by any client
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.text(text, max_size=40),                                                  # arbitrary unicode, control chars
        st.text(st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=30),  # digits that are not 0-9
        st.integers().map(str),
        st.integers(min_value=19, max_value=6000).map(lambda n: "9" * n),            # past int64, past int()'s limit
        st.binary(max_size=24),                                                      # raw bytes, invalid UTF-8
    )


def _status(client, url, headers) -> int:
    try:
        return client.get(url, headers=headers, follow_redirects=False).status_code
    except Exception as exc:  # TestClient re-raises the server's exception: that is a 500
        pytest.fail(f"GET {url[:300]} raised {type(exc).__name__}: {str(exc)[:300]}")


def test_the_fuzzer_sees_every_route_and_parameter():
    routes = plugin_query_params()
    assert {"/keyphrases/api/items", "/keyphrases/api/search", "/keyphrases/api/runs"} <= set(routes)
    fuzzed = {p for names in routes.values() for p in names}
    assert {"ds", "q", "limit", "item_id", "k", "kind", "version"} <= fuzzed, routes


@pytest.mark.parametrize("path", sorted(plugin_query_params()))
def test_fuzzed_query_parameters_never_cause_a_server_error(airflow_api, path):
    """Every query parameter of the route gets each HOSTILE value alone, then Hypothesis draws combinations
    (hostile and valid values, so the deep code paths run too): every answer must be < 500."""
    from urllib.parse import urlencode

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    c, h = airflow_api["client"], auth(airflow_api)
    names = plugin_query_params()[path]
    for name in names:
        for bad in HOSTILE:
            url = f"{path}?{urlencode({name: bad})}"
            assert _status(c, url, h) < 500, url[:300]
    if not names:
        assert _status(c, path, h) < 500
        return
    item_ids = [str(i["item_id"]) for i in c.get("/keyphrases/api/items?limit=3", headers=h).json()]
    valid = st.sampled_from([airflow_api["ds"], airflow_api["version"], "students", "5", *item_ids])
    value = st.one_of(valid, _hostile_values())

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(params=st.dictionaries(st.sampled_from(names), value, min_size=1, max_size=len(names)))
    def check(params):
        url = f"{path}?{urlencode(params)}"
        assert _status(c, url, h) < 500, url[:300]

    check()


# ---- run history (issue 16, item 1) -------------------------------------------------------------------
def test_history_api_tables_flags_and_trend_plot(airflow_api, lake_env, tmp_path):
    import datetime as dt

    from ui_helpers import write_run_day

    from keyphrase_pipeline.core.lake import Lake

    c, h = airflow_api["client"], auth(airflow_api)
    lake = Lake(str(tmp_path / "lake"))
    end = dt.date(2026, 11, 10)
    for i in range(1, 9):
        write_run_day(lake, (end - dt.timedelta(days=i)).isoformat(), wall={"publish": 2.0},
                      airflow={"dag_id": "keyphrase_daily", "run_id": f"scheduled__{i}"})
    write_run_day(lake, end.isoformat(), changes={"merge_labels": {"yes_rate": 0.7}})
    lake_env(lake.root)
    r = c.get("/keyphrases/api/history?days=9", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["end"] == "2026-11-10" and len(body["days"]) == 9 and body["threshold"] == 0.25
    assert [d["ds"] for d in body["days"]] == sorted((d["ds"] for d in body["days"]), reverse=True)  # newest first
    units = {m["key"]: (m["unit"], m["kind"]) for m in body["metrics"]}
    assert units["pairs_judged"] == ("pairs", "count") and units["yes_rate"][1] == "share"
    today = body["days"][0]
    assert [f["metric"] for f in today["flags"]] == ["yes_rate"] and "+" in today["flags"][0]["reason"]
    assert body["days"][1]["stages"]["publish"]["task_url"] == "/dags/keyphrase_daily/runs/scheduled__1/tasks/group.publish"
    assert c.get("/keyphrases/api/history?days=0", headers=h).status_code == 422
    png = c.get("/keyphrases/api/plots/history.png?days=9", headers=h)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_of_an_empty_lake_says_what_to_do(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake_env(tmp_path / "empty")
    r = c.get("/keyphrases/api/history", headers=h)
    assert r.status_code == 200 and r.json()["days"] == [] and "Trigger the keyphrase_daily DAG" in r.json()["message"]
    r = c.get("/keyphrases/api/plots/history.png", headers=h)
    assert r.status_code == 404 and "no run recorded yet" in r.json()["detail"]


# ---- empty and error states (issue 16, item 5): a clear message and what to do, never a 500 ---------------
def test_empty_lake_every_api_says_what_happened_and_what_to_do(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake_env(tmp_path / "empty")
    o = c.get("/keyphrases/api/overview", headers=h)
    assert o.status_code == 200
    texts = " ".join(m["text"] for m in o.json()["messages"])
    assert "The lake is empty" in texts and "Trigger the keyphrase_daily DAG" in texts and "No model trained yet" in texts
    r = c.get("/keyphrases/api/runs?ds=2026-11-01", headers=h)
    assert r.status_code == 404 and "No run recorded for ds=2026-11-01" in r.json()["detail"]
    assert "no day has a run yet" in r.json()["detail"] and "ds param set to 2026-11-01" in r.json()["detail"]
    r = c.get("/keyphrases/api/search?item_id=1", headers=h)
    assert r.status_code == 404 and "nothing is published yet" in r.json()["detail"] and "serve group" in r.json()["detail"]
    r = c.get("/keyphrases/api/plots/curves.png", headers=h)
    assert r.status_code == 404 and "no students model trained yet" in r.json()["detail"]
    r = c.get("/keyphrases/api/plots/scores.png", headers=h)
    assert r.status_code == 404 and "no published recommendations yet" in r.json()["detail"]
    for route in API_ROUTES:
        r = c.get(route, headers=h)
        assert r.status_code < 500 and "Traceback" not in r.text, (route, r.status_code, r.text[:300])


def test_a_day_without_a_run_names_the_days_that_have_one(airflow_api):
    import datetime as dt

    c, h = airflow_api["client"], auth(airflow_api)
    before = (dt.date.fromisoformat(airflow_api["ds"]) - dt.timedelta(days=3)).isoformat()
    r = c.get(f"/keyphrases/api/runs?ds={before}", headers=h)
    assert r.status_code == 404
    assert f"No run recorded for ds={before}" in r.json()["detail"] and airflow_api["ds"] in r.json()["detail"]
    assert c.get(f"/keyphrases/api/runs?ds={airflow_api['ds']}", headers=h).status_code == 200


def test_a_failed_stage_is_reported_with_its_error_and_what_to_do(airflow_api, lake_env, tmp_path):
    from ui_helpers import write_run_day

    from keyphrase_pipeline.core.lake import Lake

    c, h = airflow_api["client"], auth(airflow_api)
    lake = Lake(str(tmp_path / "lake"))
    write_run_day(lake, "2026-11-10", skip=("index", "recommend", "publish"))
    lake.write_run_failure("2026-11-10", "index", {"error_type": "GateError", "error": "index recall@20 0.40 < 0.95"})
    lake_env(lake.root)
    runs = c.get("/keyphrases/api/runs?ds=2026-11-10", headers=h).json()
    assert runs["failures"]["index"]["error_type"] == "GateError"
    msgs = [m for m in c.get("/keyphrases/api/overview", headers=h).json()["messages"] if m["level"] == "error"]
    assert any("stage index failed (GateError: index recall@20 0.40 < 0.95)" in m["text"] and "clear the task" in m["text"]
               for m in msgs), msgs
    day = c.get("/keyphrases/api/history?days=1", headers=h).json()["days"][0]
    assert day["status"] == "failed" and day["stages"]["index"]["status"] == "failed"


def test_pointers_to_missing_versions_say_how_to_recover(airflow_api, lake_env, tmp_path):
    import shutil

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.core.lake import Lake

    c, h = airflow_api["client"], auth(airflow_api)
    root = tmp_path / "lake"
    shutil.copytree(airflow_api["root"], root, ignore=shutil.ignore_patterns("embeddings", "raw", "synth"))
    lake = Lake(str(root))
    lake.write_pointer(lake.path("registry", "CHAMPION"), "2026-01-01-deadbeef")
    lake.write_pointer(layout.current_pointer(lake), "2026-01-01.gone")
    lake_env(root)
    texts = [m["text"] for m in c.get("/keyphrases/api/overview", headers=h).json()["messages"]]
    assert any("registry/CHAMPION points to 2026-01-01-deadbeef" in t and "kp promote --version" in t
               and airflow_api["version"] in t for t in texts), texts
    assert any("serving/CURRENT points to 2026-01-01.gone" in t and "kp rollback --to" in t for t in texts), texts
    for route in ("/keyphrases/api/search?item_id=1", "/keyphrases/api/item/1"):  # no catalog here either: the
        r = c.get(route, headers=h)                                               # serving error is what to fix
        assert r.status_code == 404 and "2026-01-01.gone" in r.json()["detail"], route
        assert "kp rollback --to" in r.json()["detail"], route
    r = c.get("/keyphrases/api/plots/scores.png", headers=h)
    assert r.status_code == 404 and "2026-01-01.gone cannot be read" in r.json()["detail"] and "kp rollback" in r.json()["detail"]
    r = c.get("/keyphrases/api/plots/curves.png?version=nope", headers=h)
    assert r.status_code == 404 and "no students version 'nope'" in r.json()["detail"]
    assert airflow_api["version"] in r.json()["detail"]


def test_an_unexpected_error_answers_json_without_a_stack_trace(airflow_api, monkeypatch):
    import importlib

    from fastapi.testclient import TestClient

    ui = importlib.import_module("keyphrase_ui.app")

    def boom(days):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ui, "run_history", boom)
    c = TestClient(airflow_api["client"].app, raise_server_exceptions=False)
    r = c.get("/keyphrases/api/history", headers=auth(airflow_api))
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "RuntimeError: disk on fire" in r.json()["detail"] and "Traceback" not in r.text


# ---- item and keyphrase explanations (issue 16, item 2) ------------------------------------------------------
def _frames(api):
    """(published recommendations, label store, newest CTR labels) of the fixture's lake, read directly."""
    import pandas as pd

    from keyphrase_pipeline.artifacts import serving
    from keyphrase_pipeline.core.lake import Lake, read_parquet
    from keyphrase_pipeline.labels.store import read_labels

    s = api["settings"]
    recs = pd.read_parquet(serving.current_recommendations_path(s))
    lake = Lake.from_settings(s)
    ctr = read_parquet(lake.path("ctr_labels", ds=lake.partitions("ctr_labels")[-1]), contract="ctr_labels")
    return recs, read_labels(s), ctr


def test_item_view_explains_each_recommended_keyphrase(airflow_api):
    import numpy as np

    from keyphrase_pipeline.core import layout
    from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs

    c, h = airflow_api["client"], auth(airflow_api)
    recs, labels, ctr = _frames(airflow_api)
    judged = recs.merge(labels, on=["item_id", "keyphrase_id"])
    assert len(judged), "the fixture should judge some recommended pairs"
    item = int(judged["item_id"].iloc[0])
    r = c.get(f"/keyphrases/api/item/{item}?k=10", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    mine = recs[recs["item_id"] == item].sort_values("rank")
    assert body["item"]["item_id"] == item and body["item"]["title"] == judged["title"].iloc[0]
    assert [x["keyphrase_id"] for x in body["results"]] == mine["keyphrase_id"].tolist()
    np.testing.assert_allclose([x["cosine"] for x in body["results"]], mine["score"].to_numpy(), rtol=1e-6)
    # the cross-encoder's P(relevant), computed for these pairs with the newest cross-encoder of the registry
    assert body["cross_version"] == airflow_api["cross"]
    model = load_cross(layout.model_dir(airflow_api["settings"], airflow_api["cross"], "cross"), "cpu")
    want = predict_pairs(model, [body["item"]["title"]] * len(mine), [body["item"]["category"]] * len(mine),
                         mine["keyphrase"].tolist())
    np.testing.assert_allclose([x["cross"] for x in body["results"]], want, atol=1e-5)
    # the judge's label, P(yes), judge identity, prompt version and date, as the store holds them
    row = judged.iloc[0]
    got = next(x for x in body["results"] if x["keyphrase_id"] == int(row["keyphrase_id"]))
    assert got["llm"]["label"] == ("yes" if row["label"] == 1 else "no")
    assert got["llm"]["p_yes"] == pytest.approx(row["p_yes"])
    assert got["llm"]["judge"] == f"{row['judge']}:{row['judge_model']}" and got["llm"]["prompt_version"] == row["prompt_version"]
    assert got["llm"]["labelled_at"].startswith(str(row["labelled_at"].date())) and got["llm"]["store_day"] == row["ds"]
    unjudged = [x for x in body["results"] if x["keyphrase_id"] not in set(judged[judged["item_id"] == item]["keyphrase_id"])]
    assert all(x["llm"] is None for x in unjudged)
    assert body["truth_known"] is True and all(isinstance(x["relevant"], bool) for x in body["results"])
    # the CTR model's expected CTR, as published beside each row (P(click) at position 1), and which model gave it
    import pandas as pd

    from keyphrase_pipeline.artifacts import serving

    published = pd.read_parquet(serving.current_recommendations_path(airflow_api["settings"]))
    mine_pub = published[published["item_id"] == item].sort_values("rank")
    np.testing.assert_allclose([x["expected_ctr"] for x in body["results"]], mine_pub["expected_ctr"].to_numpy(), rtol=1e-5)
    assert all(0 < x["expected_ctr"] < 1 for x in body["results"])
    assert mine_pub["ctr_model_version"].iloc[0] in body["expected_ctr_note"]
    assert c.get("/keyphrases/api/item/987654321", headers=h).status_code == 404


def test_item_view_reads_one_row_group_of_the_bundle(airflow_api, monkeypatch):
    """The page finds an item's published rows through the bundle's item buckets (issue 32): one file opened, one or
    two row groups read, never the whole recommendations; the catalog row is found without loading the catalog."""
    from keyphrase_pipeline.artifacts import item_lookup, serving

    s = airflow_api["settings"]
    manifest = serving.read_manifest(s, serving.current_version(s))
    assert manifest["recommendations_layout"]["layout"] == item_lookup.LAYOUT
    calls = []
    real = item_lookup.lookup

    def spy(*args, stats=None, **kw):
        st: dict = {}
        out = real(*args, stats=st, **kw)
        calls.append(st)
        return out

    monkeypatch.setattr(item_lookup, "lookup", spy)
    recs, _, _ = _frames(airflow_api)
    item = int(recs["item_id"].iloc[0])
    r = airflow_api["client"].get(f"/keyphrases/api/item/{item}?k=5", headers=auth(airflow_api))
    assert r.status_code == 200, r.text
    assert r.json()["item"]["title"] and len(r.json()["results"]) == min(5, int((recs["item_id"] == item).sum()))
    assert calls and all(c["files_opened"] == 1 and c["row_groups_read"] <= 2 for c in calls), calls


def test_item_view_of_a_published_item_the_latest_catalog_no_longer_holds(airflow_api, monkeypatch):
    """An item delisted since its recommendations were published: the view shows its published rows (not a 404), says
    it has no catalog row, and scores nothing with the cross-encoder (no text); an id in neither is still a 404."""
    import importlib

    ui_app = importlib.import_module("keyphrase_ui.app")  # the module (the package exports the FastAPI object)
    recs, _, _ = _frames(airflow_api)
    item = int(recs["item_id"].iloc[0])
    monkeypatch.setattr(ui_app, "catalog_item", lambda item_id: None)  # the latest snapshot holds no item
    c, h = airflow_api["client"], auth(airflow_api)
    r = c.get(f"/keyphrases/api/item/{item}?k=5", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    mine = recs[recs["item_id"] == item].sort_values("rank").head(5)
    assert [x["keyphrase_id"] for x in body["results"]] == mine["keyphrase_id"].tolist()
    assert "no row in the latest catalog snapshot" in body["mode"] and body["item"]["in_catalog"] is False
    assert body["item"]["title"] == "(no catalog row)"
    assert body["cross_version"] is None and all(x["cross"] is None for x in body["results"])
    assert "no title to score" in body["cross_note"]
    assert c.get("/keyphrases/api/item/987654321", headers=h).status_code == 404


def test_item_view_shows_the_ctr_window_of_exposed_pairs(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    recs, _, ctr = _frames(airflow_api)
    exposed = recs.merge(ctr, on=["item_id", "keyphrase_id"])
    assert len(exposed), "the fixture should have exposed recommended pairs"
    row = exposed.iloc[0]
    body = c.get(f"/keyphrases/api/item/{int(row['item_id'])}?k=10", headers=h).json()
    got = next(x for x in body["results"] if x["keyphrase_id"] == int(row["keyphrase_id"]))
    assert got["ctr"] == {"impressions": int(row["impressions"]), "clicks": int(row["clicks"]),
                          "ctr": pytest.approx(float(row["ctr"])), "label": int(row["label"])}
    seen = set(ctr[ctr["item_id"] == row["item_id"]]["keyphrase_id"])
    assert all(x["ctr"] is None for x in body["results"] if x["keyphrase_id"] not in seen)
    window = airflow_api["settings"].ctr.window_days
    assert window != 30 and body["ctr_window_days"] == window  # the fixture's ctr.window_days, not a fixed 30
    assert f"{window}-day impressions" in body["ctr_note"] and "30-day" not in body["ctr_note"]
    page = (Path(__file__).resolve().parents[2] / "plugins" / "keyphrase_ui" / "templates" / "index.html").read_text()
    assert "30 days" not in page and "ctr_window_days" in page


def test_without_a_cross_encoder_the_score_is_na_with_the_reason(tmp_path):
    from testsupport import make_settings

    from keyphrase_ui import explain

    out = explain.cross_scores(make_settings(tmp_path / "lake"), 1, "red phone case", "phones", [(7, "phone case")])
    assert out["version"] is None and out["scores"] == {} and "no cross-encoder in the registry" in out["note"]


def test_item_view_shows_the_published_rerank_score_and_its_cross_encoder(tmp_path):
    """Rows ``kp recommend``'s re-rank scored show its published P(relevant) (``rerank``) and the note names the
    cross-encoder that gave it; a row it did not score shows None; a list without any says why that can be."""
    from testsupport import make_settings

    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_ui import explain

    s = make_settings(tmp_path / "lake")
    item = {"item_id": 5, "title": "red phone case", "category": "phones"}
    rows = [{"rank": 1, "keyphrase_id": 7, "keyphrase": "phone case", "score": 0.61, "expected_ctr": None,
             "rerank_score": 0.93, "rerank_cross_version": "cross-2026-10-10"},
            {"rank": 2, "keyphrase_id": 8, "keyphrase": "red case", "score": 0.72, "expected_ctr": None,
             "rerank_score": None, "rerank_cross_version": None}]
    out = explain.explain_item(s, Lake.from_settings(s), item, rows, "published", "v1")
    assert [r["rerank"] for r in out["results"]] == [0.93, None]
    assert "cross-encoder cross-2026-10-10" in out["rerank_note"] and "serve.rerank_depth" in out["rerank_note"]
    off = [{**r, "rerank_score": None, "rerank_cross_version": None} for r in rows]
    out = explain.explain_item(s, Lake.from_settings(s), item, off, "published", "v1")
    assert [r["rerank"] for r in out["results"]] == [None, None]
    assert "no row carries" in out["rerank_note"] and "serve.rerank_depth 0" in out["rerank_note"]
    # rows from a reader of older bundles carry neither key; a live search never carries them
    old = [{k: v for k, v in r.items() if not k.startswith("rerank")} for r in rows]
    lake = Lake.from_settings(s)
    assert "no row carries" in explain.explain_item(s, lake, item, old, "published", "v1")["rerank_note"]
    live = explain.explain_item(s, lake, item, old, "live search of the published index", "v1")["rerank_note"]
    assert "live search" in live
    # a NaN score (a parquet null read without conversion) is no score; a score whose cross-encoder is not recorded
    # is shown and said so; numpy scalars come out as floats (JSON)
    import numpy as np

    odd = [{**rows[0], "rerank_score": np.float32(0.5), "rerank_cross_version": None},
           {**rows[1], "rerank_score": float("nan"), "rerank_cross_version": "cross-x"}]
    out = explain.explain_item(s, lake, item, odd, "published", "v1")
    assert [r["rerank"] for r in out["results"]] == [0.5, None] and type(out["results"][0]["rerank"]) is float
    assert "(not recorded)" in out["rerank_note"] and "cross-x" not in out["rerank_note"]


def test_keyphrase_view_lists_the_items_it_is_recommended_to(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    recs, _, _ = _frames(airflow_api)
    kp = int(recs["keyphrase_id"].value_counts().index[0])
    body = c.get(f"/keyphrases/api/keyphrase/{kp}?limit=500", headers=h).json()
    mine = recs[recs["keyphrase_id"] == kp]
    assert body["keyphrase"] == mine["keyphrase"].iloc[0] and body["total_items"] == len(mine)
    assert sorted(x["item_id"] for x in body["items"]) == sorted(mine["item_id"].tolist())
    assert [x["cosine"] for x in body["items"]] == sorted((x["cosine"] for x in body["items"]), reverse=True)
    assert all(x["title"] for x in body["items"]) and body["truth_known"] is True
    r = c.get("/keyphrases/api/keyphrase/999999999", headers=h)
    assert r.status_code == 404 and "neither in the published recommendations nor in raw/keyphrases" in r.json()["detail"]


# ---- champion vs challenger (issue 16, item 3) ---------------------------------------------------------------
def test_compare_shows_the_gate_metrics_topk_and_commands(airflow_api):
    from ui_helpers import CHALLENGER_EVAL, CHAMPION_EVAL

    c, h = airflow_api["client"], auth(airflow_api)
    recs, _, _ = _frames(airflow_api)
    body = c.get("/keyphrases/api/compare?items=3&k=5", headers=h).json()
    assert body["champion"] == airflow_api["version"] and body["challenger"] == airflow_api["challenger"]
    g = body["gate"]
    assert g["promoted"] is False and "champion kept" in g["reason"] and g["tolerance"] == 0.01
    assert g["challenger_f1"] == CHALLENGER_EVAL["llm"]["f1"] and g["champion_f1"] == CHAMPION_EVAL["llm"]["f1"]
    f1 = next(m for m in body["metrics"] if m["label"].startswith("F1 vs LLM"))
    assert f1["difference"] == pytest.approx(0.598 - 0.625) and "same held-out test set" in body["metrics_note"]
    # both are embedded: top-K of the same sample items under each; the champion's is what serving published
    assert len(body["topk"]) == 3, body["topk_note"]
    for row in body["topk"]:
        assert len(row["champion"]) == len(row["challenger"]) == 5 and 0 <= row["overlap"] <= 5
        published = recs[recs["item_id"] == row["item_id"]].sort_values("rank")["keyphrase_id"].head(5).tolist()
        assert [x["keyphrase_id"] for x in row["champion"]] == published
    again = c.get("/keyphrases/api/compare?items=3&k=5", headers=h).json()
    assert [r["item_id"] for r in again["topk"]] == [r["item_id"] for r in body["topk"]]  # seeded sample
    cmds = " ".join(x["command"] for x in body["commands"])
    assert f"kp promote --version {airflow_api['challenger']}" in cmds and "kp promote --list" in cmds
    assert any("roll serving back: not possible now" in x["what"] for x in body["commands"])  # one version published


def test_compare_commands_roll_back_to_the_previous_champion_and_version(airflow_api):
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_ui import explain

    s, v, ch = airflow_api["settings"], airflow_api["version"], airflow_api["challenger"]
    students = [{"version": ch, "metrics": {}, "promotion": {}}, {"version": v, "metrics": {}, "promotion": {}}]
    hist = [{"version": "2026-10-01-11111111", "previous": None}, {"version": v, "previous": "2026-10-01-11111111"}]
    out = explain.compare(s, Lake.from_settings(s), students, v, hist, ["2026-10-11.a", "2026-10-12.b"], "2026-10-12.b",
                          rollback_target="2026-10-11.a")
    cmds = [x["command"] for x in out["commands"]]
    assert 'kp promote --version 2026-10-01-11111111 --reason "rollback: <why>"' in cmds
    assert 'kp rollback --reason "<why>"' in cmds and "kp rollback --list" in cmds
    assert any("2026-10-11.a" in x["what"] for x in out["commands"])
    # the only older version is the one rolled back from (marked bad): no rollback is offered
    bad = explain.compare(s, Lake.from_settings(s), students, v, hist, ["2026-10-11.a", "2026-10-12.b"], "2026-10-12.b")
    assert any("not possible now" in x["what"] for x in bad["commands"])


def test_compare_without_embeddings_or_challenger_says_why(airflow_api, tmp_path):
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_ui import explain

    s = airflow_api["settings"]
    rows, note = explain.topk_side_by_side(Lake.from_settings(s), s, {"champion": airflow_api["version"],
                                                                      "challenger": "2026-01-01-00000000"}, [1], 5, {})
    assert rows == [] and "challenger 2026-01-01-00000000 has none" in note and "metrics only" in note
    only = [{"version": "v1", "metrics": {}, "promotion": {}}]
    out = explain.compare(s, Lake.from_settings(s), only, "v1", [], [], None)
    assert out["challenger"] is None and "No challenger yet" in out["message"]
    assert "No model trained yet" in explain.compare(s, Lake.from_settings(s), [], None, [], [], None)["message"]


# ---- label review (issue 16, item 4) ---------------------------------------------------------------------------
def _review_lake(api, tmp_path, lake_env):
    """A writable lake holding a copy of the fixture's label store."""
    import shutil

    from keyphrase_pipeline.core.lake import Lake

    root = tmp_path / "lake"
    shutil.copytree(Path(api["root"]) / "llm_labels", root / "llm_labels")
    lake_env(root)
    return Lake(str(root))


def token_for(username: str, role: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def test_review_sample_is_seeded_per_day(airflow_api, lake_env, tmp_path):
    from keyphrase_pipeline.labels.store import read_labels

    c, h = airflow_api["client"], auth(airflow_api)
    _review_lake(airflow_api, tmp_path, lake_env)
    body = c.get("/keyphrases/api/reviews", headers=h).json()
    assert body["ds"] == airflow_api["ds"] and body["can_review"] is True and len(body["sample"]) == 20
    keys = [x["pair_key"] for x in body["sample"]]
    assert len(set(keys)) == 20 and set(keys) <= set(read_labels(airflow_api["settings"])["pair_key"])
    assert [x["pair_key"] for x in c.get("/keyphrases/api/reviews", headers=h).json()["sample"]] == keys
    assert len(c.get("/keyphrases/api/reviews?n=5", headers=h).json()["sample"]) == 5
    r = c.get("/keyphrases/api/reviews?ds=2026-01-01", headers=h)
    assert r.status_code == 404 and "no judged pairs for ds=2026-01-01" in r.json()["detail"]


def test_read_only_user_gets_403_editor_appends_a_file_per_verdict(airflow_api, lake_env, tmp_path):
    import hashlib

    from keyphrase_pipeline.labels import reviews as label_reviews

    c = airflow_api["client"]
    c.cookies.clear()
    lake = _review_lake(airflow_api, tmp_path, lake_env)
    viewer = {"Authorization": f"Bearer {token_for('vera', 'viewer')}"}
    editor = {"Authorization": f"Bearer {token_for('eddie', 'user')}"}
    body = c.get("/keyphrases/api/reviews", headers=viewer).json()
    assert body["can_review"] is False and "may view but not review" in body["message"]
    pair = body["sample"][0]
    post = {"ds": body["ds"], "pair_key": pair["pair_key"], "verdict": "agree"}
    r = c.post("/keyphrases/api/reviews", json=post, headers=viewer)
    assert r.status_code == 403 and "needs edit permission" in r.json()["detail"]
    assert c.post("/keyphrases/api/reviews", json=post).status_code == 401
    folder = Path(lake.path("label_reviews", ds=body["ds"]))
    assert not folder.exists()
    assert c.get("/keyphrases/api/plots/reviews.png", headers=viewer).status_code == 404

    r = c.post("/keyphrases/api/reviews", json=post, headers=editor)
    assert r.status_code == 201, r.text
    assert r.json()["reviewer"] == "eddie" and r.json()["judge"] == pair["judge"].split(":")[0]
    files = list(folder.glob("part-*.parquet"))
    assert len(files) == 1 and files[0].name == f"part-{r.json()['review_id']}.parquet"
    first, digest = files[0], hashlib.sha256(files[0].read_bytes()).hexdigest()
    # the same reviewer changes their mind: a second file; the first is not rewritten
    r = c.post("/keyphrases/api/reviews", json={**post, "verdict": "disagree"}, headers=editor)
    assert r.status_code == 201
    assert len(list(folder.glob("part-*.parquet"))) == 2
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    stored = label_reviews.read(airflow_api["settings"].with_overrides(lake_root=lake.root))
    assert len(stored) == 2 and list(stored["verdict"]) == ["agree", "disagree"] and set(stored["reviewer"]) == {"eddie"}
    agree = c.get("/keyphrases/api/reviews", headers=editor).json()
    row = next(x for x in agree["sample"] if x["pair_key"] == pair["pair_key"])
    assert row["my_verdict"] == "disagree" and row["verdicts"] == {"agree": 0, "disagree": 1}
    assert agree["agreement"] == [{"ds": body["ds"], "judge": pair["judge"], "prompt_version": pair["prompt_version"],
                                   "reviews": 1, "agree": 0, "agreement_rate": 0.0, "reviewers": 1}]
    png = c.get("/keyphrases/api/plots/reviews.png", headers=viewer)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_review_post_is_csrf_safe_with_the_session_cookie(airflow_api, lake_env, tmp_path):
    c = airflow_api["client"]
    c.cookies.clear()
    lake = _review_lake(airflow_api, tmp_path, lake_env)
    body = c.get("/keyphrases/api/reviews", headers=auth(airflow_api)).json()
    post = {"ds": body["ds"], "pair_key": body["sample"][1]["pair_key"], "verdict": "agree"}
    c.cookies.set("_token", token_for("eddie", "user"))
    try:
        r = c.post("/keyphrases/api/reviews", json=post)  # a cross-site form or fetch cannot add the header
        assert r.status_code == 403 and "X-Keyphrases-CSRF" in r.json()["detail"]
        csrf = {"X-Keyphrases-CSRF": "1"}
        r = c.post("/keyphrases/api/reviews", json=post, headers={**csrf, "Origin": "https://evil.example"})
        assert r.status_code == 403 and "evil.example" in r.json()["detail"]
        r = c.post("/keyphrases/api/reviews", json=post, headers={**csrf, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
        assert not Path(lake.path("label_reviews")).exists()
        r = c.post("/keyphrases/api/reviews", json=post, headers={**csrf, "Origin": "http://testserver",
                                                                  "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 201, r.text
    finally:
        c.cookies.clear()


def test_review_post_refuses_unknown_pairs_and_bad_verdicts(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    _review_lake(airflow_api, tmp_path, lake_env)
    ds = airflow_api["ds"]
    r = c.post("/keyphrases/api/reviews", json={"ds": ds, "pair_key": "ab" * 20, "verdict": "agree"}, headers=h)
    assert r.status_code == 404 and "not among the judged pairs" in r.json()["detail"]
    key = c.get("/keyphrases/api/reviews", headers=h).json()["sample"][0]["pair_key"]
    for bad in ({"ds": ds, "pair_key": key, "verdict": "maybe"}, {"ds": "2026-02-30", "pair_key": key, "verdict": "agree"},
                {"ds": ds, "pair_key": "../../etc", "verdict": "agree"}, {"ds": ds, "verdict": "agree"}):
        assert c.post("/keyphrases/api/reviews", json=bad, headers=h).status_code == 422, bad
    r = c.post("/keyphrases/api/reviews", json={"ds": "2026-01-01", "pair_key": key, "verdict": "agree"}, headers=h)
    assert r.status_code == 404 and "no judged pairs for ds=2026-01-01" in r.json()["detail"]


def test_review_of_an_empty_store_says_what_to_do(airflow_api, lake_env, tmp_path):
    lake_env(tmp_path / "empty")
    body = airflow_api["client"].get("/keyphrases/api/reviews", headers=auth(airflow_api)).json()
    assert body["sample"] == [] and "No judged pairs yet" in body["message"]
