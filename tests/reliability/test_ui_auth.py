"""The UI plugin without credentials (or with forged ones): every data route answers 401, the page
redirects to Airflow's login, and nothing from the lake leaks into the answer.

Airflow's auth manager is set up here as the API server sets it up at start-up (``init_auth_manager``),
so forged tokens are refused by the real signature/expiry check, not because no auth manager exists:
``test_a_token_the_auth_manager_minted_is_accepted`` proves a genuine token gets through.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))


@pytest.fixture(scope="module")
def auth_manager():
    """Airflow's configured auth manager (SimpleAuthManager), created and initialised the way the API
    server's ``create_app`` does; the previous global instance is put back afterwards."""
    from airflow.api_fastapi import app as api_app

    from keyphrase_pipeline.deploy import airflow_standalone as af

    af.ensure_metadata_db()  # get_user_from_token asks the metadata DB whether the token was revoked
    before = api_app._AuthManagerState.instance
    am = api_app.init_auth_manager()
    assert api_app.get_auth_manager() is am
    yield am
    api_app._AuthManagerState.instance = before


@pytest.fixture(scope="module")
def client(auth_manager):
    from fastapi.testclient import TestClient

    from keyphrase_ui.app import app

    return TestClient(app, follow_redirects=False)


def mint(auth_manager, role: str | None = "ADMIN", expires_in_s: int | None = None) -> str:
    """A token signed by the real auth manager (what ``POST /auth/token`` hands out)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="admin", role=role)
    if expires_in_s is None:
        return auth_manager.generate_jwt(user)
    return auth_manager.generate_jwt(user, expiration_time_in_seconds=expires_in_s)


def api_routes():
    from keyphrase_ui.app import app

    paths = sorted({r.path for r in app.routes if getattr(r, "methods", None) and "GET" in r.methods})
    public = {"/", "/static/icon.svg"}
    return [p for p in paths if p not in public]


# a well-formed JWT claiming an admin, with a made-up signature
FORGED = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJBRE1JTiJ9.c2lnbmF0dXJl"


def signed_with_another_key() -> str:
    """Everything right (algorithm, audience, claims, times) except the key it is signed with."""
    import jwt

    now = int(time.time())
    claims = {"sub": "admin", "role": "ADMIN", "teams": [], "aud": "apache-airflow", "iat": now, "nbf": now,
              "exp": now + 3600, "jti": "forged"}
    return jwt.encode(claims, "not-the-api-servers-secret-" + "x" * 40, algorithm="HS512")


def credentials_for(kind: str, auth_manager) -> tuple[dict, dict]:
    headers, cookies = {}, {}
    if kind == "garbage_bearer":
        headers["Authorization"] = "Bearer not-a-token"
    elif kind == "forged_jwt_bearer":
        headers["Authorization"] = f"Bearer {FORGED}"
    elif kind == "forged_cookie":
        cookies["_token"] = FORGED
    elif kind == "other_key_bearer":
        headers["Authorization"] = f"Bearer {signed_with_another_key()}"
    elif kind == "other_key_cookie":
        cookies["_token"] = signed_with_another_key()
    elif kind == "expired_bearer":
        headers["Authorization"] = f"Bearer {mint(auth_manager, expires_in_s=-3600)}"
    elif kind == "tampered_bearer":  # a real token with its claims edited (role upgraded), signature kept
        import base64
        import json

        head, payload, sig = mint(auth_manager, role="VIEWER").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["role"] = "ADMIN"
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        headers["Authorization"] = f"Bearer {head}.{payload}.{sig}"
    elif kind == "basic_auth":
        headers["Authorization"] = "Basic YWRtaW46YWRtaW4="  # admin:admin
    return headers, cookies


@pytest.mark.parametrize("credentials", ["none", "garbage_bearer", "forged_jwt_bearer", "forged_cookie",
                                         "other_key_bearer", "other_key_cookie", "expired_bearer",
                                         "tampered_bearer", "basic_auth"])
def test_every_api_route_refuses_without_a_valid_token(client, auth_manager, credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "secret-lake"))
    headers, cookies = credentials_for(credentials, auth_manager)
    routes = api_routes()
    assert "/api/overview" in routes and "/api/search" in routes  # the data routes are all checked
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value)
    try:
        for path in routes:
            r = client.get(path, params={"item_id": 1, "q": "x", "ds": "2026-10-12"}, headers=headers)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
            assert r.headers.get("www-authenticate") == "Bearer"
            assert "secret-lake" not in r.text
        page = client.get("/", headers=headers)
        assert page.status_code in (302, 303, 307) and "login" in page.headers["location"]
    finally:
        client.cookies.clear()


@pytest.mark.parametrize("via", ["bearer", "cookie"])
def test_a_token_the_auth_manager_minted_is_accepted(client, auth_manager, via, tmp_path, monkeypatch):
    """The control: the same requests with a genuine token get through (so the refusals above are the token
    check at work, not a missing auth manager)."""
    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "empty-lake"))
    token = mint(auth_manager)
    headers = {"Authorization": f"Bearer {token}"} if via == "bearer" else {}
    client.cookies.clear()
    if via == "cookie":
        client.cookies.set("_token", token)
    try:
        for path in api_routes():
            r = client.get(path, params={"item_id": 1, "q": "x", "ds": "2026-10-12"}, headers=headers)
            assert r.status_code not in (401, 403), (path, r.status_code, r.text[:200])
        assert client.get("/api/overview", headers=headers).status_code == 200
        page = client.get("/", headers=headers)
        assert page.status_code == 200 and "Keyphrase recommendations" in page.text
    finally:
        client.cookies.clear()


def test_a_valid_token_without_read_access_is_forbidden(client, auth_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("KP_LAKE_ROOT", str(tmp_path / "secret-lake"))
    headers = {"Authorization": f"Bearer {mint(auth_manager, role=None)}"}
    client.cookies.clear()
    for path in [*api_routes(), "/"]:
        r = client.get(path, params={"item_id": 1, "q": "x", "ds": "2026-10-12"}, headers=headers)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert "secret-lake" not in r.text
