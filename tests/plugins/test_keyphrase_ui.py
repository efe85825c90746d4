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
