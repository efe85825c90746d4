"""The Keyphrases plugin, mounted by Airflow's own API app: auth is enforced, and the API shows the real
published version, run stats, model versions, search results with the demo world's truth, and plots."""

from __future__ import annotations

import pytest

API_ROUTES = ["/keyphrases/api/overview", "/keyphrases/api/runs", "/keyphrases/api/items",
              "/keyphrases/api/search?item_id=1", "/keyphrases/api/plots/scores.png",
              "/keyphrases/api/plots/curves.png"]


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
    v = o["versions"][0]
    assert v["version"] == airflow_api["version"] and v["current"] is True
    assert v["metrics"]["heldout"]["f1"] == pytest.approx(0.625)
    assert o["last_decision"]["promoted"] is True and "no champion" in o["last_decision"]["reason"]
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
