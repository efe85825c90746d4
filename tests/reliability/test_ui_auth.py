"""The UI plugin without credentials (or with forged ones): every data route answers 401, the page
redirects to Airflow's login, and nothing from the lake leaks into the answer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from keyphrase_ui.app import app

    return TestClient(app, follow_redirects=False)


def api_routes():
    from keyphrase_ui.app import app

    paths = sorted({r.path for r in app.routes if getattr(r, "methods", None) and "GET" in r.methods})
    public = {"/", "/static/icon.svg"}
    return [p for p in paths if p not in public]


FORGED = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJBRE1JTiJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize("credentials", ["none", "garbage_bearer", "forged_jwt_bearer", "forged_cookie", "basic_auth"])
def test_every_api_route_refuses_without_a_valid_token(client, credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "secret-lake"))
    headers, cookies = {}, {}
    if credentials == "garbage_bearer":
        headers["Authorization"] = "Bearer not-a-token"
    elif credentials == "forged_jwt_bearer":
        headers["Authorization"] = f"Bearer {FORGED}"
    elif credentials == "forged_cookie":
        cookies["_token"] = FORGED
    elif credentials == "basic_auth":
        headers["Authorization"] = "Basic YWRtaW46YWRtaW4="  # admin:admin
    routes = api_routes()
    assert "/api/overview" in routes and "/api/search" in routes  # the data routes are all checked
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value)
    for path in routes:
        r = client.get(path, params={"item_id": 1, "q": "x", "ds": "2026-10-12"}, headers=headers)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert r.headers.get("www-authenticate") == "Bearer"
        assert "secret-lake" not in r.text
    page = client.get("/", headers=headers)
    assert page.status_code in (302, 303, 307) and "login" in page.headers["location"]
