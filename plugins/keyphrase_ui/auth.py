"""Authentication for the plugin app: the caller must hold a valid Airflow token.

Airflow mounts plugin FastAPI apps WITHOUT its own authentication, so every route here depends on
``require_user``. The token is the JWT Airflow issues: an ``Authorization: Bearer <jwt>`` header (REST
clients, ``POST /auth/token``) or the ``_token`` cookie the Airflow UI sets after login (the page is
shown inside the UI, same origin, so the browser sends it). It is validated by Airflow's configured auth
manager (``get_user_from_token``: signature, expiry, revocation), and the user must be allowed to read
DAGs. Missing or invalid token: 401 for the API; the HTML page redirects to Airflow's login instead.
A valid token without read access to the DAG: 403, for the API and the page alike.

Writes (the label review's POST) need edit permission on the DAG (``require_editor``: the auth manager's
``is_authorized_dag`` with method PUT) and are CSRF-safe: the UI's ``_token`` cookie is sent by the browser with
any request to this origin, a cross-site form's included, so a cookie-authenticated write must carry the custom
header ``X-Keyphrases-CSRF: 1`` (a cross-site page cannot send a custom header without a CORS preflight, which this
app never answers) and, when the browser says where it comes from (``Sec-Fetch-Site``, ``Origin``, ``Referer``),
come from this same origin. A request with a Bearer header is not cookie-borne and needs neither.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request, status

log = logging.getLogger(__name__)

COOKIE_NAME = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
DAG_ID = "keyphrase_daily"


def token_from_request(request: Request) -> str | None:
    """The Bearer header's token, else the Airflow UI's ``_token`` cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE_NAME) or None


def _auth_manager():
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def user_from_request(request: Request):
    """The Airflow user behind the request's token, or None (no token, bad token, expired, revoked)."""
    token = token_from_request(request)
    if not token:
        return None
    try:
        return await _auth_manager().get_user_from_token(token)
    except Exception as exc:  # jwt errors, revoked token, auth manager not initialised
        log.info("keyphrases UI: token rejected (%s: %s)", type(exc).__name__, exc)
        return None


def can_read(user) -> bool:
    """Whether the user may read the pipeline's DAG (what this page shows)."""
    try:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return bool(_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=DAG_ID), user=user))
    except Exception as exc:
        log.warning("keyphrases UI: authorisation check failed (%s); refusing", exc)
        return False


async def require_user(request: Request):
    """FastAPI dependency for the JSON API: 401 without a valid token, 403 without DAG read access."""
    user = await user_from_request(request)
    if user is None:
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="Not authenticated: log in to Airflow",
                            headers={"WWW-Authenticate": "Bearer"})
    if not can_read(user):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=forbidden_detail())
    return user


def forbidden_detail() -> str:
    """What a logged-in user without read access is told (API 403 detail, the page's 403 text)."""
    return f"not allowed to read DAG {DAG_ID}"


def login_url(next_url: str) -> str:
    """Airflow's login page, returning to ``next_url`` afterwards."""
    try:
        return _auth_manager().get_url_login(next_url=next_url)
    except Exception:
        from urllib.parse import urlencode

        return f"/auth/login?{urlencode({'next': next_url})}"


CSRF_HEADER = "X-Keyphrases-CSRF"


def can_edit(user) -> bool:
    """Whether the user may edit the pipeline's DAG (what reviewing labels needs)."""
    try:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return bool(_auth_manager().is_authorized_dag(method="PUT", details=DagDetails(id=DAG_ID), user=user))
    except Exception as exc:
        log.warning("keyphrases UI: authorisation check failed (%s); refusing", exc)
        return False


def _host(request: Request) -> str:
    return (request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc).split(",")[0].strip().lower()


def csrf_problem(request: Request) -> str | None:
    """Why a write is refused as possibly cross-site, or None when it is fine (module docstring)."""
    header = request.headers.get("authorization", "")
    if header.partition(" ")[0].lower() == "bearer" and header.partition(" ")[2].strip():
        return None  # not sent by a browser on its own
    if request.headers.get(CSRF_HEADER) != "1":
        return f"cross-site request refused: a write with the session cookie needs the {CSRF_HEADER}: 1 header"
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    source = request.headers.get("origin") or request.headers.get("referer")
    if source and source != "null":
        from urllib.parse import urlparse

        if urlparse(source).netloc.lower() != _host(request):
            return f"cross-site request refused: it comes from {urlparse(source).netloc or source!r}, not this origin"
    elif source == "null":
        return "cross-site request refused (Origin: null)"
    return None


async def require_editor(request: Request):
    """FastAPI dependency for writes: 401 without a valid token, 403 without DAG read or edit access or when the
    request may be cross-site (``csrf_problem``)."""
    user = await require_user(request)
    if not can_edit(user):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN,
                            detail=f"not allowed to edit DAG {DAG_ID}: reviewing labels needs edit permission")
    problem = csrf_problem(request)
    if problem:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=problem)
    return user
